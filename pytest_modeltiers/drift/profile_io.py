"""Profiles on disk and in the experiment database: JSON with a content hash and versions.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import SupportsIndex

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.drift.profile import (
    FORMAT_NAME,
    Profile,
    ProfileError,
    profile_from_dict,
    profile_hash,
    profile_to_dict,
)
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.store.experiment_db import ExperimentDB

__all__ = [
    "DEFAULT_PROFILE_NAME",
    "FORMAT_NAME",
    "load_profile",
    "load_profile_from_db",
    "log_profile_to_db",
    "profile_from_dict",
    "profile_hash",
    "profile_to_dict",
    "resolve_reference_profile",
    "save_profile",
]

#: The name a profile is stored under in a run when none is given.
DEFAULT_PROFILE_NAME = "dataset_profile"
_RUN_SPEC = re.compile(r"^(?P<run>\d+)(?::(?P<name>.+))?$")


# --------------------------------------------------------------------------- files


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """Write the profile as JSON, atomically (a crash leaves the old file or the new one)."""
    text = dumps(profile_to_dict(profile), indent=1, sort_keys=True)
    return atomic_write_text(path, text + "\n")


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read a profile file written by :func:`save_profile`, verifying its content hash."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"profile file {file} does not exist (check the path)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile file {file}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"profile file {file} is not valid JSON ({exc.msg} at line {exc.lineno}); it is "
            "truncated or corrupted: recompute the reference profile"
        ) from None
    return profile_from_dict(data, where=f"profile file {file}")


# --------------------------------------------------------------------------- the database


def _db(db: ExperimentDB | str | os.PathLike[str]) -> ExperimentDB:
    return db if isinstance(db, ExperimentDB) else ExperimentDB(db)


def log_profile_to_db(
    db: ExperimentDB | str | os.PathLike[str],
    run_id: SupportsIndex,
    profile: Profile,
    name: str = DEFAULT_PROFILE_NAME,
) -> int:
    """Store ``profile`` under ``name`` for a run of the experiment database; return its id.

    Storing the same profile again is a no-op; another profile under a taken name is an error
    (reference data is never overwritten). Errors are raised, never swallowed.
    """
    data = profile_to_dict(profile)
    return _db(db).log_profile(run_id, name, data, data["content_hash"])


def load_profile_from_db(
    db: ExperimentDB | str | os.PathLike[str],
    run_id: SupportsIndex,
    name: str = DEFAULT_PROFILE_NAME,
) -> Profile:
    """A profile stored with :func:`log_profile_to_db`, its content hash verified."""
    row = _db(db).get_profile(run_id, name)
    where = f"profile {name!r} of run {int(run_id)}"
    profile = profile_from_dict(row["profile"], where=where)
    if row["content_hash"] != row["profile"].get("content_hash"):
        raise ProfileError(
            f"{where}: the database records content hash {row['content_hash']} but the stored "
            f"profile carries {row['profile'].get('content_hash')}; the row was altered"
        )
    return profile


def resolve_reference_profile(
    spec: str,
    *,
    db_path: str | os.PathLike[str] | None = None,
    rootdir: str | os.PathLike[str] | None = None,
) -> tuple[Profile, str]:
    """Load what ``--reference-profile`` names; return the profile and where it came from.

    ``spec`` is a ``.json`` file (relative to ``rootdir`` when not absolute), ``RUN_ID`` or
    ``RUN_ID:NAME`` of the experiment database at ``db_path``.
    """
    text = spec.strip()
    match = _RUN_SPEC.match(text)
    if match is not None:
        if db_path is None:
            raise ProfileError(
                f"--reference-profile {spec} names a run of the experiment database, but no "
                "database is set: add --experiment-db PATH (or pass a profile .json file)"
            )
        name = match["name"] or DEFAULT_PROFILE_NAME
        run = int(match["run"])
        return load_profile_from_db(db_path, run, name), f"run {run} profile {name!r}"
    path = Path(text)
    if not path.is_absolute() and rootdir is not None:
        path = Path(rootdir) / path
    if path.suffix.lower() != ".json" and not path.is_file():
        raise ProfileError(
            f"--reference-profile {spec!r} is neither a profile .json file nor a run id; use "
            "path/to/profile.json, RUN_ID or RUN_ID:NAME (with --experiment-db)"
        )
    return load_profile(path), f"file {path}"
