"""The fingerprint of a run's data: a sha256 over every example, in order.

PYTEST_DONT_REWRITE

Two runs with the same fingerprint trained and validated on the same examples in the same
order. Each example (a mapping of names to tensors or plain values) is hashed with its keys,
dtypes and shapes, so a cast or a reshape changes it too. A DataLoader or an iterable dataset
is not read (reading it would consume or reshuffle it): the fingerprint says so instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

__all__ = ["data_fingerprint", "dataset_fingerprint"]


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"map:")
        for key in sorted(value, key=str):
            digest.update(f"{key}=".encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq{len(value)}:".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def dataset_fingerprint(source: Any) -> dict[str, Any]:
    """``{"examples": n, "sha256": ...}``, or ``{"sha256": None, "reason": ...}`` for data that
    cannot be read without side effects."""
    if source is None:
        return {"examples": 0, "sha256": None, "reason": "no data"}
    if isinstance(source, DataLoader):
        return {"sha256": None, "reason": "a DataLoader: not read, to leave its order untouched"}
    if isinstance(source, IterableDataset) or not hasattr(source, "__len__"):
        return {"sha256": None, "reason": "an iterable dataset: not read, it may be consumed"}
    digest = hashlib.sha256()
    count = len(source)
    for index in range(count):
        _update(digest, source[index])
    return {"examples": count, "sha256": digest.hexdigest()}


def data_fingerprint(train: Any, validation: Any, described: str) -> dict[str, Any]:
    """The fingerprints of a run's training and validation data; ``described`` says what the
    data was (``the shipped lm_tiny dataset``, ``the given Dataset``...)."""
    return {
        "source": described,
        "train": dataset_fingerprint(train),
        "validation": dataset_fingerprint(validation),
    }
