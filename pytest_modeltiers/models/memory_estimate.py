"""How much memory a training run will need, estimated before anything big is allocated.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import make_batch

__all__ = ["MemoryEstimate", "available_memory", "estimate_training_memory", "format_bytes"]

#: Weights, gradients and the optimizer's two moments (Adam, AdamW) per parameter.
PARAMETER_COPIES = 4
#: Leaf outputs, plus the functional intermediates and the gradients flowing back.
ACTIVATION_FACTOR = 2


def format_bytes(count: float) -> str:
    """``"1.5 GiB"``: binary units, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of the estimate, so a refusal can say which part is too big."""

    parameter_bytes: int
    buffer_bytes: int
    activation_bytes: int | None
    batch: str
    activation_note: str = ""

    @property
    def total_bytes(self) -> int:
        activations = self.activation_bytes or 0
        return (
            PARAMETER_COPIES * self.parameter_bytes
            + self.buffer_bytes
            + ACTIVATION_FACTOR * activations
        )

    def describe(self) -> str:
        """One line: the total and where it comes from."""
        parts = [
            f"parameters {format_bytes(self.parameter_bytes)} x {PARAMETER_COPIES} (weights, "
            "gradients, Adam's two moments)"
        ]
        if self.buffer_bytes:
            parts.append(f"buffers {format_bytes(self.buffer_bytes)}")
        if self.activation_bytes is None:
            parts.append(f"activations not estimated ({self.activation_note})")
        else:
            parts.append(
                f"activations {format_bytes(self.activation_bytes)} x {ACTIVATION_FACTOR} for "
                f"a batch of {self.batch}"
            )
        return f"about {format_bytes(self.total_bytes)}: " + " + ".join(parts)


def estimate_training_memory(
    meta_model: nn.Module,
    task: TaskSpec,
    adapter: TaskAdapter,
    batch_size: int,
    example: Mapping[str, torch.Tensor] | None = None,
) -> MemoryEstimate:
    """Estimate a training run of ``meta_model`` (built on the meta device) at ``batch_size``.

    ``example`` is one training example (tensors without the batch dimension) whose shapes the
    batch takes; without it, the task's longest batch (``make_batch`` at its maximum lengths).
    """
    parameter_bytes = sum(_nbytes(p) for p in meta_model.parameters())
    buffer_bytes = sum(_nbytes(b) for b in meta_model.buffers())
    try:
        batch = _meta_batch(task, batch_size, example)
    except Exception as exc:  # a task make_batch cannot serve: parameters still count
        return MemoryEstimate(
            parameter_bytes, buffer_bytes, None, "", f"no batch: {type(exc).__name__}: {exc}"
        )
    shape = ", ".join(f"{key}{list(value.shape)}" for key, value in batch.items())
    try:
        activation_bytes = _forward_output_bytes(meta_model, adapter, batch)
    except Exception as exc:  # .item(), data-dependent shapes: no meta forward
        reason = f"the model cannot run on PyTorch's meta device: {type(exc).__name__}: {exc}"
        return MemoryEstimate(parameter_bytes, buffer_bytes, None, shape, reason)
    return MemoryEstimate(parameter_bytes, buffer_bytes, activation_bytes, shape)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _meta_batch(
    task: TaskSpec, batch_size: int, example: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """``batch_size`` copies of ``example``'s shapes on the meta device (no storage)."""
    if example is None:
        row = make_batch(
            task, 1, seq_len=task.max_seq_len or None, target_len=task.max_target_len or None
        )
        example = {key: value[0] for key, value in row.items()}
    return {
        key: torch.empty((batch_size, *value.shape), dtype=value.dtype, device="meta")
        for key, value in example.items()
    }


def _forward_output_bytes(model: nn.Module, adapter: TaskAdapter, batch: dict[str, Any]) -> int:
    """The bytes of every leaf module's outputs in one training-mode forward of ``batch``."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        total += sum(_nbytes(t) for t in _tensors(output))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    was_training = model.training
    try:
        model.train()
        outputs = adapter.forward(model, batch)
        if not leaves:  # a model without submodules: count what it returns
            total += sum(_nbytes(t) for t in _tensors(outputs))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "to_tuple"):  # transformers' ModelOutput
        yield from _tensors(value.to_tuple())


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable``, capped by a cgroup limit.

    None where neither ``/proc/meminfo`` nor ``sysconf`` says (then nothing is refused).
    """
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    limit = _cgroup_room()
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text(encoding="ascii").strip()
        used = int((base / "memory.current").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - used)
