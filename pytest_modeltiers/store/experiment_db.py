"""``ExperimentDB``: runs, params, metrics, artifacts, profiles and comparisons in one SQLite file.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

from pytest_modeltiers.atomic import atomic_write
from pytest_modeltiers.digest import file_sha256_and_size
from pytest_modeltiers.store.sqlite_base import (
    DEFAULT_BUSY_TIMEOUT_S,
    SQLiteStore,
    StoreError,
    StoreSchema,
    dumps_json,
    loads_json,
    metric_value,
    utc_now,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RUN_FIELDS",
    "RUN_STATUSES",
    "ArtifactError",
    "ExperimentDB",
    "MetricNotFoundError",
    "RunNotFoundError",
    "qualify_metric_name",
]

#: ``PRAGMA application_id`` of an experiment database ("MTXP").
APPLICATION_ID = 0x4D545850

#: The statuses ``update_run_status`` accepts; a typo ("complete") is an error, not a new state.
#: ``pruned``: a sweep stopped the run early because its metric was not promising.
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "pruned")

#: The keys ``register_run`` accepts (``run_name`` is required).
RUN_FIELDS = (
    "run_name",
    "config",
    "notes",
    "sweep_id",
    "sweep_params",
    "gist_id",
    "gist_revision",
    "gist_sha256",
    "task_name",
    "modality",
    "strategy",
    "devices",
    "artifact_paths",
)

#: Run columns holding JSON text, parsed on the way out.
_JSON_RUN_COLUMNS = frozenset({"config", "sweep_params", "devices", "artifact_paths"})

_METRIC_COLUMNS = ("metric_id", "run_id", "split", "metric_name", "value", "step", "epoch")
_METRIC_COLUMNS_OUT = (*_METRIC_COLUMNS, "timestamp")


class RunNotFoundError(StoreError, ValueError):
    """A run id names no run (a ``ValueError`` too, as older callers catch)."""


class MetricNotFoundError(StoreError, ValueError):
    """No run has a value of the requested metric."""


class ArtifactError(StoreError):
    """A recorded artifact is missing, changed since it was recorded, or cannot be recorded."""


# -- schema ---------------------------------------------------------------------------------
# Released migrations are frozen: files written by them exist. Add a new function instead.


def _migration_1_core(conn: sqlite3.Connection) -> None:
    """Version 1: runs, metrics, artifacts, comparisons."""
    for statement in (
        """CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_name TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            notes TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'running',
            sweep_id TEXT,
            sweep_params TEXT,
            gist_id TEXT,
            gist_revision TEXT,
            gist_sha256 TEXT,
            task_name TEXT,
            modality TEXT,
            strategy TEXT,
            devices TEXT,
            artifact_paths TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_runs_sweep ON runs(sweep_id)",
        """CREATE TABLE metrics (
            metric_id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            split TEXT,
            metric_name TEXT NOT NULL,
            value REAL,
            step INTEGER,
            epoch INTEGER,
            timestamp TEXT NOT NULL
        )""",
        "CREATE INDEX idx_metrics_run_name ON metrics(run_id, metric_name)",
        """CREATE TABLE artifacts (
            artifact_id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            artifact_type TEXT NOT NULL,
            filepath TEXT NOT NULL,
            metadata TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_artifacts_run ON artifacts(run_id)",
        """CREATE TABLE comparisons (
            comparison_id INTEGER PRIMARY KEY AUTOINCREMENT,
            baseline_run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            candidate_run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            notes TEXT,
            created_at TEXT NOT NULL
        )""",
    ):
        conn.execute(statement)


def _migration_2_params_profiles(conn: sqlite3.Connection) -> None:
    """Version 2: per-run params, stored data profiles (tier 5 drift), a by-metric index."""
    for statement in (
        """CREATE TABLE params (
            run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            logged_at TEXT NOT NULL,
            PRIMARY KEY (run_id, key)
        )""",
        """CREATE TABLE profiles (
            profile_id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            profile TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (run_id, name)
        )""",
        "CREATE INDEX idx_metrics_name ON metrics(metric_name, run_id)",
    ):
        conn.execute(statement)


def _migration_3_identity_hashes(conn: sqlite3.Connection) -> None:
    """Version 3: the database's identity (names its artifact folder) and artifact hashes."""
    conn.execute(
        "CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO store_info (key, value) VALUES ('identity', ?)", (uuid.uuid4().hex,))
    conn.execute("ALTER TABLE artifacts ADD COLUMN sha256 TEXT")
    conn.execute("ALTER TABLE artifacts ADD COLUMN size_bytes INTEGER")


SCHEMA = StoreSchema(
    kind="experiment database",
    key="experiment_db",
    default_name="experiments.db",
    application_id=APPLICATION_ID,
    migrations=(_migration_1_core, _migration_2_params_profiles, _migration_3_identity_hashes),
)

#: Suffix of the artifact folder beside a database: ``<stem>-<first 8 of identity>-checkpoints``.
ARTIFACT_DIR_SUFFIX = "-checkpoints"

_ARTIFACT_COLUMNS = (
    "artifact_id",
    "run_id",
    "artifact_type",
    "filepath",
    "metadata",
    "created_at",
    "sha256",
    "size_bytes",
)


# -- helpers --------------------------------------------------------------------------------


def qualify_metric_name(metric_name: str, split: str | None) -> tuple[str, str | None]:
    """Return ``(stored_name, split)`` under the one naming scheme.

    With a split, the name is relative to it (``"loss"`` with ``"val"`` is ``"val/loss"``; a
    name already starting with ``"val/"`` is kept). Without one, the split is the part before
    the first ``/`` (``"drift/js_divergence"`` -> ``"drift"``), or None for a bare name.
    """
    if not isinstance(metric_name, str) or not metric_name.strip("/"):
        raise StoreError(f"metric name must be a non-empty string, got {metric_name!r}")
    if metric_name.startswith("/") or metric_name.endswith("/") or "//" in metric_name:
        raise StoreError(
            f"metric name {metric_name!r} has an empty path segment; use 'split/name', "
            "for example 'val/loss'"
        )
    if split is None:
        head, sep, _ = metric_name.partition("/")
        return metric_name, (head if sep else None)
    if not isinstance(split, str) or not split or "/" in split:
        raise StoreError(
            f"split must be a non-empty string without '/', got {split!r} (for example "
            "'train', 'val', 'test', 'eval')"
        )
    if metric_name.startswith(split + "/"):
        return metric_name, split
    return f"{split}/{metric_name}", split


def _run_id(run_id: Any) -> int:
    """An integer run id (numpy integers accepted; SQLite cannot bind them as they are)."""
    if isinstance(run_id, bool):
        raise StoreError(f"run id must be an integer, got {run_id!r}")
    try:
        return operator.index(run_id)
    except TypeError as exc:
        raise StoreError(
            f"run id must be an integer, got {type(run_id).__name__} {run_id!r}"
        ) from exc


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise StoreError(f"{what} must be an integer or None, got {value!r}")
    try:
        return operator.index(value)
    except TypeError as exc:
        raise StoreError(
            f"{what} must be an integer or None, got {type(value).__name__} {value!r}"
        ) from exc


def _config_dict(config: Any) -> dict[str, Any]:
    """A run config as a plain dict: a mapping, a ``TrainingConfig`` (``to_dict``) or any
    dataclass; anything else is an error rather than a ``str()`` nobody can query."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, Mapping):
            return dict(result)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise StoreError(
        f"config must be a dict, a TrainingConfig or a dataclass, got {type(config).__name__}"
    )


def _frame(rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(list(rows), columns=list(columns))


def _nan_if_null(value: float | None) -> float:
    return math.nan if value is None else float(value)


class ExperimentDB(SQLiteStore):
    """An experiment database in one SQLite file, safe for several writer processes.

    ``ExperimentDB("experiments.db")`` creates the file, or opens an existing one (migrating an
    older schema in place). A file that is not SQLite, another program's database or one
    written by a newer release raises ``StoreFileError``. Every write is one transaction;
    every connection enforces foreign keys and waits up to ``busy_timeout`` seconds for a lock.
    """

    schema = SCHEMA

    def __init__(
        self,
        db_path: str | os.PathLike[str] = "experiments.db",
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self._identity: str | None = None
        super().__init__(Path(db_path), busy_timeout=busy_timeout)

    # -- runs ------------------------------------------------------------------------------

    def log_run(
        self,
        run_name: str,
        config: Any = None,
        notes: str = "",
        *,
        sweep_id: str | None = None,
        sweep_params: Mapping[str, Any] | None = None,
        gist_id: str | None = None,
        gist_revision: str | None = None,
        gist_sha256: str | None = None,
    ) -> int:
        """Create a run (status ``running``) and return its id."""
        return self.register_run(
            {
                "run_name": run_name,
                "config": config,
                "notes": notes,
                "sweep_id": sweep_id,
                "sweep_params": sweep_params,
                "gist_id": gist_id,
                "gist_revision": gist_revision,
                "gist_sha256": gist_sha256,
            }
        )

    def register_run(self, run_info: Mapping[str, Any]) -> int:
        """Create a run from a dict of ``RUN_FIELDS`` (``run_name`` required); return its id.

        Unknown keys are an error naming them, so a misspelt ``task`` is not dropped silently.
        """
        if not isinstance(run_info, Mapping):
            raise StoreError(f"run_info must be a dict, got {type(run_info).__name__}")
        unknown = sorted(set(run_info) - set(RUN_FIELDS))
        if unknown:
            raise StoreError(
                f"register_run got unknown key(s) {unknown}; accepted: {', '.join(RUN_FIELDS)}"
            )
        run_name = run_info.get("run_name")
        if not isinstance(run_name, str) or not run_name.strip():
            raise StoreError(f"run_name must be a non-empty string, got {run_name!r}")
        notes = run_info.get("notes") or ""
        if not isinstance(notes, str):
            raise StoreError(f"notes must be a string, got {type(notes).__name__}")
        text_fields = {}
        for key in (
            "sweep_id",
            "gist_id",
            "gist_revision",
            "gist_sha256",
            "task_name",
            "modality",
            "strategy",
        ):
            text_fields[key] = _optional_text(run_info.get(key), key)
        config = dumps_json(_config_dict(run_info.get("config")), f"config of run {run_name!r}")
        sweep_params = run_info.get("sweep_params")
        devices = run_info.get("devices")
        artifact_paths = run_info.get("artifact_paths")
        now = utc_now()
        values = {
            "run_name": run_name,
            "config": config,
            "notes": notes,
            **text_fields,
            "sweep_params": _optional_json(sweep_params, "sweep_params"),
            "devices": _optional_json(devices, "devices"),
            "artifact_paths": _optional_json(artifact_paths, "artifact_paths"),
            "status": "running",
            "created_at": now,
            "updated_at": now,
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.write() as conn:
            cursor = conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(values.values())
            )
            return _lastrowid(cursor)

    def update_run_status(self, run_id: SupportsIndex, status: str) -> None:
        """Set a run's status (one of ``RUN_STATUSES``) and its ``updated_at``."""
        if status not in RUN_STATUSES:
            raise StoreError(
                f"unknown run status {status!r}; use one of: {', '.join(RUN_STATUSES)}"
            )
        rid = _run_id(run_id)
        with self.write() as conn:
            self._require_runs(conn, [rid])
            conn.execute(
                "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?",
                (status, utc_now(), rid),
            )

    def get_run(self, run_id: SupportsIndex) -> dict[str, Any]:
        """All columns of a run, JSON columns parsed; ``RunNotFoundError`` if there is none."""
        rid = _run_id(run_id)
        with self.read() as conn:
            self._require_runs(conn, [rid])
            cursor = conn.execute("SELECT * FROM runs WHERE run_id = ?", (rid,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        return {
            name: loads_json(value) if name in _JSON_RUN_COLUMNS else value
            for name, value in zip(names, row, strict=True)
        }

    def list_runs(self, limit: int | None = 10, *, status: str | None = None) -> pd.DataFrame:
        """The newest runs first: run_id, run_name, created_at, status, notes, sweep_id.

        ``limit=None`` lists every run.
        """
        count = _optional_int(limit, "limit")
        if count is not None and count < 1:
            raise StoreError(f"limit must be a positive integer or None, got {limit!r}")
        if status is not None and status not in RUN_STATUSES:
            raise StoreError(f"unknown status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        columns = ("run_id", "run_name", "created_at", "status", "notes", "sweep_id")
        sql = f"SELECT {', '.join(columns)} FROM runs"
        args: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY run_id DESC"
        if count is not None:
            sql += " LIMIT ?"
            args.append(count)
        with self.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return _frame(rows, columns)

    def get_runs_for_sweep(self, sweep_id: str) -> pd.DataFrame:
        """The runs of one sweep in creation order, ``sweep_params`` and ``config`` parsed."""
        columns = ("run_id", "run_name", "created_at", "status", "sweep_id", "sweep_params")
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)}, config FROM runs WHERE sweep_id = ? ORDER BY run_id",
                (sweep_id,),
            ).fetchall()
        parsed = [(*row[:5], loads_json(row[5]), loads_json(row[6])) for row in rows]
        return _frame(parsed, (*columns, "config"))

    def set_run_sweep(
        self, run_id: SupportsIndex, sweep_id: str, sweep_params: Mapping[str, Any]
    ) -> None:
        """Mark an existing run as one trial of a sweep (a sweep's ``run_fn`` made the run)."""
        rid = _run_id(run_id)
        values = (
            _optional_text(sweep_id, "sweep_id"),
            _optional_json(dict(sweep_params), "sweep_params"),
            utc_now(),
            rid,
        )
        with self.write() as conn:
            self._require_runs(conn, [rid])
            conn.execute(
                "UPDATE runs SET sweep_id = ?, sweep_params = ?, updated_at = ? WHERE run_id = ?",
                values,
            )

    # -- params ----------------------------------------------------------------------------

    def log_params(self, run_id: SupportsIndex, params: Mapping[str, Any]) -> None:
        """Record flat key/value params of a run (JSON values) in one transaction.

        A key logged again takes the new value (the last write wins), like a config override.
        """
        rid = _run_id(run_id)
        if not isinstance(params, Mapping):
            raise StoreError(f"params must be a dict, got {type(params).__name__}")
        rows = []
        now = utc_now()
        for key, value in params.items():
            if not isinstance(key, str) or not key:
                raise StoreError(f"param names must be non-empty strings, got {key!r}")
            text = dumps_json(value, f"param {key!r} of run {rid}", non_finite=True)
            rows.append((rid, key, text, now))
        with self.write() as conn:
            self._require_runs(conn, [rid])
            conn.executemany(
                "INSERT INTO params (run_id, key, value, logged_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
                "logged_at = excluded.logged_at",
                rows,
            )

    def log_param(self, run_id: SupportsIndex, key: str, value: Any) -> None:
        """Record one param; see ``log_params``."""
        self.log_params(run_id, {key: value})

    def get_params(self, run_id: SupportsIndex) -> dict[str, Any]:
        """A run's params as a dict, keys sorted."""
        rid = _run_id(run_id)
        with self.read() as conn:
            self._require_runs(conn, [rid])
            rows = conn.execute(
                "SELECT key, value FROM params WHERE run_id = ? ORDER BY key", (rid,)
            ).fetchall()
        return {key: loads_json(value, non_finite=True) for key, value in rows}

    # -- metrics ---------------------------------------------------------------------------

    def log_metric(
        self,
        run_id: SupportsIndex,
        metric_name: str,
        value: Any,
        step: SupportsIndex | None = None,
        epoch: SupportsIndex | None = None,
        *,
        split: str | None = None,
    ) -> None:
        """Record one value (see ``qualify_metric_name`` for the naming scheme)."""
        self._insert_metrics(run_id, {metric_name: value}, split, step, epoch)

    def log_metrics(
        self,
        run_id: SupportsIndex,
        metrics: Mapping[str, Any],
        split: str | None,
        step: SupportsIndex | None = None,
        epoch: SupportsIndex | None = None,
    ) -> None:
        """Record many values of one step in one transaction: all are written, or none.

        ``split`` (``"train"``, ``"val"``, ``"eval"``, or None when the names carry it) prefixes
        each name: ``log_metrics(run, {"loss": 0.3}, "val")`` stores ``"val/loss"``.
        """
        if not isinstance(metrics, Mapping):
            raise StoreError(f"metrics must be a dict of name -> value, got {type(metrics)}")
        self._insert_metrics(run_id, metrics, split, step, epoch)

    def _insert_metrics(
        self,
        run_id: Any,
        metrics: Mapping[str, Any],
        split: str | None,
        step: Any,
        epoch: Any,
    ) -> None:
        rid = _run_id(run_id)
        step_i = _optional_int(step, "step")
        epoch_i = _optional_int(epoch, "epoch")
        now = utc_now()
        rows = []
        for name, raw in metrics.items():
            full, row_split = qualify_metric_name(name, split)
            value = metric_value(raw, f"value of metric {full!r} (run {rid})")
            # SQLite has no NaN: it binds as NULL, which reads back as NaN.
            stored = None if math.isnan(value) else value
            rows.append((rid, row_split, full, stored, step_i, epoch_i, now))
        if not rows:
            return
        with self.write() as conn:
            self._require_runs(conn, [rid])
            conn.executemany(
                "INSERT INTO metrics (run_id, split, metric_name, value, step, epoch, timestamp)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def get_metrics(
        self, run_id: SupportsIndex, metric_name: str | None = None, *, split: str | None = None
    ) -> pd.DataFrame:
        """A run's metrics in logging order: metric_id, run_id, split, metric_name, value,
        step, epoch, timestamp. Filter by full name (``"val/loss"``) and/or split."""
        rid = _run_id(run_id)
        sql = f"SELECT {', '.join(_METRIC_COLUMNS_OUT)} FROM metrics WHERE run_id = ?"
        args: list[Any] = [rid]
        if metric_name is not None:
            sql += " AND metric_name = ?"
            args.append(metric_name)
        if split is not None:
            sql += " AND split = ?"
            args.append(split)
        with self.read() as conn:
            self._require_runs(conn, [rid])
            rows = conn.execute(sql + " ORDER BY metric_id", args).fetchall()
        records = [(*row[:4], _nan_if_null(row[4]), *row[5:]) for row in rows]
        frame = _frame(records, _METRIC_COLUMNS_OUT)
        frame["value"] = frame["value"].astype("float64")
        for column in ("step", "epoch"):
            frame[column] = frame[column].astype("Int64")
        return frame

    #: An alias, kept for existing callers.
    get_run_metrics = get_metrics

    def get_best_run(self, metric_name: str, mode: str = "min") -> dict[str, Any]:
        """The run with the lowest (``mode="min"``) or highest (``"max"``) value of a metric.

        Runs without the metric (or with only NaN values of it) are ignored; if no run has it,
        ``MetricNotFoundError`` lists the metric names that do exist. Ties go to the older
        run. Returns run_id, run_name, best_value, best_epoch, best_step, config.
        """
        if mode not in ("min", "max"):
            raise StoreError(f"mode must be 'min' or 'max', got {mode!r}")
        aggregate, order = ("MIN", "ASC") if mode == "min" else ("MAX", "DESC")
        with self.read() as conn:
            best = conn.execute(
                f"SELECT run_id, {aggregate}(value) AS best FROM metrics "
                "WHERE metric_name = ? AND value IS NOT NULL "
                f"GROUP BY run_id ORDER BY best {order}, run_id ASC LIMIT 1",
                (metric_name,),
            ).fetchone()
            if best is None:
                known = [
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT metric_name FROM metrics ORDER BY metric_name LIMIT 30"
                    )
                ]
                raise MetricNotFoundError(
                    f"no run in {self.path} has a (non-NaN) value of metric {metric_name!r}; "
                    f"metrics logged: {', '.join(known) or 'none'} (names are 'split/name', "
                    "for example 'val/loss')"
                )
            rid, value = best
            epoch, step = conn.execute(
                "SELECT epoch, step FROM metrics WHERE run_id = ? AND metric_name = ? "
                "AND value = ? ORDER BY metric_id LIMIT 1",
                (rid, metric_name, value),
            ).fetchone()
            run_name, config = conn.execute(
                "SELECT run_name, config FROM runs WHERE run_id = ?", (rid,)
            ).fetchone()
        return {
            "run_id": rid,
            "run_name": run_name,
            "best_value": value,
            "best_epoch": epoch,
            "best_step": step,
            "config": loads_json(config),
        }

    def compare_runs(
        self,
        run_ids: Sequence[SupportsIndex],
        metrics: str | Sequence[str] | Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """One row per run, in the order given.

        Columns: run_id, run_name, created_at, status, total_epochs (distinct epochs logged),
        then per metric:

        - ``metrics=None``: the default view, final_train_loss, final_val_loss, best_val_loss,
          best_epoch (of the best ``val/loss``);
        - a list of names: ``final_<name>`` (the last value logged);
        - a dict name -> ``"min"``/``"max"``: ``final_<name>``, ``best_<name>`` and
          ``best_epoch_<name>``.

        A run without a metric gets NaN (missing epochs: ``<NA>``).
        """
        ids = [_run_id(r) for r in run_ids]
        if isinstance(metrics, str):
            metrics = [metrics]
        wanted: list[tuple[str, str | None]]
        if metrics is None:
            wanted = [("train/loss", None), ("val/loss", "min")]
        elif isinstance(metrics, Mapping):
            wanted = []
            for name, how in metrics.items():
                if how not in ("min", "max"):
                    raise StoreError(f"mode of {name!r} must be 'min' or 'max', got {how!r}")
                wanted.append((name, how))
        else:
            wanted = [(name, None) for name in metrics]
        records = []
        with self.read() as conn:
            self._require_runs(conn, ids)
            for rid in ids:
                run_name, created_at, status = conn.execute(
                    "SELECT run_name, created_at, status FROM runs WHERE run_id = ?", (rid,)
                ).fetchone()
                total_epochs = conn.execute(
                    "SELECT COUNT(DISTINCT epoch) FROM metrics WHERE run_id = ?", (rid,)
                ).fetchone()[0]
                record: dict[str, Any] = {
                    "run_id": rid,
                    "run_name": run_name,
                    "created_at": created_at,
                    "status": status,
                }
                for name, mode in wanted:
                    final, best, best_epoch = _summarise(conn, rid, name, mode)
                    if metrics is None:
                        prefix = name.replace("/", "_")  # train/loss -> train_loss
                        record[f"final_{prefix}"] = final
                        if mode is not None:
                            record[f"best_{prefix}"] = best
                            record["best_epoch"] = best_epoch
                    else:
                        record[f"final_{name}"] = final
                        if mode is not None:
                            record[f"best_{name}"] = best
                            record[f"best_epoch_{name}"] = best_epoch
                record["total_epochs"] = total_epochs
                records.append(record)
        import pandas as pd

        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return frame
        for column in frame.columns:
            if column.startswith("best_epoch"):
                frame[column] = frame[column].astype("Int64")
            elif column.startswith(("final_", "best_")):
                frame[column] = frame[column].astype("float64")
        return frame

    # -- artifacts, comparisons, profiles --------------------------------------------------

    @property
    def identity(self) -> str:
        """This database's identity: a UUID (hex) stored in it at creation or first open."""
        cached = self._identity
        if cached is None:
            with self.read() as conn:
                row = conn.execute("SELECT value FROM store_info WHERE key = 'identity'").fetchone()
            if row is None:
                raise StoreError(
                    f"{self.path} has no identity row in store_info (the file was edited outside "
                    "pytest-modeltiers); restore it from a backup"
                )
            cached = str(row[0])
            self._identity = cached
        return cached

    @property
    def artifact_dir(self) -> Path:
        """The folder beside the database that holds its copies of artifacts (checkpoints):
        ``<stem>-<first 8 hex digits of identity>-checkpoints``, unique to this database."""
        return self.path.parent / f"{self.path.stem}-{self.identity[:8]}{ARTIFACT_DIR_SUFFIX}"

    def artifact_path(self, run_id: SupportsIndex, name: str) -> Path:
        """Where this database keeps a run's artifact ``name``: ``artifact_dir/run-<N>-<name>``.

        Write the file there, then ``log_artifact`` it (it is then recorded relative to the
        database's folder, with its hash).
        """
        rid = _run_id(run_id)
        if not isinstance(name, str) or not name or name != Path(name).name or name in ("..", "."):
            raise StoreError(f"artifact name must be a plain file name, got {name!r}")
        return self.artifact_dir / f"run-{rid}-{name}"

    def must_copy(self, filepath: str | os.PathLike[str]) -> bool:
        """Whether ``filepath`` lies in a temporary folder (the system's, where pytest's
        ``tmp_path`` folders live) that this database does not: such a folder is deleted
        sooner or later, so a record pointing into it would go stale."""
        path = Path(os.fspath(filepath))
        if not path.is_absolute():
            path = self._local_file(str(path)) or self.path.parent / path
        return _in_temporary_folder(path) and not _in_temporary_folder(self.path)

    def log_artifact(
        self,
        run_id: SupportsIndex,
        artifact_type: str,
        filepath: str | os.PathLike[str],
        metadata: Mapping[str, Any] | None = None,
        *,
        copy: bool | None = None,
    ) -> int:
        """Record a file produced by a run (checkpoint, export, report); return its id.

        - ``copy=True`` copies the file to ``artifact_path(run_id, its name)``;
        - ``copy=None`` (the default) does so only when ``must_copy(filepath)``: a file in a
          temporary folder the database is not in is copied, never referenced;
        - ``copy=False`` records the path as it is, and refuses one that ``must_copy``.

        A file in ``artifact_dir`` (a copy, or written to ``artifact_path``) is recorded
        relative to the database's folder, so the database and that folder move together;
        any other path as given (it may live on another machine; a relative one is read
        relative to the database's folder). The sha256 and size of an existing file are
        recorded, and ``artifact_file`` checks them before the file is used. Non-finite
        floats in ``metadata`` are kept and read back as floats.
        """
        rid = _run_id(run_id)
        if not isinstance(artifact_type, str) or not artifact_type:
            raise StoreError(f"artifact_type must be a non-empty string, got {artifact_type!r}")
        source = Path(os.fspath(filepath))
        meta = _optional_json(metadata, f"metadata of artifact {str(source)!r}", non_finite=True)
        with self.read() as conn:
            self._require_runs(conn, [rid])
        local = self._local_file(str(source))
        if copy is None:
            copy = self.must_copy(source)
        elif not copy and self.must_copy(source):
            raise ArtifactError(
                f"artifact {source} of run {rid} lies in the temporary folder "
                f"{tempfile.gettempdir()}, which is deleted (pytest keeps only its last few "
                f"sessions' folders), while the database {self.path} is not: pass copy=True "
                f"to copy it to {self.artifact_dir}, or save it to a permanent place first"
            )
        if copy:
            if local is None:
                raise ArtifactError(
                    f"cannot copy artifact {source} of run {rid} next to the database: it is "
                    "not a file (copy a directory's files one by one, or archive it first)"
                )
            stored, digest, size = self._copy_in(rid, local)
        else:
            stored, digest, size = str(source), None, None
            if local is not None:
                if _is_within(local, self.artifact_dir):
                    stored = self._relative(local)
                digest, size = file_sha256_and_size(local)
        with self.write() as conn:
            self._require_runs(conn, [rid])
            cursor = conn.execute(
                "INSERT INTO artifacts (run_id, artifact_type, filepath, metadata, created_at, "
                "sha256, size_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rid, artifact_type, stored, meta, utc_now(), digest, size),
            )
            return _lastrowid(cursor)

    def _copy_in(self, rid: int, source: Path) -> tuple[str, str | None, int | None]:
        """Copy ``source`` into the artifact folder atomically; (stored path, sha256, size)."""
        target = self.artifact_path(rid, source.name)
        hasher = hashlib.sha256()

        def write(handle: Any) -> None:
            with source.open("rb") as reader:
                for block in iter(lambda: reader.read(1 << 20), b""):
                    hasher.update(block)
                    handle.write(block)

        try:
            atomic_write(target, write)
        except OSError as exc:
            raise ArtifactError(
                f"cannot copy artifact {source} of run {rid} to {target}: {exc.strerror or exc}; "
                f"make {target.parent} writable or free some disk space"
            ) from exc
        return self._relative(target), hasher.hexdigest(), target.stat().st_size

    def _relative(self, path: Path) -> str:
        """``path`` (inside the database's folder) relative to that folder, POSIX style."""
        folder = os.path.realpath(self.path.parent)
        return Path(os.path.realpath(path)).relative_to(folder).as_posix()

    def _local_file(self, stored: str) -> Path | None:
        """The existing file a recorded path names: absolute as it is, relative to the
        database's folder (else to the working directory, as older releases wrote); None if
        there is none."""
        path = Path(stored)
        candidates = [path] if path.is_absolute() else [self.path.parent / path, path]
        return next((c.absolute() for c in candidates if c.is_file()), None)

    def artifact_file(self, artifact_id: SupportsIndex) -> Path:
        """The file of a recorded artifact, checked before anyone uses it.

        ``ArtifactError`` names the file and the fix when it is missing or its sha256 differs
        from the one recorded (overwritten, or replaced by hand). Artifacts recorded before
        hashes were kept have none, and are only checked for existence.
        """
        aid = _optional_int(artifact_id, "artifact id")
        with self.read() as conn:
            row = conn.execute(
                "SELECT run_id, artifact_type, filepath, sha256 FROM artifacts "
                "WHERE artifact_id = ?",
                (aid,),
            ).fetchone()
        if row is None:
            raise ArtifactError(f"artifact {aid} does not exist in {self.path}")
        rid, artifact_type, stored, expected = row
        local = self._local_file(stored)
        what = f"{artifact_type} {stored} of run {rid} in {self.path}"
        if local is None:
            where = (
                str(stored)
                if Path(stored).is_absolute()
                else f"{self.path.parent / stored} (nor in the working directory)"
            )
            raise ArtifactError(
                f"the {what} does not exist: no file at {where}. Restore it (a database's "
                f"copies live in {self.artifact_dir.name}/ beside it: move the two together), "
                "or use another run"
            )
        if expected is not None:
            actual, _ = file_sha256_and_size(local)
            if actual != expected:
                raise ArtifactError(
                    f"the {what} has changed since it was recorded: {local} has sha256 "
                    f"{actual}, the database recorded {expected}. Something overwrote it "
                    "(another database or a script writing to the same path); restore the "
                    "original file, or record a new run and use that one"
                )
        return local

    def get_artifacts(
        self, run_id: SupportsIndex, artifact_type: str | None = None
    ) -> pd.DataFrame:
        """A run's artifacts, newest first, ``metadata`` parsed; ``sha256`` and ``size_bytes``
        are None for files that did not exist when recorded (or older records)."""
        rid = _run_id(run_id)
        columns = _ARTIFACT_COLUMNS
        sql = f"SELECT {', '.join(columns)} FROM artifacts WHERE run_id = ?"
        args: list[Any] = [rid]
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            args.append(artifact_type)
        with self.read() as conn:
            self._require_runs(conn, [rid])
            rows = conn.execute(sql + " ORDER BY artifact_id DESC", args).fetchall()
        return _frame(
            [(*row[:4], loads_json(row[4], non_finite=True), *row[5:]) for row in rows], columns
        )

    def create_comparison(
        self,
        baseline_run_id: SupportsIndex,
        candidate_run_id: SupportsIndex,
        notes: str | None = None,
    ) -> int:
        """Record that a candidate run was compared with a baseline run; return the id."""
        base, cand = _run_id(baseline_run_id), _run_id(candidate_run_id)
        with self.write() as conn:
            self._require_runs(conn, [base, cand])
            cursor = conn.execute(
                "INSERT INTO comparisons (baseline_run_id, candidate_run_id, notes, created_at) "
                "VALUES (?, ?, ?, ?)",
                (base, cand, notes, utc_now()),
            )
            return _lastrowid(cursor)

    def get_comparisons(self, run_id: SupportsIndex | None = None) -> pd.DataFrame:
        """Recorded comparisons (those involving ``run_id`` if given), oldest first."""
        columns = ("comparison_id", "baseline_run_id", "candidate_run_id", "notes", "created_at")
        sql = f"SELECT {', '.join(columns)} FROM comparisons"
        args: list[Any] = []
        if run_id is not None:
            sql += " WHERE baseline_run_id = ? OR candidate_run_id = ?"
            args = [_run_id(run_id)] * 2
        with self.read() as conn:
            rows = conn.execute(sql + " ORDER BY comparison_id", args).fetchall()
        return _frame(rows, columns)

    def log_profile(
        self, run_id: SupportsIndex, name: str, profile: Mapping[str, Any], content_hash: str
    ) -> int:
        """Store a data profile (tier 5's drift reference) under ``name`` for a run.

        Profiles are reference data and are never overwritten: logging the same name again
        with the same ``content_hash`` returns the existing id; with another hash it is an
        error (use a new name).
        """
        rid = _run_id(run_id)
        if not isinstance(name, str) or not name:
            raise StoreError(f"profile name must be a non-empty string, got {name!r}")
        if not isinstance(content_hash, str) or not content_hash:
            raise StoreError(f"content_hash must be a non-empty string, got {content_hash!r}")
        if not isinstance(profile, Mapping):
            raise StoreError(f"profile must be a dict, got {type(profile).__name__}")
        text = dumps_json(dict(profile), f"profile {name!r} of run {rid}")
        with self.write() as conn:
            self._require_runs(conn, [rid])
            existing = conn.execute(
                "SELECT profile_id, content_hash FROM profiles WHERE run_id = ? AND name = ?",
                (rid, name),
            ).fetchone()
            if existing is not None:
                if existing[1] == content_hash:
                    return int(existing[0])
                raise StoreError(
                    f"run {rid} already has a profile named {name!r} with content hash "
                    f"{existing[1]}, not {content_hash}; profiles are not overwritten, so "
                    "log the new one under another name"
                )
            cursor = conn.execute(
                "INSERT INTO profiles (run_id, name, profile, content_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (rid, name, text, content_hash, utc_now()),
            )
            return _lastrowid(cursor)

    def get_profile(self, run_id: SupportsIndex, name: str) -> dict[str, Any]:
        """A stored profile: profile_id, run_id, name, profile (parsed), content_hash,
        created_at. ``StoreError`` naming the profiles the run has if there is none."""
        rid = _run_id(run_id)
        with self.read() as conn:
            self._require_runs(conn, [rid])
            row = conn.execute(
                "SELECT profile_id, profile, content_hash, created_at FROM profiles "
                "WHERE run_id = ? AND name = ?",
                (rid, name),
            ).fetchone()
            if row is None:
                names = [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM profiles WHERE run_id = ? ORDER BY name", (rid,)
                    )
                ]
                raise StoreError(
                    f"run {rid} has no profile named {name!r}; it has: {', '.join(names) or 'none'}"
                )
        return {
            "profile_id": row[0],
            "run_id": rid,
            "name": name,
            "profile": loads_json(row[1]),
            "content_hash": row[2],
            "created_at": row[3],
        }

    # -- internals -------------------------------------------------------------------------

    def _require_runs(self, conn: sqlite3.Connection, run_ids: Sequence[SupportsIndex]) -> None:
        """Fail naming the run ids that do not exist (inside the caller's transaction, so the
        answer holds for its writes; the foreign keys stay on as the last line)."""
        missing = [
            rid
            for rid in dict.fromkeys(run_ids)
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (rid,)).fetchone() is None
        ]
        if missing:
            shown = ", ".join(str(r) for r in missing)
            raise RunNotFoundError(
                f"run {shown} does not exist in {self.path}; create runs with log_run() or "
                "register_run() and use the id they return (list_runs() shows existing runs)"
            )


def _summarise(
    conn: sqlite3.Connection, run_id: int, name: str, mode: str | None
) -> tuple[float, float, int | None]:
    """(final value, best value, epoch of the best) of one metric of one run; NaN if absent."""
    last = conn.execute(
        "SELECT value FROM metrics WHERE run_id = ? AND metric_name = ? "
        "ORDER BY metric_id DESC LIMIT 1",
        (run_id, name),
    ).fetchone()
    final = math.nan if last is None else _nan_if_null(last[0])
    if mode is None:
        return final, math.nan, None
    aggregate = "MIN" if mode == "min" else "MAX"
    best = conn.execute(
        f"SELECT {aggregate}(value) FROM metrics WHERE run_id = ? AND metric_name = ?",
        (run_id, name),
    ).fetchone()[0]
    if best is None:
        return final, math.nan, None
    epoch = conn.execute(
        "SELECT epoch FROM metrics WHERE run_id = ? AND metric_name = ? AND value = ? "
        "ORDER BY metric_id LIMIT 1",
        (run_id, name, best),
    ).fetchone()[0]
    return final, float(best), epoch


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string or None, got {type(value).__name__}")
    return value


def _optional_json(value: Any, what: str, *, non_finite: bool = False) -> str | None:
    return None if value is None else dumps_json(value, what, non_finite=non_finite)


def _temporary_roots() -> list[Path]:
    """The folders whose content is deleted: the system's temporary folder (``TMPDIR``), and
    pytest's root for its ``tmp_path`` folders when set apart (``PYTEST_DEBUG_TEMPROOT``)."""
    roots = [tempfile.gettempdir(), os.environ.get("PYTEST_DEBUG_TEMPROOT")]
    return [Path(os.path.realpath(root)) for root in roots if root]


def _in_temporary_folder(path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return any(_is_within(real, root) for root in _temporary_roots())


def _is_within(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def _lastrowid(cursor: sqlite3.Cursor) -> int:
    rowid = cursor.lastrowid
    if rowid is None:  # pragma: no cover - an INSERT always sets it
        raise StoreError("SQLite did not report the id of the inserted row")
    return int(rowid)
