"""The data of a training run: the task's shipped dataset, or the user's Dataset or DataLoader.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from pytest_modeltiers.errors import ConfigError

if TYPE_CHECKING:
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.config.training import TrainingConfig

__all__ = ["RunData", "make_loader", "resolve_data"]

Source = Dataset[Any] | DataLoader[Any]


@dataclass(frozen=True)
class RunData:
    """What a run trains and validates on; ``source`` says where it came from."""

    train: Source
    validation: Source | None
    source: str

    @property
    def user_loaders(self) -> bool:
        """True when a DataLoader came from the user (Lightning then manages its sampler)."""
        return isinstance(self.train, DataLoader) or isinstance(self.validation, DataLoader)


def _capped(dataset: Dataset[Any], limit: int | None) -> Dataset[Any]:
    if limit is None:
        return dataset
    length = _length(dataset)
    if length is None or length <= limit:
        return dataset
    return Subset(dataset, range(limit))


def _length(dataset: Dataset[Any]) -> int | None:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_source(value: Any, what: str) -> Source:
    if isinstance(value, (Dataset, DataLoader)):
        return value
    raise ConfigError(
        f"{what} must be a torch Dataset or DataLoader, got {type(value).__name__}. Pass "
        "dataset=None for the task's shipped dataset, a Dataset, a DataLoader, or "
        '{"train": ..., "validation": ...}.'
    )


def resolve_data(
    dataset: Any, task: TaskSpec, config: TrainingConfig, eval_config: EvalConfig | None = None
) -> RunData:
    """The run's training and validation sources."""
    if dataset is None:
        from pytest_modeltiers.datasets import task_dataset

        train = task_dataset(task, "train", size=config.max_train_samples, seed=0)
        val_size = config.max_val_samples
        if eval_config is not None and val_size is None:
            val_size = min(eval_config.max_eval_examples, 64)
        validation = task_dataset(task, "validation", size=val_size, seed=0)
        return RunData(train, validation, f"the shipped {task.name} dataset")
    if isinstance(dataset, Mapping):
        unknown = sorted(set(dataset) - {"train", "validation", "val"})
        if unknown or "train" not in dataset:
            raise ConfigError(
                f"a dataset mapping needs a 'train' key and may have 'validation' (or 'val'); "
                f"got keys {sorted(dataset)}"
            )
        train_source = _check_source(dataset["train"], "dataset['train']")
        val_value = dataset.get("validation", dataset.get("val"))
        val_source = None if val_value is None else _check_source(val_value, "the validation data")
        if isinstance(train_source, Dataset):
            train_source = _capped(train_source, config.max_train_samples)
        if isinstance(val_source, Dataset):
            val_source = _capped(val_source, config.max_val_samples)
        return RunData(train_source, val_source, "the given train/validation data")
    source = _check_source(dataset, "dataset")
    if isinstance(source, DataLoader):
        return RunData(source, None, "the given DataLoader")
    length = _length(source)
    if config.validation_split == 0 or length is None:
        return RunData(_capped(source, config.max_train_samples), None, "the given Dataset")
    n_val = max(1, round(length * float(config.validation_split)))
    if n_val >= length:
        raise ConfigError(
            f"validation_split={config.validation_split} leaves no training examples out of "
            f"{length}; lower it or pass more data"
        )
    order = torch.randperm(length, generator=torch.Generator().manual_seed(config.random_seed))
    val_idx, train_idx = order[:n_val].tolist(), order[n_val:].tolist()
    return RunData(
        _capped(Subset(source, train_idx), config.max_train_samples),
        _capped(Subset(source, val_idx), config.max_val_samples),
        f"the given Dataset split {1 - config.validation_split:g}/{config.validation_split:g}",
    )


def make_loader(
    source: Source,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> DataLoader[Any]:
    """A loader for ``source``; a user's DataLoader is returned unchanged."""
    if isinstance(source, DataLoader):
        return source
    sampler: DistributedSampler[Any] = DistributedSampler(
        source, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
    )
    return DataLoader(source, batch_size=batch_size, sampler=sampler, num_workers=0)
