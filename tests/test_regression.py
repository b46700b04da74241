"""Baseline regression gate: direction-aware, relative tolerance, paired bootstrap CI."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pytest_modeltiers.datasets import make_dataloader, task_dataset
from pytest_modeltiers.evaluation.held_out import EvalResult, EvaluationError
from pytest_modeltiers.evaluation.regression import (
    compare_models,
    compare_results,
    paired_bootstrap,
)
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bag() -> LoadedModel:
    return load_model(LoadRequest(spec=str(REPO / "fixtures/tier5/bag_cls.py"), rootdir=REPO))


def train(loaded: LoadedModel, steps: int = 20) -> nn.Module:
    """The fixture classifier trained full-batch on the shipped train split (about 95 %)."""
    model, adapter, task = loaded.new_model(), loaded.adapter, loaded.task
    data = dict(task_dataset(task, "train").tensors)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(steps):
        opt.zero_grad()
        adapter.loss(adapter.forward(model, data), data, task).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def trained(bag: LoadedModel) -> nn.Module:
    return train(bag)


def test_a_regressed_model_fails_the_gate_and_an_improved_one_passes(
    bag: LoadedModel, trained: nn.Module
) -> None:
    untrained = bag.new_model()
    worse = compare_models(trained, untrained, bag.adapter, bag.task)
    assert not worse.passed and worse.status == "fail"
    assert worse.primary_metric == "accuracy"
    acc = worse.metrics["accuracy"]
    assert acc.status == "regressed" and acc.ci_high < 0 < acc.baseline - acc.candidate
    assert worse.metrics["loss"].status == "regressed" and worse.metrics["loss"].ci_low > 0
    better = compare_models(untrained, trained, bag.adapter, bag.task)
    assert better.passed and better.metrics["accuracy"].status == "improved"


def test_an_equal_model_passes_with_a_zero_interval(bag: LoadedModel, trained: nn.Module) -> None:
    same = compare_models(trained, copy.deepcopy(trained), bag.adapter, bag.task)
    assert same.passed and same.status == "ok"
    for m in same.metrics.values():
        assert m.status == "unchanged" and m.delta == 0 and (m.ci_low, m.ci_high) == (0, 0)
    data = same.to_dict()
    assert data["passed"] is True and data["metrics"]["accuracy"]["ci"] == [0.0, 0.0]
    assert data["metrics"]["loss"]["direction"] == "lower_is_better"


def _synthetic(family: str, nll: np.ndarray, correct: np.ndarray, tokens: np.ndarray) -> EvalResult:
    per_example = {"nll": nll, "correct": correct, "tokens": tokens}
    n = int(tokens.sum())
    loss = float(nll.sum() / n)
    return EvalResult(
        task="t",
        family=family,
        metrics={"loss": loss, "perplexity": float(np.exp(loss)), "accuracy": correct.sum() / n},
        n_examples=len(nll),
        n_tokens=n,
        num_classes=None,
        top_k=(),
        per_example=per_example,
    )


def test_perplexity_up_is_a_regression_not_an_improvement() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 20, size=200)
    base_nll = tokens * rng.uniform(1.0, 1.2, size=200)
    correct = (tokens * 0.5).astype(np.int64)
    base = _synthetic("lm", base_nll, correct, tokens)
    cand = _synthetic("lm", base_nll * 1.3, correct, tokens)
    result = compare_results(base, cand)
    assert result.primary_metric == "loss"
    assert result.metrics["perplexity"].status == "regressed"
    assert result.metrics["perplexity"].relative_change > 0.1
    assert result.metrics["accuracy"].status == "unchanged"
    assert not result.passed
    assert "perplexity: baseline" in result.summary()


def test_tolerance_and_significance_are_both_required() -> None:
    rng = np.random.default_rng(1)
    tokens = np.full(300, 10)
    nll = rng.uniform(5, 15, size=300)
    correct = np.full(300, 5)
    base = _synthetic("lm", nll, correct, tokens)
    small = compare_results(base, _synthetic("lm", nll * 1.05, correct, tokens))
    assert small.metrics["loss"].status == "unchanged" and small.passed  # within 10 %
    assert small.metrics["loss"].ci_low > 0  # although clearly significant
    strict = compare_results(base, _synthetic("lm", nll * 1.05, correct, tokens), tolerance=0.01)
    assert not strict.passed
    # 10 examples, one of them much worse: 50 % worse on average, but a third of the
    # resamples leave that example out, so the interval reaches zero: not significant.
    few_tokens, few_nll, few_correct = np.full(10, 10), np.full(10, 10.0), np.full(10, 5)
    spiked = few_nll.copy()
    spiked[3] = 60.0
    few = _synthetic("lm", few_nll, few_correct, few_tokens)
    vague = compare_results(few, _synthetic("lm", spiked, few_correct, few_tokens))
    m = vague.metrics["loss"]
    assert m.relative_change == pytest.approx(0.5) and m.ci_low == 0.0
    assert m.status == "worse_not_significant" and vague.passed


def test_bootstrap_is_seeded_and_matches_a_loop(bag: LoadedModel, trained: nn.Module) -> None:
    loader = make_dataloader(task_dataset(bag.task, "test"), 16)
    result = compare_models(trained, bag.new_model(), bag.adapter, bag.task, None, loader, seed=5)
    again = compare_models(trained, bag.new_model(), bag.adapter, bag.task, None, loader, seed=5)
    assert result.to_dict() == again.to_dict()
    base, cand = result.baseline, result.candidate
    rng = np.random.default_rng(5)
    n = base.n_examples
    diffs = []
    for _ in range(200):
        idx = rng.integers(0, n, size=n)
        diffs.append(
            cand.per_example["correct"][idx].mean() - base.per_example["correct"][idx].mean()
        )
    low, high = np.quantile(diffs, [0.025, 0.975])
    vector = paired_bootstrap(base, cand, n_bootstrap=200, seed=5)["accuracy"]
    assert vector == pytest.approx((low, high))


def test_unpaired_evaluations_and_bad_settings_are_refused(
    bag: LoadedModel, trained: nn.Module
) -> None:
    result = compare_models(trained, bag.new_model(), bag.adapter, bag.task)
    shorter = EvalResult(
        **{**result.candidate.__dict__, "n_examples": 3},  # type: ignore[arg-type]
    )
    with pytest.raises(EvaluationError, match="not paired"):
        compare_results(result.baseline, shorter)
    shuffled = dict(result.candidate.per_example)
    shuffled["label"] = shuffled["label"][::-1].copy()
    other = EvalResult(**{**result.candidate.__dict__, "per_example": shuffled})  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="examples differ"):
        compare_results(result.baseline, other)
    with pytest.raises(EvaluationError, match="tolerance"):
        compare_results(result.baseline, result.candidate, tolerance=1.5)
    with pytest.raises(EvaluationError, match="primary metric 'bleu'"):
        compare_results(result.baseline, result.candidate, primary_metric="bleu")
