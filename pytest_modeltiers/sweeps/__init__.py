"""Hyperparameter sweeps on Optuna: grid, random and TPE search over dotted config keys, each
trial a run of the experiment database, the study shared by any number of worker processes.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from pytest_modeltiers.sweeps.runner import (
    SweepResult,
    TrialRecord,
    get_runs_for_sweep,
    run_grid_sweep,
    run_sweep,
    sweep_result,
)

__all__ = [
    "SweepResult",
    "TrialRecord",
    "get_runs_for_sweep",
    "run_grid_sweep",
    "run_sweep",
    "sweep_result",
]
