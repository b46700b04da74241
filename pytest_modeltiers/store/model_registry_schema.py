"""The model registry's schema, version rules and input validation (``model_registry`` uses it).

PYTEST_DONT_REWRITE

Kept apart from the ``ModelRegistry`` class so the class reads as the API. The schema's own
constraints back the API's checks: foreign keys (tags and exports cascade with their model;
a parent or an alias target cannot be deleted from under them), ``UNIQUE(name, version)``, a
``CHECK`` on the status and on self-parenting, and triggers refusing an alias that points at
another model name's version. Released migrations are frozen: add a new function instead.
"""

from __future__ import annotations

import math
import operator
import re
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.store.metric_names import resolve_metric_name, warn_old_spellings
from pytest_modeltiers.store.sqlite_base import StoreError, StoreSchema

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_MAX_LINEAGE_DEPTH",
    "MODEL_STATUSES",
    "SCHEMA",
    "STAGE_ALIASES",
    "CheckpointNotFoundError",
    "DuplicateModelError",
    "LineageError",
    "ModelNotFoundError",
    "parse_version",
    "version_key",
]

#: ``PRAGMA application_id`` of a model registry ("MTRG").
APPLICATION_ID = 0x4D545247

MODEL_STATUSES = ("active", "retired")
#: Aliases that ``promote_model`` moves when they are used as a tag.
STAGE_ALIASES = ("production", "staging")
#: How far ``get_model_lineage`` walks before declaring the lineage broken.
DEFAULT_MAX_LINEAGE_DEPTH = 1000

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")

_MODEL_COLUMNS = (
    "model_id",
    "name",
    "version",
    "checkpoint_path",
    "task_type",
    "config_hash",
    "training_run_id",
    "parent_model_id",
    "metrics",
    "model_size_mb",
    "memory_req_gb",
    "metadata",
    "status",
    "created_at",
    "updated_at",
)
_EVENT_COLUMNS = (
    "event_id",
    "model_id",
    "name",
    "version",
    "action",
    "target",
    "previous_model_id",
    "actor",
    "reason",
    "created_at",
)


class ModelNotFoundError(StoreError, LookupError):
    """A model id (or name and version) names no registered model."""


class DuplicateModelError(StoreError, ValueError):
    """A model with this name and version is already registered."""


class CheckpointNotFoundError(StoreError, FileNotFoundError):
    """The checkpoint path given to ``register_model`` does not exist."""


class LineageError(StoreError, ValueError):
    """A parent link would create a cycle, or a stored lineage is broken."""


# -- schema ---------------------------------------------------------------------------------


def _migration_1_registry(conn: sqlite3.Connection) -> None:
    """Version 1: models, tags, exports, aliases, the audit log."""
    for statement in (
        """CREATE TABLE models (
            model_id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            checkpoint_path TEXT NOT NULL,
            task_type TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            training_run_id INTEGER,
            parent_model_id INTEGER REFERENCES models(model_id) ON DELETE RESTRICT,
            metrics TEXT NOT NULL DEFAULT '{}',
            model_size_mb REAL,
            memory_req_gb REAL,
            metadata TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (name, version),
            CHECK (parent_model_id IS NULL OR parent_model_id != model_id)
        )""",
        "CREATE INDEX idx_models_task ON models(task_type)",
        "CREATE INDEX idx_models_status ON models(status)",
        "CREATE INDEX idx_models_config_hash ON models(config_hash)",
        "CREATE INDEX idx_models_parent ON models(parent_model_id)",
        """CREATE TABLE model_tags (
            model_id INTEGER NOT NULL REFERENCES models(model_id) ON DELETE CASCADE,
            tag_name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (model_id, tag_name)
        )""",
        "CREATE INDEX idx_tags_name ON model_tags(tag_name)",
        """CREATE TABLE model_exports (
            export_id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_id INTEGER NOT NULL REFERENCES models(model_id) ON DELETE CASCADE,
            export_format TEXT NOT NULL,
            export_path TEXT,
            metadata TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_exports_model ON model_exports(model_id)",
        """CREATE TABLE model_aliases (
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            model_id INTEGER NOT NULL REFERENCES models(model_id) ON DELETE RESTRICT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (name, alias)
        )""",
        """CREATE TRIGGER model_aliases_same_name_insert BEFORE INSERT ON model_aliases
            WHEN (SELECT name FROM models WHERE model_id = NEW.model_id) IS NOT NEW.name
            BEGIN SELECT RAISE(ABORT, 'alias points at a version of another model name'); END""",
        """CREATE TRIGGER model_aliases_same_name_update BEFORE UPDATE ON model_aliases
            WHEN (SELECT name FROM models WHERE model_id = NEW.model_id) IS NOT NEW.name
            BEGIN SELECT RAISE(ABORT, 'alias points at a version of another model name'); END""",
        """CREATE TABLE model_events (
            event_id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_id INTEGER,
            name TEXT NOT NULL,
            version TEXT,
            action TEXT NOT NULL,
            target TEXT,
            previous_model_id INTEGER,
            actor TEXT,
            reason TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_events_name ON model_events(name, event_id)",
    ):
        conn.execute(statement)


SCHEMA = StoreSchema(
    kind="model registry",
    key="model_registry",
    default_name="model_registry.db",
    application_id=APPLICATION_ID,
    migrations=(_migration_1_registry,),
)


# -- versions -------------------------------------------------------------------------------


def parse_version(version: Any) -> tuple[int, int, int, str | None, str | None]:
    """``(major, minor, patch, prerelease, build)`` of a SemVer string, or ``StoreError``."""
    if not isinstance(version, str):
        raise StoreError(f"version must be a string like '1.0.0', got {version!r}")
    match = _SEMVER.match(version)
    if match is None:
        hint = ""
        if version[:1] in ("v", "V") and _SEMVER.match(version[1:]):
            hint = f" (drop the 'v': {version[1:]!r})"
        elif re.fullmatch(r"\d+(\.\d+)?", version):
            parts = version.split(".")
            hint = f" (write {'.'.join(parts + ['0'] * (3 - len(parts)))!r})"
        raise StoreError(
            f"version {version!r} is not a semantic version{hint}; use MAJOR.MINOR.PATCH with "
            "optional -prerelease and +build parts, for example '1.0.0' or '2.1.0-rc.1'"
        )
    major, minor, patch, pre, build = match.groups()
    return int(major), int(minor), int(patch), pre, build


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key giving SemVer precedence (build metadata ignored; a prerelease sorts before
    its release; numeric prerelease parts sort numerically and before alphanumeric ones)."""
    major, minor, patch, pre, _ = parse_version(version)
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


# -- validation helpers ---------------------------------------------------------------------


def _model_id(value: Any, what: str = "model id") -> int:
    if isinstance(value, bool):
        raise StoreError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise StoreError(
            f"{what} must be an integer, got {type(value).__name__} {value!r}"
        ) from None


def _text(value: Any, what: str, *, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise StoreError(
            f"{what} must be a non-empty string without surrounding spaces, got {value!r}"
        )
    if pattern is not None and not pattern.match(value):
        raise StoreError(f"{what} {value!r} is not valid{hint}")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string or None, got {type(value).__name__}")
    return value


def _optional_positive(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{what} must be a finite number or None, got {value!r}")
    if value < 0:
        raise StoreError(f"{what} must be >= 0, got {value!r}")
    return float(value)


def _metrics(metrics: Any) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise StoreError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    renamed: dict[str, str] = {}
    for name, value in metrics.items():
        key, old = resolve_metric_name(name, what="registry metric")
        if old is not None:
            renamed[old] = key
        if isinstance(value, bool):
            raise StoreError(f"metric {key!r} is a bool ({value!r}); store a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise StoreError(
                f"metric {key!r} must be a number, got {type(value).__name__} {value!r}"
            ) from None
        if not math.isfinite(number):
            raise StoreError(
                f"metric {key!r} is {number}; a registered model carries finite metrics "
                "(evaluate it again, or leave the metric out)"
            )
        out[key] = number
    warn_old_spellings(renamed)
    return out


def _path_size_mb(path: Path) -> float:
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        total = path.stat().st_size
    return total / (1024 * 1024)


def _frame(records: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=list(columns))
