"""What a training job's JSON config means beyond ``TrainingConfig``'s own fields: shared by
``modeltiers train`` and the default trial of a sweep, which read the same keys.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_modeltiers.errors import ConfigError

__all__ = ["JOB_DEFAULTS", "eval_block", "job_dataset", "task_options"]

#: A short run unless the config says otherwise.
JOB_DEFAULTS: dict[str, Any] = {"epochs": 1, "batch_size": 2, "learning_rate": 5e-4}


def task_options(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``--task-option`` equivalents of the config's ``vocab_size`` and ``max_seq_len``."""
    options = []
    if data.get("vocab_size") is not None:
        options.append(f"vocab_size={data['vocab_size']}")
    if "max_seq_len" in data:
        options.append(f"input_schema.max_seq_len={data['max_seq_len']}")
    return tuple(options)


def eval_block(
    data: Mapping[str, Any], task_name: str, batch_size: int, max_seq_len: int | None
) -> dict[str, Any]:
    """The config's ``eval`` block with the defaults that depend on the task and the run."""
    block = dict(data.get("eval") or {})
    block.setdefault("dataset_id", f"{task_name}_v1")
    block.setdefault("batch_size", max(2, batch_size))
    if max_seq_len:
        block.setdefault("max_seq_length", max_seq_len)
    return block


def job_dataset(data: Mapping[str, Any], task: Any) -> Any:
    """The config's ``train_file`` (and ``validation_file``) loaded for ``task``; None for the
    task's shipped data."""
    if not data.get("train_file"):
        if data.get("validation_file"):
            raise ConfigError("validation_file needs train_file (the shipped data has its own)")
        return None
    from pytest_modeltiers.datasets import load_dataset_file

    train = load_dataset_file(str(data["train_file"]), task)
    if not data.get("validation_file"):
        return train
    return {"train": train, "validation": load_dataset_file(str(data["validation_file"]), task)}
