"""An exported artifact on disk, its content hash, and the staging that writes it atomically.

PYTEST_DONT_REWRITE

Every exporter (the formats' and the quantized model's) writes into ``staged``: a staging
directory next to the target whose files are moved into place only when the export succeeded,
so a failed or interrupted export never leaves a partial artifact.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.digest import file_sha256
from pytest_modeltiers.export.formats import ExportError

if TYPE_CHECKING:
    from pytest_modeltiers.export.signature import ExportSignature

__all__ = ["ExportedArtifact", "file_sha256", "staged"]


@dataclass
class ExportedArtifact:
    """An artifact on disk: its format, main file, every file, and what the export found."""

    format: str
    path: Path
    signature: ExportSignature
    seconds: float
    files: tuple[Path, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.files:
            self.files = (self.path,)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.is_file())

    @functools.cached_property
    def file_digests(self) -> dict[Path, tuple[str, int]]:
        """SHA-256 and size of each file, computed once: an artifact is complete when it is
        made, and ``metadata.json`` is rewritten after every later export."""
        return {f: (file_sha256(f), f.stat().st_size) for f in self.files}


# --------------------------------------------------------------------------- staging


@contextlib.contextmanager
def staged(directory: Path, fmt: str) -> Iterator[Path]:
    """A fresh staging directory in ``directory``; its files replace the targets on success.

    Each file is moved with ``os.replace`` (atomic on one filesystem); on any failure the
    staging directory is removed and the targets are untouched.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{fmt}-", suffix=".staging", dir=directory))
    try:
        yield stage
        for item in sorted(stage.iterdir()):
            if item.stat().st_size == 0:
                raise ExportError(fmt, f"the exporter wrote an empty file {item.name}")
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(item, directory / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
