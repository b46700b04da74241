"""``HealthReport``: every check of one session, its summaries, score and recommendations.

PYTEST_DONT_REWRITE

JSON for machines and a Markdown twin for people, both written atomically; the JSON follows
the committed ``health_report.schema.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.report.check_result import TIERS, CheckResult, CheckStatus
from pytest_modeltiers.report.environment import ENVIRONMENT_KEYS, collect_environment
from pytest_modeltiers.report.markdown import render_markdown
from pytest_modeltiers.report.recommendations import build_recommendations
from pytest_modeltiers.version import __version__

__all__ = [
    "COMPLETE",
    "INCOMPLETE",
    "MODEL_KEYS",
    "SCHEMA_VERSION",
    "TOOL_NAME",
    "HealthReport",
    "compute_health_score",
    "find_root_causes",
    "is_not_judged",
    "summarize",
]

#: Version of the report's JSON layout; bump it (and the schema) on any incompatible change.
SCHEMA_VERSION = "1.1"
TOOL_NAME = "pytest-modeltiers"

#: The report's ``status``: written at the end of a session that ran to its end, or not.
COMPLETE, INCOMPLETE = "complete", "incomplete"

#: Keys of a model identity; every one but ``key`` may be ``None`` when unknown.
MODEL_KEYS: tuple[str, ...] = (
    "key",
    "spec",
    "class_name",
    "num_parameters",
    "file",
    "sha256",
    "task",
    "adapter",
)

_TOP_KEYS = (
    "schema_version",
    "tool",
    "created_at",
    "status",
    "status_reason",
    "not_run",
    "environment",
    "models",
    "summary",
    "root_causes",
    "tiers",
    "checks",
    "recommendations",
)
_DERIVED_KEYS = ("summary", "root_causes", "tiers", "recommendations")

#: What ``merge`` accepts: reports, results, result dicts, or iterables of those.
MergePart = Union["HealthReport", CheckResult, Mapping[str, Any], Iterable[Any]]


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second, ``Z`` suffix."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def compute_health_score(passed: int, warning: int, scored: int) -> float | None:
    """``(passed + 0.5 * warning) / scored * 100``, or ``None`` when nothing was scored."""
    if scored == 0:
        return None
    return (passed + 0.5 * warning) / scored * 100


def is_not_judged(result: CheckResult) -> bool:
    """A skipped check that had no data to judge (``details["no_data"]`` names what was missing)."""
    return result.status is CheckStatus.SKIPPED and bool(result.details.get("no_data"))


def summarize(results: Iterable[CheckResult]) -> dict[str, Any]:
    """Counts by status, ``total`` (all checks), ``scored`` (not skipped), ``not_judged`` (the
    skipped ones that had no data) and the score."""
    counts = {status.value: 0 for status in CheckStatus}
    not_judged = 0
    for result in results:
        counts[result.status.value] += 1
        not_judged += is_not_judged(result)
    total = sum(counts.values())
    scored = total - counts[CheckStatus.SKIPPED.value]
    return {
        "total": total,
        "scored": scored,
        **counts,
        "not_judged": not_judged,
        "health_score": compute_health_score(
            counts[CheckStatus.PASSED.value], counts[CheckStatus.WARNING.value], scored
        ),
    }


def find_root_causes(results: Iterable[CheckResult]) -> list[dict[str, Any]]:
    """Groups of two or more failed or errored checks that raised the same exception at the same
    place (``details["exception"]`` and, when given, ``details["location"]``), largest first."""
    groups: dict[tuple[str, str | None], list[CheckResult]] = {}
    for result in results:
        exception = result.details.get("exception")
        if result.ok or not isinstance(exception, str) or not exception:
            continue
        location = result.details.get("location")
        key = (exception, location if isinstance(location, str) and location else None)
        groups.setdefault(key, []).append(result)
    shared = [(key, members) for key, members in groups.items() if len(members) > 1]
    shared.sort(key=lambda group: (-len(group[1]), group[0][0], group[0][1] or ""))
    return [
        {
            "exception": exception,
            "location": location,
            "count": len(members),
            "checks": [member.nodeid or member.check_name for member in members],
        }
        for (exception, location), members in shared
    ]


def _optional_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where} must be a string or null; got {value!r}")
    return value


def _model_identity(data: Any, index: int) -> dict[str, Any]:
    """A validated copy of one model identity with every ``MODEL_KEYS`` key present."""
    where = f"models[{index}]"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a dict with the keys {', '.join(MODEL_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in MODEL_KEYS)
    if unknown:
        raise ValueError(
            f"{where} has unknown keys {', '.join(unknown)}; expected {', '.join(MODEL_KEYS)}"
        )
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}.key must be a non-empty string (the model's name); got {key!r}")
    identity: dict[str, Any] = {"key": key}
    for name in MODEL_KEYS[1:]:
        value = data.get(name)
        if name == "num_parameters":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{where}.num_parameters must be an integer >= 0 or null")
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        else:
            _optional_str(value, f"{where}.{name}")
        identity[name] = value
    return identity


def _environment(data: Any) -> dict[str, str | None]:
    if not isinstance(data, Mapping):
        raise ValueError("environment must be a dict of version strings")
    missing = [key for key in ENVIRONMENT_KEYS if key not in data]
    unknown = sorted(str(key) for key in data if key not in ENVIRONMENT_KEYS)
    if missing or unknown:
        raise ValueError(
            f"environment must have exactly the keys {', '.join(ENVIRONMENT_KEYS)}; "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}"
        )
    return {key: _optional_str(data[key], f"environment.{key}") for key in ENVIRONMENT_KEYS}


def _created_at(value: Any) -> str:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.utcoffset() is not None and not moment.utcoffset():
            return value
    raise ValueError(
        f"created_at must be an ISO 8601 UTC timestamp like 2024-01-31T12:00:00Z; got {value!r}"
    )


def _status(status: Any, reason: Any) -> tuple[str, str | None]:
    """A validated (status, reason): an incomplete report says why; a complete one has none."""
    if status not in (COMPLETE, INCOMPLETE):
        raise ValueError(f"status must be {COMPLETE!r} or {INCOMPLETE!r}; got {status!r}")
    if status == INCOMPLETE:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("an incomplete report needs a status_reason saying why")
        return status, reason
    if reason is not None:
        raise ValueError(f"a complete report has no status_reason; got {reason!r}")
    return status, None


def _not_run(nodeids: Any) -> list[str]:
    if isinstance(nodeids, (str, bytes)) or not isinstance(nodeids, Iterable):
        raise ValueError("not_run must be a list of test node ids")
    names = list(nodeids)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"not_run must hold non-empty node id strings; got {names!r}")
    return names


def _iter_results(part: Any) -> Iterable[CheckResult]:
    if isinstance(part, HealthReport):
        yield from part.checks
    elif isinstance(part, CheckResult):
        yield part
    elif isinstance(part, Mapping):
        yield CheckResult.from_dict(part)
    elif isinstance(part, Iterable) and not isinstance(part, (str, bytes)):
        for item in part:
            if isinstance(item, HealthReport) or (
                isinstance(item, Iterable) and not isinstance(item, (str, bytes, Mapping))
            ):
                raise ValueError(
                    "merge takes reports, or lists of CheckResults or check dicts; got a list "
                    "containing a nested list or report"
                )
            yield from _iter_results(item)
    else:
        raise ValueError(
            f"cannot merge a {type(part).__name__}; pass HealthReports, CheckResults, check "
            "dicts (CheckResult.to_dict()) or lists of them"
        )


class HealthReport:
    """The session's checks plus context; everything else is derived when read.

    ``models`` are plain dicts with the keys ``MODEL_KEYS`` (missing ones become ``None``);
    ``environment``, ``tool_version`` and ``created_at`` default to this process, this package
    and now. ``status`` is ``"complete"`` unless the session did not run to its end; then
    ``status_reason`` says why and ``not_run`` lists the node ids of the tests that never ran.
    """

    def __init__(
        self,
        checks: Iterable[CheckResult] = (),
        *,
        models: Iterable[Mapping[str, Any]] = (),
        environment: Mapping[str, str | None] | None = None,
        tool_version: str | None = None,
        created_at: str | None = None,
        status: str = COMPLETE,
        status_reason: str | None = None,
        not_run: Iterable[str] = (),
    ) -> None:
        self.status, self.status_reason = _status(status, status_reason)
        self.not_run = _not_run(not_run)
        self._checks: list[CheckResult] = []
        self.extend(checks)
        self._models: list[dict[str, Any]] = []
        for index, model in enumerate(models):
            self._add_model(_model_identity(model, index))
        self.environment = _environment(
            collect_environment() if environment is None else environment
        )
        if tool_version is None:
            tool_version = __version__
        if not isinstance(tool_version, str) or not tool_version:
            raise ValueError(f"tool_version must be a non-empty string; got {tool_version!r}")
        self.tool_version = tool_version
        self.created_at = utc_now() if created_at is None else _created_at(created_at)

    def __repr__(self) -> str:
        score = self.health_score
        shown = "null" if score is None else f"{score:.1f}"
        return f"<HealthReport {self.status}, {len(self._checks)} checks, score {shown}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HealthReport):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # -- building ------------------------------------------------------------------------------

    def add(self, result: CheckResult) -> None:
        """Add one result; the score and summaries include it from now on."""
        if not isinstance(result, CheckResult):
            raise ValueError(
                f"a HealthReport holds CheckResults; got {type(result).__name__} (use "
                "CheckResult.from_dict for a dict)"
            )
        self._checks.append(result)

    def extend(self, results: Iterable[CheckResult]) -> None:
        """Add several results."""
        for result in results:
            self.add(result)

    def _add_model(self, identity: dict[str, Any]) -> None:
        for existing in self._models:
            if existing["key"] == identity["key"]:
                if existing != identity:
                    raise ValueError(
                        f"two different models are both named {identity['key']!r}: {existing} "
                        f"and {identity}; give each model its own key"
                    )
                return
        self._models.append(identity)

    def merge(self, *parts: MergePart) -> HealthReport:
        """A new report with this report's context and checks plus those of ``parts``.

        Each part is a ``HealthReport`` (its checks and models are taken), a ``CheckResult``, a
        check dict (``CheckResult.to_dict()``, what xdist workers send), or a list of results or
        check dicts. Models are united by key (the same key with a different identity is an
        error). The order of ``parts`` does not matter: checks are always in canonical order.
        """
        merged = HealthReport(
            self._checks,
            models=self._models,
            environment=self.environment,
            tool_version=self.tool_version,
            created_at=self.created_at,
            status=self.status,
            status_reason=self.status_reason,
            not_run=self.not_run,
        )
        for part in parts:
            if isinstance(part, HealthReport):
                for model in part.models:
                    merged._add_model(model)
            merged.extend(_iter_results(part))
        return merged

    # -- derived views -------------------------------------------------------------------------

    @property
    def checks(self) -> list[CheckResult]:
        """Every result, in canonical order (a new list; use ``add`` to add one)."""
        return sorted(self._checks, key=CheckResult.sort_key)

    @property
    def models(self) -> list[dict[str, Any]]:
        """The model identities, in the order given (copies)."""
        return [dict(model) for model in self._models]

    @property
    def summary(self) -> dict[str, Any]:
        """Overall counts by status, ``total``, ``scored`` and ``health_score``."""
        return summarize(self._checks)

    @property
    def tier_summaries(self) -> list[dict[str, Any]]:
        """One summary per tier that has at least one check, in tier order."""
        return [
            {"tier": tier, **summarize(r for r in self._checks if r.tier == tier)}
            for tier in TIERS
            if any(r.tier == tier for r in self._checks)
        ]

    @property
    def health_score(self) -> float | None:
        """``(passed + 0.5 * warning) / scored * 100`` over non-skipped checks; ``None`` if none."""
        score: float | None = self.summary["health_score"]
        return score

    @property
    def complete(self) -> bool:
        """True when the session that wrote the report ran to its end."""
        return self.status == COMPLETE

    @property
    def root_causes(self) -> list[dict[str, Any]]:
        """Failed or errored checks grouped by the exception they share (groups of 2 or more)."""
        return find_root_causes(self.checks)

    @property
    def recommendations(self) -> list[dict[str, Any]]:
        """One per error, failure and warning, with a remediation hint."""
        return build_recommendations(self.checks)

    def fail_under(self, threshold: float) -> bool:
        """True when the score is below ``threshold`` (0-100), i.e. the session should fail.

        A report with no scored check (``health_score`` is ``None``) does not fail.
        """
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold <= 100
        ):
            raise ValueError(
                f"fail-under threshold must be a number from 0 to 100; got {threshold!r}"
            )
        score = self.health_score
        return score is not None and score < threshold

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON types, with summaries, score and recommendations computed now."""
        checks = self.checks
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": TOOL_NAME, "version": self.tool_version},
            "created_at": self.created_at,
            "status": self.status,
            "status_reason": self.status_reason,
            "not_run": list(self.not_run),
            "environment": dict(self.environment),
            "models": self.models,
            "summary": self.summary,
            "root_causes": find_root_causes(checks),
            "tiers": self.tier_summaries,
            "checks": [result.to_dict() for result in checks],
            "recommendations": build_recommendations(checks),
        }

    def content(self) -> dict[str, Any]:
        """``to_dict`` without what differs between two runs of the same suite: ``created_at``
        and every ``duration_seconds``. For comparing a serial and a parallel run."""
        data = self.to_dict()
        del data["created_at"]
        for check in data["checks"]:
            del check["duration_seconds"]
        return data

    @staticmethod
    def _dumps(data: Mapping[str, Any]) -> str:
        return dumps(data, indent=2, ensure_ascii=False) + "\n"

    def to_json(self) -> str:
        """Strict JSON text (no NaN tokens), indented, ending in a newline."""
        return self._dumps(self.to_dict())

    def to_markdown(self) -> str:
        """The human-readable twin of ``to_json``."""
        return render_markdown(self.to_dict())

    def write(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write the JSON to ``path`` and the Markdown to ``path.with_suffix('.md')``.

        Both texts are built before either file is touched, and each file is replaced
        atomically, so a failure leaves the previous files whole. Returns (json, markdown).
        """
        target = Path(path)
        markdown_path = target.with_suffix(".md")
        if markdown_path == target:
            raise ValueError(
                f"the report path {target} ends in .md, where its Markdown twin goes; give the "
                "JSON report another suffix, such as health.json"
            )
        data = self.to_dict()
        json_text = self._dumps(data)
        markdown_text = render_markdown(data)
        atomic_write_text(target, json_text)
        atomic_write_text(markdown_path, markdown_text)
        return target, markdown_path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        """Load a report from ``to_dict`` output or its JSON; derived keys are recomputed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a health report must be a JSON object; got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"health report schema_version {version!r} is not supported; this version of "
                f"{TOOL_NAME} reads {SCHEMA_VERSION!r}"
            )
        unknown = sorted(str(key) for key in data if key not in _TOP_KEYS)
        missing = [key for key in _TOP_KEYS if key not in data and key not in _DERIVED_KEYS]
        if unknown or missing:
            raise ValueError(
                f"health report has unknown keys {unknown or 'none'} and lacks {missing or 'none'}"
            )
        tool = data["tool"]
        if not isinstance(tool, Mapping) or tool.get("name") != TOOL_NAME:
            raise ValueError(
                f"tool must be {{'name': {TOOL_NAME!r}, 'version': ...}}; got {tool!r}"
            )
        checks = data["checks"]
        if not isinstance(checks, list):
            raise ValueError("checks must be a list of check results")
        models = data["models"]
        if not isinstance(models, list):
            raise ValueError("models must be a list of model identities")
        return cls(
            (CheckResult.from_dict(check) for check in checks),
            models=models,
            environment=data["environment"],
            tool_version=tool.get("version"),
            created_at=data["created_at"],
            status=data["status"],
            status_reason=data["status_reason"],
            not_run=data["not_run"],
        )

    @classmethod
    def from_json(cls, text: str) -> HealthReport:
        """Load a report from its JSON text."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> HealthReport:
        """Load a report written by ``write``."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
