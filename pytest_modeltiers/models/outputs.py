"""Normalise whatever a model's ``forward`` returns into the tensors the checks need.

PYTEST_DONT_REWRITE

Models return logits in many shapes of container: a bare tensor (most hand-written models), a
tuple whose first element is the logits (nanoGPT's ``(logits, loss)``, TorchScript), a mapping,
or a Hugging Face ``ModelOutput``. ``ModelOutput`` subclasses ``OrderedDict``, so it is handled
as a ``Mapping`` and this module never imports transformers. Anything else is an error that names
the type: guessing which tensor is "the logits" would let a check silently test the wrong thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pytest_modeltiers.errors import AdapterError

__all__ = ["describe_output", "extract_attentions", "extract_logits"]


def describe_output(outputs: Any) -> str:
    """A short description of a model output for error messages (type, and shape or keys)."""
    if isinstance(outputs, torch.Tensor):
        return f"Tensor{list(outputs.shape)}"
    if isinstance(outputs, Mapping):
        return f"{type(outputs).__name__} with keys {sorted(map(str, outputs.keys()))}"
    if isinstance(outputs, (tuple, list)):
        inner = ", ".join(describe_output(item) for item in outputs[:4])
        more = ", ..." if len(outputs) > 4 else ""
        return f"{type(outputs).__name__}({inner}{more})"
    return type(outputs).__name__


def extract_logits(outputs: Any) -> torch.Tensor:
    """Return the logits tensor from a model output.

    Order: a tensor is itself; a mapping (``ModelOutput`` included) gives its ``"logits"``; a
    named tuple with a ``logits`` field gives that field; another tuple or list gives its first
    tensor element. Raises ``AdapterError`` when none applies.
    """
    __tracebackhide__ = True
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        if "logits" in outputs and isinstance(outputs["logits"], torch.Tensor):
            return outputs["logits"]
        raise AdapterError(
            f"the model returned a {type(outputs).__name__} without a 'logits' tensor; keys "
            f"present: {sorted(map(str, outputs.keys()))}. Return the logits under the key "
            "'logits', or return the logits tensor itself."
        )
    if isinstance(outputs, tuple) and "logits" in getattr(outputs, "_fields", ()):
        value = outputs.logits  # type: ignore[attr-defined]
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(outputs, (tuple, list)):
        for item in outputs:
            if isinstance(item, torch.Tensor):
                return item
        raise AdapterError(
            f"the model returned a {type(outputs).__name__} with no tensor in it "
            f"({describe_output(outputs)}); the first tensor element is taken as the logits."
        )
    raise AdapterError(
        f"cannot read logits from a model output of type {type(outputs).__name__}. Supported "
        "outputs: a tensor, a tuple or list whose first tensor is the logits, or a mapping or "
        "Hugging Face ModelOutput with a 'logits' key. Return one of these from forward, or "
        "pass a custom adapter with --adapter package.module:Class."
    )


def extract_attentions(outputs: Any, key: str = "attentions") -> list[torch.Tensor] | None:
    """Return the attention maps stored under ``key`` in a mapping output, else ``None``.

    Only mappings (``ModelOutput`` included) carry named attention maps; a bare tensor or a
    tuple has no way to say which element is attention, so it gives ``None`` ("not provided"),
    never a guess. A present but malformed value is an ``AdapterError``.
    """
    __tracebackhide__ = True
    if not isinstance(outputs, Mapping):
        return None
    value = outputs.get(key)
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(item, torch.Tensor) for item in value):
        return list(value)
    raise AdapterError(
        f"the model output's {key!r} must be a tensor or a sequence of tensors (one per layer), "
        f"got {describe_output(value)}."
    )
