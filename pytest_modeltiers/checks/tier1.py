"""Tier 1 checks: is the model wired right? (One import path for the suite and for users.)

PYTEST_DONT_REWRITE

Each check is a plain function returning a ``CheckResult`` (``check_name`` is the built-in test
name, tier 1). They live in modules by concern; this module gathers them.
"""

from __future__ import annotations

from pytest_modeltiers.checks.tier1_gradients import check_gradient_flow
from pytest_modeltiers.checks.tier1_init import check_parameter_initialization
from pytest_modeltiers.checks.tier1_masking import (
    check_causal_masking,
    check_padding_invariance,
    takes_attention_mask,
)
from pytest_modeltiers.checks.tier1_outputs import (
    check_batch_independence,
    check_input_immutability,
    check_output_finite,
    check_output_stability,
    check_shape_robustness,
)
from pytest_modeltiers.checks.tier1_resources import (
    check_inference_speed,
    check_memory_footprint,
    check_memory_retention,
)

__all__ = [
    "check_batch_independence",
    "check_causal_masking",
    "check_gradient_flow",
    "check_inference_speed",
    "check_input_immutability",
    "check_memory_footprint",
    "check_memory_retention",
    "check_output_finite",
    "check_output_stability",
    "check_padding_invariance",
    "check_parameter_initialization",
    "check_shape_robustness",
    "takes_attention_mask",
]
