"""--eval-config: which split, how many examples and how batched tier 5 evaluates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "example_models"


def _run(pytester: pytest.Pytester, config: dict[str, object]) -> pytest.RunResult:
    shutil.copy(EXAMPLES / "tiny_gpt.py", pytester.path)
    (pytester.path / "eval.json").write_text(json.dumps(config))
    return pytester.runpytest(
        "--model", "tiny_gpt.py", "-m", "tier5", "-k", "test_eval_metrics",
        "--eval-config", "eval.json", "--modeltiers-report", "health.json",
    )  # fmt: skip


def test_the_eval_config_chooses_split_and_size(pytester: pytest.Pytester) -> None:
    config = {"dataset_id": "lm_tiny_v1", "split": "validation", "max_eval_examples": 8}
    result = _run(pytester, {**config, "batch_size": 4})
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "health.json").read_text())
    assert report["checks"][0]["message"].endswith("on 8 examples of task lm_tiny validation split")


def test_a_bad_eval_config_is_a_usage_error_with_the_field_named(pytester: pytest.Pytester) -> None:
    result = _run(pytester, {"dataset_id": "lm_tiny_v1", "max_examples": 8})
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--eval-config *unknown EvalConfig field(s): 'max_examples'*"])


def test_the_option_wants_a_json_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(f"--model={EXAMPLES / 'tiny_gpt.py'}", "--eval-config", "x.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--eval-config: expected a .json file*"])
