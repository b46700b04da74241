"""pytest-modeltiers: five tiers of PyTorch model validation as pytest suites.

Public names are importable from here; each is loaded on first use, so importing the package
(which every pytest run does through the plugin) costs no torch import.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_modeltiers import startup
from pytest_modeltiers.version import __version__ as __version__

# This package holds no user tests and raises its own assertion messages, so none of its modules
# needs rewriting: taking it off the list here, before pytest imports the plugin's modules,
# saves every run (with or without --model) recompiling them where bytecode is not cached.
startup.exempt_from_assertion_rewriting(startup.active_rewrite_hook(), (__name__,))

_EXPORTS = {
    "TaskSpec": "pytest_modeltiers.config.task_spec",
    "get_builtin_task": "pytest_modeltiers.config.task_spec",
    "builtin_task_names": "pytest_modeltiers.config.task_spec",
    "resolve_task": "pytest_modeltiers.config.task_spec",
    "TrainingConfig": "pytest_modeltiers.config.training",
    "compare_configs": "pytest_modeltiers.config.training",
    "TrainingConfigBuilder": "pytest_modeltiers.config.builder",
    "EvalConfig": "pytest_modeltiers.config.eval_config",
    "build_eval_config": "pytest_modeltiers.config.eval_config",
    "build_task_spec": "pytest_modeltiers.config.eval_config",
    "build_configs_for_mode": "pytest_modeltiers.config.modes",
    "ModelTiersError": "pytest_modeltiers.errors",
    "ModelSpecError": "pytest_modeltiers.errors",
    "UnsafeModelError": "pytest_modeltiers.errors",
    "TaskSpecError": "pytest_modeltiers.errors",
    "ConfigError": "pytest_modeltiers.errors",
    "AdapterError": "pytest_modeltiers.errors",
    "ModelTiersWarning": "pytest_modeltiers.errors",
    "LoadRequest": "pytest_modeltiers.models.loader",
    "LoadedModel": "pytest_modeltiers.models.loader",
    "load_model": "pytest_modeltiers.models.loader",
    "TaskAdapter": "pytest_modeltiers.models.adapters",
    "get_adapter": "pytest_modeltiers.models.adapters",
    "load_adapter": "pytest_modeltiers.models.adapters",
    "make_batch": "pytest_modeltiers.models.batches",
    "scan_model_file": "pytest_modeltiers.models.safety",
    "GistModel": "pytest_modeltiers.models.gist",
    "load_gist_model": "pytest_modeltiers.models.gist",
    "ExperimentDB": "pytest_modeltiers.store.experiment_db",
    "StoreError": "pytest_modeltiers.store.sqlite_base",
    "run_training": "pytest_modeltiers.training.run",
    "create_repro_bundle": "pytest_modeltiers.repro.bundle",
    "verify_repro_bundle": "pytest_modeltiers.repro.verify",
    "run_grid_sweep": "pytest_modeltiers.sweeps.runner",
    "run_sweep": "pytest_modeltiers.sweeps.runner",
    "get_runs_for_sweep": "pytest_modeltiers.sweeps.runner",
    "SweepResult": "pytest_modeltiers.sweeps.runner",
    "TrainingResults": "pytest_modeltiers.training.results",
    "load_model_weights": "pytest_modeltiers.training.checkpoints",
    "CheckpointError": "pytest_modeltiers.training.checkpoints",
    "CheckResult": "pytest_modeltiers.report",
    "HealthReport": "pytest_modeltiers.report",
    # tier 5: evaluation, baseline regression, reference profiles and drift
    "run_evaluation": "pytest_modeltiers.evaluation.held_out",
    "compare_models": "pytest_modeltiers.evaluation.regression",
    "compute_profile": "pytest_modeltiers.drift.distribution",
    "compute_dataset_profile": "pytest_modeltiers.drift.distribution",
    "ONNXExporter": "pytest_modeltiers.export.onnx_exporter",
    "compare_profiles": "pytest_modeltiers.drift.distribution",
    "log_profile_to_db": "pytest_modeltiers.drift.profile_io",
    # tier 5: retraining triggers, model registry, metrics engine
    "DriftTrigger": "pytest_modeltiers.triggers.manager",
    "PerformanceTrigger": "pytest_modeltiers.triggers.manager",
    "TimeTrigger": "pytest_modeltiers.triggers.manager",
    "DataVolumeTrigger": "pytest_modeltiers.triggers.manager",
    "CompositeTrigger": "pytest_modeltiers.triggers.manager",
    "RetrainingTriggerManager": "pytest_modeltiers.triggers.manager",
    "RetrainingReport": "pytest_modeltiers.triggers.manager",
    "evaluate_retraining": "pytest_modeltiers.triggers.manager",
    "get_conservative_config": "pytest_modeltiers.triggers.manager",
    "get_balanced_config": "pytest_modeltiers.triggers.manager",
    "get_aggressive_config": "pytest_modeltiers.triggers.manager",
    "ModelRegistry": "pytest_modeltiers.store.model_registry",
    "MetricsEngine": "pytest_modeltiers.evaluation.metrics_engine",
    # tier 4: export
    "export_model": "pytest_modeltiers.export.exporters",
    "create_export_bundle": "pytest_modeltiers.checks.export_bundle",
    "load_exported_model": "pytest_modeltiers.export.runtime",
    "ExportHealthChecker": "pytest_modeltiers.checks.export_health",
    "ExportHealthReport": "pytest_modeltiers.checks.export_health",
    "run_export_validation": "pytest_modeltiers.checks.export_validation",
}

__all__ = [
    "AdapterError",
    "CheckResult",
    "CheckpointError",
    "CompositeTrigger",
    "ConfigError",
    "DataVolumeTrigger",
    "DriftTrigger",
    "EvalConfig",
    "ExperimentDB",
    "ExportHealthChecker",
    "ExportHealthReport",
    "GistModel",
    "HealthReport",
    "LoadRequest",
    "LoadedModel",
    "MetricsEngine",
    "ModelRegistry",
    "ModelSpecError",
    "ModelTiersError",
    "ModelTiersWarning",
    "ONNXExporter",
    "PerformanceTrigger",
    "RetrainingReport",
    "RetrainingTriggerManager",
    "StoreError",
    "SweepResult",
    "TaskAdapter",
    "TaskSpec",
    "TaskSpecError",
    "TimeTrigger",
    "TrainingConfig",
    "TrainingConfigBuilder",
    "TrainingResults",
    "UnsafeModelError",
    "build_configs_for_mode",
    "build_eval_config",
    "build_task_spec",
    "builtin_task_names",
    "compare_configs",
    "compare_models",
    "compare_profiles",
    "compute_dataset_profile",
    "compute_profile",
    "create_export_bundle",
    "create_repro_bundle",
    "evaluate_retraining",
    "export_model",
    "get_adapter",
    "get_aggressive_config",
    "get_balanced_config",
    "get_builtin_task",
    "get_conservative_config",
    "get_runs_for_sweep",
    "load_adapter",
    "load_exported_model",
    "load_gist_model",
    "load_model",
    "load_model_weights",
    "log_profile_to_db",
    "make_batch",
    "resolve_task",
    "run_evaluation",
    "run_export_validation",
    "run_grid_sweep",
    "run_sweep",
    "run_training",
    "scan_model_file",
    "verify_repro_bundle",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_modeltiers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from pytest_modeltiers.checks.export_bundle import create_export_bundle
    from pytest_modeltiers.checks.export_health import ExportHealthChecker, ExportHealthReport
    from pytest_modeltiers.checks.export_validation import run_export_validation
    from pytest_modeltiers.config.builder import TrainingConfigBuilder
    from pytest_modeltiers.config.eval_config import (
        EvalConfig,
        build_eval_config,
        build_task_spec,
    )
    from pytest_modeltiers.config.modes import build_configs_for_mode
    from pytest_modeltiers.config.task_spec import (
        TaskSpec,
        builtin_task_names,
        get_builtin_task,
        resolve_task,
    )
    from pytest_modeltiers.config.training import TrainingConfig, compare_configs
    from pytest_modeltiers.drift.distribution import (
        compare_profiles,
        compute_dataset_profile,
        compute_profile,
    )
    from pytest_modeltiers.drift.profile_io import log_profile_to_db
    from pytest_modeltiers.errors import (
        AdapterError,
        ConfigError,
        ModelSpecError,
        ModelTiersError,
        ModelTiersWarning,
        TaskSpecError,
        UnsafeModelError,
    )
    from pytest_modeltiers.evaluation.held_out import run_evaluation
    from pytest_modeltiers.evaluation.metrics_engine import MetricsEngine
    from pytest_modeltiers.evaluation.regression import compare_models
    from pytest_modeltiers.export.exporters import export_model
    from pytest_modeltiers.export.onnx_exporter import ONNXExporter
    from pytest_modeltiers.export.runtime import load_exported_model
    from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter, load_adapter
    from pytest_modeltiers.models.batches import make_batch
    from pytest_modeltiers.models.gist import GistModel, load_gist_model
    from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
    from pytest_modeltiers.models.safety import scan_model_file
    from pytest_modeltiers.report import CheckResult, HealthReport
    from pytest_modeltiers.repro.bundle import create_repro_bundle
    from pytest_modeltiers.repro.verify import verify_repro_bundle
    from pytest_modeltiers.store.experiment_db import ExperimentDB
    from pytest_modeltiers.store.model_registry import ModelRegistry
    from pytest_modeltiers.store.sqlite_base import StoreError
    from pytest_modeltiers.sweeps.runner import (
        SweepResult,
        get_runs_for_sweep,
        run_grid_sweep,
        run_sweep,
    )
    from pytest_modeltiers.training.checkpoints import CheckpointError, load_model_weights
    from pytest_modeltiers.training.results import TrainingResults
    from pytest_modeltiers.training.run import run_training
    from pytest_modeltiers.triggers.manager import (
        CompositeTrigger,
        DataVolumeTrigger,
        DriftTrigger,
        PerformanceTrigger,
        RetrainingReport,
        RetrainingTriggerManager,
        TimeTrigger,
        evaluate_retraining,
        get_aggressive_config,
        get_balanced_config,
        get_conservative_config,
    )
