"""Build deterministic raw batches for any task, and describe batches in messages.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from pytest_modeltiers.errors import AdapterError

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec

__all__ = [
    "DEFAULT_PIXEL_RANGE",
    "DEFAULT_SEQ_LEN",
    "batch_signature",
    "make_batch",
    "pixel_range",
    "require_num_classes",
    "require_vocab_size",
    "shift_right",
]

#: Sequence length used when ``make_batch`` is not given one (capped at the task's maximum).
#: Short enough to keep tier-1 checks fast on CPU, long enough to exercise attention.
DEFAULT_SEQ_LEN = 16

#: Pixel range of standardised images, used when the task's preprocessing does not define one.
DEFAULT_PIXEL_RANGE = (-3.0, 3.0)

_TEXT_FAMILIES = ("lm", "classification", "seq2seq")


def require_vocab_size(task: TaskSpec) -> int:
    """The task's vocabulary size, or an ``AdapterError`` that says how to set it."""
    __tracebackhide__ = True
    vocab = task.vocab_size
    if vocab is None:
        raise AdapterError(
            f"task {task.name!r} has no vocab_size, so token ids cannot be drawn. It is normally "
            "read from the model's input embedding; set it explicitly with "
            '--task-option vocab_size=N or TASK = {"input_schema": {"vocab_size": N}} in the '
            "model file."
        )
    if vocab < 1:
        raise AdapterError(f"task {task.name!r} has vocab_size={vocab}; it must be >= 1.")
    return int(vocab)


def require_num_classes(task: TaskSpec) -> int:
    """The task's number of classes, or an ``AdapterError`` that says how to set it."""
    __tracebackhide__ = True
    n = task.num_classes
    if n is None or n < 1:
        raise AdapterError(
            f"task {task.name!r} has num_classes={n!r}, so class labels cannot be drawn. Set it "
            'with --task-option num_classes=N or TASK = {"output_schema": {"num_classes": N}}.'
        )
    return int(n)


def _default_len(requested: int | None, maximum: int | None, what: str, task: TaskSpec) -> int:
    __tracebackhide__ = True
    if requested is None:
        requested = DEFAULT_SEQ_LEN if maximum is None else min(DEFAULT_SEQ_LEN, maximum)
    if requested < 1:
        raise AdapterError(f"{what}={requested} for task {task.name!r}; it must be >= 1.")
    return requested


def _pad_value(task: TaskSpec) -> int:
    pad = task.pad_token_id
    return 0 if pad is None else int(pad)


def _tokens(
    batch_size: int, length: int, pad_to: int | None, vocab: int, pad: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids Long[B, max(length, pad_to)] with right padding, and their attention mask."""
    __tracebackhide__ = True
    total = length if pad_to is None else pad_to
    if total < length:
        raise AdapterError(
            f"pad_to={pad_to} is shorter than the sequence length {length}; padding can only "
            "add positions. Pass pad_to >= seq_len, or None for no padding."
        )
    ids = torch.full((batch_size, total), pad, dtype=torch.long)
    ids[:, :length] = torch.randint(0, vocab, (batch_size, length), generator=g)
    mask = torch.zeros((batch_size, total), dtype=torch.long)
    mask[:, :length] = 1
    return ids, mask


def make_batch(
    task: TaskSpec,
    batch_size: int,
    seq_len: int | None = None,
    *,
    target_len: int | None = None,
    image_hw: tuple[int, int] | None = None,
    seed: int = 0,
    pad_to: int | None = None,
    target_pad_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """A deterministic raw batch for ``task`` (same arguments, same tensors).

    ``seq_len`` and ``target_len`` default to ``DEFAULT_SEQ_LEN`` capped at the task's
    ``max_seq_len`` / ``max_target_len``. ``pad_to`` (and ``target_pad_to`` for seq2seq targets)
    right-pads every row to that length with mask 0. ``image_hw`` overrides the task's image
    height and width. Lengths beyond the task's maxima are allowed on purpose: shape-robustness
    checks need them; ``strategies.batches`` stays within the limits.
    """
    __tracebackhide__ = True
    if batch_size < 1:
        raise AdapterError(f"batch_size={batch_size}; it must be >= 1.")
    g = torch.Generator().manual_seed(seed)
    family = task.family
    if family == "vision":
        return _vision_batch(task, batch_size, image_hw, g)
    if family not in _TEXT_FAMILIES:
        raise AdapterError(
            f"task {task.name!r} has family {family!r}; make_batch builds batches for "
            "'lm', 'classification', 'seq2seq' and 'vision'."
        )
    vocab = require_vocab_size(task)
    pad = _pad_value(task)
    length = _default_len(seq_len, task.max_seq_len, "seq_len", task)
    input_ids, attention_mask = _tokens(batch_size, length, pad_to, vocab, pad, g)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if family == "lm":
        batch["labels"] = input_ids.clone()
    elif family == "classification":
        n = require_num_classes(task)
        batch["labels"] = torch.randint(0, n, (batch_size,), generator=g)
    else:
        t_len = _default_len(target_len, task.max_target_len, "target_len", task)
        labels, decoder_mask = _tokens(batch_size, t_len, target_pad_to, vocab, pad, g)
        batch["labels"] = labels
        batch["decoder_attention_mask"] = decoder_mask
    return batch


def pixel_range(task: TaskSpec) -> tuple[float, float]:
    """The span of pixel values the model sees after the task's preprocessing.

    Raw images are in [0, 1]; ``normalize`` with ``mean``/``std`` maps that to
    ``[(0 - mean) / std, (1 - mean) / std]`` (widest over channels), e.g. [-1, 1] for
    ``vision_tiny``'s 0.5/0.5. Without a preprocessing config, or with ``normalize`` but no
    statistics, the images are taken as standardised: ``DEFAULT_PIXEL_RANGE`` (-3, 3).
    """
    config = task.preprocessing_config
    if config is None:
        return DEFAULT_PIXEL_RANGE
    if not config.get("normalize", False):
        return (0.0, 1.0)
    if "mean" not in config and "std" not in config:
        return DEFAULT_PIXEL_RANGE
    channels = task.image_size[0] if task.image_size else 1
    means = _per_channel(config.get("mean", 0.0), channels)
    stds = _per_channel(config.get("std", 1.0), channels)
    lows = [(0.0 - m) / s for m, s in zip(means, stds, strict=False)]
    highs = [(1.0 - m) / s for m, s in zip(means, stds, strict=False)]
    return (min(lows), max(highs))


def _per_channel(value: Any, channels: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)] * channels


def _vision_batch(
    task: TaskSpec, batch_size: int, image_hw: tuple[int, int] | None, g: torch.Generator
) -> dict[str, torch.Tensor]:
    __tracebackhide__ = True
    if task.image_size is None:
        raise AdapterError(
            f"vision task {task.name!r} has no image_size; set it with "
            'TASK = {"input_schema": {"image_size": [3, 32, 32]}} or a task file.'
        )
    # image_size is always [C, H, W]; channels_first only decides the tensor layout.
    channels_first = getattr(task, "channels_first", True)
    channels, height, width = task.image_size
    if image_hw is not None:
        height, width = image_hw
    n = require_num_classes(task)
    if channels_first:
        shape = (batch_size, channels, height, width)
    else:
        shape = (batch_size, height, width, channels)
    low, high = pixel_range(task)
    pixels = torch.rand(shape, generator=g) * (high - low) + low
    labels = torch.randint(0, n, (batch_size,), generator=g)
    return {"pixel_values": pixels, "labels": labels}


def shift_right(
    labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int | None = None
) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start, labels[:, 0], ..., labels[:, -2]]``.

    Position ``t`` of the result only holds targets before ``t``, so the decoder never sees the
    token it must predict. Label positions set to -100 (the Hugging Face "ignore" convention)
    become ``pad_token_id``; without a pad id they are an error rather than an invalid token id.
    """
    __tracebackhide__ = True
    if labels.dim() != 2:
        raise AdapterError(f"seq2seq labels must be Long[B,T_dec], got shape {list(labels.shape)}.")
    shifted = labels.new_empty(labels.shape)
    shifted[:, 0] = decoder_start_token_id
    shifted[:, 1:] = labels[:, :-1]
    ignored = shifted == -100
    if bool(ignored.any()):
        if pad_token_id is None:
            raise AdapterError(
                "seq2seq labels contain -100 but the task has no pad_token_id to feed the "
                "decoder in their place; set --task-option pad_token_id=N."
            )
        shifted = shifted.masked_fill(ignored, pad_token_id)
    return shifted


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "[" + ",".join(str(d) for d in value.shape) + "]"
    return f"={type(value).__name__}"


def batch_signature(batch: dict[str, Any]) -> str:
    """``"input_ids[2,16] attention_mask[2,16] labels[2,16]"``: the batch's keys and shapes."""
    return " ".join(f"{key}{_describe_value(value)}" for key, value in batch.items())
