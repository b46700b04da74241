"""The learning-rate schedule of a training run: warm-up, then constant, linear or cosine decay.

PYTEST_DONT_REWRITE

``lr_factor(step)`` multiplies the configured learning rate at optimizer step ``step``
(0-based), as ``torch.optim.lr_scheduler.LambdaLR`` expects. It is a small class rather than a
closure so that the scheduler's ``state_dict`` holds its settings as plain numbers and strings
(a checkpoint stays loadable with ``torch.load(weights_only=True)``) and so that it can be
tested without an optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_modeltiers.config.training import TrainingConfig

__all__ = ["LRSchedule", "schedule_for"]


@dataclass
class LRSchedule:
    """The factor applied to the base learning rate at each optimizer step."""

    kind: str
    total_steps: int
    warmup_steps: int
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine", "constant", "constant_with_warmup"):
            raise ValueError(f"unknown lr schedule {self.kind!r}")
        self.total_steps = max(1, int(self.total_steps))
        self.warmup_steps = 0 if self.kind == "constant" else max(0, int(self.warmup_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind in ("constant", "constant_with_warmup"):
            return 1.0
        remaining = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / remaining)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def schedule_for(config: TrainingConfig, total_steps: int) -> LRSchedule | None:
    """The schedule ``config`` asks for over ``total_steps`` optimizer steps (None: constant)."""
    if not config.use_lr_schedule:
        return None
    total = max(1, int(total_steps))
    warmup = (
        int(config.warmup_steps)
        if config.warmup_steps is not None
        else round(float(config.warmup_ratio) * total)
    )
    return LRSchedule(
        kind=str(config.lr_scheduler),
        total_steps=total,
        warmup_steps=min(warmup, total),
        min_lr_ratio=float(config.min_lr_ratio),
    )
