"""Tier 5 checks: is the model still good in the world? (Verdicts from finished computations.)

PYTEST_DONT_REWRITE

Each function turns a finished evaluation, comparison, drift report or retraining report into
the ``CheckResult`` of its built-in test, so the suite, the CLI and users' own tests decide the
same way. No evidence is never a pass: a check without its input is skipped with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.report import CheckResult

if TYPE_CHECKING:
    from pytest_modeltiers.drift.profile import Profile, Signal
    from pytest_modeltiers.drift.verdicts import DriftReport
    from pytest_modeltiers.evaluation.held_out import EvalResult
    from pytest_modeltiers.evaluation.regression import ComparisonResult
    from pytest_modeltiers.triggers.base import TriggerDetail
    from pytest_modeltiers.triggers.report import RetrainingReport

__all__ = [
    "check_baseline_regression",
    "check_drift",
    "check_eval_metrics",
    "check_missing_input",
    "check_retraining",
]

TIER = 5
REQUIRE_FLAG = "--modeltiers-require"

#: Which options feed a retraining trigger of each kind (for "pass ..." in messages).
_TRIGGER_INPUTS = {
    "drift": "--reference-profile",
    "performance": "--baseline-run RUN_ID (with test_baseline_regression in the session) or "
    "--model-registry with a production model",
    "time": "--model-registry with a production model (its trained_at metadata or creation time)",
    "data_volume": "--model-registry with a production model (its training_samples metadata)",
    "composite": "the inputs of its child triggers",
}


def check_missing_input(
    name: str,
    *,
    missing: str,
    message: str,
    requirement: str,
    required: bool,
    details: dict[str, Any] | None = None,
) -> CheckResult:
    """A check with nothing to judge: skipped naming ``missing``, failed when it was required.

    ``message`` says what is missing and which option provides it; ``requirement`` is the
    ``--modeltiers-require`` name that makes its absence a failure.
    """
    extra = {**(details or {}), "no_data": [missing]}
    if required:
        return CheckResult.failed(name, TIER, f"{REQUIRE_FLAG} {requirement}: {message}", extra)
    return CheckResult.skipped(name, TIER, message, extra)


def check_eval_metrics(result: EvalResult, *, run_id: int | None = None) -> CheckResult:
    """Passed when every metric is finite; the details carry the metrics and the data used."""
    name = "test_eval_metrics"
    details = {**result.to_dict(), "run_id": run_id}
    bad = {k: v for k, v in result.metrics.items() if not math.isfinite(v)}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    where = f"{result.n_examples} examples of {result.data}"
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        hint = (
            "perplexity overflows float64 when the loss exceeds ~709; the model is far from trained"
            if set(bad) == {"perplexity"}
            else "non-finite logits (NaN or inf) on some examples: run tier 1's "
            "test_output_finite, or evaluate the examples one by one to find them"
        )
        return CheckResult.failed(
            name, TIER, f"non-finite evaluation metrics {listed} on {where}: {hint}", details
        )
    return CheckResult.passed(name, TIER, f"{shown} on {where}", details)


def check_baseline_regression(
    comparison: ComparisonResult, *, baseline: str, duration_seconds: float = 0.0
) -> CheckResult:
    """The regression gate's verdict; ``baseline`` says which baseline it was (for messages)."""
    name = "test_baseline_regression"
    details = {**comparison.to_dict(), "baseline": baseline}
    head = f"candidate vs {baseline} on {comparison.n_examples} paired examples"
    body = comparison.summary()
    if not comparison.passed:
        primary = comparison.primary
        return CheckResult.failed(
            name,
            TIER,
            f"{head}: the primary metric {comparison.primary_metric} regressed "
            f"({primary.baseline:.4g} -> {primary.candidate:.4g}), beyond the "
            f"{comparison.tolerance:.0%} tolerance and outside the bootstrap interval's "
            f"reach of zero.\n{body}",
            details,
            duration_seconds=duration_seconds,
        )
    if comparison.regressed_metrics:
        return CheckResult.warning(
            name,
            TIER,
            f"{head}: {', '.join(comparison.regressed_metrics)} regressed, the primary metric "
            f"{comparison.primary_metric} did not.\n{body}",
            details,
            duration_seconds=duration_seconds,
        )
    return CheckResult.passed(name, TIER, f"{head}: no regression.\n{body}", details)


#: Bins of a numeric signal's histogram, and categories (the most frequent) of a categorical
#: one, in the ``distributions`` of a drift check's details.
HISTOGRAM_BINS, TOP_CATEGORIES = 20, 10


def _share(values: Any) -> list[float]:
    total = float(sum(values))
    return [float(f"{v / total:.4g}") if total else 0.0 for v in values]


def _label_counts(signal: Signal) -> dict[Any, int]:
    """Count per value: a categorical signal's counts, a numeric one's distinct values."""
    from pytest_modeltiers.drift.profile import NumericSignal

    if not isinstance(signal, NumericSignal):
        return dict(signal.counts)
    values = signal.values.tolist()
    counts = [1] * len(values) if signal.counts is None else signal.counts.tolist()
    return dict(zip(values, counts, strict=True))


def signal_distribution(reference: Signal, current: Signal) -> dict[str, Any]:
    """Reference and current shares of one signal on common bins, for the report's plots: a
    histogram of ``HISTOGRAM_BINS`` bins over both ranges for a numeric signal, the shares of
    the ``TOP_CATEGORIES`` most frequent categories (and ``other``) for a categorical one or a
    numeric one with at most 5 distinct values (compared as categories)."""
    import numpy as np

    from pytest_modeltiers.drift.profile import NumericSignal

    if (
        isinstance(reference, NumericSignal)
        and isinstance(current, NumericSignal)
        and reference.values.size > 5
        and current.values.size
    ):
        low = float(min(reference.values[0], current.values[0]))
        high = float(max(reference.values[-1], current.values[-1]))
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        ref_hist = np.histogram(reference.values, bins=edges, weights=reference.counts)[0]
        cur_hist = np.histogram(current.values, bins=edges, weights=current.counts)[0]
        return {
            "kind": "numeric",
            "edges": [float(f"{edge:.6g}") for edge in edges],
            "reference": _share(ref_hist.tolist()),
            "current": _share(cur_hist.tolist()),
        }
    ref, cur = _label_counts(reference), _label_counts(current)
    ref_total, cur_total = sum(ref.values()), sum(cur.values())
    pooled = {
        label: ref.get(label, 0) / max(ref_total, 1) + cur.get(label, 0) / max(cur_total, 1)
        for label in {*ref, *cur}
    }
    top = sorted(pooled, key=lambda label: (-pooled[label], str(label)))[:TOP_CATEGORIES]
    ref_top = [ref.get(label, 0) for label in top]
    cur_top = [cur.get(label, 0) for label in top]
    labels: list[Any] = [label if isinstance(label, (int, str)) else float(label) for label in top]
    if len(pooled) > len(top):
        labels.append("other")
        ref_top.append(ref_total - sum(ref_top))
        cur_top.append(cur_total - sum(cur_top))
    return {
        "kind": "categorical",
        "labels": labels,
        "reference": _share(ref_top),
        "current": _share(cur_top),
    }


def check_drift(
    report: DriftReport,
    *,
    check_name: str,
    what: str,
    reference: str,
    profiles: tuple[Profile, Profile] | None = None,
) -> CheckResult:
    """The drift verdict of one signal group (``what``: "input" or "prediction").

    With ``profiles`` (reference, current), the details carry each evaluated signal's two
    distributions on common bins (``distributions``), which the HTML report draws.
    """
    details = {**report.to_dict(), "reference": reference}
    if profiles is not None:
        ref_signals, cur_signals = profiles[0].signals, profiles[1].signals
        details["distributions"] = {
            signal.name: signal_distribution(ref_signals[signal.name], cur_signals[signal.name])
            for signal in report.signals
            if signal.name in ref_signals and signal.name in cur_signals
        }
    summary = report.summary()
    if report.inconclusive:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in report.skipped) or "no signals"
        return CheckResult.skipped(
            check_name,
            TIER,
            f"{what} drift not evaluated, every signal was skipped: {reasons}",
            {**details, "no_data": [f"enough data for the {what} signals"]},
        )
    against = f"against the reference ({reference})"
    if report.dataset_drifted:
        names = ", ".join(s.name for s in report.drifted_signals)
        return CheckResult.failed(
            check_name,
            TIER,
            f"{what} drift {against}: {names} drifted (share {report.drifted_share:.2f} >= "
            f"{report.drift_share:.2f}).\n{summary}",
            details,
        )
    if report.drifted_signals:
        names = ", ".join(s.name for s in report.drifted_signals)
        return CheckResult.warning(
            check_name,
            TIER,
            f"{what} signals {names} drifted {against}, below the dataset threshold "
            f"(share {report.drifted_share:.2f} < {report.drift_share:.2f}).\n{summary}",
            details,
        )
    return CheckResult.passed(check_name, TIER, f"no {what} drift {against}.\n{summary}", details)


def check_retraining(
    report: RetrainingReport,
    *,
    written_to: str | None = None,
    require_data: bool = False,
    history: Mapping[str, list[dict[str, Any]]] | None = None,
) -> CheckResult:
    """The retraining decision, made only on the triggers that had their data.

    Fails at the gate and warns below it when triggers fired; when none fired, passes if some
    were evaluated (naming the ones that were not) and is skipped if none were, since "nothing
    fired" then means "nothing looked". ``require_data`` (``--modeltiers-require
    tier5.triggers``) fails it whenever an active trigger lacked its data. ``history`` (each
    trigger's values in earlier checks, ``triggers.manager.trigger_history``) goes in the
    details for the report's plots.
    """
    name = "test_retraining_triggers"
    details = report.to_dict()
    if written_to is not None:
        details["written_to"] = written_to
    if history:
        details["history"] = {key: list(values) for key, values in history.items()}
    summary = report.summary()
    missing = report.not_evaluated
    undecided = (
        f"could not decide: no data for {', '.join(d.trigger_name for d in missing)}"
        if missing
        else ""
    )
    if report.gate_failed:
        note = f"; not evaluated (no data): {_names(missing)}" if missing else ""
        return CheckResult.failed(
            name,
            TIER,
            f"retraining needed: severity {report.severity} reaches the gate "
            f"({report.gate}){note}.\n{summary}",
            details,
        )
    if require_data and missing:
        return CheckResult.failed(
            name,
            TIER,
            f"{REQUIRE_FLAG} tier5.triggers: {undecided}; pass {_fixes(missing)}.\n{summary}",
            details,
        )
    if report.fired:
        note = f"; not evaluated (no data): {_names(missing)}" if missing else ""
        return CheckResult.warning(
            name,
            TIER,
            f"triggers fired with severity {report.severity}, below the gate "
            f"({report.gate}){note}.\n{summary}",
            details,
        )
    if not report.decided:
        if not missing:
            message = f"every trigger of the retraining policy is disabled.\n{summary}"
            return CheckResult.skipped(name, TIER, message, details)
        reasons = "; ".join(f"{d.trigger_name} ({d.reason})" for d in missing)
        details["no_data"] = [f"trigger data: {d.trigger_name}" for d in missing]
        return CheckResult.skipped(
            name,
            TIER,
            f"could not decide: no data for {reasons}. Pass {_fixes(missing)}.",
            details,
        )
    judged = report.evaluated
    message = f"no retraining trigger fired among the {len(judged)} evaluated ({_names(judged)})"
    if missing:
        message += f"; {undecided}"
    return CheckResult.passed(name, TIER, f"{message}.\n{summary}", details)


def _names(details: Sequence[TriggerDetail]) -> str:
    return ", ".join(d.trigger_name for d in details)


def _fixes(missing: Sequence[TriggerDetail]) -> str:
    """The options that would give the missing triggers their data, each named once."""
    fixes = dict.fromkeys(
        f"{_TRIGGER_INPUTS.get(d.kind, 'its input')} ({d.trigger_name})" for d in missing
    )
    return "; ".join(fixes)
