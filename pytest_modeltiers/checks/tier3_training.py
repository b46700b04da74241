"""Tier 3 sanity checks: does the model train? (The lean loop, not Lightning.)

PYTEST_DONT_REWRITE

Each check runs a few optimizer steps of ``training.lean_loop.LeanLoop`` over the adapter's
real task loss, on a copy of the user's model, and returns the ``CheckResult`` of its built-in
test.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.report import CheckResult, CheckStatus, jsonable
from pytest_modeltiers.training.lean_loop import (
    CHECKPOINT_PARTS,
    LeanLoop,
    NoGradientPathError,
    TrainingStepError,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    preserved_rng,
    save_checkpoint,
    seed_everything,
    split_batch,
    task_loss,
)

__all__ = [
    "ACCUMULATION_ATOL",
    "ACCUMULATION_RTOL",
    "OVERFIT_LR",
    "OVERFIT_MAX_STEPS",
    "RESUME_ATOL",
    "RESUME_RTOL",
    "check_gradient_accumulation_equivalence",
    "check_overfit_single_batch",
    "check_resume_equivalence",
    "check_seed_reproducibility",
]

TIER = 3
Batch = Mapping[str, Any]

#: Overfitting: AdamW at 1e-2 halves the loss of the example and third-party models on one
#: batch in 3 to 30 steps; 100 leaves room for slower models while keeping a failure under a
#: few seconds on a tiny model.
OVERFIT_MAX_STEPS = 100
OVERFIT_LR = 1e-2
OVERFIT_TARGET_RATIO = 0.5

#: pytest-torch's grad_accumulation tolerances, relative to each tensor's scale.
ACCUMULATION_RTOL = 1e-4
ACCUMULATION_ATOL = 1e-6

#: pytest-torch's training_resume tolerances.
RESUME_RTOL = 1e-5
RESUME_ATOL = 1e-6

#: Learning rate of the resume and seed runs: small enough to stay stable on any model, large
#: enough that AdamW's moments and the schedule visibly change every step.
SANITY_LR = 1e-3

_DETACHED_CAUSES = (
    "Likely causes: the output is detached from the parameters (.detach(), torch.no_grad(), "
    ".item() or numpy round trips in forward), every parameter the output depends on is frozen "
    "(requires_grad=False), or the logits are rebuilt from a non-differentiable op (argmax)."
)


def _done(
    name: str, start: float, status: str, message: str, details: dict[str, Any]
) -> CheckResult:
    return CheckResult(
        name,
        TIER,
        CheckStatus(status),
        message,
        jsonable(details, where="details"),
        max(0.0, time.perf_counter() - start),
    )


def _training_copy(model: nn.Module) -> nn.Module:
    """A deep copy to train, gradients cleared, so the user's model is never touched."""
    clone = copy.deepcopy(model)
    for param in clone.parameters():
        param.grad = None
    return clone


def _step_failure(name: str, err: TrainingStepError, signature: str) -> str:
    what = {
        "forward": "forward in train mode raised",
        "loss": "the adapter's loss raised",
        "backward": "the backward pass raised",
        "optimizer": "the optimizer step raised",
    }[err.stage]
    return (
        f"{name}: {what} {describe_model_exception(err.exc)} for input {signature}, so "
        "training could not be checked. Reproduce with loss = adapter.loss(adapter.forward("
        "model, batch), batch); loss.backward() in train mode."
    )


def _step_failed(
    name: str, start: float, err: TrainingStepError, signature: str, details: dict[str, Any]
) -> CheckResult:
    """The failure of a training step that raised, with where the model raised it."""
    message = _step_failure(name, err, signature)
    return _done(name, start, "failed", message, {**details, **exception_details(err.exc)})


def _trainable(model: nn.Module) -> int:
    return sum(1 for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- overfit


def check_overfit_single_batch(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    max_steps: int = OVERFIT_MAX_STEPS,
    lr: float = OVERFIT_LR,
    target_ratio: float = OVERFIT_TARGET_RATIO,
    optimizer: str = "adamw",
    seed: int = 0,
) -> CheckResult:
    """The loss on ``batch`` falls to ``target_ratio`` of its first value within ``max_steps``.

    Steps stop as soon as the target is reached; the details give the steps taken, the first,
    last and lowest loss.
    """
    name = "test_overfit_single_batch"
    start = time.perf_counter()
    signature = batch_signature(dict(batch))
    if max_steps < 1 or not 0 < target_ratio < 1:
        raise ValueError(
            f"max_steps must be >= 1 and target_ratio in (0, 1); got {max_steps}, {target_ratio}"
        )
    base: dict[str, Any] = {
        "input": signature,
        "max_steps": max_steps,
        "lr": lr,
        "optimizer": optimizer,
        "target_ratio": target_ratio,
    }
    if _trainable(model) == 0:
        return _done(name, start, "failed", _no_trainable(model), base)
    losses: list[float] = []
    with preserved_rng():
        seed_everything(seed)
        clone = _training_copy(model)
        loop = LeanLoop(clone, adapter, build_optimizer(clone, optimizer, lr=lr))
        try:
            for _ in range(max_steps):
                loss = loop.step(batch)
                losses.append(loss)
                if not math.isfinite(loss):
                    break
                if loss <= target_ratio * losses[0]:
                    break
        except TrainingStepError as err:
            return _step_failed(name, start, err, signature, base)
        except NoGradientPathError as exc:
            message = (
                f"the loss cannot decrease: {exc} for input {signature}, so no optimizer step "
                f"can change it. {_DETACHED_CAUSES}"
            )
            return _done(name, start, "failed", message, base)
    first, last = losses[0], losses[-1]
    details = {
        **base,
        "steps": len(losses),
        "initial_loss": first,
        "final_loss": last,
        "lowest_loss": min(losses),
        "losses": losses,
    }
    if not math.isfinite(last):
        message = (
            f"the loss became {last} at step {len(losses)} (first loss {first:.4g}) on input "
            f"{signature}. Likely causes: a learning rate too high for the model (lr={lr}), "
            "missing normalisation, or log/sqrt/division of values that reach 0 in training."
        )
        return _done(name, start, "failed", message, details)
    if last <= target_ratio * first:
        message = (
            f"loss fell from {first:.4g} to {last:.4g} in {len(losses)} steps "
            f"(target: {target_ratio:g} x the first loss)"
        )
        return _done(name, start, "passed", message, details)
    message = (
        f"the model cannot overfit one batch: after {len(losses)} {optimizer} steps (lr={lr}) "
        f"the loss went from {first:.4g} to {last:.4g} (lowest {min(losses):.4g}), never "
        f"reaching {target_ratio:g} x the first loss, on input {signature}. A model that "
        "cannot memorise a few examples will not learn a dataset. Likely causes: the output "
        "is (partly) detached or multiplied by zero, the parameters that matter are frozen, "
        "a bug in the loss path (softmax applied before cross-entropy, labels misaligned with "
        "the logits), or a learning rate unsuited to the model: pass lr= / max_steps= to "
        "check_overfit_single_batch to rule that out."
    )
    return _done(name, start, "failed", message, details)


def _no_trainable(model: nn.Module) -> str:
    return (
        f"{type(model).__name__} has no parameter with requires_grad=True, so it cannot train. "
        "Unfreeze the parameters that should learn."
    )


# --------------------------------------------------------------------------- accumulation

_BATCH_STAT_MODULES = (nn.modules.batchnorm._BatchNorm,)


def check_gradient_accumulation_equivalence(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    micro_batches: int = 2,
    rtol: float = ACCUMULATION_RTOL,
    atol: float = ACCUMULATION_ATOL,
    seed: int = 0,
) -> CheckResult:
    """``micro_batches`` equal micro-batches accumulated give the update of the whole batch.

    ``batch`` must split into equal micro-batches and hold no padding: the adapters' losses are
    means over examples or real tokens, and only equal, unpadded parts average to the whole
    batch's mean. Models with batch statistics in train mode (BatchNorm) are skipped: their
    output depends on which examples share a batch, so the two updates legitimately differ.

    Randomness is switched off for the comparison: ``nn.Dropout``-style modules are put in eval
    mode (the rest of the model stays in train mode), and ``nn.MultiheadAttention``'s dropout
    probability is set to 0. If the model is still random in train mode (functional dropout,
    injected noise), both updates are computed in eval mode instead and ``details["mode"]``
    says so.
    """
    name = "test_gradient_accumulation_equivalence"
    start = time.perf_counter()
    signature = batch_signature(dict(batch))
    parts = split_batch(batch, micro_batches)
    if len({_size(p) for p in parts}) != 1:
        raise ValueError(
            f"a batch of {_size(batch)} does not split into {micro_batches} equal micro-batches"
        )
    mask = batch.get("attention_mask")
    target_mask = batch.get("decoder_attention_mask")
    for key, m in (("attention_mask", mask), ("decoder_attention_mask", target_mask)):
        if isinstance(m, torch.Tensor) and not bool(m.bool().all()):
            raise ValueError(
                f"the batch has padding ({key} has zeros); token-mean losses of padded "
                "micro-batches do not average to the whole batch's mean. Pass an unpadded batch."
            )
    base: dict[str, Any] = {
        "input": signature,
        "micro_batches": micro_batches,
        "micro_batch_size": _size(parts[0]),
        "rtol": rtol,
        "atol": atol,
        "optimizer": "sgd, lr=1 (update = -gradient)",
    }
    stats = [n for n, m in model.named_modules() if isinstance(m, _BATCH_STAT_MODULES)]
    if stats:
        shown = ", ".join(stats[:4]) + (f" and {len(stats) - 4} more" if len(stats) > 4 else "")
        message = (
            f"the model normalises with batch statistics in train mode ({shown}), so its "
            "output depends on which examples share a micro-batch and accumulated micro-batches "
            "legitimately differ from one large batch; gradient accumulation is not equivalent "
            "by design for such models"
        )
        return _done(name, start, "skipped", message, {**base, "batch_statistics": stats})
    if _trainable(model) == 0:
        return _done(name, start, "failed", _no_trainable(model), base)
    with preserved_rng():
        try:
            mode = "train (dropout off)"
            if _stochastic_in_train(model, adapter, batch, seed):
                mode = "eval (the model is random in train mode beyond its dropout modules)"
            full = _one_update(model, adapter, [batch], mode, seed)
            accumulated = _one_update(model, adapter, parts, mode, seed)
        except TrainingStepError as err:
            return _step_failed(name, start, err, signature, base)
        except NoGradientPathError as exc:
            message = f"{name}: {exc} for input {signature}. {_DETACHED_CAUSES}"
            return _done(name, start, "failed", message, base)
    base["mode"] = mode
    worst: tuple[float, str, float] | None = None
    offenders: list[str] = []
    for param_name, delta_full in full.items():
        delta_acc = accumulated[param_name]
        scale = float(delta_full.abs().max()) if delta_full.numel() else 0.0
        diff = float((delta_acc - delta_full).abs().max()) if delta_full.numel() else 0.0
        allowed = atol + rtol * scale
        if not diff <= allowed:
            offenders.append(param_name)
            ratio = diff / allowed
            if worst is None or ratio > worst[2]:
                worst = (diff, param_name, ratio)
    details = {**base, "parameters_compared": len(full), "mismatched": offenders}
    if not offenders:
        message = (
            f"{micro_batches} accumulated micro-batches give the whole batch's update for all "
            f"{len(full)} trainable parameters"
        )
        return _done(name, start, "passed", message, details)
    assert worst is not None
    diff, where, _ = worst
    scale = float(full[where].abs().max())
    details.update({"worst_parameter": where, "max_abs_diff": diff, "update_scale": scale})
    listed = ", ".join(offenders[:6]) + (
        f" and {len(offenders) - 6} more" if len(offenders) > 6 else ""
    )
    message = (
        f"{micro_batches} accumulated micro-batches of {_size(parts[0])} do not give the update "
        f"of one batch of {_size(batch)} ({mode} mode): {len(offenders)} of {len(full)} "
        f"parameters differ, worst {where} by {diff:.3g} (its largest update is {scale:.3g}; "
        f"allowed {atol:g} + {rtol:g} x that). Offenders: {listed}. Likely causes: forward "
        "mixes examples across the batch (statistics over dim 0, a normalisation by the batch "
        "size, a layer that reshapes the batch away) or the loss depends on the batch size."
    )
    return _done(name, start, "failed", message, details)


def _size(batch: Batch) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    return 1


def _quiet(module: nn.Module, mode: str) -> nn.Module:
    """Put ``module`` in ``mode`` with randomness switched off (see the accumulation docs)."""
    module.train(not mode.startswith("eval"))
    for sub in module.modules():
        if isinstance(sub, nn.modules.dropout._DropoutNd):
            sub.eval()
        elif isinstance(sub, nn.MultiheadAttention):
            sub.dropout = 0.0
    return module


def _stochastic_in_train(model: nn.Module, adapter: TaskAdapter, batch: Batch, seed: int) -> bool:
    """Does the quieted model still give different losses for different RNG seeds?"""
    clone = _quiet(_training_copy(model), "train")
    values = []
    for offset in (1, 2):
        seed_everything(seed + offset)
        with torch.no_grad():
            values.append(task_loss(clone, adapter, batch))
    return not torch.equal(values[0], values[1])


def _logits(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> torch.Tensor:
    try:
        outputs = adapter.forward(model, dict(batch))
    except Exception as exc:
        raise TrainingStepError("forward", exc) from exc
    return adapter.get_logits(outputs, adapter.task, batch=dict(batch)).detach().double()


def _one_update(
    model: nn.Module, adapter: TaskAdapter, parts: Sequence[Batch], mode: str, seed: int
) -> dict[str, torch.Tensor]:
    """The per-parameter change of one SGD(lr=1) step over ``parts`` (accumulated)."""
    seed_everything(seed)
    clone = _training_copy(model)
    loop = LeanLoop(clone, adapter, torch.optim.SGD(_params(clone), lr=1.0))
    _quiet(clone, mode)  # after LeanLoop, which puts the whole copy in train mode
    before = {n: p.detach().clone() for n, p in clone.named_parameters() if p.requires_grad}
    loop.step(parts)
    return {
        n: (p.detach() - before[n]).double() for n, p in clone.named_parameters() if p.requires_grad
    }


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- resume


def check_resume_equivalence(
    model: nn.Module,
    adapter: TaskAdapter,
    batches: Sequence[Batch],
    *,
    resume_at: int | None = None,
    factory: Callable[[], nn.Module] | None = None,
    lr: float = SANITY_LR,
    scheduler: str | None = "linear",
    rtol: float = RESUME_RTOL,
    atol: float = RESUME_ATOL,
    seed: int = 0,
    restore: Iterable[str] = CHECKPOINT_PARTS,
    checkpoint_dir: str | Path | None = None,
) -> CheckResult:
    """``len(batches)`` steps straight equal ``resume_at`` steps, checkpoint, reload, the rest.

    The checkpoint is written to ``checkpoint_dir`` (a temporary directory by default) and read
    with ``weights_only=True``. The reloaded model comes from ``factory()`` (a fresh instance,
    as after a restart) or, without one, from a copy of ``model`` as it was before training.
    ``restore`` names the checkpoint parts loaded back (all by default); leaving one out shows
    what the check catches when a training loop forgets it.
    """
    name = "test_resume_equivalence"
    start = time.perf_counter()
    total = len(batches)
    k = total // 2 if resume_at is None else resume_at
    if total < 2 or not 1 <= k < total:
        raise ValueError(f"need at least 2 batches and 1 <= resume_at < {total}; got {k}")
    parts = tuple(restore)
    signature = batch_signature(dict(batches[0]))
    base: dict[str, Any] = {
        "input": signature,
        "steps": total,
        "resume_at": k,
        "lr": lr,
        "scheduler": scheduler,
        "restored": list(parts),
        "rtol": rtol,
        "atol": atol,
    }
    if _trainable(model) == 0:
        return _done(name, start, "failed", _no_trainable(model), base)

    def new_loop(module: nn.Module) -> LeanLoop:
        optimizer = build_optimizer(module, "adamw", lr=lr)
        return LeanLoop(
            module, adapter, optimizer, build_scheduler(optimizer, scheduler, total_steps=total)
        )

    with preserved_rng(), tempfile.TemporaryDirectory(prefix="modeltiers-resume-") as tmp:
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(tmp)
        path = folder / "resume_check.pt"
        try:
            seed_everything(seed)
            pristine = _training_copy(model)
            straight = new_loop(_training_copy(pristine))
            losses = []
            snapshot: nn.Module | None = None
            for i, batch in enumerate(batches):
                if i == k:
                    save_checkpoint(straight, path)
                    snapshot = copy.deepcopy(straight.model)
                losses.append(straight.step(batch))
            seed_everything(seed + 1)  # a restarted process does not share the RNG stream
            try:
                checkpoint = load_checkpoint(path)
            except Exception as exc:
                message = (
                    f"the checkpoint cannot be read back with torch.load(weights_only=True): "
                    f"{describe_exception(exc)}. The model's state_dict() holds something other "
                    "than tensors and primitive containers (an object returned by "
                    "get_extra_state, a custom class): keep only tensors, numbers, strings and "
                    "lists/dicts of them in it."
                )
                return _done(name, start, "failed", message, base)
            fresh = factory() if factory is not None else _training_copy(pristine)
            device = next(iter(model.parameters())).device
            fresh = fresh.to(device)
            resumed = new_loop(fresh)
            try:
                resumed.load_state_dict(checkpoint, parts)
            except Exception as exc:
                message = (
                    f"a fresh model cannot load the checkpoint written after {k} steps: "
                    f"{describe_exception(exc)}. A factory that builds a different architecture "
                    "than the trained model, or a state_dict()/load_state_dict() pair that "
                    "disagree, break every resume."
                )
                return _done(name, start, "failed", message, base)
            assert snapshot is not None
            hidden = _outputs_differ(snapshot, fresh, adapter, batches[k], seed)
            resumed_losses = [resumed.step(batch) for batch in batches[k:]]
        except TrainingStepError as err:
            return _step_failed(name, start, err, signature, base)
        except NoGradientPathError as exc:
            message = f"{name}: {exc} for input {signature}. {_DETACHED_CAUSES}"
            return _done(name, start, "failed", message, base)
    expected = losses[k:]
    details = {
        **base,
        "losses_straight": losses,
        "losses_resumed": resumed_losses,
    }
    bad_steps = [
        k + i + 1
        for i, (a, b) in enumerate(zip(resumed_losses, expected, strict=True))
        if not abs(a - b) <= atol + rtol * abs(b)
    ]
    final_straight = dict(straight.model.named_parameters())
    mismatched = []
    max_diff = 0.0
    for param_name, param in fresh.named_parameters():
        ref = final_straight[param_name].detach()
        diff = float((param.detach() - ref).abs().max()) if param.numel() else 0.0
        max_diff = max(max_diff, diff)
        if not bool(torch.all((param.detach() - ref).abs() <= atol + rtol * ref.abs())):
            mismatched.append(param_name)
    details.update(
        {
            "divergent_steps": bad_steps,
            "mismatched_parameters": mismatched,
            "max_param_diff": max_diff,
        }
    )
    if hidden is not None:
        details["output_diff_after_reload"] = hidden
    if not bad_steps and not mismatched and hidden is None:
        message = (
            f"resuming after {k} of {total} steps from a weights_only checkpoint reproduces the "
            f"straight run (losses and all parameters within rtol={rtol:g}, atol={atol:g})"
        )
        return _done(name, start, "passed", message, details)
    if hidden is not None:
        cause = (
            f"Right after the reload, before any further step, the fresh model's train-mode "
            f"output differs from the trained model's by {hidden:.3g} on the same input and "
            "seed: the model keeps state outside state_dict() (a plain Python attribute or "
            "tensor updated in forward, such as a step counter or a running statistic, or a "
            "buffer registered with persistent=False). Register it with register_buffer() so "
            "checkpoints carry it. Randomness drawn from a private generator that the "
            "checkpoint's RNG states do not cover looks the same: draw it from torch's global "
            "generator."
        )
    else:
        left_out = [p for p in CHECKPOINT_PARTS if p not in parts]
        cause = (
            "The reloaded model starts out identical, so what diverges is training state: "
            + (
                f"the checkpoint parts not restored ({', '.join(left_out)}) matter. "
                if left_out
                else ""
            )
            + "Likely causes: optimizer state (AdamW moments, step counts) or the LR schedule not "
            "restored, an RNG stream (dropout) not restored, or model state outside "
            "state_dict() that only matters after more steps."
        )
    first_bad = f"first divergent step {bad_steps[0]}, " if bad_steps else ""
    message = (
        f"resuming after {k} of {total} steps does not reproduce the straight run: "
        f"{first_bad}losses straight {_fmt(expected)} vs resumed {_fmt(resumed_losses)}, "
        f"{len(mismatched)} parameters differ at the end (max {max_diff:.3g}). {cause}"
    )
    return _done(name, start, "failed", message, details)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _outputs_differ(
    a: nn.Module, b: nn.Module, adapter: TaskAdapter, batch: Batch, seed: int
) -> float | None:
    """Largest difference of the two models' train-mode losses-to-be (logits), or None.

    Both run on copies under the same seed, so dropout draws the same masks and a hidden
    attribute advanced by this forward does not leak into the real runs.
    """
    outputs = []
    with preserved_rng():
        for module in (a, b):
            clone = copy.deepcopy(module)
            clone.train()
            seed_everything(seed)
            with torch.no_grad():
                outputs.append(_logits(clone, adapter, batch))
    if outputs[0].shape != outputs[1].shape:
        return math.inf
    diff = float((outputs[0] - outputs[1]).abs().max()) if outputs[0].numel() else 0.0
    return diff if diff > 0.0 else None


# --------------------------------------------------------------------------- seed


def _construction_difference(
    factory: Callable[[], nn.Module], seed: int, atol: float
) -> dict[str, Any]:
    """Build the model twice under ``seed`` and compare the two ``state_dict()`` tensors."""
    states = []
    with preserved_rng():
        for _ in range(2):
            seed_everything(seed)
            built = factory()
            states.append(
                {k: v.detach().clone() for k, v in built.state_dict().items() if torch.is_tensor(v)}
            )
            del built
    first, second = states
    mismatched = sorted(set(first) ^ set(second))
    max_diff = 0.0
    for key in sorted(set(first) & set(second)):
        a, b = first[key], second[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            mismatched.append(key)
            continue
        if a.is_floating_point() or a.is_complex():
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            if not diff <= atol:  # NaN differs too
                mismatched.append(key)
                max_diff = math.inf if math.isnan(diff) else max(max_diff, diff)
        elif not torch.equal(a, b):
            mismatched.append(key)
    return {"tensors": len(first), "mismatched_parameters": mismatched, "max_abs_diff": max_diff}


def check_seed_reproducibility(
    model: nn.Module,
    adapter: TaskAdapter,
    batches: Sequence[Batch],
    *,
    factory: Callable[[], nn.Module] | None = None,
    seed: int = 0,
    lr: float = SANITY_LR,
    atol: float = 0.0,
) -> CheckResult:
    """The model built twice under one seed starts from the same weights (when a ``factory``
    builds it), and two training runs from the same seed give the same losses and parameters.
    """
    name = "test_seed_reproducibility"
    start = time.perf_counter()
    if not batches:
        raise ValueError("check_seed_reproducibility needs at least one batch")
    signature = batch_signature(dict(batches[0]))
    base: dict[str, Any] = {"input": signature, "steps": len(batches), "seed": seed, "atol": atol}
    if _trainable(model) == 0:
        return _done(name, start, "failed", _no_trainable(model), base)
    if factory is not None:
        try:
            construction = _construction_difference(factory, seed, atol)
        except Exception as exc:
            message = (
                f"building the model from its factory raised {describe_exception(exc)}, so "
                "its initial weights could not be compared between two builds. A factory must "
                "build the model every time it is called; reproduce with two calls under "
                "torch.manual_seed."
            )
            return _done(name, start, "failed", message, base)
        base["construction"] = construction
        different = construction["mismatched_parameters"]
        if different:
            shown = ", ".join(different[:8]) + (
                f" and {len(different) - 8} more" if len(different) > 8 else ""
            )
            message = (
                f"the model built twice from its factory under seed {seed} starts from "
                f"different initial weights: {len(different)} of {construction['tensors']} "
                f"state_dict tensors differ ({shown}; max |diff| "
                f"{construction['max_abs_diff']:.3g}), so no run can be reproduced from its "
                "seed. The constructor draws randomness that torch.manual_seed, random.seed "
                "and numpy.random.seed do not control: a torch.Generator seeded from the clock "
                "(time.time(), time.time_ns()) or os.urandom, or a private generator that "
                "earlier builds advanced. Initialise from torch's global generator, or seed "
                "the private one from it (torch.randint(...) or torch.initial_seed())."
            )
            return _done(name, start, "failed", message, base)
    runs: list[tuple[list[float], dict[str, torch.Tensor]]] = []
    with preserved_rng():
        try:
            for _ in range(2):
                seed_everything(seed)
                clone = _training_copy(model)
                loop = LeanLoop(clone, adapter, build_optimizer(clone, "adamw", lr=lr))
                losses = [loop.step(batch) for batch in batches]
                params = {n: p.detach().clone() for n, p in clone.named_parameters()}
                runs.append((losses, params))
        except TrainingStepError as err:
            return _step_failed(name, start, err, signature, base)
        except NoGradientPathError as exc:
            message = f"{name}: {exc} for input {signature}. {_DETACHED_CAUSES}"
            return _done(name, start, "failed", message, base)
    (first, params_a), (second, params_b) = runs
    bad_steps = [
        i + 1 for i, (a, b) in enumerate(zip(first, second, strict=True)) if not abs(a - b) <= atol
    ]
    mismatched = [
        n for n in params_a if not bool(torch.all((params_a[n] - params_b[n]).abs() <= atol))
    ]
    details = {
        **base,
        "losses_first": first,
        "losses_second": second,
        "divergent_steps": bad_steps,
        "mismatched_parameters": mismatched,
    }
    if not bad_steps and not mismatched:
        exact = "identical" if atol == 0 else f"within {atol:g}"
        message = f"two runs of {len(batches)} steps from seed {seed} are {exact}"
        return _done(name, start, "passed", message, details)
    where = f"from step {bad_steps[0]}" if bad_steps else "in the final parameters"
    message = (
        f"two training runs from seed {seed} differ {where}: losses {_fmt(first)} vs "
        f"{_fmt(second)}, {len(mismatched)} parameters differ at the end. The model draws "
        "randomness that torch.manual_seed, random.seed and numpy.random.seed do not control: "
        "a private torch.Generator (or one shared at module level), a time- or os-based seed, "
        "state kept across runs in a global, or nondeterministic kernels on CUDA "
        "(torch.use_deterministic_algorithms(True) finds them). Draw randomness from the "
        "global generators (or seed private ones from them) so one seed fixes a run."
    )
    return _done(name, start, "failed", message, details)
