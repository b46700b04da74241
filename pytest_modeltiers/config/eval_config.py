"""``EvalConfig`` and the functions that derive evaluation settings from a training config.

PYTEST_DONT_REWRITE

``EvalConfig`` is frozen, so everything an evaluation depends on is one of its fields
(attributes attached ad hoc would hide it).
``build_task_spec`` and ``build_eval_config`` take their sequence length (and vocabulary, when
the training config sets one) from the ``TrainingConfig``, so the task, the evaluation and the
model never disagree about input sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pytest_modeltiers.config._util import (
    Rule,
    bool_rule,
    bulleted,
    did_you_mean,
    int_rule,
    str_rule,
)
from pytest_modeltiers.config.limits import LIMITS
from pytest_modeltiers.config.task_spec import TaskSpec, resolve_task
from pytest_modeltiers.config.training import TrainingConfig
from pytest_modeltiers.errors import ConfigError

__all__ = ["EvalConfig", "build_eval_config", "build_task_spec"]

_DEFAULT_MAX_EVAL_EXAMPLES = 512


@dataclass(frozen=True)
class EvalConfig:
    """Settings of a held-out evaluation; validated on construction (``ConfigError``)."""

    dataset_id: str
    split: str = "validation"
    max_eval_examples: int = _DEFAULT_MAX_EVAL_EXAMPLES
    batch_size: int = 8
    num_workers: int = 0
    max_seq_length: int = 128
    eval_interval_steps: int = 100
    eval_on_start: bool = True

    def __post_init__(self) -> None:
        errors = [
            message
            for name, rule in _EVAL_RULES.items()
            if (message := rule(getattr(self, name))) is not None
        ]
        if errors:
            raise ConfigError(bulleted("invalid EvalConfig:", errors))

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        """Build from a mapping; ``dataset_id`` is required, unknown keys name the closest."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an eval config must be a mapping, got {type(data).__name__}")
        unknown = [key for key in data if key not in _EVAL_FIELDS]
        if unknown:
            details = ", ".join(f"{key!r}{did_you_mean(str(key), _EVAL_FIELDS)}" for key in unknown)
            raise ConfigError(f"unknown EvalConfig field(s): {details}")
        if "dataset_id" not in data:
            raise ConfigError("EvalConfig needs 'dataset_id' (for example 'lm_tiny_v1')")
        return cls(**dict(data))


_EVAL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EvalConfig))
_EVAL_RULES: dict[str, Rule] = {
    "dataset_id": str_rule("dataset_id"),
    "split": str_rule("split"),
    "max_eval_examples": int_rule("max_eval_examples", 1, maximum=LIMITS["max_eval_examples"]),
    "batch_size": int_rule("batch_size", 1, maximum=LIMITS["batch_size"]),
    "num_workers": int_rule("num_workers", 0, maximum=LIMITS["num_workers"]),
    "max_seq_length": int_rule("max_seq_length", 1, maximum=LIMITS["max_seq_length"]),
    "eval_interval_steps": int_rule(
        "eval_interval_steps", 1, maximum=LIMITS["eval_interval_steps"]
    ),
    "eval_on_start": bool_rule("eval_on_start"),
}


def build_eval_config(config: TrainingConfig) -> EvalConfig:
    """The evaluation that matches a training config.

    The dataset is ``eval_dataset_id`` or ``"<task_name>_v1"``; the example cap is
    ``max_val_samples`` or 512; batch size and sequence length come from the training config.
    """
    return EvalConfig(
        dataset_id=config.eval_dataset_id or f"{config.task_name}_v1",
        split="validation",
        max_eval_examples=config.max_val_samples or _DEFAULT_MAX_EVAL_EXAMPLES,
        batch_size=config.batch_size,
        num_workers=0,
        max_seq_length=config.max_seq_len,
        eval_interval_steps=100,
        eval_on_start=True,
    )


def build_task_spec(config: TrainingConfig) -> TaskSpec:
    """The task named by ``config.task_name`` (a built-in or a .json path), sized to agree.

    Text tasks take ``max_seq_len`` from the training config (seq2seq tasks also their target
    length), and ``vocab_size`` when the training config sets one; with ``vocab_size`` None the
    task keeps whatever it had (the built-ins have none: it is read from the model).
    """
    task = resolve_task(config.task_name)
    if task.is_vision:
        return task
    schema: dict[str, Any] = {"max_seq_len": config.max_seq_len}
    if task.family == "seq2seq":
        schema["max_target_len"] = config.max_seq_len
    task = task.merged({"input_schema": schema})
    if config.vocab_size is not None:
        task = task.with_vocab_size(config.vocab_size)
    return task
