"""Stores: the experiment database and the model registry, SQLite files.

PYTEST_DONT_REWRITE

Importing this package costs the standard library only (sqlite3, json); pandas is imported by
the query methods that return DataFrames.
"""

from __future__ import annotations

from pytest_modeltiers.store.experiment_db import (
    RUN_STATUSES,
    ArtifactError,
    ExperimentDB,
    MetricNotFoundError,
    RunNotFoundError,
)
from pytest_modeltiers.store.metric_names import MetricNameError, canonical_metric_name
from pytest_modeltiers.store.model_registry import (
    MODEL_STATUSES,
    STAGE_ALIASES,
    CheckpointNotFoundError,
    DuplicateModelError,
    LineageError,
    ModelNotFoundError,
    ModelRegistry,
)
from pytest_modeltiers.store.sqlite_base import StoreError, StoreFileError, check_database_file

__all__ = [
    "MODEL_STATUSES",
    "RUN_STATUSES",
    "STAGE_ALIASES",
    "ArtifactError",
    "CheckpointNotFoundError",
    "DuplicateModelError",
    "ExperimentDB",
    "LineageError",
    "MetricNameError",
    "MetricNotFoundError",
    "ModelNotFoundError",
    "ModelRegistry",
    "RunNotFoundError",
    "StoreError",
    "StoreFileError",
    "canonical_metric_name",
    "check_database_file",
]
