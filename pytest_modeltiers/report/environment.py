"""The versions a health report records, read without importing the packages.

PYTEST_DONT_REWRITE

The report is written at the end of every session that asks for one, including sessions that
never loaded torch (a ``--co`` run, a tier filtered to nothing). Importing torch, lightning or
onnx only to print their versions would cost seconds, so versions come from the installed
distributions' metadata (``importlib.metadata``). A package that is not installed is ``None``
(JSON null), never a guessed version.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__all__ = ["ENVIRONMENT_KEYS", "collect_environment", "distribution_version"]

#: Report key -> distributions that provide it, first installed one wins (GPU builds of some
#: packages are published under another name).
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "pytest": ("pytest",),
    "hypothesis": ("hypothesis",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "lightning": ("lightning", "pytorch-lightning"),
}

#: Every key of the environment object, in report order.
ENVIRONMENT_KEYS: tuple[str, ...] = ("python", "platform", *_DISTRIBUTIONS)


def distribution_version(*names: str) -> str | None:
    """Version of the first of ``names`` that is installed, or ``None`` if none is."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def collect_environment() -> dict[str, str | None]:
    """Python, platform and package versions of this process, keyed as ``ENVIRONMENT_KEYS``."""
    environment: dict[str, str | None] = {
        "python": f"{platform.python_version()} ({sys.implementation.name})",
        "platform": platform.platform(),
    }
    for key, names in _DISTRIBUTIONS.items():
        environment[key] = distribution_version(*names)
    return environment
