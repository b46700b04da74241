"""Where the committed JSON Schema of the health report lives, and how to load it.

PYTEST_DONT_REWRITE

The schema is a file in this package (``health_report.schema.json``), not a Python dict, so
users' CI can validate an archived report with any JSON Schema tool without importing us.
``jsonschema`` is not a dependency of the package; tests and users bring it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_FILE", "load_schema", "schema_text"]

SCHEMA_FILE = "health_report.schema.json"


def schema_text() -> str:
    """The schema's JSON text."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The schema as a dict (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(schema_text())
    return schema
