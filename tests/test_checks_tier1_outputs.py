"""Tier 1 output checks, both ways: correct models pass, a model with exactly one bug fails.

Correct models: the four example models and small Hugging Face models built from configs (no
downloads). Buggy models: ``fixtures/tier1/outputs_*.py``, loaded through the real loader (so
they also pass the safety scan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from third_party_models import hf_model
from torch import nn

from pytest_modeltiers.checks.tier1_outputs import (
    check_batch_independence,
    check_input_immutability,
    check_output_finite,
    check_output_stability,
    check_shape_robustness,
    compare_close,
)
from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.models.running import preserved_model
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "tier1"
EXAMPLES = ("tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn")
HF = ("gpt2", "bert", "t5", "vit")

Loaded = tuple[nn.Module, TaskAdapter, TaskSpec]


def load(path: Path) -> Loaded:
    loaded = load_model(LoadRequest(spec=str(path), rootdir=ROOT))
    return loaded.new_model(), loaded.adapter, loaded.task


@pytest.fixture(scope="module", params=[*EXAMPLES, *(f"hf_{n}" for n in HF)])
def correct(request: pytest.FixtureRequest) -> Loaded:
    name: str = request.param
    if name.startswith("hf_"):
        return hf_model(name[3:])
    return load(ROOT / "example_models" / f"{name}.py")


@pytest.fixture(scope="module")
def fixture_model() -> Callable[[str], Loaded]:
    cache: dict[str, Loaded] = {}

    def get(name: str) -> Loaded:
        if name not in cache:
            cache[name] = load(FIXTURES / f"{name}.py")
        return cache[name]

    return get


def batches_for(task: TaskSpec) -> Iterator[dict[str, torch.Tensor]]:
    """Shapes a suite would draw: a single sample, a single token, padding, longer sequences."""
    yield make_batch(task, 1, 1, target_len=1, seed=1)
    yield make_batch(task, 3, 5, target_len=4, seed=2, pad_to=9, target_pad_to=6)
    yield make_batch(task, 2, 16, target_len=12, seed=3)


# --------------------------------------------------------------------------- correct models


def test_correct_models_pass_shape_and_finite(correct: Loaded) -> None:
    model, adapter, task = correct
    for batch in batches_for(task):
        for check in (check_shape_robustness, check_output_finite):
            result = check(model, adapter, batch)
            assert result.status is CheckStatus.PASSED, result.message
            assert result.tier == 1
    assert check_shape_robustness(model, adapter, batch).check_name == "test_shape_robustness"


def test_correct_models_pass_stability(correct: Loaded) -> None:
    model, adapter, task = correct
    result = check_output_stability(model, adapter, list(batches_for(task)))
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_output_stability"
    stats = result.details["statistics"]
    assert stats["distinct_inputs"] == 6
    assert stats["ratio"] > 1e-3  # far above the collapse threshold: no false alarm
    for key in ("mean", "std", "min", "max"):
        assert key in stats


def test_correct_models_pass_batch_independence(correct: Loaded) -> None:
    model, adapter, task = correct
    batch = make_batch(task, 4, 6, target_len=5, seed=4, pad_to=8, target_pad_to=7)
    result = check_batch_independence(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert len(result.details["max_abs_diff_per_sample"]) == 4
    assert result.details["atol"] == 1e-4


def test_correct_models_pass_input_immutability(correct: Loaded) -> None:
    model, adapter, task = correct
    batch = make_batch(task, 2, 6, target_len=5, seed=5, pad_to=8)
    result = check_input_immutability(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert "labels" in result.details["checked"]


def test_checks_leave_the_model_and_the_batch_as_they_were() -> None:
    """Modes per module, buffers, RNG state and the caller's tensors are all restored."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    model[1].eval()  # a mixed-mode model: each module's own flag must come back
    adapter = get_adapter(get_builtin_task("vision_tiny"))
    batch = {"pixel_values": torch.randn(3, 8), "labels": torch.tensor([0, 1, 2])}
    before = {k: v.clone() for k, v in batch.items()}
    modes = [m.training for m in model.modules()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    check_output_stability(model, adapter, [batch])
    check_batch_independence(model, adapter, batch)
    check_input_immutability(model, adapter, batch)
    check_output_finite(model, adapter, batch)
    assert [m.training for m in model.modules()] == modes
    for saved, now in zip(buffers, model.buffers(), strict=True):
        assert torch.equal(saved, now)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in batch.items():
        assert torch.equal(value, before[key]) and value._version == 0


def test_preserved_model_restores_after_an_exception() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    with pytest.raises(RuntimeError), preserved_model(model, training=False):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and model[1].training


class _CountsTrainCalls(nn.Sequential):
    """Keeps its BatchNorm frozen in train mode, as fine-tuning code often does."""

    calls = 0

    def train(self, mode: bool = True) -> _CountsTrainCalls:
        type(self).calls += 1
        super().train(mode)
        self[1].eval()
        return self


def test_preserved_model_switches_mode_only_when_needed_and_restores_every_flag() -> None:
    model = _CountsTrainCalls(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model.eval()
    _CountsTrainCalls.calls = 0
    with preserved_model(model, training=False):
        pass
    assert _CountsTrainCalls.calls == 0  # already in eval mode: nothing to switch
    with preserved_model(model, training=True):
        assert model.training and not model[1].training  # the user's train() decided
    assert _CountsTrainCalls.calls == 1
    assert [m.training for m in model.modules()] == [False, False, False]


# --------------------------------------------------------------------------- shape robustness


def test_shape_fails_for_an_lm_that_drops_the_last_position(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_wrong_shape")
    assert check_shape_robustness(model, adapter, make_batch(task, 2, 16)).ok
    result = check_shape_robustness(model, adapter, make_batch(task, 2, 20))
    assert result.status is CheckStatus.FAILED
    assert "[2, 19, 64]" in result.message and "[2, 20, 64]" in result.message
    assert "sequence (T) is 19, expected 20" in result.message
    assert "input_ids[2,20]" in result.message
    assert result.details["expected"] == [2, 20, 64]
    assert result.details["actual"] == [2, 19, 64]


def test_shape_fails_for_a_classifier_that_squeezes_a_batch_of_one(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_squeeze_batch")
    assert check_shape_robustness(model, adapter, make_batch(task, 2, 8)).ok
    result = check_shape_robustness(model, adapter, make_batch(task, 1, 8))
    assert result.status is CheckStatus.FAILED
    assert "squeeze" in result.message
    assert "input_ids[1,8]" in result.message and "[1, 2]" in result.message


def test_shape_fails_with_the_input_shape_when_forward_raises(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_crash_long")
    assert check_shape_robustness(model, adapter, make_batch(task, 2, 32)).ok
    result = check_shape_robustness(model, adapter, make_batch(task, 2, 40))
    assert result.status is CheckStatus.FAILED
    assert "IndexError" in result.message and "got length 40" in result.message
    assert "input_ids[2,40]" in result.message
    # the same failure, not a crash, from every other check
    for check in (check_output_finite, check_batch_independence, check_input_immutability):
        other = check(model, adapter, make_batch(task, 2, 40))
        assert other.status is CheckStatus.FAILED and "IndexError" in other.message
    other = check_output_stability(model, adapter, [make_batch(task, 2, 40)])
    assert other.status is CheckStatus.FAILED and "IndexError" in other.message


class _PerTokenClassifier(nn.Module):
    """Per-token logits [B,T,C]: the adapter pools them with the mask to [B,C]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def test_per_token_classifier_outputs_are_pooled_before_the_shape_check() -> None:
    task = get_builtin_task("cls_tiny").with_vocab_size(32)
    adapter = get_adapter(task)
    torch.manual_seed(0)
    model = _PerTokenClassifier().eval()
    batch = make_batch(task, 3, 5, pad_to=7)
    result = check_shape_robustness(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["actual"] == [3, 2]
    assert check_batch_independence(model, adapter, batch).status is CheckStatus.PASSED


# --------------------------------------------------------------------------- finiteness


def test_finite_fails_for_nan_on_one_token_id(fixture_model: Callable[[str], Loaded]) -> None:
    model, adapter, task = fixture_model("outputs_nan")
    batch = make_batch(task, 2, 8, seed=0)
    batch["input_ids"] = batch["input_ids"].clamp(max=62)
    assert check_output_finite(model, adapter, batch).status is CheckStatus.PASSED
    batch["input_ids"][1, 5] = 63
    result = check_output_finite(model, adapter, batch)
    assert result.status is CheckStatus.FAILED
    assert "64 of 1024 logits are not finite (64 NaN, 0 +Inf, 0 -Inf)" in result.message
    assert "logits[1, 5, 0]" in result.message and "input token id 63" in result.message
    assert "input_ids[2,8]" in result.message
    assert result.details["first_index"] == [1, 5, 0]
    assert result.details["nan"] == 64 and result.details["samples_affected"] == [1]


def test_finite_counts_inf_too() -> None:
    class Overflow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x.flatten(1)[:, :4] * 1000.0)

    adapter = get_adapter(get_builtin_task("vision_tiny"))
    batch = {"pixel_values": torch.ones(2, 3, 4, 4), "labels": torch.tensor([0, 1])}
    result = check_output_finite(Overflow(), adapter, batch)
    assert result.status is CheckStatus.FAILED
    assert "8 +Inf" in result.message and result.details["first_index"] == [0, 0]


# --------------------------------------------------------------------------- stability


def _stability_batches(task: TaskSpec) -> list[dict[str, torch.Tensor]]:
    return [make_batch(task, 3, 8, seed=s) for s in range(2)]


def test_stability_fails_for_dropout_left_on_in_eval(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_nondeterministic")
    result = check_output_stability(model, adapter, _stability_batches(task))
    assert result.status is CheckStatus.FAILED
    assert "not deterministic" in result.message and "dropout" in result.message
    assert result.details["determinism"]["max_abs_diff"] > 1e-2


def test_stability_fails_for_a_collapsed_output(fixture_model: Callable[[str], Loaded]) -> None:
    model, adapter, task = fixture_model("outputs_collapsed")
    result = check_output_stability(model, adapter, _stability_batches(task))
    assert result.status is CheckStatus.FAILED
    assert "collapsed" in result.message and "6 distinct inputs" in result.message
    assert "mean 0.05, std 0.25, min -0.2, max 0.3" in result.message
    stats = result.details["statistics"]
    assert stats["across_input_std"] == 0.0 and stats["scale"] == pytest.approx(0.25)


def test_stability_fails_for_exploding_logits(fixture_model: Callable[[str], Loaded]) -> None:
    model, adapter, task = fixture_model("outputs_exploding")
    batches = _stability_batches(task)
    result = check_output_stability(model, adapter, batches)
    assert result.status is CheckStatus.FAILED
    assert "explode" in result.message and "bound 10000" in result.message
    assert result.details["statistics"]["max_abs"] > 1e4
    # the bound is configurable for models whose large logits are intended
    relaxed = check_output_stability(model, adapter, batches, explode_bound=1e9)
    assert relaxed.status is CheckStatus.PASSED, relaxed.message


def test_stability_fails_for_non_finite_outputs(fixture_model: Callable[[str], Loaded]) -> None:
    model, adapter, task = fixture_model("outputs_nan")
    batch = make_batch(task, 2, 4)
    batch["input_ids"][0, 0] = 63
    result = check_output_stability(model, adapter, [batch])
    assert result.status is CheckStatus.FAILED and "NaN or Inf" in result.message


class _BiasPlusSmallSignal(nn.Module):
    """Large constant logits plus a small input-dependent part: not collapsed."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 4)
        self.bias = nn.Parameter(torch.tensor([10.0, -10.0, 3.0, 0.0]))

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.bias + 1e-3 * self.emb(input_ids).mean(dim=1)


def test_stability_does_not_cry_wolf_on_small_but_real_input_dependence() -> None:
    task = get_builtin_task("cls_tiny").merged(
        {"input_schema": {"vocab_size": 32}, "output_schema": {"num_classes": 4}}
    )
    torch.manual_seed(0)
    result = check_output_stability(
        _BiasPlusSmallSignal(), get_adapter(task), [make_batch(task, 4, 6, seed=0)]
    )
    assert result.status is CheckStatus.PASSED, result.message
    assert 1e-5 < result.details["statistics"]["ratio"] < 1e-2


def test_stability_warns_on_all_zero_outputs_of_a_zero_initialised_head() -> None:
    task = get_builtin_task("vision_tiny")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    result = check_output_stability(model, get_adapter(task), [make_batch(task, 3)])
    assert result.status is CheckStatus.WARNING and "zero-initialised" in result.message


def test_stability_does_not_judge_collapse_on_a_single_distinct_input(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_collapsed")
    one = make_batch(task, 1, 8, seed=0)
    result = check_output_stability(model, adapter, [one, one])
    assert result.status is CheckStatus.PASSED
    assert "not assessed" in result.details["collapse"]


# --------------------------------------------------------------------------- batch independence


def test_batch_independence_fails_when_samples_are_mixed(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_batch_mixing")
    result = check_batch_independence(model, adapter, make_batch(task, 3, 8))
    assert result.status is CheckStatus.FAILED
    assert result.message.startswith("sample 0 of batch input_ids[3,8]")
    assert "max abs diff" in result.message and "dim 0" in result.message
    assert result.details["first_mismatch"]["sample"] == 0
    assert result.details["first_mismatch"]["max_abs_diff"] > 1e-2


def test_batch_independence_passes_batchnorm_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 4),
    )
    bn = model[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    adapter = get_adapter(get_builtin_task("vision_tiny"))
    batch = make_batch(adapter.task, 4)
    result = check_batch_independence(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert model.training  # the check ran eval and restored train mode


def test_batch_independence_skips_a_batch_of_one(correct: Loaded) -> None:
    model, adapter, task = correct
    result = check_batch_independence(model, adapter, make_batch(task, 1, 4, target_len=3))
    assert result.status is CheckStatus.SKIPPED and "batch size 1" in result.message


def test_batch_independence_respects_its_tolerances() -> None:
    class Jitter(nn.Module):
        """Adds 1e-6 * batch size: a kernel-rounding-sized difference."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :4] + 1e-6 * x.shape[0]

    adapter = get_adapter(get_builtin_task("vision_tiny"))
    batch = make_batch(adapter.task, 3)
    assert check_batch_independence(Jitter(), adapter, batch).status is CheckStatus.PASSED
    strict = check_batch_independence(Jitter(), adapter, batch, atol=1e-8, rtol=0.0)
    assert strict.status is CheckStatus.FAILED and "atol 1e-08" in strict.message


# --------------------------------------------------------------------------- input immutability


def test_immutability_fails_when_forward_changes_input_values(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_mutates_input")
    batch = make_batch(task, 2, 6, seed=0)
    batch["input_ids"][1, 2] = 63
    caller = batch["input_ids"].clone()
    result = check_input_immutability(model, adapter, batch)
    assert result.status is CheckStatus.FAILED
    assert "eval mode modifies its input 'input_ids'" in result.message
    assert "first at [1, 2]: 63 -> 62" in result.message
    assert torch.equal(batch["input_ids"], caller)  # the check worked on clones


def test_immutability_catches_an_in_place_op_that_left_values_equal(
    fixture_model: Callable[[str], Loaded],
) -> None:
    model, adapter, task = fixture_model("outputs_mutates_input")
    batch = make_batch(task, 2, 6, seed=0)
    batch["input_ids"] = batch["input_ids"].clamp(max=62)
    result = check_input_immutability(model, adapter, batch)
    assert result.status is CheckStatus.FAILED
    assert "'input_ids' was written in place" in result.message
    assert (
        result.details["changes"][0]["version_after"]
        > result.details["changes"][0]["version_before"]
    )


class _MutatesMaskInTraining(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            attention_mask.mul_(1)
        return self.head(self.emb(input_ids).mean(dim=1))


def test_immutability_checks_train_mode_too() -> None:
    task = get_builtin_task("cls_tiny").with_vocab_size(32)
    model = _MutatesMaskInTraining().eval()
    result = check_input_immutability(model, get_adapter(task), make_batch(task, 2, 5))
    assert result.status is CheckStatus.FAILED
    assert "train mode" in result.message and "'attention_mask'" in result.message
    assert not model.training


# --------------------------------------------------------------------------- helpers


def test_compare_close_semantics() -> None:
    a = torch.tensor([1.0, float("nan"), float("inf"), 2.0])
    b = torch.tensor([1.0, float("nan"), float("inf"), 2.0001])
    assert compare_close(a, b, atol=1e-3, rtol=0)["ok"]
    tight = compare_close(a, b, atol=1e-6, rtol=0)
    assert not tight["ok"] and tight["worst_index"] == [3] and tight["mismatches"] == 1
    half_nan = compare_close(torch.tensor([float("nan")]), torch.tensor([1.0]), atol=1, rtol=1)
    assert not half_nan["ok"]


def test_stability_counts_inputs_that_differ_only_in_padding_as_one() -> None:
    """A correct model gives identical outputs for them; that is not a collapse."""
    model, adapter, task = load(ROOT / "example_models" / "tiny_encoder_cls.py")
    plain = make_batch(task, 1, 6, seed=3)
    padded = make_batch(task, 1, 6, seed=3, pad_to=9)
    result = check_output_stability(model, adapter, [plain, padded])
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["statistics"]["distinct_inputs"] == 1
