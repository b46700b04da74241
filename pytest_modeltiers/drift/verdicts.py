"""Drift verdicts per signal and per dataset: which statistic, which threshold, which correction.

PYTEST_DONT_REWRITE

:func:`compare_signal` decides for one signal, :func:`compare_signals` for a dataset; the
statistics live in :mod:`pytest_modeltiers.drift.statistics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from pytest_modeltiers.drift import statistics as ds
from pytest_modeltiers.drift.statistics import Categorical, DriftInputError
from pytest_modeltiers.jsonio import jsonable

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_DRIFT_SHARE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_THRESHOLDS",
    "LARGE_SAMPLE_SIZE",
    "DriftReport",
    "SignalDrift",
    "adjust_p_values",
    "choose_method",
    "compare_signal",
    "compare_signals",
    "infer_kind",
]

Kind = Literal["numeric", "categorical", "binary"]
Method = Literal[
    "ks", "chi_square", "proportion_z", "wasserstein_normalized", "jensen_shannon", "psi"
]
Correction = Literal["bonferroni", "bh", "none"]
Verdict = Literal["drift", "no_drift", "skipped"]

#: Significance level of the tests (alibi-detect, Evidently).
DEFAULT_ALPHA = 0.05
#: Below this many observations on either side a signal is skipped: small samples drift
#: spuriously.
DEFAULT_MIN_SAMPLES = 30
#: Reference sizes above this use distances instead of tests (Evidently's switch).
LARGE_SAMPLE_SIZE = 1000
#: Share of evaluated signals that must drift for the dataset to drift (Evidently).
DEFAULT_DRIFT_SHARE = 0.5
#: Thresholds of the distance methods: drift when the statistic is at least this.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "wasserstein_normalized": 0.1,  # Evidently
    "jensen_shannon": 0.1,  # Evidently
    "psi": ds.PSI_SIGNIFICANT,  # Deepchecks, Giskard
}
P_VALUE_METHODS = frozenset({"ks", "chi_square", "proportion_z"})
_METHODS_BY_KIND: dict[str, tuple[str, ...]] = {
    "numeric": ("ks", "wasserstein_normalized", "psi"),
    "categorical": ("chi_square", "jensen_shannon", "psi"),
    "binary": ("proportion_z", "chi_square", "jensen_shannon", "psi"),
}
_MAX_LISTED_UNSEEN = 10


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class SignalDrift:
    """One signal's drift verdict with everything needed to audit it.

    ``statistic``, ``threshold`` and ``p_value`` are ``None`` only when the signal was skipped
    (``p_value`` also for the distance methods, which have none). For the tests, ``threshold`` is
    the per-signal significance level after the multiple-testing correction and the verdict is
    ``p_value <= threshold``; for the distances the verdict is ``statistic >= threshold``.
    ``reason`` is one human-readable sentence saying why the verdict is what it is.
    """

    name: str
    kind: str
    method: str | None
    statistic: float | None
    threshold: float | None
    p_value: float | None
    verdict: Verdict
    n_reference: int
    n_current: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    @property
    def skipped(self) -> bool:
        return self.verdict == "skipped"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (no numpy scalars; non-finite floats spelled as ``jsonio`` says)."""
        return jsonable(
            {
                "name": self.name,
                "kind": self.kind,
                "method": self.method,
                "statistic": self.statistic,
                "threshold": self.threshold,
                "p_value": self.p_value,
                "verdict": self.verdict,
                "drifted": self.drifted,
                "n_reference": self.n_reference,
                "n_current": self.n_current,
                "reason": self.reason,
                "details": self.details,
            }
        )


@dataclass(frozen=True)
class DriftReport:
    """The verdicts of :func:`compare_signals`, for the dataset and per signal.

    ``signals`` holds the evaluated signals and ``skipped`` the ones that could not be evaluated,
    each with its reason. ``drifted_share`` is the drifted fraction of the evaluated signals
    (``None`` when none was evaluated, in which case the dataset does not count as drifted but
    the report is :attr:`inconclusive`).
    """

    signals: tuple[SignalDrift, ...]
    skipped: tuple[SignalDrift, ...]
    alpha: float
    correction: Correction
    n_tests: int
    drift_share: float
    drifted_share: float | None
    dataset_drifted: bool

    @property
    def drifted_signals(self) -> tuple[SignalDrift, ...]:
        return tuple(s for s in self.signals if s.drifted)

    @property
    def inconclusive(self) -> bool:
        """True when every signal was skipped: no evidence either way."""
        return not self.signals

    def __getitem__(self, name: str) -> SignalDrift:
        for sig in (*self.signals, *self.skipped):
            if sig.name == name:
                return sig
        raise KeyError(name)

    def summary(self) -> str:
        """A few lines for a test failure message or a terminal summary."""
        if self.inconclusive:
            head = f"drift: inconclusive, all {len(self.skipped)} signals skipped"
        else:
            share = self.drifted_share or 0.0
            head = (
                f"drift: {len(self.drifted_signals)}/{len(self.signals)} signals drifted "
                f"(share {share:.2f}, dataset threshold {self.drift_share:.2f}) -> "
                f"{'DATASET DRIFT' if self.dataset_drifted else 'no dataset drift'}; "
                f"alpha {self.alpha:g}, correction {self.correction} over {self.n_tests} tests"
            )
        lines = [head]
        lines += [f"  {s.name}: {s.verdict}: {s.reason}" for s in self.signals]
        lines += [f"  {s.name}: skipped: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (no numpy scalars, no NaN)."""
        return {
            "dataset_drifted": self.dataset_drifted,
            "inconclusive": self.inconclusive,
            "drifted_share": jsonable(self.drifted_share),
            "drift_share": self.drift_share,
            "alpha": self.alpha,
            "correction": self.correction,
            "n_tests": self.n_tests,
            "n_evaluated": len(self.signals),
            "drifted_signals": [s.name for s in self.drifted_signals],
            "signals": [s.to_dict() for s in self.signals],
            "skipped": [s.to_dict() for s in self.skipped],
        }


# --------------------------------------------------------------------------------------------
# preparing one signal


@dataclass
class _Prepared:
    kind: Kind
    n_reference: int
    n_current: int
    numeric: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
    counts: tuple[dict[Any, float], dict[Any, float]] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _is_numeric_array(arr: npt.NDArray[Any]) -> bool:
    return arr.dtype.kind in "iuf"


def infer_kind(reference: Categorical, current: Categorical | None = None) -> Kind:
    """Infer a signal's kind from its data (Evidently's rule for small numeric sets)."""
    if isinstance(reference, Mapping):
        levels = set(reference)
        if isinstance(current, Mapping):
            levels |= set(current)
        return "binary" if len(levels) <= 2 else "categorical"
    arr = np.asarray(reference).reshape(-1)
    if arr.dtype.kind == "b":
        return "binary"
    if _is_numeric_array(arr):
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        n_unique = int(np.unique(finite).size)
        if n_unique > 5:
            return "numeric"
        levels = set(finite.tolist())
        if current is not None and not isinstance(current, Mapping):
            cur = np.asarray(current).reshape(-1)
            if _is_numeric_array(cur) or cur.dtype.kind == "b":
                cur = cur[np.isfinite(cur)] if cur.dtype.kind == "f" else cur
                levels |= set(np.unique(cur).tolist())
        return "binary" if len(levels) <= 2 else "categorical"
    levels = set(ds.count_labels(arr))
    if current is not None:
        levels |= set(ds.count_labels(current))
    return "binary" if len(levels) <= 2 else "categorical"


def _prepare(
    reference: Categorical,
    current: Categorical,
    kind: Kind | None,
    max_categories: int | None = None,
) -> _Prepared:
    if kind is None:
        kind = infer_kind(reference, current)
    if kind not in get_args(Kind):
        raise DriftInputError(f"unknown kind {kind!r}; use one of {get_args(Kind)} or None")
    if kind == "numeric":
        if isinstance(reference, Mapping) or isinstance(current, Mapping):
            raise DriftInputError(
                "a numeric signal needs arrays of values, not {label: count} mappings"
            )
        ref, ref_dropped = ds.finite_values(reference, role="reference")
        cur, cur_dropped = ds.finite_values(current, role="current")
        details: dict[str, Any] = {
            "reference_nonfinite": ref_dropped,
            "current_nonfinite": cur_dropped,
        }
        if ref.size:
            details["reference_mean"] = float(ref.mean())
            details["reference_std"] = float(ref.std())
        if cur.size:
            details["current_mean"] = float(cur.mean())
            details["current_std"] = float(cur.std())
        return _Prepared(kind, int(ref.size), int(cur.size), numeric=(ref, cur), details=details)
    ref_counts = ds.count_labels(reference, role="reference")
    cur_counts = ds.count_labels(current, role="current")
    if kind == "binary" and len(set(ref_counts) | set(cur_counts)) > 2:
        levels = sorted(map(repr, set(ref_counts) | set(cur_counts)))[:6]
        raise DriftInputError(
            f"a binary signal has at most 2 levels; this one has more ({', '.join(levels)}, ...). "
            "Use kind='categorical'."
        )
    n_ref = round(sum(ref_counts.values()))
    n_cur = round(sum(cur_counts.values()))
    unseen = [k for k in cur_counts if k not in ref_counts]
    unseen_count = float(sum(cur_counts[k] for k in unseen))
    top_unseen = sorted(unseen, key=lambda k: cur_counts[k], reverse=True)
    details = {
        "reference_levels": len(ref_counts),
        "current_levels": len(cur_counts),
        "unseen_count": unseen_count,
        "unseen_share": unseen_count / n_cur if n_cur else 0.0,
        "unseen_categories": [jsonable(k) for k in top_unseen[:_MAX_LISTED_UNSEEN]],
    }
    if kind == "categorical" and max_categories is not None and len(ref_counts) > max_categories:
        ref_counts, cur_counts = _pool_tail(ref_counts, cur_counts, max_categories)
        details["pooled_to_categories"] = max_categories
    return _Prepared(kind, n_ref, n_cur, counts=(ref_counts, cur_counts), details=details)


class _Other:
    """The label of the pooled tail under ``max_categories``; never equal to a user's label."""

    def __repr__(self) -> str:
        return "<other>"


_OTHER = _Other()


def _pool_tail(
    ref_counts: dict[Any, float], cur_counts: dict[Any, float], max_categories: int
) -> tuple[dict[Any, float], dict[Any, float]]:
    """Keep the reference's ``max_categories - 1`` most frequent categories, pool the rest.

    The pooled "other" bucket holds the reference's tail, and in the current sample the tail plus
    every unseen category, so a new category with real mass still moves the distribution.
    """
    ranked = sorted(ref_counts, key=lambda k: ref_counts[k], reverse=True)
    kept = ranked[: max_categories - 1]
    kept_set = set(kept)
    ref_out = {k: ref_counts[k] for k in kept}
    ref_out[_OTHER] = sum(v for k, v in ref_counts.items() if k not in kept_set)
    cur_out = {k: cur_counts.get(k, 0.0) for k in kept}
    cur_out[_OTHER] = sum(v for k, v in cur_counts.items() if k not in kept_set)
    return ref_out, cur_out


def choose_method(
    kind: Kind, n_reference: int, *, large_sample_size: int = LARGE_SAMPLE_SIZE
) -> str:
    """Evidently's size switch: a test up to ``large_sample_size`` reference rows, else distance."""
    small = n_reference <= large_sample_size
    if kind == "numeric":
        return "ks" if small else "wasserstein_normalized"
    if kind == "categorical":
        return "chi_square" if small else "jensen_shannon"
    return "proportion_z" if small else "jensen_shannon"


def _positive_level(levels: Sequence[Any]) -> Any:
    """The level whose proportion a binary test reports: 1/True if present, else the larger."""
    if set(levels) <= {0, 1}:
        return 1
    try:
        return sorted(levels)[-1]
    except TypeError:
        return sorted(levels, key=repr)[-1]


@dataclass
class _Measured:
    name: str
    kind: str
    method: str | None
    statistic: float | None
    p_value: float | None
    n_reference: int
    n_current: int
    details: dict[str, Any]
    skip_reason: str | None = None


def _measure(
    name: str,
    reference: Categorical,
    current: Categorical,
    *,
    kind: Kind | None,
    method: str | None,
    min_samples: int,
    large_sample_size: int,
    psi_bins: int,
    max_categories: int | None,
) -> _Measured:
    prep = _prepare(reference, current, kind, max_categories)
    details = prep.details
    if method is not None and method not in _METHODS_BY_KIND[prep.kind]:
        raise DriftInputError(
            f"method {method!r} does not apply to the {prep.kind} signal {name!r}; use one of "
            f"{_METHODS_BY_KIND[prep.kind]} or None (chosen by reference size)"
        )
    n_small = min(prep.n_reference, prep.n_current)
    if n_small < min_samples:
        side = "current" if prep.n_current <= prep.n_reference else "reference"
        reason = (
            f"the {side} sample has {n_small} observation(s), fewer than min_samples="
            f"{min_samples}: too few for a trustworthy drift statistic (a tiny sample drifts by "
            "chance); collect more data or lower min_samples"
        )
        return _Measured(
            name, prep.kind, method, None, None, prep.n_reference, prep.n_current, details, reason
        )
    chosen = method or choose_method(
        prep.kind, prep.n_reference, large_sample_size=large_sample_size
    )
    statistic: float
    p_value: float | None = None

    if prep.numeric is not None:
        ref, cur = prep.numeric
        wn = ds.wasserstein_normalized(ref, cur, scale=details.get("reference_std"))
        details["wasserstein_normalized"] = wn
        psi_value = ds.psi(ref, cur, bins=psi_bins)
        if chosen == "ks":
            res = ds.ks_test(ref, cur)
            statistic, p_value = res.statistic, res.p_value
        elif chosen == "wasserstein_normalized":
            statistic = wn
        else:
            statistic = psi_value
    else:
        assert prep.counts is not None
        ref_counts, cur_counts = prep.counts
        _, ref_vec, cur_vec, _ = ds.align_counts(ref_counts, cur_counts)
        js = ds.jensen_shannon_distance(ref_vec, cur_vec)
        details["jensen_shannon"] = js
        psi_value = _psi_counts(ref_vec, cur_vec)
        positive: Any = None
        if prep.kind == "binary":
            levels = list(dict.fromkeys([*ref_counts, *cur_counts]))
            positive = _positive_level(levels)
            details["positive_level"] = jsonable(positive)
        if chosen == "proportion_z":
            res = ds.proportion_counts_test(
                ref_counts.get(positive, 0.0),
                prep.n_reference,
                cur_counts.get(positive, 0.0),
                prep.n_current,
            )
            statistic, p_value = res.statistic, res.p_value
            details.update(res.details)
        elif chosen == "chi_square":
            # Every category its own column, unseen ones included: pooling the unseen into one
            # column would select columns by which sample happens to hold them, which under no
            # drift still flags sparse signals (token ids) every time. Rare columns are pooled
            # by their totals inside chi_square_test, which is valid.
            union = list(dict.fromkeys([*ref_counts, *cur_counts]))
            res = ds.chi_square_test(
                [ref_counts.get(k, 0.0) for k in union], [cur_counts.get(k, 0.0) for k in union]
            )
            statistic, p_value = res.statistic, res.p_value
            details.update(res.details)
        elif chosen == "jensen_shannon":
            statistic = js
        else:
            statistic = psi_value
    details["psi"] = psi_value
    details["psi_level"] = ds.psi_level(psi_value)
    return _Measured(
        name, prep.kind, chosen, statistic, p_value, prep.n_reference, prep.n_current, details
    )


def _psi_counts(ref_vec: npt.NDArray[np.float64], cur_vec: npt.NDArray[np.float64]) -> float:
    return ds._psi_from_shares(ref_vec / ref_vec.sum(), cur_vec / cur_vec.sum(), ds.PSI_EPSILON)


# --------------------------------------------------------------------------------------------
# corrections and verdicts


def adjust_p_values(
    p_values: Sequence[float],
    *,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
) -> tuple[list[float], list[float]]:
    """Per-test thresholds and adjusted p-values under a multiple-testing correction.

    Returns ``(thresholds, adjusted)``; test ``i`` rejects when ``p_values[i] <= thresholds[i]``,
    equivalently when ``adjusted[i] <= alpha``.

    * ``"bonferroni"`` (alibi-detect's default): every threshold is ``alpha / m``. Controls the
      family-wise error rate: the chance of *any* false alarm among ``m`` healthy signals stays
      at most ``alpha``, whatever their dependence.
    * ``"bh"`` (Benjamini-Hochberg, alibi-detect's ``"fdr"``): the shared threshold is
      ``k * alpha / m`` for the largest ``k`` with ``p_(k) <= k * alpha / m`` (``alpha / m``
      when there is none). Controls the expected share of false alarms among the alarms, so it
      finds more real drift when many signals drift together.
    * ``"none"``: every threshold is ``alpha``.
    """
    if correction not in get_args(Correction):
        raise DriftInputError(
            f"unknown correction {correction!r}; use 'bonferroni', 'bh' or 'none'"
        )
    m = len(p_values)
    if m == 0:
        return [], []
    p = np.asarray(p_values, dtype=np.float64)
    if correction == "none":
        return [alpha] * m, p.tolist()
    if correction == "bonferroni":
        return [alpha / m] * m, np.minimum(p * m, 1.0).tolist()
    order = np.argsort(p, kind="stable")
    ranks = np.arange(1, m + 1, dtype=np.float64)
    cutoffs = ranks * alpha / m
    passing = np.nonzero(p[order] <= cutoffs)[0]
    shared = float(cutoffs[passing[-1]]) if passing.size else alpha / m
    scaled = p[order] * m / ranks
    adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = adjusted_sorted
    return [shared] * m, adjusted.tolist()


def _verdict(
    m: _Measured, threshold: float | None, *, alpha: float, correction: str, n_tests: int
) -> SignalDrift:
    if m.skip_reason is not None or m.statistic is None or threshold is None:
        return SignalDrift(
            name=m.name,
            kind=m.kind,
            method=m.method,
            statistic=None,
            threshold=None,
            p_value=None,
            verdict="skipped",
            n_reference=m.n_reference,
            n_current=m.n_current,
            reason=m.skip_reason or "not evaluated",
            details=m.details,
        )
    if m.p_value is not None:
        drifted = m.p_value <= threshold
        how = "" if correction == "none" or n_tests <= 1 else f", {correction} over {n_tests} tests"
        reason = (
            f"{m.method} p-value {m.p_value:.3g} {'<=' if drifted else '>'} {threshold:.3g} "
            f"(alpha {alpha:g}{how})"
        )
    else:
        drifted = m.statistic >= threshold
        reason = f"{m.method} {m.statistic:.3g} {'>=' if drifted else '<'} threshold {threshold:g}"
    if m.details.get("unseen_count"):
        reason += f"; {m.details['unseen_share']:.1%} of current mass in unseen categories"
    return SignalDrift(
        name=m.name,
        kind=m.kind,
        method=m.method,
        statistic=m.statistic,
        threshold=threshold,
        p_value=m.p_value,
        verdict="drift" if drifted else "no_drift",
        n_reference=m.n_reference,
        n_current=m.n_current,
        reason=reason,
        details=m.details,
    )


def _check_params(
    alpha: float,
    min_samples: int,
    drift_share: float | None = None,
    max_categories: int | None = None,
) -> None:
    if max_categories is not None and max_categories < 2:
        raise DriftInputError(f"max_categories must be at least 2 or None, got {max_categories!r}")
    if not 0.0 < alpha < 1.0:
        raise DriftInputError(f"alpha must be between 0 and 1 (exclusive), got {alpha!r}")
    if min_samples < 1:
        raise DriftInputError(f"min_samples must be at least 1, got {min_samples!r}")
    if drift_share is not None and not 0.0 < drift_share <= 1.0:
        raise DriftInputError(f"drift_share must be in (0, 1], got {drift_share!r}")


def compare_signal(
    name: str,
    reference: Categorical,
    current: Categorical,
    kind: Kind | None = None,
    *,
    method: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    threshold: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    large_sample_size: int = LARGE_SAMPLE_SIZE,
    psi_bins: int = 10,
    max_categories: int | None = None,
) -> SignalDrift:
    """Compare one signal; no multiple-testing correction (use :func:`compare_signals` for many).

    ``method=None`` picks by reference size (a test up to 1000 observations, a distance
    above); ``threshold`` overrides a distance method's default (:data:`DEFAULT_THRESHOLDS`)
    and is ignored by the tests, which use ``alpha``. Returns a skipped :class:`SignalDrift`,
    with the reason, when either sample has fewer than ``min_samples`` observations.

    ``max_categories`` (categorical signals only) keeps the reference's ``max_categories - 1``
    most frequent categories and pools the rest, unseen ones included, into one "other" bucket
    before testing. Use it for high-cardinality signals such as token ids: with thousands of
    sparse categories the JS distance of two samples from the *same* distribution sits near
    ``sqrt(K / (8 N ln 2))`` (0.2 for 5,000 tokens and 50,000 rows), above the 0.1 threshold.
    The unseen-category details are computed before pooling.
    """
    _check_params(alpha, min_samples, max_categories=max_categories)
    m = _measure(
        name,
        reference,
        current,
        kind=kind,
        method=method,
        min_samples=min_samples,
        large_sample_size=large_sample_size,
        psi_bins=psi_bins,
        max_categories=max_categories,
    )
    thr: float | None = None
    if m.method is not None and m.skip_reason is None:
        if m.method in P_VALUE_METHODS:
            thr = alpha
        else:
            thr = DEFAULT_THRESHOLDS[m.method] if threshold is None else threshold
    return _verdict(m, thr, alpha=alpha, correction="none", n_tests=1)


def compare_signals(
    reference: Mapping[str, Categorical],
    current: Mapping[str, Categorical],
    *,
    kinds: Mapping[str, Kind] | None = None,
    methods: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    min_samples: int = DEFAULT_MIN_SAMPLES,
    drift_share: float = DEFAULT_DRIFT_SHARE,
    large_sample_size: int = LARGE_SAMPLE_SIZE,
    psi_bins: int = 10,
    max_categories: int | Mapping[str, int | None] | None = None,
) -> DriftReport:
    """Compare every signal, correct the p-values across signals and decide for the dataset.

    ``reference`` and ``current`` map signal names to samples (arrays, label arrays or
    ``{label: count}``).
    ``kinds`` and ``methods`` override the inferred kind and the size-chosen method per signal;
    ``thresholds`` overrides a distance method's threshold per *method name* (for example
    ``{"jensen_shannon": 0.05}``). The correction runs over the evaluated signals that have a
    p-value; distance signals are compared with their thresholds directly. A signal present on
    only one side is skipped with the reason, as is one below ``min_samples``.
    ``max_categories`` applies to every categorical signal (see :func:`compare_signal`), or per
    signal when it is a mapping of signal names (a name it lacks gets no pooling).
    """
    per_signal_cap = dict(max_categories) if isinstance(max_categories, Mapping) else {}
    for cap in per_signal_cap.values():
        _check_params(alpha, min_samples, max_categories=cap)
    shared_cap = None if isinstance(max_categories, Mapping) else max_categories
    _check_params(alpha, min_samples, drift_share, shared_cap)
    if correction not in get_args(Correction):
        raise DriftInputError(
            f"unknown correction {correction!r}; use 'bonferroni', 'bh' or 'none'"
        )
    kinds = kinds or {}
    methods = methods or {}
    dist_thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(dist_thresholds) - set(DEFAULT_THRESHOLDS)
    if unknown:
        raise DriftInputError(
            f"thresholds for unknown method(s) {sorted(unknown)}; thresholds apply to "
            f"{sorted(DEFAULT_THRESHOLDS)} (the tests use alpha)"
        )
    names = list(dict.fromkeys([*reference, *current]))
    measured: list[_Measured] = []
    for name in names:
        if name not in current or name not in reference:
            where = "current data" if name not in current else "reference"
            measured.append(
                _Measured(
                    name,
                    kinds.get(name, "unknown"),
                    None,
                    None,
                    None,
                    0,
                    0,
                    {},
                    f"the signal is missing from the {where}; nothing to compare it with",
                )
            )
            continue
        measured.append(
            _measure(
                name,
                reference[name],
                current[name],
                kind=kinds.get(name),
                method=methods.get(name),
                min_samples=min_samples,
                large_sample_size=large_sample_size,
                psi_bins=psi_bins,
                max_categories=per_signal_cap.get(name, shared_cap),
            )
        )
    tested = [m for m in measured if m.skip_reason is None and m.method in P_VALUE_METHODS]
    thresholds_p, adjusted = adjust_p_values(
        [float(m.p_value) for m in tested if m.p_value is not None],
        alpha=alpha,
        correction=correction,
    )
    per_signal: dict[str, float] = {}
    for m, p_thr, adj in zip(tested, thresholds_p, adjusted, strict=True):
        per_signal[m.name] = p_thr
        m.details["p_value_adjusted"] = adj
    evaluated: list[SignalDrift] = []
    skipped: list[SignalDrift] = []
    for m in measured:
        thr: float | None
        if m.skip_reason is not None or m.method is None:
            thr = None
        elif m.method in P_VALUE_METHODS:
            thr = per_signal[m.name]
        else:
            thr = dist_thresholds[m.method]
        sig = _verdict(m, thr, alpha=alpha, correction=correction, n_tests=len(tested))
        (skipped if sig.skipped else evaluated).append(sig)
    share = sum(s.drifted for s in evaluated) / len(evaluated) if evaluated else None
    return DriftReport(
        signals=tuple(evaluated),
        skipped=tuple(skipped),
        alpha=alpha,
        correction=correction,
        n_tests=len(tested),
        drift_share=drift_share,
        drifted_share=share,
        dataset_drifted=share is not None and share >= drift_share,
    )
