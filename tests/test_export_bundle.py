"""create_export_bundle: the layout, complete files, a working inference.py, all or nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_support import EXAMPLES, FIXTURES, loaded, model_and_task

from pytest_modeltiers import TaskSpec, TrainingConfig, create_export_bundle, load_exported_model
from pytest_modeltiers.export.exporters import file_sha256
from pytest_modeltiers.export.formats import ExportError

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")
GPT = EXAMPLES / "tiny_gpt.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("exports")
    model = loaded(GPT)
    config = TrainingConfig(
        export_formats=["onnx", "torch_export", "pytorch"], export_dir=str(base)
    )
    return create_export_bundle(
        model=model.new_model(),
        task_spec=model.task,
        training_config=config,
        model_factory=model.new_model,
        quantization="dynamic",
    )


def test_layout_and_every_file_complete(bundle: Path) -> None:
    assert bundle.name.startswith("model_") and bundle.parent.name.startswith("exports")
    expected = [
        "artifacts/model.onnx",
        "artifacts/model.pt2",
        "artifacts/model.safetensors",
        "artifacts/model.int8.torchscript.pt",
        "artifacts/health_report.json",
        "health_report.md",
        "configs/task_spec.json",
        "configs/training_config.json",
        "metadata.json",
        "inference.py",
        "requirements.txt",
        "README.md",
    ]
    for name in expected:
        assert (bundle / name).stat().st_size > 0, f"{name} is empty"
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")], "staging left"
    assert TaskSpec.load(bundle / "configs" / "task_spec.json").name == "lm_tiny"
    config = TrainingConfig.load(bundle / "configs" / "training_config.json")
    assert config.export_formats == ["onnx", "torch_export", "pytorch"]


def test_metadata_records_versions_shapes_and_every_hash(bundle: Path) -> None:
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["framework_versions"]["torch"] and metadata["framework_versions"]["onnx"]
    assert metadata["signature"]["inputs"][0]["dynamic_axes"] == {"0": "batch", "1": "sequence"}
    entries = [*metadata["formats"].values(), metadata["quantization"]]
    for entry in entries:
        for name, info in entry["files"].items():
            assert name.startswith("artifacts/")
            assert file_sha256(bundle / name) == info["sha256"]
    assert metadata["health"]["all_passed"] is True
    report = json.loads((bundle / "artifacts" / "health_report.json").read_text())
    assert report["health_score"] == 100.0
    assert {"onnx_validation", "quantized_numerical_consistency"} <= {
        c["check_name"] for c in report["checks"]
    }
    readme = (bundle / "README.md").read_text()
    assert "artifacts/model.onnx" in readme and "Health score 100.0/100" in readme


def test_bundle_loads_back(bundle: Path) -> None:
    _, adapter, task = model_and_task(GPT)
    exported = load_exported_model(bundle, "torch_export")
    from pytest_modeltiers.models.batches import make_batch

    inputs = adapter.prepare_inputs(make_batch(task, 1, 3), task)
    assert list(exported(inputs).shape) == [1, 3, 256]


def test_inference_script_runs_the_onnx_artifact(bundle: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(bundle / "inference.py"), "--batch-size", "3", "--seq-len", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runtime: onnx" in done.stdout
    assert "logits: shape [3, 5, 256], dtype float32" in done.stdout


@pytest.mark.slow
def test_inference_script_runs_the_torch_export_artifact(bundle: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(bundle / "inference.py"), "--runtime", "torch_export"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "logits: shape [2, 8, 256]" in done.stdout


def test_inference_script_refuses_a_changed_artifact(tmp_path: Path, bundle: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "artifacts" / "model.onnx").write_bytes(b"tampered")
    done = subprocess.run(
        [sys.executable, str(copy / "inference.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "artifacts/model.onnx does not match metadata.json" in done.stderr


def test_a_failing_export_leaves_no_bundle(tmp_path: Path) -> None:
    model, _, task = model_and_task(FIXTURES / "branch_on_values.py")
    with pytest.raises(ExportError, match=r"data-dependent control flow at .*values\.py:27"):
        create_export_bundle(
            model=model, task_spec=task, export_base_dir=tmp_path, formats=["pytorch", "onnx"]
        )
    assert list(tmp_path.iterdir()) == []


def test_health_checks_can_be_skipped(tmp_path: Path) -> None:
    model, _, task = model_and_task(EXAMPLES / "simple_cnn.py")
    folder = create_export_bundle(
        model=model,
        task_spec=task,
        export_base_dir=tmp_path,
        formats=["pytorch"],
        run_health_checks=False,
    )
    assert not (folder / "health_report.md").exists()
    assert not (folder / "artifacts" / "health_report.json").exists()
    assert "health" not in json.loads((folder / "metadata.json").read_text())
    assert not (folder / "configs" / "training_config.json").exists()  # none was given
    with pytest.raises(ValueError, match="needs task_spec="):
        create_export_bundle(model=model, export_base_dir=tmp_path)
