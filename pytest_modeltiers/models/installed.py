"""Whether a model file is an installed distribution's own, unmodified file.

PYTEST_DONT_REWRITE

A file under a folder named ``site-packages`` is not thereby installed: anyone can make such a
folder, or edit an installed file. The scan is skipped only for a file that an installed
distribution's ``RECORD`` lists, when every Python file of that distribution's package it sits
in still has the sha256 ``RECORD`` gives; anything else is scanned like any model file.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path

__all__ = ["unmodified_distribution"]

_SITE_FOLDERS = ("site-packages", "dist-packages")


def unmodified_distribution(path: Path) -> str | None:
    """``"name version"`` of the installed distribution ``path`` belongs to, when that
    distribution's Python files in the same top-level package match its ``RECORD``; else None.
    """
    real = path.resolve()
    site = next((p for p in real.parents if p.name in _SITE_FOLDERS), None)
    if site is None:
        return None
    relative = real.relative_to(site)
    for distribution in importlib.metadata.distributions(path=[str(site)]):
        files = distribution.files or []
        if not any(Path(str(f)) == relative for f in files):
            continue
        package = relative.parts[0]
        checked = [f for f in files if Path(str(f)).parts[0] == package and f.suffix == ".py"]
        if all(_matches_record(site / str(f), f.hash) for f in checked):
            return f"{distribution.metadata['Name']} {distribution.version}"
        return None
    return None


def _matches_record(file: Path, recorded: importlib.metadata.FileHash | None) -> bool:
    if recorded is None or recorded.mode != "sha256":
        return False
    try:
        digest = hashlib.sha256(file.read_bytes()).digest()
    except OSError:
        return False
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == recorded.value
