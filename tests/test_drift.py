"""Drift statistics: quiet on healthy data, loud on real drift, honest about what it skipped."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_modeltiers.drift.statistics import wasserstein1
from pytest_modeltiers.monitoring import (
    DriftInputError,
    adjust_p_values,
    chi_square_test,
    compare_signal,
    compare_signals,
    infer_kind,
    jensen_shannon_distance,
    ks_test,
    proportion_test,
    psi,
    psi_level,
    wasserstein_normalized,
)

REPS = 200
Gen = Callable[[np.random.Generator, int], npt.NDArray[np.generic]]


def _false_positive_rate(gen: Gen, n: int, seed: int) -> tuple[float, str]:
    hits = 0
    method = ""
    for i in range(REPS):
        rng = np.random.default_rng([seed, i])
        sig = compare_signal("x", gen(rng, n), gen(rng, n))
        hits += sig.drifted
        method = sig.method or ""
    return hits / REPS, method


@pytest.mark.parametrize(
    ("gen", "n", "expected_method"),
    [
        (lambda r, n: r.normal(size=n), 200, "ks"),
        (lambda r, n: r.exponential(size=n), 500, "ks"),
        (lambda r, n: r.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1]), 300, "chi_square"),
        (lambda r, n: r.random(n) < 0.3, 300, "proportion_z"),
    ],
    ids=["ks-normal", "ks-exponential", "chi-square", "proportion"],
)
def test_each_test_is_quiet_on_healthy_data(gen: Gen, n: int, expected_method: str) -> None:
    rate, method = _false_positive_rate(gen, n, seed=1)
    assert method == expected_method
    assert rate <= 0.08, f"{method}: false-positive rate {rate:.3f} at alpha 0.05"


def test_bonferroni_keeps_dataset_false_alarms_at_alpha() -> None:
    any_alarm = dataset_alarm = 0
    for i in range(REPS):
        rng = np.random.default_rng([2, i])
        ref = {f"s{k}": rng.normal(size=200) for k in range(10)}
        cur = {f"s{k}": rng.normal(size=200) for k in range(10)}
        report = compare_signals(ref, cur)
        assert report.n_tests == 10 and report.correction == "bonferroni"
        assert all(s.threshold == pytest.approx(0.005) for s in report.signals)
        any_alarm += bool(report.drifted_signals)
        dataset_alarm += report.dataset_drifted
    assert any_alarm / REPS <= 0.06
    assert dataset_alarm == 0


def test_ks_detects_half_std_mean_shift_with_power() -> None:
    hits = 0
    for i in range(REPS):
        rng = np.random.default_rng([3, i])
        hits += compare_signal("x", rng.normal(size=500), rng.normal(0.5, size=500)).drifted
    assert hits / REPS > 0.9


def test_category_proportion_change_is_detected() -> None:
    chi = prop = 0
    for i in range(100):
        rng = np.random.default_rng([4, i])
        ref = rng.choice(3, size=400, p=[0.5, 0.25, 0.25])
        cur = rng.choice(3, size=400, p=[0.7, 0.15, 0.15])
        chi += compare_signal("cls", ref, cur).drifted
        prop += compare_signal("b", rng.random(400) < 0.5, rng.random(400) < 0.7).drifted
    assert chi / 100 > 0.9
    assert prop / 100 > 0.9


def test_large_samples_use_distances_that_ignore_trivial_shifts() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=50_000)
    trivial = rng.normal(0.03, size=50_000)
    assert ks_test(ref, trivial).p_value < 0.05  # a p-value flags a shift nobody cares about
    quiet = compare_signal("x", ref, trivial)
    assert quiet.method == "wasserstein_normalized" and quiet.p_value is None
    assert not quiet.drifted and quiet.statistic is not None and quiet.statistic < 0.05
    loud = compare_signal("x", ref, rng.normal(0.5, size=50_000))
    assert loud.drifted and loud.statistic == pytest.approx(0.5, abs=0.03)

    cats = rng.choice(3, size=50_000, p=[0.5, 0.25, 0.25])
    same = compare_signal("c", cats, rng.choice(3, size=50_000, p=[0.5, 0.25, 0.25]))
    moved = compare_signal("c", cats, rng.choice(3, size=50_000, p=[0.7, 0.15, 0.15]))
    assert same.method == moved.method == "jensen_shannon"
    assert not same.drifted and moved.drifted


def test_method_switches_at_1000_reference_rows() -> None:
    rng = np.random.default_rng(6)
    assert compare_signal("x", rng.normal(size=1000), rng.normal(size=50)).method == "ks"
    assert compare_signal("x", rng.normal(size=1001), rng.normal(size=50)).method == (
        "wasserstein_normalized"
    )


def test_sparse_high_cardinality_signals_stay_quiet() -> None:
    """Token ids: 5,000 Zipf categories. Chi-square pools rare columns by their totals; at large
    sizes ``max_categories`` removes the JS noise floor."""
    p = 1.0 / np.arange(1, 5001)
    p /= p.sum()
    hits = 0
    for i in range(2 * REPS):  # ~6 % measured: Cochran pooling leaves a slight excess
        rng = np.random.default_rng([7, i])
        a, b = rng.choice(5000, size=1000, p=p), rng.choice(5000, size=1000, p=p)
        hits += compare_signal("tok", a, b, kind="categorical").drifted
    assert hits / (2 * REPS) <= 0.08
    rng = np.random.default_rng(8)
    ref = rng.choice(5000, size=50_000, p=p)
    noisy = compare_signal("tok", ref, rng.choice(5000, size=50_000, p=p), kind="categorical")
    assert noisy.drifted  # the documented noise floor without pooling
    pooled = compare_signal(
        "tok", ref, rng.choice(5000, size=50_000, p=p), kind="categorical", max_categories=50
    )
    assert not pooled.drifted and pooled.details["pooled_to_categories"] == 50
    q = p.copy()
    q[:10] = q[10:20]
    q /= q.sum()
    shifted = compare_signal(
        "tok", ref, rng.choice(5000, size=50_000, p=q), kind="categorical", max_categories=50
    )
    assert shifted.drifted


# ---------------------------------------------------------------------------------------------
# the statistics themselves


def test_js_distance_is_base_2_and_bounded() -> None:
    assert jensen_shannon_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon_distance({"a": 5}, {"b": 7}) == pytest.approx(1.0)
    assert jensen_shannon_distance([2, 2], [1, 1]) == 0.0
    from scipy.spatial.distance import jensenshannon

    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.4, 0.4, 0.2])
    assert jensen_shannon_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))


def test_psi_matches_a_hand_computed_value() -> None:
    # Reference 0..99 in 4 quantile bins of 25 each; current puts 10/20/30/40 % in them.
    # PSI = sum((q - p) ln(q / p)) with p = 0.25:
    # 0.15 ln 1.6 + 0.05 ln 1.2 - 0.05 ln 0.8 - 0.15 ln 0.4 = 0.228218...
    ref = np.arange(100.0)
    cur = np.concatenate(
        [np.full(10, 5.0), np.full(20, 30.0), np.full(30, 60.0), np.full(40, 90.0)]
    )
    expected = (
        0.15 * math.log(1.6) + 0.05 * math.log(1.2) - 0.05 * math.log(0.8) - 0.15 * math.log(0.4)
    )
    assert psi(ref, cur, bins=4) == pytest.approx(expected, rel=1e-12)
    assert psi_level(expected) == "significant" and psi_level(0.15) == "moderate"
    assert psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == 0.0
    # An empty bin is floored at 1e-4 instead of producing inf.
    assert math.isfinite(psi(ref, np.full(50, 1000.0), bins=4))


def test_chi_square_and_proportion_agree_with_scipy() -> None:
    res = chi_square_test([30, 50, 20], [40, 40, 20])
    ref = stats.chi2_contingency(np.array([[30, 50, 20], [40, 40, 20]]))
    assert res.p_value == pytest.approx(ref.pvalue) and res.details["dof"] == 2
    z = proportion_test(np.r_[np.ones(30), np.zeros(70)], np.r_[np.ones(50), np.zeros(50)])
    pooled = 0.4
    expected_z = 0.2 / math.sqrt(pooled * 0.6 * (2 / 100))
    assert z.statistic == pytest.approx(expected_z)
    assert z.p_value == pytest.approx(2 * stats.norm.sf(expected_z))
    same = proportion_test(np.ones(40), np.ones(40))
    assert same.statistic == 0.0 and same.p_value == 1.0


def test_wasserstein_matches_scipy_and_guards_zero_std() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.integers(0, 5, 300).astype(float), rng.normal(size=77)
    assert wasserstein1(a, b) == pytest.approx(stats.wasserstein_distance(a, b))
    assert wasserstein_normalized(np.full(50, 3.0), np.full(40, 3.0)) == 0.0
    assert wasserstein_normalized(np.full(50, 3.0), np.full(40, 4.0)) == math.inf
    sig = compare_signal("c", np.full(2000, 3.0), np.full(40, 4.0), kind="numeric")
    assert sig.drifted and sig.to_dict()["statistic"] == "inf"


# ---------------------------------------------------------------------------------------------
# guards, unseen categories, corrections, reports


def test_min_sample_guard_skips_with_the_reason() -> None:
    rng = np.random.default_rng(10)
    sig = compare_signal("x", rng.normal(size=500), rng.normal(5.0, size=12))
    assert sig.skipped and not sig.drifted and sig.statistic is None
    assert "12 observation(s), fewer than min_samples=30" in sig.reason
    report = compare_signals(
        {"few": rng.normal(size=500), "ok": rng.normal(size=500), "gone": rng.normal(size=99)},
        {"few": rng.normal(size=5), "ok": rng.normal(size=500), "new": rng.normal(size=99)},
    )
    assert [s.name for s in report.signals] == ["ok"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert "min_samples" in reasons["few"]
    assert "missing from the current data" in reasons["gone"]
    assert "missing from the reference" in reasons["new"]
    assert report.n_tests == 1 and report.drifted_share == 0.0
    empty = compare_signals({"a": [1.0] * 3}, {"a": [1.0] * 3})
    assert empty.inconclusive and not empty.dataset_drifted and empty.drifted_share is None


def test_unseen_categories_are_bucketed_and_count_toward_drift() -> None:
    ref = {"cat": 200, "dog": 150, "bird": 150}
    cur = {"cat": 120, "dog": 90, "bird": 90, "lizard": 60, "snake": 40}
    sig = compare_signal("animal", ref, cur)
    assert sig.method == "chi_square" and sig.drifted
    assert sig.details["unseen_share"] == pytest.approx(100 / 400)
    assert sig.details["unseen_categories"] == ["lizard", "snake"]
    assert "25.0% of current mass in unseen categories" in sig.reason
    big = compare_signal("animal", {k: v * 10 for k, v in ref.items()}, cur)
    assert big.method == "jensen_shannon" and big.drifted
    # JS with p = 0 on the unseen mass: the unseen bucket contributes exactly q / 2 bits.
    assert big.statistic is not None and big.statistic >= math.sqrt(0.25 / 2)
    raw = compare_signal("animal", np.repeat(list(ref), list(ref.values())), cur_labels(cur))
    assert raw.details["unseen_share"] == sig.details["unseen_share"]
    assert raw.p_value == pytest.approx(sig.p_value)


def cur_labels(counts: dict[str, int]) -> npt.NDArray[np.str_]:
    return np.repeat(list(counts), list(counts.values()))


def test_bh_finds_more_than_bonferroni_when_many_signals_drift() -> None:
    p = [0.001, 0.008, 0.012, 0.02, 0.04, 0.5, 0.7, 0.9, 0.3, 0.6]
    bonf, _ = adjust_p_values(p, correction="bonferroni")
    bh, adj = adjust_p_values(p, correction="bh")
    assert sum(pi <= t for pi, t in zip(p, bonf, strict=True)) == 1
    assert sum(pi <= t for pi, t in zip(p, bh, strict=True)) == 4  # 0.02 <= 4 * 0.005
    assert all((pi <= t) == (a <= 0.05) for pi, t, a in zip(p, bh, adj, strict=True))
    assert adjust_p_values(p, correction="none")[0] == [0.05] * 10

    rng = np.random.default_rng(11)
    ref = {f"s{k}": rng.normal(size=300) for k in range(10)}
    cur = {f"s{k}": rng.normal(0.25 if k < 5 else 0.0, size=300) for k in range(10)}
    n_bonf = len(compare_signals(ref, cur).drifted_signals)
    n_bh = len(compare_signals(ref, cur, correction="bh").drifted_signals)
    assert n_bh >= n_bonf


def test_dataset_verdict_uses_the_drifted_share() -> None:
    rng = np.random.default_rng(12)
    ref = {f"s{k}": rng.normal(size=400) for k in range(4)}
    cur = {f"s{k}": rng.normal(1.0 if k < 2 else 0.0, size=400) for k in range(4)}
    report = compare_signals(ref, cur)
    assert report.drifted_share == 0.5 and report.dataset_drifted
    assert not compare_signals(ref, cur, drift_share=0.75).dataset_drifted
    assert "2/4 signals drifted" in report.summary()


def test_report_to_dict_is_strict_json() -> None:
    rng = np.random.default_rng(13)
    ref = {
        "x": np.r_[rng.normal(size=300), np.nan],
        "cls": rng.choice(np.array(["a", "b", "c"]), size=300),
        "flag": rng.random(300) < 0.4,
        "big": rng.normal(size=3000),
    }
    cur = {k: v.copy() for k, v in ref.items()}
    report = compare_signals(ref, cur)
    data = report.to_dict()
    json.dumps(data, allow_nan=False)
    kinds = {s["name"]: (s["kind"], s["method"]) for s in data["signals"]}
    assert kinds == {
        "x": ("numeric", "ks"),
        "cls": ("categorical", "chi_square"),
        "flag": ("binary", "proportion_z"),
        "big": ("numeric", "wasserstein_normalized"),
    }
    x = report["x"]
    assert x.details["reference_nonfinite"] == 1 and x.n_reference == 300
    assert {"psi", "psi_level", "wasserstein_normalized", "p_value_adjusted"} <= set(x.details)
    assert report["big"].p_value is None and report["big"].threshold == 0.1


def test_kind_inference_and_bad_input_messages() -> None:
    assert infer_kind(np.array([0, 1, 1])) == "binary"
    assert infer_kind(np.array([1, 2, 3, 1])) == "categorical"
    assert infer_kind(np.arange(10.0)) == "numeric"
    assert infer_kind({"a": 1, "b": 2}, {"c": 1}) == "categorical"
    with pytest.raises(DriftInputError, match="does not apply to the numeric signal"):
        compare_signal("x", np.arange(100.0), np.arange(100.0), method="chi_square")
    with pytest.raises(DriftInputError, match="unknown correction"):
        compare_signals({}, {}, correction="holm")  # type: ignore[arg-type]
    with pytest.raises(DriftInputError, match="at most 2 levels"):
        compare_signal("b", ["a", "b", "c"] * 20, ["a"] * 60, kind="binary")
    with pytest.raises(DriftInputError, match="aligned count vectors"):
        jensen_shannon_distance([1, 2], [1, 2, 3])


# ---------------------------------------------------------------------------------------------
# properties

counts = st.lists(st.integers(0, 50), min_size=1, max_size=8)


@settings(max_examples=60)
@given(counts, counts)
def test_js_is_symmetric_bounded_and_zero_on_identity(a: list[int], b: list[int]) -> None:
    n = max(len(a), len(b))
    a, b = [*a, *[0] * (n - len(a))], [*b, *[0] * (n - len(b))]
    if sum(a) == 0 or sum(b) == 0:
        return
    d = jensen_shannon_distance(a, b)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(jensen_shannon_distance(b, a), abs=1e-12)
    assert jensen_shannon_distance(a, a) == 0.0


samples = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False), min_size=2, max_size=60
)


@settings(max_examples=60)
@given(samples, samples)
def test_distances_are_non_negative_and_zero_on_identical(a: list[float], b: list[float]) -> None:
    assert wasserstein_normalized(a, b) >= 0.0
    assert psi(a, b, bins=5) >= 0.0
    assert wasserstein_normalized(a, a) == 0.0
    assert psi(a, a, bins=5) == 0.0
