"""Named quick-start modes: one call returns a matching training config, task and evaluation.

PYTEST_DONT_REWRITE

The task is derived from the training config (``build_task_spec``), so vocabulary and
sequence length always agree: a task left at another vocabulary would feed a small model
out-of-range token ids.
"""

from __future__ import annotations

from typing import Any

from pytest_modeltiers.config._util import did_you_mean
from pytest_modeltiers.config.eval_config import EvalConfig, build_task_spec
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.config.training import TrainingConfig
from pytest_modeltiers.errors import ConfigError

__all__ = ["MODE_NAMES", "build_configs_for_mode"]

_MODES: dict[str, dict[str, Any]] = {
    "FAST_DEV": {
        "epochs": 1,
        "batch_size": 2,
        "vocab_size": 101,
        "max_seq_len": 64,
        "learning_rate": 5e-4,
    },
    "STANDARD_EXPERIMENT": {
        "epochs": 3,
        "batch_size": 8,
        "vocab_size": 50257,
        "max_seq_len": 128,
        "learning_rate": 1e-4,
    },
    "ABLATION_SWEEP": {
        "epochs": 2,
        "batch_size": 4,
        "vocab_size": 1000,
        "max_seq_len": 128,
        "learning_rate": 2e-4,
    },
}

MODE_NAMES: tuple[str, ...] = tuple(_MODES)
_MODE_TASK = "lm_tiny"
_MODE_MAX_EVAL_EXAMPLES = 16


def build_configs_for_mode(mode: str) -> tuple[TrainingConfig, TaskSpec, EvalConfig]:
    """Return ``(training_config, task_spec, eval_config)`` for a mode (case-insensitive).

    Hyphens and spaces count as underscores, so ``"fast-dev"`` is ``FAST_DEV``.
    """
    if not isinstance(mode, str):
        raise ConfigError(f"mode must be a string, one of {', '.join(MODE_NAMES)} (got {mode!r})")
    key = mode.strip().upper().replace("-", "_").replace(" ", "_")
    if key not in _MODES:
        raise ConfigError(
            f"unknown mode {mode!r}{did_you_mean(key, MODE_NAMES)}; modes: {', '.join(MODE_NAMES)}"
        )
    training = TrainingConfig(task_name=_MODE_TASK, notes=f"mode {key}", **_MODES[key])
    task = build_task_spec(training)
    evaluation = EvalConfig(
        dataset_id=f"{_MODE_TASK}_v1",
        split="validation",
        max_eval_examples=_MODE_MAX_EVAL_EXAMPLES,
        batch_size=max(2, training.batch_size),
        num_workers=0,
        max_seq_length=training.max_seq_len,
        eval_interval_steps=100,
        eval_on_start=True,
    )
    return training, task, evaluation
