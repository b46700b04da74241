"""``modeltiers run-tiers --config FILE [--json]``: one tier through pytest, summarised for CI.

PYTEST_DONT_REWRITE

The command does not reimplement any check: it runs ``python -m pytest`` on the config's model
with the tier's marker and the plugin options the config maps to, in a scratch directory (so
the user's own tests are not collected), reads the session health report the plugin wrote, and
prints a summary: for tier 2 each test's status and measurements (``attention``,
``attribution``, ``robustness``); per-format status, max abs diff, latency and artifacts for tier 4;
``eval_metrics``, ``comparison``, ``drift``, ``retraining`` and ``status`` for tier 5.
``--json`` prints the summary as JSON. Exit codes: 0 when the tier's status is ``ok`` (or
``warn`` without ``--fail-on warn``), 1 when it is ``fail``, 2 for a bad config or a run that
could not start (pytest's own output is shown then).

The config reader and the tier 4 summary are imported when a command runs, not when the
``modeltiers`` command starts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_modeltiers.jsonio import dumps

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: pytest exit codes that mean the tier ran (all passed / some failed / nothing selected).
_RAN = (0, 1, 5)


def add_parser(commands: Any) -> None:
    """Register ``run-tiers`` on the ``modeltiers`` command's subparsers."""
    parser = commands.add_parser(
        "run-tiers", help="run one tier through pytest from a JSON config and summarise it"
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--fail-on",
        choices=("warn", "fail"),
        default="fail",
        help="the status that makes the exit code 1 (default: fail)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="also keep the session health report (JSON, Markdown twin) at PATH",
    )


def run(args: argparse.Namespace) -> int:
    from pytest_modeltiers.cli.run_tiers_config import load_tiers_config
    from pytest_modeltiers.errors import ConfigError

    try:
        config = load_tiers_config(args.config)
    except ConfigError as exc:
        print(f"modeltiers run-tiers: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="modeltiers-run-tiers-") as scratch:
        workdir = Path(scratch)
        report = (args.report or workdir / "health.json").resolve()
        (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        eval_file = None
        if (eval_config := config.eval_config()) is not None:
            eval_file = workdir / "eval_config.json"
            eval_file.write_text(dumps(eval_config), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-c",
            str(workdir / "pytest.ini"),
            "--rootdir",
            str(workdir),
            "--modeltiers-report",
            str(report),
            *config.pytest_options(eval_file),
        ]
        completed = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, check=False
        )
        if completed.returncode not in _RAN or not report.is_file():
            print(
                f"modeltiers run-tiers: pytest could not run tier {config.tier} "
                f"(exit code {completed.returncode}):\n{completed.stdout}{completed.stderr}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        health = json.loads(report.read_text(encoding="utf-8"))
    if health.get("status", "complete") != "complete":
        print(
            f"modeltiers run-tiers: the tier {config.tier} session did not finish "
            f"({health.get('status_reason') or 'no reason recorded'}), so nothing it reported "
            f"can be trusted; pytest exited {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    tasks = {str(m.get("task")) for m in health.get("models", [])}
    if config.task_name and tasks and tasks != {config.task_name}:
        print(
            f"modeltiers run-tiers: the config's task_name is {config.task_name!r} but "
            f"{config.model_spec} declares TASK {', '.join(sorted(tasks))}; make them agree "
            "(or drop task_name)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    summary = summarise(config.tier, health, model_note=config.model_note)
    if args.json:
        print(dumps(summary, indent=2, sort_keys=True))
    else:
        print(render_text(config.tier, summary))
    failing = {"fail"} if args.fail_on == "fail" else {"fail", "warn"}
    return EXIT_FAILED if summary["status"] in failing else EXIT_OK


# -- summaries -------------------------------------------------------------------------------


def tier_status(checks: Sequence[Mapping[str, Any]]) -> str:
    """``fail`` if a check failed or errored, ``warn`` if one warned, else ``ok``."""
    statuses = {check["status"] for check in checks}
    if statuses & {"failed", "error"}:
        return "fail"
    if "warning" in statuses:
        return "warn"
    return "ok"


def summarise(tier: int, health: Mapping[str, Any], *, model_note: str) -> dict[str, Any]:
    checks = [c for c in health.get("checks", []) if c.get("tier") == tier]
    summary: dict[str, Any] = {
        "tier": tier,
        "model": model_note,
        "status": tier_status(checks),
        "health_score": health.get("summary", {}).get("health_score"),
        "checks": {_check_key(c): _brief(c) for c in checks},
    }
    if tier == 2:
        summary["tier2"] = _tier2(checks)
    elif tier == 4:
        from pytest_modeltiers.checks.export_validation import tier4_summary

        summary.update(tier4_summary(checks))
    elif tier == 5:
        summary.update(_tier5(checks, health))
    return summary


def _check_key(check: Mapping[str, Any]) -> str:
    nodeid = str(check.get("nodeid") or check["check_name"])
    return nodeid.split("::", 1)[-1]


def _brief(check: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": check["status"], "message": check.get("message", "")}


def _part(check: Mapping[str, Any]) -> dict[str, Any]:
    """A check's status with its message (the reason of a skip) and its measurements."""
    return {
        "status": check["status"],
        "message": check.get("message", ""),
        **(check.get("details") or {}),
    }


def _tier2(checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``status`` and each test's part under ``attention``, ``attribution``, ``robustness``,
    keyed by the test's name without its prefix (``normalization``, ``completeness``)."""
    groups: dict[str, dict[str, Any]] = {"attention": {}, "attribution": {}}
    robustness = None
    for check in checks:
        name = str(check["check_name"])
        if name == "test_robustness":
            robustness = _part(check)
        for group, parts in groups.items():
            prefix = f"test_{group}_"
            if name.startswith(prefix):
                parts[name.removeprefix(prefix)] = _part(check)
    return {
        "status": tier_status(checks),
        "attention": groups["attention"] or None,
        "attribution": groups["attribution"] or None,
        "robustness": robustness,
    }


def _tier5(checks: Sequence[Mapping[str, Any]], health: Mapping[str, Any]) -> dict[str, Any]:
    by_name = {c["check_name"]: c for c in checks}

    def part(name: str) -> Any:
        check = by_name.get(name)
        if check is None:
            return None
        details = check.get("details") or {}
        if check["status"] == "skipped":
            return {"status": "skipped", "reason": check.get("message", ""), **details}
        return {"status": check["status"], **details}

    eval_check = by_name.get("test_eval_metrics")
    eval_metrics = (eval_check.get("details") or {}).get("metrics") if eval_check else None
    drift = {
        key: part(name)
        for key, name in (("input", "test_input_drift"), ("prediction", "test_prediction_drift"))
        if name in by_name
    }
    return {
        "eval_metrics": eval_metrics,
        "comparison": part("test_baseline_regression"),
        "drift": drift or None,
        "retraining": health.get("retraining") or part("test_retraining_triggers"),
    }


def render_text(tier: int, summary: Mapping[str, Any]) -> str:
    lines = [f"tier {tier}: {summary['status']}  ({summary['model']})"]
    if tier == 4:
        for fmt, entry in summary["tier4"]["formats"].items():
            parts = [f"  {fmt:13s} {entry['status']:7s}"]
            if entry.get("max_abs_diff") is not None:
                parts.append(f"max abs diff {entry['max_abs_diff']:.3g}")
            if entry.get("latency_ms") is not None:
                parts.append(f"latency {entry['latency_ms']:.3g} ms")
            if entry.get("artifact"):
                parts.append(str(entry["artifact"]))
            lines.append("  ".join(parts))
    if tier == 2:
        lines.extend(_tier2_measurements(summary["tier2"]))
    for key, check in summary["checks"].items():
        lines.append(f"  [{check['status']}] {key}: {check['message']}")
    return "\n".join(lines)


def _tier2_measurements(tier2: Mapping[str, Any]) -> list[str]:
    """The attention health per layer: each head's normalised entropy and top weight."""
    health = (tier2.get("attention") or {}).get("health") or {}
    lines = []
    for layer in health.get("layers", []):
        heads = [
            f"h{head['head']} H={head['normalized_entropy']:.2f} top={head['max_weight']:.2f}"
            for head in layer["heads"]
            if "normalized_entropy" in head
        ]
        if heads:
            lines.append(f"  attention {layer['layer']}: {'  '.join(heads)}")
    return lines
