"""Small helpers shared by the config modules: suggestions, type predicates and JSON file I/O.

PYTEST_DONT_REWRITE

They live in one private module so that every config error is phrased the same way ("did you
mean ...?", "file:line:col") and every config file is written the same, crash-safe way.
Standard library only: importing the config layer must never import torch.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_modeltiers.atomic import atomic_write_text

__all__ = [
    "Rule",
    "atomic_write_text",
    "bool_rule",
    "bulleted",
    "choice_rule",
    "closest",
    "did_you_mean",
    "int_rule",
    "is_int",
    "is_json_value",
    "is_number",
    "output_path_error",
    "positive_rule",
    "range_rule",
    "read_json_object",
    "shown",
    "str_rule",
]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """Return the choice most similar to ``word``, or None when nothing is close.

    Typos in config keys are the most common config error; naming the intended key turns a
    lookup in the docs into a one-character fix.
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    match = closest(word, choices)
    return f" (did you mean {match!r}?)" if match is not None else ""


def is_int(value: object) -> bool:
    """True for ints but not bools: ``True`` as a batch size is a bug, not the number 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for finite ints and floats (not bools): NaN and inf have no place in a config, nor
    an integer too large to become a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_json_value(value: object) -> bool:
    """True when ``value`` survives a strict JSON round trip (str keys, finite numbers)."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(is_json_value(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_json_value(v) for k, v in value.items())
    return False


def bulleted(header: str, errors: Iterable[str]) -> str:
    """Join a header and one bullet per error, so that every failure is visible at once."""
    return header + "".join(f"\n  - {error}" for error in errors)


def read_json_object(path: str | os.PathLike[str], error: type[Exception]) -> dict[str, Any]:
    """Read a JSON object from ``path``, raising ``error`` with the file (and line) on failure.

    The caller passes its own error class so that a bad task file raises ``TaskSpecError`` and a
    bad training config raises ``ConfigError``. The JSON is read strictly, so that no value can
    crash a consumer later: ``NaN`` and ``Infinity`` (which Python's ``json`` accepts), numbers
    too large for a float (``1e400``) and integers beyond 64 bits are refused with the key that
    holds them, and a document nested too deeply to parse is one error, not a RecursionError.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{source}: cannot read the file: {exc}") from exc
    try:
        data = json.loads(
            text,
            parse_constant=_OutOfRange,
            parse_float=_strict_float,
            parse_int=_strict_int,
        )
    except json.JSONDecodeError as exc:
        raise error(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise error(
            f"{source}: the JSON nests too deeply to read (more than about "
            f"{sys.getrecursionlimit()} levels of brackets); a config is an object of settings "
            "a few levels deep"
        ) from None
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    problem = _first_out_of_range(data)
    if problem is not None:
        key, value = problem
        raise error(f"{source}: {key}: {value.describe()}")
    return data


#: Integers a config may hold: what SQLite and every 64-bit consumer can store.
_INT_RANGE = (-(2**63), 2**63 - 1)


class _OutOfRange:
    """A number (or ``NaN``/``Infinity``) no config value may be, kept as written."""

    def __init__(self, text: str) -> None:
        self.text = text

    def describe(self) -> str:
        written = (
            self.text
            if len(self.text) <= 30
            else f"{self.text[:12]}... ({len(self.text)} characters)"
        )
        if self.text.lstrip("-") in ("NaN", "Infinity"):
            return f"{written} is not a number a config can hold; write a finite number"
        return (
            f"{written} is out of range: numbers in a config must be finite floats or integers "
            f"within 64 bits (from {_INT_RANGE[0]} to {_INT_RANGE[1]})"
        )


def _strict_float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else _OutOfRange(text)


def _strict_int(text: str) -> int | _OutOfRange:
    if len(text.lstrip("-")) > 19:  # never convert 10,000 digits (Python refuses > 4,300)
        return _OutOfRange(text)
    value = int(text)
    return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else _OutOfRange(text)


def _first_out_of_range(data: dict[str, Any]) -> tuple[str, _OutOfRange] | None:
    """The key path (``sweep_params.lr``, ``export.formats[1]``) and value of the first
    out-of-range number, walking iteratively (the parser bounds the depth, not our stack)."""
    pending: list[tuple[str, Any]] = [(str(k), v) for k, v in reversed(data.items())]
    while pending:
        key, value = pending.pop()
        if isinstance(value, _OutOfRange):
            return key, value
        if isinstance(value, dict):
            pending.extend((f"{key}.{k}", v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend((f"{key}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def output_path_error(name: str, value: str, path: Path, *, folder: bool) -> str | None:
    """Why ``path`` (a config's output) could not be created, or None; nothing is created.

    Checked when the config is read, so that a path under a file is one config error at start
    instead of a failure of whatever runs first and tries to write there. ``folder`` says the
    path is a folder to create (an export folder), else a file (a database).
    """
    if path.exists():
        if folder and not path.is_dir():
            return f"{name} {value!r} cannot be used: {path} is a file, not a folder; name a folder"
        if not folder and path.is_dir():
            return f"{name} {value!r} is a folder; name a file in it, e.g. {value}/experiments.db"
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is None:
        return None
    if not ancestor.is_dir():
        return (
            f"{name} {value!r} cannot be created: {ancestor} is a file, not a folder; choose a "
            "path whose folders exist or can be created"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{name} {value!r} cannot be created: {ancestor} is not writable"
    return None


# -- field rules -------------------------------------------------------------------------------
#
# A rule takes a value and returns an error message or None. The same rule objects serve
# ``TrainingConfig.validate()`` (all fields at once) and the builder's progressive validation (only
# the fields a ``with_*`` call sets), so the two can never disagree.

Rule = Callable[[Any], str | None]


def int_rule(
    name: str, minimum: int, *, optional: bool = False, maximum: int | None = None
) -> Rule:
    """An integer (not a bool) ``>= minimum`` (and ``<= maximum``); None too when ``optional``."""

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
            bound = f" and <= {maximum:_}" if maximum is not None else ""
            suffix = " or null" if optional else ""
            return f"{name} must be an integer >= {minimum}{bound}{suffix} (got {shown(value)})"
        return None

    return check


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` for a message, shortened when long: an integer of 5,000 digits has no
    ``repr`` at all (Python refuses to print it), and 400 digits help nobody."""
    if is_int(value) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 10]}... ({len(text)} characters)"


def positive_rule(name: str) -> Rule:
    """A finite number ``> 0``; the message reads "NAME must be positive"."""

    def check(value: Any) -> str | None:
        if not is_number(value) or value <= 0:
            return f"{name} must be positive (got {shown(value)})"
        return None

    return check


def range_rule(name: str, low: float, high: float | None = None) -> Rule:
    """A finite number in ``[low, high]`` (``>= low`` when ``high`` is None)."""

    def check(value: Any) -> str | None:
        if not is_number(value) or value < low or (high is not None and value > high):
            expected = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            return f"{name} must be a number {expected} (got {shown(value)})"
        return None

    return check


def bool_rule(name: str) -> Rule:
    """Exactly True or False: ``"false"`` from a hand-written file is truthy, so refuse it."""

    def check(value: Any) -> str | None:
        if not isinstance(value, bool):
            return f"{name} must be a bool, true or false (got {shown(value)})"
        return None

    return check


def str_rule(name: str, *, optional: bool = False, allow_empty: bool = False) -> Rule:
    """A string (non-empty unless ``allow_empty``); None too when ``optional``."""

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            kind = "a string" if allow_empty else "a non-empty string"
            suffix = " or null" if optional else ""
            return f"{name} must be {kind}{suffix} (got {shown(value)})"
        return None

    return check


def choice_rule(name: str, choices: Iterable[str], *, optional: bool = False) -> Rule:
    """One of ``choices`` (None too when ``optional``), suggesting the closest on a typo."""
    allowed = tuple(choices)

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if not isinstance(value, str) or value not in allowed:
            options = ", ".join(repr(c) for c in allowed) + (" or None" if optional else "")
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            return f"{name} must be one of {options} (got {value!r}){hint}"
        return None

    return check
