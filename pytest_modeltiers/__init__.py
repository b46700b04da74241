"""pytest-modeltiers: five tiers of PyTorch model validation as pytest suites.

Public names are importable from here; each is loaded on first use, so importing the package
(which every pytest run does through the plugin) costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
    "ExperimentDB": "pytest_modeltiers.store.experiment_db",
    "StoreError": "pytest_modeltiers.store.sqlite_base",
    "CheckResult": "pytest_modeltiers.report",
    "HealthReport": "pytest_modeltiers.report",
}

__all__ = [
    "AdapterError",
    "CheckResult",
    "ConfigError",
    "EvalConfig",
    "ExperimentDB",
    "HealthReport",
    "LoadRequest",
    "LoadedModel",
    "ModelSpecError",
    "ModelTiersError",
    "ModelTiersWarning",
    "StoreError",
    "TaskAdapter",
    "TaskSpec",
    "TaskSpecError",
    "TrainingConfig",
    "TrainingConfigBuilder",
    "UnsafeModelError",
    "build_configs_for_mode",
    "build_eval_config",
    "build_task_spec",
    "builtin_task_names",
    "compare_configs",
    "get_adapter",
    "get_builtin_task",
    "load_adapter",
    "load_model",
    "make_batch",
    "resolve_task",
    "scan_model_file",
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
    from pytest_modeltiers.errors import (
        AdapterError,
        ConfigError,
        ModelSpecError,
        ModelTiersError,
        ModelTiersWarning,
        TaskSpecError,
        UnsafeModelError,
    )
    from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter, load_adapter
    from pytest_modeltiers.models.batches import make_batch
    from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
    from pytest_modeltiers.models.safety import scan_model_file
    from pytest_modeltiers.report import CheckResult, HealthReport
    from pytest_modeltiers.store.experiment_db import ExperimentDB
    from pytest_modeltiers.store.sqlite_base import StoreError
