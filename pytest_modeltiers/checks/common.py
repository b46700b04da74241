"""Helpers every check shares: leaving the model as it was, reading its logits, naming errors.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
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
    """
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    devices = sorted(
        {t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.is_cuda}
    )
    try:
        with torch.random.fork_rng(devices=devices):
            if training is not None:
                model.train(training)
            yield model
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                if buffer.shape == saved.shape and buffer.dtype == saved.dtype:
                    buffer.copy_(saved)
        for module, mode in modes:
            module.training = mode


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
