"""Tier 1 gradient flow, both ways: correct models pass, each gradient bug fails by its group.

Correct models: the four example models and small Hugging Face models built from configs (no
downloads). Buggy models: ``fixtures/tier1/grads_*.py``, loaded through the real loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_checks_tier1_outputs import EXAMPLES, HF, Loaded, hf_model, load
from torch import nn

from pytest_modeltiers.checks.tier1_gradients import check_gradient_flow
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "tier1"


@pytest.fixture(scope="module", params=[*EXAMPLES, *(f"hf_{n}" for n in HF)])
def correct(request: pytest.FixtureRequest) -> Loaded:
    name: str = request.param
    if name.startswith("hf_"):
        return hf_model(name[3:])
    return load(ROOT / "example_models" / f"{name}.py")


def bug(name: str) -> Loaded:
    return load(FIXTURES / f"{name}.py")


# --------------------------------------------------------------------------- correct models


@pytest.mark.parametrize("shape", [(2, 8, 6), (3, 5, 4)], ids=["plain", "padded"])
def test_correct_models_get_a_gradient_everywhere(
    correct: Loaded, shape: tuple[int, int, int]
) -> None:
    model, adapter, task = correct
    batch_size, seq_len, target_len = shape
    pad = {"pad_to": seq_len + 3, "target_pad_to": target_len + 2} if seq_len == 5 else {}
    batch = make_batch(task, batch_size, seq_len, target_len=target_len, seed=7, **pad)
    result = check_gradient_flow(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_gradient_flow" and result.tier == 1
    assert result.details["unused"] == [] and result.details["dead"] == []
    assert result.details["broken"] == {}
    assert result.details["trainable"] == sum(1 for p in model.parameters() if p.requires_grad)


def test_a_degenerate_input_does_not_make_a_correct_model_fail() -> None:
    """BERT on one token: softmax over one key gives the query/key layers an exact zero grad.

    The finding is rechecked on an ordinary batch and cleared, and the details say so.
    """
    model, adapter, task = hf_model("bert")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 1))
    assert result.status is CheckStatus.PASSED, result.message
    cleared = result.details["zero_only_for_this_input"]
    assert "bert.encoder.layer.0.attention.self.query.weight" in cleared
    assert "for this input only" in result.message


# --------------------------------------------------------------------------- buggy models


def test_unused_parameter_fails_as_unused() -> None:
    model, adapter, task = bug("grads_unused")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.FAILED
    assert "2 of 5 trainable parameters" in result.message
    assert "unused (no gradient reaches them" in result.message
    assert "proj.weight, proj.bias" in result.message and "input_ids[2,8]" in result.message
    assert result.details["unused"] == ["proj.weight", "proj.bias"]
    assert "rechecked on reference batch" in result.details["confirmation"]


def test_detached_branch_fails_as_unused() -> None:
    model, adapter, task = bug("grads_detached")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.FAILED
    assert result.details["unused"] == ["branch.0.weight", "branch.0.bias"]
    assert ".detach()" in result.message


def test_parameter_multiplied_by_zero_fails_as_dead() -> None:
    model, adapter, task = bug("grads_dead")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.FAILED
    assert "dead (gradient exactly zero" in result.message and ": gate" in result.message
    assert result.details["dead"] == ["gate"] and result.details["unused"] == []


def test_sqrt_at_zero_fails_as_broken() -> None:
    model, adapter, task = bug("grads_nan")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.FAILED
    assert "broken (NaN/Inf gradient" in result.message and "shift" in result.message
    assert result.details["broken"] == {"shift": {"nan": 16, "inf": 0, "elements": 16}}


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("patterns", [["proj.*"], "proj.*", ("*.weight", "proj.bias")])
def test_expected_unused_patterns_exempt_parameters(patterns: Any) -> None:
    model, adapter, task = bug("grads_unused")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8), expected_unused=patterns)
    assert result.status is CheckStatus.PASSED, result.message
    assert {"proj.weight", "proj.bias"} <= set(result.details["exempt"])
    assert "exempt as expected unused" in result.message


def test_expected_unused_does_not_hide_a_broken_gradient() -> None:
    model, adapter, task = bug("grads_nan")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8), expected_unused=["*"])
    assert result.status is CheckStatus.FAILED and "shift" in result.details["broken"]


def test_patterns_matching_nothing_are_reported() -> None:
    model, adapter, task = bug("grads_unused")
    result = check_gradient_flow(
        model, adapter, make_batch(task, 2, 8), expected_unused=["proj.*", "pooler.*"]
    )
    assert result.ok and result.details["patterns_matching_nothing"] == ["pooler.*"]


def test_frozen_parameters_are_never_flagged() -> None:
    model, adapter, task = bug("grads_unused")
    model.proj.requires_grad_(False)
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["frozen"] == 2 and result.details["trainable"] == 3


def test_fully_frozen_model_is_skipped() -> None:
    model, adapter, task = bug("grads_unused")
    model.requires_grad_(False)
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 8))
    assert result.status is CheckStatus.SKIPPED and "requires_grad" in result.message


def test_hf_vit_with_an_unused_pooler_is_flagged_and_fixed_by_its_config_option() -> None:
    """A custom head on ``ViTModel`` that reads the CLS token leaves the pooler unused.

    ``ViTForImageClassification`` already builds its ViT without a pooler; a hand-rolled head
    should do the same (``add_pooling_layer=False``) or declare ``expected_unused``.
    """
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )

    class ClsHead(nn.Module):
        def __init__(self, pooler: bool) -> None:
            super().__init__()
            self.vit = transformers.ViTModel(config, add_pooling_layer=pooler)
            self.head = nn.Linear(32, 4)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.head(self.vit(pixel_values=pixel_values).last_hidden_state[:, 0])

    task = get_builtin_task("vision_tiny")
    adapter = get_adapter(task)
    batch = make_batch(task, 2)
    torch.manual_seed(0)
    flagged = check_gradient_flow(ClsHead(pooler=True), adapter, batch)
    assert flagged.status is CheckStatus.FAILED
    assert flagged.details["unused"] == ["vit.pooler.dense.weight", "vit.pooler.dense.bias"]
    assert check_gradient_flow(ClsHead(pooler=False), adapter, batch).ok
    declared = check_gradient_flow(
        ClsHead(pooler=True), adapter, batch, expected_unused=["vit.pooler.*"]
    )
    assert declared.status is CheckStatus.PASSED


# --------------------------------------------------------------------------- failures of steps


def test_non_finite_loss_is_a_failure_naming_the_loss() -> None:
    class NaNLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 32 * 32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)) * float("nan")

    task = get_builtin_task("vision_tiny")
    result = check_gradient_flow(NaNLogits(), get_adapter(task), make_batch(task, 2))
    assert result.status is CheckStatus.FAILED
    assert "loss is nan" in result.message and result.details["loss"] == "nan"


def test_forward_exception_is_a_failure_naming_the_stage_and_input() -> None:
    model, adapter, task = bug("outputs_crash_long")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 40))
    assert result.status is CheckStatus.FAILED
    assert result.message.startswith("forward in train mode raised IndexError")
    assert "input_ids[2,40]" in result.message and result.details["stage"] == "forward"
    assert check_gradient_flow(model, adapter, make_batch(task, 2, 32)).ok


def test_output_detached_from_every_parameter_fails_all_as_unused() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 32 * 32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)).detach()

    task = get_builtin_task("vision_tiny")
    result = check_gradient_flow(Detached(), get_adapter(task), make_batch(task, 2))
    assert result.status is CheckStatus.FAILED
    assert result.details["unused"] == ["linear.weight", "linear.bias"]


# --------------------------------------------------------------------------- restoration


def test_model_modes_buffers_grads_and_rng_are_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 4),
    ).eval()
    model[3].train()  # mixed modes come back per module
    earlier = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = earlier
    modes = [m.training for m in model.modules()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    task = get_builtin_task("vision_tiny")
    result = check_gradient_flow(model, get_adapter(task), make_batch(task, 3))
    assert result.status is CheckStatus.PASSED, result.message
    assert [m.training for m in model.modules()] == modes
    for saved, now in zip(buffers, model.buffers(), strict=True):
        assert torch.equal(saved, now)  # BatchNorm statistics untouched by the train forward
    assert model[0].weight.grad is earlier and bool((earlier == 7.0).all())
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_lm_batch_with_nothing_to_score_is_measured_on_the_reference_batch() -> None:
    """One token gives next-token prediction no target: not the model's fault."""
    model, adapter, task = load(ROOT / "example_models" / "tiny_gpt.py")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 1))
    assert result.status is CheckStatus.PASSED, result.message
    assert "no position to score" in result.details["measured_on"]


def test_a_loss_error_caused_by_the_model_is_still_a_failure() -> None:
    """Logits that do not cover the labels make the loss raise: reported, not retried."""
    model, adapter, task = bug("outputs_wrong_shape")
    result = check_gradient_flow(model, adapter, make_batch(task, 2, 20))
    assert result.status is CheckStatus.FAILED
    assert result.message.startswith("the adapter's loss raised AdapterError")
    assert "do not cover labels" in result.message and result.details["stage"] == "loss"
