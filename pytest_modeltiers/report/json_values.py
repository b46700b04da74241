"""Strict JSON values: a converter for check details and a validator for loaded reports.

PYTEST_DONT_REWRITE

The health report is strict JSON (``allow_nan=False``): CI tools, ``jq`` and JSON Schema
validators reject the ``NaN`` and ``Infinity`` tokens Python writes by default. Checks, however,
naturally produce numpy and torch scalars, tuples of shapes, paths and non-finite statistics (a
model whose outputs are NaN is exactly what a check reports). ``jsonable`` converts those
explicitly, by duck typing, so this module never imports torch or numpy; ``check_json`` verifies
that a value is already strict JSON and names the offending path when it is not.

Anything ``jsonable`` does not know raises ``TypeError`` naming the type and where it was found:
a silent ``repr`` fallback would make the report look fine while losing the value.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

__all__ = ["check_json", "jsonable"]

#: How non-finite floats are spelled, so the JSON stays strict and the value stays readable.
NONFINITE_STRINGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float(value: float) -> float | str:
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

    Anything else raises ``TypeError`` naming the type and ``where`` it was found.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, where=where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(value)
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
        "form; convert it to numbers, strings, lists or dicts before putting it in a CheckResult"
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
