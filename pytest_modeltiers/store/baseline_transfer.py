"""Baselines that travel: which run a ``--baseline-run`` names, and moving one between databases.

PYTEST_DONT_REWRITE

A CI job starts on a fresh machine, so the run a tier 5 gate compares with must come from an
earlier job. ``export_baseline`` writes one run of an experiment database to a folder: its row,
params, metrics and profiles (the drift reference) in ``manifest.json``, its checkpoint files
beside it, each profile also as a ``profiles/NAME.json`` file that ``--reference-profile``
reads, and the sha256 and size of every file in the manifest. ``import_baseline`` checks every
hash, then adds the run to another database in one transaction (its checkpoints copied into that
database's artifact folder), so a failure leaves the database as it was. A run imported before
is refused, never duplicated or overwritten.

``resolve_run`` reads a ``--baseline-run`` value: a run id, ``latest`` (the newest completed run
that saved a checkpoint) or a run name (the newest run of that name).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pytest_modeltiers.atomic import atomic_write, atomic_write_text
from pytest_modeltiers.digest import file_sha256_and_size
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.store.sqlite_base import StoreError

__all__ = [
    "LATEST",
    "MANIFEST",
    "BaselineError",
    "describe_runs",
    "export_baseline",
    "import_baseline",
    "resolve_run",
]

LATEST = "latest"
MANIFEST = "manifest.json"
FORMAT = "modeltiers-baseline"
FORMAT_VERSION = 1
#: The param an imported run carries: ``<source database identity>:<source run id>``.
ORIGIN_PARAM = "baseline_origin"
#: How many runs an error message lists.
LISTED_RUNS = 10


class BaselineError(StoreError):
    """A baseline cannot be found, exported or imported; the message names the fix."""


# -- naming a run ------------------------------------------------------------------------------


def describe_runs(db: ExperimentDB, limit: int = LISTED_RUNS) -> str:
    """The newest runs as ``3 'tier5-eval-lm_tiny' (completed, checkpoint)``, for messages."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT r.run_id, r.run_name, r.status, EXISTS (SELECT 1 FROM artifacts a WHERE "
            "a.run_id = r.run_id AND a.artifact_type = 'checkpoint') FROM runs r "
            "ORDER BY r.run_id DESC LIMIT ?",
            (limit + 1,),
        ).fetchall()
    if not rows:
        return "the database has no runs"
    shown = [
        f"{rid} {name!r} ({status}{', checkpoint' if has else ''})"
        for rid, name, status, has in rows[:limit]
    ]
    more = ", ..." if len(rows) > limit else ""
    return "its runs, newest first: " + ", ".join(shown) + more


def resolve_run(db: ExperimentDB, spec: str) -> int | None:
    """The run id ``spec`` names: an id, ``latest`` or a run name.

    ``latest`` is the newest completed run with a checkpoint artifact, None when there is none
    (a first CI run has no baseline yet). An id or name that is not there raises
    ``BaselineError`` listing the runs there are.
    """
    text = spec.strip()
    with db.read() as conn:
        if text.isdigit():
            row = conn.execute("SELECT run_id FROM runs WHERE run_id = ?", (int(text),)).fetchone()
        elif text == LATEST:
            row = conn.execute(
                "SELECT r.run_id FROM runs r WHERE r.status = 'completed' AND EXISTS (SELECT 1 "
                "FROM artifacts a WHERE a.run_id = r.run_id AND a.artifact_type = 'checkpoint') "
                "ORDER BY r.run_id DESC LIMIT 1"
            ).fetchone()
            return None if row is None else int(row[0])
        else:
            row = conn.execute(
                "SELECT run_id FROM runs WHERE run_name = ? ORDER BY run_id DESC LIMIT 1", (text,)
            ).fetchone()
    if row is None:
        what = f"no run {text}" if text.isdigit() else f"no run named {text!r}"
        raise BaselineError(
            f"{what} in {db.path}; {describe_runs(db)}. Pass one of these ids or names, or "
            f"{LATEST} (the newest completed run with a checkpoint)"
        )
    return int(row[0])


# -- export ------------------------------------------------------------------------------------


def _rows(conn: Any, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _json_value(value: Any) -> Any:
    """A SQLite value in strict JSON (a non-finite metric as its spelling)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _existing_database(path: str | os.PathLike[str]) -> ExperimentDB:
    file = Path(path)
    if not file.is_file():
        raise BaselineError(
            f"no experiment database at {file}; name the file a session wrote with --experiment-db"
        )
    return ExperimentDB(file)


def export_baseline(
    db_path: str | os.PathLike[str], spec: str, to: str | os.PathLike[str]
) -> tuple[int, Path]:
    """Write run ``spec`` of ``db_path`` to the new folder ``to``; (run id, manifest path).

    The folder is built beside ``to`` and renamed into place, so it exists whole or not at
    all; an existing non-empty ``to`` is refused.
    """
    target = Path(to)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BaselineError(
            f"{target} exists and is not an empty folder; remove it or export to a new folder"
        )
    db = _existing_database(db_path)
    run_id = resolve_run(db, spec)
    if run_id is None:
        raise BaselineError(
            f"--run {spec}: no completed run of {db.path} saved a checkpoint; "
            f"{describe_runs(db)}. Run tier 5 with --experiment-db {db.path} first"
        )
    with db.read() as conn:
        run = _rows(conn, "SELECT * FROM runs WHERE run_id = ?", (run_id,))[0]
        params = _rows(conn, "SELECT key, value FROM params WHERE run_id = ?", (run_id,))
        metrics = _rows(
            conn,
            "SELECT split, metric_name, value, step, epoch, timestamp FROM metrics "
            "WHERE run_id = ? ORDER BY metric_id",
            (run_id,),
        )
        profiles = _rows(
            conn,
            "SELECT name, profile, content_hash, created_at FROM profiles WHERE run_id = ? "
            "ORDER BY profile_id",
            (run_id,),
        )
        checkpoints = _rows(
            conn,
            "SELECT artifact_id, filepath, metadata, created_at FROM artifacts WHERE run_id = ? "
            "AND artifact_type = 'checkpoint' ORDER BY artifact_id",
            (run_id,),
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent.absolute()))
    try:
        files: dict[str, dict[str, Any]] = {}
        artifacts = []
        for index, artifact in enumerate(checkpoints):
            source = db.artifact_file(int(artifact["artifact_id"]))  # its hash checked
            relative = f"checkpoints/{index}-{source.name}"
            (staging / "checkpoints").mkdir(exist_ok=True)
            shutil.copyfile(source, staging / relative)
            artifacts.append(
                {
                    "file": relative,
                    "metadata": artifact["metadata"],
                    "created_at": artifact["created_at"],
                }
            )
        for profile in profiles:
            data = json.loads(profile["profile"])
            relative = f"profiles/{profile['name']}.json"
            if Path(relative).name != f"{profile['name']}.json":
                raise BaselineError(f"profile name {profile['name']!r} is not a plain file name")
            text = dumps(data, indent=1, sort_keys=True) + "\n"
            atomic_write_text(staging / relative, text)  # what --reference-profile reads
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            digest, size = file_sha256_and_size(path)
            files[path.relative_to(staging).as_posix()] = {"sha256": digest, "size": size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": {"database": str(db.path), "identity": db.identity, "run_id": run_id},
            "run": {k: v for k, v in run.items() if k != "run_id"},
            "params": {p["key"]: p["value"] for p in params},
            "metrics": [{k: _json_value(v) for k, v in m.items()} for m in metrics],
            "profiles": profiles,
            "checkpoints": artifacts,
            "files": files,
        }
        atomic_write_text(staging / MANIFEST, dumps(manifest, indent=1) + "\n")
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_id, target / MANIFEST


# -- import ------------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(
            f"{folder} holds no {MANIFEST}: it is not a baseline folder written by "
            "`modeltiers baseline export`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            f"{path} cannot be read as JSON ({exc}); it is truncated or corrupted: export the "
            "baseline again"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{path} is not a baseline manifest (format {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise BaselineError(
            f"{path} has format version {data.get('format_version')!r}; this release reads "
            f"version {FORMAT_VERSION}: import it with the release that exported it"
        )
    return data


def _verify_files(folder: Path, files: Any) -> None:
    """Every file the manifest lists exists with its recorded sha256 and size, and no other."""
    if not isinstance(files, dict) or not files:
        raise BaselineError(f"{folder / MANIFEST} lists no files")
    root = folder.resolve()
    for relative, expected in sorted(files.items()):
        path = (folder / relative).resolve()
        if root not in path.parents:
            raise BaselineError(f"{folder / MANIFEST} names {relative!r}, outside the folder")
        if not path.is_file():
            raise BaselineError(
                f"{relative} is missing from {folder}; the baseline folder is incomplete: "
                "download or export it again"
            )
        digest, size = file_sha256_and_size(path)
        if digest != expected.get("sha256") or size != expected.get("size"):
            raise BaselineError(
                f"{folder / relative} has sha256 {digest} ({size} bytes), the manifest "
                f"records {expected.get('sha256')} ({expected.get('size')} bytes): the file "
                "was changed or corrupted on the way; export the baseline again"
            )


def _metric_value(value: Any) -> float | None:
    if isinstance(value, str):
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[value]
    return None if value is None else float(value)


def _insert(conn: Any, table: str, values: dict[str, Any], columns: Iterable[str]) -> int:
    """Insert the keys of ``values`` that ``table`` has; the new row's id."""
    known = set(columns)
    kept = {k: v for k, v in values.items() if k in known}
    marks = ", ".join("?" for _ in kept)
    cursor = conn.execute(
        f"INSERT INTO {table} ({', '.join(kept)}) VALUES ({marks})", tuple(kept.values())
    )
    return int(cursor.lastrowid)


def import_baseline(folder: str | os.PathLike[str], db_path: str | os.PathLike[str]) -> int:
    """Add the baseline in ``folder`` to the database ``db_path`` (created if missing).

    Every file is checked against the manifest first. The run, params, metrics, profiles and
    checkpoint records are written in one transaction and the checkpoints copied into the
    database's artifact folder; on any failure nothing stays. Returns the new run id.
    """
    source = Path(folder)
    manifest = _read_manifest(source)
    _verify_files(source, manifest.get("files"))
    origin = manifest.get("source", {})
    origin_key = f"{origin.get('identity')}:{origin.get('run_id')}"
    db = ExperimentDB(db_path)
    db.identity  # noqa: B018 - read (and cached) now: artifact_path needs it inside the transaction
    copied: list[Path] = []
    try:
        with db.write() as conn:
            existing = conn.execute(
                "SELECT run_id FROM params WHERE key = ? AND value = ?",
                (ORIGIN_PARAM, json.dumps(origin_key)),
            ).fetchone()
            if existing is not None:
                raise BaselineError(
                    f"{db.path} already holds this baseline as run {existing[0]} (run "
                    f"{origin.get('run_id')} of {origin.get('database')}); use --baseline-run "
                    f"{existing[0]}, or import it into another database"
                )
            columns = {t: _columns(conn, t) for t in ("runs", "params", "metrics", "profiles")}
            run_id = _insert(conn, "runs", dict(manifest["run"]), columns["runs"])
            params = {**manifest.get("params", {}), ORIGIN_PARAM: json.dumps(origin_key)}
            for key, value in params.items():
                _insert(
                    conn,
                    "params",
                    {"run_id": run_id, "key": key, "value": value, "logged_at": _now(manifest)},
                    columns["params"],
                )
            for metric in manifest.get("metrics", []):
                row = {**metric, "run_id": run_id, "value": _metric_value(metric.get("value"))}
                _insert(conn, "metrics", row, columns["metrics"])
            for profile in manifest.get("profiles", []):
                _insert(conn, "profiles", {**profile, "run_id": run_id}, columns["profiles"])
            for checkpoint in manifest.get("checkpoints", []):
                file = source / checkpoint["file"]
                target = db.artifact_path(run_id, Path(checkpoint["file"]).name)
                if target.exists():
                    raise BaselineError(
                        f"{target} exists already; {db.path}'s artifact folder holds a file "
                        "of a run that is not in the database: move it away and import again"
                    )
                copied.append(target)
                _copy_atomically(file, target)
                digest, size = file_sha256_and_size(target)
                conn.execute(
                    "INSERT INTO artifacts (run_id, artifact_type, filepath, metadata, "
                    "created_at, sha256, size_bytes) VALUES (?, 'checkpoint', ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        target.resolve().relative_to(db.path.parent.resolve()).as_posix(),
                        checkpoint.get("metadata"),
                        checkpoint.get("created_at") or _now(manifest),
                        digest,
                        size,
                    ),
                )
    except BaseException:
        for path in copied:
            path.unlink(missing_ok=True)
        raise
    return run_id


def _copy_atomically(source: Path, target: Path) -> None:
    def write(handle: Any) -> None:
        with source.open("rb") as reader:
            shutil.copyfileobj(reader, handle, 1 << 20)

    atomic_write(target, write)


def _columns(conn: Any, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _now(manifest: dict[str, Any]) -> str:
    run = manifest.get("run", {})
    return str(run.get("updated_at") or run.get("created_at") or "")
