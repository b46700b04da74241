"""Shared helpers for the project's tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Pytester's in-process runs restore ``sys.modules`` afterwards, dropping modules first imported
# inside them. A C extension such as torch cannot be imported twice in one process, and
# re-importing hypothesis and this package in every run costs seconds of assertion rewriting,
# so what model loading imports is imported here, before any in-process run.
import hypothesis
import onnx  # noqa: F401  (tier 4: pybind11 extensions cannot be imported a second time)
import onnxruntime  # noqa: F401
import pytest
import safetensors.torch  # noqa: F401
import torch
import torch._dynamo  # (registers torch ops once; a model may reach it in a run)

import pytest_modeltiers.checks.tier1
import pytest_modeltiers.checks.tier3
import pytest_modeltiers.checks.tier3_run
import pytest_modeltiers.checks.tier4
import pytest_modeltiers.datasets
import pytest_modeltiers.hypothesis_profiles
import pytest_modeltiers.models.loader
import pytest_modeltiers.strategies
import pytest_modeltiers.suites.tier1
import pytest_modeltiers.suites.tier3
import pytest_modeltiers.suites.tier4  # (tier 4: export; onnx & co. are pre-imported below)
import pytest_modeltiers.suites.tier5  # (tier 5: evaluation, profiles, drift)
import pytest_modeltiers.training.lightning_module  # Lightning itself: seconds to import
import pytest_modeltiers.training.run  # noqa: F401
from pytest_modeltiers.threads import share_cpus_between_workers

# The machines are shared and noisy: a per-example deadline would turn load into flaky failures.
hypothesis.settings.register_profile("modeltiers-project-tests", deadline=None)
hypothesis.settings.load_profile("modeltiers-project-tests")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The in-process runs of the built-in suites are not xdist workers themselves, so this test
    # process applies the plugin's CPU sharing for them (see pytest_modeltiers.threads).
    share_cpus_between_workers(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test as on a developer's machine, whatever CI the suite itself runs under.

    ``CI=true`` changes the default profile (``ci``), which shows in headers and rerun lines;
    a test about CI sets it itself. The sessions a test runs must not append to the job summary
    or annotate the pull request of the suite's own GitHub Actions run either.
    """
    for name in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def loader_models(pytester: pytest.Pytester) -> Path:
    """The loader fixture models (``fixtures/models``) copied into the pytester directory."""
    pytester.copy_example("models")
    return pytester.path


@pytest.fixture(scope="session")
def exporters_warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run every exporter once in this process, outside any in-process pytester run.

    The exporters import dozens of modules on first use (onnxscript's op library, torch.onnx
    and torch.export internals, quantized kernels); imported inside a pytester run they would be
    dropped at its end and imported again by the next. Tier 4 tests that run the suite
    in-process request this fixture first.
    """
    from torch import nn

    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.export.exporters import export_all
    from pytest_modeltiers.models.adapters import get_adapter

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(8, 4)
            self.head = nn.Linear(4, 8)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(input_ids))

    task = TaskSpec(
        "warmup", "lm", input_fields=["input_ids"], input_schema={"vocab_size": 8, "max_seq_len": 8}
    )
    folder = tmp_path_factory.mktemp("exporters-warmup")
    formats = ["onnx", "torch_export", "torchscript", "pytorch"]
    run = export_all(Tiny().eval(), get_adapter(task), task, folder, formats, "dynamic")
    assert not run.failures, run.failures
    from pytest_modeltiers.export.runtime import load_artifact

    for fmt, artifact in run.artifacts.items():
        load_artifact(
            fmt, artifact.path, run.signature, adapter=get_adapter(task), model_factory=Tiny
        )
    # Static int8 (FX) registers its own operator library on first use.
    from pytest_modeltiers.config.task_spec import get_builtin_task
    from pytest_modeltiers.export.quantization import quantize_model

    vision = get_builtin_task("vision_tiny")
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(4))
    cnn(torch.zeros(1, 3, 32, 32))
    quantize_model(cnn.eval(), get_adapter(vision), vision, "static", calibration_examples=4)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the example models and configs, as the README's commands
    assume (the CLI tests run there)."""
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "example_models", tmp_path / "example_models")
    shutil.copytree(repo / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path
