"""The export formats, their artifact files, and the errors of exporting and loading.

PYTEST_DONT_REWRITE

Standard library only: ``options.py`` parses ``--export-formats`` with ``parse_formats`` in every
pytest run, before anything heavy is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_modeltiers.errors import ModelTiersError

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ONNX_EXPORTERS",
    "QUANTIZATION_MODES",
    "QUANTIZED_FILE",
    "ArtifactError",
    "ExportError",
    "FormatInfo",
    "find_artifact",
    "format_info",
    "parse_formats",
]


@dataclass(frozen=True)
class FormatInfo:
    """One export format: its name and artifact file."""

    name: str
    filename: str


FORMATS: dict[str, FormatInfo] = {
    "onnx": FormatInfo("onnx", "model.onnx"),
    "torch_export": FormatInfo("torch_export", "model.pt2"),
    "torchscript": FormatInfo("torchscript", "model.torchscript.pt"),
    "pytorch": FormatInfo("pytorch", "model.safetensors"),
}
DEFAULT_FORMATS: tuple[str, ...] = ("onnx", "torch_export", "pytorch")
QUANTIZED_FILE = "model.int8.torchscript.pt"
QUANTIZATION_MODES: tuple[str, ...] = ("dynamic", "static", "none")
#: ``dynamo``: ``torch.onnx.export(dynamo=True)``; ``legacy``: the TorchScript-based exporter.
ONNX_EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
#: Where a bundle keeps its artifacts, relative to the bundle directory.
ARTIFACTS_DIR = "artifacts"


class ExportError(ModelTiersError):
    """A format could not be exported; the message is the actionable cause.

    ``format`` names the format; ``cause`` is one line; ``location`` is ``file:line in func``
    of the user's code when the exporter pointed at it; ``details`` is JSON-able evidence.
    """

    def __init__(
        self,
        format: str,
        cause: str,
        *,
        location: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(f"{format} export failed: {cause}")
        self.format = format
        self.cause = cause
        self.location = location
        self.details = dict(details or {})


class ArtifactError(ModelTiersError):
    """An artifact is missing, truncated, corrupt or does not match its model."""


def format_info(name: str) -> FormatInfo:
    """The format called ``name``; ``ValueError`` naming the known formats otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown export format {name!r}; known formats: {', '.join(FORMATS)}"
        ) from None


def parse_formats(value: str) -> tuple[str, ...]:
    """``"onnx, torch_export"`` -> ``("onnx", "torch_export")``; ``ValueError`` naming the fix."""
    names = [part.strip().lower() for part in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise ValueError(
            f"expected a comma-separated list of formats from {', '.join(FORMATS)}, got {value!r}"
        )
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ValueError(
            f"unknown format(s) {', '.join(unknown)} in {value!r}; known formats: "
            f"{', '.join(FORMATS)}"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"format(s) {', '.join(duplicates)} listed twice in {value!r}")
    return tuple(names)


def find_artifact(directory: Path, filename: str) -> Path | None:
    """The artifact ``filename`` in a bundle (``artifacts/``) or a plain export directory.

    One lookup for every reader (runtime, health checker, validation), so a bundle and a plain
    ``export_model`` directory are read the same way: helpers that looked in two
    different places and silently found nothing.
    """
    for candidate in (directory / ARTIFACTS_DIR / filename, directory / filename):
        if candidate.is_file():
            return candidate
    return None
