"""Tier 3: does the model train?

Each test builds small deterministic batches (``make_batch``: 4 examples of up to 16 tokens, or
4 images, no padding), calls one check from ``checks.tier3`` and asserts on its
``CheckResult``. The checks train copies on the lean loop (no Lightning), so the ``model``
fixture is left untouched; the whole tier takes about a second on a tiny model on CPU.
``test_resume_equivalence`` reloads into a fresh instance from ``model_factory``, as a restarted
process would; ``test_seed_reproducibility`` builds the model twice from it.
``test_training_run`` judges the session's one real ``run_training`` (the ``training_run``
fixture: Lightning, the task's shipped dataset, a few seconds on CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pytest_modeltiers.checks import tier3
from pytest_modeltiers.checks.tier3_run import TrainingOutcome
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.settings import Settings
from pytest_modeltiers.suites.support import expect

pytestmark = pytest.mark.tier3

Batch = dict[str, torch.Tensor]
BATCH_SIZE = 4
SEQ_LEN = 16
#: Steps of the resume and seed runs: enough for AdamW's moments and the schedule to matter.
STEPS = 4


def _batch(task: TaskSpec, seed: int) -> Batch:
    length = min(SEQ_LEN, task.max_seq_len) if task.max_seq_len else None
    return make_batch(task, BATCH_SIZE, length, seed=seed)


def _overfit_steps(settings: Settings) -> int:
    """``--modeltiers-overfit-steps``, else the check's own default."""
    steps = settings.overfit_steps
    return tier3.OVERFIT_MAX_STEPS if steps is None else steps


def test_overfit_single_batch(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """The loss on one fixed batch halves within a bounded number of AdamW steps."""
    batch = _batch(task_spec, 0)
    result = tier3.check_overfit_single_batch(
        model, adapter, batch, max_steps=_overfit_steps(modeltiers_settings)
    )
    expect(request, modeltiers_check, result, batch)


def test_gradient_accumulation_equivalence(
    request: pytest.FixtureRequest,
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Two accumulated micro-batches give the update of one batch twice their size."""
    batch = _batch(task_spec, 0)
    result = tier3.check_gradient_accumulation_equivalence(model, adapter, batch, micro_batches=2)
    expect(request, modeltiers_check, result, batch)


def test_resume_equivalence(
    request: pytest.FixtureRequest,
    model: nn.Module,
    model_factory: Callable[[], nn.Module],
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Training, a weights_only checkpoint, a fresh model and more training = training straight."""
    batches = [_batch(task_spec, seed) for seed in range(STEPS)]
    result = tier3.check_resume_equivalence(model, adapter, batches, factory=model_factory)
    expect(request, modeltiers_check, result, batches[0])


def test_seed_reproducibility(
    request: pytest.FixtureRequest,
    model: nn.Module,
    model_factory: Callable[[], nn.Module],
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    modeltiers_check: CheckRecorder,
) -> None:
    """Two builds from the same seed start from the same weights; two training runs from the
    same seed give the same losses and parameters."""
    batches = [_batch(task_spec, seed) for seed in range(STEPS)]
    result = tier3.check_seed_reproducibility(model, adapter, batches, factory=model_factory)
    expect(request, modeltiers_check, result, batches[0])


def test_training_run(
    request: pytest.FixtureRequest,
    training_run: TrainingOutcome,
    modeltiers_check: CheckRecorder,
) -> None:
    """A short real run lowers the validation loss, logs to the DB, writes a safe checkpoint."""
    result = tier3.check_training_run(training_run)
    expect(request, modeltiers_check, result)
