"""Tier 2: what does the model do inside?

Attention tests read the maps of the forward the model really runs (``analysis.attention_maps``)
and check properties every correct attention has; the health test measures and is judged only
against a bound the user sets. Attribution tests check properties of integrated gradients
(completeness, locality) that hold for every correct model; the robustness test measures
(noise agreement, FGSM radius, clean accuracy) and is judged only against the user's bounds.
A test that does not apply (no attention in a CNN, no causal rule for an encoder) skips with
the reason, so the report never counts it as passed.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from torch import nn

from pytest_modeltiers.analysis.attention_maps import AttentionReader
from pytest_modeltiers.analysis.robustness import initialisation
from pytest_modeltiers.checks import tier2_attribution, tier2_robustness
from pytest_modeltiers.checks.tier2_attention import (
    check_attention_causality,
    check_attention_health,
    check_attention_normalization,
    check_attention_padding,
)
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.datasets import load_dataset_file, task_dataset
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadedModel
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.settings import Settings
from pytest_modeltiers.strategies import batches
from pytest_modeltiers.suites.support import expect

pytestmark = pytest.mark.tier2

Batch = dict[str, torch.Tensor]
SOURCE_LEN = 12
TARGET_LEN = 9


def _lengths(task: TaskSpec) -> tuple[int | None, int | None]:
    """Source and target lengths for the attention probes: different from each other, so that
    a seq2seq model's encoder, decoder and cross attention tell apart by their shapes."""
    if task.family == "vision":
        return None, None
    source = min(SOURCE_LEN, task.max_seq_len or SOURCE_LEN)
    target = min(TARGET_LEN, task.max_target_len or TARGET_LEN)
    if task.family == "seq2seq" and target == source:
        target = max(1, target - 1) if target > 1 else target
    return source, target


def _probe(task: TaskSpec, size: int, *, padded: bool = False, seed: int = 0) -> Batch:
    source, target = _lengths(task)
    if task.family == "vision" or source is None:
        return make_batch(task, size, seed=seed)
    if padded and source >= 2:
        return make_batch(
            task, size, source - max(1, source // 3), pad_to=source, target_len=target, seed=seed
        )
    return make_batch(task, size, source, target_len=target, seed=seed)


def test_attention_normalization(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Every attention row of a real query is finite, non-negative and sums to 1."""
    model.eval()
    reader = AttentionReader(model, adapter)
    probe = _probe(task_spec, 2, padded=True)
    expect(
        request,
        modeltiers_check,
        check_attention_normalization(reader, probe),
        probe,
    )

    @given(batch=batches(task_spec, max_batch_size=modeltiers_settings.max_batch_size))
    def any_batch(batch: Batch) -> None:
        result = check_attention_normalization(reader, batch)
        expect(request, modeltiers_check, result, batch)

    any_batch()


def test_attention_causality(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """A decoder's self-attention puts zero weight on every later key, in every layer."""
    model.eval()
    reader = AttentionReader(model, adapter)
    for batch in (_probe(task_spec, 2), _probe(task_spec, 2, padded=True, seed=1)):
        result = check_attention_causality(reader, batch)
        expect(request, modeltiers_check, result, batch)


def test_attention_padding(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Keys at padding positions (attention_mask 0) get zero weight from every real query.

    A decoder's causal mask already hides right padding from the real queries before it, so
    decoders are also given left padding, where only the attention mask can hide it.
    """
    model.eval()
    reader = AttentionReader(model, adapter)
    batch = _probe(task_spec, 2, padded=True)
    expect(request, modeltiers_check, check_attention_padding(reader, batch), batch)
    if task_spec.family == "lm":
        left = _left_padded(batch)
        expect(request, modeltiers_check, check_attention_padding(reader, left), left)


def _left_padded(batch: Batch) -> Batch:
    """The right-padded ``batch`` (every row with the same padding) with its padding in front."""
    pad = int((batch["attention_mask"][0] == 0).sum())
    return {key: torch.roll(value, shifts=pad, dims=1) for key, value in batch.items()}


def test_attention_health(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Entropy per layer and head, dead and one-key heads: recorded, judged only against
    --tier2-max-dead-heads."""
    model.eval()
    reader = AttentionReader(model, adapter)
    probes = [_probe(task_spec, 4, seed=seed) for seed in range(2)]
    result = check_attention_health(
        reader, probes, max_dead_share=modeltiers_settings.tier2_max_dead_heads
    )
    expect(request, modeltiers_check, result, probes[0])


# --------------------------------------------------------------------------- attribution


def test_attribution_completeness(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Integrated gradients add up to f(x) - f(baseline); a model whose output path is not
    differentiable fails naming the layer where the gradient stops."""
    model.eval()
    for seed, batch in enumerate((_probe(task_spec, 2, padded=True), _probe(task_spec, 2, seed=1))):
        result = tier2_attribution.check_attribution_completeness(model, adapter, batch, seed=seed)
        expect(request, modeltiers_check, result, batch)


def test_attribution_locality(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """A decoder's logit at position t owes exactly nothing to later tokens, and no prediction
    owes anything to padding when the model takes attention_mask."""
    model.eval()
    batch = _probe(task_spec, 2, padded=True)
    for seed in range(2):
        result = tier2_attribution.check_attribution_locality(model, adapter, batch, seed=seed)
        expect(request, modeltiers_check, result, batch)


# --------------------------------------------------------------------------- robustness

#: Labelled examples robustness is measured on.
ROBUSTNESS_EXAMPLES = 16


def _robustness_data(task: TaskSpec, eval_data: str | None) -> tuple[Batch, str]:
    """The first labelled examples of --eval-data, else of the task's shipped validation split."""
    if eval_data:
        dataset = load_dataset_file(eval_data, task)
        where = f"the first examples of {eval_data}"
    else:
        dataset = task_dataset(task, "validation", size=ROBUSTNESS_EXAMPLES)
        where = f"the {task.name} validation split"
    count = min(ROBUSTNESS_EXAMPLES, len(dataset))
    batch = {key: value[:count] for key, value in dataset.tensors.items()}
    return batch, f"{count} examples of {where}"


def test_robustness(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    modeltiers_loaded_model: LoadedModel,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Agreement under input noise, FGSM robustness radius and clean accuracy: recorded, judged
    only against --tier2-min-agreement / --tier2-min-radius, never on a randomly initialised
    model."""
    model.eval()
    batch, data = _robustness_data(modeltiers_loaded_model.task, modeltiers_settings.eval_data)
    init = initialisation(modeltiers_loaded_model.build, model)
    result = tier2_robustness.check_robustness(
        model,
        adapter,
        batch,
        init=init,
        data=data,
        min_agreement=modeltiers_settings.tier2_min_agreement,
        min_radius=modeltiers_settings.tier2_min_radius,
    )
    expect(request, modeltiers_check, result, batch)
