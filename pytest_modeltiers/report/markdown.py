"""The Markdown twin of the health report, rendered from the report's JSON dict.

PYTEST_DONT_REWRITE

Rendering from the dict (not the ``HealthReport`` object) means the two files written together
come from one serialisation, with the same timestamp and score, and a report loaded from JSON
renders the same as the one that wrote it. Status markers are plain text (PASS, WARN, FAIL,
ERROR, SKIP) so the file reads the same in a terminal, a CI log and a rendered page.

An incomplete report says so in its first lines (``INCOMPLETE`` and the reason), before the
score, so a half-finished session is never read as a green one; a shared root cause of several
failures comes next. A skipped check that had no data to judge is marked ``NO DATA``.

Table cells hold one line (``jsonio.markdown_cell``); the full text of every failure, error and
warning follows in a fenced block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_modeltiers.jsonio import markdown_cell as _cell
from pytest_modeltiers.jsonio import markdown_escape as _escape
from pytest_modeltiers.report.check_result import CheckStatus, check_marker

__all__ = ["render_markdown"]

_FLAGGED = ("error", "failed", "warning")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _code(value: Any) -> str:
    """An inline code span that survives backticks and pipes inside table cells."""
    text = str(value).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _counts_row(summary: Mapping[str, Any]) -> list[str]:
    return [
        _score(summary["health_score"]),
        str(summary["total"]),
        str(summary["passed"]),
        str(summary["warning"]),
        str(summary["failed"]),
        str(summary["error"]),
        str(summary["skipped"]),
        str(summary["not_judged"]),
    ]


def _status_lines(report: Mapping[str, Any]) -> list[str]:
    """The incomplete warning and the tests that never ran; nothing for a complete report."""
    if report["status"] == "complete":
        return []
    lines = [f"**INCOMPLETE: {_escape(report['status_reason'])}**", ""]
    not_run: list[str] = report["not_run"]
    if not_run:
        lines.append(f"{_plural(len(not_run), 'test')} did not run:")
        lines += [f"- {_code(nodeid)}" for nodeid in not_run]
        lines.append("")
    return lines


def _root_cause_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for cause in report["root_causes"]:
        where = f" at {_code(cause['location'])}" if cause["location"] else ""
        lines.append(
            f"**{cause['count']} checks failed on one root cause: "
            f"{_code(cause['exception'])}{where}**"
        )
        lines.append("")
    return lines


def _where(check: Mapping[str, Any]) -> str:
    parts = [f"tier {check['tier']}"]
    if check.get("model"):
        parts.append(f"model {_escape(check['model'])}")
    return ", ".join(parts)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Markdown for a report dict as produced by ``HealthReport.to_dict``."""
    summary = report["summary"]
    checks: list[Mapping[str, Any]] = report["checks"]
    environment: Mapping[str, str | None] = report["environment"]
    lines: list[str] = ["# Model health report", "", *_status_lines(report)]

    score = summary["health_score"]
    score_text = "n/a (no scored checks)" if score is None else f"{score:.1f} / 100"
    not_judged = summary["not_judged"]
    not_judged_text = f" ({not_judged} of them not judged: no data)" if not_judged else ""
    lines += [
        *_root_cause_lines(report),
        f"**Health score: {score_text}**",
        "",
        f"{_plural(summary['total'], 'check')}: {summary['passed']} passed, "
        f"{_plural(summary['warning'], 'warning')}, {summary['failed']} failed, "
        f"{_plural(summary['error'], 'error')}, {summary['skipped']} skipped{not_judged_text}. "
        "Score = (passed + 0.5 x warnings) / checks not skipped x 100; a check not judged for "
        "lack of data is skipped, so it counts neither way.",
        "",
    ]
    versions = ", ".join(
        f"{name} {version}" for name, version in environment.items() if version is not None
    )
    lines += [
        f"Written {report['created_at']} by {report['tool']['name']} "
        f"{report['tool']['version']}; {_escape(versions)}.",
        "",
    ]

    lines += ["## Models", ""]
    models: list[Mapping[str, Any]] = report["models"]
    if models:
        lines += _table(
            ["Model", "Class", "Parameters", "Task", "Adapter", "Spec", "File", "SHA-256"],
            [
                [
                    _cell(model["key"]),
                    _cell(model["class_name"]),
                    "-" if model["num_parameters"] is None else f"{model['num_parameters']:,}",
                    _cell(model["task"]),
                    _cell(model["adapter"]),
                    _cell(model["spec"]),
                    _cell(model["file"]),
                    "-" if model["sha256"] is None else _code(model["sha256"]),
                ]
                for model in models
            ],
        )
    else:
        lines.append("No model identity was recorded.")
    lines.append("")

    lines += ["## Summary by tier", ""]
    header = [
        "Tier",
        "Score",
        "Checks",
        "Passed",
        "Warnings",
        "Failed",
        "Errors",
        "Skipped",
        "Not judged",
    ]
    rows = [[str(tier["tier"]), *_counts_row(tier)] for tier in report["tiers"]]
    rows.append(["**All**", *_counts_row(summary)])
    lines += [*_table(header, rows), ""]

    lines += ["## Checks", ""]
    if checks:
        with_model = any(check.get("model") for check in checks)
        header = ["Status", "Tier", *(["Model"] if with_model else []), "Check", "Time (s)"]
        header.append("Message")
        rows = [
            [
                check_marker(check),
                str(check["tier"]),
                *([_cell(check.get("model"))] if with_model else []),
                _code(check["check_name"]),
                f"{check['duration_seconds']:.2f}",
                _cell(check["message"]),
            ]
            for check in checks
        ]
        lines += _table(header, rows)
    else:
        lines.append("No checks ran.")
    lines.append("")

    flagged = [check for status in _FLAGGED for check in checks if check["status"] == status]
    if flagged:
        lines += ["## Failures and warnings", ""]
        for check in flagged:
            lines.append(
                f"### {check_marker(check)} {_code(check['check_name'])} ({_where(check)})"
            )
            lines.append("")
            if check.get("nodeid"):
                lines += [f"Test: {_code(check['nodeid'])}", ""]
            lines += [_fenced(check["message"]), ""]

    recommendations: list[Mapping[str, Any]] = report["recommendations"]
    lines += ["## Recommendations", ""]
    if recommendations:
        for number, item in enumerate(recommendations, start=1):
            lines.append(
                f"{number}. **{CheckStatus(item['status']).marker}** {_code(item['check_name'])} "
                f"({_where(item)}): {_cell(item['message'])}"
            )
            lines.append(f"   Hint: {_escape(item['hint'])}.")
    else:
        lines.append("None: no check failed, errored or warned.")
    lines.append("")
    return "\n".join(lines)
