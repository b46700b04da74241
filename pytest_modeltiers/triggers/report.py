"""``RetrainingReport``: the decision of one evaluation of the triggers, as JSON and Markdown.

PYTEST_DONT_REWRITE

The report's severity is the highest severity among the *top-level* triggers that fired
(``none`` when none did): a child of an ``AND`` composite that fired alone does not raise it,
since the policy did not hold. ``gate_failed`` compares that severity with the gate (default
``critical``), which is what ``test_retraining_triggers`` asserts on. Triggers that lacked
their input are listed under ``not_evaluated`` with the reason, in the JSON and at the top of
the Markdown, so a trigger that can never fire (``val_loss`` watched, ``val/loss`` logged)
is visible instead of silently green. A report where no trigger had its data is not
``decided``: it says "Could not decide: no data for ...", never "No retraining needed"; when
some triggers had data and none fired, "no retraining needed" is said of those, naming the
others. Files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.jsonio import dumps, jsonable, markdown_cell
from pytest_modeltiers.triggers.base import (
    SEVERITIES,
    TriggerDetail,
    format_utc,
    severity_at_least,
    severity_rank,
)

__all__ = ["REPORT_SCHEMA_VERSION", "RetrainingReport"]

#: Version of the JSON layout of ``to_dict``; bumped when a field changes meaning.
REPORT_SCHEMA_VERSION = 1

_ICONS = {"fired": "FIRED", "pending": "pending", "quiet": "quiet", "no_data": "NO DATA"}


@dataclass(frozen=True)
class RetrainingReport:
    """The triggers' verdict for one window. Build with :meth:`from_details`."""

    triggered: bool
    trigger_details: tuple[TriggerDetail, ...]
    recommendations: tuple[str, ...]
    severity: str
    timestamp: str
    gate: str = "critical"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_details(
        cls,
        details: Sequence[TriggerDetail],
        *,
        gate: str = "critical",
        now: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RetrainingReport:
        severity_rank(gate)
        fired = [d for d in details if d.triggered]
        severity = max((d.severity for d in fired), key=severity_rank, default="none")
        recs = [d.recommendation for d in fired if d.recommendation]
        for d in details:
            if d.status == "no_data":
                recs.append(f"Trigger {d.trigger_name!r} could not be evaluated: {d.reason}.")
        if not fired:
            recs.insert(0, _quiet_verdict(details))
        moment = now or datetime.now(timezone.utc)
        return cls(
            triggered=bool(fired),
            trigger_details=tuple(details),
            recommendations=tuple(recs),
            severity=severity,
            timestamp=format_utc(moment),
            gate=gate,
            metadata=dict(metadata or {}),
        )

    # -- verdicts ----------------------------------------------------------------------------

    @property
    def retrain_recommended(self) -> bool:
        return self.triggered

    @property
    def gate_failed(self) -> bool:
        """True when the severity reaches the gate (``none`` never does)."""
        return self.severity != "none" and severity_at_least(self.severity, self.gate)

    def fails_gate(self, gate: str | None = None) -> bool:
        """Like :attr:`gate_failed`, against another gate level."""
        level = self.gate if gate is None else gate
        return self.severity != "none" and severity_at_least(self.severity, level)

    @property
    def fired(self) -> tuple[TriggerDetail, ...]:
        return tuple(d for d in self.trigger_details if d.triggered)

    @property
    def not_evaluated(self) -> tuple[TriggerDetail, ...]:
        return tuple(d for d in self.trigger_details if d.status == "no_data")

    @property
    def evaluated(self) -> tuple[TriggerDetail, ...]:
        """The top-level triggers that had their data (fired, pending or quiet)."""
        return tuple(d for d in self.trigger_details if d.evaluated)

    @property
    def decided(self) -> bool:
        """False when no trigger had its data: the report then says nothing either way."""
        return bool(self.evaluated)

    def _why_undecided(self) -> str:
        total = len(self.trigger_details)
        if all(d.status == "disabled" for d in self.trigger_details):
            return f"all {total} trigger(s) disabled"
        return f"no data for {len(self.not_evaluated)} of {total} trigger(s)"

    def summary(self) -> str:
        """A few lines for a test failure message or the terminal summary."""
        total = len(self.trigger_details)
        if self.decided:
            head = (
                f"retraining: severity {self.severity} (gate {self.gate}"
                f"{', FAILED' if self.gate_failed else ''}); "
                f"{len(self.fired)}/{total} trigger(s) fired"
            )
            if self.not_evaluated:
                head += f", {len(self.not_evaluated)} not evaluated (no data)"
        else:
            head = f"retraining: could not decide (gate {self.gate}); {self._why_undecided()}"
        lines = [head]
        for d in self.trigger_details:
            lines.append(f"  {d.trigger_name} [{d.kind}, {d.severity}]: {d.status}: {d.reason}")
        return "\n".join(lines)

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "triggered": self.triggered,
            "severity": self.severity,
            "gate": self.gate,
            "gate_failed": self.gate_failed,
            "decided": self.decided,
            "timestamp": self.timestamp,
            "recommendations": list(self.recommendations),
            "not_evaluated": [d.trigger_name for d in self.not_evaluated],
            "trigger_details": [d.to_dict() for d in self.trigger_details],
            "metadata": jsonable(dict(self.metadata), where="report metadata"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainingReport:
        """Read back ``to_dict()`` (a saved ``retraining.json``); ``ConfigError`` naming the
        problem for a file of another release or a damaged one."""
        version = data.get("schema_version")
        if version != REPORT_SCHEMA_VERSION:
            raise ConfigError(
                f"retraining report schema_version {version!r} is not {REPORT_SCHEMA_VERSION}; "
                "it was written by another release of pytest-modeltiers"
            )
        try:
            severity = data["severity"]
            if severity not in SEVERITIES:
                raise ConfigError(
                    f"retraining report severity {severity!r} is not one of {SEVERITIES}"
                )
            return cls(
                triggered=bool(data["triggered"]),
                trigger_details=tuple(TriggerDetail.from_dict(d) for d in data["trigger_details"]),
                recommendations=tuple(data.get("recommendations", ())),
                severity=severity,
                timestamp=data["timestamp"],
                gate=data.get("gate", "critical"),
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"retraining report is damaged: {type(exc).__name__} {exc}") from None

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The report as strict JSON text; written atomically to ``path`` when given."""
        text = dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_markdown(self, path: str | os.PathLike[str] | None = None) -> str:
        """A page for humans; written atomically to ``path`` when given."""
        if not self.decided:
            headline = (
                f"**Could not decide** - {self._why_undecided()}, gate `{self.gate}`: not judged."
            )
        else:
            verdict = "Retraining recommended" if self.triggered else "No retraining needed"
            headline = (
                f"**{verdict}** - severity **{self.severity}**, gate `{self.gate}`: "
                f"{'**failed**' if self.gate_failed else 'passed'}"
                f"{' on the evaluated triggers' if self.not_evaluated else ''}."
            )
        lines = [
            "# Retraining report",
            "",
            headline,
            "",
            f"Evaluated at {self.timestamp} (UTC).",
            "",
        ]
        if self.not_evaluated:
            lines += ["> **Not evaluated** (input missing):", ">"]
            lines += [f"> - `{d.trigger_name}`: {d.reason}" for d in self.not_evaluated]
            lines.append("")
        lines += [
            "| trigger | kind | severity | status | value | threshold | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in self.trigger_details:
            for where, item in d.walk():
                lines.append(
                    f"| `{where}` | {item.kind} | {item.severity} | "
                    f"{_ICONS.get(item.status, item.status)} | {_fmt(item.actual_value)} | "
                    f"{_fmt(item.threshold)} | {markdown_cell(item.reason)} |"
                )
        lines += ["", "## Recommendations", ""]
        lines += [f"- {rec}" for rec in self.recommendations]
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text


def _quiet_verdict(details: Sequence[TriggerDetail]) -> str:
    """The first recommendation when nothing fired: a decision only on triggers that had data."""
    active = [d for d in details if d.status != "disabled"]
    missing = [d.trigger_name for d in active if d.status == "no_data"]
    judged = [d.trigger_name for d in active if d.evaluated]
    if not active:
        return "Nothing to decide: every trigger of the policy is disabled."
    if not judged:
        return f"Could not decide: no data for {', '.join(missing)}."
    if missing:
        return (
            f"No retraining needed on the evidence: none of the {len(judged)} evaluated "
            f"trigger(s) ({', '.join(judged)}) fired; could not decide: no data for "
            f"{', '.join(missing)}."
        )
    return f"No retraining needed: none of the {len(active)} active trigger(s) fired."


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
