"""A timeout that holds: a check that defeats the timeout signal is ended by the watchdog.

The models loop forever in ``forward``: one swallows every exception (the ``CheckTimeout`` the
signal raises included), one sets ``SIGALRM`` to ``SIG_IGN``. With ``--modeltiers-timeout 1``
the watchdog gives each ``grace_period(1)`` = 2 s after the deadline, then prints the model's
stack, records the check as an error, writes the report as incomplete and exits with 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_modeltiers.report import load_schema
from pytest_modeltiers.session import ABORTED_EXIT_CODE
from pytest_modeltiers.timeouts import MIN_GRACE_SECONDS, grace_period

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "fixtures" / "gate"

#: The first two tier 1 checks in file order: the first hangs, the second never runs.
SELECTION = "shape_robustness or output_finite"
#: A run that hangs for good fails the test instead of holding up the suite.
SUBPROCESS_TIMEOUT = 120


def _run(pytester: pytest.Pytester, fixture: str, *extra: str) -> pytest.RunResult:
    model = shutil.copy(GATE / fixture, pytester.path)
    return pytester.runpytest_subprocess(
        f"--model={model}",
        "--trust-model",
        "-p",
        "no:randomly",
        "-k",
        SELECTION,
        "--modeltiers-timeout",
        "1",
        "--modeltiers-report",
        "health.json",
        *extra,
        timeout=SUBPROCESS_TIMEOUT,
    )


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "health.json").read_text("utf-8"))
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    return data


def test_the_grace_period_is_at_least_two_seconds_and_half_the_timeout() -> None:
    assert MIN_GRACE_SECONDS == 2.0
    assert grace_period(1) == 2.0
    assert grace_period(300) == 150.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "frame"),
    [
        ("swallows_timeout.py", "time.sleep(0.01)"),
        ("ignores_alarm.py", "time.sleep(0.01)"),
    ],
    ids=["swallows-BaseException", "ignores-SIGALRM"],
)
def test_a_check_that_defeats_the_timeout_aborts_the_session(
    pytester: pytest.Pytester, fixture: str, frame: str
) -> None:
    result = _run(pytester, fixture, "--junitxml", "junit.xml")
    assert result.ret == ABORTED_EXIT_CODE == pytest.ExitCode.INTERRUPTED
    stderr = result.stderr.str()
    assert (
        "modeltiers: ABORTED: test_shape_robustness timed out after 1 s and was still running "
        "2 s later" in stderr
    )
    # The model's own frame is in the stack dump.
    assert f'{fixture}", line' in stderr and "in forward" in stderr and frame in stderr
    data = _report(pytester)
    assert data["status"] == "incomplete"
    assert data["status_reason"].startswith(
        "aborted: modeltiers/tier1.py::test_shape_robustness timed out and did not stop"
    )
    assert data["not_run"] == ["modeltiers/tier1.py::test_output_finite"]
    (check,) = data["checks"]
    assert (check["check_name"], check["status"]) == ("test_shape_robustness", "error")
    assert check["details"]["timed_out"] is True
    assert "ignored or swallowed the timeout" in check["message"]
    junit = (pytester.path / "junit.xml").read_text(encoding="utf-8")
    assert 'name="test_shape_robustness"' in junit and "<failure" in junit
    assert "timed out after 1 s" in junit


@pytest.mark.slow
def test_under_xdist_the_controller_reports_the_aborted_worker_check_as_an_error(
    pytester: pytest.Pytester,
) -> None:
    result = _run(pytester, "swallows_timeout.py", "-n", "1", "-k", "shape_robustness")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str() + result.stderr.str()
    assert "modeltiers: ABORTED: test_shape_robustness timed out" in output
    data = _report(pytester)
    assert data["status"] == "complete"
    (check,) = data["checks"]
    assert (check["check_name"], check["status"]) == ("test_shape_robustness", "error")
    assert "crashed" in check["message"]


def test_a_check_that_obeys_the_signal_is_not_aborted(pytester: pytest.Pytester) -> None:
    """The watchdog is cancelled when the check ends: the session goes on to the next check."""
    pytester.makepyfile(
        sleepy="""
        import time
        from torch import nn

        TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 20, "max_seq_len": 8}}

        class Sleepy(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = nn.Embedding(20, 20)

            def forward(self, input_ids, attention_mask=None):
                time.sleep(0.4)
                return self.head(input_ids)
        """
    )
    result = pytester.runpytest(
        "--model",
        "sleepy.py",
        "-p",
        "no:randomly",
        "-k",
        "shape_robustness or parameter_initialization",
        "--modeltiers-timeout",
        "1",
        "--modeltiers-report",
        "health.json",
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_shape_robustness timed out after 1 s*"])
    assert _report(pytester)["status"] == "complete"
