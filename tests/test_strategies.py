"""Property tests: the Hypothesis strategies draw valid batches and shrink to small ones."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.models.batches import pixel_range
from pytest_modeltiers.strategies import batch_shapes, batches

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

LM = get_builtin_task("lm_tiny").with_vocab_size(23).merged({"input_schema": {"max_seq_len": 12}})
CLS = get_builtin_task("cls_tiny").with_vocab_size(17).merged({"input_schema": {"max_seq_len": 9}})
S2S = (
    get_builtin_task("seq2seq_tiny")
    .with_vocab_size(19)
    .merged({"input_schema": {"max_seq_len": 10, "max_target_len": 6}})
)
VISION = get_builtin_task("vision_tiny")
TEXT_TASKS = [LM, CLS, S2S]


def _right_padded(mask: torch.Tensor) -> bool:
    """Each row is ones then zeros, with at least one real token."""
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    return bool((lengths >= 1).all()) and torch.equal(mask, (positions < lengths[:, None]).long())


def check_text_batch(task: TaskSpec, batch: dict[str, torch.Tensor], max_batch: int) -> None:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert task.vocab_size is not None and task.max_seq_len is not None
    assert 1 <= ids.shape[0] <= max_batch
    assert 1 <= ids.shape[1] <= task.max_seq_len
    assert ids.dtype == torch.long and mask.shape == ids.shape
    assert ids.min() >= 0 and ids.max() < task.vocab_size
    assert _right_padded(mask)
    labels = batch["labels"]
    if task.family == "lm":
        assert torch.equal(labels, ids)
    elif task.family == "classification":
        assert labels.shape == ids.shape[:1]
        assert task.num_classes is not None
        assert labels.min() >= 0 and labels.max() < task.num_classes
    else:
        assert task.max_target_len is not None
        assert 1 <= labels.shape[1] <= task.max_target_len
        assert labels.min() >= 0 and labels.max() < task.vocab_size
        assert _right_padded(batch["decoder_attention_mask"])
        assert "decoder_input_ids" not in batch


@pytest.mark.parametrize("task", TEXT_TASKS, ids=lambda t: t.name)
def test_text_batches_respect_the_task(task: TaskSpec) -> None:
    @FAST
    @given(batch=batches(task, max_batch_size=3))
    def check(batch: dict[str, torch.Tensor]) -> None:
        check_text_batch(task, batch, 3)

    check()


def test_image_batches_respect_the_task() -> None:
    low, high = pixel_range(VISION)

    @FAST
    @given(batch=batches(VISION, max_batch_size=4))
    def check(batch: dict[str, torch.Tensor]) -> None:
        pixels = batch["pixel_values"]
        assert 1 <= pixels.shape[0] <= 4
        assert pixels.shape[1:] == (3, 32, 32) and pixels.dtype == torch.float32
        assert pixels.min() >= low and pixels.max() <= high
        assert batch["labels"].min() >= 0 and batch["labels"].max() < 4

    check()


@FAST
@given(shape=batch_shapes(S2S, max_batch_size=5))
def test_batch_shapes_stay_within_limits(shape: dict[str, int]) -> None:
    assert set(shape) == {"batch_size", "seq_len", "target_len"}
    assert 1 <= shape["batch_size"] <= 5
    assert 1 <= shape["seq_len"] <= 10
    assert 1 <= shape["target_len"] <= 6


@FAST
@given(shape=batch_shapes(LM, min_seq_len=3, max_seq_len=5))
def test_batch_shapes_honour_explicit_bounds(shape: dict[str, int]) -> None:
    assert 3 <= shape["seq_len"] <= 5


def test_vision_shapes_only_vary_the_batch() -> None:
    shape = find(batch_shapes(VISION), lambda s: True)
    assert shape == {"batch_size": 1}


def test_vocabulary_edges_are_drawn() -> None:
    def has_edges(b: dict[str, torch.Tensor]) -> bool:
        real = b["input_ids"][b["attention_mask"].bool()]
        return bool((real == 0).any() and (real == 22).any())

    batch = find(batches(LM), has_edges, settings=settings(max_examples=200, deadline=None))
    assert has_edges(batch)


def test_pixel_edges_are_drawn() -> None:
    def has_edges(b: dict[str, torch.Tensor]) -> bool:
        pixels = b["pixel_values"]
        return all(bool((pixels == v).any()) for v in (-1.0, 0.0, 1.0))

    batch = find(batches(VISION), has_edges, settings=settings(max_examples=200, deadline=None))
    assert has_edges(batch)


def test_failures_shrink_to_the_smallest_shape() -> None:
    batch = find(
        batches(LM, max_batch_size=8),
        lambda b: b["input_ids"].shape[1] >= 5,
        settings=settings(max_examples=200, deadline=None),
    )
    assert batch["input_ids"].shape == (1, 5)


def test_strategy_without_vocab_explains_the_fix() -> None:
    with pytest.raises(AdapterError, match="vocab_size=N"):
        batches(get_builtin_task("lm_tiny"))  # fails when built, before any draw


def test_bad_bounds_fail_when_the_strategy_is_built() -> None:
    with pytest.raises(AdapterError, match=r"min_seq_len=20 must be in \[1, 12\]"):
        batches(LM, min_seq_len=20)
    with pytest.raises(AdapterError, match="max_batch_size=0"):
        batch_shapes(VISION, max_batch_size=0)
    with pytest.raises(AdapterError, match=r"min_batch_size=3 must be in \[1, max_batch_size=2\]"):
        batches(LM, max_batch_size=2, min_batch_size=3)


@FAST
@given(batch=batches(LM, max_batch_size=4, min_batch_size=2))
def test_min_batch_size_is_a_lower_bound(batch: dict[str, torch.Tensor]) -> None:
    assert 2 <= batch["input_ids"].shape[0] <= 4


def test_failures_shrink_to_the_smallest_allowed_batch() -> None:
    batch = find(
        batches(VISION, max_batch_size=8, min_batch_size=2),
        lambda b: True,
        settings=settings(max_examples=50, deadline=None),
    )
    assert batch["pixel_values"].shape[0] == 2


@FAST
@given(batch=batches(S2S, padding=False))
def test_unpadded_batches_have_no_padding(batch: dict[str, torch.Tensor]) -> None:
    assert batch["attention_mask"].all() and batch["decoder_attention_mask"].all()


def test_padding_is_drawn() -> None:
    batch = find(
        batches(CLS),
        lambda b: not bool(b["attention_mask"].all()),
        settings=settings(max_examples=200, deadline=None),
    )
    assert batch["attention_mask"].shape[1] <= 9


@pytest.mark.parametrize("task", [*TEXT_TASKS, VISION], ids=lambda t: t.name)
def test_drawn_batches_run_through_the_adapter(task: TaskSpec) -> None:
    """Every drawn batch is usable as is: prepare_inputs and loss accept it."""
    adapter = get_adapter(task)

    def fake_logits(batch: dict[str, Any]) -> torch.Tensor:
        prepared = adapter.prepare_inputs(batch)
        if task.family == "lm":
            return torch.zeros(*prepared["input_ids"].shape, 23)
        if task.family == "seq2seq":
            return torch.zeros(*prepared["decoder_input_ids"].shape, 19)
        return torch.zeros(prepared["labels"].shape[0], task.num_classes or 0)

    @FAST
    @given(batch=batches(task, max_batch_size=2, min_seq_len=2))
    def check(batch: dict[str, torch.Tensor]) -> None:
        loss = adapter.loss(fake_logits(batch), batch)
        assert torch.isfinite(loss)

    check()
