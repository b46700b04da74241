"""Tier 2 robustness: a measurement, judged only against bounds the user sets.

PYTEST_DONT_REWRITE

Measured on one batch with labels: prediction agreement under input noise at several levels,
the FGSM robustness radius of each prediction, and the clean accuracy they go with. Without
bounds the check passes and its details carry the numbers. With ``min_agreement`` (the lowest
agreement over the levels) or ``min_radius`` (the median radius) it fails below them. A randomly
initialised model is never judged: its robustness says nothing about the trained model, so with
bounds set the check is skipped with that reason (the numbers are still in the details).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.analysis.attribution import AttributionUnavailable
from pytest_modeltiers.analysis.robustness import (
    EPSILONS,
    NOISE_LEVELS,
    InitState,
    Perturbation,
    clean_accuracy,
    fgsm_radii,
    fgsm_targets,
    noise_agreement,
)
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.models.exceptions import describe_model_exception, exception_details
from pytest_modeltiers.models.running import forward_logits, preserved_model
from pytest_modeltiers.models.timing import elapsed
from pytest_modeltiers.report import CheckResult

__all__ = ["check_robustness"]

Batch = dict[str, Any]
TIER = 2
ROBUSTNESS = "test_robustness"


def _units(adapter: TaskAdapter) -> str:
    if adapter.task.family == "vision":
        return "fraction of the pixel range (noise: standard deviation; FGSM: step per pixel)"
    return "fraction of each token embedding's norm (noise and FGSM step per real token)"


def check_robustness(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    init: InitState,
    data: str = "the given batch",
    min_agreement: float | None = None,
    min_radius: float | None = None,
    noise_levels: Sequence[float] = NOISE_LEVELS,
    epsilons: Sequence[float] = EPSILONS,
    seed: int = 0,
) -> CheckResult:
    """Measure robustness on ``batch`` (described by ``data``) and judge it against the bounds.

    ``init`` says whether the model is randomly initialised (``analysis.robustness.
    initialisation``); such a model is measured but not judged.
    """
    start = time.perf_counter()
    signature = batch_signature(batch)
    bounds = {"min_agreement": min_agreement, "min_radius": min_radius}
    try:
        perturbation = Perturbation.of(model, adapter, batch)
        with preserved_model(model, training=False), torch.no_grad():
            logits = forward_logits(model, adapter, perturbation.batch)
        accuracy, compared = clean_accuracy(adapter, logits, perturbation.batch)
        agreement = noise_agreement(perturbation, noise_levels, seed=seed)
        targets = fgsm_targets(perturbation)
        radii = fgsm_radii(perturbation, targets, epsilons)
    except AttributionUnavailable as exc:
        return CheckResult.skipped(
            ROBUSTNESS,
            TIER,
            f"robustness is measured in embedding space, and {exc}",
            {"input": signature},
            duration_seconds=elapsed(start),
        )
    except Exception as exc:
        return CheckResult.failed(
            ROBUSTNESS,
            TIER,
            f"the model raised {describe_model_exception(exc)} on a perturbed copy of input "
            f"{signature}, so robustness could not be measured. Reproduce with "
            "adapter.forward(model, batch) on a batch with slightly changed embeddings or pixels.",
            {"input": signature, **exception_details(exc)},
            duration_seconds=elapsed(start),
        )
    largest = max(epsilons)
    flipped = sorted(r for r in radii if r is not None)
    ordered = [r if r is not None else float("inf") for r in radii]
    median = statistics.median(ordered) if ordered else float("inf")
    worst = min((a["agreement"] for a in agreement if a["agreement"] is not None), default=None)
    details: dict[str, Any] = {
        "input": signature,
        "data": data,
        "units": _units(adapter),
        "clean_accuracy": {"value": accuracy, "compared": compared},
        "noise": agreement,
        "fgsm": {
            "targets": [targets.describe(row) for row in range(len(radii))],
            "radii": radii,
            "median_radius": None if median == float("inf") else median,
            "min_radius": flipped[0] if flipped else None,
            "flipped": len(flipped),
            "examples": len(radii),
            "max_epsilon": largest,
        },
        "randomly_initialised": init.random,
        "initialisation": init.reason,
        "bounds": bounds,
    }
    median_text = f"> {largest:g}" if median == float("inf") else f"{median:.3g}"
    accuracy_text = (
        "no labels to measure clean accuracy against"
        if accuracy is None
        else f"clean accuracy {accuracy:.3g} over {compared} prediction(s)"
    )
    summary = (
        "agreement under noise "
        + ", ".join(
            f"{a['agreement']:.3g} at {a['level']:g}"
            for a in agreement
            if a["agreement"] is not None
        )
        + f"; median FGSM radius {median_text} ({len(flipped)} of {len(radii)} predictions "
        f"flipped by epsilon <= {largest:g}); {accuracy_text}, on {data}"
    )
    judged = any(bound is not None for bound in bounds.values())
    if not judged:
        note = (
            f" Not judged: the model is randomly initialised ({init.reason})."
            if init.random
            else " Not judged: set --tier2-min-agreement or --tier2-min-radius to gate on it."
        )
        details["judged"] = False
        return CheckResult.passed(
            ROBUSTNESS, TIER, f"measured {summary}.{note}", details, duration_seconds=elapsed(start)
        )
    if init.random:
        details["judged"] = False
        return CheckResult.skipped(
            ROBUSTNESS,
            TIER,
            f"robustness bounds not applied: the model is randomly initialised ({init.reason}), "
            "and an untrained model's robustness says nothing about the trained one. Build the "
            f"model with its trained weights to judge it. Measured {summary}.",
            details,
            duration_seconds=elapsed(start),
        )
    details["judged"] = True
    failures = []
    if min_agreement is not None and worst is not None and worst < min_agreement:
        level = next(a["level"] for a in agreement if a["agreement"] == worst)
        failures.append(
            f"agreement under noise {worst:.3g} at level {level:g} is below "
            f"--tier2-min-agreement {min_agreement:g}"
        )
    if min_radius is not None and median < min_radius:
        failures.append(
            f"the median FGSM radius {median_text} is below --tier2-min-radius {min_radius:g}"
        )
    if failures:
        return CheckResult.failed(
            ROBUSTNESS,
            TIER,
            f"{'; '.join(failures)} ({_units(adapter)}). Measured {summary}. Train with "
            "noise or adversarial augmentation, regularise (weight decay, label smoothing), or "
            "lower the bound if it is stricter than the model needs.",
            details,
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(
        ROBUSTNESS,
        TIER,
        f"within the bounds: {summary}.",
        details,
        duration_seconds=elapsed(start),
    )
