"""``CheckResult``: the one record every tier check produces.

PYTEST_DONT_REWRITE

A check is a plain function returning a ``CheckResult``; the built-in test asserts on it and the
plugin puts it in the health report, so pytest's outcome and the report always agree. The record
is validated when it is built, because a bad tier or status found only when the report is
written, at the end of a long session, would cost the whole report.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_modeltiers.jsonio import check_json
from pytest_modeltiers.jsonio import jsonable as _jsonable

__all__ = ["TIERS", "CheckResult", "CheckStatus", "check_marker"]

#: The five tiers.
TIERS: tuple[int, ...] = (1, 2, 3, 4, 5)


class CheckStatus(str, enum.Enum):
    """Outcome of one check. ``str`` valued so it serialises, compares and prints as its name."""

    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def marker(self) -> str:
        """Short upper-case text marker for tables and logs (``PASS``, ``WARN``, ...)."""
        return _MARKERS[self]

    @property
    def ok(self) -> bool:
        """True for outcomes that do not fail a session: passed, warning, skipped."""
        return self in (CheckStatus.PASSED, CheckStatus.WARNING, CheckStatus.SKIPPED)

    @classmethod
    def parse(cls, value: object) -> CheckStatus:
        """The status named by ``value``; ``ValueError`` listing the accepted names otherwise."""
        if isinstance(value, CheckStatus):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        accepted = ", ".join(status.value for status in cls)
        raise ValueError(f"status must be one of {accepted}; got {value!r}")


_MARKERS = {
    CheckStatus.PASSED: "PASS",
    CheckStatus.WARNING: "WARN",
    CheckStatus.FAILED: "FAIL",
    CheckStatus.ERROR: "ERROR",
    CheckStatus.SKIPPED: "SKIP",
}


def check_marker(check: Mapping[str, Any]) -> str:
    """The marker of a check's JSON dict (``to_dict()``): its status's, or ``NO DATA`` for a
    check skipped because the data it judges was not there."""
    if check["status"] == CheckStatus.SKIPPED and check["details"].get("no_data"):
        return "NO DATA"
    return CheckStatus(check["status"]).marker


_KEYS = (
    "check_name",
    "tier",
    "status",
    "message",
    "details",
    "duration_seconds",
    "model",
    "nodeid",
)
_REQUIRED_KEYS = _KEYS[:6]


#: The tier of a result built without one: the usage guide's ``CheckResult(check_name, status,
#: message, details)`` is an export health check, and export health is tier 4.
GUIDE_TIER = 4


@dataclass(frozen=True, init=False)
class CheckResult:
    """The outcome of one check: what ran, at which tier, how it went, and the evidence.

    Build one with the status constructors (``CheckResult.failed("test_gradient_flow", 1,
    "2 parameters get no gradient", {"unused": ["head.bias"]})``) or directly; both validate.
    ``ValueError`` names the field that is wrong. The usage guide's keyword form without
    ``tier`` (``CheckResult(check_name=..., status=..., message=..., details=...)``, a custom
    export health check) is read as tier 4 with a ``DeprecationWarning``.
    """

    check_name: str
    tier: int
    status: CheckStatus
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0
    model: str | None = None
    nodeid: str | None = None

    def __init__(
        self,
        check_name: str,
        tier: int | None = None,
        status: CheckStatus | str | None = None,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> None:
        if tier is None:
            warnings.warn(
                f"CheckResult {check_name!r} has no tier; it is read as tier {GUIDE_TIER} (an "
                f"export health check, as in the usage guide): pass tier={GUIDE_TIER}, or "
                "build it with CheckResult.passed/failed/warning(check_name, tier, message, "
                "details)",
                DeprecationWarning,
                stacklevel=2,
            )
            tier = GUIDE_TIER
        values = (check_name, tier, status, message, details, duration_seconds, model, nodeid)
        for name, value in zip(_KEYS, values, strict=True):
            object.__setattr__(self, name, {} if name == "details" and value is None else value)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.check_name, str) or not self.check_name.strip():
            raise ValueError(f"check_name must be a non-empty string; got {self.check_name!r}")
        if isinstance(self.tier, bool) or not isinstance(self.tier, int) or self.tier not in TIERS:
            raise ValueError(f"tier must be an integer from 1 to 5; got {self.tier!r}")
        status = CheckStatus.parse(self.status)
        object.__setattr__(self, "status", status)
        if not isinstance(self.message, str):
            raise ValueError(f"message must be a string; got {type(self.message).__name__}")
        if status is not CheckStatus.PASSED and not self.message.strip():
            raise ValueError(
                f"message must say why {self.check_name} has status {status.value}; got an "
                "empty message"
            )
        if not isinstance(self.details, Mapping):
            raise ValueError(
                f"details must be a dict of JSON values; got {type(self.details).__name__}"
            )
        details = dict(self.details)
        check_json(details, "details")
        object.__setattr__(self, "details", copy.deepcopy(details))
        duration = self.duration_seconds
        if (
            isinstance(duration, bool)
            or not isinstance(duration, (int, float))
            or not math.isfinite(duration)
            or duration < 0
        ):
            raise ValueError(
                f"duration_seconds must be a finite number >= 0; got {self.duration_seconds!r}"
            )
        object.__setattr__(self, "duration_seconds", float(duration))
        for name in ("model", "nodeid"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None; got {value!r}")

    # -- status constructors -------------------------------------------------------------------

    @classmethod
    def _make(
        cls,
        status: CheckStatus,
        check_name: str,
        tier: int,
        message: str,
        details: Mapping[str, Any] | None,
        duration_seconds: float,
        model: str | None,
        nodeid: str | None,
    ) -> CheckResult:
        return cls(
            check_name=check_name,
            tier=tier,
            status=status,
            message=message,
            details=_jsonable(details or {}, where="details"),
            duration_seconds=duration_seconds,
            model=model,
            nodeid=nodeid,
        )

    @classmethod
    def passed(
        cls,
        check_name: str,
        tier: int,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> CheckResult:
        """A passed check; ``details`` go through ``jsonable``."""
        return cls._make(
            CheckStatus.PASSED, check_name, tier, message, details, duration_seconds, model, nodeid
        )

    @classmethod
    def warning(
        cls,
        check_name: str,
        tier: int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> CheckResult:
        """A suspicious but not failing check (counts half in the score)."""
        return cls._make(
            CheckStatus.WARNING, check_name, tier, message, details, duration_seconds, model, nodeid
        )

    @classmethod
    def failed(
        cls,
        check_name: str,
        tier: int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> CheckResult:
        """A check that found a problem; ``message`` says what, why and how to fix it."""
        return cls._make(
            CheckStatus.FAILED, check_name, tier, message, details, duration_seconds, model, nodeid
        )

    @classmethod
    def error(
        cls,
        check_name: str,
        tier: int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> CheckResult:
        """A check that could not complete (it raised, timed out, or its worker crashed)."""
        return cls._make(
            CheckStatus.ERROR, check_name, tier, message, details, duration_seconds, model, nodeid
        )

    @classmethod
    def skipped(
        cls,
        check_name: str,
        tier: int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        duration_seconds: float = 0.0,
        model: str | None = None,
        nodeid: str | None = None,
    ) -> CheckResult:
        """A check that does not apply; ``message`` is the reason (not scored)."""
        return cls._make(
            CheckStatus.SKIPPED, check_name, tier, message, details, duration_seconds, model, nodeid
        )

    @staticmethod
    def jsonable(value: Any, *, where: str = "value") -> Any:
        """``value`` as strict JSON: NaN/inf as strings, tuples as lists, ``.tolist()``/``.item()``.

        See ``pytest_modeltiers.jsonio.jsonable`` for the full list of conversions.
        """
        return _jsonable(value, where=where)

    # -- properties ----------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        """True unless the check failed or errored (passed, warning and skipped are ok)."""
        return self.status.ok

    def sort_key(self) -> tuple[Any, ...]:
        """Canonical order in reports: (model, tier, check_name, nodeid), then content.

        Timings are left out so that a serial and a pytest-xdist run sort identically.
        """
        return (
            self.model is not None,
            self.model or "",
            self.tier,
            self.check_name,
            self.nodeid is not None,
            self.nodeid or "",
            self.status.value,
            self.message,
            json.dumps(self.details, sort_keys=True),
        )

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field (``model`` and ``nodeid`` as null when unset)."""
        return {
            "check_name": self.check_name,
            "tier": self.tier,
            "status": self.status.value,
            "message": self.message,
            "details": copy.deepcopy(self.details),
            "duration_seconds": self.duration_seconds,
            "model": self.model,
            "nodeid": self.nodeid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Rebuild a result from ``to_dict`` output (or its JSON); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a check result must be a JSON object; got {type(data).__name__}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(f"check result is missing {', '.join(missing)}: {dict(data)!r}")
        unknown = sorted(str(key) for key in data if key not in _KEYS)
        if unknown:
            raise ValueError(
                f"check result has unknown keys {', '.join(unknown)}; expected {', '.join(_KEYS)}"
            )
        return cls(
            check_name=data["check_name"],
            tier=data["tier"],
            status=data["status"],
            message=data["message"],
            details=data["details"],
            duration_seconds=data["duration_seconds"],
            model=data.get("model"),
            nodeid=data.get("nodeid"),
        )
