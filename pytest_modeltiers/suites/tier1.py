"""Tier 1: is the model wired right?

Each test draws inputs (a deterministic sweep where the issue asks for every shape, Hypothesis
where a search with shrinking finds more), calls one check from ``checks.tier1`` and asserts on
its ``CheckResult``. The checks restore the model's mode and gradients, so one fresh model per
test serves all of its examples. Tests whose checks all run in eval mode put their model in eval
mode first: the checks then find it there and skip switching it for every example.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from pytest_modeltiers.checks import tier1
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import DEFAULT_SEQ_LEN, make_batch
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.settings import Settings
from pytest_modeltiers.strategies import batches
from pytest_modeltiers.suites.support import expect

pytestmark = pytest.mark.tier1

Batch = dict[str, torch.Tensor]
REFERENCE_SEQ_LEN = 64


def _reference_len(task: TaskSpec, cap: int = REFERENCE_SEQ_LEN) -> int | None:
    return min(cap, task.max_seq_len) if task.max_seq_len else None


def _shape_sweep(task: TaskSpec, max_batch: int) -> Iterator[Batch]:
    """Every batch size from 1 to ``max_batch`` and every sequence length from 1 up (decoder
    lengths from the top down); for images, every batch size.

    The first ``max_batch`` lengths take every batch size once, shifted so that no batch size
    equals its length (a model that confuses the batch and time dimensions passes when they are
    equal). Longer lengths use a batch of two, the smallest batch in which one row can disturb
    another. Large batches at long lengths are left to the Hypothesis draws and to the other
    checks' reference batches (``max_batch`` x 64), which halves the sweep's cost.
    """
    if task.family == "vision":
        for size in range(1, max_batch + 1):
            yield make_batch(task, size, seed=size)
        return
    longest = task.max_seq_len or 1
    longest_target = task.max_target_len or longest

    def batch(size: int, length: int) -> Batch:
        target = max(1, longest_target - (length - 1) % longest_target)
        return make_batch(task, size, length, target_len=target, seed=length * 1000 + size)

    for length in range(1, longest + 1):
        yield batch(length % max_batch + 1 if length <= max_batch else min(2, max_batch), length)
    sizes_left = {1, *range(longest + 2, max_batch + 1)} if longest < max_batch else set()
    for size in sorted(sizes_left):
        yield batch(size, longest)


def _edge_batches(task: TaskSpec, max_batch: int) -> Iterator[Batch]:
    """Inputs at the ends of the input space: the first and last token id, the extreme pixels."""
    from pytest_modeltiers.models.batches import pixel_range

    batch = make_batch(task, max_batch, _reference_len(task), seed=0)
    if task.family == "vision":
        low, high = pixel_range(task)
        for value in (low, high):
            yield {**batch, "pixel_values": torch.full_like(batch["pixel_values"], value)}
        return
    for token in (0, (task.vocab_size or 1) - 1):
        ids = torch.full_like(batch["input_ids"], token)
        edge = {**batch, "input_ids": ids}
        if task.family == "lm":
            edge["labels"] = ids.clone()
        yield edge


def test_shape_robustness(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Every batch size and sequence length gives the output shape the task promises."""
    model.eval()
    max_batch = modeltiers_settings.max_batch_size
    for batch in _shape_sweep(task_spec, max_batch):
        expect(
            request, modeltiers_check, tier1.check_shape_robustness(model, adapter, batch), batch
        )

    @given(batch=batches(task_spec, max_batch_size=max_batch, padding=False))
    def any_shape(batch: Batch) -> None:
        result = tier1.check_shape_robustness(model, adapter, batch)
        expect(request, modeltiers_check, result, batch)

    any_shape()


def test_output_finite(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """No NaN or Inf for any input, the extreme token ids and pixel values included."""
    model.eval()
    max_batch = modeltiers_settings.max_batch_size
    for batch in _edge_batches(task_spec, max_batch):
        expect(request, modeltiers_check, tier1.check_output_finite(model, adapter, batch), batch)

    @given(batch=batches(task_spec, max_batch_size=max_batch))
    def any_input(batch: Batch) -> None:
        expect(request, modeltiers_check, tier1.check_output_finite(model, adapter, batch), batch)

    any_input()


def test_gradient_flow(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """One backward pass of the task loss reaches every trainable parameter, finite and non-zero,
    on an unpadded batch and, for models that take ``attention_mask``, on a padded one."""
    length = _reference_len(task_spec, 16)
    expected = modeltiers_settings.expect_no_grad
    batch = make_batch(task_spec, 2, length, seed=0)
    result = tier1.check_gradient_flow(model, adapter, batch, expected_unused=expected)
    expect(request, modeltiers_check, result, batch)
    padded = _padded_batch(task_spec, length)
    if padded is not None and tier1.takes_attention_mask(model, adapter, padded):
        result = tier1.check_gradient_flow(model, adapter, padded, expected_unused=expected)
        expect(request, modeltiers_check, result, padded)


def _padded_batch(task: TaskSpec, length: int | None) -> Batch | None:
    """Two rows of ``length`` whose last quarter is padding (mask 0), targets too for seq2seq.

    An operation over zeroed pad positions can have a finite forward and a NaN gradient (a norm
    written by hand), which no unpadded batch shows. None for images and one-token sequences.
    """
    if task.family == "vision" or length is None or length < 2:
        return None
    target_len = target_pad_to = None
    if task.family == "seq2seq":
        target = min(DEFAULT_SEQ_LEN, task.max_target_len or DEFAULT_SEQ_LEN)
        if target >= 2:
            target_len, target_pad_to = target - max(1, target // 4), target
    return make_batch(
        task,
        2,
        length - max(1, length // 4),
        pad_to=length,
        target_len=target_len,
        target_pad_to=target_pad_to,
        seed=0,
    )


def test_output_stability(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Eval mode is deterministic; outputs neither collapse across inputs nor explode."""
    size = max(2, min(4, modeltiers_settings.max_batch_size))
    inputs = [make_batch(task_spec, size, _reference_len(task_spec, 16), seed=s) for s in range(4)]
    result = tier1.check_output_stability(model, adapter, inputs)
    expect(request, modeltiers_check, result, inputs[0])


def test_batch_independence(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Each example's output is the same alone as inside a batch."""
    model.eval()
    max_batch = max(2, modeltiers_settings.max_batch_size)

    @given(batch=batches(task_spec, max_batch_size=max_batch, min_batch_size=2))
    def any_batch(batch: Batch) -> None:
        result = tier1.check_batch_independence(model, adapter, batch)
        expect(request, modeltiers_check, result, batch)

    any_batch()


def test_causal_masking(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Changing tokens after position t never changes the outputs up to t (decoders only)."""
    model.eval()
    probe = make_batch(task_spec, 1, _reference_len(task_spec, 8), seed=0)
    expect(request, modeltiers_check, tier1.check_causal_masking(model, adapter, probe, position=0))
    max_batch = modeltiers_settings.max_batch_size

    @given(
        batch=batches(task_spec, max_batch_size=max_batch, min_seq_len=2, padding=False),
        data=st.data(),
    )
    def any_prefix(batch: Batch, data: st.DataObject) -> None:
        length = _causal_length(task_spec, batch)
        assume(length >= 2)
        position = data.draw(st.integers(0, length - 2), label="position")
        result = tier1.check_causal_masking(model, adapter, batch, position=position)
        expect(request, modeltiers_check, result, batch)

    any_prefix()


def _causal_length(task: TaskSpec, batch: Batch) -> int:
    key = "labels" if task.family == "seq2seq" else "input_ids"
    return int(batch[key].shape[1])


def test_padding_invariance(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Right padding with mask 0 leaves the outputs of real positions unchanged."""
    model.eval()
    probe = make_batch(task_spec, 1, _reference_len(task_spec, 8), seed=0)
    expect(request, modeltiers_check, tier1.check_padding_invariance(model, adapter, probe, pad=1))
    longest = task_spec.max_seq_len or 2
    max_batch = modeltiers_settings.max_batch_size

    @given(
        batch=batches(
            task_spec, max_batch_size=max_batch, max_seq_len=max(1, longest - 4), padding=False
        ),
        pad=st.integers(1, 4),
    )
    def any_padding(batch: Batch, pad: int) -> None:
        result = tier1.check_padding_invariance(model, adapter, batch, pad=pad)
        expect(request, modeltiers_check, result, batch)

    any_padding()


def test_input_immutability(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """``forward`` never modifies its input tensors, in eval or in train mode."""
    batch = make_batch(task_spec, 2, _reference_len(task_spec, 16), seed=0)
    expect(request, modeltiers_check, tier1.check_input_immutability(model, adapter, batch), batch)


def test_parameter_initialization(
    request: pytest.FixtureRequest, model: nn.Module, modeltiers_check: CheckRecorder
) -> None:
    """No NaN/Inf and no extreme spread in the weights; zero matrices are reported as warnings."""
    expect(request, modeltiers_check, tier1.check_parameter_initialization(model))


def test_memory_footprint(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Parameter, buffer and peak activation memory of a reference batch, within the budget."""
    batch = make_batch(task_spec, modeltiers_settings.max_batch_size, _reference_len(task_spec))
    budget = modeltiers_settings.memory_budget
    result = tier1.check_memory_footprint(model, adapter, batch, budget_mb=budget)
    expect(request, modeltiers_check, result, batch)


def test_memory_retention(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Memory kept alive after repeated train steps and eval forwards does not grow per call."""
    batch = make_batch(task_spec, 2, _reference_len(task_spec, 16), seed=0)
    expect(request, modeltiers_check, tier1.check_memory_retention(model, adapter, batch), batch)


def test_inference_speed(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Median and p95 latency and throughput after warm-up, within the budget."""
    batch = make_batch(task_spec, 1, _reference_len(task_spec))
    budget = modeltiers_settings.latency_budget
    result = tier1.check_inference_speed(model, adapter, batch, budget_ms=budget)
    expect(request, modeltiers_check, result, batch)
