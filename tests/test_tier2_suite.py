"""The tier 2 attention tests as users run them: collection, outcomes, messages, the report.

Runs select the attention tests (``-k attention``); the attribution and robustness tests of the
same suite have their own file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modeltiers.cli.run_tiers import render_text, summarise
from pytest_modeltiers.cli.run_tiers_config import load_tiers_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_models"
FIXTURES = ROOT / "fixtures" / "tier2"
ATTENTION_TESTS = [
    "test_attention_normalization",
    "test_attention_causality",
    "test_attention_padding",
    "test_attention_health",
]


def _run(pytester: pytest.Pytester, *models: Path, args: tuple[str, ...] = ()) -> Any:
    return pytester.runpytest(
        *[f"--model={model}" for model in models],
        "-m",
        "tier2",
        "-k",
        "attention",
        "-p",
        "no:randomly",
        *args,
    )


def _statuses(report: Path) -> dict[tuple[str, str], str]:
    data = json.loads(report.read_text())
    return {(c["model"], c["check_name"]): c["status"] for c in data["checks"] if c["tier"] == 2}


def test_tier2_collects_the_attention_tests(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--co", "-q", f"--model={EXAMPLES / 'tiny_gpt.py'}", "-m", "tier2")
    result.stdout.fnmatch_lines([f"modeltiers/tier2.py::{name}" for name in ATTENTION_TESTS])


@pytest.mark.slow
def test_example_models_pass_and_a_cnn_skips(pytester: pytest.Pytester) -> None:
    examples = [EXAMPLES / f"{name}.py" for name in ("tiny_gpt", "tiny_encoder_cls")]
    examples += [EXAMPLES / "tiny_seq2seq.py", EXAMPLES / "simple_cnn.py"]
    result = _run(pytester, *examples, args=("--modeltiers-report=health.json",))
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes and "errors" not in outcomes, result.stdout.str()
    statuses = _statuses(pytester.path / "health.json")
    for model in ("tiny_gpt", "tiny_seq2seq"):
        assert {statuses[(model, name)] for name in ATTENTION_TESTS} == {"passed"}
    assert statuses[("tiny_encoder_cls", "test_attention_causality")] == "skipped"
    assert {statuses[("simple_cnn", name)] for name in ATTENTION_TESTS} == {"skipped"}


@pytest.mark.parametrize(
    ("fixture", "failing", "lines"),
    [
        (
            "attention_off_by_one",
            "test_attention_causality",
            ["layer 0 (OffByOneLM), head *, query 0, key 1 (batch row 0) gets weight *"],
        ),
        (
            "attention_hidden_leak",
            "test_attention_causality",
            ["layer 1 (blocks.1), head *, query 0, key * attends to the future*"],
        ),
        (
            "attention_padding_leak",
            "test_attention_padding",
            ["layer 0 (PaddingLeakClassifier), head *, key * is padding (attention_mask 0)*"],
        ),
    ],
)
def test_each_bug_fails_exactly_its_test(
    pytester: pytest.Pytester, fixture: str, failing: str, lines: list[str]
) -> None:
    result = _run(pytester, FIXTURES / f"{fixture}.py")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1, result.stdout.str()
    result.stdout.fnmatch_lines([*lines, f"FAILED modeltiers/tier2.py::{failing} - *"])


IGNORES_ITS_MASK = """
import torch
import torch.nn.functional as F
from torch import nn

TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 32, "max_seq_len": 16}}


class IgnoresItsMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        self.head = nn.Linear(8, 32)

    def forward(self, input_ids, attention_mask=None):
        x = self.emb(input_ids)[:, None]
        return self.head(F.scaled_dot_product_attention(x, x, x, is_causal=True)[:, 0])
"""


def test_a_decoder_that_ignores_its_mask_fails_on_left_padding(pytester: pytest.Pytester) -> None:
    """Right padding sits after every real query, where the causal mask hides it anyway."""
    pytester.makepyfile(ignores=IGNORES_ITS_MASK)
    result = _run(pytester, pytester.path / "ignores.py", args=("-k", "padding"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is padding (attention_mask 0)*", "input: input_ids[[]2,12[]]*"])
    saved = torch.load(pytester.path / "modeltiers-failures" / "test_attention_padding.pt")
    assert saved["attention_mask"][0].tolist()[:4] == [0, 0, 0, 0]


def test_nanogpt_on_sdpa_and_multihead_attention_pass(pytester: pytest.Pytester) -> None:
    models = [FIXTURES / "nanogpt_sdpa.py", FIXTURES / "multihead_lm.py"]
    result = _run(pytester, *models, args=("--modeltiers-report=health.json",))
    result.assert_outcomes(passed=7, skipped=1)
    statuses = _statuses(pytester.path / "health.json")
    assert statuses[("nanogpt_sdpa", "test_attention_padding")] == "skipped"


@pytest.mark.slow
def test_hugging_face_gpt2_on_sdpa_raises_no_false_alarm(pytester: pytest.Pytester) -> None:
    pytest.importorskip("transformers")
    result = _run(pytester, ROOT / "fixtures" / "third_party" / "hf_gpt2.py")
    result.assert_outcomes(passed=4)


def test_models_without_attention_skip_and_the_report_counts_them_apart(
    pytester: pytest.Pytester,
) -> None:
    models = [EXAMPLES / "simple_cnn.py", ROOT / "fixtures" / "tier2_attribution" / "lstm_lm.py"]
    result = _run(pytester, *models, args=("--modeltiers-report=health.json", "-rs"))
    result.assert_outcomes(skipped=8)
    result.stdout.fnmatch_lines(["*LSTM* computed no attention that tier 2 can read*"])
    report = json.loads((pytester.path / "health.json").read_text())
    assert report["summary"]["skipped"] == 8 and report["summary"]["scored"] == 0
    assert report["summary"]["health_score"] is None


def test_health_is_measured_in_the_report_and_judged_only_with_a_bound(
    pytester: pytest.Pytester,
) -> None:
    model = EXAMPLES / "tiny_gpt.py"
    result = _run(pytester, model, args=("-k", "health", "--modeltiers-report=health.json"))
    result.assert_outcomes(passed=1)
    (check,) = json.loads((pytester.path / "health.json").read_text())["checks"]
    assert check["details"]["judged"] is False
    layers = check["details"]["layers"]
    assert [layer["layer"] for layer in layers] == [
        "layer 0 (blocks.0.attn)",
        "layer 1 (blocks.1.attn)",
    ]
    assert {"entropy", "normalized_entropy", "max_weight", "free_rows"} <= set(
        layers[0]["heads"][0]
    )
    result = _run(pytester, model, args=("-k", "health", "--tier2-max-dead-heads=1"))
    result.assert_outcomes(passed=1)
    result = _run(pytester, model, args=("--tier2-max-dead-heads=1.5",))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tier2-max-dead-heads: expected a share from 0 to 1*"])


def _check(name: str, status: str, **details: Any) -> dict[str, Any]:
    return {"check_name": name, "tier": 2, "status": status, "message": name, "details": details}


def test_run_tiers_summary_groups_tier2_by_what_it_measures() -> None:
    layers = [
        {"layer": "layer 0", "heads": [{"head": 0, "normalized_entropy": 0.5, "max_weight": 0.7}]}
    ]
    health = {
        "checks": [
            _check("test_attention_normalization", "passed", route="intercepted"),
            _check("test_attention_health", "passed", layers=layers),
            _check("test_attribution_completeness", "passed"),
            _check("test_robustness", "skipped", agreement=None),
        ]
    }
    summary = summarise(2, health, model_note="m.py")
    tier2 = summary["tier2"]
    assert tier2["status"] == "ok"
    assert set(tier2["attention"]) == {"normalization", "health"}
    assert tier2["attention"]["normalization"]["route"] == "intercepted"
    assert tier2["attribution"] == {
        "completeness": {"status": "passed", "message": "test_attribution_completeness"}
    }
    assert tier2["robustness"]["status"] == "skipped"
    text = render_text(2, summary)
    assert "  attention layer 0: h0 H=0.50 top=0.70" in text.splitlines()


def test_run_tiers_accepts_tier2(workdir: Path) -> None:
    config = workdir / "run.json"
    config.write_text(json.dumps({"tier": "tier2", "model_file": str(EXAMPLES / "tiny_gpt.py")}))
    loaded = load_tiers_config(config)
    assert loaded.tier == 2
    assert loaded.pytest_options()[2:4] == ["-m", "tier2"]
