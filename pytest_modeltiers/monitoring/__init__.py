"""Tier 5's public names in one place: drift, retraining triggers, the metrics engine.

PYTEST_DONT_REWRITE

The code lives in ``pytest_modeltiers.drift``, ``pytest_modeltiers.triggers`` and
``pytest_modeltiers.evaluation``; this module re-exports their public names so that
``from pytest_modeltiers.monitoring import compare_signals`` keeps working. Importing it
imports numpy and scipy; ``import pytest_modeltiers`` does not import it.
"""

from __future__ import annotations

from pytest_modeltiers.drift.distribution import (
    Profile,
    ProfileError,
    compare_profiles,
    compute_profile,
    profile_signals,
)
from pytest_modeltiers.drift.profile_io import (
    DEFAULT_PROFILE_NAME,
    load_profile,
    load_profile_from_db,
    log_profile_to_db,
    resolve_reference_profile,
    save_profile,
)
from pytest_modeltiers.drift.statistics import (
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
from pytest_modeltiers.drift.verdicts import (
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
from pytest_modeltiers.evaluation.metrics_engine import (
    Alert,
    AlertRules,
    MetricsEngine,
    RegressionRule,
    ThresholdRule,
)
from pytest_modeltiers.triggers.manager import (
    CompositeTrigger,
    DataVolumeTrigger,
    DriftTrigger,
    PerformanceTrigger,
    RetrainingPolicy,
    RetrainingReport,
    RetrainingTriggerManager,
    TimeTrigger,
    TriggerDetail,
    build_trigger,
    drift_metrics_from_report,
    evaluate_retraining,
    gate_failed,
    get_aggressive_config,
    get_balanced_config,
    get_conservative_config,
    load_policy,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_DRIFT_SHARE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PROFILE_NAME",
    "DEFAULT_THRESHOLDS",
    "LARGE_SAMPLE_SIZE",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "Alert",
    "AlertRules",
    "CompositeTrigger",
    "DataVolumeTrigger",
    "DriftInputError",
    "DriftReport",
    "DriftTrigger",
    "MetricsEngine",
    "PerformanceTrigger",
    "Profile",
    "ProfileError",
    "RegressionRule",
    "RetrainingPolicy",
    "RetrainingReport",
    "RetrainingTriggerManager",
    "SignalDrift",
    "StatResult",
    "ThresholdRule",
    "TimeTrigger",
    "TriggerDetail",
    "adjust_p_values",
    "build_trigger",
    "chi_square_test",
    "choose_method",
    "compare_profiles",
    "compare_signal",
    "compare_signals",
    "compute_profile",
    "drift_metrics_from_report",
    "evaluate_retraining",
    "gate_failed",
    "get_aggressive_config",
    "get_balanced_config",
    "get_conservative_config",
    "infer_kind",
    "jensen_shannon_distance",
    "ks_test",
    "load_policy",
    "load_profile",
    "load_profile_from_db",
    "log_profile_to_db",
    "profile_signals",
    "proportion_test",
    "psi",
    "psi_level",
    "resolve_reference_profile",
    "save_profile",
    "wasserstein_normalized",
]
