"""Helpers every check shares: leaving the model as it was, reading its logits, naming errors.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.models.adapters import TaskAdapter

Batch = dict[str, Any]
MAX_EXCEPTION_TEXT = 500


@contextlib.contextmanager
def preserved_model(model: nn.Module, *, training: bool | None = None) -> Iterator[nn.Module]:
    """Run a block with the model in ``training`` mode, then restore what the block may change.

    Restored afterwards: every module's own ``training`` flag (set directly, so a user's
    overridden ``train()`` cannot interfere), every buffer's value (a train-mode forward updates
    BatchNorm running statistics) and the CPU and CUDA RNG states (dropout consumes them), so a
    check neither changes the model nor shifts the user's random stream.

    Checks call this once per example, hundreds of times a session, so it does no work it can
    prove unneeded: ``model.train(training)`` is called only when some module is in the other
    mode, and CUDA states are saved only when CUDA is initialised (before that, no tensor can
    live there and no CUDA generator has been used).
    """
    modules = list(model.modules())
    modes = [module.training for module in modules]
    buffers = [
        (buffer, buffer.detach().clone())
        for module in modules
        for buffer in module._buffers.values()
        if buffer is not None
    ]
    devices = _cuda_devices(model)
    cpu_rng = torch.get_rng_state()
    cuda_rngs = [torch.cuda.get_rng_state(device) for device in devices]
    try:
        if training is not None and any(mode != training for mode in modes):
            model.train(training)
        yield model
    finally:
        torch.set_rng_state(cpu_rng)
        for device, state in zip(devices, cuda_rngs, strict=True):
            torch.cuda.set_rng_state(state, device)
        if buffers:
            with torch.no_grad():
                for buffer, saved in buffers:
                    if buffer.shape == saved.shape and buffer.dtype == saved.dtype:
                        buffer.copy_(saved)
        for module, mode in zip(modules, modes, strict=True):
            if module.training != mode:
                module.training = mode


def _cuda_devices(model: nn.Module) -> list[int]:
    """Indices of the CUDA devices holding the model's tensors (none before CUDA starts)."""
    if not torch.cuda.is_initialized():
        return []
    tensors = (*model.parameters(), *model.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: message"``, truncated so that one bad model cannot flood a CI log."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_EXCEPTION_TEXT:
        text = text[: MAX_EXCEPTION_TEXT - 3] + "..."
    return text


def forward_logits(
    model: nn.Module, adapter: TaskAdapter, batch: Mapping[str, Any]
) -> torch.Tensor:
    """The adapter's logits for ``batch`` (a per-token classifier output pooled over the mask)."""
    outputs = adapter.forward(model, dict(batch))
    return adapter.get_logits(outputs, adapter.task, batch=dict(batch))


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer; ``None`` for a stateless model."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return None


def to_device(batch: Batch, device: torch.device | None) -> Batch:
    """A shallow copy of ``batch`` with its tensors on ``device`` (no copy when already there)."""
    if device is None:
        return dict(batch)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def elapsed(start: float) -> float:
    """Seconds since ``start`` (a ``time.perf_counter()`` reading), never negative."""
    return max(0.0, time.perf_counter() - start)


def unravel_index(flat: int, shape: tuple[int, ...]) -> list[int]:
    """The index in a tensor of ``shape`` of the element at ``flat`` in its flattened order."""
    index: list[int] = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return list(reversed(index))
