"""The one JSON converter for every file the package writes, and the one Markdown cell escaper.

PYTEST_DONT_REWRITE

Every file is strict JSON (``allow_nan=False``): ``jq``, CI tools and JSON Schema validators
reject the ``NaN`` and ``Infinity`` tokens Python writes by default. A non-finite float is
written as one of the strings ``"nan"``, ``"inf"`` or ``"-inf"``, everywhere. Strings rather
than ``null`` plus a sibling flag, because ``null`` already means "not measured" in these files
(a skipped drift signal has no statistic) while NaN is a measurement worth reporting; because a
string takes one value's place, so it works inside lists where a sibling flag has nowhere to go;
and because it keeps the sign of an infinity. Readers turn the strings back with
``float_from_json`` where a float is expected, or ``restore_floats`` for a whole value whose
writer refused those three strings as data, so every round trip is exact.

Stdlib only: numpy and torch values are converted by duck typing (``tolist``/``item``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

__all__ = [
    "CELL_WIDTH",
    "NONFINITE_STRINGS",
    "check_json",
    "dumps",
    "find_nonfinite_string",
    "float_from_json",
    "json_float",
    "jsonable",
    "markdown_cell",
    "markdown_escape",
    "restore_floats",
]

#: The spelling of each non-finite float in every JSON file the package writes.
NONFINITE_STRINGS: dict[str, float] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def json_float(value: float) -> float | str:
    """``value`` as a strict-JSON number, or its spelling when it is not finite."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def jsonable(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` as strict JSON: dicts with str keys, lists, str, int, float, bool, None.

    Conversions, in order:

    - ``None``, ``bool``, ``int``, ``str`` (subclasses become the plain type);
    - ``float``: NaN and infinities become the strings ``"nan"``, ``"inf"``, ``"-inf"``;
    - ``Enum`` members: their value; ``datetime``/``date``: ISO 8601; paths: ``os.fspath``;
    - mappings: a dict whose keys are strings (other keys go through ``str``, as ``json`` would);
    - lists and tuples: lists; sets: lists sorted by their JSON text, so output is deterministic;
    - objects with ``tolist()`` (numpy arrays and scalars, torch tensors of any shape) or
      ``item()`` (other scalar wrappers): the converted result of that call;
    - dataclass instances: a dict of their fields.

    Anything else raises ``TypeError`` naming the type and ``where`` it was found: a silent
    ``repr`` would make a file look fine while losing the value.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, where=where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {
            (key if isinstance(key, str) else str(jsonable(key, where=f"{where} key"))): jsonable(
                item, where=f"{where}[{key!r}]"
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [jsonable(item, where=f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(item, where=f"{where} item") for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return jsonable(tolist(), where=where)
    item_method = getattr(value, "item", None)
    if callable(item_method):
        return jsonable(item_method(), where=where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: jsonable(getattr(value, field.name), where=f"{where}.{field.name}")
            for field in dataclasses.fields(value)
        }
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which has no JSON "
        "form; convert it to numbers, strings, lists or dicts first"
    )


def dumps(
    value: Any,
    *,
    where: str = "value",
    indent: int | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
) -> str:
    """Strict JSON text of ``value`` after ``jsonable``: the one way the package writes JSON."""
    return json.dumps(
        jsonable(value, where=where),
        indent=indent,
        sort_keys=sort_keys,
        ensure_ascii=ensure_ascii,
        allow_nan=False,
    )


def check_json(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the path unless ``value`` is already strict JSON.

    Strict means: what ``json.loads`` returns for a document without ``NaN``/``Infinity``, so a
    value survives ``json.dumps`` and ``json.loads`` unchanged (tuples would come back as lists,
    non-string keys as strings, non-finite floats not at all).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} is {value!r}, which strict JSON cannot hold; pass the value through "
                "CheckResult.jsonable() (it becomes the string 'nan', 'inf' or '-inf')"
            )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; JSON object keys "
                    "are strings: convert it, or pass the value through CheckResult.jsonable()"
                )
            check_json(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__qualname__}, not a JSON value; pass it through "
        "CheckResult.jsonable() (which converts tuples, paths, numpy and torch values) first"
    )


def float_from_json(value: Any, *, where: str = "value") -> float | None:
    """Read back a float this package wrote: a number, ``"nan"``/``"inf"``/``"-inf"``, or
    ``None`` for a value that was not measured; ``ValueError`` naming ``where`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in NONFINITE_STRINGS:
        return NONFINITE_STRINGS[value]
    raise ValueError(f"{where} is {value!r}, not a number, 'nan', 'inf', '-inf' or null")


def restore_floats(value: Any) -> Any:
    """``value`` (parsed JSON) with every ``"nan"``, ``"inf"``, ``"-inf"`` turned back into
    its float: for values whose writer refused those strings as data (``find_nonfinite_string``),
    where the strings can only stand for floats."""
    if isinstance(value, str):
        return NONFINITE_STRINGS.get(value, value)
    if isinstance(value, dict):
        return {key: restore_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_floats(item) for item in value]
    return value


def find_nonfinite_string(value: Any, where: str = "value") -> str | None:
    """Where ``value`` holds one of the strings ``"nan"``, ``"inf"``, ``"-inf"`` as data (a
    writer whose reader calls ``restore_floats`` must refuse them), else ``None``."""
    if isinstance(value, str):
        return where if value in NONFINITE_STRINGS else None
    if isinstance(value, Mapping):
        items: Any = ((f"{where}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for path, item in items:
        found = find_nonfinite_string(item, path)
        if found is not None:
            return found
    return None


# -- Markdown ---------------------------------------------------------------------------------

#: The longest table cell, in characters; the full text goes in a fenced block after the table.
CELL_WIDTH = 160

#: Markdown punctuation to escape; an underscore only where it could start or end emphasis
#: (``x86_64`` and ``test_gradient_flow`` stay readable in the raw file).
_ESCAPE = re.compile(r"([\\`*\[\]<>|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def markdown_escape(text: str) -> str:
    """``text`` with Markdown punctuation escaped, so a message renders as written."""
    return _ESCAPE.sub(r"\\\1", text)


def markdown_cell(value: Any, *, width: int = CELL_WIDTH) -> str:
    """One table cell: first line only, shortened, escaped; ``-`` for a missing value.

    A cell must stay on one line and must not end the row early (a ``|`` would), whatever a
    user's model put in the message.
    """
    if value is None or value == "":
        return "-"
    lines = str(value).strip().splitlines() or [""]
    first = lines[0]
    if len(first) > width:
        first = first[: width - 3].rstrip() + "..."
    elif len(lines) > 1:
        first += " ..."
    return markdown_escape(first)
