"""An export failure says whose code fixed a size, and a missing artifact fails only once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from export_support import FIXTURES, model_and_task

from pytest_modeltiers.checks.export_health import ExportHealthChecker
from pytest_modeltiers.export.formats import ExportError
from pytest_modeltiers.export.signature import build_signature

REPO = Path(__file__).resolve().parents[1]
LSTM_LM = REPO / "fixtures" / "failures" / "lstm_lm.py"


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _torch_export_error(path: Path) -> ExportError:
    from pytest_modeltiers.export.exporters import trace_program

    model, adapter, task = model_and_task(path)
    signature, tensors = build_signature(model, adapter, task)
    with pytest.raises(ExportError) as info:
        trace_program(model, adapter, signature, tensors)
    return info.value


def test_a_size_fixed_inside_nn_lstm_names_the_module_and_blames_torch() -> None:
    error = _torch_export_error(LSTM_LM)
    call = _line_of(LSTM_LM, "hidden, _ = self.lstm(")
    cause = str(error.cause)
    assert cause.startswith(
        "the sequence dimension was fixed to the constant 8 inside nn.LSTM `lstm` (called at "
        f"{LSTM_LM}:{call} in forward: `hidden, _ = self.lstm(self.tok_emb(input_ids))`): the "
        "cause is in torch, not in your code"
    ), cause
    assert "--export-formats" in cause and "int(x.shape[1])" not in cause
    # Not the user's code: no location, so an ONNX export may fall back to the older exporter.
    assert error.location is None
    assert error.details["cause_in"] == "torch"
    assert error.details["module"] == "nn.LSTM" and error.details["module_path"] == "lstm"
    assert error.details["called_at"].startswith(f"{LSTM_LM}:{call} in forward")


def test_a_size_fixed_by_the_users_own_code_still_points_at_that_line() -> None:
    model_file = FIXTURES / "positions_python_int.py"
    error = _torch_export_error(model_file)
    line = _line_of(model_file, "length = int(input_ids.shape[1])")
    assert f"at {model_file}:{line} in forward: `length = int(input_ids.shape[1])" in str(
        error.cause
    )
    assert "the code turns the size into a Python number" in str(error.cause)
    assert error.location is not None and error.details["cause_in"] == "user"


def test_health_checker_skips_a_format_whose_export_failed(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(LSTM_LM)
    checker = ExportHealthChecker(model, task_spec=task, adapter=adapter)
    report = checker.run_all_checks(
        tmp_path,
        formats=["torch_export"],
        unavailable={"torch_export": "test_export[torch_export] failed (the cause)"},
    )
    [validation] = [c for c in report.checks if c.check_name == "torch_export_validation"]
    assert validation.status.value == "skipped"
    assert validation.message == (
        "no torch_export artifact: test_export[torch_export] failed (the cause)"
    )
    # A file missing for any other reason is still a failure of the health check.
    report = checker.run_all_checks(tmp_path, formats=["torch_export"])
    assert "torch_export_validation" in [c.check_name for c in report.get_failed_checks()]


@pytest.mark.slow
@pytest.mark.usefixtures("exporters_warmed_up")
def test_lstm_lm_fails_test_export_once_and_says_why(pytester: pytest.Pytester) -> None:
    shutil.copy(LSTM_LM, pytester.path)
    result = pytester.runpytest(
        f"--model={LSTM_LM.name}", "-m", "tier4", "-p", "no:cacheprovider",
        "--export-formats=onnx,torch_export,pytorch", "-k", "test_export[ or test_export_health",
        "--modeltiers-report=health.json",
    )  # fmt: skip
    # torch_export fails; onnx (through the older exporter), pytorch and the health check pass.
    result.assert_outcomes(failed=1, passed=3)
    result.stdout.fnmatch_lines(
        [
            "torch_export export failed: the sequence dimension was fixed to the constant 8 "
            "inside nn.LSTM `lstm` (called at *lstm_lm.py:* in forward: *): the cause is in "
            "torch, not in your code*",
            "FAILED modeltiers/tier4.py::test_export[[]torch_export[]] - *",
        ]
    )
    checks = {
        c["check_name"]: c
        for c in json.loads((pytester.path / "health.json").read_text())["checks"]
    }
    health = checks["test_export_health"]
    assert health["status"] == "passed", health
    assert health["details"]["depends_on"] == ["test_export[torch_export]"]
    assert (
        "not checked: the artifacts of test_export[torch_export], which failed"
        in (health["message"])
    )
    export_report = json.loads(Path(health["details"]["report_files"][0]).read_text())
    statuses = {c["check_name"]: c["status"] for c in export_report["checks"]}
    assert statuses["torch_export_validation"] == "skipped"
    assert statuses["onnx_validation"] == statuses["pytorch_validation"] == "passed"
