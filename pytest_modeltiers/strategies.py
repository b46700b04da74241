"""Hypothesis strategies that draw valid raw batches for any task.

PYTEST_DONT_REWRITE

Hypothesis draws what it can shrink (batch size, lengths, padding, a seed, which edge values to
plant); torch builds the tensors from that seed, which is fast and still deterministic. A
failing example therefore shrinks to the smallest shape and seed 0, and it replays exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from hypothesis import strategies as st

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.batches import make_batch, pixel_range, require_vocab_size

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec

__all__ = ["batch_shapes", "batches"]

_MAX_SEED = 2**31 - 1


def _length_bounds(
    maximum: int | None, min_len: int, max_len: int | None, what: str
) -> tuple[int, int]:
    __tracebackhide__ = True
    limits = [m for m in (maximum, max_len) if m is not None]
    if not limits:
        raise AdapterError(
            f"cannot draw {what}: the task has no maximum and no max_seq_len was given; set "
            "--task-option max_seq_len=N or pass max_seq_len= to the strategy."
        )
    high = min(limits)
    if min_len < 1 or min_len > high:
        raise AdapterError(f"min_seq_len={min_len} must be in [1, {high}] for {what}.")
    return min_len, high


def _validate(
    task: TaskSpec,
    max_batch_size: int,
    min_seq_len: int,
    max_seq_len: int | None,
    min_batch_size: int = 1,
) -> None:
    """Fail when the strategy is built, not at the first draw inside a test."""
    __tracebackhide__ = True
    if max_batch_size < 1:
        raise AdapterError(f"max_batch_size={max_batch_size}; it must be >= 1.")
    if not 1 <= min_batch_size <= max_batch_size:
        raise AdapterError(
            f"min_batch_size={min_batch_size} must be in [1, max_batch_size={max_batch_size}]."
        )
    if task.family == "vision":
        return
    _length_bounds(task.max_seq_len, min_seq_len, max_seq_len, "seq_len")
    if task.family == "seq2seq":
        _length_bounds(task.max_target_len, 1, max_seq_len, "target_len")


def _draw_shape(
    draw: st.DrawFn,
    task: TaskSpec,
    max_batch_size: int,
    min_seq_len: int,
    max_seq_len: int | None,
    min_batch_size: int = 1,
) -> dict[str, int]:
    shape = {"batch_size": draw(st.integers(min_batch_size, max_batch_size))}
    if task.family == "vision":
        return shape
    low, high = _length_bounds(task.max_seq_len, min_seq_len, max_seq_len, "seq_len")
    shape["seq_len"] = draw(st.integers(low, high))
    if task.family == "seq2seq":
        t_low, t_high = _length_bounds(task.max_target_len, 1, max_seq_len, "target_len")
        shape["target_len"] = draw(st.integers(t_low, t_high))
    return shape


@st.composite
def _shapes(
    draw: st.DrawFn, task: TaskSpec, max_batch_size: int, min_seq_len: int, max_seq_len: int | None
) -> dict[str, int]:
    return _draw_shape(draw, task, max_batch_size, min_seq_len, max_seq_len)


def batch_shapes(
    task: TaskSpec, max_batch_size: int = 8, min_seq_len: int = 1, max_seq_len: int | None = None
) -> st.SearchStrategy[dict[str, int]]:
    """Dicts with ``batch_size`` and, for text tasks, ``seq_len`` (and seq2seq ``target_len``).

    Lengths lie in ``[min_seq_len, min(task.max_seq_len, max_seq_len)]`` (targets: in
    ``[1, min(task.max_target_len, max_seq_len)]``); they shrink to the lower bound.
    """
    _validate(task, max_batch_size, min_seq_len, max_seq_len)
    return _shapes(task, max_batch_size, min_seq_len, max_seq_len)


def _plant(draw: st.DrawFn, flat: torch.Tensor, values: list[float] | list[int]) -> torch.Tensor:
    """Write each edge value at a drawn position (none when Hypothesis shrinks the flag away)."""
    if not draw(st.booleans()):
        return flat
    flat = flat.clone()
    for value in values:
        index = draw(st.integers(0, flat.numel() - 1))
        flat[index] = value
    return flat


@st.composite
def _batches(
    draw: st.DrawFn,
    task: TaskSpec,
    max_batch_size: int,
    min_seq_len: int,
    max_seq_len: int | None,
    padding: bool,
    min_batch_size: int,
) -> dict[str, torch.Tensor]:
    # Drawn in place, not through ``_shapes``: a nested composite costs Hypothesis a span and a
    # strategy call per example, on every example of every property.
    shape = _draw_shape(draw, task, max_batch_size, min_seq_len, max_seq_len, min_batch_size)
    seed = draw(st.integers(0, _MAX_SEED))
    if task.family == "vision":
        return _image_batch(draw, task, shape["batch_size"], seed)
    vocab = require_vocab_size(task)
    _, high = _length_bounds(task.max_seq_len, min_seq_len, max_seq_len, "seq_len")
    pad_to = shape["seq_len"] + (draw(st.integers(0, high - shape["seq_len"])) if padding else 0)
    kwargs: dict[str, Any] = {"seed": seed, "pad_to": pad_to}
    if task.family == "seq2seq":
        _, t_high = _length_bounds(task.max_target_len, 1, max_seq_len, "target_len")
        kwargs["target_len"] = shape["target_len"]
        extra = draw(st.integers(0, t_high - shape["target_len"])) if padding else 0
        kwargs["target_pad_to"] = shape["target_len"] + extra
    batch = make_batch(task, shape["batch_size"], shape["seq_len"], **kwargs)
    real = batch["attention_mask"].bool()
    ids = batch["input_ids"]
    planted = _plant(draw, ids[real], [0, vocab - 1])
    ids = ids.masked_scatter(real, planted)
    batch["input_ids"] = ids
    if task.family == "lm":
        batch["labels"] = ids.clone()
    if task.family == "seq2seq":
        real_targets = batch["decoder_attention_mask"].bool()
        targets = _plant(draw, batch["labels"][real_targets], [0, vocab - 1])
        batch["labels"] = batch["labels"].masked_scatter(real_targets, targets)
    return batch


def _image_batch(
    draw: st.DrawFn, task: TaskSpec, batch_size: int, seed: int
) -> dict[str, torch.Tensor]:
    batch = make_batch(task, batch_size, seed=seed)  # uniform over the task's pixel range
    low, high = pixel_range(task)
    edges = [low, high] + [v for v in (0.0, 1.0, -1.0) if low <= v <= high]
    pixels = batch["pixel_values"]
    batch["pixel_values"] = _plant(draw, pixels.reshape(-1), edges).reshape(pixels.shape)
    return batch


def batches(
    task: TaskSpec,
    max_batch_size: int = 8,
    min_seq_len: int = 1,
    max_seq_len: int | None = None,
    *,
    padding: bool = True,
    min_batch_size: int = 1,
) -> st.SearchStrategy[dict[str, torch.Tensor]]:
    """Raw batches for ``task`` (the ``models.batches`` layout), ready for ``adapter.forward``.

    Text batches may carry right padding within ``max_seq_len`` (``padding=False`` turns it
    off: every position real); batch sizes lie in ``[min_batch_size, max_batch_size]`` (a
    property that needs two samples asks for them rather than filtering, which wastes draws);
    token ids cover the whole vocabulary and sometimes hold 0 and ``vocab_size - 1`` at real
    positions. Image batches hold uniform pixels over the task's range and sometimes its ends
    and 0, 1, -1.
    """
    _validate(task, max_batch_size, min_seq_len, max_seq_len, min_batch_size)
    if task.family != "vision":
        require_vocab_size(task)
    return _batches(task, max_batch_size, min_seq_len, max_seq_len, padding, min_batch_size)
