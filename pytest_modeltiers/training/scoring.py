"""Loss and accuracy of one batch during training, with the weight an epoch mean needs.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.models.adapters import IGNORE_INDEX, TaskAdapter

__all__ = ["BatchScore", "score_batch"]


@dataclass(frozen=True)
class BatchScore:
    """One batch: the adapter's loss (a tensor, graph kept), what it averages over, hits."""

    loss: torch.Tensor
    count: int
    correct: int | None


def _scored_targets(adapter: TaskAdapter, batch: Mapping[str, Any]) -> torch.Tensor | None:
    """Targets aligned with the predictions, padding set to -100 (None: not a token task)."""
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor):
        return None
    task = adapter.task
    family = task.family
    labels = labels.long()
    if family == "lm":
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        elif task.pad_token_id is not None:
            labels = labels.masked_fill(labels == task.pad_token_id, IGNORE_INDEX)
        shift = bool((task.additional_config or {}).get("shift_labels", True))
        return labels[:, 1:] if shift else labels
    if family == "seq2seq":
        mask = batch.get("decoder_attention_mask")
        if isinstance(mask, torch.Tensor):
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        elif task.pad_token_id is not None:
            labels = labels.masked_fill(labels == task.pad_token_id, IGNORE_INDEX)
        return labels
    return labels


def score_batch(model: nn.Module, adapter: TaskAdapter, batch: Mapping[str, Any]) -> BatchScore:
    """Forward ``batch`` through the adapter and score it (the loss keeps its graph)."""
    raw = dict(batch)
    outputs = adapter.forward(model, raw)
    loss = adapter.loss(outputs, raw)
    loss = loss.mean() if loss.dim() else loss
    targets = _scored_targets(adapter, raw)
    family = adapter.task.family
    if targets is None or family not in ("lm", "seq2seq", "classification", "vision"):
        first = next((v for v in raw.values() if isinstance(v, torch.Tensor) and v.dim()), None)
        return BatchScore(loss, int(first.shape[0]) if first is not None else 1, None)
    with torch.no_grad():
        logits = adapter.get_logits(outputs, adapter.task, batch=raw).detach()
        if family == "lm" and logits.shape[1] == targets.shape[1] + 1:
            logits = logits[:, :-1]
        targets = targets.to(logits.device)
        scored = targets != IGNORE_INDEX
        count = int(scored.sum())
        hits = int(((logits.argmax(dim=-1) == targets) & scored).sum())
    return BatchScore(loss, max(count, 1), hits)
