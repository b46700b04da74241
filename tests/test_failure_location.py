"""An exception in the user's model points at the user's file and line, not at our frames."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_modeltiers.models.exceptions import describe_model_exception, exception_details

REPO = Path(__file__).resolve().parents[1]
FAILURES = REPO / "fixtures" / "failures"
NAME_ERROR_MODEL = FAILURES / "name_error_lm.py"


def _line_of(path: Path, text: str) -> int:
    """The 1-based number of the line of ``path`` that contains ``text``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _sections(output: str) -> dict[str, str]:
    """The text of each failure section of a pytest run, keyed by the test's name."""
    parts = re.split(r"^_{3,} (\S+) _{3,}$", output, flags=re.MULTILINE)
    tail = parts[-1].split("short test summary info")[0] if len(parts) > 1 else ""
    sections = dict(zip(parts[1::2], [*parts[2:-1:2], tail], strict=True))
    return {name: text for name, text in sections.items() if not name.startswith("=")}


def test_every_failing_tier1_test_names_the_users_file_and_line(pytester: pytest.Pytester) -> None:
    shutil.copy(NAME_ERROR_MODEL, pytester.path)
    result = pytester.runpytest(
        "--model", NAME_ERROR_MODEL.name, "-m", "tier1", "-p", "no:randomly",
        "--modeltiers-report", "health.json",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 9, result.stdout.str()
    raise_line = _line_of(NAME_ERROR_MODEL, "return F.gelu(hidden)")
    call_line = _line_of(NAME_ERROR_MODEL, "hidden = self.mix(")
    where = f"name_error_lm.py:{raise_line}"
    output = result.stdout.str()
    sections = _sections(output)
    assert len(sections) == outcomes["failed"], sorted(sections)
    for name, text in sections.items():
        lines = text.strip().splitlines()
        # The failure starts with the user's frames: the innermost location and exception, then
        # the model's own frames with their source lines, outermost first.
        assert lines[0] == f"{where}: NameError: name 'F' is not defined", (name, text)
        frames = text.index(f"name_error_lm.py:{call_line}: in forward")
        assert text.index("hidden = self.mix(self.tok_emb(input_ids))") > frames, text
        assert text.index(f"{where}: in mix") > frames, text
        assert f"at {where}: return F.gelu(hidden)" in text, (name, text)
        # None of our frames, none of the fixtures' reprs.
        assert "pytest_modeltiers" not in text, (name, text)
        assert "request = <FixtureRequest" not in text, (name, text)
        assert "modeltiers_check = " not in text, (name, text)
    # The summary line starts with the location too (pytester's terminal is 80 columns wide).
    result.stdout.fnmatch_lines(["FAILED modeltiers/tier1.py::test_gradient_flow - CheckFailed: *"])
    assert f"CheckFailed: {where}: NameError: name 'F' is not defined".startswith(
        output.split("test_gradient_flow - ")[-1].splitlines()[0].removesuffix("...")
    )
    checks = json.loads((pytester.path / "health.json").read_text())["checks"]
    failed = [c for c in checks if c["status"] in ("failed", "error")]
    assert len(failed) == outcomes["failed"]
    for check in failed:
        details = check["details"]
        assert details["exception"] == "NameError: name 'F' is not defined", check
        assert details["location"] == where, check
        assert details["source"] == "return F.gelu(hidden)", check
        assert details["user_frames"] == [
            f"name_error_lm.py:{call_line} in forward: hidden = self.mix(self.tok_emb(input_ids))",
            f"{where} in mix: return F.gelu(hidden)",
        ], check


def test_hypothesis_still_shrinks_and_reports_the_minimal_example(
    pytester: pytest.Pytester,
) -> None:
    model = FAILURES / "long_input_error_lm.py"
    shutil.copy(model, pytester.path)
    result = pytester.runpytest(
        "--model", model.name, "-k", "test_batch_independence", "-p", "no:randomly"
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    where = f"long_input_error_lm.py:{_line_of(model, 'raise ValueError')}"
    result.stdout.fnmatch_lines(
        [
            f"{where}: ValueError: sequence of 4 tokens is too long",
            f"*{where}: in forward",
            "*raise ValueError(*",
            "*input: input_ids[[]2,4[]] attention_mask[[]2,4[]] labels[[]2,4[]]",
            "*rerun: *",
            "*: any_batch(*",
        ],
        consecutive=False,
    )
    assert "request = <FixtureRequest" not in result.stdout.str()


def _raise_name_error() -> None:
    raise NameError("name 'F' is not defined")


def _linear_on_wrong_width() -> torch.Tensor:
    return nn.Linear(3, 2)(torch.zeros(1, 4))


def _details_of(action: object) -> tuple[BaseException, dict[str, object]]:
    try:
        action()  # type: ignore[operator]
    except Exception as exc:
        return exc, exception_details(exc)
    raise AssertionError("the action did not raise")


def test_exception_details_point_at_the_innermost_user_frame() -> None:
    exc, details = _details_of(_raise_name_error)
    here = Path(__file__)
    line = _line_of(here, 'raise NameError("name')
    assert details["exception"] == "NameError: name 'F' is not defined"
    assert str(details["location"]).endswith(f"test_failure_location.py:{line}")
    assert details["source"] == "raise NameError(\"name 'F' is not defined\")"
    frames = details["user_frames"]
    assert isinstance(frames, list) and len(frames) == 2
    assert str(frames[-1]).endswith(f":{line} in _raise_name_error: {details['source']}")
    assert describe_model_exception(exc) == (
        f"NameError: name 'F' is not defined at {details['location']}: {details['source']}"
    )


def test_an_error_raised_inside_torch_points_at_the_users_call() -> None:
    _, details = _details_of(_linear_on_wrong_width)
    line = _line_of(Path(__file__), "return nn.Linear(3, 2)(torch.zeros(1, 4))")
    assert str(details["location"]).endswith(f"test_failure_location.py:{line}")
    assert details["source"] == "return nn.Linear(3, 2)(torch.zeros(1, 4))"
    assert str(details["exception"]).startswith("RuntimeError: mat1 and mat2 shapes")


def test_without_user_code_the_innermost_frame_outside_this_package_is_named() -> None:
    exc, _ = _details_of(_linear_on_wrong_width)
    assert exc.__traceback__ is not None
    # Only torch's frames: as if our code had called the module directly.
    frames_below_the_test = exc.__traceback__.tb_next
    assert frames_below_the_test is not None
    torch_only = exc.with_traceback(frames_below_the_test.tb_next)
    details = exception_details(torch_only)
    assert re.search(r"torch/nn/modules/linear\.py:\d+$", str(details["location"])), details
    assert "F.linear" in str(details["source"])


def test_an_exception_never_raised_has_no_location() -> None:
    assert exception_details(ValueError("bad value")) == {"exception": "ValueError: bad value"}
    assert describe_model_exception(ValueError("bad value")) == "ValueError: bad value"
