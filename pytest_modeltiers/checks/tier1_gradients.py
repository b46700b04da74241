"""Tier 1 gradient check: does the task loss reach every trainable parameter?

PYTEST_DONT_REWRITE

One forward in train mode, the adapter's real task loss and one backward; parameters that get
no usable gradient are reported as unused, dead (exactly zero) or broken (NaN/Inf), each
confirmed on a second, ordinary batch. The user's ``.grad`` and the model's state are left as
they were.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature, make_batch
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.models.running import preserved_model
from pytest_modeltiers.report import CheckResult, CheckStatus, jsonable

__all__ = ["GradientReport", "check_gradient_flow", "compute_gradients"]

TIER = 1
NAME = "test_gradient_flow"
Batch = Mapping[str, Any]

#: How many offending parameter names the message lists per group before "and N more".
_LISTED = 8


class _StepError(Exception):
    """A forward, loss or backward step raised; ``stage`` says which."""

    def __init__(self, stage: str, exc: Exception) -> None:
        super().__init__(f"{stage}: {describe_exception(exc)}")
        self.stage = stage
        self.exc = exc


@dataclass
class GradientReport:
    """One backward's outcome: the loss and each trainable parameter's group."""

    loss: float
    unused: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    broken: dict[str, dict[str, int]] = field(default_factory=dict)
    norms: dict[str, float] = field(default_factory=dict)


def compute_gradients(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    params: list[tuple[str, nn.Parameter]],
) -> GradientReport:
    """Train-mode forward, adapter loss, one ``autograd.grad``; classify every parameter.

    Raises ``_StepError`` when the model or the adapter raises; returns a report whose ``loss``
    is not finite (and groups empty) when the loss is NaN/Inf.
    """
    with preserved_model(model, training=True), torch.enable_grad():
        try:
            outputs = adapter.forward(model, dict(batch))
        except Exception as exc:
            raise _StepError("forward", exc) from exc
        try:
            loss = adapter.loss(outputs, dict(batch))
        except Exception as exc:
            raise _StepError("loss", exc) from exc
        value = float(loss.detach().float().sum()) if loss.numel() else math.nan
        if not math.isfinite(value):
            return GradientReport(loss=value)
        tensors = [p for _, p in params]
        grads: tuple[torch.Tensor | None, ...]
        if loss.requires_grad:
            try:
                grads = torch.autograd.grad(
                    loss.sum() if loss.dim() else loss, tensors, allow_unused=True
                )
            except Exception as exc:
                raise _StepError("backward", exc) from exc
        else:  # the output is detached from every parameter
            grads = (None,) * len(tensors)
    report = GradientReport(loss=value)
    for (param_name, _), grad in zip(params, grads, strict=True):
        if grad is None:
            report.unused.append(param_name)
            continue
        g = grad.detach()
        finite = torch.isfinite(g)
        if not bool(finite.all()):
            report.broken[param_name] = {
                "nan": int(torch.isnan(g).sum()),
                "inf": int(torch.isinf(g).sum()),
                "elements": g.numel(),
            }
            continue
        if not bool(g.any()):
            report.dead.append(param_name)
            continue
        report.norms[param_name] = float(g.double().norm())
    return report


def _reference_batch(adapter: TaskAdapter, batch: Batch) -> dict[str, Any]:
    """An ordinary batch for the task: at least 2 samples, default lengths, a fixed seed."""
    size = 2
    primary = batch.get(adapter.primary_input)
    if isinstance(primary, torch.Tensor) and primary.dim() > 0:
        size = max(2, int(primary.shape[0]))
    reference = make_batch(adapter.task, size, seed=1)
    device = primary.device if isinstance(primary, torch.Tensor) else None
    if device is not None:
        reference = {k: v.to(device) for k, v in reference.items()}
    return reference


def _retry_unscorable(
    err: _StepError,
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    reference_batch: Batch | None,
    params: list[tuple[str, nn.Parameter]],
) -> tuple[GradientReport, dict[str, Any]] | None:
    """The gradients on the reference batch when only the loss of ``batch`` failed, else None."""
    if err.stage != "loss" or not isinstance(err.exc, AdapterError):
        return None
    if not _nothing_to_score(adapter, batch):
        return None
    try:
        reference = (
            dict(reference_batch)
            if reference_batch is not None
            else _reference_batch(adapter, batch)
        )
        return compute_gradients(model, adapter, reference, params), reference
    except _StepError:
        return None  # the model fails on an ordinary batch too: the caller reports the original


def _nothing_to_score(adapter: TaskAdapter, batch: Batch) -> bool:
    """True for a batch whose loss has no target: an LM batch with no real token after the
    first (next-token targets), a seq2seq batch whose targets are all padding."""
    family = adapter.task.family
    if family == "lm":
        ids = batch.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            return False
        mask = batch.get("attention_mask")
        if ids.shape[1] < 2:
            return True
        return isinstance(mask, torch.Tensor) and not bool(mask[:, 1:].any())
    if family == "seq2seq":
        mask = batch.get("decoder_attention_mask")
        return isinstance(mask, torch.Tensor) and not bool(mask.any())
    return False


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_gradient_flow(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    expected_unused: Iterable[str] = (),
    reference_batch: Batch | None = None,
) -> CheckResult:
    """Every trainable parameter gets a gradient that exists, is finite and is not all zero.

    Unused and dead findings are confirmed on ``reference_batch`` before they are reported,
    because one degenerate input can zero a gradient that is fine in general. The model's
    modes, buffers, RNG state and ``.grad`` values are as before the call.
    """
    start = time.perf_counter()
    signature = batch_signature(dict(batch))
    padding = _padding(batch)
    named_input = (
        f"the padded input {signature} ({padding['padded_positions']} of "
        f"{padding['positions']} positions are padding, attention_mask 0)"
        if padding
        else f"input {signature}"
    )
    patterns = (expected_unused,) if isinstance(expected_unused, str) else tuple(expected_unused)
    named = list(model.named_parameters())
    params = [(n, p) for n, p in named if p.requires_grad]
    frozen = [n for n, p in named if not p.requires_grad]
    exempt = sorted(n for n, _ in params if any(fnmatchcase(n, pat) for pat in patterns))
    base: dict[str, Any] = {
        "input": signature,
        "trainable": len(params),
        "frozen": len(frozen),
        "expected_unused": list(patterns),
        "exempt": exempt,
    }
    if padding:
        base["padding"] = padding
    unmatched = [pat for pat in patterns if not any(fnmatchcase(n, pat) for n, _ in named)]
    if unmatched:
        base["patterns_matching_nothing"] = unmatched

    def done(status: str, message: str, details: dict[str, Any]) -> CheckResult:
        return CheckResult(
            NAME,
            TIER,
            CheckStatus(status),
            message,
            jsonable({**base, **details}, where="details"),
            max(0.0, time.perf_counter() - start),
        )

    if not params:
        return done("skipped", "the model has no parameter with requires_grad=True", {})
    saved_grads = [(p, p.grad) for _, p in params]
    details: dict[str, Any] = {}
    try:
        first = compute_gradients(model, adapter, batch, params)
    except _StepError as err:
        # A batch the adapter cannot score (an LM batch of one token: no next token to
        # predict) says nothing about the model: measure on the reference batch instead. If
        # that fails too, the model is at fault and the original error is reported.
        retry = _retry_unscorable(err, model, adapter, batch, reference_batch, params)
        if retry is None:
            return done(
                "failed",
                _step_message(err, named_input),
                {"stage": err.stage, **exception_details(err.exc)},
            )
        first, used = retry
        details["measured_on"] = (
            f"reference batch {batch_signature(used)}: the adapter cannot score {signature} "
            f"({err.exc})"
        )
    finally:
        for p, grad in saved_grads:
            if p.grad is not grad:
                p.grad = grad
    if not math.isfinite(first.loss):
        return done(
            "failed",
            f"the {adapter.task.family} loss is {first.loss} for {named_input}, so no "
            "gradient can be trusted. Likely causes: NaN/Inf logits (see test_output_finite), "
            "log of a zero probability computed by hand instead of cross_entropy on logits, or "
            "labels outside the logits' range.",
            {"loss": first.loss},
        )
    exempt_set = set(exempt)
    unused = [n for n in first.unused if n not in exempt_set]
    dead = [n for n in first.dead if n not in exempt_set]
    broken = dict(first.broken)
    details["loss"] = first.loss
    if unused or dead:
        try:
            reference = (
                dict(reference_batch)
                if reference_batch is not None
                else _reference_batch(adapter, batch)
            )
            second = compute_gradients(model, adapter, reference, params)
        except Exception as exc:  # the confirmation is best effort: keep the first findings
            details["confirmation"] = f"not confirmed on a reference batch: {exc}"
        else:
            details["confirmation"] = f"rechecked on reference batch {batch_signature(reference)}"
            still = set(second.unused) | set(second.dead)
            cleared = sorted(n for n in (*unused, *dead) if n not in still)
            if cleared:
                details["zero_only_for_this_input"] = cleared
            unused = [n for n in unused if n in still]
            dead = [n for n in dead if n in still]
            for n, counts in second.broken.items():
                broken.setdefault(n, counts)
        finally:
            for p, grad in saved_grads:
                if p.grad is not grad:
                    p.grad = grad
    details.update({"unused": unused, "dead": dead, "broken": broken})
    details["grad_norm_min"] = min(first.norms.values(), default=None)
    offenders = len(unused) + len(dead) + len(broken)
    if not offenders:
        notes = []
        if exempt:
            notes.append(f"{len(exempt)} exempt as expected unused")
        only_here: list[str] = details.get("zero_only_for_this_input") or []
        if only_here:
            notes.append(
                f"{len(only_here)} got no or a zero gradient for this input only, e.g. "
                f"{only_here[0]}, and a normal one on the reference batch"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        return done(
            "passed",
            f"all {len(params)} trainable parameters get a finite, non-zero gradient{note}",
            details,
        )
    groups = []
    if unused:
        groups.append(
            f"unused (no gradient reaches them: not used in forward, behind .detach() or "
            f"no_grad, or in a branch not taken): {_listed(unused)}"
        )
    if dead:
        groups.append(
            f"dead (gradient exactly zero: multiplied by zero, a ReLU with all inputs "
            f"negative, a closed gate, a saturated softmax): {_listed(dead)}"
        )
    if broken:
        groups.append(
            f"broken (NaN/Inf gradient: sqrt/pow at 0, log of 0, division by a zero norm): "
            f"{_listed(sorted(broken))}"
        )
    padding_hint = (
        " On a padded input the usual cause is an operation over padded positions whose "
        "forward is finite but whose derivative is not: a norm computed by hand over zeroed "
        "pad embeddings (sqrt at 0), a division by a masked count, a log of a masked "
        "probability. Compute it on real positions only (torch.where on attention_mask) or "
        "keep it away from the singular point (F.normalize, sqrt(x + eps))."
        if broken and padding
        else ""
    )
    return done(
        "failed",
        f"{offenders} of {len(params)} trainable parameters get no usable gradient from the "
        f"{adapter.task.family} loss for {named_input}: " + "; ".join(groups) + "."
        f"{padding_hint} If a parameter is meant to get none, freeze it (requires_grad_(False)) "
        "or declare it in expected_unused (fnmatch patterns).",
        details,
    )


def _padding(batch: Batch) -> dict[str, int] | None:
    """How many positions of the batch's attention masks are padding (0), if any are."""
    padded = positions = 0
    for key in ("attention_mask", "decoder_attention_mask"):
        mask = batch.get(key)
        if isinstance(mask, torch.Tensor) and mask.numel():
            padded += int((mask == 0).sum())
            positions += mask.numel()
    return {"padded_positions": padded, "positions": positions} if padded else None


def _step_message(err: _StepError, named_input: str) -> str:
    what = {
        "forward": "forward in train mode raised",
        "loss": "the adapter's loss raised",
        "backward": "the backward pass raised",
    }[err.stage]
    return (
        f"{what} {describe_model_exception(err.exc)} for {named_input}, so gradient flow could "
        "not be measured. Reproduce with adapter.loss(adapter.forward(model, batch), batch)"
        ".backward() in train mode."
    )
