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
    "positive_rule",
    "range_rule",
    "read_json_object",
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
    """True for finite ints and floats (not bools): NaN and inf have no place in a config."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


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
    bad training config raises ``ConfigError``.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{source}: cannot read the file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


# -- field rules -------------------------------------------------------------------------------
#
# A rule takes a value and returns an error message or None. The same rule objects serve
# ``TrainingConfig.validate()`` (all fields at once) and the builder's progressive validation (only
# the fields a ``with_*`` call sets), so the two can never disagree.

Rule = Callable[[Any], str | None]


def int_rule(name: str, minimum: int, *, optional: bool = False) -> Rule:
    """An integer (not a bool) ``>= minimum``; None too when ``optional``."""

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if not is_int(value) or value < minimum:
            suffix = " or null" if optional else ""
            return f"{name} must be an integer >= {minimum}{suffix} (got {value!r})"
        return None

    return check


def positive_rule(name: str) -> Rule:
    """A finite number ``> 0``; the message reads "NAME must be positive"."""

    def check(value: Any) -> str | None:
        if not is_number(value) or value <= 0:
            return f"{name} must be positive (got {value!r})"
        return None

    return check


def range_rule(name: str, low: float, high: float | None = None) -> Rule:
    """A finite number in ``[low, high]`` (``>= low`` when ``high`` is None)."""

    def check(value: Any) -> str | None:
        if not is_number(value) or value < low or (high is not None and value > high):
            expected = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            return f"{name} must be a number {expected} (got {value!r})"
        return None

    return check


def bool_rule(name: str) -> Rule:
    """Exactly True or False: ``"false"`` from a hand-written file is truthy, so refuse it."""

    def check(value: Any) -> str | None:
        if not isinstance(value, bool):
            return f"{name} must be a bool, true or false (got {value!r})"
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
            return f"{name} must be {kind}{suffix} (got {value!r})"
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
