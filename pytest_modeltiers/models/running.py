"""Running a model the way every check, exporter and evaluation does: leaving it as it was,
reading its logits against the task's shape, moving a batch to its device.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import require_num_classes, require_vocab_size

__all__ = [
    "expected_logits_shape",
    "forward_logits",
    "model_device",
    "preserved_model",
    "to_device",
    "unravel_index",
]

Batch = dict[str, Any]


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


def forward_logits(
    model: nn.Module, adapter: TaskAdapter, batch: Mapping[str, Any]
) -> torch.Tensor:
    """The adapter's logits for ``batch`` (a per-token classifier output pooled over the mask)."""
    outputs = adapter.forward(model, dict(batch))
    return adapter.get_logits(outputs, adapter.task, batch=dict(batch))


def expected_logits_shape(adapter: TaskAdapter, batch: Mapping[str, Any]) -> list[int]:
    """The logits shape the task contract requires for ``batch``.

    LM ``[B,T,V]`` (T of ``input_ids``), classification ``[B,C]``, seq2seq ``[B,T_dec,V]`` (T_dec
    of the decoder inputs the adapter derives from the labels), vision ``[B,C]``; V is the
    task's output vocabulary (``output_schema.vocab_size``, else ``vocab_size``) and C its
    ``num_classes``. A task missing V or C raises ``AdapterError`` saying how to set it.
    """
    task = adapter.task
    prepared = adapter.prepare_inputs(dict(batch), task)
    primary = prepared[adapter.primary_input]
    batch_size = int(primary.shape[0])
    family = task.family
    if family in ("lm", "seq2seq"):
        out_vocab = task.output_schema.get("vocab_size")
        vocab = int(out_vocab) if out_vocab is not None else require_vocab_size(task)
        if family == "lm":
            return [batch_size, int(primary.shape[1]), vocab]
        return [batch_size, int(prepared["decoder_input_ids"].shape[1]), vocab]
    return [batch_size, require_num_classes(task)]


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


def unravel_index(flat: int, shape: tuple[int, ...]) -> list[int]:
    """The index in a tensor of ``shape`` of the element at ``flat`` in its flattened order."""
    index: list[int] = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return list(reversed(index))
