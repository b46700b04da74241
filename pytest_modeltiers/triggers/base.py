"""What every retraining trigger shares: severities, inputs, the per-window result, persistence.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.jsonio import float_from_json, jsonable, restore_floats
from pytest_modeltiers.triggers.inputs import (
    TriggerInputError,
    TriggerInputs,
    build_inputs,
    parse_utc,
)

__all__ = [
    "SEVERITIES",
    "TRIGGER_SEVERITIES",
    "Condition",
    "Trigger",
    "TriggerDetail",
    "TriggerInputError",
    "TriggerInputs",
    "check_name",
    "format_utc",
    "parse_utc",
    "severity_at_least",
    "severity_rank",
]

#: Every severity, lowest first; a report with nothing fired has ``"none"``.
SEVERITIES: tuple[str, ...] = ("none", "info", "warning", "critical")
#: The severities a trigger can be configured with.
TRIGGER_SEVERITIES: tuple[str, ...] = SEVERITIES[1:]

Status = Literal["fired", "pending", "quiet", "no_data", "disabled"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (``none`` is 0)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ConfigError(
            f"unknown severity {severity!r}; use one of {', '.join(SEVERITIES)}"
        ) from None


def severity_at_least(severity: str, level: str) -> bool:
    """True when ``severity`` is ``level`` or higher."""
    return severity_rank(severity) >= severity_rank(level)


def check_name(name: Any, what: str = "trigger name") -> str:
    """A trigger name: letters, digits, ``_ . -``, so it can be a metric path segment."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{what} must be a non-empty string of letters, digits, '_', '.' or '-' "
            f"(it becomes part of the metric name trigger/<name>/fired), got {name!r}"
        )
    return name


# -- time ------------------------------------------------------------------------------------


def format_utc(moment: datetime) -> str:
    """``2024-05-01T12:00:00.000000Z``: the stores' one timestamp format."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- inputs and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A trigger's raw verdict on one window, before persistence.

    ``met`` is None when the window lacks the trigger's input (``reason`` says which).
    """

    met: bool | None
    reason: str
    actual_value: float | None = None
    threshold: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    children: tuple[TriggerDetail, ...] = ()


@dataclass(frozen=True)
class TriggerDetail:
    """One trigger's result for one window.

    ``status``: ``fired`` (condition held in ``consecutive`` windows in a row), ``pending``
    (held, but in fewer windows so far: ``streak`` of ``consecutive``), ``quiet`` (did not
    hold), ``no_data`` (input missing) or ``disabled``. ``triggered`` is ``status == "fired"``.
    """

    trigger_name: str
    kind: str
    status: Status
    severity: str
    reason: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    actual_value: float | None = None
    streak: int = 0
    consecutive: int = 1
    recommendation: str = ""
    children: tuple[TriggerDetail, ...] = ()

    @property
    def triggered(self) -> bool:
        return self.status == "fired"

    @property
    def evaluated(self) -> bool:
        return self.status in ("fired", "pending", "quiet")

    def walk(self, prefix: str = "") -> list[tuple[str, TriggerDetail]]:
        """``(path, detail)`` for this detail and every nested child, parents first."""
        path = f"{prefix}/{self.trigger_name}" if prefix else self.trigger_name
        out = [(path, self)]
        for child in self.children:
            out += child.walk(path)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger_name": self.trigger_name,
            "kind": self.kind,
            "status": self.status,
            "triggered": self.triggered,
            "severity": self.severity,
            "reason": self.reason,
            "metrics": jsonable(dict(self.metrics), where="trigger metrics"),
            "threshold": jsonable(self.threshold),
            "actual_value": jsonable(self.actual_value),
            "streak": self.streak,
            "consecutive": self.consecutive,
            "recommendation": self.recommendation,
            "children": [c.to_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriggerDetail:
        return cls(
            trigger_name=data["trigger_name"],
            kind=data["kind"],
            status=data["status"],
            severity=data["severity"],
            reason=data["reason"],
            metrics=restore_floats(dict(data.get("metrics") or {})),
            threshold=float_from_json(data.get("threshold"), where="threshold"),
            actual_value=float_from_json(data.get("actual_value"), where="actual_value"),
            streak=int(data.get("streak", 0)),
            consecutive=int(data.get("consecutive", 1)),
            recommendation=data.get("recommendation", ""),
            children=tuple(cls.from_dict(c) for c in data.get("children", ())),
        )


# -- the base class --------------------------------------------------------------------------


class Trigger:
    """Base of the triggers: name, severity, enabled flag, persistence (``consecutive``).

    Subclasses set ``kind``, implement :meth:`condition` (the raw verdict on one window) and
    :meth:`recommend` (what to do when it fires), and keep their settings in ``self.config``
    (a ``TriggerConfig``), from which :meth:`to_config` and the factory round-trip.
    """

    kind: ClassVar[str] = "trigger"
    config: Any

    def __init__(self) -> None:
        self._streak = 0

    # -- settings shared by every trigger, read from the config ------------------------------

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def severity(self) -> str:
        return str(self.config.severity)

    @property
    def enabled(self) -> bool:
        return bool(self.config.enabled)

    @property
    def consecutive(self) -> int:
        return int(self.config.consecutive)

    @property
    def streak(self) -> int:
        """Windows in a row, up to now, in which the condition held."""
        return self._streak

    def to_config(self) -> Any:
        """The config this trigger was built from (``build_trigger`` turns it back)."""
        return self.config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"streak": self._streak}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        streak = state.get("streak", 0)
        if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
            raise TriggerInputError(f"trigger state streak must be an integer >= 0, got {streak!r}")
        self._streak = streak

    def reset(self) -> None:
        """Forget the streak (after a retraining, the windows start again)."""
        self._streak = 0

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(
        self,
        drift_metrics: Any = None,
        current_metrics: Mapping[str, Any] | None = None,
        baseline_metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
    ) -> TriggerDetail:
        """Evaluate one window given raw inputs (see ``build_inputs``); the older call form."""
        inputs = build_inputs(
            drift=drift_metrics,
            current_metrics=current_metrics,
            baseline_metrics=baseline_metrics,
            metadata=metadata,
            now=now,
        )
        return self.evaluate_inputs(inputs)

    def evaluate_inputs(self, inputs: TriggerInputs) -> TriggerDetail:
        """Evaluate one window of prepared inputs, advancing the streak."""
        if not self.enabled:
            self.reset()
            return TriggerDetail(
                trigger_name=self.name,
                kind=self.kind,
                status="disabled",
                severity=self.severity,
                reason="disabled in its config (enabled: false)",
                consecutive=self.consecutive,
            )
        cond = self.condition(inputs)
        self._streak = self._streak + 1 if cond.met else 0
        need = self.consecutive
        if cond.met is None:
            status: Status = "no_data"
        elif not cond.met:
            status = "quiet"
        elif self._streak >= need:
            status = "fired"
        else:
            status = "pending"
        reason = cond.reason
        if need > 1 and cond.met is not None:
            reason += (
                f"; condition held in {self._streak} consecutive window(s), {need} required to fire"
            )
        return TriggerDetail(
            trigger_name=self.name,
            kind=self.kind,
            status=status,
            severity=self.severity,
            reason=reason,
            metrics=dict(cond.metrics),
            threshold=cond.threshold,
            actual_value=cond.actual_value,
            streak=self._streak,
            consecutive=need,
            recommendation=self.recommend(cond) if status == "fired" else "",
            children=cond.children,
        )

    def condition(self, inputs: TriggerInputs) -> Condition:  # pragma: no cover - abstract
        raise NotImplementedError

    def recommend(self, cond: Condition) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def as_count(value: Any, what: str) -> int:
    """A non-negative integer count (``7.0`` is accepted, ``7.5`` and ``True`` are not)."""
    if isinstance(value, bool):
        raise TriggerInputError(f"{what} must be an integer count, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        count = int(value.__index__()) if not isinstance(value, int) else value
    except (AttributeError, TypeError):
        raise TriggerInputError(
            f"{what} must be an integer count, got {type(value).__name__} {value!r}"
        ) from None
    if count < 0:
        raise TriggerInputError(f"{what} must be >= 0, got {count}")
    return count
