"""Comparing an artifact's output with eager PyTorch, and saying exactly how far apart they are.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pytest_modeltiers.export.tolerances import Tolerance
from pytest_modeltiers.models.running import unravel_index

__all__ = ["ParityStats", "compare_outputs"]


@dataclass(frozen=True)
class ParityStats:
    """How one artifact output compares with the eager output of the same input."""

    shape: list[int]
    elements: int
    max_abs: float
    max_rel: float
    mismatches: int
    allowed_mismatches: int
    min_atol: float
    min_rtol: float
    worst_index: list[int]
    worst_values: list[float]
    top1_agreement: float | None
    ok: bool
    decided_positions: int = 0

    @property
    def mismatch_fraction(self) -> float:
        return self.mismatches / self.elements if self.elements else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mismatch_fraction"] = self.mismatch_fraction
        return data


def _kth_largest(values: torch.Tensor, k: int) -> float:
    """The (k+1)-th largest value (k = 0: the maximum); 0 for an empty tensor."""
    if values.numel() == 0 or k >= values.numel():
        return 0.0
    return float(torch.topk(values.flatten(), k + 1).values[-1])


def compare_outputs(
    candidate: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance
) -> ParityStats:
    """Compare two tensors of the same shape under ``tolerance``, with what a user needs to
    judge a mismatch (bug or tolerance to loosen).

    ``ValueError`` when the shapes differ: that is a different failure, reported by the caller
    with both shapes.
    """
    if tuple(candidate.shape) != tuple(reference.shape):
        raise ValueError(
            f"shapes differ: artifact {list(candidate.shape)}, eager {list(reference.shape)}"
        )
    a = candidate.detach().cpu().double()
    b = reference.detach().cpu().double()
    n = b.numel()
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    diff = torch.where(same, torch.zeros_like(a), torch.nan_to_num((a - b).abs(), nan=math.inf))
    magnitude = torch.nan_to_num(b.abs(), nan=0.0, posinf=0.0)
    allowed = tolerance.atol + tolerance.rtol * magnitude
    bad = ~same & ~(diff <= allowed)
    mismatches = int(bad.sum())
    allowed_mismatches = math.floor(tolerance.max_mismatch_fraction * n + 1e-9)
    if n == 0:
        return ParityStats([], 0, 0.0, 0.0, 0, 0, 0.0, 0.0, [], [], None, True)

    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / magnitude.clamp_min(1e-12))
    need_atol = (diff - tolerance.rtol * magnitude).clamp_min(0.0)
    over = (diff - tolerance.atol).clamp_min(0.0)
    need_rtol = torch.where(
        over == 0,
        torch.zeros_like(over),
        torch.where(
            magnitude > 0, over / magnitude.clamp_min(1e-300), torch.full_like(over, math.inf)
        ),
    )
    excess = torch.where(bad, diff - allowed, torch.full_like(diff, -math.inf))
    flat = int((excess if mismatches else diff).flatten().argmax())
    top1, decided = _top1_agreement(a, b, tolerance)
    ok = mismatches <= allowed_mismatches
    if tolerance.min_top1_agreement is not None and top1 is not None:
        ok = ok and top1 >= tolerance.min_top1_agreement
    return ParityStats(
        shape=[int(d) for d in b.shape],
        elements=n,
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        mismatches=mismatches,
        allowed_mismatches=allowed_mismatches,
        min_atol=_kth_largest(need_atol, allowed_mismatches),
        min_rtol=_kth_largest(need_rtol, allowed_mismatches),
        worst_index=unravel_index(flat, tuple(b.shape)),
        worst_values=[float(a.flatten()[flat]), float(b.flatten()[flat])],
        top1_agreement=top1,
        ok=ok,
        decided_positions=decided,
    )


def _top1_agreement(
    candidate: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance
) -> tuple[float | None, int]:
    """Arg-max agreement over the positions where the tolerance cannot flip eager's choice."""
    if candidate.dim() < 1 or candidate.shape[-1] < 2 or not candidate.is_floating_point():
        return None, 0
    best = torch.topk(reference, 2, dim=-1).values
    lead = best[..., 0] - best[..., 1]
    slack = 2 * (tolerance.atol + tolerance.rtol * best[..., 0].abs())
    decided = torch.nan_to_num(lead, nan=0.0) > slack
    count = int(decided.sum())
    if count == 0:
        return None, 0
    agree = candidate.argmax(-1) == reference.argmax(-1)
    return float(agree[decided].double().mean()), count
