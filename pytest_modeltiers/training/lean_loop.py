"""The lean training loop: optimizer steps over the adapter, with no Lightning start-up cost.

PYTEST_DONT_REWRITE

Tier 3's sanity checks need a handful of optimizer steps, and importing Lightning costs
seconds, so they run on this loop; it calls the model only through its ``TaskAdapter``.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_PARTS",
    "LeanLoop",
    "NoGradientPathError",
    "TrainingStepError",
    "build_optimizer",
    "build_scheduler",
    "capture_rng_state",
    "load_checkpoint",
    "preserved_rng",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "split_batch",
    "task_loss",
]

Batch = Mapping[str, Any]

#: Version of the checkpoint layout written by ``LeanLoop.state_dict``.
CHECKPOINT_FORMAT = 1
#: What a checkpoint holds and ``LeanLoop.load_state_dict`` can restore.
CHECKPOINT_PARTS: tuple[str, ...] = ("model", "optimizer", "scheduler", "rng")

OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "sgd")
SCHEDULERS: tuple[str, ...] = ("linear", "constant")


class TrainingStepError(Exception):
    """The model or the adapter raised during a training step; ``stage`` says where.

    ``stage`` is ``"forward"``, ``"loss"``, ``"backward"`` or ``"optimizer"``; ``exc`` is the
    original exception (also the ``__cause__``).
    """

    def __init__(self, stage: str, exc: Exception) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage = stage
        self.exc = exc


class NoGradientPathError(Exception):
    """The loss does not depend on any trainable parameter, so no step can change it."""


# --------------------------------------------------------------------------- RNG


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python ``random`` and NumPy's global generator."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device, lazily
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def capture_rng_state() -> dict[str, Any]:
    """The RNG states ``seed_everything`` controls, as tensors and primitive containers.

    CUDA states are captured only when CUDA is already initialised (capturing would otherwise
    initialise it, which costs seconds and memory on a machine that never used the GPU).
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "cuda": None,
        "numpy": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(numpy.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``capture_rng_state`` captured (parts that were not captured are left)."""
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved_numpy = state.get("numpy")
    numpy = sys.modules.get("numpy")
    if saved_numpy is not None and numpy is not None:
        keys = saved_numpy["keys"].numpy().astype(numpy.uint32)
        numpy.random.set_state(
            (
                saved_numpy["kind"],
                keys,
                saved_numpy["pos"],
                saved_numpy["has_gauss"],
                saved_numpy["cached_gaussian"],
            )
        )


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block that seeds and draws freely, then put every global RNG back as it was."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)


# --------------------------------------------------------------------------- optimizers


def build_optimizer(
    model: nn.Module, name: str = "adamw", *, lr: float = 1e-3, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters (``adamw``, ``adam`` or ``sgd``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no parameter with requires_grad=True, so there is "
            "nothing to train. Unfreeze the parameters that should learn."
        )
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str | None, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``None``, ``"constant"`` (no schedule) or ``"linear"`` (decay to 10 % over the steps)."""
    if name is None or name == "constant":
        return None
    if name == "linear":
        return torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0, end_factor=0.1, total_iters=max(1, total_steps)
        )
    raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")


# --------------------------------------------------------------------------- batches


def split_batch(batch: Batch, parts: int) -> list[dict[str, Any]]:
    """``batch`` cut into ``parts`` micro-batches along dim 0 (sizes differ by at most one).

    Every tensor with a leading batch dimension is cut; anything else is shared.
    """
    sizes = {int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim()}
    if len(sizes) != 1:
        raise ValueError(f"cannot split a batch whose tensors disagree on batch size: {sizes}")
    (size,) = sizes
    if not 1 <= parts <= size:
        raise ValueError(f"cannot split a batch of {size} into {parts} micro-batches")
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [
        {
            key: value[lo:hi] if isinstance(value, torch.Tensor) and value.dim() else value
            for key, value in batch.items()
        }
        for lo, hi in itertools.pairwise(bounds)
    ]


def _examples(batch: Batch) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    return 1


# --------------------------------------------------------------------------- the loop


class LeanLoop:
    """Optimizer steps over ``adapter.forward`` and ``adapter.loss``, in train mode.

    ``step(micro_batches)`` accumulates the micro-batches' gradients (each scaled by
    its share of the examples), steps the optimizer and the scheduler once, clears the gradients and
    returns the example-weighted mean loss.
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: TaskAdapter,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.steps_done = 0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, micro_batches: Batch | Sequence[Batch]) -> float:
        """One optimizer step over one batch or a list of micro-batches; the mean loss."""
        batches = [micro_batches] if isinstance(micro_batches, Mapping) else list(micro_batches)
        if not batches:
            raise ValueError("step() needs at least one micro-batch")
        total = sum(_examples(b) for b in batches)
        value = 0.0
        for batch in batches:
            weight = _examples(batch) / total
            loss = self.loss(batch)
            if not loss.requires_grad:
                raise NoGradientPathError(
                    f"the loss ({float(loss.detach())}) does not depend on any trainable parameter"
                )
            try:
                (loss * weight).backward()
            except Exception as exc:
                raise TrainingStepError("backward", exc) from exc
            value += float(loss.detach()) * weight
        try:
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        except Exception as exc:
            raise TrainingStepError("optimizer", exc) from exc
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        return value

    def loss(self, batch: Batch) -> torch.Tensor:
        """The adapter's scalar loss for ``batch`` (forward in the model's mode, graph kept)."""
        return task_loss(self.model, self.adapter, batch)

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, scheduler, RNG, step."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.steps_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": capture_rng_state(),
        }

    def load_state_dict(
        self, checkpoint: Mapping[str, Any], parts: Sequence[str] = CHECKPOINT_PARTS
    ) -> None:
        """Restore the named ``parts`` of a checkpoint (all of them by default)."""
        unknown = sorted(set(parts) - set(CHECKPOINT_PARTS))
        if unknown:
            raise ValueError(
                f"unknown checkpoint parts {unknown}; expected some of {list(CHECKPOINT_PARTS)}"
            )
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint format {checkpoint.get('format')!r} is not {CHECKPOINT_FORMAT}; it "
                "was not written by LeanLoop.state_dict"
            )
        if "model" in parts:
            self.model.load_state_dict(checkpoint["model"])
        if "optimizer" in parts:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        if "scheduler" in parts and self.scheduler is not None:
            if checkpoint["scheduler"] is None:
                raise ValueError("the checkpoint has no scheduler state, but this loop has one")
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if "rng" in parts:
            restore_rng_state(checkpoint["rng"])
        self.steps_done = int(checkpoint["step"])


def task_loss(model: nn.Module, adapter: TaskAdapter, batch: Batch) -> torch.Tensor:
    """``adapter.loss(adapter.forward(model, batch), batch)`` as a scalar; a failure in either
    step is a ``TrainingStepError`` naming it."""
    try:
        outputs = adapter.forward(model, dict(batch))
    except Exception as exc:
        raise TrainingStepError("forward", exc) from exc
    try:
        loss = adapter.loss(outputs, dict(batch))
    except Exception as exc:
        raise TrainingStepError("loss", exc) from exc
    return loss.mean() if loss.dim() else loss


def save_checkpoint(loop: LeanLoop, path: str | Path) -> Path:
    """Write ``loop.state_dict()`` with ``torch.save``; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(loop.state_dict(), target)
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = None) -> Any:
    """Read a checkpoint with ``weights_only=True``: tensors and primitive containers only."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
