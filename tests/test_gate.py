"""Green must mean tested: the report's status, ``modeltiers check-report``, usage errors at start.

A session writes its health report as incomplete when it starts and completes it at the end;
``modeltiers check-report`` fails a CI job on a missing, incomplete or failing report. Output
paths and ``-m`` typos are refused before anything runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_modeltiers.cli import main as cli_main
from pytest_modeltiers.report import CheckResult, HealthReport, load_schema
from pytest_modeltiers.report.gate import check_report
from pytest_modeltiers.session import ModelTiersSession
from pytest_modeltiers.settings import Settings

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "fixtures" / "gate"
TINY_GPT = REPO / "example_models" / "tiny_gpt.py"


def _model(pytester: pytest.Pytester, name: str) -> str:
    """A copy of a gate fixture model in the pytester directory (failing batches land there)."""
    return str(shutil.copy(GATE / name, pytester.path))


def _validate(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    return data


def _gate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(["check-report", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- a process that dies leaves an incomplete report --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["exits_in_forward.py", "exits_at_import.py"])
def test_a_model_that_ends_the_process_leaves_an_incomplete_report_the_gate_refuses(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], fixture: str
) -> None:
    model = _model(pytester, fixture)
    result = pytester.runpytest_subprocess(
        f"--model={model}", "--trust-model", "-m", "tier1", "--modeltiers-report", "out/health.json"
    )
    # The model's os._exit(0) is the process's exit status: pytest cannot see it.
    assert result.ret == 0
    assert "modeltiers: health score" not in result.stdout.str()
    report = pytester.path / "out" / "health.json"
    data = _validate(report)
    assert data["status"] == "incomplete"
    assert "did not run to its end" in data["status_reason"]
    assert data["checks"] == []
    assert "INCOMPLETE" in (pytester.path / "out" / "health.md").read_text(encoding="utf-8")
    code, output = _gate(capsys, str(report))
    assert code == 1
    assert "INCOMPLETE" in output and "did not run to its end" in output


def test_a_finished_session_completes_the_report_and_passes_the_gate(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    result = pytester.runpytest(
        f"--model={TINY_GPT}",
        "-k",
        "parameter_initialization or causal_masking",
        "--modeltiers-report",
        "health.json",
    )
    result.assert_outcomes(passed=2)
    data = _validate(pytester.path / "health.json")
    assert (data["status"], data["status_reason"], data["not_run"]) == ("complete", None, [])
    markdown = (pytester.path / "health.md").read_text(encoding="utf-8")
    assert "INCOMPLETE" not in markdown
    capsys.readouterr()
    code, output = _gate(capsys, str(pytester.path / "health.json"), "--min-score", "90")
    assert code == 0, output
    assert output.count("\n") == 1
    assert "OK: complete, health score 100.0 (2 passed)" in output


@pytest.mark.slow
def test_an_interrupted_session_stays_incomplete(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        interrupter="""
        def pytest_runtest_call(item):
            if item.name == "test_parameter_initialization":
                raise KeyboardInterrupt
        """
    )
    result = pytester.runpytest_subprocess(
        f"--model={TINY_GPT}",
        "-p",
        "interrupter",
        "-k",
        "parameter_initialization",
        "--modeltiers-report",
        "h.json",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = _validate(pytester.path / "h.json")
    assert data["status"] == "incomplete"
    assert "interrupted" in data["status_reason"]


# -- check-report -------------------------------------------------------------------------------


def _write(path: Path, *checks: CheckResult, **context: Any) -> Path:
    HealthReport(checks, **context).write(path)
    return path


PASSED = CheckResult.passed("test_output_finite", 1, nodeid="modeltiers/tier1.py::t1")
WARNED = CheckResult.warning("test_parameter_initialization", 1, "head is zero")
FAILED = CheckResult.failed("test_gradient_flow", 1, "no gradient", nodeid="m/tier1.py::grad")
ERRORED = CheckResult.error("test_output_stability", 1, "timed out after 5 s")
SKIPPED = CheckResult.skipped("test_causal_masking", 1, "not a decoder LM")
NO_DATA = CheckResult.skipped(
    "test_baseline_regression", 5, "no baseline", {"no_data": ["baseline"]}
)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: None, "no health report here: the session did not write one"),
        (lambda p: p.mkdir(), "is a directory, not a health report"),
        (
            lambda p: p.write_text('{"schema_version": "1.1", "checks": [', "utf-8"),
            "not valid JSON",
        ),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "cannot be read"),
        (lambda p: p.write_text("[]", "utf-8"), "not a health report this version can judge"),
        (
            lambda p: p.write_text(json.dumps({"schema_version": "0.9"}), "utf-8"),
            "schema_version '0.9' is not supported",
        ),
    ],
    ids=["missing", "directory", "truncated", "not-utf8", "not-a-report", "old-version"],
)
def test_check_report_refuses_what_it_cannot_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Any, expected: str
) -> None:
    path = tmp_path / "health.json"
    setup(path)
    code, output = _gate(capsys, str(path))
    assert code == 2
    assert output.startswith(f"modeltiers check-report: {path}: ")
    assert expected in output


@pytest.mark.parametrize(
    ("checks", "context", "args", "expected"),
    [
        (
            [PASSED],
            {"status": "incomplete", "status_reason": "the session did not run to its end"},
            [],
            ["INCOMPLETE: the session did not run to its end"],
        ),
        (
            [PASSED],
            {
                "status": "incomplete",
                "status_reason": "aborted",
                "not_run": ["modeltiers/tier1.py::test_b"],
            },
            [],
            ["INCOMPLETE: aborted", "1 collected test(s) never ran: modeltiers/tier1.py::test_b"],
        ),
        (
            [PASSED, FAILED, ERRORED],
            {},
            [],
            ["FAILED: 1 failed and 1 errored check(s): m/tier1.py::grad, test_output_stability"],
        ),
        (
            [PASSED, WARNED],
            {},
            ["--min-score", "80"],
            ["FAILED: health score 75.0 is below --min-score 80"],
        ),
        ([], {}, [], ["NOTHING TESTED: the report holds no checks"]),
        (
            [SKIPPED, NO_DATA],
            {},
            [],
            ["NOTHING JUDGED: all 2 check(s) were skipped (1 skipped, 1 not judged (no data))"],
        ),
    ],
    ids=["incomplete", "aborted", "failed", "below-score", "no-checks", "nothing-judged"],
)
def test_check_report_fails_a_report_that_closes_the_gate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checks: list[CheckResult],
    context: dict[str, Any],
    args: list[str],
    expected: list[str],
) -> None:
    path = _write(tmp_path / "health.json", *checks, **context)
    code, output = _gate(capsys, str(path), *args)
    assert code == 1
    lines = output.splitlines()
    assert len(lines) == len(expected), output
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"modeltiers check-report: {path}: {start}")


def test_check_report_passes_a_healthy_report_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "health.json", PASSED, WARNED, SKIPPED, NO_DATA)
    code, output = _gate(capsys, str(path), "--min-score", "75")
    assert code == 0
    assert output == (
        f"modeltiers check-report: {path}: OK: complete, health score 75.0 "
        "(1 passed, 1 warning, 1 skipped, 1 not judged (no data))\n"
    )


@pytest.mark.parametrize("value", ["high", "101", "-1"])
def test_check_report_min_score_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["check-report", str(tmp_path / "h.json"), "--min-score", value])
    assert exit_info.value.code == 2
    assert "expected a number from 0 to 100" in capsys.readouterr().err
    with pytest.raises(ValueError, match="from 0 to 100"):
        check_report(tmp_path / "h.json", float(value) if value != "high" else 150.0)


def test_report_status_is_validated() -> None:
    with pytest.raises(ValueError, match="needs a status_reason"):
        HealthReport(status="incomplete")
    with pytest.raises(ValueError, match="status must be 'complete' or 'incomplete'"):
        HealthReport(status="done")
    with pytest.raises(ValueError, match="a complete report has no status_reason"):
        HealthReport(status_reason="why")
    with pytest.raises(ValueError, match="not_run must be a list"):
        HealthReport(status="incomplete", status_reason="x", not_run="modeltiers/tier1.py::t")


def test_an_incomplete_report_round_trips_and_validates() -> None:
    built = HealthReport(
        [ERRORED], status="incomplete", status_reason="aborted", not_run=["m/tier1.py::b"]
    )
    data = json.loads(built.to_json())
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    assert HealthReport.from_dict(data) == built
    data["status_reason"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)


def test_incomplete_markdown_says_so_first_and_lists_what_did_not_run() -> None:
    built = HealthReport(
        [PASSED], status="incomplete", status_reason="aborted", not_run=["m/tier1.py::test_b"]
    )
    lines = built.to_markdown().splitlines()
    assert lines[2] == "**INCOMPLETE: aborted**"
    assert "- `m/tier1.py::test_b`" in lines


# -- checks that had nothing to judge are counted apart -----------------------------------------


def _session(*checks: CheckResult) -> ModelTiersSession:
    session = ModelTiersSession(settings=Settings.from_values({}), rootdir=Path("."))
    session.checks.extend(checks)
    return session


def test_not_judged_checks_are_counted_apart_from_skips() -> None:
    no_baseline = CheckResult.skipped(
        "test_baseline_regression", 5, "no baseline run", {"no_data": ["baseline"]}
    )
    no_profile = CheckResult.skipped(
        "test_input_drift", 5, "no reference profile", {"no_data": ["reference profile"]}
    )
    checks = [PASSED, SKIPPED, no_baseline, no_profile]
    data = HealthReport(checks).to_dict()
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    assert data["summary"]["skipped"] == 3
    assert data["summary"]["not_judged"] == 2
    assert data["summary"]["health_score"] == 100.0
    assert [t["not_judged"] for t in data["tiers"]] == [0, 2]
    markdown = HealthReport(checks).to_markdown()
    assert "3 skipped (2 of them not judged: no data)" in markdown
    assert "| NO DATA | 5 | `test_baseline_regression` |" in markdown
    assert "| SKIP | 1 | `test_causal_masking` |" in markdown
    assert _session(*checks).summary_lines() == [
        "modeltiers: health score 100.0 (1 passed, 1 skipped, 2 not judged: no data)",
        "modeltiers: not judged for lack of data: test_baseline_regression (baseline), "
        "test_input_drift (reference profile)",
    ]


def test_only_no_data_checks_leave_the_score_unmeasured() -> None:
    no_data = CheckResult.skipped("test_eval_metrics", 5, "no data", {"no_data": ["eval data"]})
    assert HealthReport([no_data]).health_score is None
    assert _session(no_data).summary_lines()[0] == (
        "modeltiers: health score n/a (1 not judged: no data)"
    )


# -- one root cause, said once ------------------------------------------------------------------


def _name_error(name: str, location: str | None = "model.py:12") -> CheckResult:
    details: dict[str, Any] = {"exception": "NameError: name 'F' is not defined"}
    if location is not None:
        details["location"] = location
    return CheckResult.failed(
        name, 1, "forward raised NameError", details, nodeid=f"modeltiers/tier1.py::{name}"
    )


def test_checks_failing_on_the_same_exception_are_grouped_once() -> None:
    other = CheckResult.error(
        "test_memory_footprint", 1, "boom", {"exception": "RuntimeError: boom"}
    )
    checks = [_name_error("test_a"), _name_error("test_b"), _name_error("test_c"), other, PASSED]
    data = HealthReport(checks).to_dict()
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    assert data["root_causes"] == [
        {
            "exception": "NameError: name 'F' is not defined",
            "location": "model.py:12",
            "count": 3,
            "checks": [f"modeltiers/tier1.py::test_{x}" for x in "abc"],
        }
    ]
    lines = _session(*checks).summary_lines()
    assert lines[0] == (
        "modeltiers: 3 checks failed on one root cause: NameError: name 'F' is not defined "
        "at model.py:12"
    )
    assert lines[1].startswith("modeltiers: health score 20.0 (1 passed, 3 failed, 1 error)")
    markdown = HealthReport(checks).to_markdown()
    assert "**3 checks failed on one root cause: `NameError: name 'F' is not defined` at " in (
        markdown
    )


def test_root_causes_group_by_exception_alone_and_keep_places_apart() -> None:
    without_location = [_name_error("test_a", None), _name_error("test_b", None)]
    causes = HealthReport(without_location).root_causes
    assert [(c["location"], c["count"]) for c in causes] == [(None, 2)]
    assert _session(*without_location).summary_lines()[0] == (
        "modeltiers: 2 checks failed on one root cause: NameError: name 'F' is not defined"
    )
    apart = [_name_error("test_a", "model.py:12"), _name_error("test_b", "model.py:30")]
    assert HealthReport(apart).root_causes == []
    assert not _session(*apart).summary_lines()[0].startswith("modeltiers: 2 checks")


@pytest.mark.slow
def test_a_name_error_in_forward_is_reported_once_as_the_root_cause(
    pytester: pytest.Pytester,
) -> None:
    model = _model(pytester, "name_error.py")
    result = pytester.runpytest_subprocess(
        f"--model={model}", "-m", "tier1", "--modeltiers-report", "health.json"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "modeltiers: * checks failed on one root cause: NameError: name 'F' is not defined"
            " at *name_error.py:15",
            "modeltiers: health score *",
        ]
    )
    assert result.stdout.str().count("checks failed on one root cause") == 1
    data = _validate(pytester.path / "health.json")
    (cause,) = data["root_causes"]
    assert cause["count"] >= 2
    assert cause["location"].endswith("name_error.py:15")


# -- -m names a tier marker with a typo ---------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "typo", "suggestion"),
    [
        ("teir1", "teir1", "tier1"),
        ("tier1 or tier_2", "tier_2", "tier2"),
        ("Tier3", "Tier3", "tier3"),
    ],
)
def test_a_misspelt_tier_marker_is_a_usage_error(
    pytester: pytest.Pytester, expression: str, typo: str, suggestion: str
) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-m", expression)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*-m {expression}: {typo!r} is not a registered marker; did you mean {suggestion}?*"]
    )


@pytest.mark.parametrize(
    "expression", ["tier1 and not slow", "mine", "tier6", "not tier5", "tier1 and mine(x=1)"]
)
def test_marker_expressions_that_name_real_markers_are_left_alone(
    pytester: pytest.Pytester, expression: str
) -> None:
    pytester.makeini(
        "[pytest]\nmarkers =\n    slow: slow\n    tier6: our own sixth tier\n    mine: ours\n"
    )
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.mine\n@pytest.mark.tier6\ndef test_plain():\n    pass\n"
    )
    result = pytester.runpytest("-m", expression)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)


def test_an_unregistered_word_far_from_any_tier_is_left_to_pytest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-m", "integration")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


# -- output paths are checked before anything runs ----------------------------------------------


def _refused(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest(f"--model={TINY_GPT}", "-k", "parameter_initialization", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "passed" not in result.stdout.str()
    return result


def test_a_report_path_that_is_a_directory_is_refused_at_start(pytester: pytest.Pytester) -> None:
    (pytester.path / "reports").mkdir()
    result = _refused(pytester, "--modeltiers-report", "reports")
    result.stderr.fnmatch_lines(
        [
            "*--modeltiers-report reports: * is a directory; name a file in it, such as "
            "reports?health.json*"
        ]
    )
    assert list((pytester.path / "reports").iterdir()) == []


def test_a_report_under_a_file_is_refused_at_start(pytester: pytest.Pytester) -> None:
    (pytester.path / "notes.txt").write_text("x", encoding="utf-8")
    result = _refused(pytester, "--modeltiers-report", "notes.txt/health.json")
    result.stderr.fnmatch_lines(
        ["*--modeltiers-report notes.txt?health.json: *notes.txt is a file*"]
    )
    assert (pytester.path / "notes.txt").read_text(encoding="utf-8") == "x"


def test_a_markdown_twin_path_that_is_a_directory_is_refused_at_start(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "health.md").mkdir()
    result = _refused(pytester, "--modeltiers-report", "health.json")
    result.stderr.fnmatch_lines(
        ["*--modeltiers-report health.json: its Markdown twin *health.md is a directory*"]
    )
    assert not (pytester.path / "health.json").exists()


def test_a_report_path_ending_in_md_is_refused_at_start(pytester: pytest.Pytester) -> None:
    result = _refused(pytester, "--modeltiers-report", "health.md")
    result.stderr.fnmatch_lines(["*--modeltiers-report health.md: *ends in .md*"])
    assert not (pytester.path / "health.md").exists()


def test_an_export_dir_that_is_a_file_is_refused_at_start(pytester: pytest.Pytester) -> None:
    (pytester.path / "artifacts").write_text("x", encoding="utf-8")
    result = _refused(pytester, "--export-dir", "artifacts", "--modeltiers-report", "h.json")
    result.stderr.fnmatch_lines(["*--export-dir artifacts: * is a file, not a directory*"])
    assert not (pytester.path / "h.json").exists()
