"""Stores: the experiment database (and, later, the model registry), SQLite files.

PYTEST_DONT_REWRITE

Importing this package costs the standard library only (sqlite3, json); pandas is imported by
the query methods that return DataFrames.
"""

from __future__ import annotations

from pytest_modeltiers.store.experiment_db import (
    RUN_STATUSES,
    ExperimentDB,
    MetricNotFoundError,
    RunNotFoundError,
)
from pytest_modeltiers.store.sqlite_base import StoreError, StoreFileError

__all__ = [
    "RUN_STATUSES",
    "ExperimentDB",
    "MetricNotFoundError",
    "RunNotFoundError",
    "StoreError",
    "StoreFileError",
]
