"""Held-out evaluation: metrics checked against hand-computed values and the adapters' losses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pytest_modeltiers.config.eval_config import EvalConfig
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.datasets import make_dataloader, task_dataset
from pytest_modeltiers.evaluation.held_out import (
    EvaluationError,
    compute_metrics,
    run_evaluation,
)
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.models.loader import LoadRequest, load_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"]


class FixedLM(nn.Module):
    """Every position predicts the same distribution over 4 tokens: p = (.1, .2, .3, .4)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_p = nn.Parameter(torch.tensor([0.1, 0.2, 0.3, 0.4]).log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.log_p.expand(*input_ids.shape, 4)


class FirstTokenClassifier(nn.Module):
    """Logits looked up from the first token: a table the test controls exactly."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids[:, 0]]


def _lm_task() -> object:
    return get_builtin_task("lm_tiny").with_vocab_size(4)


def test_lm_metrics_match_hand_computation_and_ignore_padding() -> None:
    task = _lm_task()
    batch = {
        "input_ids": torch.tensor([[1, 2, 3, 0], [2, 1, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
    }
    batch["labels"] = batch["input_ids"].clone()
    # Position t predicts t+1: scored targets are 2, 3 (row 0) and 1 (row 1); padding never.
    expected_loss = -(math.log(0.3) + math.log(0.4) + math.log(0.2)) / 3
    result = run_evaluation(FixedLM(), get_adapter(task), task, None, [batch])
    assert result.n_tokens == 3
    assert result.metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(expected_loss), rel=1e-6)
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)  # argmax is token 3: one hit
    assert result.per_example["tokens"].tolist() == [2, 1]
    assert result.per_example["correct"].tolist() == [1, 0]


def test_means_are_token_weighted_across_batches_not_means_of_batch_means() -> None:
    task = _lm_task()
    rows = {
        "input_ids": torch.tensor([[1, 3, 3, 3], [1, 2, 0, 0], [1, 1, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]),
    }
    rows["labels"] = rows["input_ids"].clone()
    whole = run_evaluation(FixedLM(), get_adapter(task), task, None, [rows])
    split = [{k: v[:1] for k, v in rows.items()}, {k: v[1:] for k, v in rows.items()}]
    parts = run_evaluation(FixedLM(), get_adapter(task), task, None, split)
    assert parts.metrics == pytest.approx(whole.metrics)
    # the mean of the two batch means would weigh 3 tokens like 2: a different number
    first = run_evaluation(FixedLM(), get_adapter(task), task, None, split[:1]).metrics["loss"]
    second = run_evaluation(FixedLM(), get_adapter(task), task, None, split[1:]).metrics["loss"]
    assert (first + second) / 2 != pytest.approx(whole.metrics["loss"])


def test_classification_accuracy_and_macro_f1_by_hand() -> None:
    task = get_builtin_task("cls_tiny").merged({"output_schema": {"num_classes": 3}})
    task = task.with_vocab_size(8)
    # first token -> predicted class: 1 -> 0, 2 -> 1, 3 -> 0 (as a wrong guess for class 2)
    table = torch.full((8, 3), -5.0)
    table[1, 0] = table[2, 1] = table[3, 0] = 5.0
    ids = torch.tensor([[1, 4], [2, 4], [2, 4], [2, 4], [3, 4]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor([0, 0, 1, 1, 2]),
    }
    result = run_evaluation(FirstTokenClassifier(table), get_adapter(task), task, None, [batch])
    assert result.metrics["accuracy"] == pytest.approx(3 / 5)
    # predictions 0,1,1,1,0 against labels 0,0,1,1,2: F1 class 0 = 2/4, class 1 = 4/5, class 2 = 0
    assert result.metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    probs = torch.softmax(table[ids[:, 0]], dim=-1)
    nll = -probs[torch.arange(5), batch["labels"]].log()
    assert result.metrics["loss"] == pytest.approx(float(nll.mean()), rel=1e-5)


def test_vision_top_k_only_below_the_number_of_classes() -> None:
    task = get_builtin_task("vision_tiny")  # 4 classes
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 4)

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[: x.shape[0]]

    batch = {"pixel_values": torch.zeros(4, 3, 8, 8), "labels": torch.tensor([0, 2, 3, 1])}
    result = run_evaluation(Fixed(), get_adapter(task), task, None, [batch])
    assert result.metrics["accuracy"] == pytest.approx(0.25)
    assert result.metrics["top3_accuracy"] == pytest.approx(0.75)  # label 3 is ranked 4th
    assert "top5_accuracy" not in result.metrics


@pytest.mark.parametrize("example", EXAMPLES)
def test_loss_agrees_with_the_adapter_loss_on_the_shipped_data(example: str) -> None:
    loaded = load_model(
        LoadRequest(spec=str(REPO / "example_models" / f"{example}.py"), rootdir=REPO)
    )
    model, adapter, task = loaded.new_model(), loaded.adapter, loaded.task
    whole = dict(task_dataset(task, "test").tensors)
    result = run_evaluation(model, adapter, task, None, [whole])
    with torch.no_grad():
        expected = float(adapter.loss(adapter.forward(model.eval(), whole), whole, task))
    assert result.metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.n_examples == 64


def test_default_data_is_the_held_out_split_and_eval_config_is_honoured(tmp_path: Path) -> None:
    loaded = load_model(
        LoadRequest(spec=str(REPO / "example_models" / "simple_cnn.py"), rootdir=REPO)
    )
    model, adapter, task = loaded.new_model(), loaded.adapter, loaded.task
    default = run_evaluation(model, adapter, task, None)
    assert default.data == "task vision_tiny test split" and default.n_examples == 64
    cfg = EvalConfig(dataset_id="vision_tiny_v1", split="validation", max_eval_examples=10)
    assert run_evaluation(model, adapter, task, cfg).n_examples == 10
    path = tmp_path / "mine.pt"
    torch.save(dict(task_dataset(task, "train", size=12).tensors), path)
    from_file = run_evaluation(model, adapter, task, EvalConfig(dataset_id=str(path)))
    assert from_file.n_examples == 12 and from_file.data == f"file {path}"


def test_model_mode_is_restored_after_evaluation() -> None:
    task = _lm_task()
    model = FixedLM().train()
    batch = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.ones(1, 2)}
    batch["labels"] = batch["input_ids"]
    run_evaluation(model, get_adapter(task), task, None, [batch])
    assert model.training


def test_bad_inputs_are_errors_that_name_the_fix() -> None:
    task = _lm_task()
    adapter = get_adapter(task)
    no_labels = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.ones(1, 2)}
    with pytest.raises(EvaluationError, match="needs 'labels'"):
        run_evaluation(FixedLM(), adapter, task, None, [no_labels])
    with pytest.raises(EvaluationError, match="empty"):
        run_evaluation(FixedLM(), adapter, task, None, [])
    padded = {**no_labels, "labels": torch.tensor([[1, 2]]), "attention_mask": torch.zeros(1, 2)}
    with pytest.raises(EvaluationError, match="no target position"):
        run_evaluation(FixedLM(), adapter, task, None, [padded])
    out_of_vocab = {**no_labels, "labels": torch.tensor([[1, 9]])}
    with pytest.raises(EvaluationError, match="outside the model's 4 output logits"):
        run_evaluation(FixedLM(), adapter, task, None, [out_of_vocab])
    with pytest.raises(EvaluationError, match="shipped splits"):
        run_evaluation(FixedLM(), adapter, task, EvalConfig(dataset_id="x", split="dev"))


def test_bootstrap_weights_equal_evaluating_the_resampled_examples() -> None:
    loaded = load_model(
        LoadRequest(spec=str(REPO / "fixtures" / "tier5" / "bag_cls.py"), rootdir=REPO)
    )
    task = loaded.task
    result = run_evaluation(loaded.new_model(), loaded.adapter, task, None)
    rng = np.random.default_rng(3)
    picks = rng.integers(0, result.n_examples, size=result.n_examples)
    weights = np.bincount(picks, minlength=result.n_examples)[None, :]
    weighted = compute_metrics("classification", result.per_example, weights, num_classes=2)
    resampled = {k: v[picks] for k, v in result.per_example.items()}
    direct = compute_metrics("classification", resampled, num_classes=2)
    for name in direct:
        assert weighted[name][0] == pytest.approx(direct[name][0])
    loader = make_dataloader(task_dataset(task, "test"), 7)  # a short last batch
    assert run_evaluation(loaded.new_model(), loaded.adapter, task, None, loader).metrics == (
        pytest.approx(result.metrics)
    )
