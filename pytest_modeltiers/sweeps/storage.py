"""Where a sweep's Optuna study lives: a journal file next to the experiment database by
default, or any storage Optuna can open, so several processes or machines share one study.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_modeltiers.errors import ConfigError

__all__ = ["JOURNAL_PREFIX", "default_journal_path", "describe_storage", "open_storage"]

#: ``journal:PATH`` names a journal file explicitly (a bare path means the same).
JOURNAL_PREFIX = "journal:"


def default_journal_path(db_path: str | os.PathLike[str]) -> Path:
    """``experiments.db`` -> ``experiments.optuna.journal`` in the same folder."""
    path = Path(db_path)
    return path.with_name(f"{path.stem}.optuna.journal")


def describe_storage(storage: Any, db_path: str | os.PathLike[str]) -> str:
    """The storage as a user would write it (``--storage``), for tables and messages."""
    if storage is None:
        return f"{JOURNAL_PREFIX}{default_journal_path(db_path)}"
    if isinstance(storage, (str, os.PathLike)):
        text = os.fspath(storage)
        if "://" in text:
            return _hide_password(text)
        return text if text.startswith(JOURNAL_PREFIX) else f"{JOURNAL_PREFIX}{text}"
    return type(storage).__name__


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def open_storage(storage: Any, db_path: str | os.PathLike[str]) -> Any:
    """An Optuna storage for ``storage``:

    - None: the journal file ``default_journal_path(db_path)``;
    - ``journal:PATH`` or a path: a journal file (``JournalFileBackend``), which several
      processes share through its file lock;
    - a URL (``sqlite:///sweeps.db``, ``postgresql://...``, ``mysql://...``): an RDB storage,
      for workers on several machines;
    - an ``optuna.storages.BaseStorage``: used as it is.
    """
    import optuna

    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if storage is not None and not isinstance(storage, (str, os.PathLike)):
        raise ConfigError(
            "storage must be an Optuna storage URL, a journal file path or an "
            f"optuna.storages.BaseStorage, got {type(storage).__name__}"
        )
    text = os.fspath(storage) if storage is not None else None
    if text is not None and "://" in text:
        try:
            return optuna.storages.get_storage(text)
        except Exception as exc:  # a bad URL, a missing driver, a server that is down
            raise ConfigError(
                f"cannot open the sweep storage {_hide_password(text)}: {type(exc).__name__}: {exc}"
            ) from None
    if text is None:
        path = default_journal_path(db_path)
    else:
        path = Path(text.removeprefix(JOURNAL_PREFIX)).expanduser()
    if path.is_dir():
        raise ConfigError(f"the sweep storage {path} is a folder; name a journal file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(path))
    except OSError as exc:
        raise ConfigError(f"cannot open the sweep journal {path}: {exc}") from None
    return optuna.storages.JournalStorage(backend)
