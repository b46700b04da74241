"""Helpers every check shares: leaving the model as it was, reading its logits, naming errors.

PYTEST_DONT_REWRITE

An exception raised by the user's model is described with where it was raised in the user's
code (``exception_details``): the check's message and the report then point at ``model.py:12``
and its source line, not at the frames of this package or torch.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.export.diagnose import frame_origin
from pytest_modeltiers.models.adapters import TaskAdapter

Batch = dict[str, Any]
MAX_EXCEPTION_TEXT = 500
#: How many of the user's innermost frames ``exception_details`` lists.
MAX_USER_FRAMES = 5
MAX_SOURCE_TEXT = 200
#: Whose frames locate an exception, best first: the user's own files; else a library's (a
#: transformers model); else torch's or the standard library's (a bare ``nn.Transformer``).
_ORIGIN_PREFERENCE = (("user",), ("library",), ("torch", "stdlib"))
_MAX_CHAIN = 8


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


def exception_details(exc: BaseException) -> dict[str, Any]:
    """What a check's ``details`` say about an exception the model raised, and where.

    ``exception`` is ``"NameError: name 'F' is not defined"``; ``location`` (``"model.py:12"``,
    relative to the current directory when under it), ``source`` (that line's code) and
    ``user_frames`` (up to ``MAX_USER_FRAMES`` of them, innermost last, as
    ``"model.py:12 in forward: code"``) locate it in the innermost frames of the user's code, else
    of a library, else of torch or the standard library, never in this package. The exception's
    ``__cause__`` and ``__context__`` are searched when its own traceback holds none of them (an
    error this package re-raised). An exception that was never raised has only ``exception``.
    """
    details: dict[str, Any] = {"exception": describe_exception(exc)}
    frames = _located_frames(exc)
    if frames:
        innermost = frames[-1]
        details["location"] = _frame_location(innermost)
        source = _frame_source(innermost)
        if source:
            details["source"] = source
        details["user_frames"] = [_describe_frame(frame) for frame in frames]
    return details


def describe_model_exception(exc: BaseException) -> str:
    """``"NameError: name 'F' is not defined at model.py:12: return F.gelu(x)"``.

    ``describe_exception`` followed by where the model raised it (see ``exception_details``);
    checks use it for an exception of the user's model, so the message alone finds the line.
    """
    details = exception_details(exc)
    text: str = details["exception"]
    if "location" in details:
        text += f" at {details['location']}"
        if "source" in details:
            text += f": {details['source']}"
    return text


def _located_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The innermost frames of the most preferred origin found in ``exc``'s chain."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < _MAX_CHAIN and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    extracted = [traceback.extract_tb(item.__traceback__) for item in chain]
    for origins in _ORIGIN_PREFERENCE:
        for frames in extracted:
            chosen = [f for f in frames if f.lineno and frame_origin(f.filename) in origins]
            if chosen:
                return chosen[-MAX_USER_FRAMES:]
    return []


def _frame_location(frame: traceback.FrameSummary) -> str:
    return f"{_display_path(frame.filename)}:{frame.lineno}"


def _frame_source(frame: traceback.FrameSummary) -> str:
    source = (frame.line or "").strip()
    if len(source) > MAX_SOURCE_TEXT:
        source = source[: MAX_SOURCE_TEXT - 3] + "..."
    return source


def _describe_frame(frame: traceback.FrameSummary) -> str:
    text = f"{_frame_location(frame)} in {frame.name}"
    source = _frame_source(frame)
    return f"{text}: {source}" if source else text


def _display_path(filename: str) -> str:
    """``filename`` relative to the current directory when it lies under it, else as it is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if relative.startswith(os.pardir) else relative


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
