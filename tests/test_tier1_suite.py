"""The built-in tier 1 suite as users run it: collection, outcomes, messages, the report."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import jsonschema
import pytest
import torch

from pytest_modeltiers.report import load_schema

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
TIER1_TESTS = [
    "test_shape_robustness",
    "test_output_finite",
    "test_gradient_flow",
    "test_output_stability",
    "test_batch_independence",
    "test_causal_masking",
    "test_padding_invariance",
    "test_input_immutability",
    "test_parameter_initialization",
    "test_memory_footprint",
    "test_memory_retention",
    "test_inference_speed",
]

NAN_FOR_LAST_TOKEN = """
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

HANGS_IN_FORWARD = """
    import time
    import torch
    from torch import nn

    TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 20, "max_seq_len": 8}}


    class Sleepy(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(20, 4)
            self.head = nn.Linear(4, 20)

        def forward(self, input_ids, attention_mask=None):
            if input_ids.shape[1] > 3:
                while True:
                    time.sleep(0.01)
            return self.head(self.tok_emb(input_ids))
"""


def test_tier1_collects_its_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest("--co", "-q", f"--model={EXAMPLES / 'tiny_gpt.py'}")
    result.stdout.fnmatch_lines([f"modeltiers/tier1.py::{name}" for name in TIER1_TESTS])
    result.stdout.fnmatch_lines(["test_own.py::test_own"])


def test_nothing_of_ours_without_a_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest("--co", "-q")
    assert "modeltiers/" not in result.stdout.str()


def test_markers_and_keywords_select(pytester: pytest.Pytester) -> None:
    model = str(EXAMPLES / "tiny_gpt.py")
    result = pytester.runpytest("--co", "-q", f"--model={model}", "-m", "tier2")
    result.stdout.fnmatch_lines(["modeltiers/tier2.py::test_attention_normalization"])
    assert "modeltiers/tier1.py" not in result.stdout.str()
    result = pytester.runpytest(
        "--co", "-q", f"--model={model}", "-m", "tier1", "-k", "gradient", "--strict-markers"
    )
    result.stdout.fnmatch_lines(["modeltiers/tier1.py::test_gradient_flow", "*1/12 tests*"])


_IMPORTED_PROBE = """
import sys


def pytest_collection_finish(session):
    tiers = [n for n in ("tier1", "tier2", "tier3", "tier4", "tier5")
             if f"pytest_modeltiers.suites.{n}" in sys.modules]
    print("suites imported:", " ".join(tiers))
"""


@pytest.mark.parametrize(
    ("markexpr", "imported"),
    [
        ("tier1", "tier1"),
        ("tier1 and not slow", "tier1"),
        ("tier3 or tier5", "tier3 tier5"),
        ("not slow", "tier1 tier2 tier3 tier4 tier5"),
        ("not tier1", "tier2 tier3 tier4 tier5"),
    ],
)
def test_a_marker_expression_leaves_other_tiers_unimported(
    pytester: pytest.Pytester, markexpr: str, imported: str
) -> None:
    """``-m tier1`` never imports the other suites (tier 4 and 5 pull in onnx, scipy, pandas)."""
    pytester.makeconftest(_IMPORTED_PROBE)
    model = str(EXAMPLES / "tiny_gpt.py")
    result = pytester.runpytest_subprocess("--co", "-q", f"--model={model}", "-m", markexpr)
    result.stdout.fnmatch_lines([f"suites imported: {imported}"])


def test_several_models_name_their_items(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co",
        "-q",
        f"--model={EXAMPLES / 'tiny_gpt.py'}",
        f"--model={EXAMPLES / 'simple_cnn.py'}",
    )
    result.stdout.fnmatch_lines(
        [
            "modeltiers/tier1.py::test_shape_robustness[[]tiny_gpt[]]",
            "modeltiers/tier1.py::test_shape_robustness[[]simple_cnn[]]",
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("example", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"])
def test_example_models_pass_tier1(pytester: pytest.Pytester, example: str) -> None:
    result = pytester.runpytest(
        f"--model={EXAMPLES / (example + '.py')}", "-m", "tier1", "-p", "no:cacheprovider"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] + outcomes.get("skipped", 0) == len(TIER1_TESTS)


def test_failure_message_shows_input_saved_batch_and_rerun(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(nan_model=textwrap.dedent(NAN_FOR_LAST_TOKEN))
    result = pytester.runpytest(
        "--model", "nan_model.py", "-k", "test_output_finite", "-p", "no:randomly"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*NaN*",
            "*input: input_ids*",
            "*failing batch saved to modeltiers-failures/test_output_finite.pt*",
            "rerun: *python* -m pytest --modeltiers-model=nan_model.py -p no:randomly -m tier1 "
            "-k test_output_finite",
        ]
    )
    saved_path = pytester.path / "modeltiers-failures" / "test_output_finite.pt"
    saved = torch.load(saved_path, weights_only=True)
    assert (saved["input_ids"] == 39).any()


def test_a_hanging_model_fails_only_the_check_that_hangs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(sleepy=textwrap.dedent(HANGS_IN_FORWARD))
    result = pytester.runpytest(
        "--model",
        "sleepy.py",
        "-k",
        "shape_robustness or parameter_initialization",
        "--modeltiers-timeout",
        "2",
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_shape_robustness timed out after 2 s*"])


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_health_report_serial_and_xdist_agree(pytester: pytest.Pytester) -> None:
    """Only the xdist controller writes the report, and it holds what a serial run holds."""
    verdicts = []
    for extra in ([], ["-n", "2"]):
        args = [f"--model={EXAMPLES / 'tiny_gpt.py'}", "-m", "tier1", *extra]
        result = pytester.runpytest_subprocess(*args, "--modeltiers-report", "out/health.json")
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(
            ["modeltiers: health score 100.0 (*)", "modeltiers: report written*"]
        )
        data = _report(pytester.path / "out" / "health.json")
        jsonschema.validate(data, load_schema())
        markdown = (pytester.path / "out" / "health.md").read_text()
        assert all(f"`{name}`" in markdown for name in TIER1_TESTS)
        assert data["summary"]["health_score"] == 100.0
        assert data["models"][0]["class_name"] == "TinyGPT"
        verdicts.append([(c["check_name"], c["status"], c["model"]) for c in data["checks"]])
    serial, parallel = verdicts
    assert sorted(name for name, _, _ in serial) == sorted(TIER1_TESTS)
    assert serial == parallel


def test_fail_under_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(nan_model=textwrap.dedent(NAN_FOR_LAST_TOKEN))
    result = pytester.runpytest(
        "--model",
        "nan_model.py",
        "-k",
        "output_finite or parameter_initialization",
        "--modeltiers-fail-under",
        "80",
        "--modeltiers-report",
        "health.json",
    )
    result.stdout.fnmatch_lines(
        ["modeltiers: health score 50.0 (1 passed, 1 failed)", "*below --modeltiers-fail-under 80*"]
    )
    data = _report(pytester.path / "health.json")
    failed = [c for c in data["checks"] if c["status"] == "failed"]
    assert [c["check_name"] for c in failed] == ["test_output_finite"]
    assert "NaN" in failed[0]["message"]


CRASHES_ON_LENGTH_3 = """
    import os
    import torch
    from torch import nn

    TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 20, "max_seq_len": 8}}


    class Crashy(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(20, 4)
            self.head = nn.Linear(4, 20)

        def forward(self, input_ids, attention_mask=None):
            if input_ids.shape[1] == 3:
                os._exit(3)
            return self.head(self.tok_emb(input_ids))
"""


@pytest.mark.slow
def test_a_crashed_worker_shows_up_as_an_errored_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(crashy=textwrap.dedent(CRASHES_ON_LENGTH_3))
    result = pytester.runpytest_subprocess(
        "--model",
        "crashy.py",
        "--trust-model",
        "-n",
        "2",
        "-k",
        "shape_robustness or parameter_initialization or gradient_flow",
        "--modeltiers-report",
        "health.json",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = _report(pytester.path / "health.json")
    statuses = {c["check_name"]: c["status"] for c in data["checks"]}
    assert statuses == {
        "test_shape_robustness": "error",
        "test_parameter_initialization": "passed",
        "test_gradient_flow": "passed",
    }
    crashed = next(c for c in data["checks"] if c["status"] == "error")
    assert "crashed" in crashed["message"]


def test_json_report_and_junit_carry_the_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(nan_model=textwrap.dedent(NAN_FOR_LAST_TOKEN))
    pytester.runpytest(
        "--model",
        "nan_model.py",
        "-k",
        "output_finite or parameter_initialization",
        "--json-report",
        "--json-report-file=report.json",
        "--junitxml=junit.xml",
    )
    tests = {t["nodeid"]: t for t in _report(pytester.path / "report.json")["tests"]}
    finite = tests["modeltiers/tier1.py::test_output_finite"]["metadata"]["modeltiers_check"]
    assert finite["status"] == "failed" and "NaN" in finite["message"]
    init = tests["modeltiers/tier1.py::test_parameter_initialization"]["metadata"]
    assert init["modeltiers_check"]["status"] == "passed"
    junit = (pytester.path / "junit.xml").read_text()
    assert 'classname="modeltiers.tier1" name="test_output_finite"' in junit
    assert "NaN" in junit


def test_expect_no_grad_declares_unused_parameters(pytester: pytest.Pytester) -> None:
    model = str(shutil.copy(REPO / "fixtures" / "tier1" / "grads_unused.py", pytester.path))
    failing = pytester.runpytest(f"--model={model}", "-k", "gradient_flow")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["*proj.weight*"])
    declared = pytester.runpytest(
        f"--model={model}", "-k", "gradient_flow", "--expect-no-grad", "proj.*"
    )
    declared.assert_outcomes(passed=1)


def test_budgets_fail_only_when_set(pytester: pytest.Pytester) -> None:
    # A copy, so the failing batches are saved under the test's rootdir, not the repository.
    model = str(shutil.copy(EXAMPLES / "simple_cnn.py", pytester.path))
    selection = ["-k", "memory_footprint or inference_speed"]
    pytester.runpytest(f"--model={model}", *selection).assert_outcomes(passed=2)
    result = pytester.runpytest(
        f"--model={model}",
        *selection,
        "--modeltiers-memory-budget",
        "0.001",
        "--modeltiers-latency-budget",
        "0.0001",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*budget*"])


def test_max_batch_size_bounds_the_drawn_batches(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={EXAMPLES / 'simple_cnn.py'}",
        "-k",
        "memory_footprint",
        "--modeltiers-max-batch-size",
        "3",
        "--modeltiers-report",
        "h.json",
    )
    result.assert_outcomes(passed=1)
    check = _report(pytester.path / "h.json")["checks"][0]
    assert "pixel_values[3,3,32,32]" in check["message"]


@pytest.mark.parametrize(
    ("max_seq_len", "max_batch"), [(64, 8), (8, 8), (4, 8), (1, 8), (9, 2), (3, 1)]
)
def test_the_shape_sweep_covers_every_batch_size_and_every_length(
    max_seq_len: int, max_batch: int
) -> None:
    """Each batch size and each length at least once; batch and length never equal for B > 1
    (a model that swaps the two dimensions would pass there)."""
    import dataclasses

    from pytest_modeltiers.config.task_spec import get_builtin_task
    from pytest_modeltiers.suites.tier1 import _shape_sweep

    base = get_builtin_task("lm_tiny")
    schema = {**base.input_schema, "vocab_size": 50, "max_seq_len": max_seq_len}
    task = dataclasses.replace(base, input_schema=schema)
    shapes = [tuple(b["input_ids"].shape) for b in _shape_sweep(task, max_batch)]
    assert {size for size, _ in shapes} == set(range(1, max_batch + 1))
    assert {length for _, length in shapes} == set(range(1, max_seq_len + 1))
    assert all(size != length for size, length in shapes if size > 1)
