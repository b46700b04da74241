"""The printed "rerun:" command runs the failing test again, with everything that made it fail."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAILURES = REPO / "fixtures" / "failures"
#: The options that make ``scores_lm.py`` fail: a local adapter (found only with the current
#: folder on ``sys.path``) and a task that allows longer sequences than the model has positions;
#: the batch size shows in the failure's input. The others only have to be carried over.
MAKES_IT_FAIL = [
    "--adapter=scores_adapter:ScoresAdapter",
    "--task-option=input_schema.max_seq_len=16",
    "--modeltiers-max-batch-size=3",
]
CARRIED = [
    "--experiment-db=runs/exp.db",
    "--expect-no-grad=pos_emb.*",
    "--export-formats=onnx,pytorch",
    "--drift-alpha=0.01",
    "--modeltiers-profile=ci",
    "--trust-model",
]


def _rerun_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("rerun: ")]
    assert lines, output
    return lines[0].removeprefix("rerun: ")


def _failure_lines(output: str) -> list[str]:
    """The lines of a failure that must be the same in a rerun (the message and its input)."""
    wanted = ("forward in eval mode raised", "input: ")
    return [line for line in output.splitlines() if line.startswith(wanted)]


@pytest.mark.slow
def test_running_the_printed_command_reproduces_the_failure(pytester: pytest.Pytester) -> None:
    for name in ("scores_lm.py", "scores_adapter.py"):
        shutil.copy(FAILURES / name, pytester.path)
    first = pytester.runpytest_subprocess(
        "--model=scores_lm.py", "-m", "tier1", "-k", "output_finite or parameter_init",
        "--modeltiers-report=reports/health.json", *MAKES_IT_FAIL, *CARRIED,
    )  # fmt: skip
    first.assert_outcomes(failed=1, passed=1)
    command = _rerun_line(first.stdout.str())
    args = shlex.split(command)
    assert args[1:3] == ["-m", "pytest"], command
    assert Path(args[0]).name.startswith("python"), command
    for option in [*MAKES_IT_FAIL, *CARRIED]:
        assert option in args, (option, command)
    # Where the session writes and how it gates is not part of what the test saw.
    assert not any(arg.startswith("--modeltiers-report") for arg in args), command
    assert args[-4:] == ["-m", "tier1", "-k", "test_output_finite"], command
    expected = _failure_lines(first.stdout.str())
    assert any("IndexError" in line for line in expected) and any(
        "input_ids[3,16]" in line for line in expected
    ), first.stdout.str()

    rerun = subprocess.run(
        args, cwd=pytester.path, capture_output=True, text=True, timeout=300, check=False
    )
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert (
        re.search(r"\b1 failed\b", rerun.stdout)
        and "passed" not in rerun.stdout.split("short test summary info")[-1]
    ), rerun.stdout
    assert "FAILED modeltiers/tier1.py::test_output_finite" in rerun.stdout, rerun.stdout
    assert _failure_lines(rerun.stdout) == expected
    assert "report written" not in rerun.stdout, rerun.stdout


def test_the_command_selects_only_its_own_test_among_longer_names(
    pytester: pytest.Pytester,
) -> None:
    """``-k test_memory_footprint`` alone would also run every test whose name contains it."""
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.tier1
        def test_memory_footprint_of_my_head():
            pass
        """
    )
    shutil.copy(FAILURES / "name_error_lm.py", pytester.path)
    first = pytester.runpytest("--model=name_error_lm.py", "-k", "test_memory_footprint")
    first.assert_outcomes(failed=1, passed=1)
    args = shlex.split(_rerun_line(first.stdout.str()))
    selection = args[args.index("-k") + 1]
    assert selection == "test_memory_footprint and not test_memory_footprint_of_my_head"
    again = pytester.runpytest(*args[args.index("--modeltiers-model=name_error_lm.py") :])
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["FAILED modeltiers/tier1.py::test_memory_footprint - *"])
