"""The default trial of a sweep: train the model a job config names, with ``run_training``.

PYTEST_DONT_REWRITE

A job config is ``modeltiers train``'s: ``model_file`` and the other ``JOB_KEYS`` plus any
``TrainingConfig`` field. The model file is scanned and loaded once per sweep; each trial
builds a fresh model from it with the trial's settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.config.eval_config import EvalConfig
from pytest_modeltiers.config.training import FIELD_NAMES, TrainingConfig
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.training.job import JOB_DEFAULTS, eval_block, job_dataset, task_options

if TYPE_CHECKING:
    from pytest_modeltiers.store.experiment_db import ExperimentDB
    from pytest_modeltiers.training.results import TrainingResults

__all__ = ["FIXED_KEYS", "TrainJob"]

#: Settings the sweep reads once, when it loads the model and its data: not sweepable here.
FIXED_KEYS = (
    "model_file",
    "model_path",
    "trust_model",
    "train_file",
    "validation_file",
    "task_name",
    "vocab_size",
    "max_seq_len",
    "use_gpu",
)
_TYPES: dict[str, type] = {
    "model_file": str,
    "model_path": str,
    "trust_model": bool,
    "eval": dict,
    "train_file": str,
    "validation_file": str,
    "output_dir": str,
    "use_gpu": bool,
}


class TrainJob:
    """A job config's model, loaded once, and a ``run_training`` call per trial."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        for key, kind in _TYPES.items():
            value = base.get(key)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}")
        if bool(base.get("model_file")) == bool(base.get("model_path")):
            raise ConfigError("name the model with exactly one of model_file or model_path")
        self.base = dict(base)
        path = Path(str(base.get("model_file") or base.get("model_path")))
        if not path.is_file():
            raise ConfigError(
                f"model_file {path} does not exist (paths are relative to {Path.cwd()})"
            )
        self.check(self.base)  # every field rule, before the model file runs
        from pytest_modeltiers.models.loader import LoadRequest, load_model

        self.loaded = load_model(
            LoadRequest(
                spec=str(path),
                rootdir=Path.cwd(),
                task=base.get("task_name"),
                task_options=task_options(base),
                trust=bool(base.get("trust_model", False)),
            )
        )
        self.dataset = job_dataset(self.base, self.loaded.task)
        self.accelerator = "auto" if base.get("use_gpu", True) else "cpu"

    @staticmethod
    def check_swept(keys: Sequence[str]) -> None:
        """Refuse sweeping what is loaded once (the model, its task, its data)."""
        fixed = [key for key in keys if key.split(".")[0] in FIXED_KEYS]
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} chooses the model or its data, which a sweep loads once; "
                "run one sweep per model, or pass a run_fn that loads the model itself"
            )

    def check(self, config: Mapping[str, Any]) -> tuple[TrainingConfig, EvalConfig]:
        """The run's configs; ``ConfigError`` naming every bad value."""
        task = getattr(getattr(self, "loaded", None), "task", None)
        fields = {**JOB_DEFAULTS, **{k: v for k, v in config.items() if k in FIELD_NAMES}}
        fields["checkpoint_dir"] = str(config.get("output_dir") or "sweep_output")
        if task is not None:
            fields.setdefault("task_name", task.name)
        training = TrainingConfig.from_dict(fields)
        task_name = task.name if task is not None else training.task_name
        max_seq_len = task.max_seq_len if task is not None else None
        block = eval_block(config, task_name, training.batch_size, max_seq_len)
        return training, EvalConfig.from_dict(block)

    def run(
        self,
        config: Mapping[str, Any],
        *,
        db: ExperimentDB,
        run_name: str,
        run_fields: Mapping[str, Any],
        callbacks: Sequence[Any] = (),
    ) -> TrainingResults:
        """Train a fresh model with ``config``, recorded in ``db`` as run ``run_name``."""
        from pytest_modeltiers.training.run import run_training

        training, evaluation = self.check({**config, "run_name": run_name})
        return run_training(
            self.loaded.new_model(),
            self.loaded.adapter,
            training,
            self.loaded.task,
            evaluation,
            db=db,
            dataset=self.dataset,
            accelerator=self.accelerator,
            progress_bar=False,
            run_fields=run_fields,
            extra_callbacks=callbacks,
        )

    def describe(self) -> str:
        return f"{self.loaded.name} on {self.loaded.task.name}"
