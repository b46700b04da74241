"""No false alarms on correct third-party models (issue 3).

Small-config Hugging Face GPT-2, BERT classifier, T5 and ViT, and a ``torch.nn.TransformerEncoder``
LM with a causal mask (``fixtures/third_party/``) run the whole tier 1 suite through the real
plugin with nothing configured beyond ``TASK`` in the model file. Every check must pass, or be
skipped because it does not apply to that task, with that reason; anything else is a false alarm
in a check or an adapter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_tier1_suite import TIER1_TESTS

try:
    # The model files import these inside pytester's in-process runs, which drop modules first
    # imported there (see conftest.py); importing them here keeps one copy for the whole session.
    from transformers import (  # noqa: F401
        BertForSequenceClassification,
        GPT2LMHeadModel,
        T5ForConditionalGeneration,
        ViTForImageClassification,
    )
except ImportError:  # pragma: no cover - transformers is a test dependency
    HAVE_TRANSFORMERS = False
else:
    HAVE_TRANSFORMERS = True

THIRD_PARTY = Path(__file__).resolve().parents[1] / "fixtures" / "third_party"

CAUSAL_SKIP = "causal masking applies to decoder language models"
PADDING_SKIP = "padding invariance applies to token sequences with an attention_mask"

#: model file -> {check that must be skipped: the parts its reason must contain}; every other
#: check must pass.
EXPECTED_SKIPS: dict[str, dict[str, tuple[str, ...]]] = {
    "hf_gpt2": {},
    "hf_bert_cls": {"test_causal_masking": (CAUSAL_SKIP, "this task is classification.")},
    "hf_t5": {},
    "hf_vit": {
        "test_causal_masking": (CAUSAL_SKIP, "this task is vision."),
        "test_padding_invariance": (PADDING_SKIP, "this task is vision."),
    },
    "torch_transformer_lm": {},
}


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """``{test name: (outcome, message)}`` from a JUnit XML file."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome, message = tag, element.get("message", "")
                break
        outcomes[case.get("name", "")] = (outcome, message)
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("model_file", list(EXPECTED_SKIPS))
def test_correct_third_party_model_passes_tier1(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model_file: str
) -> None:
    if model_file.startswith("hf_") and not HAVE_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    path = THIRD_PARTY / f"{model_file}.py"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        f"--model={path}", "-m", "tier1", "-p", "no:cacheprovider", f"--junitxml={junit}"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()

    by_test = _outcomes(junit)
    assert sorted(by_test) == sorted(TIER1_TESTS), result.stdout.str()
    expected = EXPECTED_SKIPS[model_file]
    skipped = {name: message for name, (outcome, message) in by_test.items() if outcome != "passed"}
    assert sorted(skipped) == sorted(expected), f"not passed: {skipped}; expected skips: {expected}"
    for name, parts in expected.items():
        assert by_test[name][0] == "skipped"
        assert all(part in skipped[name] for part in parts), skipped[name]
    assert outcomes["passed"] == len(TIER1_TESTS) - len(expected)
