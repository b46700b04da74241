"""Robustness measurements: agreement under input noise, the FGSM radius, clean accuracy.

PYTEST_DONT_REWRITE

Text is perturbed in embedding space, where a small step has a meaning: the outputs of the
token embedding calls (found as attribution finds them) are replaced through forward hooks, and
each token's perturbation is scaled to that token's embedding norm. Images are perturbed in
pixel space, scaled to the task's pixel range and clipped to it. Only real tokens (mask 1) are
perturbed: padding is not part of the input.

The FGSM radius of an example is the smallest epsilon, in those units, for which one signed
gradient step (of the cross-entropy against the model's own prediction) changes the prediction;
found on a geometric grid, then refined by bisection.

Whether a model is randomly initialised is decided by building it again with every seed shifted:
weights drawn from the random number generator change, weights loaded from a checkpoint do not.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytest_modeltiers.analysis.attribution import (
    AttributionSource,
    EmbeddingPatch,
    Targets,
    attribution_sources,
    embedding_values,
)
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import pixel_range
from pytest_modeltiers.models.running import (
    forward_logits,
    model_device,
    preserved_model,
    to_device,
)

__all__ = [
    "EPSILONS",
    "NOISE_LEVELS",
    "InitState",
    "Perturbation",
    "clean_accuracy",
    "fgsm_radii",
    "initialisation",
    "noise_agreement",
]

Batch = dict[str, Any]
#: Noise levels: the perturbation's norm relative to each token embedding's norm (text), or the
#: noise's standard deviation relative to the pixel range (images).
NOISE_LEVELS = (0.01, 0.03, 0.1, 0.3)
#: Noise draws per example and level.
NOISE_DRAWS = 4
#: FGSM epsilons, in the same units: a geometric grid from 0.001 to 1 (ratio about 1.33).
EPSILONS = tuple(10 ** (-3 + 3 * k / 24) for k in range(25))
BISECTION_STEPS = 4
#: Rows per forward when many perturbed copies of a batch are evaluated.
ROWS_PER_FORWARD = 512


# --------------------------------------------------------------------------- perturbable input


@dataclass
class Perturbation:
    """The clean input of a batch in the space it is perturbed in, and how to run it.

    ``values`` holds one tensor per source (embedding call outputs, or the pixels);
    ``scales`` the size of a unit step per element (broadcastable), zero where nothing may move
    (padding); ``bounds`` the pixel range for images.
    """

    model: nn.Module
    adapter: TaskAdapter
    batch: Batch
    sources: list[AttributionSource]
    values: list[torch.Tensor]
    scales: list[torch.Tensor]
    bounds: tuple[float, float] | None

    @classmethod
    def of(cls, model: nn.Module, adapter: TaskAdapter, batch: Batch) -> Perturbation:
        prepared = to_device(adapter.prepare_inputs(dict(batch)), model_device(model))
        sources = attribution_sources(model, adapter, prepared)
        if sources[0].module is None:
            pixels = prepared[sources[0].key].detach().float()
            low, high = pixel_range(adapter.task)
            scale = torch.full((1,) * pixels.dim(), float(high - low), device=pixels.device)
            return cls(model, adapter, prepared, sources, [pixels], [scale], (low, high))
        with preserved_model(model, training=False):
            values = embedding_values(model, adapter, prepared, sources)
        scales = []
        for source, value in zip(sources, values, strict=True):
            rms = value.detach().float().norm(dim=-1, keepdim=True) / math.sqrt(value.shape[-1])
            mask = prepared.get(_mask_key(source.key))
            if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(value.shape[:2]):
                rms = rms * (mask != 0).unsqueeze(-1).to(rms.dtype)
            scales.append(rms.to(value.dtype))
        return cls(model, adapter, prepared, sources, values, scales, None)

    def clip(self, tensor: torch.Tensor) -> torch.Tensor:
        """A perturbed input kept inside the valid range (pixels only)."""
        return tensor if self.bounds is None else tensor.clamp(*self.bounds)

    @property
    def rows(self) -> int:
        return int(self.values[0].shape[0])

    def logits(self, tensors: Sequence[torch.Tensor], copies: int = 1) -> torch.Tensor:
        """The logits with the sources replaced by ``tensors`` (``copies`` stacked batches)."""
        batch = {
            k: v.repeat(copies, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor) else v
            for k, v in self.batch.items()
        }
        if self.bounds is not None:
            batch[self.sources[0].key] = tensors[0]
            return forward_logits(self.model, self.adapter, batch)
        patch = EmbeddingPatch(self.sources)
        patch.set(list(tensors))
        with patch.installed():
            return forward_logits(self.model, self.adapter, batch)


def _mask_key(key: str) -> str:
    return "decoder_attention_mask" if key == "decoder_input_ids" else "attention_mask"


def predictions(
    adapter: TaskAdapter, logits: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted ids and which of them count: every example, or every real sequence position."""
    predicted = logits.detach().argmax(dim=-1)
    if predicted.dim() == 1:
        return predicted, torch.ones_like(predicted, dtype=torch.bool)
    key = _mask_key("decoder_input_ids" if adapter.task.family == "seq2seq" else "input_ids")
    mask = batch.get(key)
    rows = int(predicted.shape[0])
    if isinstance(mask, torch.Tensor) and int(mask.shape[0]) and rows % int(mask.shape[0]) == 0:
        mask = mask.repeat(rows // int(mask.shape[0]), 1)
        if mask.shape == predicted.shape:
            return predicted, mask.to(predicted.device) != 0
    return predicted, torch.ones_like(predicted, dtype=torch.bool)


# --------------------------------------------------------------------------- measurements


def noise_agreement(
    perturbation: Perturbation,
    levels: Sequence[float] = NOISE_LEVELS,
    *,
    draws: int = NOISE_DRAWS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each noise level, the share of predictions unchanged under Gaussian input noise."""
    p = perturbation
    generator = torch.Generator().manual_seed(seed)
    results = []
    with preserved_model(p.model, training=False), torch.no_grad():
        clean_logits = p.logits(p.values)
        clean, counted = predictions(p.adapter, clean_logits, p.batch)
        copies = max(1, min(draws, ROWS_PER_FORWARD // max(1, p.rows)))
        for level in levels:
            agree = total = 0
            done = 0
            while done < draws:
                n = min(copies, draws - done)
                noisy = []
                for value, scale in zip(p.values, p.scales, strict=True):
                    stacked = value.repeat(n, *([1] * (value.dim() - 1)))
                    noise = torch.randn(stacked.shape, generator=generator).to(stacked)
                    step = (
                        scale.repeat(n, *([1] * (scale.dim() - 1))) if scale.shape[0] > 1 else scale
                    )
                    noisy.append(p.clip(stacked + level * step * noise))
                predicted, _ = predictions(p.adapter, p.logits(noisy, n), p.batch)
                reference = clean.repeat(n, *([1] * (clean.dim() - 1)))
                keep = counted.repeat(n, *([1] * (counted.dim() - 1)))
                agree += int(((predicted == reference) & keep).sum())
                total += int(keep.sum())
                done += n
            results.append(
                {"level": level, "agreement": agree / total if total else None, "compared": total}
            )
    return results


def fgsm_targets(perturbation: Perturbation) -> Targets:
    """What FGSM tries to flip: the predicted class, or the prediction at the last real
    position of the sequence the logits run over."""
    p = perturbation
    with preserved_model(p.model, training=False), torch.no_grad():
        logits = p.logits(p.values).detach().cpu()
    if logits.dim() == 2:
        return Targets(logits.argmax(dim=-1))
    key = "decoder_input_ids" if p.adapter.task.family == "seq2seq" else "input_ids"
    mask = p.batch.get(_mask_key(key))
    rows, length = int(logits.shape[0]), int(logits.shape[1])
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == (rows, length):
        real = (mask.detach().cpu() != 0).long()
        last = (real * torch.arange(length)).amax(dim=1)
    else:
        last = torch.full((rows,), length - 1, dtype=torch.long)
    indices = logits[torch.arange(rows), last].argmax(dim=-1)
    return Targets(indices, last, key)


def fgsm_radii(
    perturbation: Perturbation,
    targets: Targets,
    epsilons: Sequence[float] = EPSILONS,
    *,
    bisection_steps: int = BISECTION_STEPS,
) -> list[float | None]:
    """Per example, the smallest epsilon whose FGSM step flips its target prediction (None when
    no epsilon of the grid does)."""
    p = perturbation
    rows = p.rows
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserved_model(p.model, training=False))
        stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        with torch.enable_grad():
            leaves = [v.detach().clone().requires_grad_(True) for v in p.values]
            logits = p.logits(leaves)
            device = logits.device
            index = torch.arange(rows, device=device)
            positions = None if targets.positions is None else targets.positions.to(device)
            chosen = _rows_at(logits, index, positions)
            loss = F.cross_entropy(chosen.float(), targets.indices.to(device), reduction="sum")
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        directions = [
            torch.zeros_like(v) if g is None else g.sign() * s
            for v, g, s in zip(p.values, grads, p.scales, strict=True)
        ]
        stack.enter_context(torch.no_grad())

        def flipped(eps: torch.Tensor) -> torch.Tensor:
            """``eps`` is one epsilon per row of the stacked copies; flips per row."""
            copies = int(eps.shape[0]) // rows
            moved = []
            for value, direction in zip(p.values, directions, strict=True):
                shape = (-1,) + (1,) * (value.dim() - 1)
                stacked = value.repeat(copies, *([1] * (value.dim() - 1)))
                step = direction.repeat(copies, *([1] * (direction.dim() - 1)))
                moved.append(p.clip(stacked + eps.view(shape).to(stacked) * step))
            out = p.logits(moved, copies)
            at = torch.arange(out.shape[0], device=out.device)
            pos = None if positions is None else positions.repeat(copies)
            predicted = _rows_at(out, at, pos).argmax(dim=-1)
            return (predicted != targets.indices.to(out.device).repeat(copies)).cpu()

        grid = torch.tensor(list(epsilons), dtype=torch.float64)
        first: list[int | None] = [None] * rows
        per_forward = max(1, ROWS_PER_FORWARD // max(1, rows))
        for start in range(0, len(grid), per_forward):
            chunk = grid[start : start + per_forward]
            flips = flipped(chunk.repeat_interleave(rows)).view(len(chunk), rows)
            for row in range(rows):
                if first[row] is None and bool(flips[:, row].any()):
                    first[row] = start + int(flips[:, row].nonzero()[0])
            if all(f is not None for f in first):
                break
        low = torch.tensor([float(grid[f - 1]) if f else 0.0 for f in first])
        high = torch.tensor([float(grid[f]) if f is not None else math.inf for f in first])
        unresolved = torch.tensor([f is not None and f > 0 for f in first])
        for _ in range(bisection_steps):
            if not bool(unresolved.any()):
                break
            middle = torch.where(unresolved, (low * high).sqrt(), high.clamp(max=1.0))
            flips = flipped(middle)
            high = torch.where(unresolved & flips, middle, high)
            low = torch.where(unresolved & ~flips, middle, low)
    return [None if math.isinf(float(h)) else float(h) for h in high]


def _rows_at(
    logits: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor | None
) -> torch.Tensor:
    return logits[rows] if positions is None else logits[rows, positions]


def clean_accuracy(
    adapter: TaskAdapter, logits: torch.Tensor, batch: Batch
) -> tuple[float | None, int]:
    """The share of correct clean predictions against ``batch["labels"]`` and how many were
    compared: classes, the next token at real positions (LM), target tokens (seq2seq)."""
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor):
        return None, 0
    predicted = logits.detach().argmax(dim=-1).cpu()
    labels = labels.detach().cpu().long()
    family = adapter.task.family
    if predicted.dim() == 1:
        if labels.shape != predicted.shape:
            return None, 0
        keep = torch.ones_like(labels, dtype=torch.bool)
    elif family == "lm":
        if labels.shape != predicted.shape:
            return None, 0
        mask = batch.get("attention_mask")
        keep = labels != -100
        if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
            keep = keep & (mask.detach().cpu() != 0)
        if bool((adapter.task.additional_config or {}).get("shift_labels", True)):
            predicted, labels, keep = predicted[:, :-1], labels[:, 1:], keep[:, 1:]
    else:
        if labels.shape != predicted.shape:
            return None, 0
        keep = labels != -100
        mask = batch.get("decoder_attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
            keep = keep & (mask.detach().cpu() != 0)
    compared = int(keep.sum())
    if not compared:
        return None, 0
    return float(((predicted == labels) & keep).sum()) / compared, compared


# --------------------------------------------------------------------------- initialisation


@dataclass(frozen=True)
class InitState:
    """Whether a model's weights come from the random number generator, and how that was told."""

    random: bool
    reason: str


_SEEDERS = (
    (torch, "manual_seed"),
    (torch.random, "manual_seed"),
    (torch.cuda, "manual_seed"),
    (torch.cuda, "manual_seed_all"),
)


@contextlib.contextmanager
def _shifted_seeds(offset: int) -> Iterator[None]:
    """Every ``manual_seed(s)`` call seeds ``s + offset`` instead, and the global seed starts
    elsewhere: a factory that seeds itself still draws other numbers."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in _SEEDERS]
    try:
        for owner, name, original in saved:
            setattr(owner, name, _shifted(original, offset))
        with torch.random.fork_rng(devices=[]):
            saved[0][2](12_345 + offset)
            yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _shifted(original: Callable[..., Any], offset: int) -> Callable[..., Any]:
    def seed(value: int, *args: Any, **kwargs: Any) -> Any:
        return original(int(value) + offset, *args, **kwargs)

    return seed


def initialisation(build: Callable[[], nn.Module], reference: nn.Module) -> InitState:
    """Whether ``reference`` (the model as built) is randomly initialised.

    ``build`` is called again with every seed shifted (``torch.manual_seed(s)`` seeds ``s + 1``):
    if any floating parameter or buffer differs from ``reference``'s, the weights come from the
    random number generator and the model is randomly initialised (a pretrained trunk with a
    new head counts: its predictions are not trained ones). Weights loaded from a file are the
    same under any seed, and so are those of a module-level instance (copied, never rebuilt).
    A factory that draws weights from its own generator or from numpy looks trained to this
    test.
    """
    with _shifted_seeds(1):
        other = build()
    mine = dict(reference.state_dict())
    theirs = dict(other.state_dict())
    for name, tensor in mine.items():
        twin = theirs.get(name)
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        if twin is None or twin.shape != tensor.shape:
            return InitState(True, f"building it again gives a different {name!r}")
        if not torch.equal(twin.to(tensor.device), tensor):
            return InitState(
                True,
                f"its weights come from the random number generator ({name!r} changes when the "
                "model is built with other seeds): no trained checkpoint was loaded",
            )
    return InitState(
        False,
        "its weights are the same under any seed: loaded from a checkpoint, or made when the "
        "model file was imported (a module-level instance), not drawn by its factory",
    )
