"""User-style checks on whichever model ``--model`` names, with the plugin's fixtures.

Run, for example::

    pytest example_models/test_user_checks.py --model example_models/tiny_gpt.py -m tier1

``model``, ``adapter``, ``task_spec`` and ``sample_batch`` come from pytest-modeltiers; the
adapter calls the model the same way the built-in tiers do, so these tests work for every task.
"""

from __future__ import annotations

import pytest
import torch


def _expected_classes(task_spec):
    """The size of the last logits dimension the task promises."""
    if task_spec.family in ("classification", "vision"):
        return task_spec.num_classes
    return task_spec.vocab_size


@pytest.mark.tier1
def test_my_head(model, adapter, task_spec, sample_batch):
    """The output head has one logit per class (or per vocabulary entry)."""
    out = adapter.get_logits(adapter.forward(model, sample_batch), task_spec, batch=sample_batch)
    assert out.shape[-1] == _expected_classes(task_spec)
    assert out.shape[0] == next(iter(sample_batch.values())).shape[0]


@pytest.mark.tier1
def test_loss_is_finite_and_reaches_every_parameter(model, adapter, task_spec, sample_batch):
    """One backward pass from the task loss gives every trainable parameter a finite gradient."""
    model.zero_grad(set_to_none=True)
    loss = adapter.loss(adapter.forward(model, sample_batch), sample_batch, task_spec)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached: {missing}"
    model.zero_grad(set_to_none=True)


@pytest.mark.tier1
def test_predictions_are_valid_ids(model, adapter, task_spec, sample_batch):
    """Predicted classes or tokens lie inside the task's label space."""
    with torch.no_grad():
        outputs = adapter.forward(model, sample_batch)
    predicted = adapter.predict(outputs, task_spec, batch=sample_batch)
    assert predicted.dtype == torch.long
    assert int(predicted.min()) >= 0 and int(predicted.max()) < _expected_classes(task_spec)
