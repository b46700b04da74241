"""What an artifact takes and returns: its input tensors, their dynamic dimensions, the wrapper.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.outputs import extract_logits
from pytest_modeltiers.models.running import preserved_model

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "EXAMPLE_BATCH_SIZE",
    "ExportSignature",
    "ExportWrapper",
    "InputSpec",
    "build_signature",
    "example_batch",
]

EXAMPLE_BATCH_SIZE = 2
EXAMPLE_SEQ_LEN = 8
EXAMPLE_TARGET_LEN = 6
OUTPUT_NAME = "logits"
Batch = dict[str, Any]


@dataclass(frozen=True)
class InputSpec:
    """One artifact input: its name, dtype, example shape and dynamic dimensions."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    axes: Mapping[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "dynamic_axes": {str(dim): axis for dim, axis in sorted(self.axes.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=tuple(int(d) for d in data["shape"]),
            axes={int(dim): str(axis) for dim, axis in data.get("dynamic_axes", {}).items()},
        )


@dataclass(frozen=True)
class ExportSignature:
    """The artifact's calling convention; JSON round trip through ``to_dict``/``from_dict``."""

    family: str
    inputs: tuple[InputSpec, ...]
    positional: str | None
    ranges: Mapping[str, tuple[int, int | None]]
    output_shape: tuple[int, ...] = ()
    output_dtype: str = "float32"
    output_name: str = OUTPUT_NAME

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def select(self, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
        """The artifact's input tensors, in order, from a dict of model inputs."""
        missing = [name for name in self.names if name not in inputs]
        if missing:
            raise AdapterError(
                f"the exported model takes {', '.join(self.names)}; missing {', '.join(missing)} "
                f"(got {', '.join(sorted(inputs)) or 'nothing'})"
            )
        return tuple(inputs[name] for name in self.names)

    def shape_of(self, inputs: Mapping[str, Any]) -> str:
        """``"input_ids[3,17] attention_mask[3,17]"`` for the artifact's inputs in ``inputs``."""
        return " ".join(
            f"{name}[{','.join(str(d) for d in inputs[name].shape)}]"
            for name in self.names
            if name in inputs
        )

    def torch_dynamic_shapes(self) -> tuple[tuple[dict[int, Any], ...]]:
        """``dynamic_shapes`` for ``torch.export`` of ``ExportWrapper`` (one ``*inputs`` arg)."""
        dims: dict[str, Any] = {}
        for axis, (low, high) in self.ranges.items():
            if high is not None and high <= low:
                continue
            kwargs: dict[str, int] = {"min": low}
            if high is not None:
                kwargs["max"] = high
            dims[axis] = torch.export.Dim(axis, **kwargs)
        return (
            tuple(
                {dim: dims[axis] for dim, axis in spec.axes.items() if axis in dims}
                for spec in self.inputs
            ),
        )

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``dynamic_axes`` for the legacy (TorchScript-based) ONNX exporter."""
        axes = {spec.name: dict(spec.axes) for spec in self.inputs if spec.axes}
        out: dict[int, str] = {0: "batch"}
        if self.family == "lm" and len(self.output_shape) >= 2:
            out[1] = "sequence"
        elif self.family == "seq2seq" and len(self.output_shape) >= 2:
            out[1] = "target"
        axes[self.output_name] = out
        return axes

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "positional": self.positional,
            "ranges": {axis: {"min": lo, "max": hi} for axis, (lo, hi) in self.ranges.items()},
            "output": {
                "name": self.output_name,
                "shape": list(self.output_shape),
                "dtype": self.output_dtype,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportSignature:
        output = data.get("output", {})
        return cls(
            family=str(data["family"]),
            inputs=tuple(InputSpec.from_dict(item) for item in data["inputs"]),
            positional=data.get("positional"),
            ranges={
                str(axis): (int(r["min"]), None if r["max"] is None else int(r["max"]))
                for axis, r in data.get("ranges", {}).items()
            },
            output_shape=tuple(int(d) for d in output.get("shape", ())),
            output_dtype=str(output.get("dtype", "float32")),
            output_name=str(output.get("name", OUTPUT_NAME)),
        )


class ExportWrapper(nn.Module):
    """The module every exporter traces: artifact inputs in, the adapter's logits out.

    ``forward(*inputs)`` takes the tensors in ``signature.names`` order, calls the model the way
    the adapter does (positional primary input, keyword arguments) and returns
    ``adapter.get_logits`` (without an adapter, the generic ``extract_logits``: a scripted
    artifact loaded on its own).
    """

    def __init__(
        self, model: nn.Module, adapter: TaskAdapter | None, signature: ExportSignature
    ) -> None:
        super().__init__()
        self.model = model
        self._adapter = adapter
        self._names = signature.names
        self._positional = signature.positional

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self._names, inputs, strict=True))
        args = () if self._positional is None else (batch[self._positional],)
        kwargs = {name: batch[name] for name in self._names if name != self._positional}
        outputs = self.model(*args, **kwargs)
        if self._adapter is None:
            return extract_logits(outputs)
        return self._adapter.get_logits(outputs, self._adapter.task, batch=batch)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _image_range(task: TaskSpec) -> tuple[int, int] | None:
    value = (task.additional_config or {}).get("dynamic_image_size")
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        or value[0] > value[1]
    ):
        raise AdapterError(
            f"task {task.name!r}: additional_config.dynamic_image_size must be [MIN, MAX] "
            f"with 1 <= MIN <= MAX, got {value!r}"
        )
    return int(value[0]), int(value[1])


def example_batch(task: TaskSpec, *, seed: int = 0) -> Batch:
    """The batch the exporters trace with: 2 examples, no dimension of size 1 where avoidable."""
    if task.family == "vision":
        return make_batch(task, EXAMPLE_BATCH_SIZE, seed=seed)
    seq = EXAMPLE_SEQ_LEN if task.max_seq_len is None else min(EXAMPLE_SEQ_LEN, task.max_seq_len)
    target = None
    if task.family == "seq2seq":
        limit = task.max_target_len
        target = EXAMPLE_TARGET_LEN if limit is None else min(EXAMPLE_TARGET_LEN, limit)
        if target == seq and target > 2:
            target -= 1  # distinct lengths, so no exporter can confuse the two axes
    return make_batch(task, EXAMPLE_BATCH_SIZE, seq, target_len=target, seed=seed)


def _ranges(task: TaskSpec) -> dict[str, tuple[int, int | None]]:
    ranges: dict[str, tuple[int, int | None]] = {"batch": (1, None)}
    if task.family == "vision":
        image = _image_range(task)
        if image is not None:
            ranges["height"] = image
            ranges["width"] = image
        return ranges
    ranges["sequence"] = (1, task.max_seq_len)
    if task.family == "seq2seq":
        ranges["target"] = (1, task.max_target_len)
    return ranges


def _axes(name: str, tensor: torch.Tensor, batch: Batch, task: TaskSpec) -> dict[int, str]:
    """Dynamic dimensions of one input, recognised by name and example size."""
    axes: dict[int, str] = {}
    primary = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    if tensor.dim() >= 1 and tensor.shape[0] == primary.shape[0]:
        axes[0] = "batch"
    if task.family == "vision":
        if name == "pixel_values" and _image_range(task) is not None and tensor.dim() == 4:
            first = 2 if getattr(task, "channels_first", True) else 1
            axes[first], axes[first + 1] = "height", "width"
        return axes
    if tensor.dim() >= 2:
        reference = "decoder_input_ids" if name.startswith("decoder_") else "input_ids"
        axis = "target" if name.startswith("decoder_") else "sequence"
        ref = batch.get(reference)
        if isinstance(ref, torch.Tensor) and ref.dim() >= 2 and tensor.shape[1] == ref.shape[1]:
            axes[1] = axis
    return axes


def build_signature(
    model: nn.Module, adapter: TaskAdapter, task: TaskSpec, batch: Batch | None = None
) -> tuple[ExportSignature, tuple[torch.Tensor, ...]]:
    """The signature of ``model`` under ``adapter``, and the example input tensors.

    Runs the model once in eval mode on the example batch, which also records the output's
    shape and dtype. ``AdapterError`` when the adapter cannot call the model or read its logits.
    """
    raw = example_batch(task) if batch is None else batch
    prepared = adapter.prepare_inputs(dict(raw), task)
    plan = adapter.call_plan(model, prepared, task)
    names = ([plan.positional] if plan.positional is not None else []) + list(plan.keywords)
    inputs = []
    for name in names:
        value = prepared[name]
        if not isinstance(value, torch.Tensor):
            raise AdapterError(
                f"the model input {name!r} is a {type(value).__name__}; exported models take "
                "tensors only"
            )
        inputs.append(
            InputSpec(
                name,
                _dtype_name(value.dtype),
                tuple(value.shape),
                _axes(name, value, prepared, task),
            )
        )
    signature = ExportSignature(
        family=task.family, inputs=tuple(inputs), positional=plan.positional, ranges=_ranges(task)
    )
    tensors = signature.select(prepared)
    with preserved_model(model, training=False), torch.no_grad():
        logits = ExportWrapper(model, adapter, signature)(*tensors)
    signature = dataclasses.replace(
        signature,
        output_shape=tuple(int(d) for d in logits.shape),
        output_dtype=_dtype_name(logits.dtype),
    )
    return signature, tensors
