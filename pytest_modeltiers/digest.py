"""The sha256 of a file's content, read in blocks: what artifacts, bundles and baselines record.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256", "file_sha256_and_size"]

_BLOCK = 1 << 20


def file_sha256_and_size(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of the file, from one read of it."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of the file's content."""
    return file_sha256_and_size(path)[0]
