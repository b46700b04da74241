"""Crash-safe file writes: a reader sees the old file or the new one, never a partial one.

PYTEST_DONT_REWRITE

CI archives the health report after the session; a session killed while writing (a timeout, a
full disk, a ``KeyboardInterrupt``) must not leave a truncated JSON file that breaks the next
tool in the pipeline. The text goes to a temporary file in the target's directory (same
filesystem, so the rename is atomic), is flushed and fsynced, and then ``os.replace`` puts it in
place. On any failure the temporary file is removed and the previous file is untouched.

The callers serialise completely before calling this, so an exception while building the text
never touches the disk at all.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text"]

#: Mode of a newly created file (``mkstemp`` would leave 0600, unreadable to CI artifact steps).
NEW_FILE_MODE = 0o644


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Let ``write`` fill a temporary file next to ``path``, then move it into place atomically.

    Missing parent directories are created. An existing file keeps its permission bits; a new
    one gets ``NEW_FILE_MODE``. If ``write`` raises, nothing is left behind and ``path`` is
    untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX). Filesystems that cannot fsync a directory say so with
    ``OSError``; the file is already in place then, so that is not a failure of the write."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
