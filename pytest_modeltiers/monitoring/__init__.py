"""Monitoring: drift statistics and verdicts (tier 5).

PYTEST_DONT_REWRITE

Importing this package imports numpy and scipy; ``import pytest_modeltiers`` does not import it.
"""

from __future__ import annotations

from pytest_modeltiers.monitoring.drift import (
    DEFAULT_ALPHA,
    DEFAULT_DRIFT_SHARE,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_THRESHOLDS,
    LARGE_SAMPLE_SIZE,
    DriftReport,
    SignalDrift,
    adjust_p_values,
    choose_method,
    compare_signal,
    compare_signals,
    infer_kind,
)
from pytest_modeltiers.monitoring.drift_stats import (
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    DriftInputError,
    StatResult,
    chi_square_test,
    jensen_shannon_distance,
    ks_test,
    proportion_test,
    psi,
    psi_level,
    wasserstein_normalized,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_DRIFT_SHARE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_THRESHOLDS",
    "LARGE_SAMPLE_SIZE",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "DriftInputError",
    "DriftReport",
    "SignalDrift",
    "StatResult",
    "adjust_p_values",
    "chi_square_test",
    "choose_method",
    "compare_signal",
    "compare_signals",
    "infer_kind",
    "jensen_shannon_distance",
    "ks_test",
    "proportion_test",
    "psi",
    "psi_level",
    "wasserstein_normalized",
]
