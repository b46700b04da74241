"""``ModelRegistry``: models, versions, tags, aliases (stages), exports, lineage and an audit log.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.store.metric_names import resolve_metric_name, warn_old_spellings
from pytest_modeltiers.store.model_registry_schema import (
    _ALIAS,
    _EVENT_COLUMNS,
    _MODEL_COLUMNS,
    _TAG,
    DEFAULT_MAX_LINEAGE_DEPTH,
    MODEL_STATUSES,
    SCHEMA,
    STAGE_ALIASES,
    CheckpointNotFoundError,
    DuplicateModelError,
    LineageError,
    ModelNotFoundError,
    _frame,
    _metrics,
    _model_id,
    _optional_positive,
    _optional_text,
    _path_size_mb,
    _text,
    parse_version,
    version_key,
)
from pytest_modeltiers.store.sqlite_base import (
    DEFAULT_BUSY_TIMEOUT_S,
    SQLiteStore,
    StoreError,
    dumps_json,
    loads_json,
    utc_now,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MODEL_STATUSES",
    "STAGE_ALIASES",
    "CheckpointNotFoundError",
    "DuplicateModelError",
    "LineageError",
    "ModelNotFoundError",
    "ModelRegistry",
    "parse_version",
    "version_key",
]


def _accept_names(names: Iterable[str]) -> list[str]:
    """Metric names to look up; old spellings (``val_loss``) are read with one warning."""
    out, renamed = [], {}
    for name in names:
        full, old = resolve_metric_name(name)
        out.append(full)
        if old is not None:
            renamed[old] = full
    warn_old_spellings(renamed)
    return out


def _accept_name(name: str) -> str:
    return _accept_names([name])[0]


class ModelRegistry(SQLiteStore):
    """A model registry in one SQLite file, safe for several writer processes.

    ``ModelRegistry("model_registry.db")`` creates the file or opens (and migrates) an existing
    one; a file that is not SQLite, another program's database or a newer schema raises
    ``StoreFileError``.
    """

    schema = SCHEMA

    def __init__(
        self,
        db_path: str | os.PathLike[str] = "model_registry.db",
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        super().__init__(Path(db_path), busy_timeout=busy_timeout)

    # -- registration ----------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        version: str,
        checkpoint_path: str | os.PathLike[str],
        task_type: str,
        config_hash: str,
        metrics: Mapping[str, Any] | None = None,
        export_formats: Mapping[str, str | os.PathLike[str]] | Sequence[str] | None = None,
        model_size_mb: float | None = None,
        memory_req_gb: float | None = None,
        training_run_id: int | None = None,
        parent_model_id: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        *,
        actor: str | None = None,
    ) -> int:
        """Register a version and return its id.

        The checkpoint (file or directory) must exist; its path is stored absolute and its
        size (MB) is the default ``model_size_mb``. ``export_formats`` is a list of format
        names or a dict format -> path. ``training_run_id`` is a run of the experiment
        database (another file, so not a foreign key).
        """
        _text(name, "model name")
        if len(name) > 200:
            raise StoreError(f"model name is {len(name)} characters; keep it to 200")
        parse_version(version)
        _text(task_type, "task_type")
        _text(config_hash, "config_hash")
        checkpoint = Path(checkpoint_path)
        if not checkpoint.exists():
            raise CheckpointNotFoundError(
                f"checkpoint {checkpoint} does not exist; save the model first (for example "
                "torch.save(model.state_dict(), path)) and register that path"
            )
        size = _optional_positive(model_size_mb, "model_size_mb")
        if size is None:
            size = _path_size_mb(checkpoint)
        memory = _optional_positive(memory_req_gb, "memory_req_gb")
        run_id = None if training_run_id is None else _model_id(training_run_id, "training_run_id")
        parent = None if parent_model_id is None else _model_id(parent_model_id, "parent_model_id")
        metric_text = dumps_json(_metrics(metrics), f"metrics of {name} {version}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise StoreError(f"metadata must be a dict, got {type(metadata).__name__}")
        meta_text = dumps_json(dict(metadata or {}), f"metadata of {name} {version}")
        exports = self._export_rows(export_formats)
        tag_list = [self._tag(t) for t in (tags or ())]
        now = utc_now()
        with self.write() as conn:
            existing = conn.execute(
                "SELECT model_id FROM models WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if existing is not None:
                raise DuplicateModelError(
                    f"{name} {version} is already registered (model id {existing[0]}); "
                    "register a new version, or delete_model() the old one first"
                )
            if parent is not None:
                self._require(conn, parent, "parent model")
            cursor = conn.execute(
                "INSERT INTO models (name, version, checkpoint_path, task_type, config_hash, "
                "training_run_id, parent_model_id, metrics, model_size_mb, memory_req_gb, "
                "metadata, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
                (
                    name,
                    version,
                    str(checkpoint.resolve()),
                    task_type,
                    config_hash,
                    run_id,
                    parent,
                    metric_text,
                    size,
                    memory,
                    meta_text,
                    now,
                    now,
                ),
            )
            model_id = int(cursor.lastrowid or 0)
            for fmt, path, meta in exports:
                conn.execute(
                    "INSERT INTO model_exports (model_id, export_format, export_path, metadata, "
                    "created_at) VALUES (?, ?, ?, ?, ?)",
                    (model_id, fmt, path, meta, now),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO model_tags (model_id, tag_name, created_at) "
                "VALUES (?, ?, ?)",
                [(model_id, t, now) for t in tag_list],
            )
            self._event(conn, model_id, "registered", actor=actor)
            return model_id

    @staticmethod
    def compute_config_hash(config: Any) -> str:
        """sha256 (hex) of the config as key-sorted strict JSON; a dict, a ``TrainingConfig``
        (``to_dict``) or a dataclass. Equal configs hash equal whatever their key order."""
        from pytest_modeltiers.store.experiment_db import _config_dict

        text = json.dumps(
            _config_dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- lookups ---------------------------------------------------------------------------

    def get_model(
        self,
        model_id: int | None = None,
        name: str | None = None,
        version: str | None = None,
        tag: str | None = None,
        alias: str | None = None,
    ) -> dict[str, Any] | None:
        """One model as a dict (JSON fields parsed, with its tags, aliases and exports), or
        None when nothing matches.

        Select with exactly one of: ``model_id``; ``name`` and ``version``; ``name`` alone (the
        latest active version by SemVer); ``tag`` (the newest model with it, of ``name`` when
        given); ``alias`` (of ``name`` when given, see :meth:`get_by_alias`).
        """
        chosen = sum(x is not None for x in (model_id, tag, alias))
        if chosen > 1 or (model_id is not None and name is not None):
            raise StoreError(
                "get_model takes one selector: model_id, name (+ version), tag or alias"
            )
        if version is not None and (name is None or chosen):
            raise StoreError("version selects together with name only")
        if chosen == 0 and name is None:
            raise StoreError("get_model needs model_id, name (+ version), tag or alias")
        if alias is not None:
            return self.get_by_alias(alias, name=name)
        with self.read() as conn:
            if model_id is not None:
                row = self._row(conn, "WHERE model_id = ?", (_model_id(model_id),))
            elif tag is not None:
                sql = (
                    "WHERE model_id = (SELECT t.model_id FROM model_tags t JOIN models m "
                    "USING (model_id) WHERE t.tag_name = ?"
                )
                args: list[Any] = [tag]
                if name is not None:
                    sql += " AND m.name = ?"
                    args.append(name)
                row = self._row(conn, sql + " ORDER BY t.model_id DESC LIMIT 1)", args)
            elif version is not None:
                parse_version(version)
                row = self._row(conn, "WHERE name = ? AND version = ?", (name, version))
            else:
                rows = conn.execute(
                    "SELECT model_id, version FROM models WHERE name = ? AND status = 'active'",
                    (name,),
                ).fetchall()
                if not rows:
                    return None
                best = max(rows, key=lambda r: version_key(r[1]))[0]
                row = self._row(conn, "WHERE model_id = ?", (best,))
            return None if row is None else self._full(conn, row)

    def get_by_alias(self, alias: str, name: str | None = None) -> dict[str, Any] | None:
        """The model an alias points at (of model ``name``; without ``name`` the alias must be
        held under one name only), or None when no model holds it."""
        self._alias(alias)
        with self.read() as conn:
            sql = "SELECT name, model_id FROM model_aliases WHERE alias = ?"
            args: list[Any] = [alias]
            if name is not None:
                sql += " AND name = ?"
                args.append(name)
            rows = conn.execute(sql + " ORDER BY name", args).fetchall()
            if not rows:
                return None
            if len(rows) > 1:
                names = ", ".join(r[0] for r in rows)
                raise StoreError(
                    f"alias {alias!r} is held by several models ({names}); pass name= to choose"
                )
            row = self._row(conn, "WHERE model_id = ?", (rows[0][1],))
            return None if row is None else self._full(conn, row)

    def list_models(
        self,
        task_type: str | None = None,
        tag: str | None = None,
        status: str | None = "active",
        min_metric_value: float | None = None,
        metric_name: str | None = None,
        limit: int | None = 50,
        *,
        name: str | None = None,
        max_metric_value: float | None = None,
    ) -> pd.DataFrame:
        """Models newest first, filtered; ``status=None`` lists every status.

        With ``metric_name``, ``min_metric_value``/``max_metric_value`` keep models whose
        metric is in range; models without the metric are left out.
        """
        if status is not None and status not in MODEL_STATUSES:
            raise StoreError(f"status must be one of {MODEL_STATUSES} or None, got {status!r}")
        if (min_metric_value is not None or max_metric_value is not None) and metric_name is None:
            raise StoreError("min_metric_value/max_metric_value need metric_name")
        metric = None if metric_name is None else _accept_name(metric_name)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise StoreError(f"limit must be a positive integer or None, got {limit!r}")
        clauses, args = [], []
        for column, value in (("task_type", task_type), ("status", status), ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if tag is not None:
            clauses.append("model_id IN (SELECT model_id FROM model_tags WHERE tag_name = ?)")
            args.append(tag)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        records = []
        with self.read() as conn:
            cursor = conn.execute(
                f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models {where} ORDER BY model_id DESC",
                args,
            )
            for row in cursor:
                record = self._parse(row)
                if metric is not None:
                    value = record["metrics"].get(metric)
                    if value is None:
                        continue
                    if min_metric_value is not None and value < min_metric_value:
                        continue
                    if max_metric_value is not None and value > max_metric_value:
                        continue
                records.append(record)
                if limit is not None and len(records) >= limit:
                    break
            for record in records:
                record["tags"] = self._tags(conn, record["model_id"])
                record["aliases"] = self._aliases_of(conn, record["model_id"])
        columns = [c for c in _MODEL_COLUMNS if c != "updated_at"] + ["tags", "aliases"]
        return _frame(records, columns)

    def compare_models(
        self, model_ids: Sequence[int], metrics: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """One row per model, in the order given: model_id, name, version, status, then one
        column per metric (all metrics of the models when ``metrics`` is None; NaN where a
        model lacks one)."""
        ids = [_model_id(m) for m in model_ids]
        wanted = None if metrics is None else _accept_names(metrics)
        records = []
        with self.read() as conn:
            for mid in ids:
                row = self._row(conn, "WHERE model_id = ?", (mid,))
                if row is None:
                    raise self._missing(mid)
                records.append(self._parse(row))
        names = wanted
        if names is None:
            names = sorted({k for r in records for k in r["metrics"]})
        out = [
            {
                "model_id": r["model_id"],
                "name": r["name"],
                "version": r["version"],
                "status": r["status"],
                **{m: r["metrics"].get(m, math.nan) for m in names},
            }
            for r in records
        ]
        frame = _frame(out, ["model_id", "name", "version", "status", *names])
        for m in names:
            frame[m] = frame[m].astype("float64")
        return frame

    def get_model_lineage(
        self, model_id: int, *, max_depth: int = DEFAULT_MAX_LINEAGE_DEPTH
    ) -> list[dict[str, Any]]:
        """The model and its ancestors, oldest first. A cycle or a chain deeper than
        ``max_depth`` (only possible in a file edited outside this class) is a ``LineageError``
        naming the ids."""
        with self.read() as conn:
            chain: list[dict[str, Any]] = []
            seen: list[int] = []
            current: int | None = _model_id(model_id)
            while current is not None:
                if current in seen:
                    path = " -> ".join(str(i) for i in [*seen, current])
                    raise LineageError(
                        f"the lineage of model {model_id} has a cycle ({path}); the registry "
                        f"{self.path} was changed outside pytest-modeltiers: fix the "
                        "parent_model_id of one of these models with set_parent()"
                    )
                if len(seen) > max_depth:
                    raise LineageError(
                        f"the lineage of model {model_id} is deeper than max_depth={max_depth}"
                    )
                row = self._row(conn, "WHERE model_id = ?", (current,))
                if row is None:
                    raise self._missing(current)
                seen.append(current)
                record = self._parse(row)
                chain.append(record)
                current = record["parent_model_id"]
        return chain[::-1]

    def get_audit_log(
        self,
        model_id: int | None = None,
        name: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The registry's events, oldest first: registrations, promotions, alias moves
        (``previous_model_id`` held the alias before), retirements, parent changes, deletions."""
        clauses, args = [], []
        for column, value in (("model_id", model_id), ("name", name), ("action", action)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM model_events {where} ORDER BY event_id"
        with self.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        if limit is not None:
            rows = rows[-limit:]
        return _frame([dict(zip(_EVENT_COLUMNS, r, strict=True)) for r in rows], _EVENT_COLUMNS)

    # -- lifecycle -------------------------------------------------------------------------

    def promote_model(
        self,
        model_id: int,
        tag: str,
        remove_from_others: bool = True,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Tag an active model; with ``remove_from_others`` the other versions of the same name
        lose the tag. A stage tag (``production``, ``staging``) also moves that alias."""
        mid = _model_id(model_id)
        self._tag(tag)
        now = utc_now()
        with self.write() as conn:
            name, status = self._require(conn, mid)
            if status != "active":
                raise StoreError(
                    f"model {mid} ({name}) is {status}; only active models can be promoted"
                )
            previous = conn.execute(
                "SELECT t.model_id FROM model_tags t JOIN models m USING (model_id) "
                "WHERE m.name = ? AND t.tag_name = ? AND t.model_id != ? "
                "ORDER BY t.model_id DESC LIMIT 1",
                (name, tag, mid),
            ).fetchone()
            if remove_from_others:
                conn.execute(
                    "DELETE FROM model_tags WHERE tag_name = ? AND model_id != ? AND model_id IN "
                    "(SELECT model_id FROM models WHERE name = ?)",
                    (tag, mid, name),
                )
            conn.execute(
                "INSERT OR IGNORE INTO model_tags (model_id, tag_name, created_at) "
                "VALUES (?, ?, ?)",
                (mid, tag, now),
            )
            self._event(
                conn,
                mid,
                "promoted",
                target=tag,
                previous=None if previous is None else previous[0],
                actor=actor,
                reason=reason,
            )
            if tag in STAGE_ALIASES:
                self._set_alias(conn, mid, name, tag, actor=actor, reason=reason)

    def set_alias(
        self,
        model_id: int,
        alias: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Point ``alias`` of the model's name at this version (moving it from another)."""
        mid = _model_id(model_id)
        self._alias(alias)
        with self.write() as conn:
            name, status = self._require(conn, mid)
            if status != "active":
                raise StoreError(f"model {mid} ({name}) is {status}; aliases need active models")
            self._set_alias(conn, mid, name, alias, actor=actor, reason=reason)

    def remove_alias(
        self, name: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        """Remove ``alias`` of model ``name``; an alias nobody holds is a ``StoreError``."""
        self._alias(alias)
        with self.write() as conn:
            row = conn.execute(
                "SELECT model_id FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
            if row is None:
                raise StoreError(f"model {name!r} has no alias {alias!r}")
            conn.execute("DELETE FROM model_aliases WHERE name = ? AND alias = ?", (name, alias))
            self._event(conn, row[0], "alias_removed", target=alias, actor=actor, reason=reason)

    def set_parent(
        self,
        model_id: int,
        parent_model_id: int | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Set (or clear, with None) a model's parent; a parent that is the model itself or
        one of its descendants is refused (it would make the lineage a cycle)."""
        mid = _model_id(model_id)
        parent = None if parent_model_id is None else _model_id(parent_model_id, "parent")
        with self.write() as conn:
            self._require(conn, mid)
            if parent is not None:
                self._require(conn, parent, "parent model")
                walk: list[int] = [mid]
                current: int | None = parent
                steps = 0
                while current is not None:
                    if current == mid:
                        path = " -> ".join(str(i) for i in [*walk, mid])
                        raise LineageError(
                            f"model {parent} cannot be the parent of model {mid}: it descends "
                            f"from it, so the lineage would be a cycle ({path})"
                        )
                    walk.append(current)
                    steps += 1
                    if steps > DEFAULT_MAX_LINEAGE_DEPTH:
                        raise LineageError(
                            f"the lineage above model {parent} is deeper than "
                            f"{DEFAULT_MAX_LINEAGE_DEPTH} steps or cyclic; repair it first"
                        )
                    row = conn.execute(
                        "SELECT parent_model_id FROM models WHERE model_id = ?", (current,)
                    ).fetchone()
                    current = None if row is None else row[0]
            conn.execute(
                "UPDATE models SET parent_model_id = ?, updated_at = ? WHERE model_id = ?",
                (parent, utc_now(), mid),
            )
            self._event(
                conn,
                mid,
                "parent_set",
                target=None if parent is None else str(parent),
                actor=actor,
                reason=reason,
            )

    def retire_model(
        self,
        model_id: int,
        *,
        force: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Mark a model retired. A model holding an alias (say ``production``) is refused
        unless ``force``, which removes its aliases (logged): retiring the production model
        by accident would leave the regression gate without a baseline."""
        mid = _model_id(model_id)
        with self.write() as conn:
            name, _ = self._require(conn, mid)
            aliases = self._aliases_of(conn, mid)
            if aliases and not force:
                raise StoreError(
                    f"model {mid} ({name}) holds alias(es) {aliases}; move them to another "
                    "version first (set_alias / promote_model), or pass force=True to remove them"
                )
            for alias in aliases:
                conn.execute(
                    "DELETE FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
                )
                self._event(conn, mid, "alias_removed", target=alias, actor=actor, reason=reason)
            conn.execute(
                "UPDATE models SET status = 'retired', updated_at = ? WHERE model_id = ?",
                (utc_now(), mid),
            )
            self._event(conn, mid, "retired", actor=actor, reason=reason)

    def delete_model(
        self,
        model_id: int,
        force: bool = False,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Delete a model with its tags and exports. Refused when it is tagged, holds an alias
        or is the parent of other models, unless ``force`` (children are detached; the audit
        log records it all)."""
        mid = _model_id(model_id)
        with self.write() as conn:
            name, _ = self._require(conn, mid)
            tags = self._tags(conn, mid)
            aliases = self._aliases_of(conn, mid)
            children = [
                r[0]
                for r in conn.execute(
                    "SELECT model_id FROM models WHERE parent_model_id = ? ORDER BY model_id",
                    (mid,),
                )
            ]
            if (tags or aliases or children) and not force:
                parts = []
                if tags:
                    parts.append(f"tags {tags}")
                if aliases:
                    parts.append(f"aliases {aliases}")
                if children:
                    parts.append(f"child models {children}")
                raise StoreError(
                    f"model {mid} ({name}) has {', '.join(parts)}; retire it instead, or pass "
                    "force=True to delete it anyway"
                )
            for alias in aliases:
                conn.execute(
                    "DELETE FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
                )
            for child in children:
                conn.execute(
                    "UPDATE models SET parent_model_id = NULL, updated_at = ? WHERE model_id = ?",
                    (utc_now(), child),
                )
                self._event(conn, child, "parent_set", target=None, actor=actor, reason=reason)
            self._event(conn, mid, "deleted", actor=actor, reason=reason)
            conn.execute("DELETE FROM models WHERE model_id = ?", (mid,))

    def add_export_format(
        self,
        model_id: int,
        export_format: str,
        export_path: str | os.PathLike[str],
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Record an export (ONNX file, TorchScript, ...) of a model; return its id."""
        mid = _model_id(model_id)
        (fmt, path, meta), *_ = self._export_rows({export_format: export_path}, metadata)
        with self.write() as conn:
            self._require(conn, mid)
            cursor = conn.execute(
                "INSERT INTO model_exports (model_id, export_format, export_path, metadata, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                (mid, fmt, path, meta, utc_now()),
            )
            conn.execute("UPDATE models SET updated_at = ? WHERE model_id = ?", (utc_now(), mid))
            return int(cursor.lastrowid or 0)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _tag(tag: Any) -> str:
        return _text(
            tag, "tag", pattern=_TAG, hint=" (letters, digits and _ . : -, up to 128 characters)"
        )

    @staticmethod
    def _alias(alias: Any) -> str:
        return _text(
            alias,
            "alias",
            pattern=_ALIAS,
            hint=" (lower-case letters, digits, _ and -, starting with a letter, e.g. "
            "'production')",
        )

    @staticmethod
    def _export_rows(
        exports: Any, metadata: Mapping[str, Any] | None = None
    ) -> list[tuple[str, str | None, str | None]]:
        if exports is None:
            return []
        meta = None if metadata is None else dumps_json(dict(metadata), "export metadata")
        if isinstance(exports, Mapping):
            items = [(f, None if p is None else os.fspath(p)) for f, p in exports.items()]
        elif isinstance(exports, (str, bytes)) or not isinstance(exports, Iterable):
            raise StoreError(
                "export_formats must be a list of format names or a dict format -> path, "
                f"got {exports!r}"
            )
        else:
            items = [(f, None) for f in exports]
        rows = []
        for fmt, path in items:
            _text(fmt, "export format")
            rows.append((fmt, path, meta))
        return rows

    def _require(
        self, conn: sqlite3.Connection, model_id: int, what: str = "model"
    ) -> tuple[str, str]:
        row = conn.execute(
            "SELECT name, status FROM models WHERE model_id = ?", (model_id,)
        ).fetchone()
        if row is None:
            raise self._missing(model_id, what)
        return str(row[0]), str(row[1])

    def _missing(self, model_id: int, what: str = "model") -> ModelNotFoundError:
        return ModelNotFoundError(
            f"{what} {model_id} is not in the registry {self.path}; list_models(status=None) "
            "shows the registered models"
        )

    def _set_alias(
        self,
        conn: sqlite3.Connection,
        model_id: int,
        name: str,
        alias: str,
        *,
        actor: str | None,
        reason: str | None,
    ) -> None:
        row = conn.execute(
            "SELECT model_id FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchone()
        previous = None if row is None else int(row[0])
        if previous == model_id:
            return
        conn.execute(
            "INSERT INTO model_aliases (name, alias, model_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name, alias) DO UPDATE SET model_id = excluded.model_id, "
            "updated_at = excluded.updated_at",
            (name, alias, model_id, utc_now()),
        )
        self._event(
            conn, model_id, "alias_set", target=alias, previous=previous, actor=actor, reason=reason
        )

    def _event(
        self,
        conn: sqlite3.Connection,
        model_id: int,
        action: str,
        *,
        target: str | None = None,
        previous: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        name, version = conn.execute(
            "SELECT name, version FROM models WHERE model_id = ?", (model_id,)
        ).fetchone()
        conn.execute(
            "INSERT INTO model_events (model_id, name, version, action, target, "
            "previous_model_id, actor, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model_id,
                name,
                version,
                action,
                target,
                previous,
                _optional_text(actor, "actor"),
                _optional_text(reason, "reason"),
                utc_now(),
            ),
        )

    @staticmethod
    def _row(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models {where}", tuple(args)
        ).fetchone()
        return row

    @staticmethod
    def _parse(row: Sequence[Any]) -> dict[str, Any]:
        record = dict(zip(_MODEL_COLUMNS, row, strict=True))
        record["metrics"] = loads_json(record["metrics"]) or {}
        record["metadata"] = loads_json(record["metadata"]) or {}
        return record

    @staticmethod
    def _tags(conn: sqlite3.Connection, model_id: int) -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT tag_name FROM model_tags WHERE model_id = ? ORDER BY tag_name", (model_id,)
            )
        ]

    @staticmethod
    def _aliases_of(conn: sqlite3.Connection, model_id: int) -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT alias FROM model_aliases WHERE model_id = ? ORDER BY alias", (model_id,)
            )
        ]

    def _full(self, conn: sqlite3.Connection, row: Sequence[Any]) -> dict[str, Any]:
        record = self._parse(row)
        mid = record["model_id"]
        record["tags"] = self._tags(conn, mid)
        record["aliases"] = self._aliases_of(conn, mid)
        exports = [
            {
                "export_id": r[0],
                "export_format": r[1],
                "export_path": r[2],
                "metadata": loads_json(r[3]),
                "created_at": r[4],
            }
            for r in conn.execute(
                "SELECT export_id, export_format, export_path, metadata, created_at "
                "FROM model_exports WHERE model_id = ? ORDER BY export_id",
                (mid,),
            )
        ]
        record["exports"] = exports
        record["export_formats"] = list(dict.fromkeys(e["export_format"] for e in exports))
        return record
