"""Under GitHub Actions the session writes the job summary and annotates each failed check on
the line of the user's model, once, with or without xdist; ``--modeltiers-github off`` stops it."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.report.github import (
    Annotation,
    annotation_for,
    append_step_summary,
    traceback_locations,
)

REPO = Path(__file__).resolve().parents[1]
NAME_ERROR_MODEL = REPO / "fixtures" / "failures" / "name_error_lm.py"
ERROR_LINE = re.compile(r"^::error (?P<props>[^:]*)::(?P<message>.*)$", re.MULTILINE)

#: Finite everywhere except for the last token id, which no check's message can place.
NAN_MODEL = """
    import torch
    from torch import nn

    TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 40, "max_seq_len": 12}}


    class NanOnLastToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(40, 8)
            self.head = nn.Linear(8, 40)

        def forward(self, input_ids, attention_mask=None):
            logits = self.head(self.tok_emb(input_ids))
            poison = (input_ids == 39).unsqueeze(-1).float()
            return logits + torch.log(1 - poison) * 0.0
"""


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _github_env(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> Path:
    summary = workspace / "runner" / "step_summary.md"
    summary.parent.mkdir()
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(workspace))
    return summary


def _annotations(output: str) -> list[dict[str, str]]:
    found = []
    for match in ERROR_LINE.finditer(output):
        props = dict(part.split("=", 1) for part in match["props"].split(","))
        found.append({**props, "message": match["message"]})
    return found


# -- the workflow command's form ---------------------------------------------------------------


def test_properties_and_message_are_escaped_as_github_unescapes_them() -> None:
    annotation = Annotation("dir,x/model:v2.py", 12, "tier 1: a, b", "100% wrong\r\nsee: here")
    assert annotation.command() == (
        "::error file=dir%2Cx/model%3Av2.py,line=12,title=tier 1%3A a%2C b"
        "::100%25 wrong%0D%0Asee: here"
    )
    assert Annotation("model.py", None, "t", "m").command() == "::error file=model.py,title=t::m"


def test_an_export_failure_points_at_the_line_the_exporter_named(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text("x = 1\n")
    result = CheckResult.failed(
        "test_export[onnx]",
        4,
        "data-dependent control flow",
        {"format": "onnx", "location": "model.py:7 in forward: `if x.sum() > 0:`"},
    )
    annotation = annotation_for(result, model_files=[model], base=tmp_path, workspace=tmp_path)
    assert (annotation.file, annotation.line) == ("model.py", 7)
    assert annotation.title == "modeltiers tier 4: test_export[onnx]"


def test_the_model_frame_of_the_traceback_wins_over_library_frames(tmp_path: Path) -> None:
    model = tmp_path / "models" / "net.py"
    model.parent.mkdir()
    model.write_text("x = 1\n")
    torch_file = Path(pytest.__file__)  # an installed package's file, outside the checkout
    result = CheckResult.failed("test_gradient_flow", 1, "no gradient")
    annotation = annotation_for(
        result,
        model_files=[model],
        traceback=[("models/net.py", 30), ("models/net.py", 41), (str(torch_file), 99)],
        base=tmp_path,
        workspace=tmp_path,
    )
    assert (annotation.file, annotation.line) == ("models/net.py", 41)


def test_without_a_known_line_the_annotation_names_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "net.py"
    result = CheckResult.failed("test_output_finite", 1, "NaN in the logits")
    annotation = annotation_for(result, model_files=[model], base=tmp_path, workspace=tmp_path)
    assert (annotation.file, annotation.line) == ("net.py", None)


def test_traceback_locations_are_read_from_pytest_and_xdist_reports(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        helper="def boom():\n    raise ValueError('no')\n",
        test_it="from helper import boom\n\n\ndef test_it():\n    boom()\n",
    )
    reports = pytester.inline_run("-p", "no:randomly").getreports("pytest_runtest_logreport")
    failed = next(r for r in reports if r.failed)
    carried = pytest.TestReport._from_json(failed._to_json())  # what xdist sends the controller
    for report in (failed, carried):
        found = traceback_locations(report.longrepr)
        assert found[-1] == ("helper.py", 2), found
        assert ("test_it.py", 5) in found, found


def test_the_summary_is_appended_whole(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier\n")
    append_step_summary(summary, "## modeltiers\nscore 90\n")
    append_step_summary(summary, "## again\n")
    assert summary.read_text() == "# earlier\n## modeltiers\nscore 90\n\n## again\n\n"


# -- sessions as users run them in a workflow --------------------------------------------------


def test_a_failing_session_annotates_the_models_line_and_writes_the_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _github_env(monkeypatch, pytester.path)
    models = pytester.path / "models"
    models.mkdir()
    shutil.copy(NAME_ERROR_MODEL, models)
    result = pytester.runpytest(
        "--model", "models/name_error_lm.py", "-m", "tier1", "-p", "no:randomly",
        "-k", "gradient_flow or output_finite or parameter_initialization",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 2, result.stdout.str()
    annotations = _annotations(result.stdout.str())
    assert len(annotations) == 2, result.stdout.str()
    line = str(_line_of(NAME_ERROR_MODEL, "return F.gelu(hidden)"))
    for annotation in annotations:
        assert annotation["file"] == "models/name_error_lm.py", annotation
        assert annotation["line"] == line, annotation
        assert annotation["title"].startswith("modeltiers tier 1%3A test_"), annotation
        assert "NameError" in annotation["message"], annotation
    text = summary.read_text()
    assert text.startswith("earlier step\n# Model health report\n"), text
    assert text.count("# Model health report") == 1, text
    assert "NameError: name 'F' is not defined" in text, text


def test_a_check_without_a_line_annotates_the_model_file_and_off_turns_it_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _github_env(monkeypatch, pytester.path)
    pytester.makepyfile(nan_model=textwrap.dedent(NAN_MODEL))
    args = ("--model", "nan_model.py", "-m", "tier1", "-k", "output_finite", "-p", "no:randomly")
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    (annotation,) = _annotations(result.stdout.str())
    assert annotation["file"] == "nan_model.py" and "line" not in annotation, annotation
    assert "test_output_finite" in summary.read_text()

    summary.write_text("")
    result = pytester.runpytest(*args, "--modeltiers-github", "off")
    result.assert_outcomes(failed=1)
    assert _annotations(result.stdout.str()) == []
    assert summary.read_text() == ""


@pytest.mark.slow
def test_under_xdist_the_controller_writes_the_summary_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _github_env(monkeypatch, pytester.path)
    shutil.copy(NAME_ERROR_MODEL, pytester.path)
    result = pytester.runpytest_subprocess(
        "--model", NAME_ERROR_MODEL.name, "-m", "tier1", "-n", "2", "-p", "no:randomly",
        "-k", "gradient_flow or output_finite or output_stability or parameter_initialization",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 3, result.stdout.str()
    annotations = _annotations(result.stdout.str())
    line = str(_line_of(NAME_ERROR_MODEL, "return F.gelu(hidden)"))
    assert len(annotations) == 3, result.stdout.str()
    assert {(a["file"], a["line"]) for a in annotations} == {("name_error_lm.py", line)}
    text = summary.read_text()
    assert text.startswith("earlier step\n# Model health report\n"), text
    assert text.count("# Model health report") == 1, text
    assert text.count("test_output_stability") >= 2, text  # the table and the failures
