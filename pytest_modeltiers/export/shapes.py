"""The input shapes an artifact is checked at: a fixed sweep of the extremes, plus drawn ones.

PYTEST_DONT_REWRITE

Parity checked at the export example's shape only is the top complaint about export tools: a
dimension baked into the graph passes there and fails everywhere else. The fixed sweep covers
what breaks artifacts: batch 1 (the 0/1 specialisation trap), the largest batch, odd sizes, the
shortest and longest sequence (and target, and image size where the task allows others), and
the example shape itself. ``shape_strategy`` draws further shapes across the same ranges for
Hypothesis, which shrinks a failure to the smallest shape that shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.export.signature import ExportSignature
from pytest_modeltiers.models.batches import make_batch

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["SweepShape", "fixed_sweep", "latency_shapes", "shape_strategy", "sweep_batch"]

#: Longest sequence drawn when the task sets no ``max_seq_len``.
UNBOUNDED_SEQ_CAP = 64
#: Sequence length of the short latency shape (capped at the task's maximum).
LATENCY_SHORT_SEQ = 16


@dataclass(frozen=True)
class SweepShape:
    """One input shape: batch size and, where they apply, sequence, target and image size."""

    batch_size: int
    seq_len: int | None = None
    target_len: int | None = None
    image_hw: int | None = None

    def describe(self) -> str:
        parts = [f"batch {self.batch_size}"]
        if self.seq_len is not None:
            parts.append(f"sequence {self.seq_len}")
        if self.target_len is not None:
            parts.append(f"target {self.target_len}")
        if self.image_hw is not None:
            parts.append(f"image {self.image_hw}x{self.image_hw}")
        return ", ".join(parts)


def _limit(signature: ExportSignature, axis: str, fallback: int) -> tuple[int, int]:
    low, high = signature.ranges.get(axis, (1, None))
    return low, fallback if high is None else high


def _example(signature: ExportSignature, axis: str) -> int | None:
    for spec in signature.inputs:
        for dim, name in spec.axes.items():
            if name == axis:
                return spec.shape[dim]
    return None


def fixed_sweep(task: TaskSpec, signature: ExportSignature, max_batch: int) -> list[SweepShape]:
    """The deterministic shapes every artifact is checked at."""
    max_batch = max(1, max_batch)
    odd_batch = min(3, max_batch)
    example_batch = min(_example(signature, "batch") or 2, max_batch)
    shapes: list[SweepShape] = []
    if task.family == "vision":
        image = signature.ranges.get("height")
        sizes: list[int | None]
        if image is None:
            sizes = [None]
        else:
            sizes = [image[0], image[1]] if image[1] is not None else [image[0]]
        for hw in sizes:
            for size in (1, max_batch, odd_batch, example_batch):
                shapes.append(SweepShape(size, image_hw=hw))
        return list(dict.fromkeys(shapes))
    low, high = _limit(signature, "sequence", task.max_seq_len or UNBOUNDED_SEQ_CAP)
    example_len = _example(signature, "sequence") or high
    odd_len = max(low, min(high, (high // 2) | 1))
    pairs = [
        (1, low),
        (max_batch, high),
        (1, high),
        (max_batch, low),
        (odd_batch, odd_len),
        (example_batch, example_len),
        (example_batch, min(high, example_len + 1)),
    ]
    if task.family != "seq2seq":
        shapes = [SweepShape(b, t) for b, t in pairs]
    else:
        t_low, t_high = _limit(signature, "target", task.max_target_len or UNBOUNDED_SEQ_CAP)
        example_target = _example(signature, "target") or t_high
        targets = [t_low, t_high, t_low, t_high, max(t_low, min(t_high, (t_high // 2) | 1))]
        targets += [example_target, min(t_high, example_target + 1)]
        shapes = [SweepShape(b, t, d) for (b, t), d in zip(pairs, targets, strict=True)]
    return list(dict.fromkeys(shapes))


def shape_strategy(
    task: TaskSpec, signature: ExportSignature, max_batch: int
) -> st.SearchStrategy[SweepShape]:
    """Shapes drawn uniformly across the task's ranges (shrinking towards the smallest).

    Hypothesis is imported here, not with the module: the library and CLI paths that use only
    the fixed sweep draw nothing."""
    from hypothesis import strategies as st

    batch = st.integers(1, max(1, max_batch))
    if task.family == "vision":
        image = signature.ranges.get("height")
        if image is None:
            return st.builds(SweepShape, batch)
        low, high = image[0], image[1] if image[1] is not None else image[0]
        return st.builds(SweepShape, batch, image_hw=st.integers(low, high))
    low, high = _limit(signature, "sequence", task.max_seq_len or UNBOUNDED_SEQ_CAP)
    if task.family != "seq2seq":
        return st.builds(SweepShape, batch, st.integers(low, high))
    t_low, t_high = _limit(signature, "target", task.max_target_len or UNBOUNDED_SEQ_CAP)
    return st.builds(SweepShape, batch, st.integers(low, high), st.integers(t_low, t_high))


def sweep_batch(task: TaskSpec, shape: SweepShape, *, seed: int = 0) -> dict[str, Any]:
    """A deterministic raw batch of ``shape`` (no padding)."""
    image = None if shape.image_hw is None else (shape.image_hw, shape.image_hw)
    return make_batch(
        task,
        shape.batch_size,
        shape.seq_len,
        target_len=shape.target_len,
        image_hw=image,
        seed=seed,
    )


def latency_shapes(task: TaskSpec, max_batch: int) -> list[SweepShape]:
    """The two shapes latency is measured at: one short example, and the largest batch at the
    longest sequence (for images: batch 1 and the largest batch)."""
    longest = task.max_seq_len
    short = min(LATENCY_SHORT_SEQ, longest) if longest else LATENCY_SHORT_SEQ
    long = longest or LATENCY_SHORT_SEQ * 4
    if task.family == "vision":
        shapes = [SweepShape(1), SweepShape(max(1, max_batch))]
    elif task.family == "seq2seq":
        target = task.max_target_len or long
        shapes = [SweepShape(1, short, min(short, target)), SweepShape(max_batch, long, target)]
    else:
        shapes = [SweepShape(1, short), SweepShape(max(1, max_batch), long)]
    return list(dict.fromkeys(shapes))


def latency_inputs(
    task: TaskSpec, adapter: TaskAdapter, max_batch: int
) -> list[tuple[str, dict[str, Any]]]:
    """``(label, prepared inputs)`` for each of ``latency_shapes``."""
    return [
        (shape.describe(), adapter.prepare_inputs(sweep_batch(task, shape), task))
        for shape in latency_shapes(task, max_batch)
    ]
