"""Tier 2 attribution: completeness and locality of integrated gradients, both ways.

Correct models (the examples, an LSTM LM, a CNN, Hugging Face GPT-2 and BERT) pass; fixtures
with exactly one bug fail the right test, naming the layer that breaks the gradient path or the
token that must not matter.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_modeltiers.analysis.attribution import (
    Attribution,
    AttributionSource,
    GradientBreak,
    integrated_gradients_class,
    relative_errors,
)
from pytest_modeltiers.checks.tier2_attribution import (
    check_attribution_completeness,
    check_attribution_locality,
)
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadRequest, load_model
from tests.third_party_models import hf_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
FIXTURES = REPO / "fixtures" / "tier2_attribution"
TIER1_FIXTURES = REPO / "fixtures" / "tier1"

Batch = dict[str, torch.Tensor]
OWN = "(the model's own forward)"


@cache
def _loaded(path: Path) -> tuple[TaskAdapter, TaskSpec, object]:
    loaded = load_model(LoadRequest(spec=str(path), rootdir=REPO))
    return loaded.adapter, loaded.task, loaded


def _model(path: Path) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    adapter, task, loaded = _loaded(path)
    return loaded.new_model().eval(), adapter, task  # type: ignore[attr-defined]


def _padded(task: TaskSpec, size: int = 2, length: int = 12) -> Batch:
    if task.family == "vision":
        return make_batch(task, size, seed=0)
    length = min(length, task.max_seq_len or length)
    return make_batch(task, size, length - 3, pad_to=length, target_len=9, seed=0)


CORRECT = [
    EXAMPLES / "tiny_gpt.py",
    EXAMPLES / "tiny_encoder_cls.py",
    EXAMPLES / "tiny_seq2seq.py",
    EXAMPLES / "simple_cnn.py",
    FIXTURES / "lstm_lm.py",
]


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_models_pass_completeness_and_locality(path: Path) -> None:
    model, adapter, task = _model(path)
    batch = _padded(task)
    completeness = check_attribution_completeness(model, adapter, batch)
    assert completeness.status.value == "passed", completeness.message
    assert completeness.details["n_steps"] >= 16
    assert max(completeness.details["relative_error"]) <= completeness.details["tolerance"]
    locality = check_attribution_locality(model, adapter, batch)
    if task.family == "vision":
        assert locality.status.value == "skipped"
        assert "this task is vision" in locality.message
    else:
        assert locality.status.value == "passed", locality.message
        assert locality.details["positions_checked"] > 0


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_hugging_face_models_pass(kind: str) -> None:
    model, adapter, task = hf_model(kind)
    batch = _padded(task)
    completeness = check_attribution_completeness(model, adapter, batch)
    assert completeness.status.value == "passed", completeness.message
    locality = check_attribution_locality(model, adapter, batch)
    assert locality.status.value == "passed", locality.message
    expected = "later tokens and padding tokens" if kind == "gpt2" else "padding tokens"
    assert f"attribution to {expected} is exactly zero" in locality.message


@pytest.mark.parametrize(
    ("fixture", "layer", "after", "kind"),
    [
        (FIXTURES / "rounding_head.py", "`head` (RoundingHead.forward)", "head.linear", "zero"),
        (FIXTURES / "detached_trunk.py", f"DetachedTrunkLM.forward {OWN}", "trunk", "cut"),
        (
            FIXTURES / "argmax_codebook.py",
            "`quantizer` (ArgmaxQuantizer.forward)",
            "quantizer.project",
            "cut",
        ),
        (FIXTURES / "integer_cast.py", "`quantize` (IntQuantize.forward)", "features", "cut"),
        # A residual branch behind .detach(): the input still gets a gradient, the sum is short.
        (TIER1_FIXTURES / "grads_detached.py", f"DetachedBranch.forward {OWN}", "branch", "cut"),
    ],
    ids=lambda v: v.stem if isinstance(v, Path) else None,
)
def test_broken_gradient_path_fails_naming_the_layer(
    fixture: Path, layer: str, after: str, kind: str
) -> None:
    model, adapter, task = _model(fixture)
    result = check_attribution_completeness(model, adapter, _padded(task))
    assert result.status.value == "failed"
    assert f"the gradient path breaks in {layer}, after `{after}`" in result.message
    assert result.details["break"]["after"] == after
    assert result.details["break"]["kind"] == kind
    assert "differentiable path" in result.message  # the fix


def test_rounding_head_fails_although_the_sums_could_agree() -> None:
    """All-zero attributions fail even when f(x) - f(baseline) happens to be tiny."""
    model, adapter, task = _model(FIXTURES / "rounding_head.py")
    result = check_attribution_completeness(model, adapter, _padded(task))
    assert "every attribution is exactly zero" in result.message
    assert result.details["history"] == [{"n_steps": 16, "max_relative_error": 1.0}]


def test_locality_fails_on_a_model_that_attends_to_padding() -> None:
    model, adapter, task = _model(FIXTURES / "attends_padding.py")
    batch = _padded(task)
    assert check_attribution_completeness(model, adapter, batch).status.value == "passed"
    result = check_attribution_locality(model, adapter, batch)
    assert result.status.value == "failed"
    assert "6 of 6 attributions that must be exactly zero are not" in result.message
    assert "owes" in result.message and "to the padding token at position 9" in result.message
    assert "Mask padded keys in every attention" in result.message
    assert {v["rule"] for v in result.details["violations"]} == {"padding"}


def test_locality_fails_on_an_off_by_one_causal_mask() -> None:
    model, adapter, task = _model(TIER1_FIXTURES / "masking_off_by_one.py")
    result = check_attribution_locality(model, adapter, _padded(task))
    assert result.status.value == "failed"
    assert "the logit of token" in result.message
    first = result.details["violations"][0]
    assert first["rule"] == "later"
    target_position = int(result.details["targets"][first["example"]].rsplit(" ", 1)[1])
    assert first["position"] == target_position + 1  # the next token leaks, nothing further


def test_locality_skips_when_it_does_not_apply() -> None:
    class NoMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(256, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(input_ids).mean(dim=1))

    _, adapter, task = _model(EXAMPLES / "tiny_encoder_cls.py")
    result = check_attribution_locality(NoMask().eval(), adapter, make_batch(task, 2, 6, pad_to=8))
    assert result.status.value == "skipped"
    assert "takes no attention_mask" in result.message
    unpadded = check_attribution_locality(NoMask().eval(), adapter, make_batch(task, 2, 8))
    assert "the batch has no padding" in unpadded.message


def test_text_model_without_an_embedding_module_is_skipped_with_the_fix() -> None:
    class HandEmbedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(256, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.table[input_ids].mean(dim=1))

    _, adapter, task = _model(EXAMPLES / "tiny_encoder_cls.py")
    result = check_attribution_completeness(HandEmbedded().eval(), adapter, make_batch(task, 2))
    assert result.status.value == "skipped"
    assert "no nn.Embedding of HandEmbedded is called with the batch's input_ids" in result.message
    assert "get_input_embeddings()" in result.message


def test_a_model_that_raises_fails_with_its_line() -> None:
    class Raises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(256, 8)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom in forward")

    _, adapter, task = _model(EXAMPLES / "tiny_encoder_cls.py")
    result = check_attribution_completeness(Raises().eval(), adapter, make_batch(task, 2))
    assert result.status.value == "failed"
    assert "RuntimeError: boom in forward" in result.message
    assert Path(__file__).name in result.details["location"]
    assert result.details["source"] == 'raise RuntimeError("boom in forward")'


def test_too_few_steps_is_reported_as_no_convergence() -> None:
    """A ReLU network integrated with one point misses its kinks; the cap says so."""
    model, adapter, task = _model(EXAMPLES / "simple_cnn.py")
    batch = make_batch(task, 2, seed=0)
    result = check_attribution_completeness(
        model, adapter, batch, first_steps=1, max_steps=1, rtol=1e-6
    )
    assert result.status.value == "failed"
    assert "Integrated gradients did not converge" in result.message
    assert "even at 1 steps" in result.message
    assert "pass a larger max_steps" in result.message


def test_relative_error_is_taken_against_the_output_difference() -> None:
    attribution = Attribution(
        sources=[AttributionSource("pixel_values")],
        values=[torch.tensor([[0.5, 0.5], [1.0, 0.0]])],
        at_input=torch.tensor([3.0, 1.0]),
        at_baseline=torch.tensor([2.0, 1.0]),
        n_steps=4,
    )
    errors = relative_errors(attribution)
    assert errors[0].item() == pytest.approx(0.0)
    # f(x) == f(b): the error is taken against float32 rounding of the logits, not zero.
    assert errors[1].item() == pytest.approx(1.0 / 3e-5)


def test_break_descriptions_name_the_layer_and_the_cause() -> None:
    zero = GradientBreak("head", "RoundingHead", "head.linear", "Linear", "zero")
    assert zero.describe("M").startswith(
        "the gradient path breaks in `head` (RoundingHead.forward), after `head.linear` (Linear)"
    )
    assert "zero derivative" in zero.describe("M")
    cut = GradientBreak("", "M", "trunk", "Sequential", "cut")
    assert "in M.forward (the model's own forward), after `trunk`" in cut.describe("M")
    assert ".detach()" in cut.describe("M")


def test_missing_captum_is_an_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ModelTiersError, match=r"pip install 'pytest-modeltiers\[analysis\]'"):
        integrated_gradients_class()


# --------------------------------------------------------------------------- as users run it


def test_suite_passes_on_the_example_lm(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={EXAMPLES / 'tiny_gpt.py'}",
        "-m",
        "tier2",
        "-k",
        "attribution",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)


def test_suite_fails_completeness_naming_the_layer(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={FIXTURES / 'rounding_head.py'}",
        "-m",
        "tier2",
        "-k",
        "attribution",
        "-p",
        "no:cacheprovider",
        "--modeltiers-report=health.json",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*every attribution is exactly zero*the gradient path breaks in `head` "
            "(RoundingHead.forward), after `head.linear`*",
            "*FAILED*test_attribution_completeness*",
        ]
    )
    report = json.loads((pytester.path / "health.json").read_text())
    checks = {c["check_name"]: c for c in report["checks"]}
    assert checks["test_attribution_completeness"]["details"]["break"]["layer"] == "head"
    assert checks["test_attribution_locality"]["status"] == "passed"


CAPTUM_PROBE = """
import json, sys

class Probe:  # a plugin, not conftest hooks: those apply to items under this folder only
    def pytest_runtest_teardown(self, item):
        with open("captum.jsonl", "a") as f:
            f.write(json.dumps([item.name, "captum" in sys.modules]) + "\\n")


def pytest_configure(config):
    config.pluginmanager.register(Probe(), "captum-probe")
"""


@pytest.mark.slow
def test_captum_is_imported_by_tier2_only(pytester: pytest.Pytester) -> None:
    """Tier 1 runs first in a session that collects tier 2 as well: Captum arrives with the
    first attribution test, not before."""
    pytester.makeconftest(CAPTUM_PROBE)
    result = pytester.runpytest_subprocess(
        f"--model={EXAMPLES / 'tiny_gpt.py'}",
        "-m",
        "tier1 or tier2",
        "-k",
        "test_gradient_flow or test_attribution_locality",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)
    lines = (pytester.path / "captum.jsonl").read_text().splitlines()
    seen = [json.loads(line) for line in lines]
    assert seen == [["test_gradient_flow", False], ["test_attribution_locality", True]]
