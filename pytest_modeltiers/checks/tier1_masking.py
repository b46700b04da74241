"""Tier 1 masking checks: causal masking and padding invariance.

PYTEST_DONT_REWRITE

Both checks are differential: two inputs that a correctly masked model cannot tell apart at
the positions compared must give the same outputs there, whatever the masking mechanism.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.checks.tier1_outputs import not_deterministic_message, repeat_difference
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.models.exceptions import describe_model_exception, exception_details
from pytest_modeltiers.models.running import (
    forward_logits,
    model_device,
    preserved_model,
    to_device,
)
from pytest_modeltiers.models.timing import elapsed
from pytest_modeltiers.report import CheckResult

__all__ = ["check_causal_masking", "check_padding_invariance", "takes_attention_mask"]

Batch = dict[str, Any]

CAUSAL = "test_causal_masking"
PADDING = "test_padding_invariance"
TIER = 1


# --------------------------------------------------------------------------- shared helpers


def mismatch(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise ``|a - b| > atol + rtol * |b|`` (NaN equal to NaN), and ``|a - b|``.

    Non-finite differences (inf - inf) are reported as 0 in the magnitude: whether the values
    are "the same" is decided by ``isclose``; the magnitude is only for the message.
    """
    actual = actual.detach().float()
    expected = expected.detach().float()
    bad = ~torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    diff = torch.nan_to_num((actual - expected).abs(), nan=0.0, posinf=0.0, neginf=0.0)
    diff = torch.where(bad & (diff == 0), torch.full_like(diff, float("inf")), diff)
    return bad, diff


def _nondeterminism(
    check: str,
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    reference: torch.Tensor,
    details: dict[str, Any],
    signature: str,
    start: float,
    atol: float,
    rtol: float,
) -> CheckResult | None:
    """A failure that blames non-determinism, when the unchanged ``batch`` itself disagrees with
    ``reference`` across repeated forwards: a difference found by the check would otherwise be
    blamed on the mask or the padding."""
    try:
        difference = repeat_difference(model, adapter, batch, reference, atol=atol, rtol=rtol)
    except Exception as exc:
        return _exception_result(check, exc, "a repeated forward", batch, start)
    if difference is None:
        return None
    judged = "causal masking" if check == CAUSAL else "padding invariance"
    return CheckResult.failed(
        check,
        TIER,
        not_deterministic_message(difference, signature, judged),
        {**details, "nondeterministic": difference},
        duration_seconds=elapsed(start),
    )


def _exception_result(
    check: str, exc: BaseException, what: str, batch: Batch, start: float
) -> CheckResult:
    """A failure for an exception raised while running the user's model (never swallowed)."""
    return CheckResult.failed(
        check,
        TIER,
        f"{what} raised {describe_model_exception(exc)} (input: {batch_signature(batch)}). The "
        "check could not compare outputs; fix the exception first (re-run this input to "
        "reproduce it).",
        {
            "exception_type": type(exc).__name__,
            **exception_details(exc),
            "input": batch_signature(batch),
        },
        duration_seconds=elapsed(start),
    )


def _vocab_size(adapter: TaskAdapter, ids: torch.Tensor) -> int:
    """The task's vocabulary size, else one more than the largest id in the batch."""
    vocab = adapter.task.vocab_size
    if vocab is not None:
        return int(vocab)
    return int(ids.max()) + 1 if ids.numel() else 1


def perturb_after(ids: torch.Tensor, start: int, vocab: int) -> torch.Tensor:
    """``ids`` with every id at positions ``>= start`` replaced by a *different* valid id.

    ``(id + k) % vocab`` with ``k`` in ``[1, vocab - 1]`` never maps an id to itself, and ``k``
    varies with row and position so that the new tokens are not a uniform shift (which a model
    with tied or relative embeddings might partly cancel). Negative ids (the ``-100`` "ignore"
    label) are left alone. Deterministic: the same input gives the same perturbation.
    """
    out = ids.clone()
    region = ids[:, start:]
    if region.numel() == 0:
        return out
    rows = torch.arange(region.shape[0], device=ids.device)[:, None]
    cols = torch.arange(region.shape[1], device=ids.device)[None, :]
    offsets = 1 + (rows * 7 + cols * 3 + 5) % (vocab - 1)
    changed = (region + offsets) % vocab
    out[:, start:] = torch.where(region >= 0, changed, region)
    return out


def _real_positions(mask: Any, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Bool [B,T]: positions whose mask is 1 (all positions when there is no usable mask)."""
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape:
        return mask.to(device) != 0
    return torch.ones(shape, dtype=torch.bool, device=device)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# --------------------------------------------------------------------------- causal masking


def check_causal_masking(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    position: int,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> CheckResult:
    """Changing tokens after ``position`` must not change outputs at positions ``<= position``.

    Decoder LMs perturb ``input_ids``; seq2seq models perturb the decoder side through
    ``labels`` (or ``decoder_input_ids`` when the batch carries them). Other task families are
    skipped with the reason. Runs in eval mode under ``no_grad`` and restores every module's
    mode. ``position`` must index the sequence (``0 <= position < T``); when it is the last
    position nothing follows it and the check is skipped.
    """
    start = time.perf_counter()
    family = adapter.task.family
    if family not in ("lm", "seq2seq"):
        return CheckResult.skipped(
            CAUSAL,
            TIER,
            "causal masking applies to decoder language models (and the decoder of seq2seq "
            f"models); this task is {family}.",
            {"family": family},
        )
    if family == "lm":
        key, shift = "input_ids", 0
    elif "decoder_input_ids" in batch:
        key, shift = "decoder_input_ids", 0
    else:
        # decoder_input_ids[:, k] = labels[:, k - 1]: to change decoder inputs after `position`,
        # change labels from `position` on.
        key, shift = "labels", 1
    ids = batch.get(key)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return CheckResult.failed(
            CAUSAL,
            TIER,
            f"the {family} batch needs {key!r} as a Long[B,T] tensor to test causal masking; it "
            f"has {batch_signature(batch)}.",
            {"input": batch_signature(batch)},
            duration_seconds=elapsed(start),
        )
    length = int(ids.shape[1])
    if not 0 <= position < length:
        raise ValueError(
            f"position={position} is outside the sequence of length {length} ({key}); it must "
            f"satisfy 0 <= position < {length}."
        )
    where = "decoder position" if family == "seq2seq" else "position"
    if position == length - 1:
        return CheckResult.skipped(
            CAUSAL,
            TIER,
            f"{where} {position} is the last of {length}; there are no later tokens to change.",
            {"position": position, "length": length},
        )
    vocab = _vocab_size(adapter, ids)
    if vocab < 2:
        return CheckResult.skipped(
            CAUSAL,
            TIER,
            f"the vocabulary has {vocab} token(s), so no token can be changed to another one.",
            {"vocab_size": vocab},
        )

    device = model_device(model)
    original = to_device(batch, device)
    perturbed = dict(original)
    perturbed[key] = perturb_after(original[key], position + 1 - shift, vocab)
    labels = original.get("labels")
    if family == "lm" and isinstance(labels, torch.Tensor) and labels.shape == ids.shape:
        perturbed["labels"] = perturb_after(labels, position + 1, vocab)
    signature = batch_signature(batch)

    with preserved_model(model, training=False), torch.no_grad():
        try:
            reference = forward_logits(model, adapter, original)
        except Exception as exc:
            return _exception_result(CAUSAL, exc, "forward on the original input", batch, start)
        try:
            changed = forward_logits(model, adapter, perturbed)
        except Exception as exc:
            return _exception_result(
                CAUSAL,
                exc,
                f"forward with the tokens after {where} {position} changed",
                batch,
                start,
            )
        rows = int(ids.shape[0])
        if reference.dim() < 3 or tuple(reference.shape[:2]) != (rows, length):
            return CheckResult.failed(
                CAUSAL,
                TIER,
                f"causal masking needs one row of logits per {where} ([B,T,V] with B={rows}, "
                f"T={length}), but the model returned logits {list(reference.shape)} for "
                f"{signature}.",
                {"logits_shape": list(reference.shape), "input": signature},
                duration_seconds=elapsed(start),
            )
        mask_key = "attention_mask" if family == "lm" else "decoder_attention_mask"
        real = _real_positions(original.get(mask_key), (rows, length), reference.device)
        head = slice(0, position + 1)
        bad, diff = mismatch(changed[:, head], reference[:, head], atol, rtol)
        trailing = tuple(range(2, bad.dim()))
        bad_pos = (bad.any(dim=trailing) if trailing else bad) & real[:, head]
        diff_pos = torch.where(real[:, head], diff.amax(dim=trailing) if trailing else diff, 0.0)
        leaking = [int(j) for j in torch.nonzero(bad_pos.any(dim=0)).flatten().tolist()]
        max_diff = float(diff_pos.max()) if diff_pos.numel() else 0.0

        details: dict[str, Any] = {
            "family": family,
            "position": position,
            "length": length,
            "perturbed": f"{key}[:, {position + 1 - shift}:]",
            "input": signature,
            "max_abs_diff": max_diff,
            "atol": atol,
            "rtol": rtol,
            "compared_positions": position + 1,
        }
        if not leaking:
            return CheckResult.passed(
                CAUSAL,
                TIER,
                f"outputs at {where}s 0..{position} are unchanged (max |diff| {_fmt(max_diff)}) "
                f"when the tokens after {where} {position} change ({signature}).",
                details,
                duration_seconds=elapsed(start),
            )

    # Before blaming the mask, make sure the model is deterministic in eval mode: a model
    # whose output changes between two identical calls would look like a leak.
    unstable = _nondeterminism(
        CAUSAL, model, adapter, original, reference, details, signature, start, atol, rtol
    )
    if unstable is not None:
        return unstable

    first = leaking[0]
    per_position = {str(j): float(diff_pos[:, j].max()) for j in leaking[:10]}
    first_row = int(torch.nonzero(bad_pos[:, first]).flatten()[0])
    if leaking == [position] and position > 0:
        cause = (
            f"{where} {first} sees the token right after it: the mask is off by one (e.g. "
            "torch.triu(..., diagonal=2) or tril(diagonal=1) instead of the strict future). "
        )
    else:
        cause = (
            f"{where} {first} sees tokens after {position}: future tokens are not masked "
            "(attention without a causal mask, or a mixing op such as a mean, normalisation or "
            "convolution over the whole sequence). "
        )
    details.update(
        {
            "first_leaking_position": first,
            "first_leaking_row": first_row,
            "leaking_positions": leaking,
            "max_abs_diff_by_position": per_position,
        }
    )
    return CheckResult.failed(
        CAUSAL,
        TIER,
        f"causal leak: the output at {where} {first} (row {first_row}) changed when only the "
        f"tokens after {where} {position} changed; leaking {where}s {_positions(leaking)}, max "
        f"|diff| {_fmt(max_diff)} (tolerance {atol:g} + {rtol:g}*|ref|) for input {signature}. "
        + cause
        + "Fix: mask attention to the future (F.scaled_dot_product_attention(..., "
        "is_causal=True), or nn.Transformer.generate_square_subsequent_mask(T) as the mask).",
        details,
        duration_seconds=elapsed(start),
    )


def _positions(positions: list[int]) -> str:
    shown = ", ".join(str(p) for p in positions[:8])
    return f"[{shown}{', ...' if len(positions) > 8 else ''}]"


# --------------------------------------------------------------------------- padding invariance


def takes_attention_mask(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> bool:
    """Whether the adapter passes ``attention_mask`` to this model's ``forward``.

    Without it a model cannot tell padding from tokens, so checks that pad apply only when true.
    """
    probe = dict(batch)
    probe.setdefault("attention_mask", None)
    prepared = adapter.prepare_inputs(probe)
    plan = adapter.call_plan(model, prepared)
    return plan.positional == "attention_mask" or "attention_mask" in plan.keywords


def _pad_batch(batch: Batch, family: str, keep: int, pad: int, pad_id: int) -> tuple[Batch, Batch]:
    """(reference, padded): the batch cut to ``keep`` positions, and that plus ``pad`` padding.

    Every tensor shaped ``[B, T, ...]`` like ``input_ids`` on the encoder/token side is cut and
    padded: ``input_ids`` (and an LM's ``labels``) with ``pad_id``, ``attention_mask`` and any
    other such tensor (``token_type_ids``) with 0. Decoder-side keys of seq2seq batches are left
    as they are: padding is appended to the source only.
    """
    ids = batch["input_ids"]
    rows, length = int(ids.shape[0]), int(ids.shape[1])
    decoder_keys = {"labels", "decoder_input_ids", "decoder_attention_mask"}
    reference: Batch = {}
    padded: Batch = {}
    for key, value in batch.items():
        seq_like = (
            isinstance(value, torch.Tensor)
            and value.dim() >= 2
            and tuple(value.shape[:2]) == (rows, length)
            and not (family == "seq2seq" and key in decoder_keys)
            and not (family == "classification" and key == "labels")
        )
        if not seq_like:
            reference[key] = value
            padded[key] = value
            continue
        cut = value[:, :keep]
        fill = pad_id if key in ("input_ids", "labels") else 0
        extra = torch.full(
            (rows, pad, *value.shape[2:]), fill, dtype=value.dtype, device=value.device
        )
        reference[key] = cut
        padded[key] = torch.cat([cut, extra], dim=1)
    if "attention_mask" not in batch:
        ones = torch.ones(rows, keep, dtype=torch.long, device=ids.device)
        reference["attention_mask"] = ones
        zeros = torch.zeros(rows, pad, dtype=torch.long, device=ids.device)
        padded["attention_mask"] = torch.cat([ones, zeros], dim=1)
    return reference, padded


def check_padding_invariance(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    pad: int = 3,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> CheckResult:
    """Appending ``pad`` masked padding positions must not change what the model computes.

    LM: logits at real positions; seq2seq: the decoder logits (the source is padded);
    classification: the pooled logits (``adapter.get_logits(..., batch=)``). Skipped for vision
    tasks and for models whose ``forward`` does not receive ``attention_mask``. When the padded
    length would exceed the task's ``max_seq_len``, the input is first cut so that it fits (the
    details say so): the comparison is between that cut input and the same plus padding.
    """
    start = time.perf_counter()
    if pad < 1:
        raise ValueError(f"pad={pad}; padding invariance needs at least one padding position.")
    family = adapter.task.family
    if family not in ("lm", "classification", "seq2seq"):
        return CheckResult.skipped(
            PADDING,
            TIER,
            f"padding invariance applies to token sequences with an attention_mask; this task "
            f"is {family}.",
            {"family": family},
        )
    ids = batch.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return CheckResult.failed(
            PADDING,
            TIER,
            "padding invariance needs 'input_ids' as a Long[B,T] tensor; the batch has "
            f"{batch_signature(batch)}.",
            {"input": batch_signature(batch)},
            duration_seconds=elapsed(start),
        )
    try:
        takes_mask = takes_attention_mask(model, adapter, batch)
    except Exception as exc:
        return _exception_result(PADDING, exc, "planning the forward call", batch, start)
    if not takes_mask:
        return CheckResult.skipped(
            PADDING,
            TIER,
            f"{type(model).__name__}.forward does not take attention_mask, so padding cannot "
            "be marked and the model cannot tell it from real tokens; padding invariance does "
            "not apply.",
            {"family": family},
        )

    length = int(ids.shape[1])
    limit = adapter.task.max_seq_len
    keep, pad_used = length, pad
    if limit is not None and length + pad > limit:
        if limit < 2:
            return CheckResult.skipped(
                PADDING,
                TIER,
                f"the task's max_seq_len is {limit}: no room for a real token and padding.",
                {"max_seq_len": limit},
            )
        pad_used = min(pad, limit - 1)
        keep = min(length, limit - pad_used)
    pad_id = adapter.task.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    device = model_device(model)
    reference_batch, padded_batch = _pad_batch(
        to_device(batch, device), family, keep, pad_used, pad_id
    )
    signature = batch_signature(reference_batch)
    padded_signature = batch_signature(padded_batch)

    with preserved_model(model, training=False), torch.no_grad():
        try:
            reference = forward_logits(model, adapter, reference_batch)
        except Exception as exc:
            return _exception_result(PADDING, exc, "forward on the unpadded input", batch, start)
        try:
            padded = forward_logits(model, adapter, padded_batch)
        except Exception as exc:
            return _exception_result(
                PADDING,
                exc,
                f"forward with {pad_used} padding positions appended",
                padded_batch,
                start,
            )

    details: dict[str, Any] = {
        "family": family,
        "pad": pad_used,
        "pad_token_id": pad_id,
        "input": signature,
        "padded_input": padded_signature,
        "atol": atol,
        "rtol": rtol,
    }
    if keep != length:
        details["truncated_to"] = keep
    rows = int(ids.shape[0])
    if family == "lm":
        if reference.dim() < 3 or tuple(padded.shape[:2]) != (rows, keep + pad_used):
            return _shape_failure(reference, padded, "[B,T,V] per position", details, start)
        real = _real_positions(reference_batch.get("attention_mask"), (rows, keep), padded.device)
        bad, diff = mismatch(padded[:, :keep], reference, atol, rtol)
        what = "outputs at real positions"
    elif family == "seq2seq":
        if tuple(padded.shape) != tuple(reference.shape) or reference.dim() < 2:
            return _shape_failure(reference, padded, "the same decoder logits", details, start)
        t_dec = int(reference.shape[1])
        real = _real_positions(
            reference_batch.get("decoder_attention_mask"), (rows, t_dec), padded.device
        )
        bad, diff = mismatch(padded, reference, atol, rtol)
        what = "decoder outputs"
    else:
        if tuple(padded.shape) != tuple(reference.shape):
            return _shape_failure(reference, padded, "the same pooled logits", details, start)
        real = None
        bad, diff = mismatch(padded, reference, atol, rtol)
        what = "pooled logits"

    if real is not None:
        trailing = tuple(range(2, bad.dim()))
        bad_pos = (bad.any(dim=trailing) if trailing else bad) & real
        diff_pos = torch.where(real, diff.amax(dim=trailing) if trailing else diff, 0.0)
    else:
        bad_pos = bad.reshape(rows, -1).any(dim=1)
        diff_pos = diff.reshape(rows, -1).amax(dim=1)
    max_diff = float(diff_pos.max()) if diff_pos.numel() else 0.0
    details["max_abs_diff"] = max_diff
    if not bool(bad_pos.any()):
        return CheckResult.passed(
            PADDING,
            TIER,
            f"{what} are unchanged (max |diff| {_fmt(max_diff)}) when {pad_used} masked padding "
            f"positions are appended to {signature}.",
            details,
            duration_seconds=elapsed(start),
        )
    unstable = _nondeterminism(
        PADDING, model, adapter, reference_batch, reference, details, signature, start, atol, rtol
    )
    if unstable is not None:
        return unstable
    bad_rows = [int(r) for r in torch.nonzero(bad_pos.reshape(rows, -1).any(dim=1)).flatten()]
    details["changed_rows"] = bad_rows
    where = ""
    if real is not None:
        positions = [int(p) for p in torch.nonzero(bad_pos.any(dim=0)).flatten().tolist()]
        details["changed_positions"] = positions
        label = "decoder positions" if family == "seq2seq" else "positions"
        where = f" at {label} {_positions(positions)}"
    cause = {
        "classification": "the pooling or attention reads padded positions (e.g. a mean or max "
        "over every position, or attention that ignores attention_mask). Fix: pool over real "
        "tokens only, (x * mask).sum(1) / mask.sum(1), and mask padded keys in attention.",
        "lm": "something that mixes the whole sequence ignores attention_mask (a mean, "
        "normalisation or un-masked bidirectional attention over all positions, or positions "
        "counted from the end). Fix: exclude positions with attention_mask == 0 from every "
        "sequence-wide operation.",
        "seq2seq": "the encoder or the cross-attention reads padded source positions. Fix: mask "
        "padded source keys (attention_mask == 0) in encoder self-attention and in the "
        "decoder's cross-attention.",
    }[family]
    return CheckResult.failed(
        PADDING,
        TIER,
        f"padding leak: {what} changed{where} in rows {_positions(bad_rows)} when {pad_used} "
        f"padding positions (id {pad_id}, attention_mask 0) were appended on the right; max "
        f"|diff| {_fmt(max_diff)} (tolerance {atol:g} + {rtol:g}*|ref|), input {signature} -> "
        f"{padded_signature}. Likely cause: {cause}",
        details,
        duration_seconds=elapsed(start),
    )


def _shape_failure(
    reference: torch.Tensor,
    padded: torch.Tensor,
    expected: str,
    details: dict[str, Any],
    start: float,
) -> CheckResult:
    return CheckResult.failed(
        PADDING,
        TIER,
        f"padding changed the output shape beyond the padded positions: {list(reference.shape)} "
        f"without padding, {list(padded.shape)} with it (expected {expected}); input "
        f"{details['input']} -> {details['padded_input']}.",
        {**details, "shape": list(reference.shape), "padded_shape": list(padded.shape)},
        duration_seconds=elapsed(start),
    )
