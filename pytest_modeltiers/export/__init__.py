"""Tier 4: exporting a model, loading the artifact back, and checking that it behaves the same.

PYTEST_DONT_REWRITE

What lives where (one job per module):

- ``formats``: the four formats, their file names, parsing a format list (standard library);
- ``tolerances``: parity tolerances per format and dtype, from defaults, ``pyproject.toml`` and
  options (standard library);
- ``signature``: which tensors the artifact takes, which of their dimensions are dynamic, and
  the wrapper module that is actually exported (adapter call plus logits);
- ``diagnose``: an exporter's exception turned into one actionable cause with the user's
  file and line;
- ``exporters``: one exporter per format, written atomically, and ``export_model``;
- ``runtime``: loading an artifact back (``load_artifact``, ``load_exported_model``);
- ``parity``: comparing an artifact's output with eager PyTorch (errors, minimal tolerance,
  mismatch fraction, top-1 agreement);
- ``shapes``: the shape sweep and its Hypothesis strategy;
- ``quantization``: dynamic and static int8 models and their artifact;
- ``latency``: median and p90 timings per format;
- ``health``: ``ExportHealthChecker`` and ``ExportHealthReport``;
- ``bundle``: ``create_export_bundle``;
- ``cache``: export once per format and pytest session (behind the ``exported_model`` fixture);
- ``validation``: one call that runs tier 4 as a library and its JSON summary (for the CLI).

This package's own ``__init__`` imports nothing heavy, so ``options.py`` can use the standard
library modules above in every pytest run. The public names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArtifactError": "pytest_modeltiers.export.formats",
    "ExportError": "pytest_modeltiers.export.formats",
    "FORMATS": "pytest_modeltiers.export.formats",
    "DEFAULT_FORMATS": "pytest_modeltiers.export.formats",
    "Tolerance": "pytest_modeltiers.export.tolerances",
    "ToleranceTable": "pytest_modeltiers.export.tolerances",
    "ExportSignature": "pytest_modeltiers.export.signature",
    "ExportedArtifact": "pytest_modeltiers.export.exporters",
    "export_format": "pytest_modeltiers.export.exporters",
    "export_model": "pytest_modeltiers.export.exporters",
    "load_artifact": "pytest_modeltiers.export.runtime",
    "load_exported_model": "pytest_modeltiers.export.runtime",
    "ExportedModel": "pytest_modeltiers.export.runtime",
    "compare_outputs": "pytest_modeltiers.export.parity",
    "ParityStats": "pytest_modeltiers.export.parity",
    "ExportHealthChecker": "pytest_modeltiers.export.health",
    "ExportHealthReport": "pytest_modeltiers.export.health",
    "create_export_bundle": "pytest_modeltiers.export.bundle",
    "run_export_validation": "pytest_modeltiers.export.validation",
    "tier4_summary": "pytest_modeltiers.export.validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_modeltiers.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
