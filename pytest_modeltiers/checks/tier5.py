"""Tier 5 checks: is the model still good in the world? (Verdicts from finished computations.)

PYTEST_DONT_REWRITE

Each function turns a finished evaluation, comparison or drift report into the ``CheckResult``
of its built-in test (DESIGN section 5), so the suite, the CLI and users' own tests decide the
same way:

- ``check_eval_metrics``: every metric of the held-out evaluation is finite (a NaN loss means
  NaN or infinite logits somewhere in the data).
- ``check_baseline_regression``: fails when the primary metric regressed (worse beyond the
  relative tolerance *and* the paired bootstrap interval excludes zero); a warning when only
  another metric regressed.
- ``check_drift`` (``test_input_drift``, ``test_prediction_drift``): fails when the dataset
  drifts (the drifted share of the evaluated signals reaches ``drift_share``, 0.5); a warning
  when some signals drift but fewer; skipped with the reasons when every signal was skipped
  (too few observations): no evidence is not a pass.
- ``check_retraining`` (``test_retraining_triggers``): fails when the retraining report's
  severity reaches its gate (default ``critical``); a warning when triggers fired below the
  gate; passed when none fired, with the triggers that could not be evaluated (no reference
  profile, no baseline) named in the message.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pytest_modeltiers.report import CheckResult

if TYPE_CHECKING:
    from pytest_modeltiers.monitoring.drift import DriftReport
    from pytest_modeltiers.monitoring.evaluation import EvalResult
    from pytest_modeltiers.monitoring.regression import ComparisonResult
    from pytest_modeltiers.monitoring.triggers_report import RetrainingReport

__all__ = ["check_baseline_regression", "check_drift", "check_eval_metrics", "check_retraining"]

TIER = 5


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


def check_drift(report: DriftReport, *, check_name: str, what: str, reference: str) -> CheckResult:
    """The drift verdict of one signal group (``what``: "input" or "prediction")."""
    details = {**report.to_dict(), "reference": reference}
    summary = report.summary()
    if report.inconclusive:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in report.skipped) or "no signals"
        return CheckResult.skipped(
            check_name, TIER, f"{what} drift not evaluated, every signal was skipped: {reasons}"
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


def check_retraining(report: RetrainingReport, *, written_to: str | None = None) -> CheckResult:
    """The retraining decision: fail at the gate, warn below it, pass when nothing fired."""
    name = "test_retraining_triggers"
    details = report.to_dict()
    if written_to is not None:
        details["written_to"] = written_to
    summary = report.summary()
    if report.gate_failed:
        return CheckResult.failed(
            name,
            TIER,
            f"retraining needed: severity {report.severity} reaches the gate "
            f"({report.gate}).\n{summary}",
            details,
        )
    if report.fired:
        return CheckResult.warning(
            name,
            TIER,
            f"triggers fired with severity {report.severity}, below the gate "
            f"({report.gate}).\n{summary}",
            details,
        )
    return CheckResult.passed(name, TIER, f"no retraining trigger fired.\n{summary}", details)
