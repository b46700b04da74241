"""Optuna's Lightning pruning callback, stopping a pruned run cleanly.

PYTEST_DONT_REWRITE

Imports Optuna's Lightning integration (and so Lightning): only a sweep that trains with
``run_training`` imports this module.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna_integration import PyTorchLightningPruningCallback

__all__ = ["LIGHTNING_METRICS", "StopWhenPruned"]

#: The metrics ``run_training`` logs at each validation, which the pruner can watch.
LIGHTNING_METRICS = ("val/loss", "val/accuracy", "train/loss")


class StopWhenPruned(PyTorchLightningPruningCallback):
    """Reports the watched metric to the trial after each validation; when the pruner says stop,
    ends training after this epoch instead of raising through Lightning, so the run's
    checkpoint and metrics are recorded whole, and keeps the ``TrialPruned`` in ``pruned``."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.pruned: optuna.TrialPruned | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.pruned is not None:
            return
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned as exc:
            self.pruned = exc
            trainer.should_stop = True
