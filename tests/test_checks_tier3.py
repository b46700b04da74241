"""Tier 3 checks and the lean loop, both ways: correct models train, each training bug fails.

Correct models: the four example models, the third-party models of ``fixtures/third_party``
(Hugging Face ones when transformers is installed) and ``fixtures/tier3/dropout_lm.py`` (dropout
everywhere, which the seed and the checkpoint must control). Buggy models:
``fixtures/tier3/*.py``, loaded through the real loader.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pytest_modeltiers.checks import tier3
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.report import CheckStatus
from pytest_modeltiers.training.lean_loop import (
    LeanLoop,
    build_optimizer,
    build_scheduler,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
    split_batch,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "tier3"
CORRECT = (
    "example_models/tiny_gpt.py",
    "example_models/tiny_encoder_cls.py",
    "example_models/tiny_seq2seq.py",
    "example_models/simple_cnn.py",
    "fixtures/third_party/torch_transformer_lm.py",
    "fixtures/third_party/hf_gpt2.py",
    "fixtures/third_party/hf_bert_cls.py",
    "fixtures/third_party/hf_t5.py",
    "fixtures/third_party/hf_vit.py",
    "fixtures/tier3/dropout_lm.py",
)

Loaded = tuple[nn.Module, TaskAdapter, TaskSpec, Callable[[], nn.Module]]


def load(spec: str | Path) -> Loaded:
    if Path(spec).name.startswith("hf_"):
        pytest.importorskip("transformers")
    loaded = load_model(LoadRequest(spec=str(spec), rootdir=ROOT))
    return loaded.new_model(), loaded.adapter, loaded.task, loaded.new_model


def bug(name: str) -> Loaded:
    return load(FIXTURES / f"{name}.py")


def batch_for(task: TaskSpec, seed: int = 0, size: int = 4) -> dict[str, torch.Tensor]:
    length = min(16, task.max_seq_len) if task.max_seq_len else None
    return make_batch(task, size, length, target_len=8, seed=seed)


def batches_for(task: TaskSpec, steps: int = 4) -> list[dict[str, torch.Tensor]]:
    return [batch_for(task, seed) for seed in range(steps)]


@pytest.fixture(scope="module", params=CORRECT, ids=[Path(s).stem for s in CORRECT])
def correct(request: pytest.FixtureRequest) -> Loaded:
    return load(ROOT / request.param)


def _fingerprint(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["modes"] == b["modes"]
        and a["grads"] == b["grads"]
        and a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    )


# --------------------------------------------------------------------------- correct models


def test_correct_models_pass_every_check(correct: Loaded) -> None:
    model, adapter, task, factory = correct
    before = _fingerprint(model)
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()
    results = [
        tier3.check_overfit_single_batch(model, adapter, batch_for(task)),
        tier3.check_gradient_accumulation_equivalence(model, adapter, batch_for(task)),
        tier3.check_resume_equivalence(model, adapter, batches_for(task), factory=factory),
        tier3.check_seed_reproducibility(model, adapter, batches_for(task)),
    ]
    for result in results:
        assert result.status is CheckStatus.PASSED, result.message
        assert result.tier == 3
    assert [r.check_name for r in results] == [
        "test_overfit_single_batch",
        "test_gradient_accumulation_equivalence",
        "test_resume_equivalence",
        "test_seed_reproducibility",
    ]
    overfit = results[0].details
    assert overfit["final_loss"] <= 0.5 * overfit["initial_loss"]
    assert overfit["steps"] < tier3.OVERFIT_MAX_STEPS
    # The user's model and the global random streams are as they were.
    assert _same(before, _fingerprint(model))
    assert torch.equal(torch_rng, torch.get_rng_state()) and python_rng == random.getstate()


def test_resume_without_a_factory_uses_a_copy_of_the_untrained_model() -> None:
    model, adapter, task, _ = load(ROOT / "example_models/tiny_gpt.py")
    result = tier3.check_resume_equivalence(model, adapter, batches_for(task))
    assert result.status is CheckStatus.PASSED, result.message


def test_seeded_dropout_is_reproducible_and_resumable() -> None:
    """Dropout draws from torch's generator: the seed fixes it and the checkpoint restores it."""
    model, adapter, task, factory = bug("dropout_lm")
    seed = tier3.check_seed_reproducibility(model, adapter, batches_for(task))
    assert seed.status is CheckStatus.PASSED and "identical" in seed.message
    assert seed.details["losses_first"] == seed.details["losses_second"]
    other = tier3.check_seed_reproducibility(model, adapter, batches_for(task), seed=1)
    assert other.details["losses_first"] != seed.details["losses_first"]  # dropout is live
    resume = tier3.check_resume_equivalence(model, adapter, batches_for(task), factory=factory)
    assert resume.status is CheckStatus.PASSED, resume.message


def test_accumulation_is_compared_in_eval_mode_when_train_mode_stays_random() -> None:
    """HF BERT's attention dropout is functional: dropout modules in eval do not silence it."""
    model, adapter, task, _ = load(ROOT / "fixtures/third_party/hf_bert_cls.py")
    result = tier3.check_gradient_accumulation_equivalence(model, adapter, batch_for(task))
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["mode"].startswith("eval")
    # nn.Dropout modules and nn.MultiheadAttention's dropout are switched off in train mode.
    model, adapter, task, _ = load(ROOT / "fixtures/third_party/torch_transformer_lm.py")
    result = tier3.check_gradient_accumulation_equivalence(model, adapter, batch_for(task))
    assert result.status is CheckStatus.PASSED and result.details["mode"].startswith("train")
    # F.dropout cannot be switched off from outside: the comparison falls back to eval mode.
    model, adapter, task, _ = bug("dropout_lm")
    result = tier3.check_gradient_accumulation_equivalence(model, adapter, batch_for(task))
    assert result.status is CheckStatus.PASSED and result.details["mode"].startswith("eval")


# --------------------------------------------------------------------------- buggy models


def test_detached_output_cannot_overfit() -> None:
    model, adapter, task, _ = bug("overfit_detached")
    result = tier3.check_overfit_single_batch(model, adapter, batch_for(task))
    assert result.status is CheckStatus.FAILED
    assert "the loss cannot decrease" in result.message
    assert "does not depend on any trainable parameter" in result.message
    assert "detached" in result.message and "input_ids[4,16]" in result.message


def test_constant_logits_cannot_overfit() -> None:
    model, adapter, task, _ = bug("overfit_frozen_head")
    result = tier3.check_overfit_single_batch(model, adapter, batch_for(task), max_steps=20)
    assert result.status is CheckStatus.FAILED
    assert "cannot overfit one batch: after 20 adamw steps" in result.message
    assert "frozen" in result.message and "bug in the loss path" in result.message
    assert result.details["steps"] == 20
    assert result.details["final_loss"] == pytest.approx(result.details["initial_loss"])


def test_batchnorm_skips_accumulation_with_the_reason() -> None:
    model, adapter, task, _ = bug("accum_batchnorm")
    result = tier3.check_gradient_accumulation_equivalence(model, adapter, batch_for(task))
    assert result.status is CheckStatus.SKIPPED
    assert "batch statistics in train mode (norm)" in result.message
    assert result.details["batch_statistics"] == ["norm"]


def test_batch_mixing_fails_accumulation() -> None:
    model, adapter, task, _ = bug("accum_batch_mixing")
    for k in (2, 4):
        result = tier3.check_gradient_accumulation_equivalence(
            model, adapter, batch_for(task), micro_batches=k
        )
        assert result.status is CheckStatus.FAILED
        assert f"{k} accumulated micro-batches of {4 // k} do not give the update" in result.message
        assert "mixes examples across the batch" in result.message
        assert "head.weight" in result.details["mismatched"]


def test_accumulation_refuses_padded_or_uneven_batches() -> None:
    model, adapter, task, _ = load(ROOT / "example_models/tiny_gpt.py")
    padded = make_batch(task, 4, 8, pad_to=10)
    with pytest.raises(ValueError, match="has padding"):
        tier3.check_gradient_accumulation_equivalence(model, adapter, padded)
    with pytest.raises(ValueError, match="equal micro-batches"):
        tier3.check_gradient_accumulation_equivalence(model, adapter, make_batch(task, 3, 8))


def test_hidden_state_outside_state_dict_fails_resume() -> None:
    model, adapter, task, factory = bug("resume_hidden_counter")
    result = tier3.check_resume_equivalence(model, adapter, batches_for(task), factory=factory)
    assert result.status is CheckStatus.FAILED
    assert "resuming after 2 of 4 steps does not reproduce the straight run" in result.message
    assert "keeps state outside state_dict()" in result.message
    assert "register_buffer()" in result.message
    assert result.details["output_diff_after_reload"] > 0


@pytest.mark.parametrize(
    ("spec", "missing"),
    [
        ("example_models/tiny_gpt.py", "optimizer"),
        ("example_models/tiny_gpt.py", "scheduler"),
        ("fixtures/tier3/dropout_lm.py", "rng"),
    ],
)
def test_a_part_left_out_of_the_resume_fails(spec: str, missing: str) -> None:
    """A loop that forgets the optimizer, scheduler or RNG state on resume is caught."""
    model, adapter, task, factory = load(ROOT / spec)
    restore = [p for p in ("model", "optimizer", "scheduler", "rng") if p != missing]
    result = tier3.check_resume_equivalence(
        model, adapter, batches_for(task), factory=factory, restore=restore
    )
    assert result.status is CheckStatus.FAILED
    assert f"the checkpoint parts not restored ({missing}) matter" in result.message
    assert result.details["mismatched_parameters"]
    assert "output_diff_after_reload" not in result.details


def test_private_generator_fails_seed_reproducibility() -> None:
    model, adapter, task, _ = bug("seed_private_generator")
    result = tier3.check_seed_reproducibility(model, adapter, batches_for(task))
    assert result.status is CheckStatus.FAILED
    assert "two training runs from seed 0 differ from step 1" in result.message
    assert "private torch.Generator" in result.message
    assert result.details["losses_first"] != result.details["losses_second"]


# --------------------------------------------------------------------------- the lean loop


def test_checkpoint_loads_weights_only_and_resumes_exactly(tmp_path: Path) -> None:
    model, adapter, task, factory = load(ROOT / "fixtures/tier3/dropout_lm.py")

    def loop_for(module: nn.Module) -> LeanLoop:
        optimizer = build_optimizer(module, lr=1e-2)
        return LeanLoop(
            module, adapter, optimizer, build_scheduler(optimizer, "linear", total_steps=4)
        )

    seed_everything(3)
    first = loop_for(model)
    first.step(batch_for(task, 0))
    path = save_checkpoint(first, tmp_path / "ckpt" / "step1.pt")
    expected = first.step(batch_for(task, 1))
    checkpoint = load_checkpoint(path)  # weights_only=True: any pickled object would fail
    assert set(checkpoint) == {"format", "step", "model", "optimizer", "scheduler", "rng"}
    assert checkpoint["step"] == 1 and checkpoint["rng"]["numpy"] is not None
    seed_everything(99)
    second = loop_for(factory())
    second.load_state_dict(checkpoint)
    assert second.steps_done == 1
    assert second.step(batch_for(task, 1)) == expected


def test_rng_state_round_trips_every_generator() -> None:
    seed_everything(5)
    state = capture_rng_state()
    drawn = (torch.rand(3), random.random(), np.random.rand())
    seed_everything(6)
    restore_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(drawn[0], again[0]) and drawn[1:] == again[1:]


def test_split_batch_and_its_errors() -> None:
    batch = {"x": torch.arange(5), "flag": "keep"}
    parts = split_batch(batch, 2)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert all(p["flag"] == "keep" for p in parts)
    with pytest.raises(ValueError, match="into 6 micro-batches"):
        split_batch(batch, 6)
    with pytest.raises(ValueError, match="disagree on batch size"):
        split_batch({"a": torch.zeros(2), "b": torch.zeros(3)}, 2)


def test_load_state_dict_rejects_unknown_parts_and_foreign_checkpoints() -> None:
    model, adapter, _, _ = load(ROOT / "example_models/simple_cnn.py")
    loop = LeanLoop(model, adapter, build_optimizer(model))
    with pytest.raises(ValueError, match="unknown checkpoint parts"):
        loop.load_state_dict(loop.state_dict(), ["weights"])
    with pytest.raises(ValueError, match="not written by LeanLoop"):
        loop.load_state_dict({"model": model.state_dict()})


def test_a_model_that_raises_in_forward_fails_with_the_stage() -> None:
    model, adapter, task, _ = load(ROOT / "example_models/tiny_encoder_cls.py")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in forward")

    model.forward = broken  # type: ignore[method-assign]
    result = tier3.check_overfit_single_batch(model, adapter, batch_for(task))
    assert result.status is CheckStatus.FAILED
    assert "forward in train mode raised RuntimeError: boom in forward" in result.message
