"""Loading artifacts back: every runtime, calling conventions, and damaged files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from export_support import ALL_FORMATS, EXAMPLES, FIXTURES, exported, loaded, model_and_task
from safetensors.torch import load_file, save_file

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.export.formats import FORMATS, ArtifactError
from pytest_modeltiers.export.runtime import load_artifact, load_exported_model
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper
from pytest_modeltiers.models.batches import make_batch

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")
GPT = EXAMPLES / "tiny_gpt.py"


def _inputs(batch_size: int = 3, length: int = 5) -> dict[str, torch.Tensor]:
    _, adapter, task = model_and_task(GPT)
    return adapter.prepare_inputs(make_batch(task, batch_size, length, seed=4), task)


def _eager(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model, adapter, _ = model_and_task(GPT)
    folder = exported(GPT)
    signature = ExportSignature.from_dict(
        json.loads((folder / "metadata.json").read_text())["signature"]
    )
    with torch.no_grad():
        return ExportWrapper(model, adapter, signature)(*signature.select(inputs))


@pytest.mark.parametrize("runtime", [*ALL_FORMATS, "quantized"])
def test_every_runtime_loads_and_matches_eager(runtime: str) -> None:
    model = loaded(GPT)
    artifact = load_exported_model(
        exported(GPT), runtime, model_factory=model.new_model, adapter=model.adapter
    )
    inputs = _inputs()
    logits = artifact(inputs)
    assert list(logits.shape) == [3, 5, 256]
    tolerance = 0.2 if runtime == "quantized" else 1e-4
    assert torch.allclose(logits, _eager(inputs), atol=tolerance, rtol=tolerance)


def test_calling_conventions() -> None:
    artifact = load_exported_model(exported(GPT), "onnx")
    inputs = _inputs()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    by_dict = artifact(inputs)
    assert torch.equal(by_dict, artifact(ids, mask))
    assert torch.equal(by_dict, artifact(input_ids=ids, attention_mask=mask))
    assert artifact.input_names == ("input_ids", "attention_mask")
    with pytest.raises(AdapterError, match="missing attention_mask"):
        artifact(ids)
    with pytest.raises(TypeError, match="takes 2 inputs"):
        artifact(ids, mask, mask)


def _damaged_copy(tmp_path: Path, filename: str, keep: float) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(exported(GPT), folder)
    target = folder / filename
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return folder


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_truncated_artifacts_fail_clearly(tmp_path: Path, fmt: str) -> None:
    folder = _damaged_copy(tmp_path, FORMATS[fmt].filename, keep=0.5)
    model = loaded(GPT)
    with pytest.raises(ArtifactError) as checked:
        load_exported_model(folder, fmt, model_factory=model.new_model, adapter=model.adapter)
    assert "does not match metadata.json" in str(checked.value)
    assert "changed or damaged after export" in str(checked.value)
    # Without the checksum, the loader itself recognises the damage.
    with pytest.raises(ArtifactError) as raw:
        load_exported_model(
            folder, fmt, model_factory=model.new_model, adapter=model.adapter, verify_sha256=False
        )
    message = str(raw.value)
    assert f"the {fmt} artifact" in message and "cannot be loaded" in message
    assert "truncated, corrupt" in message and "Export it again" in message


def test_committed_corrupt_export_is_reported_not_crashed() -> None:
    folder = FIXTURES / "corrupt_export"
    for runtime in ("onnx", "torch_export"):
        with pytest.raises(ArtifactError, match="cannot be loaded: it is truncated, corrupt"):
            load_exported_model(folder, runtime)
    with pytest.raises(ArtifactError, match="has no pytorch artifact; it has onnx, torch_export"):
        load_exported_model(folder, "pytorch")


def test_empty_missing_and_unknown(tmp_path: Path) -> None:
    signature = ExportSignature("lm", (), None, {})
    empty = tmp_path / "model.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"is empty \(0 bytes\): an export was interrupted"):
        load_artifact("onnx", empty, signature)
    with pytest.raises(ArtifactError, match="does not exist; export it first"):
        load_artifact("onnx", tmp_path / "absent.onnx", signature)
    with pytest.raises(
        ArtifactError, match=r"has no metadata\.json: it is not an export directory"
    ):
        load_exported_model(tmp_path, "onnx")
    with pytest.raises(ArtifactError, match="unknown export format 'tflite'"):
        load_exported_model(exported(GPT), "tflite")
    with pytest.raises(ArtifactError, match="the pytorch format holds weights only"):
        load_exported_model(exported(GPT), "pytorch")


def test_weights_file_must_supply_every_tensor(tmp_path: Path) -> None:
    folder = exported(GPT)
    state = load_file(str(folder / "model.safetensors"))
    del state["lm_head.weight"]
    partial = tmp_path / "model.safetensors"
    save_file(state, str(partial))
    model = loaded(GPT)
    signature = ExportSignature.from_dict(
        json.loads((folder / "metadata.json").read_text())["signature"]
    )
    with pytest.raises(ArtifactError, match=r"do not match the model: missing lm_head\.weight"):
        load_artifact(
            "pytorch", partial, signature, adapter=model.adapter, model_factory=model.new_model
        )


def test_rebuilt_model_only_matches_through_the_files_weights() -> None:
    """The factory builds the same seeded weights every time; the runner poisons them first,
    so a fresh instance cannot pass for the loaded one."""
    folder = exported(GPT)
    model = loaded(GPT)
    signature = ExportSignature.from_dict(
        json.loads((folder / "metadata.json").read_text())["signature"]
    )
    runner = load_artifact(
        "pytorch",
        folder / "model.safetensors",
        signature,
        adapter=model.adapter,
        model_factory=model.new_model,
    )
    params = list(runner.model.parameters())  # type: ignore[attr-defined]
    assert all(bool(torch.isfinite(p).all()) for p in params)
