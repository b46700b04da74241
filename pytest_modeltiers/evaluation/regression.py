"""Baseline regression: is the candidate model worse than the baseline, beyond doubt?

PYTEST_DONT_REWRITE

:func:`compare_models` evaluates a baseline and a candidate on the same batches;
:func:`compare_results` compares two finished evaluations. A metric regresses only when it is
worse beyond the tolerance and a paired bootstrap interval of the difference excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pytest_modeltiers.evaluation.held_out import (
    EvalResult,
    EvaluationError,
    compute_metrics,
    eval_dataloader,
    higher_is_better,
    resolve_eval_dataset,
    run_evaluation,
)
from pytest_modeltiers.jsonio import json_float, jsonable

if TYPE_CHECKING:
    from torch import nn

    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_N_BOOTSTRAP",
    "DEFAULT_TOLERANCE",
    "ComparisonResult",
    "MetricComparison",
    "compare_models",
    "compare_results",
    "paired_bootstrap",
]

#: Relative tolerance of the gate (Evidently, Deepchecks: 10 %).
DEFAULT_TOLERANCE = 0.1
#: Bootstrap resamples: the percentile interval's ends move by well under 1 % of its width
#: between seeds at this count.
DEFAULT_N_BOOTSTRAP = 2000
DEFAULT_CONFIDENCE = 0.95
#: Resampled rows held in memory at once (replicates x examples), about 16 MB of float64.
_CHUNK_CELLS = 2_000_000

REGRESSED = "regressed"
IMPROVED = "improved"


@dataclass(frozen=True)
class MetricComparison:
    """One metric of both models: values, change, interval of the difference, verdict."""

    name: str
    baseline: float
    candidate: float
    delta: float
    relative_change: float | None
    higher_is_better: bool
    ci_low: float
    ci_high: float
    status: str

    @property
    def worse_beyond_tolerance(self) -> bool:
        return self.status in (REGRESSED, "worse_not_significant")

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": json_float(self.baseline),
            "candidate": json_float(self.candidate),
            "delta": json_float(self.delta),
            "relative_change": jsonable(self.relative_change),
            "direction": "higher_is_better" if self.higher_is_better else "lower_is_better",
            "ci": [json_float(self.ci_low), json_float(self.ci_high)],
            "status": self.status,
        }


@dataclass(frozen=True)
class ComparisonResult:
    """The comparison of a candidate with a baseline; ``passed`` is the gate's decision."""

    primary_metric: str
    metrics: dict[str, MetricComparison]
    tolerance: float
    confidence: float
    n_bootstrap: int
    seed: int
    n_examples: int
    baseline: EvalResult
    candidate: EvalResult

    @property
    def primary(self) -> MetricComparison:
        return self.metrics[self.primary_metric]

    @property
    def passed(self) -> bool:
        return self.primary.status != REGRESSED

    @property
    def regressed_metrics(self) -> list[str]:
        return [name for name, m in self.metrics.items() if m.status == REGRESSED]

    @property
    def status(self) -> str:
        """``fail`` (primary regressed), ``warn`` (another metric regressed) or ``ok``."""
        if not self.passed:
            return "fail"
        return "warn" if self.regressed_metrics else "ok"

    def summary(self) -> str:
        """One line per metric, primary first: values, change, interval, verdict."""
        lines = []
        order = [self.primary_metric, *(m for m in self.metrics if m != self.primary_metric)]
        for name in order:
            m = self.metrics[name]
            rel = "n/a" if m.relative_change is None else f"{m.relative_change:+.1%}"
            mark = " (primary)" if name == self.primary_metric else ""
            lines.append(
                f"{name}{mark}: baseline {m.baseline:.4g} -> candidate {m.candidate:.4g} "
                f"({rel}, tolerance {self.tolerance:.0%}); {self.confidence:.0%} paired "
                f"bootstrap CI of the difference [{m.ci_low:.4g}, {m.ci_high:.4g}]: {m.status}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON values: the decision, the gate's settings and both numbers per metric."""
        return {
            "status": self.status,
            "passed": self.passed,
            "primary_metric": self.primary_metric,
            "regressed_metrics": self.regressed_metrics,
            "tolerance": self.tolerance,
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "n_examples": self.n_examples,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


# --------------------------------------------------------------------------- bootstrap


def paired_bootstrap(
    baseline: EvalResult,
    candidate: EvalResult,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile interval of ``metric(candidate) - metric(baseline)`` per metric.

    Each replicate draws ``n`` example indices with replacement and weights both models'
    per-example values by the same counts.
    """
    n = baseline.n_examples
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    diffs: dict[str, list[npt.NDArray[np.float64]]] = {}
    done = 0
    while done < n_bootstrap:
        rows = min(chunk, n_bootstrap - done)
        picks = rng.integers(0, n, size=(rows, n))
        flat = (picks + n * np.arange(rows)[:, None]).reshape(-1)
        weights = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        base = _metrics(baseline, weights)
        cand = _metrics(candidate, weights)
        for name in base:
            diffs.setdefault(name, []).append(cand[name] - base[name])
        done += rows
    tail = (1.0 - confidence) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for name, parts in diffs.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = (math.nan, math.nan)
            continue
        low, high = np.quantile(values, [tail, 1.0 - tail])
        out[name] = (float(low), float(high))
    return out


def _metrics(result: EvalResult, weights: npt.NDArray[np.float64] | None) -> dict[str, Any]:
    return compute_metrics(
        result.family,
        result.per_example,
        weights,
        num_classes=result.num_classes,
        top_k=result.top_k,
    )


# --------------------------------------------------------------------------- the gate


def _check_paired(baseline: EvalResult, candidate: EvalResult) -> None:
    if baseline.family != candidate.family:
        raise EvaluationError(
            f"cannot compare a {baseline.family} evaluation with a {candidate.family} one"
        )
    if baseline.n_examples != candidate.n_examples:
        raise EvaluationError(
            f"the evaluations are not paired: the baseline saw {baseline.n_examples} examples, "
            f"the candidate {candidate.n_examples}. Evaluate both on the same batches."
        )
    same_targets = (
        ("label", "tokens") if baseline.family in ("classification", "vision") else ("tokens",)
    )
    for key in same_targets:
        if key in baseline.per_example and not np.array_equal(
            baseline.per_example[key], candidate.per_example[key]
        ):
            raise EvaluationError(
                "the evaluations are not paired: their examples differ (per-example "
                f"{key!r} disagree). Evaluate both models on the same batches, in the same order."
            )


def _verdict(
    name: str,
    base: float,
    cand: float,
    ci: tuple[float, float],
    tolerance: float,
) -> MetricComparison:
    up = higher_is_better(name)
    delta = cand - base
    relative = None if base == 0 or not math.isfinite(base) else delta / abs(base)
    # "worse" in the metric's own direction: positive means the candidate is worse.
    worse_change = (-delta if up else delta) / abs(base) if relative is not None else None
    worse_ci = (-ci[1], -ci[0]) if up else ci
    if not all(math.isfinite(v) for v in (base, cand)):
        status = "not_comparable"
    elif worse_change is None:
        # A baseline of exactly 0 has no relative scale: the interval alone decides.
        status = REGRESSED if worse_ci[0] > 0 else IMPROVED if worse_ci[1] < 0 else "unchanged"
    elif worse_change > tolerance:
        status = REGRESSED if worse_ci[0] > 0 else "worse_not_significant"
    elif worse_change < -tolerance:
        status = IMPROVED if worse_ci[1] < 0 else "better_not_significant"
    else:
        status = "unchanged"
    return MetricComparison(name, base, cand, delta, relative, up, ci[0], ci[1], status)


def compare_results(
    baseline: EvalResult,
    candidate: EvalResult,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    primary_metric: str | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> ComparisonResult:
    """Compare two paired evaluations (same examples, same order)."""
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise EvaluationError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}")
    if not 0 < confidence < 1:
        raise EvaluationError(f"confidence must be in (0, 1), got {confidence!r}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 100:
        raise EvaluationError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
    _check_paired(baseline, candidate)
    primary = primary_metric or candidate.primary_metric
    if primary not in candidate.metrics:
        raise EvaluationError(
            f"primary metric {primary!r} is not among the {candidate.family} metrics "
            f"({', '.join(candidate.metrics)})"
        )
    intervals = paired_bootstrap(
        baseline, candidate, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
    )
    metrics = {
        name: _verdict(
            name,
            baseline.metrics[name],
            candidate.metrics[name],
            intervals[name],
            float(tolerance),
        )
        for name in candidate.metrics
        if name in baseline.metrics
    }
    return ComparisonResult(
        primary_metric=primary,
        metrics=metrics,
        tolerance=float(tolerance),
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        n_examples=candidate.n_examples,
        baseline=baseline,
        candidate=candidate,
    )


def compare_models(
    baseline_model: nn.Module,
    candidate_model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    eval_cfg: EvalConfig | None = None,
    dataloader: Iterable[dict[str, Any]] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    primary_metric: str | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    top_k: Sequence[int] | None = None,
) -> ComparisonResult:
    """Evaluate both models on the same batches and compare them.

    The batches are drawn once (from ``dataloader``, else from ``eval_cfg`` / the task's
    held-out split) and fed to both models in the same order, so a shuffling loader cannot
    unpair them.
    """
    if dataloader is None:
        dataset, _ = resolve_eval_dataset(task_spec, eval_cfg)
        dataloader = eval_dataloader(dataset, eval_cfg)
    batches = [dict(batch) for batch in dataloader]
    extra: dict[str, Any] = {} if top_k is None else {"top_k": top_k}
    base = run_evaluation(baseline_model, adapter, task_spec, eval_cfg, batches, **extra)
    cand = run_evaluation(candidate_model, adapter, task_spec, eval_cfg, batches, **extra)
    return compare_results(
        base,
        cand,
        tolerance=tolerance,
        primary_metric=primary_metric,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
