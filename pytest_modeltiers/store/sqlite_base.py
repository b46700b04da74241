"""SQLite plumbing shared by the stores: connections, transactions, schema versions, timestamps.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.jsonio import dumps, find_nonfinite_string, restore_floats

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SQLITE_HEADER",
    "SQLiteStore",
    "StoreError",
    "StoreFileError",
    "StoreSchema",
    "check_database_file",
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

    ``kind`` is the name shown in messages ("experiment database"), ``key`` the name callers
    pass to ``check_database_file`` ("experiment_db"), ``default_name`` the file name
    suggested when a user passes a directory.
    ``migrations[i]`` takes a file at schema version ``i`` to ``i + 1``; the current version is
    ``len(migrations)``. Migrations only ever append: a released step is never edited, because
    files written by it exist on users' disks.
    """

    kind: str
    key: str
    default_name: str
    application_id: int
    migrations: tuple[Migration, ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


def utc_now() -> str:
    """The one timestamp format of every store: ``2024-05-01T12:00:00.123456Z`` (UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps_json(value: Any, what: str, *, non_finite: bool = False) -> str:
    """Serialise ``value`` as strict JSON, or fail naming ``what`` (never a lossy ``str()``).

    With ``non_finite``, for measured values (a diverged run's loss is worth recording), a
    non-finite float is written as every file of the package writes it (``"nan"``, ``"inf"``,
    ``"-inf"``, see ``jsonio``) and ``loads_json(..., non_finite=True)`` reads it back as the
    float; those three strings are then refused as data, so the round trip is exact. Without
    it (settings, where a NaN is a bug) a non-finite float is an error.
    """
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except TypeError as exc:
        raise _not_serialisable(what, exc) from exc
    except ValueError as exc:
        if not non_finite:
            raise _not_serialisable(what, exc) from exc
        try:  # non-finite floats (or a cycle): jsonable spells the floats
            text = dumps(value, where=what, sort_keys=True)
        except (TypeError, ValueError, RecursionError) as again:
            raise _not_serialisable(what, again) from exc
    if non_finite:
        found = find_nonfinite_string(value, what)
        if found is not None:
            raise StoreError(
                f"{found} is one of the strings 'nan', 'inf', '-inf', which the stores read back "
                "as non-finite floats; store the float itself (math.nan, math.inf) or another "
                "string"
            )
    return text


def _not_serialisable(what: str, exc: Exception) -> StoreError:
    return StoreError(
        f"{what} is not JSON-serialisable ({exc}); store plain dicts, lists, strings, "
        "finite numbers, booleans and None (convert paths with str(), tensors with .item() "
        "or .tolist())"
    )


def loads_json(text: str | None, *, non_finite: bool = False) -> Any:
    """Parse a JSON column; SQL NULL stays None. With ``non_finite`` (a column written by
    ``dumps_json(..., non_finite=True)``), ``"nan"``, ``"inf"`` and ``"-inf"`` become floats."""
    if text is None:
        return None
    value = json.loads(text)
    return restore_floats(value) if non_finite else value


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a store class's schema, so ``check_database_file`` knows every kind of
        file (and can tell a user which kind a misplaced file is)."""
        super().__init_subclass__(**kwargs)
        schema = cls.__dict__.get("schema")
        if isinstance(schema, StoreSchema):
            _SCHEMAS[schema.key] = schema

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
        _inspect_file(self.path, self.schema)  # read-only: nothing is written to a foreign file
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
    """A migration must leave no dangling reference (older files, whose foreign
    keys were inert, could hold some)."""
    problems: Sequence[Any] = conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        table, rowid, parent, _ = problems[0]
        raise StoreFileError(
            f"{kind} {path}: {len(problems)} row(s) reference missing rows (first: {table} "
            f"rowid {rowid} -> {parent}); the file was changed outside pytest-modeltiers; "
            "repair or remove those rows with the sqlite3 shell"
        )


# -- identifying a file without touching it ------------------------------------------------

#: Every store's schema by key ("experiment_db", "model_registry"), filled as the store classes
#: are defined (the ``store`` package imports them all, so importing this module fills it).
_SCHEMAS: dict[str, StoreSchema] = {}

#: Filesystems that hold no user files: a database path there can be neither read nor created.
_VIRTUAL_FILESYSTEMS = frozenset(
    {"proc", "sysfs", "devpts", "cgroup", "cgroup2", "debugfs", "securityfs", "tracefs",
     "configfs", "pstore", "bpf", "efivarfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc"}
)  # fmt: skip

_HEADER_SIZE = 100


@dataclass(frozen=True)
class _FileIdentity:
    """What a SQLite file says it is: read from its header, or from SQLite read-only when a
    write-ahead log may hold a newer header."""

    application_id: int
    user_version: int
    tables: tuple[str, ...] | None  # None: the file has a schema, names not read
    has_schema: bool


def check_database_file(path: Path, kind: str) -> None:
    """Refuse, before anything runs, a path that cannot be a store of ``kind``.

    ``kind`` is ``"experiment_db"`` or ``"model_registry"``. Raises ``StoreError`` naming the
    problem and the fix for: a directory, a missing parent directory, a path on a virtual
    filesystem (``/proc``), an unreadable or read-only file, a file that is not SQLite
    (garbage, truncated), another application's SQLite database, the other kind of store, or
    a schema newer than this release. A path that does not exist in an existing directory is
    fine (the store creates it). Only reads: the file, its directory and any ``-wal`` file
    are left exactly as they were.
    """
    schema = _SCHEMAS.get(kind)
    if schema is None:
        raise StoreError(f"unknown store kind {kind!r}; use one of: {', '.join(sorted(_SCHEMAS))}")
    _inspect_file(Path(path), schema, parent_must_exist=True)


def _inspect_file(path: Path, schema: StoreSchema, *, parent_must_exist: bool = False) -> None:
    """Identify ``path`` read-only and raise ``StoreFileError`` unless ``schema``'s store can
    open it: the one gate before a connection, which would already change a foreign file."""
    what = f"{schema.kind} {path}"
    if str(path) in ("", "."):
        raise StoreFileError(f"{schema.kind} needs a file path, got {str(path)!r}")
    try:
        info = path.stat()
    except FileNotFoundError:
        _check_new_file_location(path, schema, parent_must_exist=parent_must_exist)
        return
    except NotADirectoryError as exc:
        raise StoreFileError(
            f"{what}: a parent of this path is a file, not a directory ({exc.strerror}); "
            "pass a path inside a directory"
        ) from exc
    except OSError as exc:
        raise StoreFileError(
            f"{what} cannot be read ({exc.strerror or exc}); check the path and its permissions"
        ) from exc
    _check_virtual_filesystem(path, schema)
    if stat.S_ISDIR(info.st_mode):
        raise StoreFileError(
            f"{what} is a directory; pass a file path, for example "
            f"{path / schema.default_name} (created if it does not exist)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise StoreFileError(
            f"{what} is not a regular file (a device, pipe or socket); pass the path of a "
            "database file, or a path that does not exist yet to create one"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_SIZE)
    except OSError as exc:
        raise StoreFileError(
            f"{what} cannot be read ({exc.strerror or exc}); check the path and its permissions"
        ) from exc
    if not head:
        _check_writable(path, schema)
        return  # an empty file: SQLite makes it a new database
    if not SQLITE_HEADER.startswith(head[: len(SQLITE_HEADER)]):
        raise StoreFileError(
            f"{what} is not a SQLite database (it starts with {head[:16]!r}); pass the path "
            "of a database written by pytest-modeltiers, or a path that does not exist yet "
            "to create one"
        )
    if len(head) < _HEADER_SIZE:
        raise _truncated(path, schema, f"only {len(head)} bytes, shorter than SQLite's header")
    identity = _identify(path, schema, head, info.st_size)
    _check_identity(path, schema, identity)
    _check_writable(path, schema)


def _identify(path: Path, schema: StoreSchema, head: bytes, size: int) -> _FileIdentity:
    (page_size,) = struct.unpack(">H", head[16:18])
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _truncated(path, schema, f"its header names an impossible page size {page_size}")
    change_counter, page_count = struct.unpack(">II", head[24:32])
    (schema_cookie,) = struct.unpack(">I", head[40:44])
    (user_version,) = struct.unpack(">i", head[60:64])
    (application_id,) = struct.unpack(">i", head[68:72])
    (valid_for,) = struct.unpack(">I", head[92:96])
    if size % page_size:
        raise _truncated(
            path, schema, f"{size} bytes is not a whole number of {page_size}-byte pages"
        )
    wal = path.with_name(path.name + "-wal")
    try:
        wal_has_frames = wal.stat().st_size > 0
    except OSError:
        wal_has_frames = False
    # With frames in the log, another process may be checkpointing right now: it writes the
    # first page (the new page count) before the pages that grow the file, so a header that
    # counts more pages than the file holds is a write in progress, not a truncation. SQLite
    # itself judges such a file below.
    if valid_for == change_counter and page_count * page_size > size and not wal_has_frames:
        raise _truncated(
            path, schema, f"{size} bytes, but its header counts {page_count} pages of {page_size}"
        )
    if not wal_has_frames:
        return _FileIdentity(application_id, user_version, None, schema_cookie != 0)
    # A write-ahead log with frames may hold a newer first page than the file: ask SQLite,
    # read-only. The log (and its index) already exist, so opening creates nothing.
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            # One read transaction: read one by one, the three could come from before and
            # after another process's commit (its tables, but not yet its application_id).
            conn.execute("BEGIN")
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            user_version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = tuple(_table_names(conn))
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreFileError(
            f"{schema.kind} {path} (with its write-ahead log {wal.name}) cannot be read by "
            f"SQLite ({exc}); if another program is writing it, wait for it to finish, else "
            "restore the file from a backup or pass another path"
        ) from exc
    return _FileIdentity(application_id, user_version, tables, bool(tables))


def _check_identity(path: Path, schema: StoreSchema, identity: _FileIdentity) -> None:
    app_id, version = identity.application_id, identity.user_version
    if app_id == schema.application_id:
        if version > schema.version:
            raise StoreFileError(
                f"{schema.kind} {path} has schema version {version}, newer than this "
                f"pytest-modeltiers knows (up to {schema.version}); it was written by a newer "
                "release: upgrade (pip install -U pytest-modeltiers) or use another file"
            )
        return
    other = next((s for s in _SCHEMAS.values() if s.application_id == app_id), None)
    if other is not None:
        raise StoreFileError(
            f"{path} is another kind of pytest-modeltiers store (the {other.kind}), not a "
            f"pytest-modeltiers {schema.kind}; pass it where the {other.kind} is expected, "
            f"and give the {schema.kind} a file of its own"
        )
    if app_id == 0 and version == 0 and not identity.has_schema:
        return  # an empty SQLite database: ours to set up
    if identity.tables is None:
        found = "it already holds tables"
    else:
        found = f"tables: {', '.join(identity.tables) or 'none'}"
    raise StoreFileError(
        f"{path} is a SQLite database but not a pytest-modeltiers {schema.kind} "
        f"(application_id {app_id:#x}, schema version {version}, {found}); it was left "
        "untouched: pass another path (a new file is created), or move this file away"
    )


def _check_new_file_location(path: Path, schema: StoreSchema, *, parent_must_exist: bool) -> None:
    parent = path.parent
    try:
        parent_info = parent.stat()
    except FileNotFoundError:
        if parent_must_exist:
            raise StoreFileError(
                f"{schema.kind} {path}: the directory {parent} does not exist; create it "
                f"(mkdir -p {parent}) or pass a path in an existing directory"
            ) from None
        return
    except NotADirectoryError as exc:
        raise StoreFileError(
            f"{schema.kind} {path}: a parent of this path is a file, not a directory "
            f"({exc.strerror}); pass a path inside a directory"
        ) from exc
    except OSError as exc:
        raise StoreFileError(
            f"{schema.kind} {path}: its directory {parent} cannot be read "
            f"({exc.strerror or exc}); check the path and its permissions"
        ) from exc
    if not stat.S_ISDIR(parent_info.st_mode):
        raise StoreFileError(
            f"{schema.kind} {path}: {parent} is a file, not a directory; pass a path inside "
            "a directory"
        )
    _check_virtual_filesystem(path, schema)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreFileError(
            f"{schema.kind} {path} cannot be created: the directory {parent} is not writable; "
            "pass a path in a directory you can write to"
        )


def _check_writable(path: Path, schema: StoreSchema) -> None:
    """A store writes its file and a ``-wal`` and ``-shm`` next to it, even to read."""
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreFileError(
            f"{schema.kind} {path} is read-only (the file or its directory); a store writes "
            "to it and keeps a write-ahead log beside it: make both writable, or copy the "
            "file to a writable directory and pass the copy"
        )


def _check_virtual_filesystem(path: Path, schema: StoreSchema) -> None:
    """``/proc`` and its kind hold no user files: say so, instead of a late 'disk I/O error'
    (as root, ``os.access`` calls those directories writable)."""
    fstype = _filesystem_type(path)
    if fstype in _VIRTUAL_FILESYSTEMS:
        raise StoreFileError(
            f"{schema.kind} {path} is on the virtual {fstype!r} filesystem, which holds no "
            "database files; pass a path on a disk, for example "
            f"./{schema.default_name}"
        )


def _filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux mount table), or None if unknown."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def _truncated(path: Path, schema: StoreSchema, detail: str) -> StoreFileError:
    return StoreFileError(
        f"{schema.kind} {path} is a truncated or damaged SQLite file ({detail}); restore it "
        "from a backup, or pass another path (a new file is created)"
    )
