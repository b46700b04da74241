"""compare_outputs: errors, minimal passing tolerance, mismatch fraction, top-1 agreement."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pytest_modeltiers.export.parity import compare_outputs
from pytest_modeltiers.export.tolerances import Tolerance

TOL = Tolerance(1e-4, 1e-3)


def test_identical_outputs_pass_with_zero_error() -> None:
    x = torch.randn(2, 3, 5)
    stats = compare_outputs(x.clone(), x, TOL)
    assert stats.ok and stats.max_abs == 0 and stats.mismatches == 0 and stats.min_atol == 0
    assert stats.shape == [2, 3, 5] and stats.elements == 30


def test_error_within_tolerance_passes_and_beyond_fails() -> None:
    ref = torch.tensor([[1.0, 2.0, 100.0]])
    assert compare_outputs(ref + torch.tensor([[5e-5, 0, 0.09]]), ref, TOL).ok  # 0.09 < 0.1001
    stats = compare_outputs(ref + torch.tensor([[0, 0, 0.2]]), ref, TOL)
    assert not stats.ok
    assert stats.mismatches == 1 and stats.worst_index == [0, 2]
    assert stats.worst_values == pytest.approx([100.2, 100.0])
    assert stats.max_abs == pytest.approx(0.2, rel=1e-4)
    assert stats.max_rel == pytest.approx(0.002, rel=1e-4)


def test_minimum_tolerance_is_exactly_the_boundary() -> None:
    torch.manual_seed(0)
    ref = torch.randn(4, 16)
    cand = ref + torch.randn(4, 16) * 1e-2
    stats = compare_outputs(cand, ref, TOL)
    assert not stats.ok
    just = replace(TOL, atol=stats.min_atol * (1 + 1e-9) + 1e-12)
    assert compare_outputs(cand, ref, just).ok
    assert not compare_outputs(cand, ref, replace(TOL, atol=stats.min_atol * 0.99)).ok
    by_rtol = replace(TOL, rtol=stats.min_rtol * (1 + 1e-9))
    assert compare_outputs(cand, ref, by_rtol).ok
    assert not compare_outputs(cand, ref, replace(TOL, rtol=stats.min_rtol * 0.99)).ok


def test_mismatch_fraction_allows_the_worst_elements() -> None:
    ref = torch.zeros(100)
    cand = ref.clone()
    cand[:3] = 1.0  # 3 % of the elements are far off
    assert not compare_outputs(cand, ref, TOL).ok
    loose = replace(TOL, max_mismatch_fraction=0.03)
    stats = compare_outputs(cand, ref, loose)
    assert stats.ok and stats.mismatches == 3 and stats.allowed_mismatches == 3
    assert stats.min_atol == 0.0  # with 3 allowed mismatches nothing else needs any tolerance
    assert not compare_outputs(cand, ref, replace(TOL, max_mismatch_fraction=0.02)).ok
    assert stats.mismatch_fraction == pytest.approx(0.03)


def test_nan_and_inf_match_only_themselves() -> None:
    ref = torch.tensor([math.nan, math.inf, 1.0])
    assert compare_outputs(ref.clone(), ref, TOL).ok
    stats = compare_outputs(torch.tensor([0.0, math.inf, 1.0]), ref, TOL)
    assert not stats.ok and stats.max_abs == math.inf and stats.mismatches == 1


def test_zero_reference_needs_absolute_tolerance() -> None:
    stats = compare_outputs(torch.tensor([1e-3]), torch.tensor([0.0]), TOL)
    assert not stats.ok and stats.min_rtol == math.inf and stats.min_atol == pytest.approx(1e-3)


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"shapes differ: artifact \[2, 3\], eager \[3, 2\]"):
        compare_outputs(torch.zeros(2, 3), torch.zeros(3, 2), TOL)


def test_top1_agreement_ignores_near_ties_but_counts_decided_flips() -> None:
    tol = Tolerance(0.1, 0.1, min_top1_agreement=0.9)
    ref = torch.tensor([[1.00, 1.01], [5.0, 0.0], [0.0, 5.0], [3.0, 0.0]])
    flipped_tie = torch.tensor([[1.01, 1.00], [5.0, 0.0], [0.0, 5.0], [3.0, 0.0]])
    stats = compare_outputs(flipped_tie, ref, tol)
    assert stats.ok and stats.top1_agreement == 1.0 and stats.decided_positions == 3
    flipped_clear = torch.tensor([[1.00, 1.01], [5.0, 0.0], [0.0, 5.0], [0.0, 3.0]])
    stats = compare_outputs(flipped_clear, ref, tol)
    assert not stats.ok and stats.top1_agreement == pytest.approx(2 / 3)
    assert stats.decided_positions == 3


def test_to_dict_is_json_ready() -> None:
    import json

    stats = compare_outputs(torch.ones(3), torch.zeros(3), TOL)
    data = stats.to_dict()
    assert json.loads(json.dumps(data))["mismatch_fraction"] == 1.0
