"""Exporters: signatures, dynamic dimensions, actionable causes, atomic artifacts, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_support import ALL_FORMATS, EXAMPLES, FIXTURES, exported, model_and_task
from torch import nn

from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.export.diagnose import explain_export_error
from pytest_modeltiers.export.exporters import (
    export_model,
    export_state_dict,
    file_sha256,
    inspect_onnx,
)
from pytest_modeltiers.export.formats import ExportError
from pytest_modeltiers.export.signature import ExportSignature, build_signature, example_batch
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.timeouts import ModelTimeoutError

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")


# --------------------------------------------------------------------------- signatures


def test_lm_signature_names_inputs_and_dynamic_axes() -> None:
    model, adapter, task = model_and_task(EXAMPLES / "tiny_gpt.py")
    signature, tensors = build_signature(model, adapter, task)
    assert signature.names == ("input_ids", "attention_mask")
    assert all(dict(spec.axes) == {0: "batch", 1: "sequence"} for spec in signature.inputs)
    assert signature.ranges == {"batch": (1, None), "sequence": (1, 64)}
    assert [list(t.shape) for t in tensors] == [[2, 8], [2, 8]]  # no dimension of size 1
    assert signature.output_shape == (2, 8, 256) and signature.output_dtype == "float32"
    assert ExportSignature.from_dict(json.loads(json.dumps(signature.to_dict()))) == signature


def test_seq2seq_targets_and_images_get_their_own_axes() -> None:
    model, adapter, task = model_and_task(EXAMPLES / "tiny_seq2seq.py")
    signature, _ = build_signature(model, adapter, task)
    axes = {spec.name: dict(spec.axes) for spec in signature.inputs}
    assert axes["decoder_input_ids"] == {0: "batch", 1: "target"}
    assert axes["input_ids"] == {0: "batch", 1: "sequence"}
    cnn, cnn_adapter, vision = model_and_task(EXAMPLES / "simple_cnn.py")
    signature, _ = build_signature(cnn, cnn_adapter, vision)
    assert signature.positional == "pixel_values"
    assert dict(signature.inputs[0].axes) == {0: "batch"}  # the task fixes the image size


def test_task_may_allow_other_image_sizes() -> None:
    cnn, _, _ = model_and_task(EXAMPLES / "simple_cnn.py")
    task = get_builtin_task("vision_tiny").merged(
        {"additional_config": {"dynamic_image_size": [16, 48]}}
    )
    signature, _ = build_signature(cnn, get_adapter(task), task)
    assert dict(signature.inputs[0].axes) == {0: "batch", 2: "height", 3: "width"}
    bad = get_builtin_task("vision_tiny").merged(
        {"additional_config": {"dynamic_image_size": [48, 16]}}
    )
    with pytest.raises(AdapterError, match=r"dynamic_image_size must be \[MIN, MAX\]"):
        build_signature(cnn, get_adapter(bad), bad)


def test_example_batch_avoids_size_one() -> None:
    task = (
        get_builtin_task("lm_tiny").with_vocab_size(10).merged({"input_schema": {"max_seq_len": 3}})
    )
    batch = example_batch(task)
    assert list(batch["input_ids"].shape) == [2, 3]


# --------------------------------------------------------------------------- good exports


def test_every_format_is_written_with_metadata_and_nothing_else() -> None:
    folder = exported(EXAMPLES / "tiny_gpt.py")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert sorted(metadata["formats"]) == sorted(ALL_FORMATS)
    for entry in [*metadata["formats"].values(), metadata["quantization"]]:
        for name, info in entry["files"].items():
            assert file_sha256(folder / name) == info["sha256"]
            assert (folder / name).stat().st_size == info["bytes"] > 0
    assert metadata["task"]["vocab_size"] == 256
    assert metadata["framework_versions"]["torch"] is not None
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "staging left over"
    onnx_info = inspect_onnx(
        folder / "model.onnx", ExportSignature.from_dict(metadata["signature"])
    )
    assert onnx_info["inputs"]["input_ids"] == ["batch", "sequence"]
    assert onnx_info["fixed_dims"] == []
    assert metadata["formats"]["torchscript"]["details"]["mode"] == "trace"


# --------------------------------------------------------------------------- buggy models


def test_data_dependent_branch_names_the_line(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(FIXTURES / "branch_on_values.py")
    with pytest.raises(ExportError) as info:
        export_model(model, adapter, task, tmp_path, ALL_FORMATS)
    error = info.value
    assert error.format == "torch_export, onnx"
    assert "data-dependent control flow at " in error.cause
    assert error.location is not None
    assert "branch_on_values.py:27 in forward: `if input_ids[0, 0] >= 32:" in error.location
    # The formats that could be written were, and only they are listed.
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert sorted(metadata["formats"]) == ["pytorch", "torchscript"]
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.pt2").exists()
    warnings = metadata["formats"]["torchscript"]["details"]["tracer_warnings"]
    assert any("branch_on_values.py:27" in w for w in warnings), warnings


def test_python_int_length_is_reported_by_both_graph_exporters(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(FIXTURES / "positions_python_int.py")
    with pytest.raises(ExportError) as info:
        export_model(model, adapter, task, tmp_path, ("onnx", "torch_export"))
    failures = {f["format"]: f for f in info.value.details["failures"]}
    assert failures["torch_export"]["kind"] == "specialized_dimension"
    assert "sequence dimension was fixed to the constant 8" in failures["torch_export"]["cause"]
    assert "positions_python_int.py:26" in failures["torch_export"]["location"]
    assert failures["onnx"]["kind"] == "fixed_dimension"
    assert failures["onnx"]["fixed_dims"][0] == ["input_ids", 1, "sequence", 8]
    assert "positions_python_int.py:26" in failures["onnx"]["location"]


class _ExtraState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)

    def get_extra_state(self) -> dict[str, int]:
        return {"version": 3}

    def set_extra_state(self, state: object) -> None:
        pass


def test_state_dict_with_python_state_fails_with_the_key(tmp_path: Path) -> None:
    model = _ExtraState()
    signature = ExportSignature("lm", (), None, {})
    with pytest.raises(ExportError) as info:
        export_state_dict(model, signature, tmp_path)
    assert "non-tensor entries (_extra_state)" in info.value.cause
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --------------------------------------------------------------------------- diagnose


def test_timeouts_and_unknown_errors_are_explained() -> None:
    timeout = explain_export_error(ModelTimeoutError("exporting onnx timed out after 5 s"), "onnx")
    assert timeout.kind == "timeout" and "--modeltiers-timeout" in timeout.cause

    def fail_here() -> None:
        raise RuntimeError("boom\nsecond line")

    try:
        fail_here()
    except RuntimeError as exc:
        other = explain_export_error(exc, "onnx")
    assert other.kind == "exception"
    assert other.cause.startswith("the exporter raised RuntimeError: boom at ")
    assert "test_export_exporters.py" in (other.location or "")


def test_onnx_report_text_is_reduced_to_its_exception_summary() -> None:
    text = (
        "Failed to export the model. \x1b[96mThis is step 2/3\x1b[0m\n\n## Exception summary\n\n"
        "<class 'ValueError'>: Cannot view a tensor\n\nmore"
    )
    failure = explain_export_error(RuntimeError(text), "onnx")
    assert failure.exception == "RuntimeError: <class 'ValueError'>: Cannot view a tensor"


def test_torchscript_falls_back_to_scripting_when_tracing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modeltiers.export.exporters import export_torchscript
    from pytest_modeltiers.export.runtime import load_artifact

    model, adapter, task = model_and_task(EXAMPLES / "simple_cnn.py")
    signature, tensors = build_signature(model, adapter, task)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("this model cannot be traced")

    monkeypatch.setattr("torch.jit.trace", refuse)
    artifact = export_torchscript(model, adapter, signature, tensors, tmp_path)
    assert artifact.details["mode"] == "script"
    runner = load_artifact(
        "torchscript", artifact.path, signature, adapter=adapter, torchscript_mode="script"
    )
    inputs = dict(zip(signature.names, tensors, strict=True))
    assert runner(inputs).shape == (2, 4)


def test_when_tracing_and_scripting_fail_both_causes_are_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modeltiers.export.exporters import export_torchscript

    model, adapter, task = model_and_task(EXAMPLES / "tiny_gpt.py")  # not scriptable
    signature, tensors = build_signature(model, adapter, task)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("this model cannot be traced")

    monkeypatch.setattr("torch.jit.trace", refuse)
    with pytest.raises(ExportError) as info:
        export_torchscript(model, adapter, signature, tensors, tmp_path)
    assert "tracing failed (the exporter raised RuntimeError: this model cannot be traced" in (
        info.value.cause
    )
    assert "and so did scripting (" in info.value.cause
    assert list(tmp_path.iterdir()) == []
