"""Checkpoints of ``run_training``: what they hold, and reading them safely.

PYTEST_DONT_REWRITE

A run's checkpoints are Lightning's own (``trainer.fit(ckpt_path=...)`` resumes from them:
model, optimizers, LR schedulers, epoch and step counters, early-stopping and checkpointing
state), plus a ``"modeltiers"`` section written by the training module: the format version,
the task, the model class, the global RNG states (torch, CUDA, Python, NumPy, from
``lean_loop.capture_rng_state``) and the key prefix of the model's weights. Every value is a
tensor, a number, a string or a list/dict of them, so they load with
``torch.load(path, weights_only=True)``: opening a checkpoint cannot execute code. The run
refuses to resume from anything that does not load that way.

``load_model_weights(path)`` gives the plain ``state_dict`` of the user's model (without the
Lightning module's ``model.`` prefix), ready for ``model.load_state_dict``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pytest_modeltiers.errors import ModelTiersError

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_PREFIX",
    "SECTION",
    "CheckpointError",
    "load_model_weights",
    "model_state_dict",
    "read_checkpoint",
    "unpickling_reason",
]

#: Version of the ``"modeltiers"`` section.
CHECKPOINT_FORMAT = 1
#: Key of our section in a Lightning checkpoint.
SECTION = "modeltiers"
#: Attribute of the Lightning module that holds the user's model, hence its weights' prefix.
MODEL_PREFIX = "model."


class CheckpointError(ModelTiersError):
    """A checkpoint is missing, unreadable with ``weights_only=True``, or not a run's."""


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; ``CheckpointError`` names the problem."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {file} does not exist (resume_from_checkpoint must name a .ckpt file "
            "written by run_training, for example <run_dir>/checkpoints/last.ckpt)"
        )
    try:
        data = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {file} cannot be loaded with torch.load(weights_only=True): "
            f"{unpickling_reason(exc)}. Only files holding tensors and plain containers are "
            "accepted (loading anything else can run arbitrary code); a model whose "
            "state_dict() holds other objects (get_extra_state returning a custom class) "
            "cannot be checkpointed safely."
        ) from exc
    if not isinstance(data, Mapping) or "state_dict" not in data:
        raise CheckpointError(
            f"{file} is not a training checkpoint: it has no 'state_dict' "
            f"(keys: {sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__})"
        )
    return dict(data)


def unpickling_reason(exc: BaseException) -> str:
    """The useful line of torch's long weights-only error ("Unsupported global: ..."), or the
    exception's text, cut to a length that fits a CI log line."""
    text = str(exc)
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|\n|$)", text)
    reason = match.group(1).strip() if match else text.strip()
    reason = re.sub(r"\x1b\[[0-9;]*m", "", reason)
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return f"{type(exc).__name__}: {reason}"


def model_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The user's model weights from a run checkpoint (the module prefix removed)."""
    section = checkpoint.get(SECTION) or {}
    prefix = str(section.get("model_prefix", MODEL_PREFIX))
    state = checkpoint["state_dict"]
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def load_model_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``model_state_dict(read_checkpoint(path))``: weights for ``model.load_state_dict``."""
    return model_state_dict(read_checkpoint(path))
