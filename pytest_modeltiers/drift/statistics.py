"""The statistics behind drift detection: two-sample tests and distances, numpy and scipy only.

PYTEST_DONT_REWRITE

:mod:`pytest_modeltiers.drift.verdicts` chooses among them per signal and turns them into
verdicts; use these directly for one statistic without the policy.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import stats

from pytest_modeltiers.errors import ModelTiersError

__all__ = [
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "DriftInputError",
    "StatResult",
    "align_counts",
    "chi_square_test",
    "jensen_shannon_distance",
    "ks_test",
    "proportion_test",
    "psi",
    "psi_level",
    "wasserstein_normalized",
]

#: PSI at or above this is "significant" drift (the credit-scoring convention that Deepchecks and
#: Giskard use as their threshold).
PSI_SIGNIFICANT = 0.2
#: PSI at or above this is "moderate" drift (Evidently's PSI threshold).
PSI_MODERATE = 0.1
#: Floor for an empty bin's share in PSI, so ``ln(q / p)`` stays finite (Evidently's value).
PSI_EPSILON = 1e-4
#: Cochran's rule: chi-square is trusted when expected counts are at least 5.
MIN_EXPECTED_COUNT = 5.0

ArrayLike = npt.ArrayLike
Categorical: TypeAlias = Mapping[Any, float] | ArrayLike


class DriftInputError(ModelTiersError, ValueError):
    """A sample handed to a drift statistic cannot be used; the message says which and why."""


@dataclass(frozen=True)
class StatResult:
    """A hypothesis test's outcome: the statistic, its p-value and what produced them.

    ``details`` holds test-specific numbers (degrees of freedom, the two proportions, ...), all
    plain Python values so a report can serialise them as they are.
    """

    statistic: float
    p_value: float
    details: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# input handling


def finite_values(
    sample: ArrayLike, *, role: str = "sample"
) -> tuple[npt.NDArray[np.float64], int]:
    """Return the finite values of a 1-D numeric sample as float64, and how many were dropped."""
    try:
        arr = np.asarray(sample, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(
            f"the {role} is not numeric ({exc}); pass numbers, or compare it as a categorical "
            "signal (kind='categorical')"
        ) from None
    arr = arr.reshape(-1)
    mask = np.isfinite(arr)
    if mask.all():
        return arr, 0
    return arr[mask], int(arr.size - int(mask.sum()))


def _require(arr: npt.NDArray[np.float64], role: str) -> None:
    if arr.size == 0:
        raise DriftInputError(
            f"the {role} has no finite values; a drift statistic needs at least one observation"
        )


def count_labels(sample: Categorical, *, role: str = "sample") -> dict[Any, float]:
    """Count a categorical sample given as raw labels or as a ``{label: count}`` mapping.

    Counts must be finite and non-negative. Labels come back as plain Python values (numpy
    scalars are unwrapped) so reference and current labels compare equal across sources.
    """
    if isinstance(sample, Mapping):
        out: dict[Any, float] = {}
        for key, value in sample.items():
            count = float(value)
            if not math.isfinite(count) or count < 0:
                raise DriftInputError(
                    f"the {role} count for category {key!r} is {value!r}; counts must be finite "
                    "and non-negative"
                )
            label = key.item() if isinstance(key, np.generic) else key
            out[label] = out.get(label, 0.0) + count
        return out
    arr = np.asarray(sample)
    arr = arr.reshape(-1)
    if arr.size == 0:
        return {}
    try:
        labels, counts = np.unique(arr, return_counts=True)
    except TypeError:  # mixed, unorderable labels in an object array
        return {k: float(v) for k, v in Counter(arr.tolist()).items()}
    return dict(zip(labels.tolist(), counts.astype(np.float64).tolist(), strict=True))


def align_counts(
    reference: Mapping[Any, float], current: Mapping[Any, float]
) -> tuple[list[Any], npt.NDArray[np.float64], npt.NDArray[np.float64], list[Any]]:
    """Align two count mappings on the reference's categories plus one *unseen* bucket.

    Returns ``(labels, ref_counts, cur_counts, unseen_labels)``: the vectors have one entry per
    reference category (in the reference's order) and a last entry, the unseen bucket, holding the
    current mass of every category the reference never saw (the reference has 0 there). A stored
    reference profile only knows its own categories, so new ones must land somewhere visible
    rather than be dropped (as alibi-detect does). For the JS
    distance pooling them is exact: every category with reference mass 0 contributes
    ``q_i / 2`` whether pooled or not.
    """
    labels = list(reference.keys())
    ref = np.array([reference[k] for k in labels] + [0.0], dtype=np.float64)
    cur = np.array([current.get(k, 0.0) for k in labels] + [0.0], dtype=np.float64)
    unseen = [k for k in current if k not in reference]
    cur[-1] = float(sum(current[k] for k in unseen))
    return labels, ref, cur, unseen


def _count_vector(values: Sequence[float] | ArrayLike, role: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DriftInputError(f"the {role} counts must be finite and non-negative, got {arr!r}")
    return arr


def _aligned_pair(
    reference: Categorical, current: Categorical, what: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Two aligned count vectors from two mappings (aligned by key) or two equal-length vectors."""
    if isinstance(reference, Mapping) != isinstance(current, Mapping):
        raise DriftInputError(
            f"{what} needs both samples in the same form: two {{label: count}} mappings or two "
            "aligned count vectors"
        )
    if isinstance(reference, Mapping) and isinstance(current, Mapping):
        _, ref, cur, _ = align_counts(
            count_labels(reference, role="reference"), count_labels(current, role="current")
        )
        return ref, cur
    ref = _count_vector(reference, "reference")  # type: ignore[arg-type]  # not a Mapping here
    cur = _count_vector(current, "current")  # type: ignore[arg-type]
    if ref.shape != cur.shape:
        raise DriftInputError(
            f"{what} needs aligned count vectors (one entry per category, same order); got "
            f"lengths {ref.size} and {cur.size}. Pass {{label: count}} mappings to align by label."
        )
    return ref, cur


# --------------------------------------------------------------------------------------------
# tests with p-values (small samples)


def ks_test(reference: ArrayLike, current: ArrayLike) -> StatResult:
    """Two-sample Kolmogorov-Smirnov test (two-sided) on the finite values.

    Evidently's default for numeric columns with at most 1000 reference rows. The statistic is
    the largest gap between the two empirical CDFs (0..1). scipy computes the exact p-value for
    small samples and the asymptotic one otherwise; its warning when the exact computation falls
    back is expected and handled here. On data with ties (integer lengths) KS is conservative:
    fewer false alarms, a little less power.
    """
    ref, _ = finite_values(reference, role="reference")
    cur, _ = finite_values(current, role="current")
    _require(ref, "reference")
    _require(cur, "current")
    with warnings.catch_warnings():
        # "ks_2samp: Exact calculation unsuccessful. Switching to method=asymp."
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ks_2samp(ref, cur, alternative="two-sided", method="auto")
    return StatResult(
        statistic=float(res.statistic),
        p_value=float(min(max(res.pvalue, 0.0), 1.0)),
        details={"statistic_location": float(res.statistic_location)},
    )


def chi_square_test(reference: Categorical, current: Categorical) -> StatResult:
    """Chi-square test of homogeneity on a 2 x K contingency table of category counts.

    Evidently's default for categorical columns with at most 1000 reference rows. Give two
    ``{label: count}`` mappings (aligned by label; categories only in ``current`` are pooled into
    one unseen bucket) or two aligned count vectors.

    Categories whose expected count in the smaller sample is below 5 are pooled into one "rare"
    column first (Cochran's rule): with many sparse categories the chi-square approximation
    otherwise over-states significance. Pooling by column totals is legitimate because the test
    conditions on them. Yates' continuity correction applies when one degree of freedom is left.
    When fewer than two columns remain there is nothing to compare: statistic 0, p-value 1.
    """
    ref, cur = _aligned_pair(reference, current, "chi_square_test")
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    if n_ref <= 0 or n_cur <= 0:
        raise DriftInputError(
            "chi_square_test needs at least one observation in each sample; got totals "
            f"{n_ref:g} (reference) and {n_cur:g} (current)"
        )
    totals = ref + cur
    keep = totals > 0
    ref, cur, totals = ref[keep], cur[keep], totals[keep]
    expected_small = totals * min(n_ref, n_cur) / (n_ref + n_cur)
    rare = expected_small < MIN_EXPECTED_COUNT
    pooled = int(rare.sum())
    if pooled > 1:
        ref = np.append(ref[~rare], ref[rare].sum())
        cur = np.append(cur[~rare], cur[rare].sum())
    details: dict[str, Any] = {"levels": int(keep.sum()), "pooled_rare_levels": pooled}
    if ref.size < 2:
        details["dof"] = 0
        return StatResult(statistic=0.0, p_value=1.0, details=details)
    table = np.vstack([ref, cur])
    res = stats.chi2_contingency(table, correction=True)
    details["dof"] = int(res.dof)
    return StatResult(
        statistic=float(res.statistic),
        p_value=float(min(max(res.pvalue, 0.0), 1.0)),
        details=details,
    )


def proportion_counts_test(
    ref_successes: float, ref_n: float, cur_successes: float, cur_n: float
) -> StatResult:
    """Pooled two-proportion z-test (two-sided) from counts; see :func:`proportion_test`."""
    if ref_n <= 0 or cur_n <= 0:
        raise DriftInputError(
            f"the proportion test needs observations in both samples; got n={ref_n:g} "
            f"(reference) and n={cur_n:g} (current)"
        )
    p_ref, p_cur = ref_successes / ref_n, cur_successes / cur_n
    pooled = (ref_successes + cur_successes) / (ref_n + cur_n)
    var = pooled * (1.0 - pooled) * (1.0 / ref_n + 1.0 / cur_n)
    details = {"reference_proportion": float(p_ref), "current_proportion": float(p_cur)}
    if var <= 0.0:  # both samples all-0 or all-1: identical, no evidence of a difference
        return StatResult(statistic=0.0, p_value=1.0, details=details)
    z = (p_cur - p_ref) / math.sqrt(var)
    p_value = float(2.0 * stats.norm.sf(abs(z)))
    return StatResult(statistic=float(z), p_value=min(p_value, 1.0), details=details)


def proportion_test(reference: ArrayLike, current: ArrayLike) -> StatResult:
    """Pooled two-proportion z-test on two binary samples (bool or 0/1 arrays).

    Evidently's default for binary columns with at most 1000 reference rows. The statistic is z
    (positive when the current proportion of 1/True is higher); details carry both proportions.
    """
    ref, _ = finite_values(reference, role="reference")
    cur, _ = finite_values(current, role="current")
    _require(ref, "reference")
    _require(cur, "current")
    for arr, role in ((ref, "reference"), (cur, "current")):
        if not np.all((arr == 0) | (arr == 1)):
            raise DriftInputError(
                f"proportion_test needs 0/1 or boolean samples; the {role} has other values. "
                "Compare labelled binary data with compare_signal(kind='binary')."
            )
    return proportion_counts_test(float(ref.sum()), ref.size, float(cur.sum()), cur.size)


# --------------------------------------------------------------------------------------------
# distances (large samples)


def wasserstein_normalized(
    reference: ArrayLike, current: ArrayLike, *, scale: float | None = None
) -> float:
    """Wasserstein-1 distance divided by the reference's standard deviation.

    Evidently's default for numeric columns above 1000 reference rows, with its threshold 0.1:
    "the distributions moved by a tenth of the reference's spread". Unlike a p-value it does not
    shrink towards "drift" as samples grow, so 50,000 rows with a negligible shift stay quiet.
    A constant reference (std 0) has no spread to scale by: the distance is 0 when the current
    sample equals it and ``inf`` otherwise (any movement is unbounded relative to zero spread).
    ``scale`` is the reference's standard deviation when the caller already has it.
    """
    ref, _ = finite_values(reference, role="reference")
    cur, _ = finite_values(current, role="current")
    _require(ref, "reference")
    _require(cur, "current")
    distance = wasserstein1(ref, cur)
    if scale is None:
        scale = float(np.std(ref))
    if scale > 0.0:
        return distance / scale
    return 0.0 if distance == 0.0 else math.inf


def wasserstein1(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    """Wasserstein-1 distance of two finite 1-D samples: the area between their empirical CDFs.

    Same value as ``scipy.stats.wasserstein_distance`` (unweighted), about 3.5x faster on a
    million rows: sorting each sample first makes the stable argsort of their concatenation a
    linear merge of two runs. Ties need no care: their gaps are zero. The CDFs come from integer
    counts, not a running sum of ``1/n`` steps, so identical samples give exactly 0.
    """
    n, m = ref.size, cur.size
    merged = np.concatenate([sorted_copy(ref), sorted_copy(cur)])
    order = np.argsort(merged, kind="stable")
    # CDF gap after the k-th merged point, from_ref/n - (k - from_ref)/m, computed in place
    # (a million-row signal makes every temporary array 16 MB of memory traffic).
    from_ref = np.cumsum(order[:-1] < n, dtype=np.float64)
    from_cur = np.arange(1, n + m, dtype=np.float64)
    from_cur -= from_ref
    from_cur /= m
    from_ref /= n
    cdf_gap = np.subtract(from_ref, from_cur, out=from_ref)
    np.abs(cdf_gap, out=cdf_gap)
    ordered = merged[order]
    return float(np.dot(cdf_gap, np.diff(ordered)))


def is_sorted(values: npt.NDArray[np.float64]) -> bool:
    """True when a 1-D array is in ascending order (a linear scan, far cheaper than a sort)."""
    return values.size < 2 or bool(np.all(values[1:] >= values[:-1]))


def sorted_copy(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``values`` in ascending order; an already sorted array (a stored profile's values) is
    returned as it is instead of being sorted again."""
    return values if is_sorted(values) else np.sort(values)


def quantiles(
    values: npt.NDArray[np.float64], probabilities: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``np.quantile(values, probabilities)`` (its default linear method, bit for bit), without
    the partition when ``values`` is already sorted."""
    if not is_sorted(values):
        return np.asarray(np.quantile(values, probabilities), dtype=np.float64)
    h = (values.size - 1) * np.asarray(probabilities, dtype=np.float64)
    lo = np.floor(h).astype(np.int64)
    t = h - lo
    a = values[lo]
    b = values[np.minimum(lo + 1, values.size - 1)]
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def jensen_shannon_distance(p: Categorical, q: Categorical) -> float:
    """Jensen-Shannon *distance* (square root of the divergence) in base 2: always in 0..1.

    Evidently's default for categorical columns above 1000 reference rows, threshold 0.1. ``p``
    and ``q`` are aligned probability or count vectors (each normalised here), or two
    ``{label: count}`` mappings aligned by label. 0 means identical distributions, 1 disjoint
    supports. It is symmetric and a metric, unlike KL divergence. Computed directly (not with
    ``scipy.spatial.distance.jensenshannon``) so rounding can never produce a NaN from the square
    root of a tiny negative number.
    """
    ref, cur = _aligned_pair(p, q, "jensen_shannon_distance")
    s_ref, s_cur = float(ref.sum()), float(cur.sum())
    if s_ref <= 0 or s_cur <= 0:
        raise DriftInputError(
            "jensen_shannon_distance needs mass in both distributions; got totals "
            f"{s_ref:g} and {s_cur:g}"
        )
    pp, qq = ref / s_ref, cur / s_cur
    m = 0.5 * (pp + qq)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(pp > 0, pp * np.log2(pp / m), 0.0).sum()
        kl_q = np.where(qq > 0, qq * np.log2(qq / m), 0.0).sum()
    divergence = min(max(0.5 * float(kl_p + kl_q), 0.0), 1.0)
    return math.sqrt(divergence)


def _psi_from_shares(
    ref_share: npt.NDArray[np.float64], cur_share: npt.NDArray[np.float64], epsilon: float
) -> float:
    p = np.clip(ref_share, epsilon, None)
    q = np.clip(cur_share, epsilon, None)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(
    reference: Categorical,
    current: Categorical,
    *,
    bins: int = 10,
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population Stability Index: ``sum((q_i - p_i) * ln(q_i / p_i))`` over bins.

    Numeric samples are binned at the reference's quantiles (``bins`` equal-mass bins, fewer
    when ties merge edges); the outer bins are open, so current values beyond the reference's
    range land in them. Two ``{label: count}`` mappings are compared per category, with the
    unseen bucket of :func:`align_counts`. A bin empty on either side has its share floored at
    ``epsilon`` (1e-4, Evidently's value) so the logarithm stays finite; the floor is not
    renormalised, which keeps identical samples at exactly 0.

    Read it with :func:`psi_level`: 0.1 is "moderate" (Evidently's threshold), 0.2 "significant"
    (Deepchecks and Giskard).
    """
    if bins < 2:
        raise DriftInputError(f"psi needs bins >= 2, got {bins}")
    if not epsilon > 0:
        raise DriftInputError(f"psi needs epsilon > 0, got {epsilon}")
    if isinstance(reference, Mapping) or isinstance(current, Mapping):
        ref_c, cur_c = _aligned_pair(reference, current, "psi")
        if ref_c.sum() <= 0 or cur_c.sum() <= 0:
            raise DriftInputError("psi needs mass in both samples")
        return _psi_from_shares(ref_c / ref_c.sum(), cur_c / cur_c.sum(), epsilon)
    ref, _ = finite_values(reference, role="reference")
    cur, _ = finite_values(current, role="current")
    _require(ref, "reference")
    _require(cur, "current")
    ref_share, cur_share, _ = quantile_bin_shares(ref, cur, bins)
    return _psi_from_shares(ref_share, cur_share, epsilon)


def quantile_bin_shares(
    ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64], bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Shares of both samples in the reference's quantile bins, and the inner bin edges."""
    edges = np.unique(quantiles(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return _bin_shares(ref, edges), _bin_shares(cur, edges), edges


def _bin_shares(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Share of ``values`` in each bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    if is_sorted(values):  # a stored profile: one binary search per edge, not per value
        cuts = np.searchsorted(values, edges, side="left")
        counts = np.diff(np.concatenate(([0], cuts, [values.size])))
    else:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return (counts / values.size).astype(np.float64)


def psi_level(value: float) -> str:
    """``"significant"`` (>= 0.2), ``"moderate"`` (>= 0.1) or ``"none"``."""
    if value >= PSI_SIGNIFICANT:
        return "significant"
    if value >= PSI_MODERATE:
        return "moderate"
    return "none"
