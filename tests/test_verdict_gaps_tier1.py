"""Tier 1 bugs that used to pass or get the wrong diagnosis, each next to its correct twin.

The models are ``fixtures/verdicts/*.py``: each bug model has exactly one bug, its twin is the
same model without it. The suite runs as users run it (``--model``); each test reads the
verdicts and messages from the health report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_checks_tier1_outputs import EXAMPLES, load
from third_party_models import hf_model
from torch import nn

from pytest_modeltiers.checks.tier1 import check_gradient_flow, check_memory_retention
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT / "fixtures" / "verdicts"


def run_tier1(pytester: pytest.Pytester, model: str, tests: str) -> dict[str, dict[str, Any]]:
    """Run the tier 1 tests selected by ``tests`` (a -k expression) on ``model``; by check."""
    pytester.runpytest(
        f"--model={VERDICTS / model}",
        "-m",
        "tier1",
        "-k",
        tests,
        "-p",
        "no:randomly",
        "--modeltiers-report",
        "health.json",
    )
    report = json.loads((pytester.path / "health.json").read_text())
    return {check["check_name"]: check for check in report["checks"]}


# --------------------------------------------------------------------------- determinism first

COMPARING = ("test_batch_independence", "test_causal_masking", "test_padding_invariance")
NOT_DETERMINISTIC = "outputs are not deterministic (see test_output_stability)"


@pytest.mark.parametrize("model", ["outputs_nondeterministic_lm.py", "outputs_call_counter.py"])
def test_a_nondeterministic_model_is_not_blamed_for_leaks(
    pytester: pytest.Pytester, model: str
) -> None:
    """Dropout on in eval, or a call counter, is named as such, not as a leak or mixing."""
    checks = run_tier1(pytester, model, " or ".join(("output_stability", *COMPARING)))
    stability = checks["test_output_stability"]
    assert stability["status"] == "failed"
    assert "eval mode is not deterministic" in stability["message"]
    for name in COMPARING:
        assert checks[name]["status"] == "failed", name
        message = checks[name]["message"]
        assert message.startswith(NOT_DETERMINISTIC), message
        for wrong in ("leak", "mixes information across samples"):
            assert wrong not in message, message


def test_the_deterministic_twin_passes_every_comparison(pytester: pytest.Pytester) -> None:
    checks = run_tier1(
        pytester,
        "outputs_nondeterministic_lm_twin.py",
        " or ".join(("output_stability", *COMPARING)),
    )
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(
        ("test_output_stability", *COMPARING), "passed"
    )


def test_a_real_leak_in_a_deterministic_model_is_still_a_leak(pytester: pytest.Pytester) -> None:
    checks = run_tier1(
        pytester, str(ROOT / "fixtures" / "tier1" / "masking_causal_leak.py"), "causal_masking"
    )
    assert checks["test_causal_masking"]["status"] == "failed"
    assert "causal leak" in checks["test_causal_masking"]["message"]


# --------------------------------------------------------------------------- padded gradients


def test_nan_gradient_on_padded_batches_fails_gradient_flow(pytester: pytest.Pytester) -> None:
    checks = run_tier1(pytester, "grads_nan_on_padding.py", "gradient_flow")
    result = checks["test_gradient_flow"]
    assert result["status"] == "failed"
    message = result["message"]
    assert "broken (NaN/Inf gradient" in message and "emb.weight" in message, message
    assert "padded input" in message and "attention_mask 0" in message, message
    assert result["details"]["padding"]["padded_positions"] > 0


def test_the_twin_gets_finite_gradients_on_padded_batches(pytester: pytest.Pytester) -> None:
    checks = run_tier1(pytester, "grads_nan_on_padding_twin.py", "gradient_flow")
    assert checks["test_gradient_flow"]["status"] == "passed", checks["test_gradient_flow"]


def test_the_padding_bug_is_invisible_without_padding() -> None:
    """Why the suite pads: the same model passes on an unpadded batch."""
    model, adapter, task = load(VERDICTS / "grads_nan_on_padding.py")
    plain = make_batch(task, 2, 16, seed=0)
    assert check_gradient_flow(model, adapter, plain).status is CheckStatus.PASSED
    padded = make_batch(task, 2, 12, seed=0, pad_to=16)
    assert check_gradient_flow(model, adapter, padded).status is CheckStatus.FAILED


# --------------------------------------------------------------------------- memory retention


def test_a_model_that_keeps_its_activations_fails_memory_retention(
    pytester: pytest.Pytester,
) -> None:
    checks = run_tier1(pytester, "memory_leak.py", "memory")
    assert checks["test_memory_footprint"]["status"] == "passed"  # one forward looks normal
    result = checks["test_memory_retention"]
    assert result["status"] == "failed"
    message = result["message"]
    assert "per call" in message and "tensors" in message, message
    assert "kept in the list 'ACTIVATIONS' at module level in" in message, message
    per_call = result["details"]["growth_per_call"]
    assert per_call["tensors"] >= 1 and per_call["bytes"] > 0


class _History(nn.Module):
    """Keeps every eval output in a dict attribute of a submodule: grows in serving only."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 2)
        self.head.seen = {}  # type: ignore[assignment]

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        logits = self.head(self.emb(input_ids).mean(dim=1))
        if not self.training:
            self.head.seen[len(self.head.seen)] = logits
        return logits


def test_a_leak_in_eval_mode_names_the_attribute_that_keeps_it() -> None:
    _, adapter, task = load(VERDICTS / "memory_leak.py")
    result = check_memory_retention(_History(), adapter, make_batch(task, 2, 4, seed=0))
    assert result.status is CheckStatus.FAILED
    assert result.details["growth_per_call"]["tensors"] == 1
    assert "kept in the dict attribute 'seen' of model.head" in result.message


class _GrowingHistory(nn.Module):
    """Concatenates every pooled activation onto one tensor: as many tensors, more bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 2)
        self.history = torch.zeros(0, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        pooled = self.emb(input_ids).mean(dim=1)
        self.history = torch.cat([self.history, pooled.detach()])
        return self.head(pooled)


def test_a_tensor_that_grows_in_place_of_a_list_fails_on_bytes() -> None:
    _, adapter, task = load(VERDICTS / "memory_leak.py")
    result = check_memory_retention(_GrowingHistory(), adapter, make_batch(task, 2, 4, seed=0))
    assert result.status is CheckStatus.FAILED
    assert result.details["growing"] == ["bytes"]
    assert "kept in the Tensor attribute 'history' of the model" in result.message


def test_state_kept_between_calls_that_does_not_grow_passes(pytester: pytest.Pytester) -> None:
    """An LSTM, BatchNorm statistics, a filled-once cache and a replaced last state."""
    checks = run_tier1(pytester, "memory_caches_twin.py", "memory_retention")
    result = checks["test_memory_retention"]
    assert result["status"] == "passed", result["message"]
    assert result["details"]["growth_per_call"] == {"tensors": 0, "bytes": 0}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_models_retain_nothing(name: str) -> None:
    model, adapter, task = load(ROOT / "example_models" / f"{name}.py")
    result = check_memory_retention(model, adapter, make_batch(task, 2, 16, seed=0))
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_memory_retention" and result.tier == 1


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5", "vit"])
def test_hugging_face_models_retain_nothing(kind: str) -> None:
    model, adapter, task = hf_model(kind)
    result = check_memory_retention(model, adapter, make_batch(task, 2, 8, seed=0))
    assert result.status is CheckStatus.PASSED, result.message


def test_memory_retention_leaves_the_model_as_it_was() -> None:
    model, adapter, task = load(VERDICTS / "memory_caches_twin.py")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = check_memory_retention(model, adapter, make_batch(task, 2, 16, seed=0))
    assert result.status is CheckStatus.PASSED, result.message
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_exception_in_forward_is_a_failure_naming_it() -> None:
    class Raises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(64, 4)

        def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
            raise RuntimeError("boom")

    _, adapter, task = load(VERDICTS / "memory_leak.py")
    result = check_memory_retention(Raises(), adapter, make_batch(task, 2, 4, seed=0))
    assert result.status is CheckStatus.FAILED
    assert "RuntimeError: boom" in result.message
