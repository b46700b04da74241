"""Int8 models: dynamic and static quantization apply, or say why not; never fp32 as int8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_support import EXAMPLES, model_and_task
from torch import nn

from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.export.formats import ExportError
from pytest_modeltiers.export.quantization import (
    QuantizationUnavailable,
    QuantizedModel,
    export_quantized,
    quantize_model,
)
from pytest_modeltiers.export.runtime import load_artifact
from pytest_modeltiers.export.signature import build_signature
from pytest_modeltiers.models.adapters import get_adapter

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")


def test_dynamic_quantizes_every_linear_and_the_artifact_is_int8(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(EXAMPLES / "tiny_gpt.py")
    quantized = quantize_model(model, adapter, task, "dynamic")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(quantized.quantized_layers) == sorted(linears)
    assert all(isinstance(m, nn.Linear) for n, m in model.named_modules() if n in linears)
    signature, tensors = build_signature(model, adapter, task)
    artifact = export_quantized(quantized, adapter, signature, tensors, tmp_path)
    assert artifact.details["int8_ops"] == ["quantized::linear_dynamic"]
    runner = load_artifact("quantized", artifact.path, signature)
    inputs = dict(zip(signature.names, tensors, strict=True))
    with torch.no_grad():
        reference = model(*tensors)
    assert torch.allclose(runner(inputs), reference, atol=0.2, rtol=0.2)


def test_dynamic_without_linear_layers_does_not_apply() -> None:
    task = get_builtin_task("vision_tiny")
    conv_only = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(QuantizationUnavailable, match=r"has no nn\.Linear layer"):
        quantize_model(conv_only, get_adapter(task), task, "dynamic")


def test_static_calibrates_on_the_tasks_training_data() -> None:
    model, adapter, task = model_and_task(EXAMPLES / "simple_cnn.py")
    quantized = quantize_model(model, adapter, task, "static", calibration_examples=32)
    assert quantized.mode == "static" and quantized.quantized_layers
    assert quantized.details["calibration"] == "32 examples of the task's train split"
    assert quantized.details["calibration_batches"] == 2


def test_static_on_a_model_fx_cannot_trace_says_where() -> None:
    model, adapter, task = model_and_task(EXAMPLES / "tiny_gpt.py")
    with pytest.raises(QuantizationUnavailable) as info:
        quantize_model(model, adapter, task, "static")
    assert "needs a model that torch.fx can trace" in str(info.value)
    assert "tiny_gpt.py:90 in forward" in str(info.value)


def test_an_fp32_model_is_never_saved_as_int8(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(EXAMPLES / "simple_cnn.py")
    signature, tensors = build_signature(model, adapter, task)
    fake = QuantizedModel(model, "dynamic", ["head"])
    with pytest.raises(ExportError, match=r"no quantized:: operator"):
        export_quantized(fake, adapter, signature, tensors, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode_is_an_error() -> None:
    model, adapter, task = model_and_task(EXAMPLES / "simple_cnn.py")
    with pytest.raises(ValueError, match="'dynamic' or 'static'"):
        quantize_model(model, adapter, task, "int4")
