"""Check results and the session health report.

PYTEST_DONT_REWRITE

Standard library only: the plugin imports this at the end of a session, and a report must never
cost a torch import.

- ``CheckResult`` / ``CheckStatus``: what every tier check returns.
- ``HealthReport``: the session's checks with context; ``to_json``, ``to_markdown``, ``write``
  (atomic JSON plus Markdown twin), ``from_dict``, ``merge``, ``fail_under``.
- ``load_schema``: the committed JSON Schema the report follows.
"""

from __future__ import annotations

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.jsonio import jsonable
from pytest_modeltiers.report.check_result import TIERS, CheckResult, CheckStatus
from pytest_modeltiers.report.environment import ENVIRONMENT_KEYS, collect_environment
from pytest_modeltiers.report.health_report import (
    MODEL_KEYS,
    SCHEMA_VERSION,
    HealthReport,
    compute_health_score,
)
from pytest_modeltiers.report.markdown import render_markdown
from pytest_modeltiers.report.recommendations import HINTS
from pytest_modeltiers.report.schema import load_schema

__all__ = [
    "ENVIRONMENT_KEYS",
    "HINTS",
    "MODEL_KEYS",
    "SCHEMA_VERSION",
    "TIERS",
    "CheckResult",
    "CheckStatus",
    "HealthReport",
    "atomic_write_text",
    "collect_environment",
    "compute_health_score",
    "jsonable",
    "load_schema",
    "render_markdown",
]
