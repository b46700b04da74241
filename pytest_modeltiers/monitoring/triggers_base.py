"""What every retraining trigger shares: severities, inputs, the per-window result, persistence.

PYTEST_DONT_REWRITE

A trigger looks at one *window* (one evaluation: a CI run of tier 5, a monitoring job, an epoch)
and decides whether its condition holds. Like Lightning's ``EarlyStopping`` with its
``patience``, a trigger can require its condition in ``consecutive`` windows in a row before it
fires; it keeps the count of windows in a row (its *streak*) as state, which
``state_dict``/``load_state_dict`` save and restore, so the count survives from one CI run to
the next (the manager stores it in the experiment database).

Decisions worth knowing:

- Severities are ordered ``none < info < warning < critical``. A trigger has one of the last
  three; a report whose triggers did not fire has severity ``none`` (the guide said ``info``,
  which made "nothing to do" and "scheduled retraining is due" look the same).
- A window where the trigger's input is missing does not fire, is reported as ``no_data`` with
  the reason and the names that *were* available, and breaks the streak: "K consecutive
  windows" means K windows with evidence, not K windows with at least no counter-evidence.
- Inputs a caller got wrong (a naive datetime, a count that is not an integer) raise
  :class:`TriggerInputError`; inputs that are absent are ``no_data``. Neither is ever a silent
  "not fired".
- All times are timezone-aware UTC. A naive ``datetime`` or an ISO string without an offset is
  an error: the guide compared SQLite's UTC timestamps with local ``now()``, which shifted its
  time trigger by the machine's UTC offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pytest_modeltiers.errors import ConfigError, ModelTiersError

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
    "json_safe",
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


class TriggerInputError(ModelTiersError, ValueError):
    """An input handed to a trigger is malformed (not missing: that is ``no_data``)."""


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


def parse_utc(value: Any, what: str) -> datetime:
    """A timezone-aware ``datetime`` in UTC from an aware datetime or an ISO 8601 string with an
    offset or ``Z`` (the stores' format). Naive values are refused: their zone is a guess."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # fromisoformat accepts 'Z' only from Python 3.11
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TriggerInputError(
                f"{what} {value!r} is not an ISO 8601 timestamp; write it like "
                "'2024-05-01T12:00:00Z' or '2024-05-01T14:00:00+02:00'"
            ) from None
    else:
        raise TriggerInputError(
            f"{what} must be a timezone-aware datetime or an ISO 8601 string, got "
            f"{type(value).__name__} {value!r}"
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise TriggerInputError(
            f"{what} {value!r} has no timezone; give it one (datetime.now(timezone.utc), or "
            "an ISO string ending in 'Z' or '+00:00'): a naive time is read differently on "
            "machines in different zones"
        )
    return parsed.astimezone(timezone.utc)


def format_utc(moment: datetime) -> str:
    """``2024-05-01T12:00:00.000000Z``: the stores' one timestamp format."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_safe(value: Any) -> Any:
    """Strict-JSON values: NaN becomes None, infinities the strings ``"inf"``/``"-inf"``."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return json_safe(item())
    return repr(value)


def _unsafe_float(value: Any) -> float | None:
    if value is None:
        return None
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return float(value)


# -- inputs and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerInputs:
    """What one window offers the triggers, already in the one naming scheme.

    ``drift`` maps ``drift/...`` names to numbers; ``current`` maps metric names to a number or
    a history (oldest first); ``baseline`` maps metric names to numbers; ``metadata`` carries
    ``last_training_time``, ``current_count`` and ``baseline_count``; ``now`` is aware UTC.
    """

    drift: Mapping[str, float]
    current: Mapping[str, float | tuple[float, ...]]
    baseline: Mapping[str, float]
    metadata: Mapping[str, Any]
    now: datetime


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
            "metrics": json_safe(dict(self.metrics)),
            "threshold": json_safe(self.threshold),
            "actual_value": json_safe(self.actual_value),
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
            metrics=dict(data.get("metrics") or {}),
            threshold=_unsafe_float(data.get("threshold")),
            actual_value=_unsafe_float(data.get("actual_value")),
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
        """The guide's call: evaluate one window given raw inputs (see ``build_inputs``)."""
        from pytest_modeltiers.monitoring.triggers_inputs import build_inputs

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


def as_number(value: Any, what: str) -> float:
    """A real number from an int, float or numpy/0-d torch scalar (bools refused)."""
    if isinstance(value, bool):
        raise TriggerInputError(f"{what} is a bool ({value!r}); pass a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TriggerInputError(
            f"{what} must be a real number, got {type(value).__name__} {value!r}"
        ) from None


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


def history_tail(values: Sequence[float], n: int) -> tuple[float, ...]:
    return tuple(values[-n:])
