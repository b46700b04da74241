"""The experiment trackers a ``TrainingConfig`` asks for, as Lightning loggers.

PYTEST_DONT_REWRITE

``TrainingConfig``'s tracking fields each name a logger: ``use_wandb`` (with
``wandb_project``, ``wandb_entity``) a ``WandbLogger``, ``mlflow_tracking_uri`` (with
``mlflow_experiment``) an ``MLFlowLogger``, ``tensorboard_dir`` a ``TensorBoardLogger``; a
``CSVLogger`` writing ``<run_dir>/logs/metrics.csv`` is always there. ``check_trackers``
refuses a requested tracker whose package is missing, before anything trains, naming the
package and the extra that installs it, so a request is never dropped without a word.

The loggers are driven through their public ``log_hyperparams`` / ``log_metrics`` / ``save`` /
``finalize`` methods, so any loop can use them: ``run_training`` hands them to Lightning's
``Trainer`` (which finalizes them) and to ``MetricsEngine``, which writes each epoch's row,
its alerts and drift included, through every logger at ``step=epoch``. Lightning and the
trackers' packages are imported inside the functions that build loggers, only when a run
asks for them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.extras import install_command

if TYPE_CHECKING:
    from pytest_modeltiers.config.training import TrainingConfig

__all__ = [
    "CSV_SUBDIR",
    "TRACKERS",
    "Tracker",
    "build_loggers",
    "check_trackers",
    "close_loggers",
    "open_loggers",
    "requested_trackers",
]

#: Folder of the run directory holding the CSV logger's ``metrics.csv`` and ``hparams.yaml``.
CSV_SUBDIR = "logs"
#: The extra that installs every tracker's package.
TRACKING_EXTRA = "tracking"


@dataclass(frozen=True)
class Tracker:
    """One experiment tracker: the config field that asks for it and the package it needs."""

    name: str
    field: str
    module: str
    package: str

    def requested(self, config: TrainingConfig) -> bool:
        value = getattr(config, self.field)
        return value is True if self.field.startswith("use_") else value is not None

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


TRACKERS: tuple[Tracker, ...] = (
    Tracker("wandb", "use_wandb", "wandb", "wandb"),
    Tracker("mlflow", "mlflow_tracking_uri", "mlflow", "mlflow-skinny"),
    Tracker("tensorboard", "tensorboard_dir", "tensorboard", "tensorboard"),
)


def requested_trackers(config: TrainingConfig) -> list[Tracker]:
    """The trackers ``config`` asks for, in ``TRACKERS`` order (CSV is not one: it is always on)."""
    return [tracker for tracker in TRACKERS if tracker.requested(config)]


def check_trackers(config: TrainingConfig) -> None:
    """Raise ``ConfigError`` naming each requested tracker whose package is not installed."""
    missing = [tracker for tracker in requested_trackers(config) if not tracker.installed()]
    if not missing:
        return
    what = "; ".join(
        f"{tracker.field}={getattr(config, tracker.field)!r} needs the {tracker.package} "
        "package, which is not installed"
        for tracker in missing
    )
    fields = " / ".join(
        f"{t.field}={'False' if t.field.startswith('use_') else 'None'}" for t in missing
    )
    raise ConfigError(
        f"{what}. Install it with {install_command([TRACKING_EXTRA])} (the "
        f"[{TRACKING_EXTRA}] extra), or set {fields} to train without it"
    )


def build_loggers(config: TrainingConfig, run_dir: str | Path, run_name: str) -> list[Any]:
    """The Lightning loggers of ``config``: CSV first, then each requested tracker.

    Call ``check_trackers`` first; a logger whose construction fails raises here, before
    training. The hyperparameters (``config.to_dict()``) are logged to each one.
    """
    check_trackers(config)
    # Lightning only for a real run: it costs seconds to import.
    from lightning.pytorch.loggers import (
        CSVLogger,
        MLFlowLogger,
        TensorBoardLogger,
        WandbLogger,
    )

    directory = Path(run_dir)
    loggers: list[Any] = [CSVLogger(save_dir=str(directory), name=CSV_SUBDIR, version="")]
    if config.use_wandb:
        loggers.append(
            WandbLogger(
                name=run_name,
                project=config.wandb_project,
                entity=config.wandb_entity,
                save_dir=os.environ.get("WANDB_DIR") or str(directory),
            )
        )
    if config.mlflow_tracking_uri is not None:
        loggers.append(
            MLFlowLogger(
                experiment_name=config.mlflow_experiment,
                run_name=run_name,
                tracking_uri=config.mlflow_tracking_uri,
            )
        )
    if config.tensorboard_dir is not None:
        loggers.append(
            TensorBoardLogger(
                save_dir=config.tensorboard_dir,
                name=run_name,
                version=directory.name,
                default_hp_metric=False,
            )
        )
    hyperparameters = config.to_dict()
    try:
        for logger in loggers:  # starts each tracker's run: a failure is seen before training
            logger.log_hyperparams(hyperparameters)
    except BaseException as exc:
        _close_after(exc, loggers)
        raise
    return loggers


def close_loggers(loggers: Sequence[Any], status: str) -> None:
    """Flush and finalize each logger (``status`` is ``success`` or ``failed``) and finish the
    W&B run a ``WandbLogger`` started, so the next run in this process starts its own. Every
    logger is closed even when one fails; the first failure is raised afterwards."""
    errors: list[Exception] = []
    for logger in loggers:
        try:
            logger.finalize(status)
        except Exception as exc:
            errors.append(exc)
        if type(logger).__name__ == "WandbLogger":
            run = getattr(logger, "_experiment", None)
            if run is not None:
                try:
                    run.finish(exit_code=0 if status == "success" else 1)
                except Exception as exc:
                    errors.append(exc)
    if errors:
        raise errors[0]


def _close_after(failure: BaseException, loggers: Sequence[Any]) -> None:
    """Close ``loggers`` as failed; a closing error is added to ``failure`` as a note."""
    try:
        close_loggers(loggers, "failed")
    except Exception as exc:
        failure.add_note(f"closing the tracking loggers failed too: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def open_loggers(config: TrainingConfig, run_dir: str | Path, run_name: str) -> Iterator[list[Any]]:
    """``build_loggers`` as a context (``run_training`` uses it, and so can a loop without
    Lightning's Trainer): the loggers are finalized on the way out, as ``failed`` when the
    block raised."""
    loggers = build_loggers(config, run_dir, run_name)
    try:
        yield loggers
    except BaseException as exc:
        _close_after(exc, loggers)
        raise
    close_loggers(loggers, "success")
