"""Models and exports shared by the tier 4 unit tests (each export made once per process)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.export.exporters import export_model
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_models"
FIXTURES = ROOT / "fixtures" / "tier4"
ALL_FORMATS = ("onnx", "torch_export", "torchscript", "pytorch")

_LOADED: dict[str, LoadedModel] = {}
_EXPORTS: dict[str, Path] = {}
_TEMP = Path(tempfile.mkdtemp(prefix="modeltiers-test-exports-"))
atexit.register(shutil.rmtree, _TEMP, True)


def loaded(path: Path) -> LoadedModel:
    """A model file loaded the way the plugin loads it (cached per process)."""
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = load_model(LoadRequest(spec=key, rootdir=ROOT))
    return _LOADED[key]


def model_and_task(path: Path) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    """A fresh eval-mode instance, its adapter and task."""
    model = loaded(path)
    return model.new_model().eval(), model.adapter, model.task


def exported(path: Path) -> Path:
    """A directory with ``path``'s model exported to every format (made once per process).

    Tests must not change it; copy it (``shutil.copytree``) to damage an artifact.
    """
    key = str(path)
    if key not in _EXPORTS:
        model, adapter, task = model_and_task(path)
        folder = _TEMP / path.stem
        export_model(model, adapter, task, folder, ALL_FORMATS, quantization="dynamic")
        _EXPORTS[key] = folder
    return _EXPORTS[key]
