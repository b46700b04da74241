"""Profiles on disk and in the experiment database: JSON with a content hash and versions.

PYTEST_DONT_REWRITE

A stored profile is the reference CI compares against, possibly months later, so it must come
back exactly as written or not at all:

- **Exact values.** Numeric values and counts are stored as base64 of little-endian float64 /
  int64 bytes (no decimal round trip, a third of the size of a JSON number list); categories as
  parallel ``labels`` / ``counts`` lists (labels keep their JSON type, int or string). Each
  numeric signal also carries a readable ``summary`` (n, mean, std, quantiles) for people.
- **A content hash.** ``content_hash`` is ``"sha256:"`` plus the SHA-256 of the canonical JSON
  (sorted keys, no spaces, strict) of everything else. Loading recomputes it; a file edited by
  hand or damaged on the way is refused naming the expected and found hashes, never half-read.
- **Versions.** ``format_version`` is the layout (a newer one than this release reads is refused
  with "upgrade pytest-modeltiers"); ``versions`` records the package and numpy versions that
  wrote it, for audits.

``--reference-profile`` accepts ``file.json``, ``RUN_ID`` (the run's profile named
``dataset_profile``, the name :func:`log_profile_to_db` uses by default) or ``RUN_ID:NAME``;
run ids need ``--experiment-db``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

import numpy as np
import numpy.typing as npt

from pytest_modeltiers.monitoring.profiles import (
    PROFILE_FORMAT,
    CategoricalSignal,
    NumericSignal,
    Profile,
    ProfileError,
)

if TYPE_CHECKING:
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

#: The name a profile is stored under in a run when none is given (the guide's name).
DEFAULT_PROFILE_NAME = "dataset_profile"
#: The ``format`` field of every profile file, so another JSON file is recognised as not one.
FORMAT_NAME = "pytest-modeltiers profile"
_HASH_PREFIX = "sha256:"
_RUN_SPEC = re.compile(r"^(?P<run>\d+)(?::(?P<name>.+))?$")


# --------------------------------------------------------------------------- encoding


def _encode_array(values: npt.NDArray[Any], dtype: str) -> dict[str, str]:
    data = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def _decode_array(obj: Any, dtype: str, where: str) -> npt.NDArray[Any]:
    if not isinstance(obj, Mapping) or obj.get("dtype") != dtype or "base64" not in obj:
        raise ProfileError(f"{where}: expected {{'dtype': '{dtype}', 'base64': ...}}")
    try:
        raw = base64.b64decode(str(obj["base64"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProfileError(f"{where}: the base64 data is damaged ({exc})") from None
    if len(raw) % 8:
        raise ProfileError(f"{where}: {len(raw)} bytes is not a whole number of {dtype} values")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _signal_to_dict(sig: NumericSignal | CategoricalSignal) -> dict[str, Any]:
    if isinstance(sig, CategoricalSignal):
        labels = list(sig.counts)
        try:
            labels.sort()
        except TypeError:  # ints and strings mixed: order by their text, still deterministic
            labels.sort(key=repr)
        return {
            "kind": "categorical",
            "group": sig.group,
            "labels": labels,
            "counts": [int(sig.counts[k]) for k in labels],
        }
    return {
        "kind": "numeric",
        "group": sig.group,
        "exact": sig.exact,
        "nonfinite": sig.nonfinite,
        "values": _encode_array(sig.values, "float64"),
        "counts": None if sig.counts is None else _encode_array(sig.counts, "int64"),
        "summary": sig.summary(),
    }


def _body(profile: Profile) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": profile.format_version,
        "versions": dict(profile.versions),
        "created_at": profile.created_at,
        "task": dict(profile.task),
        "model": None if profile.model is None else dict(profile.model),
        "source": profile.source,
        "n_examples": profile.n_examples,
        "signals": {name: _signal_to_dict(sig) for name, sig in profile.signals.items()},
    }


def _canonical(body: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(
            body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"the profile is not strict JSON: {exc}") from None
    return text.encode("utf-8")


def _digest(body: Mapping[str, Any]) -> str:
    return _HASH_PREFIX + hashlib.sha256(_canonical(body)).hexdigest()


def profile_hash(profile: Profile) -> str:
    """``"sha256:<hex>"`` of the profile's canonical JSON (its identity for storage)."""
    return _digest(_body(profile))


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """The profile as strict JSON values, with its ``content_hash``."""
    body = _body(profile)
    return {**body, "content_hash": _digest(body)}


# --------------------------------------------------------------------------- decoding


def _numeric_from_dict(name: str, obj: Mapping[str, Any], group: str) -> NumericSignal:
    where = f"signal {name!r}"
    values = _decode_array(obj.get("values"), "float64", f"{where} values")
    counts_obj = obj.get("counts")
    counts = None
    if counts_obj is not None:
        counts = _decode_array(counts_obj, "int64", f"{where} counts")
        if counts.size != values.size or (counts.size and int(counts.min()) < 1):
            raise ProfileError(f"{where}: counts must be positive, one per value")
    if values.size and (not np.all(np.isfinite(values)) or not np.all(values[1:] > values[:-1])):
        raise ProfileError(f"{where}: values must be finite, distinct and in ascending order")
    nonfinite = obj.get("nonfinite", 0)
    exact = obj.get("exact", True)
    if not isinstance(nonfinite, int) or nonfinite < 0 or not isinstance(exact, bool):
        raise ProfileError(f"{where}: 'nonfinite' must be a count and 'exact' a boolean")
    return NumericSignal(group, values, counts, nonfinite, exact)


def _categorical_from_dict(name: str, obj: Mapping[str, Any], group: str) -> CategoricalSignal:
    labels, counts = obj.get("labels"), obj.get("counts")
    if (
        not isinstance(labels, list)
        or not isinstance(counts, list)
        or len(labels) != len(counts)
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts)
        or not all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in labels)
    ):
        raise ProfileError(
            f"signal {name!r}: 'labels' (ints or strings) and 'counts' (positive ints) must be "
            "lists of the same length"
        )
    if len(set(labels)) != len(labels):
        raise ProfileError(f"signal {name!r}: a label is listed twice")
    return CategoricalSignal(group, dict(zip(labels, counts, strict=True)))


def profile_from_dict(data: Mapping[str, Any], *, where: str = "the profile") -> Profile:
    """Rebuild a profile from :func:`profile_to_dict`'s form, verifying hash and format."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
        raise ProfileError(
            f'{where} is not a pytest-modeltiers profile (no "format": {FORMAT_NAME!r}); '
            "create one with compute_profile() and save_profile() or log_profile_to_db()"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ProfileError(f"{where} has an invalid format_version {version!r}")
    if version > PROFILE_FORMAT:
        raise ProfileError(
            f"{where} has format_version {version}, newer than the {PROFILE_FORMAT} this "
            "pytest-modeltiers reads; upgrade pytest-modeltiers"
        )
    stored = data.get("content_hash")
    body = {k: v for k, v in data.items() if k != "content_hash"}
    actual = _digest(body)
    if stored != actual:
        raise ProfileError(
            f"{where} fails its integrity check: content_hash is {stored!r} but the content "
            f"hashes to {actual!r}. It was edited or corrupted after it was written; recompute "
            "the reference profile from the reference data instead of repairing it."
        )
    signals_obj = data.get("signals")
    if not isinstance(signals_obj, Mapping):
        raise ProfileError(f"{where}: 'signals' must be an object")
    signals: dict[str, NumericSignal | CategoricalSignal] = {}
    for name, obj in signals_obj.items():
        if not isinstance(obj, Mapping) or obj.get("group") not in ("input", "output"):
            raise ProfileError(f"{where}: signal {name!r} needs a group 'input' or 'output'")
        group = str(obj["group"])
        if obj.get("kind") == "numeric":
            signals[name] = _numeric_from_dict(name, obj, group)
        elif obj.get("kind") == "categorical":
            signals[name] = _categorical_from_dict(name, obj, group)
        else:
            raise ProfileError(f"{where}: signal {name!r} has unknown kind {obj.get('kind')!r}")
    task = data.get("task") or {}
    model = data.get("model")
    n_examples = data.get("n_examples", 0)
    if not isinstance(task, Mapping) or not (model is None or isinstance(model, Mapping)):
        raise ProfileError(f"{where}: 'task' and 'model' must be objects")
    if not isinstance(n_examples, int) or n_examples < 0:
        raise ProfileError(f"{where}: 'n_examples' must be a count")
    return Profile(
        signals=signals,
        task=dict(task),
        n_examples=n_examples,
        source=str(data.get("source", "")),
        model=None if model is None else dict(model),
        created_at=str(data.get("created_at", "")),
        versions={str(k): str(v) for k, v in dict(data.get("versions") or {}).items()},
        format_version=version,
    )


# --------------------------------------------------------------------------- files


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """Write the profile as JSON, atomically (a crash leaves the old file or the new one)."""
    from pytest_modeltiers.atomic import atomic_write_text

    text = json.dumps(profile_to_dict(profile), indent=1, sort_keys=True, allow_nan=False)
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
    from pytest_modeltiers.store.experiment_db import ExperimentDB

    return db if isinstance(db, ExperimentDB) else ExperimentDB(db)


def log_profile_to_db(
    db: ExperimentDB | str | os.PathLike[str],
    run_id: SupportsIndex,
    profile: Profile,
    name: str = DEFAULT_PROFILE_NAME,
) -> int:
    """Store ``profile`` under ``name`` for a run of the experiment database; return its id.

    Storing the same profile again is a no-op; another profile under a taken name is an error
    (reference data is never overwritten). Errors are raised, not swallowed as the guide did.
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
