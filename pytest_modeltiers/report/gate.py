"""The CI gate over a written health report: ``modeltiers check-report PATH [--min-score N]``.

PYTEST_DONT_REWRITE

pytest's exit code alone cannot say that a model was tested: a process that model code ends
with ``os._exit(0)`` exits 0 with no output. The session writes its report as incomplete when it
starts and completes it at the end, so the last step of a CI job reads the report back and
passes only when it is there, readable, complete, and says the model was tested and healthy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pytest_modeltiers.report.health_report import HealthReport

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "GateVerdict",
    "check_report",
    "load_report",
    "report_problems",
]

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2

_HOW_TO_WRITE = "run pytest with --model ... --modeltiers-report PATH before this step"


@dataclass(frozen=True)
class GateVerdict:
    """The exit code of the gate and the lines that explain it."""

    exit_code: int
    lines: tuple[str, ...]


def _unreadable(path: Path, problem: str) -> GateVerdict:
    return GateVerdict(EXIT_UNREADABLE, (f"{path}: {problem}",))


def _load(path: Path) -> HealthReport | GateVerdict:
    """The report at ``path``, or the verdict that says why there is none to judge."""
    if not path.exists():
        return _unreadable(
            path,
            f"no health report here: the session did not write one; {_HOW_TO_WRITE}, and check "
            "that the path is the same in both steps",
        )
    if path.is_dir():
        return _unreadable(
            path, "is a directory, not a health report; give the JSON file (such as health.json)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _unreadable(path, f"cannot be read ({exc}); check its permissions and encoding")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _unreadable(
            path,
            f"is not valid JSON ({exc}): the file is corrupt or not a health report; "
            + _HOW_TO_WRITE,
        )
    try:
        return HealthReport.from_dict(data)
    except ValueError as exc:
        return _unreadable(
            path,
            f"is not a health report this version can judge: {exc}; rewrite it with this "
            f"version ({_HOW_TO_WRITE})",
        )


def _counts(summary: dict[str, int]) -> str:
    parts = [f"{summary[k]} {k}" for k in ("passed", "warning", "failed", "error") if summary[k]]
    ordinary_skips = summary["skipped"] - summary["not_judged"]
    if ordinary_skips:
        parts.append(f"{ordinary_skips} skipped")
    if summary["not_judged"]:
        parts.append(f"{summary['not_judged']} not judged (no data)")
    return ", ".join(parts) or "no checks"


def report_problems(report: HealthReport, min_score: float | None = None) -> list[str]:
    """Every reason the report closes the gate; empty when it passes (the HTML page's verdict
    says the same)."""
    return _problems(report, min_score)


def load_report(path: str | os.PathLike[str]) -> HealthReport | GateVerdict:
    """The report at ``path``, or the unreadable verdict (exit 2) that says why there is none."""
    return _load(Path(path))


def _problems(report: HealthReport, min_score: float | None) -> list[str]:
    """Every reason the report closes the gate; empty when it passes."""
    problems: list[str] = []
    summary = report.summary
    if not report.complete:
        problems.append(f"INCOMPLETE: {report.status_reason}")
        if report.not_run:
            problems.append(
                f"{len(report.not_run)} collected test(s) never ran: " + ", ".join(report.not_run)
            )
    flagged = [check for check in report.checks if not check.ok]
    if flagged:
        names = ", ".join(check.nodeid or check.check_name for check in flagged)
        problems.append(
            f"FAILED: {summary['failed']} failed and {summary['error']} errored check(s): {names}"
        )
    if summary["total"] == 0:
        problems.append(
            "NOTHING TESTED: the report holds no checks (was the model named, and did -m or -k "
            "select any built-in check?)"
        )
    elif summary["scored"] == 0:
        problems.append(
            f"NOTHING JUDGED: all {summary['total']} check(s) were skipped ({_counts(summary)}); "
            "give the checks the data they need or select checks that apply to the model"
        )
    score = report.health_score
    if min_score is not None and score is not None and score < min_score:
        problems.append(f"FAILED: health score {score:.1f} is below --min-score {min_score:g}")
    return problems


def check_report(path: str | os.PathLike[str], min_score: float | None = None) -> GateVerdict:
    """Judge the health report at ``path`` as a CI gate: pass only a complete report that
    tested something and found it healthy."""
    if min_score is not None and not 0 <= min_score <= 100:
        raise ValueError(f"--min-score must be a health score from 0 to 100; got {min_score!r}")
    target = Path(path)
    loaded = _load(target)
    if isinstance(loaded, GateVerdict):
        return loaded
    problems = _problems(loaded, min_score)
    if problems:
        return GateVerdict(EXIT_FAILED, tuple(f"{target}: {problem}" for problem in problems))
    score = loaded.health_score
    shown = "n/a" if score is None else f"{score:.1f}"
    return GateVerdict(
        EXIT_OK,
        (f"{target}: OK: complete, health score {shown} ({_counts(loaded.summary)})",),
    )
