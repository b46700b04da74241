"""Configuration: training configs and their builder, tasks, evaluation settings and modes.

PYTEST_DONT_REWRITE

Everything here is standard library only, so ``import pytest_modeltiers.config`` never pays for
torch; the plugin can resolve ``--task`` and read configs before any model is loaded.
"""

from __future__ import annotations

from pytest_modeltiers.config.builder import PRESET_NAMES, TrainingConfigBuilder
from pytest_modeltiers.config.eval_config import EvalConfig, build_eval_config, build_task_spec
from pytest_modeltiers.config.modes import MODE_NAMES, build_configs_for_mode
from pytest_modeltiers.config.task_spec import (
    TASK_TYPES,
    TaskSpec,
    builtin_task_names,
    get_builtin_task,
    resolve_task,
)
from pytest_modeltiers.config.training import TrainingConfig, compare_configs, format_config_diff

__all__ = [
    "MODE_NAMES",
    "PRESET_NAMES",
    "TASK_TYPES",
    "EvalConfig",
    "TaskSpec",
    "TrainingConfig",
    "TrainingConfigBuilder",
    "build_configs_for_mode",
    "build_eval_config",
    "build_task_spec",
    "builtin_task_names",
    "compare_configs",
    "format_config_diff",
    "get_builtin_task",
    "resolve_task",
]
