"""Tier 4: exporting a model, loading the artifact back, and checking that it behaves the same.

PYTEST_DONT_REWRITE
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
    "ExportedArtifact": "pytest_modeltiers.export.artifacts",
    "export_format": "pytest_modeltiers.export.exporters",
    "export_model": "pytest_modeltiers.export.exporters",
    "ONNXExporter": "pytest_modeltiers.export.onnx_exporter",
    "load_artifact": "pytest_modeltiers.export.runtime",
    "load_exported_model": "pytest_modeltiers.export.runtime",
    "ExportedModel": "pytest_modeltiers.export.runtime",
    "compare_outputs": "pytest_modeltiers.export.parity",
    "ParityStats": "pytest_modeltiers.export.parity",
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
