"""Tier 2 attribution checks: properties of integrated gradients that hold for every correct model.

PYTEST_DONT_REWRITE

Completeness: integrated gradients of a logit, from a baseline (the padding token's embedding
at every position for text, zero pixels for images) to the input, add up to
``f(input) - f(baseline)``. The quadrature (Gauss-Legendre) is refined by doubling the number
of steps until the relative error is within tolerance or a cap is reached, so a smooth model
passes and a model whose output path is not differentiable (rounding, ``.detach()``, argmax, an
integer cast) fails, with the layer where the gradient stops.

Locality: a decoder's logit at position ``t`` owes nothing to a later token, and no prediction
owes anything to a padding token when the model takes ``attention_mask``: those attributions
are exactly zero, because a masked attention weight is exactly zero and so is its gradient.
The baseline there is the zero embedding, which every token, padding included, differs from.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.analysis.attribution import (
    Attribution,
    AttributionSource,
    AttributionUnavailable,
    NoGradientPath,
    Targets,
    attribution_sources,
    integrated_gradients,
    integrated_gradients_class,
    locate_gradient_break,
    relative_errors,
    select_targets,
)
from pytest_modeltiers.checks.tier1_masking import takes_attention_mask
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

__all__ = [
    "COMPLETENESS_MAX_STEPS",
    "COMPLETENESS_RTOL",
    "check_attribution_completeness",
    "check_attribution_locality",
]

Batch = dict[str, Any]
TIER = 2
COMPLETENESS = "test_attribution_completeness"
LOCALITY = "test_attribution_locality"
#: Relative tolerance of completeness: ``|sum - (f(x) - f(b))| <= rtol * |f(x) - f(b)|``.
COMPLETENESS_RTOL = 0.01
COMPLETENESS_FIRST_STEPS = 16
COMPLETENESS_MAX_STEPS = 256
#: Steps for locality: a zero gradient is zero at every point of the path, so a few suffice.
LOCALITY_STEPS = 8
_FIX_PATH = (
    "Integrated gradients need a differentiable path from the input to the logits: return the "
    "logits and round, argmax or quantise after the model; replace a .detach() or no_grad() on "
    "the forward path; for a quantiser, pass the gradient straight through "
    "(x + (q - x).detach())."
)


def _result(
    name: str, status: str, message: str, details: dict[str, Any], start: float
) -> CheckResult:
    maker = getattr(CheckResult, status)
    result: CheckResult = maker(name, TIER, message, details, duration_seconds=elapsed(start))
    return result


def _prepare(
    name: str, model: nn.Module, adapter: TaskAdapter, batch: Batch, start: float
) -> tuple[Batch, list[AttributionSource], torch.Tensor] | CheckResult:
    """The batch on the model's device, what to attribute and the logits, or the result that
    ends the check (a skip when attribution does not apply, a failure when the model raises)."""
    signature = batch_signature(batch)
    prepared = to_device(adapter.prepare_inputs(dict(batch)), model_device(model))
    try:
        sources = attribution_sources(model, adapter, prepared)
        with preserved_model(model, training=False), torch.no_grad():
            logits = forward_logits(model, adapter, prepared)
    except AttributionUnavailable as exc:
        return _result(name, "skipped", str(exc), {"input": signature}, start)
    except Exception as exc:
        return _result(
            name,
            "failed",
            f"the forward pass raised {describe_model_exception(exc)} for input {signature}, so "
            "nothing could be attributed. Reproduce with adapter.forward(model, batch).",
            {"input": signature, **exception_details(exc)},
            start,
        )
    return prepared, sources, logits


def _tolerance(model: nn.Module, rtol: float) -> float:
    """``rtol``, widened to ten rounding units of a half-precision model's dtype."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return max(rtol, 10 * torch.finfo(dtype).eps)


def _targets_text(targets: Targets) -> list[str]:
    return [targets.describe(row) for row in range(int(targets.indices.shape[0]))]


def _broken_path(
    name: str,
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    targets: Targets,
    sources: list[AttributionSource],
    what: str,
    details: dict[str, Any],
    start: float,
) -> CheckResult | None:
    """A failure naming the layer where the gradient stops, or None when none is found."""
    found = locate_gradient_break(model, adapter, batch, targets, sources)
    if found is None:
        return None
    details = {
        **details,
        "break": {
            "layer": found.layer or type(model).__name__,
            "layer_class": found.layer_class,
            "after": found.after,
            "kind": found.kind,
        },
    }
    message = f"{what}: {found.describe(type(model).__name__)}. {_FIX_PATH}"
    return _result(name, "failed", message, details, start)


def check_attribution_completeness(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    seed: int = 0,
    rtol: float = COMPLETENESS_RTOL,
    first_steps: int = COMPLETENESS_FIRST_STEPS,
    max_steps: int = COMPLETENESS_MAX_STEPS,
) -> CheckResult:
    """Integrated gradients of each example's target logit add up to ``f(x) - f(baseline)``.

    The target is the predicted class, or for sequence logits the predicted token's logit at a
    real position drawn with ``seed``. Steps double from ``first_steps`` until every example is
    within ``rtol`` or ``max_steps`` is passed. A path with no gradient, all-zero attributions
    or no convergence fails; when the gradient stops at a layer, the message names it.
    """
    integrated_gradients_class()  # Captum missing: a usage error with the install command
    start = time.perf_counter()
    signature = batch_signature(batch)
    ready = _prepare(COMPLETENESS, model, adapter, batch, start)
    if isinstance(ready, CheckResult):
        return ready
    prepared, sources, logits = ready
    targets = select_targets(adapter, logits, prepared, torch.Generator().manual_seed(seed))
    tolerance = _tolerance(model, rtol)
    details: dict[str, Any] = {
        "input": signature,
        "attributed": [source.describe() for source in sources],
        "targets": _targets_text(targets),
        "baseline": "zero pixels" if sources[0].module is None else "padding-token embeddings",
        "tolerance": tolerance,
    }
    history: list[dict[str, Any]] = []
    steps = max(1, first_steps)
    attribution: Attribution | None = None
    errors = torch.zeros(0)
    while steps <= max_steps:
        try:
            attribution = integrated_gradients(
                model, adapter, prepared, targets, n_steps=steps, sources=sources, baseline="pad"
            )
        except NoGradientPath as exc:
            what = f"no gradient reaches {', '.join(s.describe() for s in exc.sources)}"
            broken = _broken_path(
                COMPLETENESS, model, adapter, prepared, targets, sources, what, details, start
            )
            if broken is not None:
                return broken
            return _result(
                COMPLETENESS,
                "failed",
                f"{what} from the target logit, so integrated gradients cannot attribute it. "
                f"{_FIX_PATH}",
                details,
                start,
            )
        except AttributionUnavailable as exc:
            return _result(COMPLETENESS, "skipped", str(exc), details, start)
        except Exception as exc:
            return _result(
                COMPLETENESS,
                "failed",
                f"integrated gradients raised {describe_model_exception(exc)} for input "
                f"{signature} at {steps} steps.",
                {**details, **exception_details(exc)},
                start,
            )
        errors = relative_errors(attribution)
        history.append({"n_steps": steps, "max_relative_error": float(errors.max())})
        if all(float(v.abs().max()) == 0.0 for v in attribution.values):
            break
        if float(errors.max()) <= tolerance:
            break
        steps *= 2
    assert attribution is not None
    details.update(
        {
            "n_steps": attribution.n_steps,
            "history": history,
            "relative_error": errors.tolist(),
            "attribution_sum": attribution.totals.tolist(),
            "output_difference": attribution.difference.tolist(),
        }
    )
    all_zero = all(float(v.abs().max()) == 0.0 for v in attribution.values)
    if not all_zero and float(errors.max()) <= tolerance:
        return _result(
            COMPLETENESS,
            "passed",
            f"attributions add up to f(x) - f(baseline) within {tolerance:g} (relative) for "
            f"{len(errors)} example(s) at {attribution.n_steps} steps; largest error "
            f"{float(errors.max()):.2g}",
            details,
            start,
        )
    if all_zero:
        what = (
            "every attribution is exactly zero although the target logit changes by "
            f"{_largest(attribution.difference):.3g} between baseline and input"
        )
    else:
        row = int(errors.argmax())
        what = (
            f"the attributions do not add up: for {targets.describe(row)} of example {row} "
            f"they sum to {float(attribution.totals[row]):.4g} but f(x) - f(baseline) is "
            f"{float(attribution.difference[row]):.4g} (relative error {float(errors[row]):.3g} "
            f"> {tolerance:g}) even at {attribution.n_steps} steps"
        )
    broken = _broken_path(
        COMPLETENESS, model, adapter, prepared, targets, sources, what, details, start
    )
    if broken is not None:
        return broken
    hint = (
        " The target gets a gradient of zero everywhere: a constant output or a saturated "
        "nonlinearity on the whole path."
        if all_zero
        else " Integrated gradients did not converge, and no layer cuts the gradient path. A "
        "smooth model converges in a few dozen steps; a piecewise function with many kinks "
        "(ReLU, max pooling) may need more: pass a larger max_steps or rtol to the check."
    )
    return _result(COMPLETENESS, "failed", f"{what}.{hint}", details, start)


def _largest(values: torch.Tensor) -> float:
    return float(values.abs().max()) if values.numel() else 0.0


def check_attribution_locality(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    seed: int = 0,
    n_steps: int = LOCALITY_STEPS,
) -> CheckResult:
    """Attributions that a correct model makes exactly zero are zero.

    For a decoder (an LM, and the decoder side of seq2seq), the target logit at position ``t``
    gets nothing from a token after ``t``; for a model that takes ``attention_mask``, no target
    gets anything from a padding token (mask 0) of the source. Skipped when neither applies.
    """
    start = time.perf_counter()
    signature = batch_signature(batch)
    family = adapter.task.family
    if family == "vision":
        return _result(
            LOCALITY,
            "skipped",
            "attribution locality concerns tokens (later positions, padding); this task is vision.",
            {"family": family},
            start,
        )
    integrated_gradients_class()  # Captum missing: a usage error with the install command
    ready = _prepare(LOCALITY, model, adapter, batch, start)
    if isinstance(ready, CheckResult):
        return ready
    prepared, sources, logits = ready
    causal = family in ("lm", "seq2seq") and logits.dim() == 3
    mask = prepared.get("attention_mask")
    padded = isinstance(mask, torch.Tensor) and bool((mask == 0).any())
    honours_mask = padded and takes_attention_mask(model, adapter, prepared)
    if not causal and not honours_mask:
        reason = (
            "the batch has no padding (attention_mask 0)"
            if not padded
            else f"{type(model).__name__}.forward takes no attention_mask, so it cannot tell "
            "padding from tokens"
        )
        return _result(
            LOCALITY,
            "skipped",
            f"locality does not apply: this {family} model is not a decoder (no later tokens to "
            f"owe nothing to) and {reason}.",
            {"input": signature, "family": family},
            start,
        )
    targets = select_targets(
        adapter, logits, prepared, torch.Generator().manual_seed(seed), need_later=causal
    )
    details: dict[str, Any] = {
        "input": signature,
        "targets": _targets_text(targets),
        "causal": causal,
        "padding": honours_mask,
        "n_steps": n_steps,
    }
    try:
        attribution = integrated_gradients(
            model, adapter, prepared, targets, n_steps=n_steps, sources=sources
        )
    except NoGradientPath as exc:
        return _result(
            LOCALITY,
            "skipped",
            f"no gradient reaches {', '.join(s.describe() for s in exc.sources)} from the "
            "target logit, so attributions are zero everywhere and locality says nothing; "
            "test_attribution_completeness names the layer that cuts the path.",
            details,
            start,
        )
    except AttributionUnavailable as exc:
        return _result(LOCALITY, "skipped", str(exc), details, start)
    except Exception as exc:
        return _result(
            LOCALITY,
            "failed",
            f"integrated gradients raised {describe_model_exception(exc)} for input {signature}.",
            {**details, **exception_details(exc)},
            start,
        )
    must_be_zero = _zero_positions(prepared, targets, causal=causal, padding=honours_mask)
    violations = []
    for key, rule, zero in must_be_zero:
        magnitude = attribution.per_token(key)
        if magnitude is None:
            continue
        bad = zero & (magnitude != 0)
        for row, position in bad.nonzero().tolist():
            violations.append((float(magnitude[row, position]), key, rule, row, position))
    checked = sum(int(zero.sum()) for _, _, zero in must_be_zero)
    details["positions_checked"] = checked
    if not violations:
        kinds = [k for k, on in (("later tokens", causal), ("padding tokens", honours_mask)) if on]
        return _result(
            LOCALITY,
            "passed",
            f"attribution to {' and '.join(kinds)} is exactly zero ({checked} token "
            f"positions checked)",
            details,
            start,
        )
    violations.sort(key=lambda v: (v[3], v[4]))
    value, key, rule, row, position = violations[0]
    largest = max(violations)
    details["violations"] = [
        {"example": r, "sequence": k, "position": p, "rule": u, "attribution": v}
        for v, k, u, r, p in violations[:20]
    ]
    if rule == "later":
        at = int(targets.positions[row]) if targets.positions is not None else 0
        cause = (
            f"{targets.describe(row)} of example {row} owes {value:.3g} to the {key} token at "
            f"position {position}, {position - at} after it: the model lets position {at} see "
            "a later token (a causal mask that is off by one, missing, or applied after the "
            "mixing). Mask every key after the query in every attention (tril(), "
            "is_causal=True)."
        )
    else:
        cause = (
            f"{targets.describe(row)} of example {row} owes {value:.3g} to the padding token "
            f"at position {position} ({key}, attention_mask 0): the model takes attention_mask "
            "but does not keep padding out of every path to the output. Mask padded keys in "
            "every attention and pool over real tokens only."
        )
    return _result(
        LOCALITY,
        "failed",
        f"{len(violations)} of {checked} attributions that must be exactly zero are not: "
        f"{cause} Largest: {largest[0]:.3g} at example {largest[3]}, position {largest[4]}.",
        details,
        start,
    )


def _zero_positions(
    batch: Batch, targets: Targets, *, causal: bool, padding: bool
) -> list[tuple[str, str, torch.Tensor]]:
    """``(sequence key, rule, Bool[B, T])``: the token positions whose attribution must be 0."""
    found = []
    if causal and targets.positions is not None and targets.key is not None:
        ids = batch[targets.key]
        steps = torch.arange(int(ids.shape[1])).unsqueeze(0)
        later = steps > targets.positions.cpu().unsqueeze(1)
        found.append((targets.key, "later", later))
    if padding:
        mask = batch["attention_mask"].detach().cpu() == 0
        if found and found[0][0] == "input_ids":
            mask = mask & ~found[0][2]
        found.append(("input_ids", "padding", mask))
    return found
