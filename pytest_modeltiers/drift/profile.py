"""A reference profile as data: its signals, the profile itself, and its JSON form with a hash.

PYTEST_DONT_REWRITE

Computing and comparing profiles (``distribution``) and storing them (``profile_io``) both
build on this module; a stored profile must come back exactly as written, so its JSON carries
a content hash that reading verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pytest_modeltiers.drift import statistics as ds
from pytest_modeltiers.errors import ModelTiersError

__all__ = [
    "FORMAT_NAME",
    "INPUT",
    "OUTPUT",
    "PROFILE_FORMAT",
    "CategoricalSignal",
    "NumericSignal",
    "Profile",
    "ProfileError",
    "Signal",
    "profile_from_dict",
    "profile_hash",
    "profile_to_dict",
]

#: Version of the profile layout; a file written by a newer layout is refused with the fix.
PROFILE_FORMAT = 1
INPUT = "input"
OUTPUT = "output"
Group = Literal["input", "output"]
#: The ``format`` field of every profile file, so another JSON file is recognised as not one.
FORMAT_NAME = "pytest-modeltiers profile"
_HASH_PREFIX = "sha256:"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ProfileError(ModelTiersError, ValueError):
    """A profile cannot be built, read or compared; the message names the problem and the fix."""


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True, eq=False)
class NumericSignal:
    """A numeric signal: sorted distinct finite values and how often each occurred.

    ``counts`` is None when every value occurred once. ``nonfinite`` counts NaN and infinite
    observations, which have no place on the number line and are reported, not compared.
    """

    group: str
    values: FloatArray
    counts: IntArray | None
    nonfinite: int = 0
    exact: bool = True

    kind = "numeric"

    @property
    def n(self) -> int:
        """Number of finite observations."""
        return int(self.values.size if self.counts is None else self.counts.sum())

    def sample(self) -> FloatArray:
        """The observations in ascending order (exactly the data when ``exact``)."""
        if self.counts is None:
            return self.values
        return np.repeat(self.values, self.counts)

    def summary(self) -> dict[str, Any]:
        """Human-readable statistics, stored next to the values in JSON."""
        if self.values.size == 0:
            return {"n": 0, "nonfinite": self.nonfinite}
        weights = None if self.counts is None else self.counts.astype(np.float64)
        mean = float(np.average(self.values, weights=weights))
        var = float(np.average((self.values - mean) ** 2, weights=weights))
        qs = ds.quantiles(self.sample(), np.array([0.01, 0.25, 0.5, 0.75, 0.99]))
        return {
            "n": self.n,
            "nonfinite": self.nonfinite,
            "distinct": int(self.values.size),
            "mean": mean,
            "std": math.sqrt(max(var, 0.0)),
            "min": float(self.values[0]),
            "p01": float(qs[0]),
            "p25": float(qs[1]),
            "median": float(qs[2]),
            "p75": float(qs[3]),
            "p99": float(qs[4]),
            "max": float(self.values[-1]),
        }


@dataclass(frozen=True, eq=False)
class CategoricalSignal:
    """A categorical signal: the exact count of every label (ints or strings)."""

    group: str
    counts: dict[Any, int]

    kind = "categorical"
    exact = True

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))


Signal = NumericSignal | CategoricalSignal


def check_group(group: str) -> None:
    if group not in (INPUT, OUTPUT):
        raise ProfileError(f"signal group must be 'input' or 'output', got {group!r}")


# --------------------------------------------------------------------------- the profile


@dataclass(frozen=True, eq=False)
class Profile:
    """A dataset's signals plus what they describe (task, model, data source, sizes).

    ``signals`` maps names to :class:`NumericSignal` / :class:`CategoricalSignal`; each has a
    ``group`` (``"input"`` or ``"output"``). ``task`` holds the task's name, family and sizes so
    that a profile is never compared with one of another kind of data. Serialise with
    :func:`profile_to_dict` (JSON with a content hash).
    """

    signals: dict[str, Signal]
    task: dict[str, Any] = field(default_factory=dict)
    n_examples: int = 0
    source: str = ""
    model: dict[str, Any] | None = None
    created_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = PROFILE_FORMAT

    def group(self, group: str) -> dict[str, Signal]:
        """The signals of one group, ``"input"`` or ``"output"``."""
        check_group(group)
        return {name: sig for name, sig in self.signals.items() if sig.group == group}

    @property
    def has_outputs(self) -> bool:
        return any(sig.group == OUTPUT for sig in self.signals.values())

    @property
    def content_hash(self) -> str:
        return profile_hash(self)

    def describe(self) -> str:
        """One line for messages: task, examples, signal names, source."""
        names = ", ".join(self.signals) or "no signals"
        return (
            f"profile of {self.n_examples} {self.task.get('name', '?')} examples ({self.source}): "
            f"{names}"
        )


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
