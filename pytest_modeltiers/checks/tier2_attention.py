"""Tier 2 attention checks: properties every correct attention has, and measurements.

PYTEST_DONT_REWRITE

The maps come from ``analysis.attention_maps`` (the forward the model really runs). Three
properties hold for every correct model, whatever its weights:

- normalization: each row of real queries is finite, non-negative and sums to 1;
- causality (decoder LMs, seq2seq decoders): a query puts zero weight on every later key, so a
  leak is found where it sits (map, head, first leaking query), even when a later layer hides
  it from the outputs that tier 1 compares;
- padding: a real query puts zero weight on every key whose ``attention_mask`` is 0.

"Zero" allows the dtype's machine epsilon (a masked key gets exp(-inf) = 0, or exp of a huge
negative number, which underflows to 0); "sums to 1" allows ``max(2 * eps, 1e-5)``.

Health (entropy per head, the share of uniform "dead" heads and of heads that put almost all
weight on one key) is a measurement: it is recorded, and judged only against a bound the user
sets. Rows where the answer is forced are left out: a row with one allowed key (row 0 of a
causal head, a query whose only real key is itself) attends to one key by construction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pytest_modeltiers.analysis.attention_maps import (
    INPUT,
    TARGET,
    AttentionCapture,
    AttentionMap,
    AttentionReader,
    NoAttentionMaps,
)
from pytest_modeltiers.checks.tier1_masking import takes_attention_mask
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.models.exceptions import describe_model_exception, exception_details
from pytest_modeltiers.models.running import preserved_model
from pytest_modeltiers.models.timing import elapsed
from pytest_modeltiers.report import CheckResult

__all__ = [
    "DEAD_HEAD_ENTROPY",
    "ONE_KEY_WEIGHT",
    "check_attention_causality",
    "check_attention_health",
    "check_attention_normalization",
    "check_attention_padding",
    "sum_tolerance",
    "zero_tolerance",
]

TIER = 2
Batch = Mapping[str, Any]

#: A head is dead (uniform) when its mean normalised entropy over free rows reaches this.
DEAD_HEAD_ENTROPY = 0.99
#: A head is a one-key head when its mean largest weight over free rows reaches this.
ONE_KEY_WEIGHT = 0.99


def zero_tolerance(dtype: torch.dtype) -> float:
    """The largest weight that still counts as zero: the dtype's machine epsilon."""
    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far a row's sum may be from 1: rounding each weight to ``dtype`` moves it by at most
    half an epsilon; ``1e-5`` covers float32 softmax kernels."""
    eps = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    return max(2 * eps, 1e-5)


def _read(
    name: str, reader: AttentionReader, batch: Batch, start: float
) -> AttentionCapture | CheckResult:
    """The batch's maps, or the result that ends the check: a skip naming the routes when the
    model has none, a failure when the model raised."""
    signature = batch_signature(dict(batch))
    try:
        with preserved_model(reader.model, training=False):
            return reader.read(dict(batch))
    except NoAttentionMaps as exc:
        return CheckResult.skipped(
            name, TIER, str(exc), {"input": signature}, duration_seconds=elapsed(start)
        )
    except Exception as exc:
        return CheckResult.failed(
            name,
            TIER,
            f"reading the attention maps raised {describe_model_exception(exc)} (input "
            f"{signature}). Reproduce with adapter.forward(model, batch) on a batch of these "
            "shapes; for a model that needs its own way of returning attention, override the "
            "adapter's attention_maps(model, batch).",
            {"input": signature, **exception_details(exc)},
            duration_seconds=elapsed(start),
        )


def _source_details(capture: AttentionCapture, signature: str) -> dict[str, Any]:
    return {
        "input": signature,
        "route": capture.route,
        "notes": list(capture.notes),
        "maps": [m.name for m in capture.maps],
    }


def _row_mask(batch: Batch, side: str, rows: int, length: int) -> torch.Tensor:
    """``[batch, length]`` True at real positions of ``side`` (all True without a mask)."""
    key = {INPUT: "attention_mask", TARGET: "decoder_attention_mask"}.get(side)
    mask = batch.get(key) if key else None
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == (rows, length):
        return mask.detach().cpu().bool()
    return torch.ones(rows, length, dtype=torch.bool)


def _real_queries(batch: Batch, amap: AttentionMap) -> torch.Tensor:
    rows, _, queries, _ = amap.weights.shape
    return _row_mask(batch, amap.queries, rows, queries)


def _place(amap: AttentionMap, index: Sequence[int]) -> str:
    row, head, query, key = (int(i) for i in index)
    return f"{amap.name}, head {head}, query {query}, key {key} (batch row {row})"


# --------------------------------------------------------------------------- normalization


def check_attention_normalization(reader: AttentionReader, batch: Batch) -> CheckResult:
    """Every row of every map, for real queries, is finite, >= 0 and sums to 1."""
    name, start = "test_attention_normalization", time.perf_counter()
    capture = _read(name, reader, batch, start)
    if isinstance(capture, CheckResult):
        return capture
    signature = batch_signature(dict(batch))
    details = _source_details(capture, signature)
    worst_sum = 0.0
    rows_checked = 0
    for amap in capture.maps:
        weights = amap.weights.double()
        real = _real_queries(batch, amap)[:, None, :].expand(weights.shape[:-1])
        rows_checked += int(real.sum())
        finite = torch.isfinite(weights).all(dim=-1) | ~real
        if not bool(finite.all()):
            where = _first(~finite)
            return _normalization_failure(
                name,
                f"{_row_place(amap, where)} holds NaN or Inf. The scores overflowed or a row had "
                "no key left to attend to (a mask of all -inf): let every real query see at "
                "least one key, and compute the softmax in float32.",
                details,
                start,
            )
        zero = zero_tolerance(amap.dtype)
        negative = (weights < -zero).any(dim=-1) & real
        if bool(negative.any()):
            where = _first(negative)
            lowest = float(weights[tuple(where)].min())
            return _normalization_failure(
                name,
                f"{_row_place(amap, where)} has a negative weight ({lowest:.3g}). Attention "
                "weights are a softmax: apply softmax to the scores, not to something after them.",
                details,
                start,
            )
        tolerance = sum_tolerance(amap.dtype)
        error = (weights.sum(dim=-1) - 1).abs().masked_fill(~real, 0.0)
        worst = float(error.max()) if error.numel() else 0.0
        worst_sum = max(worst_sum, worst)
        if worst > tolerance:
            where = _first(error > tolerance)
            total = float(weights[tuple(where)].sum())
            return _normalization_failure(
                name,
                f"{_row_place(amap, where)} sums to {total:.6g}, not 1 (tolerance "
                f"{tolerance:g} for {_dtype(amap.dtype)}). The softmax runs over the wrong "
                "dimension, or the weights are rescaled after it (dim=-1 is the key dimension).",
                {**details, "tolerance": tolerance},
                start,
            )
    return CheckResult.passed(
        name,
        TIER,
        f"{len(capture.maps)} attention maps ({capture.route}): every real query's row is "
        f"finite, non-negative and sums to 1 (largest error {worst_sum:.2g})",
        {**details, "rows_checked": rows_checked, "max_sum_error": worst_sum},
        duration_seconds=elapsed(start),
    )


def _first(found: torch.Tensor) -> list[int]:
    return [int(i) for i in found.nonzero()[0]]


def _row_place(amap: AttentionMap, where: Sequence[int]) -> str:
    row, head, query = (int(i) for i in where)
    return f"{amap.name}, head {head}, row of query {query} (batch row {row})"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _normalization_failure(
    name: str, message: str, details: dict[str, Any], start: float
) -> CheckResult:
    return CheckResult.failed(name, TIER, message, details, duration_seconds=elapsed(start))


# --------------------------------------------------------------------------- causality


def _causal_side(adapter: TaskAdapter) -> str | None:
    return {"lm": INPUT, "seq2seq": TARGET}.get(adapter.task.family)


def check_attention_causality(reader: AttentionReader, batch: Batch) -> CheckResult:
    """No real query of a decoder's self-attention puts weight on a later key."""
    name, start = "test_attention_causality", time.perf_counter()
    side = _causal_side(reader.adapter)
    if side is None:
        return CheckResult.skipped(
            name,
            TIER,
            f"a {reader.adapter.task.family} model is not a decoder: attention may look both "
            "ways, so there is no causal rule to check",
            duration_seconds=elapsed(start),
        )
    capture = _read(name, reader, batch, start)
    if isinstance(capture, CheckResult):
        return capture
    signature = batch_signature(dict(batch))
    details = _source_details(capture, signature)
    causal = [m for m in capture.maps if m.queries == side and m.keys == side]
    if not causal:
        return CheckResult.skipped(
            name,
            TIER,
            f"none of the {len(capture.maps)} attention maps ({', '.join(details['maps'])}) "
            f"is a self-attention over the {_side_words(side)} (queries and keys as long as "
            f"those tokens, input {signature}), so no map is bound by the causal rule",
            details,
            duration_seconds=elapsed(start),
        )
    leaks = []
    for amap in causal:
        weights = amap.weights
        length = weights.shape[-1]
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        real = _real_queries(batch, amap)[:, None, :, None]
        leaking = (weights > zero_tolerance(amap.dtype)) & future & real
        if bool(leaking.any()):
            leaks.append((amap, leaking))
    checked = [m.name for m in causal]
    if not leaks:
        return CheckResult.passed(
            name,
            TIER,
            f"{len(causal)} causal self-attention maps ({capture.route}) put zero weight on "
            "every later key",
            {**details, "causal_maps": checked},
            duration_seconds=elapsed(start),
        )
    amap, leaking = leaks[0]
    # The first leaking query: the smallest query index over rows and heads.
    hits = leaking.nonzero()
    first = hits[hits[:, 2].argmin()].tolist()
    row, head, query, key = first
    weight = float(amap.weights[row, head, query, key])
    leaked_maps = [m.name for m, _ in leaks]
    heads = sorted({int(h) for h in leaking.nonzero()[:, 1]})
    return CheckResult.failed(
        name,
        TIER,
        f"{_place(amap, first)} gets weight {weight:.3g} although key {key} comes after query "
        f"{query}: {amap.name} attends to the future (heads {heads}; maps that leak: "
        f"{', '.join(leaked_maps)}). A decoder's causal mask must allow keys j <= i only "
        "(torch.ones(T, T).tril(), or is_causal=True); an off-by-one (tril(1), j <= i + 1) lets "
        "each token see the next. Tier 1 compares outputs, so a leak that a later layer discards "
        "passes there; this map shows it.",
        {
            **details,
            "causal_maps": checked,
            "leaking_maps": leaked_maps,
            "layer": amap.name,
            "head": head,
            "query": query,
            "key": key,
            "weight": weight,
        },
        duration_seconds=elapsed(start),
    )


def _side_words(side: str) -> str:
    return "decoder's target tokens" if side == TARGET else "input tokens"


# --------------------------------------------------------------------------- padding


def check_attention_padding(reader: AttentionReader, batch: Batch) -> CheckResult:
    """Keys at padding positions (mask 0) get zero weight from every real query."""
    name, start = "test_attention_padding", time.perf_counter()
    model, adapter = reader.model, reader.adapter
    if adapter.task.family == "vision":
        return CheckResult.skipped(
            name, TIER, "images have no padding positions", duration_seconds=elapsed(start)
        )
    mask = batch.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or bool(mask.bool().all()):
        return CheckResult.skipped(
            name,
            TIER,
            "the batch has no padding (attention_mask 0) to check",
            duration_seconds=elapsed(start),
        )
    if not takes_attention_mask(model, adapter, dict(batch)):
        return CheckResult.skipped(
            name,
            TIER,
            f"{type(model).__name__}.forward does not take attention_mask, so it cannot tell "
            "padding from tokens; add an attention_mask parameter to check that padding is "
            "ignored",
            duration_seconds=elapsed(start),
        )
    capture = _read(name, reader, batch, start)
    if isinstance(capture, CheckResult):
        return capture
    signature = batch_signature(dict(batch))
    details = _source_details(capture, signature)
    checked = []
    for amap in capture.maps:
        if amap.keys != INPUT:
            continue
        rows, _, _, keys = amap.weights.shape
        key_real = _row_mask(batch, INPUT, rows, keys)
        # A row whose input has no real token has nothing else to attend to.
        has_real = key_real.any(dim=-1)[:, None, None, None]
        padded_key = ~key_real[:, None, None, :]
        real_query = _real_queries(batch, amap)[:, None, :, None]
        bad = (amap.weights > zero_tolerance(amap.dtype)) & padded_key & real_query & has_real
        checked.append(amap.name)
        if bool(bad.any()):
            first = _first(bad)
            row, head, query, key = first
            weight = float(amap.weights[row, head, query, key])
            share = float((amap.weights * padded_key * real_query).sum(-1).max())
            return CheckResult.failed(
                name,
                TIER,
                f"{_place(amap, first)} gets weight {weight:.3g} although key {key} is padding "
                f"(attention_mask 0); up to {share:.3g} of a real query's attention goes to "
                "padding. Mask padded keys before the softmax: "
                "scores.masked_fill(attention_mask[:, None, None, :] == 0, float('-inf')), or "
                "pass the mask to scaled_dot_product_attention as attn_mask.",
                {
                    **details,
                    "padding_maps": checked,
                    "layer": amap.name,
                    "head": head,
                    "query": query,
                    "key": key,
                    "weight": weight,
                },
                duration_seconds=elapsed(start),
            )
    if not checked:
        return CheckResult.skipped(
            name,
            TIER,
            f"none of the {len(capture.maps)} attention maps ({', '.join(details['maps'])}) "
            f"has the padded input's tokens as keys (input {signature})",
            details,
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(
        name,
        TIER,
        f"{len(checked)} attention maps over the padded input ({capture.route}) put zero "
        "weight on every padding key from every real query",
        {**details, "padding_maps": checked},
        duration_seconds=elapsed(start),
    )


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class _HeadStats:
    entropy: float
    normalized_entropy: float
    max_weight: float
    free_rows: int


def _allowed_keys(batch: Batch, amap: AttentionMap, causal_side: str | None) -> torch.Tensor:
    """``[batch, 1, queries, keys]``: the keys each query may attend to by construction
    (real keys; for a causal self-attention, keys up to the query)."""
    rows, _, queries, keys = amap.weights.shape
    allowed = _row_mask(batch, amap.keys, rows, keys)[:, None, None, :].expand(
        rows, 1, queries, keys
    )
    if causal_side is not None and amap.queries == amap.keys == causal_side:
        allowed = allowed & torch.ones(queries, keys, dtype=torch.bool).tril()
    return allowed


def _head_stats(batch: Batch, amap: AttentionMap, causal_side: str | None) -> list[_HeadStats]:
    allowed = _allowed_keys(batch, amap, causal_side)
    counts = allowed.sum(dim=-1)  # [B, 1, Q]
    free = (counts >= 2) & _real_queries(batch, amap)[:, None, :]
    weights = amap.weights.double()
    logs = torch.where(weights > 0, weights.clamp_min(1e-300).log(), torch.zeros_like(weights))
    entropy = -(weights * logs).sum(dim=-1)  # [B, H, Q]
    normalized = entropy / counts.clamp_min(2).double().log()
    top = weights.max(dim=-1).values
    stats = []
    for head in range(amap.heads):
        rows = free[:, 0, :]
        n = int(rows.sum())
        if n == 0:
            stats.append(_HeadStats(math.nan, math.nan, math.nan, 0))
            continue
        stats.append(
            _HeadStats(
                float(entropy[:, head][rows].mean()),
                float(normalized[:, head][rows].mean()),
                float(top[:, head][rows].mean()),
                n,
            )
        )
    return stats


def check_attention_health(
    reader: AttentionReader, batches: Sequence[Batch], *, max_dead_share: float | None = None
) -> CheckResult:
    """Entropy per layer and head, and the share of dead (uniform) and one-key heads; judged
    only when ``max_dead_share`` is given."""
    name, start = "test_attention_health", time.perf_counter()
    causal_side = _causal_side(reader.adapter)
    per_map: dict[str, list[list[_HeadStats]]] = {}
    route = ""
    for batch in batches:
        capture = _read(name, reader, batch, start)
        if isinstance(capture, CheckResult):
            return capture
        route = capture.route
        for amap in capture.maps:
            per_map.setdefault(amap.name, []).append(_head_stats(batch, amap, causal_side))
    layers = []
    dead: list[str] = []
    one_key: list[str] = []
    judged = 0
    for map_name, draws in per_map.items():
        heads: list[dict[str, Any]] = []
        for head in range(len(draws[0])):
            samples = [d[head] for d in draws if head < len(d) and d[head].free_rows]
            rows = sum(s.free_rows for s in samples)
            if not rows:
                heads.append({"head": head, "free_rows": 0})
                continue
            entropy = sum(s.entropy * s.free_rows for s in samples) / rows
            normalized = sum(s.normalized_entropy * s.free_rows for s in samples) / rows
            top = sum(s.max_weight * s.free_rows for s in samples) / rows
            judged += 1
            label = f"{map_name} head {head}"
            if normalized >= DEAD_HEAD_ENTROPY:
                dead.append(label)
            elif top >= ONE_KEY_WEIGHT:
                one_key.append(label)
            heads.append(
                {
                    "head": head,
                    "entropy": round(entropy, 4),
                    "normalized_entropy": round(normalized, 4),
                    "max_weight": round(top, 4),
                    "free_rows": rows,
                }
            )
        layers.append({"layer": map_name, "heads": heads})
    if not judged:
        return CheckResult.skipped(
            name,
            TIER,
            "no attention row has a choice to make (every query has at most one key it may "
            "attend to); use longer sequences",
            {"route": route, "layers": layers},
            duration_seconds=elapsed(start),
        )
    dead_share, one_key_share = len(dead) / judged, len(one_key) / judged
    details = {
        "route": route,
        "heads": judged,
        "dead_heads": dead,
        "one_key_heads": one_key,
        "dead_share": round(dead_share, 4),
        "one_key_share": round(one_key_share, 4),
        "max_dead_share": max_dead_share,
        "layers": layers,
    }
    summary = (
        f"{judged} heads in {len(layers)} maps ({route}): {len(dead)} dead (uniform, normalised "
        f"entropy >= {DEAD_HEAD_ENTROPY}), {len(one_key)} on one key (mean top weight >= "
        f"{ONE_KEY_WEIGHT}); rows with one allowed key left out"
    )
    share = dead_share + one_key_share
    if max_dead_share is None:
        return CheckResult.passed(
            name,
            TIER,
            f"{summary}. Measured, not judged: set --tier2-max-dead-heads to fail above a share",
            {**details, "judged": False},
            duration_seconds=elapsed(start),
        )
    if share > max_dead_share:
        listed = ", ".join([*dead, *one_key][:8])
        return CheckResult.failed(
            name,
            TIER,
            f"{summary}: a share of {share:.3g} exceeds --tier2-max-dead-heads "
            f"{max_dead_share:g} ({listed}). A randomly initialised model attends almost "
            "uniformly: train it first, or raise the bound.",
            {**details, "judged": True},
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(
        name,
        TIER,
        f"{summary}: a share of {share:.3g} within --tier2-max-dead-heads {max_dead_share:g}",
        {**details, "judged": True},
        duration_seconds=elapsed(start),
    )
