"""Int8 models for ``test_quantized_parity``: dynamic (Linear weights) or static (calibrated).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.datasets import make_dataloader, task_dataset
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.export.artifacts import ExportedArtifact, staged
from pytest_modeltiers.export.diagnose import quiet_exporter, user_frame
from pytest_modeltiers.export.formats import QUANTIZED_FILE, ExportError
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper, example_batch
from pytest_modeltiers.models.exceptions import describe_exception

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "CALIBRATION_EXAMPLES",
    "QuantizationUnavailable",
    "QuantizedModel",
    "export_quantized",
    "quantize_model",
]

#: Training examples the static mode calibrates its observers on.
CALIBRATION_EXAMPLES = 64
CALIBRATION_BATCH = 16


class QuantizationUnavailable(ModelTiersError):
    """The requested quantization does not apply to this model; the message says why."""


@dataclass
class QuantizedModel:
    """An int8 model, which of its layers were quantized, and how."""

    module: nn.Module
    mode: str
    quantized_layers: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def _engine() -> str:
    engine = torch.backends.quantized.engine
    if engine in (None, "none"):
        supported = [e for e in torch.backends.quantized.supported_engines if e != "none"]
        if not supported:
            raise QuantizationUnavailable(
                "this PyTorch build has no quantized engine (torch.backends.quantized."
                "supported_engines is empty), so int8 kernels cannot run here"
            )
        engine = supported[0]
        torch.backends.quantized.engine = engine
    return str(engine)


def _quantized_layers(module: nn.Module) -> list[str]:
    return [
        name
        for name, child in module.named_modules()
        if type(child).__module__.startswith("torch.ao.nn.quantized")
        and not type(child).__name__.endswith("PackedParams")
    ]


def quantize_model(
    model: nn.Module,
    adapter: TaskAdapter,
    task: TaskSpec,
    mode: str,
    *,
    calibration_examples: int = CALIBRATION_EXAMPLES,
) -> QuantizedModel:
    """An int8 copy of ``model`` (the original is untouched); ``QuantizationUnavailable`` when
    ``mode`` cannot apply, with the reason."""
    if mode not in ("dynamic", "static"):
        raise ValueError(f"quantization mode must be 'dynamic' or 'static', got {mode!r}")
    engine = _engine()
    if mode == "dynamic":
        return _dynamic(model, engine)
    return _static(model, adapter, task, engine, calibration_examples)


def _dynamic(model: nn.Module, engine: str) -> QuantizedModel:
    from torch.ao.quantization import quantize_dynamic

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise QuantizationUnavailable(
            f"{type(model).__name__} has no nn.Linear layer, so dynamic int8 quantization "
            "would leave it unchanged; use --export-quantization static (calibrated) or none"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Not in place: quantize_dynamic converts an eval-mode copy; the user's model is untouched.
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    layers = _quantized_layers(quantized)
    if not layers:
        raise QuantizationUnavailable(
            f"quantize_dynamic converted none of the {len(linears)} nn.Linear layers of "
            f"{type(model).__name__}"
        )
    return QuantizedModel(
        quantized.eval(),
        "dynamic",
        layers,
        {"engine": engine, "linear_layers": len(linears), "weights": "int8 (qint8)"},
    )


def _static(
    model: nn.Module, adapter: TaskAdapter, task: TaskSpec, engine: str, examples: int
) -> QuantizedModel:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    try:
        dataset = task_dataset(task, "train", size=examples)
    except ModelTiersError as exc:
        raise QuantizationUnavailable(
            f"static quantization calibrates on the task's data, and task {task.name!r} has "
            f"none: {exc}"
        ) from None
    prepared_example = adapter.prepare_inputs(example_batch(task), task)
    plan = adapter.call_plan(model, prepared_example, task)
    ordered = ([plan.positional] if plan.positional else []) + list(plan.keywords)
    example_inputs = tuple(prepared_example[name] for name in ordered)
    with quiet_exporter():
        try:
            prepared = prepare_fx(
                copy.deepcopy(model).eval(),
                get_default_qconfig_mapping(engine),
                example_inputs,
            )
        except Exception as exc:
            where = user_frame(exc)
            at = f" at {where}" if where else ""
            raise QuantizationUnavailable(
                f"static quantization needs a model that torch.fx can trace, and tracing "
                f"{type(model).__name__} failed{at}: {describe_exception(exc)}. Use "
                "--export-quantization dynamic, or make forward free of Python control flow "
                "on its inputs"
            ) from None
        loader = make_dataloader(dataset, batch_size=CALIBRATION_BATCH, shuffle=False)
        batches = 0
        with torch.no_grad():
            for batch in loader:
                adapter.forward(prepared, batch)
                batches += 1
        quantized = convert_fx(prepared)
    layers = _quantized_layers(quantized)
    if not layers:
        raise QuantizationUnavailable(
            f"FX static quantization of {type(model).__name__} converted no layer (no Linear or "
            "Conv in a supported pattern), so there is no int8 model to check"
        )
    return QuantizedModel(
        quantized.eval(),
        "static",
        layers,
        {
            "engine": engine,
            "calibration": f"{len(dataset)} examples of the task's train split",
            "calibration_batches": batches,
        },
    )


def export_quantized(
    quantized: QuantizedModel,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
) -> ExportedArtifact:
    """Save the int8 model as TorchScript; ``ExportError`` if the graph holds no int8 operator."""
    start = time.perf_counter()
    wrapper = ExportWrapper(quantized.module, adapter, signature)
    with staged(directory, "quantized") as stage, quiet_exporter():
        try:
            traced = torch.jit.trace(wrapper, tuple(tensors), check_trace=False, strict=False)
        except Exception as exc:
            raise ExportError(
                "quantized",
                f"tracing the {quantized.mode} int8 model failed: {describe_exception(exc)}",
            ) from exc
        ops = sorted({node.kind() for node in traced.inlined_graph.nodes()})
        int8_ops = [op for op in ops if op.startswith("quantized::")]
        if not int8_ops:
            raise ExportError(
                "quantized",
                "the traced int8 model has no quantized:: operator: it would be an fp32 model "
                "judged with the int8 tolerance",
            )
        torch.jit.save(traced, str(stage / QUANTIZED_FILE))
    return ExportedArtifact(
        "quantized",
        directory / QUANTIZED_FILE,
        signature,
        time.perf_counter() - start,
        details={
            "mode": "trace",
            "quantization": quantized.mode,
            "quantized_layers": quantized.quantized_layers,
            "int8_ops": int8_ops,
            **quantized.details,
        },
    )
