"""SQLite plumbing shared by the stores: connections, transactions, schema versions, timestamps.

PYTEST_DONT_REWRITE

The guide's stores opened a connection per call but never turned foreign keys on, mixed two
timestamp formats and had no schema version, so an old file silently lacked columns. Every
store here goes through this module instead:

- every connection runs ``PRAGMA foreign_keys=ON`` (SQLite's default is off, per connection),
  waits up to ``busy_timeout`` seconds for a lock instead of failing at once, and uses
  ``synchronous=NORMAL``, which in WAL mode survives a killed process (only a power cut can
  lose the last commits, and never leaves a corrupt file);
- the file is put in WAL journal mode once, so readers never block the writer;
- writes run in ``BEGIN IMMEDIATE`` transactions: the write lock is taken up front, so two
  processes never both read and then deadlock upgrading to a write, and a failure rolls the
  whole unit back (nothing is half-written);
- a store is identified by ``PRAGMA application_id`` and versioned by ``PRAGMA user_version``;
  ``migrations[i]`` moves a file from version ``i`` to ``i + 1``, all pending ones in one
  transaction when the file is opened, so two processes opening an old file migrate it once;
- timestamps are written by Python, UTC, ISO 8601 with a ``Z`` and microseconds, one fixed
  width, so they sort as text (never SQLite's ``CURRENT_TIMESTAMP``, which has another format).

A later ``ModelRegistry`` reuses it with its own ``StoreSchema``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pytest_modeltiers.errors import ModelTiersError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SQLITE_HEADER",
    "SQLiteStore",
    "StoreError",
    "StoreFileError",
    "StoreSchema",
    "dumps_json",
    "loads_json",
    "metric_value",
    "utc_now",
]

#: How long a connection waits for another process's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_S = 30.0

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"

Migration = Callable[[sqlite3.Connection], None]
_Store = TypeVar("_Store", bound="SQLiteStore")


class StoreError(ModelTiersError):
    """An experiment database or model registry refused an operation; the message says why."""


class StoreFileError(StoreError):
    """The file cannot be used as this store: not SQLite, another kind of file, or too new."""


@dataclass(frozen=True)
class StoreSchema:
    """What identifies one kind of store file and how to bring an older file up to date.

    ``migrations[i]`` takes a file at schema version ``i`` to ``i + 1``; the current version is
    ``len(migrations)``. Migrations only ever append: a released step is never edited, because
    files written by it exist on users' disks.
    """

    kind: str
    application_id: int
    migrations: tuple[Migration, ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


def utc_now() -> str:
    """The one timestamp format of every store: ``2024-05-01T12:00:00.123456Z`` (UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps_json(value: Any, what: str) -> str:
    """Serialise ``value`` as strict JSON, or fail naming ``what`` (never a lossy ``str()``)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} is not JSON-serialisable ({exc}); store plain dicts, lists, strings, "
            "finite numbers, booleans and None (convert paths with str(), tensors with .item() "
            "or .tolist())"
        ) from exc


def loads_json(text: str | None) -> Any:
    """Parse a JSON column; SQL NULL stays None."""
    return None if text is None else json.loads(text)


def metric_value(value: Any, what: str) -> float:
    """Convert a metric value (int, float, numpy or 0-d torch scalar) to ``float``.

    NaN and infinities are accepted: a diverged run is worth recording. A bool is refused,
    because ``True`` logged as a loss is almost always a bug in the caller.
    """
    if isinstance(value, bool):
        raise StoreError(f"{what} is a bool ({value!r}); log a number (1.0 or 0.0) explicitly")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} must be a real number, got {type(value).__name__} {value!r} ({exc})"
        ) from exc


class SQLiteStore:
    """Base of the SQLite stores: opens (creating or migrating) the file and hands out
    connections and transactions. Each thread and process gets its own connection, so one
    object is safe to use from several threads and after ``fork``. ``close()`` (or a ``with``
    block) releases this thread's connection."""

    schema: StoreSchema

    def __init__(self, path: str | Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            raise StoreError(
                f"{self.schema.kind} needs a file path, got {str(path)!r}: an in-memory "
                "database would be a different empty database on every connection; pass a "
                "file path (in tests, tmp_path / 'experiments.db')"
            )
        if busy_timeout <= 0:
            raise StoreError(f"busy_timeout must be > 0 seconds, got {busy_timeout!r}")
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self._local = threading.local()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's autocommit connection, foreign keys on, busy timeout set.

        SQLite errors (a locked database after the timeout, a corrupt page) come out as
        ``StoreError`` naming the file; the original is chained.
        """
        conn = self._connection()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process, opened on first use and kept.

        Kept because closing the last connection to a WAL file checkpoints it and deletes the
        WAL (an fsync every time), which made a connection per call about 20 ms per metric.
        Per thread because a ``sqlite3.Connection`` must stay in its thread; per process
        because one must never be used across ``fork`` (the child opens its own and leaves
        the inherited one alone).
        """
        local = self._local
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and getattr(local, "pid", None) == pid:
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        local.conn, local.pid = conn, pid
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's data is freed).

        The object stays usable: the next call opens a new connection.
        """
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and getattr(local, "pid", None) == os.getpid():
            conn.close()
        local.conn = local.pid = None

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block succeeds, rolled back
        (nothing written) if it raises."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several queries of one call see one snapshot."""
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _wrap(self, exc: sqlite3.Error) -> StoreError:
        message = str(exc)
        if "locked" in message or "busy" in message:
            return StoreError(
                f"{self.schema.kind} {self.path}: {message} after waiting {self.busy_timeout:g} s "
                "for another process's write; raise busy_timeout or shorten that process's "
                "transactions"
            )
        return StoreError(f"{self.schema.kind} {self.path}: {message}")

    # -- opening and migrating -------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_header()
        with self.connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreFileError(
                    f"{self.schema.kind} {self.path}: SQLite refused WAL journal mode "
                    f"(got {mode!r}); put the file on a local filesystem, not a network share"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _check_header(self) -> None:
        """Recognise a file that is not SQLite before SQLite says only 'file is not a
        database'."""
        try:
            with self.path.open("rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreFileError(
                f"{self.schema.kind} {self.path} cannot be read ({exc}); check the path and "
                "its permissions"
            ) from exc
        if head and head != SQLITE_HEADER:
            raise StoreFileError(
                f"{self.schema.kind} {self.path} is not a SQLite database (it starts with "
                f"{head[:16]!r}); pass the path of a database written by pytest-modeltiers, "
                "or a path that does not exist yet to create one"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        schema = self.schema
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = _table_names(conn)
        if app_id != schema.application_id and (app_id != 0 or version != 0 or tables):
            found = ", ".join(tables) or "none"
            raise StoreFileError(
                f"{self.path} is a SQLite database but not a pytest-modeltiers {schema.kind} "
                f"(application_id {app_id}, schema version {version}, tables: {found}); "
                "pass another path (a new file is created), or move this file away"
            )
        if version > schema.version:
            raise StoreFileError(
                f"{schema.kind} {self.path} has schema version {version}, newer than this "
                f"pytest-modeltiers knows (up to {schema.version}); it was written by a newer "
                "release: upgrade (pip install -U pytest-modeltiers) or use another file"
            )
        if version == 0:
            conn.execute(f"PRAGMA application_id={int(schema.application_id)}")
        for step in range(version, schema.version):
            schema.migrations[step](conn)
            conn.execute(f"PRAGMA user_version={step + 1}")
        if 0 < version < schema.version:  # a full scan: only when an old file was migrated
            _check_foreign_keys(conn, self.path, schema.kind)

    def schema_version(self) -> int:
        """The file's schema version (equal to ``schema.version`` once opened)."""
        with self.connect() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    return [row[0] for row in rows]


def _check_foreign_keys(conn: sqlite3.Connection, path: Path, kind: str) -> None:
    """A migration must leave no dangling reference (files from the guide, whose foreign
    keys were inert, could hold some)."""
    problems: Sequence[Any] = conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        table, rowid, parent, _ = problems[0]
        raise StoreFileError(
            f"{kind} {path}: {len(problems)} row(s) reference missing rows (first: {table} "
            f"rowid {rowid} -> {parent}); the file was changed outside pytest-modeltiers; "
            "repair or remove those rows with the sqlite3 shell"
        )
