"""Tier 1 output checks: shapes, finiteness, stability, batch independence, input immutability.

PYTEST_DONT_REWRITE

Each check runs the model through its ``TaskAdapter`` and returns the ``CheckResult`` of its
built-in test; the message is what a user reads, so it names what is wrong, for which input,
and the likely cause. The model is left as it was found (``preserved_model``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import (
    batch_signature,
)
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.models.outputs import describe_output
from pytest_modeltiers.models.running import (
    expected_logits_shape,
    forward_logits,
    preserved_model,
    unravel_index,
)
from pytest_modeltiers.models.timing import elapsed
from pytest_modeltiers.report import CheckResult

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_COLLAPSE_RATIO",
    "DEFAULT_EXPLODE_BOUND",
    "DEFAULT_RTOL",
    "NOT_DETERMINISTIC",
    "check_batch_independence",
    "check_input_immutability",
    "check_output_finite",
    "check_output_stability",
    "check_shape_robustness",
    "compare_close",
    "expected_logits_shape",
    "forward_logits",
    "not_deterministic_message",
    "preserved_model",
    "repeat_difference",
]

TIER = 1
Batch = Mapping[str, Any]

#: Default tolerances of eval-mode comparisons: wide enough for float32 kernel rounding
#: (~1e-6), far below what a real bug moves (~1e-1).
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4

#: ``|logit|`` above this is an explosion. Trained models rarely exceed ~1e2; 1e4 leaves two
#: orders of magnitude of headroom while still catching a missing normalisation or a scale bug.
DEFAULT_EXPLODE_BOUND = 1e4

#: Outputs are collapsed when their spread *across* inputs is below this fraction of their
#: spread *within* one output vector. Measured on correct untrained models: 0.02 (a CNN whose
#: global pooling averages random pixels away) to ~1.5; an output that ignores its input gives
#: 0 (at most ~1e-7, float rounding). 1e-5 sits far from both.
DEFAULT_COLLAPSE_RATIO = 1e-5


# --------------------------------------------------------------------------- shared helpers


def compare_close(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float
) -> dict[str, Any]:
    """Compare two same-shaped tensors with ``|a - b| <= atol + rtol * |b|``.

    NaN equals NaN and inf equals inf at the same position (a finiteness problem is a different
    check's job). Returns ``ok``, ``max_abs_diff``, ``worst_index`` (the element that exceeds its
    tolerance by most, or the largest difference when all pass), ``mismatches`` and the
    tolerances, all JSON-able.
    """
    a = actual.detach().double()
    b = expected.detach().double()
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    allowed = atol + rtol * torch.nan_to_num(b.abs(), nan=0.0, posinf=0.0)
    bad = ~same & ~(diff <= allowed)
    excess = torch.where(bad, diff - allowed, torch.full_like(diff, -math.inf))
    mismatches = int(bad.sum())
    if diff.numel() == 0:
        return {
            "ok": True,
            "max_abs_diff": 0.0,
            "worst_index": [],
            "mismatches": 0,
            "elements": 0,
            "atol": atol,
            "rtol": rtol,
        }
    flat = int((excess if mismatches else diff).flatten().argmax())
    worst = unravel_index(flat, tuple(diff.shape))
    return {
        "ok": mismatches == 0,
        "max_abs_diff": float(diff.max()),
        "worst_index": worst,
        "worst_values": [float(a.flatten()[flat]), float(b.flatten()[flat])],
        "mismatches": mismatches,
        "elements": diff.numel(),
        "atol": atol,
        "rtol": rtol,
    }


def _now() -> float:
    return time.perf_counter()


def _shape(tensor: torch.Tensor) -> list[int]:
    return [int(d) for d in tensor.shape]


def _layout(adapter: TaskAdapter) -> str:
    return {
        "lm": "[B,T,V]",
        "classification": "[B,C]",
        "seq2seq": "[B,T_dec,V]",
        "vision": "[B,C]",
    }.get(adapter.task.family, "?")


def _point(batch: Batch, **measured: float) -> dict[str, Any]:
    """The batch size and sequence length of ``batch`` (its first tensor; no length for images)
    with what was measured on it: the report plots these by shape."""
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() >= 1), None)
    size = int(first.shape[0]) if first is not None else None
    length = int(first.shape[1]) if first is not None and first.dim() == 2 else None
    return {"batch": size, "length": length, **measured}


def _failed(name: str, message: str, details: dict[str, Any], start: float) -> CheckResult:
    return CheckResult.failed(name, TIER, message, details, duration_seconds=elapsed(start))


def _forward_failure(
    name: str, exc: Exception, batch: Batch, start: float, *, mode: str = "eval"
) -> CheckResult:
    """The failure for a model that raised: the exception and the input that triggered it.

    An ``AdapterError`` comes from the adapter (an output of the wrong rank, no logits, a
    parameter it cannot supply), not from the model's own code, and is worded so.
    """
    signature = batch_signature(dict(batch))
    if isinstance(exc, AdapterError):
        what = f"the adapter cannot run the model or read its output in {mode} mode: {exc}"
    else:
        what = f"forward in {mode} mode raised {describe_model_exception(exc)}"
    return _failed(
        name,
        f"{what} (input {signature}). The model must accept every input the task allows and "
        "return logits of the task's shape; reproduce with adapter.forward(model, batch) on a "
        "batch of these shapes.",
        {"input": signature, **exception_details(exc), "mode": mode},
        start,
    )


def _eval_logits(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> torch.Tensor:
    with preserved_model(model, training=False), torch.no_grad():
        return forward_logits(model, adapter, batch)


# --------------------------------------------------------------------------- determinism

#: How a check that compares two forwards starts its message when the model is to blame for
#: giving different outputs for one input, not for what the check compares.
NOT_DETERMINISTIC = "outputs are not deterministic (see test_output_stability)"


def repeat_difference(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    reference: torch.Tensor,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any] | None:
    """How two more eval forwards of ``batch`` differ from ``reference``, its earlier output.

    ``None`` when both agree with it. The checks that compare two forwards (batch independence,
    causal masking, padding invariance) call this when they find a difference, before blaming
    what they compare: a model that is not deterministic differs from itself too. Only then,
    because a deterministic model gives the same verdict either way and the passing runs pay
    nothing. The two forwards share one ``preserved_model`` block, so the RNG advances between
    them and dropout left on draws a new mask even when ``reference`` was computed from the
    same RNG state as the first. Exceptions from the model propagate.
    """
    with preserved_model(model, training=False), torch.no_grad():
        repeats = [forward_logits(model, adapter, batch) for _ in range(2)]
    for repeat in repeats:
        if repeat.shape != reference.shape:
            return {"ok": False, "shapes": [_shape(reference), _shape(repeat)]}
        compared = compare_close(repeat, reference, atol=atol, rtol=rtol)
        if not compared["ok"]:
            return compared
    return None


def not_deterministic_message(difference: Mapping[str, Any], signature: str, judged: str) -> str:
    """The failure message for a model whose outputs differ between identical eval calls."""
    if "shapes" in difference:
        how = f"logits of shape {difference['shapes'][0]} then {difference['shapes'][1]}"
    else:
        how = (
            f"logits that differ by up to {difference['max_abs_diff']:.3g} (beyond atol "
            f"{difference['atol']:g} + rtol {difference['rtol']:g}*|x|)"
        )
    return (
        f"{NOT_DETERMINISTIC}: repeated eval forwards of the same input {signature} gave {how}, "
        f"so {judged} cannot be judged. Make eval mode deterministic first: dropout applied "
        "with training=True, torch.rand/randn or sampling in forward, or state that changes "
        "between calls (a call counter, a cache that feeds the output)."
    )


# --------------------------------------------------------------------------- shape robustness


def check_shape_robustness(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> CheckResult:
    """One eval forward; the logits must have the task contract's shape for this batch.

    The contract is LM ``[B,T,V]``, classification ``[B,C]``, seq2seq ``[B,T_dec,V]``, vision
    ``[B,C]`` (see ``expected_logits_shape``). An exception in ``forward``, or an output the
    adapter cannot read as logits, is a failure that shows the input shape.
    """
    name = "test_shape_robustness"
    start = _now()
    signature = batch_signature(dict(batch))
    try:
        expected = expected_logits_shape(adapter, batch)
    except Exception as exc:
        return CheckResult.error(
            name,
            TIER,
            f"cannot work out the expected output shape: {describe_exception(exc)}",
            {"input": signature},
            duration_seconds=elapsed(start),
        )
    layout = _layout(adapter)
    try:
        with preserved_model(model, training=False), torch.no_grad():
            outputs = adapter.forward(model, dict(batch))
    except Exception as exc:
        return _forward_failure(name, exc, batch, start)
    try:
        logits = adapter.get_logits(outputs, adapter.task, batch=dict(batch))
    except Exception as exc:
        return _failed(
            name,
            f"the output for input {signature} cannot be read as {adapter.task.family} logits "
            f"{layout} = {expected}: {describe_exception(exc)} (the model returned "
            f"{describe_output(outputs)}). A common cause is squeeze() dropping the batch "
            "dimension when B == 1; use squeeze(-1) or index explicitly.",
            {"input": signature, "expected": expected, "output": describe_output(outputs)},
            start,
        )
    actual = _shape(logits)
    details = {"input": signature, "expected": expected, "actual": actual, "layout": layout}
    if actual != expected:
        return _failed(
            name,
            f"logits shape {actual} does not match the {adapter.task.family} contract "
            f"{layout} = {expected} for input {signature}. {_shape_hint(actual, expected)}",
            details,
            start,
        )
    return CheckResult.passed(
        name,
        TIER,
        f"logits {actual} for input {signature}",
        details,
        duration_seconds=elapsed(start),
    )


def _shape_hint(actual: list[int], expected: list[int]) -> str:
    """A likely cause for the common shape mistakes, naming the dimension that is off."""
    names = (
        ["batch (B)", "sequence (T)", "vocabulary (V)"]
        if len(expected) == 3
        else [
            "batch (B)",
            "classes (C)",
        ]
    )
    if len(actual) != len(expected):
        return (
            f"It has {len(actual)} dimensions instead of {len(expected)}: check for squeeze(), "
            "a missing or extra pooling step, or returning only the last position."
        )
    wrong = [
        f"{names[i]} is {a}, expected {e}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True))
        if a != e
    ]
    hint = "; ".join(wrong) + "."
    if len(expected) == 3 and actual[1] != expected[1]:
        hint += (
            " The model drops or adds positions: check slicing (x[:, :-1]), convolutions "
            "without padding and truncation to a fixed length."
        )
    elif actual[-1] != expected[-1]:
        hint += (
            " The output head's size disagrees with the task; fix the head or the task's "
            "vocab_size / num_classes (--task-option)."
        )
    return hint


# --------------------------------------------------------------------------- finiteness


def check_output_finite(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> CheckResult:
    """One eval forward; the logits must contain no NaN and no Inf.

    The message gives how many values are NaN / +Inf / -Inf, the first bad index, and for
    token inputs the token id at that sample and position, since a NaN tied to one id (a log or
    sqrt of a negative, a division by a zero norm) is the usual cause.
    """
    name = "test_output_finite"
    start = _now()
    signature = batch_signature(dict(batch))
    try:
        logits = _eval_logits(model, adapter, batch)
    except Exception as exc:
        return _forward_failure(name, exc, batch, start)
    values = logits.detach()
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return CheckResult.passed(
            name,
            TIER,
            f"all {values.numel()} logits finite for input {signature}",
            {"input": signature, "elements": values.numel(), "point": _point(batch, non_finite=0)},
            duration_seconds=elapsed(start),
        )
    nan = int(torch.isnan(values).sum())
    pos_inf = int((values == math.inf).sum())
    neg_inf = int((values == -math.inf).sum())
    first = [int(i) for i in (~finite).nonzero()[0].tolist()]
    where = f"logits{first}"
    token = _token_at(adapter, batch, first)
    if token is not None:
        where += f" (sample {first[0]}, position {first[1]}, input token id {token})"
    elif first:
        where += f" (sample {first[0]})"
    rows = sorted({int(i) for i in (~finite).nonzero()[:, 0].tolist()})
    return _failed(
        name,
        f"{nan + pos_inf + neg_inf} of {values.numel()} logits are not finite ({nan} NaN, "
        f"{pos_inf} +Inf, {neg_inf} -Inf) for input {signature}; first at {where}. Likely "
        "causes: log/sqrt of a non-positive value, division by zero (a zero norm or an empty "
        "mask), overflow in exp, or an attention row with every key masked.",
        {
            "input": signature,
            "nan": nan,
            "pos_inf": pos_inf,
            "neg_inf": neg_inf,
            "elements": values.numel(),
            "first_index": first,
            "first_token_id": token,
            "samples_affected": rows,
            "point": _point(batch, non_finite=nan + pos_inf + neg_inf),
        },
        start,
    )


def _token_at(adapter: TaskAdapter, batch: Batch, index: list[int]) -> int | None:
    """The input token id behind logits ``index`` for per-position outputs (LM), else None."""
    if adapter.task.family != "lm" or len(index) < 2:
        return None
    ids = batch.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return None
    b, t = index[0], index[1]
    if b >= ids.shape[0] or t >= ids.shape[1]:
        return None
    return int(ids[b, t])


# --------------------------------------------------------------------------- stability


def check_output_stability(
    model: nn.Module,
    adapter: TaskAdapter,
    batches: Sequence[Batch],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    explode_bound: float = DEFAULT_EXPLODE_BOUND,
    collapse_ratio: float = DEFAULT_COLLAPSE_RATIO,
) -> CheckResult:
    """Eval outputs are deterministic, vary across inputs, and stay bounded.

    1. *Determinism*: each batch is run twice; the two outputs must agree within
       ``atol + rtol * |x|`` (dropout or sampling left active in eval fails this).
    2. *Explosion*: ``max |logit| > explode_bound`` fails, as do non-finite logits.
    3. *Collapse*: the spread of the outputs *across distinct inputs* is compared with the spread
       *within* one output vector (the std over its V or C logits). A correct untrained model
       has small logits, so an absolute std threshold (such as 0.01) cries wolf; the
       ratio does not depend on scale. Per-position outputs (LM, seq2seq) are compared at the
       same position across inputs, over real positions only (mask 1), since position alone
       legitimately changes an output. ``across <= collapse_ratio * within`` fails. Outputs that
       are exactly zero everywhere are a warning, not a failure: that is what a zero-initialised
       output layer gives before training. Fewer than two distinct inputs: collapse is not
       assessed (said in ``details``).
    """
    name = "test_output_stability"
    start = _now()
    if not batches:
        return CheckResult.error(name, TIER, "check_output_stability needs at least one batch")
    signatures = [batch_signature(dict(b)) for b in batches]
    accumulator = _SpreadAccumulator()
    worst_run: dict[str, Any] | None = None
    for batch, signature in zip(batches, signatures, strict=True):
        try:
            # One guarded block for both runs: the RNG must advance between them, or dropout
            # left on in eval would draw the same mask twice and look deterministic.
            with preserved_model(model, training=False), torch.no_grad():
                first = forward_logits(model, adapter, batch)
                second = forward_logits(model, adapter, batch)
        except Exception as exc:
            return _forward_failure(name, exc, batch, start)
        if first.shape != second.shape:
            return _failed(
                name,
                f"eval mode is not deterministic: the same input {signature} gave logits of "
                f"shape {_shape(first)} then {_shape(second)}.",
                {"input": signature},
                start,
            )
        compared = compare_close(second, first, atol=atol, rtol=rtol)
        if worst_run is None or compared["max_abs_diff"] > worst_run["max_abs_diff"]:
            worst_run = {**compared, "input": signature}
        if not compared["ok"]:
            return _failed(
                name,
                "eval mode is not deterministic: the same input "
                f"{signature} gave different logits on two forward passes (max abs diff "
                f"{compared['max_abs_diff']:.3g} at index {compared['worst_index']}; "
                f"{compared['mismatches']} of {compared['elements']} values beyond atol {atol:g}"
                f" + rtol {rtol:g}*|x|). Likely cause: dropout or noise active in eval "
                "(F.dropout(..., training=True), torch.rand/randn in forward, sampling); use "
                "nn.Dropout or F.dropout(x, training=self.training).",
                {"determinism": compared, "input": signature},
                start,
            )
        accumulator.add(first, _position_mask(adapter, batch, first), _input_keys(adapter, batch))
    stats = accumulator.summary()
    details: dict[str, Any] = {
        "inputs": signatures,
        "statistics": stats,
        "determinism": worst_run,
        "explode_bound": explode_bound,
        "collapse_ratio": collapse_ratio,
    }
    stat_text = _stats_text(stats)
    if stats["non_finite"]:
        return _failed(
            name,
            f"{stats['non_finite']} logits are NaN or Inf over inputs {_some(signatures)}, so "
            "the outputs are unstable (see test_output_finite for where).",
            details,
            start,
        )
    if stats["max_abs"] > explode_bound:
        return _failed(
            name,
            f"outputs explode: |logit| reaches {stats['max_abs']:.3g}, above the bound "
            f"{explode_bound:g} ({stat_text}). Likely causes: a missing normalisation or "
            "1/sqrt(d) attention scale, an init scale far too large, or an unscaled sum over a "
            "long dimension. If logits this large are intended, raise explode_bound.",
            details,
            start,
        )
    if stats["distinct_inputs"] < 2:
        details["collapse"] = "not assessed: fewer than two distinct inputs"
        return CheckResult.passed(
            name,
            TIER,
            f"deterministic and bounded ({stat_text}); collapse not assessed "
            "(fewer than two distinct inputs)",
            details,
            duration_seconds=elapsed(start),
        )
    across, scale = stats["across_input_std"], stats["scale"]
    if across <= collapse_ratio * scale:
        if stats["max_abs"] == 0.0:
            return CheckResult.warning(
                name,
                TIER,
                f"every logit is exactly 0 for {stats['distinct_inputs']} distinct inputs: "
                "the output does not depend on the input. This is expected of a "
                "zero-initialised output layer before training, and a bug otherwise.",
                details,
                duration_seconds=elapsed(start),
            )
        return _failed(
            name,
            f"outputs collapsed: across {stats['distinct_inputs']} distinct inputs the logits "
            f"vary by std {across:.3g}, against a spread of {scale:.3g} within one output "
            f"(ratio {stats['ratio']:.3g} <= {collapse_ratio:g}; {stat_text}). The output does "
            "not depend on the input: it may be computed from parameters only (a learned "
            "constant), pass through a dead layer (all-negative ReLU inputs, a zero multiplier),"
            " or saturate (tanh/sigmoid at +-1).",
            details,
            start,
        )
    return CheckResult.passed(
        name,
        TIER,
        f"deterministic, bounded and input-dependent ({stat_text}, across/within ratio "
        f"{stats['ratio']:.3g})",
        details,
        duration_seconds=elapsed(start),
    )


def _some(signatures: Sequence[str], limit: int = 3) -> str:
    shown = "; ".join(signatures[:limit])
    return shown + (f" and {len(signatures) - limit} more" if len(signatures) > limit else "")


def _stats_text(stats: Mapping[str, Any]) -> str:
    return (
        f"mean {stats['mean']:.3g}, std {stats['std']:.3g}, min {stats['min']:.3g}, "
        f"max {stats['max']:.3g}"
    )


def _position_mask(adapter: TaskAdapter, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
    """Real positions (mask 1) of per-position logits [B,T,*]; None when all count."""
    if logits.dim() != 3:
        return None
    key = "decoder_attention_mask" if adapter.task.family == "seq2seq" else "attention_mask"
    mask = batch.get(key)
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(logits.shape[:2]):
        return mask.to(logits.device) != 0
    return None


def _input_keys(adapter: TaskAdapter, batch: Batch) -> list[tuple[Any, ...]]:
    """A hashable identity per sample of what the model sees (labels too for seq2seq).

    Token tensors keep their real positions only (mask 1), so two inputs that differ in
    padding alone count as one: a correct model gives both the same outputs, and counting them
    as distinct would make it look collapsed.
    """
    keys = list(adapter.input_keys())
    if adapter.task.family == "seq2seq":
        keys.append("labels")
    tensors = {k: batch[k] for k in keys if isinstance(batch.get(k), torch.Tensor)}
    if not tensors:
        return []
    first = next(iter(tensors.values()))
    size = int(first.shape[0]) if first.dim() else 1
    masks = {
        "input_ids": batch.get("attention_mask"),
        "attention_mask": batch.get("attention_mask"),
        "token_type_ids": batch.get("attention_mask"),
        "labels": batch.get("decoder_attention_mask"),
        "decoder_attention_mask": batch.get("decoder_attention_mask"),
    }
    identities: list[tuple[Any, ...]] = []
    for i in range(size):
        parts: list[Any] = []
        for key, tensor in tensors.items():
            row = tensor[i] if tensor.dim() and tensor.shape[0] == size else tensor
            mask = masks.get(key)
            if isinstance(mask, torch.Tensor) and mask.shape == tensor.shape:
                row = row[mask[i].to(row.device) != 0]
            parts.append(tuple(row.detach().cpu().flatten().tolist()))
        identities.append(tuple(parts))
    return identities


class _SpreadAccumulator:
    """Streaming statistics of logits: overall, within-output and across-input spread.

    Rows are output vectors (the last dimension). Across-input spread is accumulated per
    position in float64 as sums of deviations from the first row seen there (shifted sums keep
    the precision that a near-constant output needs), so memory is one row per position.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.max_abs = 0.0
        self.non_finite = 0
        self.within_sum = 0.0
        self.rows = 0
        self.positions: dict[int, list[Any]] = {}  # t -> [shift, n, sum, sum_sq]
        self.identities: set[tuple[Any, ...]] = set()

    def add(
        self, logits: torch.Tensor, mask: torch.Tensor | None, identities: list[tuple[Any, ...]]
    ) -> None:
        self.identities.update(identities)
        x = logits.detach().double()
        finite = torch.isfinite(x)
        self.non_finite += int((~finite).sum())
        if not bool(finite.all()) or x.numel() == 0:
            return
        self.count += x.numel()
        self.total += float(x.sum())
        self.total_sq += float((x * x).sum())
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.max_abs = max(self.max_abs, float(x.abs().max()))
        rows = x if x.dim() >= 2 else x.reshape(-1, 1)
        if rows.dim() == 2:
            rows = rows[:, None, :]  # [B,1,K]: one position
        rows = rows.reshape(rows.shape[0], rows.shape[1], -1)
        if mask is None:
            keep = torch.ones(rows.shape[:2], dtype=torch.bool, device=rows.device)
        else:
            keep = mask
        if rows.shape[-1] > 1:
            self.within_sum += float(rows.var(dim=-1, unbiased=False)[keep].sum())
        else:
            self.within_sum += float((rows[..., 0] ** 2)[keep].sum())
        self.rows += int(keep.sum())
        for t in range(rows.shape[1]):
            selected = rows[:, t][keep[:, t]]
            if selected.shape[0] == 0:
                continue
            entry = self.positions.get(t)
            if entry is None:
                entry = [
                    selected[0].clone(),
                    0,
                    torch.zeros_like(selected[0]),
                    torch.zeros_like(selected[0]),
                ]
                self.positions[t] = entry
            shifted = selected - entry[0]
            entry[1] += selected.shape[0]
            entry[2] += shifted.sum(dim=0)
            entry[3] += (shifted * shifted).sum(dim=0)

    def summary(self) -> dict[str, Any]:
        mean = self.total / self.count if self.count else math.nan
        var = self.total_sq / self.count - mean * mean if self.count else math.nan
        squares = 0.0
        dof = 0
        for _, n, total, total_sq in self.positions.values():
            if n < 2:
                continue
            squares += float((total_sq - total * total / n).clamp(min=0).sum())
            dof += (n - 1) * int(total.numel())
        across = math.sqrt(squares / dof) if dof else 0.0
        scale = math.sqrt(self.within_sum / self.rows) if self.rows else 0.0
        ratio = across / scale if scale > 0 else (0.0 if across == 0 else math.inf)
        return {
            "mean": mean,
            "std": math.sqrt(max(var, 0.0)) if self.count else math.nan,
            "min": self.min if self.count else math.nan,
            "max": self.max if self.count else math.nan,
            "max_abs": self.max_abs,
            "non_finite": self.non_finite,
            "elements": self.count,
            "across_input_std": across,
            "scale": scale,
            "ratio": ratio,
            "distinct_inputs": len(self.identities),
        }


# --------------------------------------------------------------------------- batch independence


def _sample(batch: Batch, index: int, size: int) -> dict[str, Any]:
    """Sample ``index`` of ``batch`` as a batch of one (tensors batched on dim 0 are sliced)."""
    return {
        key: value[index : index + 1]
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size
        else value
        for key, value in batch.items()
    }


def check_batch_independence(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> CheckResult:
    """In eval mode each sample's output alone equals its row of the batched output.

    Each sample is run alone (a batch of one, same padding) and compared with its row of the
    batched logits within ``atol + rtol * |batched|``. BatchNorm in eval mode uses its running
    statistics and passes; a model that normalises or pools across the batch dimension in
    ``forward`` fails, with the sample index and the difference. A batch of one has nothing to
    compare and is skipped. Before a difference is blamed on mixing, the batch is run again: a
    model whose output changes between identical calls fails as not deterministic instead.
    """
    name = "test_batch_independence"
    start = _now()
    signature = batch_signature(dict(batch))
    try:
        size = int(adapter.prepare_inputs(dict(batch))[adapter.primary_input].shape[0])
    except Exception as exc:
        return CheckResult.error(
            name,
            TIER,
            f"cannot read the batch size: {exc}",
            {"input": signature},
            duration_seconds=elapsed(start),
        )
    if size < 2:
        return CheckResult.skipped(
            name,
            TIER,
            f"batch size 1 ({signature}): nothing to compare; use 2 or more samples",
            {"input": signature},
            duration_seconds=elapsed(start),
        )
    try:
        batched = _eval_logits(model, adapter, batch)
    except Exception as exc:
        return _forward_failure(name, exc, batch, start)
    per_sample: list[float] = []
    first_bad: dict[str, Any] | None = None
    for i in range(size):
        single = _sample(batch, i, size)
        try:
            alone = _eval_logits(model, adapter, single)
        except Exception as exc:
            return _forward_failure(name, exc, single, start)
        row = batched[i : i + 1]
        if alone.shape != row.shape:
            return _failed(
                name,
                f"sample {i} alone gives logits of shape {_shape(alone)}, but its row of the "
                f"batched output ({signature}) has shape {_shape(row)}: the output shape "
                "depends on the batch size (squeeze() on a batch of one?).",
                {"input": signature, "sample": i, "alone": _shape(alone), "batched": _shape(row)},
                start,
            )
        compared = compare_close(alone, row, atol=atol, rtol=rtol)
        per_sample.append(compared["max_abs_diff"])
        if not compared["ok"] and first_bad is None:
            first_bad = {**compared, "sample": i}
    details = {
        "input": signature,
        "max_abs_diff_per_sample": per_sample,
        "atol": atol,
        "rtol": rtol,
        "point": _point(batch, max_abs_diff=max(per_sample)),
    }
    if first_bad is not None:
        try:
            difference = repeat_difference(model, adapter, batch, batched, atol=atol, rtol=rtol)
        except Exception as exc:
            return _forward_failure(name, exc, batch, start)
        if difference is not None:
            details["nondeterministic"] = difference
            message = not_deterministic_message(difference, signature, "batch independence")
            return _failed(name, message, details, start)
        bad = [i for i, d in enumerate(per_sample) if d > 0]
        details["first_mismatch"] = first_bad
        return _failed(
            name,
            f"sample {first_bad['sample']} of batch {signature} gives different logits alone "
            f"than inside the batch (max abs diff {first_bad['max_abs_diff']:.3g} at index "
            f"{first_bad['worst_index']}, beyond atol {atol:g} + rtol {rtol:g}*|x|; samples "
            f"with any difference: {bad}). The model mixes information across samples: "
            "normalisation or pooling over dim 0 (x - x.mean(0), BatchNorm forced to train "
            "mode), a reshape that merges the batch with another dimension, or state kept "
            "between calls.",
            details,
            start,
        )
    return CheckResult.passed(
        name,
        TIER,
        f"{size} samples alone match the batch (max abs diff {max(per_sample):.3g})",
        details,
        duration_seconds=elapsed(start),
    )


# --------------------------------------------------------------------------- input immutability


def check_input_immutability(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> CheckResult:
    """``forward`` in eval and in train mode never modifies its input tensors.

    The model gets fresh clones of the prepared inputs (so the caller's batch is never touched,
    and decoder inputs the adapter derives are covered too). After each forward every tensor is
    compared with a second, untouched copy, and its ``_version`` counter with the one recorded
    before: an in-place operation bumps it even when it happens not to change the values this
    time (``clamp_`` within range), and is reported as well.
    """
    name = "test_input_immutability"
    start = _now()
    signature = batch_signature(dict(batch))
    try:
        prepared = adapter.prepare_inputs(dict(batch))
    except Exception as exc:
        return CheckResult.error(
            name,
            TIER,
            f"the adapter cannot prepare the batch: {exc}",
            {"input": signature},
            duration_seconds=elapsed(start),
        )
    checked = sorted(k for k, v in prepared.items() if isinstance(v, torch.Tensor))
    for mode, training in (("eval", False), ("train", True)):
        work = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in prepared.items()}
        reference = {k: v.clone() for k, v in work.items() if isinstance(v, torch.Tensor)}
        versions = {k: v._version for k, v in work.items() if isinstance(v, torch.Tensor)}
        grad_mode = torch.enable_grad() if training else torch.no_grad()
        try:
            with preserved_model(model, training=training), grad_mode:
                adapter.forward(model, work)
        except Exception as exc:
            return _forward_failure(name, exc, batch, start, mode=mode)
        changes = [
            change
            for key in checked
            if (change := _tensor_change(key, work[key], reference[key], versions[key]))
        ]
        if changes:
            keys = [c["key"] for c in changes]
            text = "; ".join(c["text"] for c in changes)
            return _failed(
                name,
                f"forward in {mode} mode modifies its input {', '.join(map(repr, keys))} "
                f"(input {signature}): {text}. A model must not write to its inputs: the "
                "caller's tensors (a DataLoader batch, a cached prompt) change under it. Use "
                "out-of-place ops (x = x.clamp(...) instead of x.clamp_(...), x = x + 1 "
                "instead of x += 1) or clone the input first.",
                {"input": signature, "mode": mode, "changes": changes, "checked": checked},
                start,
            )
    return CheckResult.passed(
        name,
        TIER,
        f"inputs {checked} unchanged by forward in eval and train mode",
        {"input": signature, "checked": checked},
        duration_seconds=elapsed(start),
    )


def _tensor_change(
    key: str, after: torch.Tensor, before: torch.Tensor, version: int
) -> dict[str, Any] | None:
    """How ``after`` differs from ``before`` (values, shape, in-place writes), or None."""
    bumped = after._version != version
    if after.shape != before.shape or after.dtype != before.dtype:
        return {
            "key": key,
            "text": f"{key!r} changed from {before.dtype} {_shape(before)} to "
            f"{after.dtype} {_shape(after)} in place",
            "shape_before": _shape(before),
            "shape_after": _shape(after),
        }
    same = (after == before) | (
        torch.isnan(after) & torch.isnan(before) if after.is_floating_point() else False
    )
    changed = ~same
    count = int(changed.sum())
    if count:
        first = [int(i) for i in changed.nonzero()[0].tolist()]
        old = before[tuple(first)].item()
        new = after[tuple(first)].item()
        return {
            "key": key,
            "text": f"{count} of {before.numel()} values of {key!r} changed, first at {first}: "
            f"{old} -> {new}",
            "changed": count,
            "first_index": first,
            "before": old,
            "after": new,
        }
    if bumped:
        return {
            "key": key,
            "text": f"{key!r} was written in place (its version counter went from {version} to "
            f"{after._version}) although its values happen to be unchanged for this input",
            "version_before": version,
            "version_after": after._version,
        }
    return None
