"""Export once per format and session: what the ``exported_model`` fixture hands to tests.

PYTEST_DONT_REWRITE

An ``ExportCache`` belongs to one model. It builds the reference model once (eval mode; the
"live model" every artifact is compared with), traces the ``torch.export`` program once (the
ONNX exporter converts that same program), and exports each format on first request. Every
export, artifact load and quantization is bounded by the session's ``--modeltiers-timeout``.

Failures are kept, not raised: ``outcome(fmt)`` returns an ``ExportOutcome`` whose ``error``
says why the format has no artifact, so ``test_export[fmt]`` fails with the cause while the
other formats' tests carry on. After each export the directory's ``metadata.json`` is rewritten
(atomically) to list every artifact exported so far, with its SHA-256.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.export.exporters import (
    ExportedArtifact,
    export_format,
    metadata_dict,
    needs_program,
    trace_program,
    write_metadata,
)
from pytest_modeltiers.export.formats import ExportError
from pytest_modeltiers.export.quantization import (
    QuantizationUnavailable,
    export_quantized,
    quantize_model,
)
from pytest_modeltiers.export.runtime import ArtifactRunner, load_artifact
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper, build_signature
from pytest_modeltiers.export.tolerances import ToleranceTable
from pytest_modeltiers.timeouts import call_with_timeout

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.export.quantization import QuantizedModel
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["ExportCache", "ExportOutcome", "QuantizedOutcome"]


@dataclass
class ExportOutcome:
    """One format's export: the artifact and its loaded runner, or why there is none.

    ``error`` is an ``ExportError`` (the exporter failed), an ``ArtifactError`` (the file was
    written but does not load), or any other exception (the model or adapter failed first).
    ``smoke_error`` is set when the artifact loaded but failed on the export example itself.
    """

    format: str
    artifact: ExportedArtifact | None = None
    runner: ArtifactRunner | None = None
    error: BaseException | None = None
    smoke_error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.runner is not None and self.error is None and self.smoke_error is None


@dataclass
class QuantizedOutcome:
    """The int8 model and its artifact, or the reason there is none."""

    mode: str
    model: QuantizedModel | None = None
    artifact: ExportedArtifact | None = None
    runner: ArtifactRunner | None = None
    unavailable: str | None = None
    error: BaseException | None = None


class ExportCache:
    """Exports of one model, made on first request and kept for the session.

    The reference model is ``model`` when given, else ``model_factory()`` built on first use;
    ``model_factory`` also rebuilds the architecture for the ``pytorch`` format.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        adapter: TaskAdapter,
        task: TaskSpec,
        directory: Path,
        *,
        onnx_exporter: str = "dynamo",
        opset: int | None = None,
        timeout: float = 300.0,
        tolerances: ToleranceTable | None = None,
        max_batch: int = 8,
        quantization: str = "dynamic",
        model: nn.Module | None = None,
    ) -> None:
        self.model_factory = model_factory
        self.adapter = adapter
        self.task = task
        self.directory = Path(directory)
        self.onnx_exporter = onnx_exporter
        self.opset = opset
        self.timeout = timeout
        self.tolerances = tolerances or ToleranceTable()
        self.max_batch = max_batch
        self.quantization = quantization
        self._model: nn.Module | None = None if model is None else model.eval()
        self._signature: tuple[ExportSignature, tuple[torch.Tensor, ...]] | None = None
        self._program: Any = None
        self._outcomes: dict[str, ExportOutcome] = {}
        self._quantized: QuantizedOutcome | None = None

    def __repr__(self) -> str:
        return f"<ExportCache {self.task.name} in {self.directory}: {sorted(self._outcomes)}>"

    def _bounded(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_with_timeout(fn, self.timeout, what)

    # -- the reference ------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The reference model (built once, eval mode): what every artifact is compared with."""
        if self._model is None:
            self._model = self.model_factory().eval()
        return self._model

    @property
    def signature(self) -> ExportSignature:
        return self._traced_inputs()[0]

    @property
    def example_tensors(self) -> tuple[torch.Tensor, ...]:
        return self._traced_inputs()[1]

    def _traced_inputs(self) -> tuple[ExportSignature, tuple[torch.Tensor, ...]]:
        if self._signature is None:
            self._signature = self._bounded(
                "running the model on the export example",
                lambda: build_signature(self.model, self.adapter, self.task),
            )
        return self._signature

    def reference(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eager logits of the reference model for artifact inputs (eval mode, no grad)."""
        wrapper = ExportWrapper(self.model, self.adapter, self.signature)
        with torch.no_grad():
            return wrapper(*self.signature.select(inputs)).detach().cpu()

    def program(self) -> torch.export.ExportedProgram:
        """The ``torch.export`` program (traced once); raises its ``ExportError`` every time."""
        if self._program is None:
            try:
                self._program = self._bounded(
                    "torch.export",
                    lambda: trace_program(
                        self.model, self.adapter, self.signature, self.example_tensors
                    ),
                )
            except Exception as exc:
                self._program = exc
        if isinstance(self._program, BaseException):
            raise self._program
        program: torch.export.ExportedProgram = self._program
        return program

    # -- exports ------------------------------------------------------------------------------

    def outcome(self, fmt: str) -> ExportOutcome:
        """Export ``fmt`` (first call) and return its outcome; never raises for the model."""
        if fmt not in self._outcomes:
            import time

            start = time.perf_counter()
            outcome = self._export(fmt)
            outcome.seconds = time.perf_counter() - start
            self._outcomes[fmt] = outcome
            if outcome.artifact is not None:
                self._write_metadata()
        return self._outcomes[fmt]

    def _export(self, fmt: str) -> ExportOutcome:
        outcome = ExportOutcome(fmt)
        try:
            signature, tensors = self._traced_inputs()
            program = None
            if needs_program(fmt, self.onnx_exporter):
                try:
                    program = self.program()
                except ExportError:
                    if fmt == "torch_export":
                        raise
                    # ONNX then runs its own export strategies, whose result is checked too.
            outcome.artifact = self._bounded(
                f"exporting {fmt}",
                lambda: export_format(
                    fmt,
                    self.model,
                    self.adapter,
                    signature,
                    tensors,
                    self.directory,
                    program=program,
                    onnx_exporter=self.onnx_exporter,
                    opset=self.opset,
                ),
            )
            outcome.runner = self.load(fmt, outcome.artifact)
        except Exception as exc:  # an exporter's, a loader's, the model's or the adapter's
            outcome.error = exc
            return outcome
        try:
            example = dict(zip(signature.names, tensors, strict=True))
            self._bounded(f"running the {fmt} artifact", lambda: outcome.runner(example))  # type: ignore[misc]
        except Exception as exc:
            outcome.smoke_error = exc
        return outcome

    def load(self, fmt: str, artifact: ExportedArtifact) -> ArtifactRunner:
        """Load ``artifact`` back the way a user would (the ``pytorch`` format via the factory)."""
        return self._bounded(
            f"loading the {fmt} artifact",
            lambda: load_artifact(
                fmt,
                artifact.path,
                artifact.signature,
                adapter=self.adapter,
                model_factory=self.model_factory,
                torchscript_mode=str(artifact.details.get("mode", "trace")),
            ),
        )

    def _write_metadata(self) -> None:
        artifacts = {fmt: o.artifact for fmt, o in self._outcomes.items() if o.artifact is not None}
        quantized = self._quantized.artifact if self._quantized is not None else None
        mode = self._quantized.mode if self._quantized is not None else None
        data = metadata_dict(
            self.directory,
            self.signature,
            artifacts,
            task=self.task,
            model=self.model,
            quantized=quantized,
            quantization=mode if quantized is not None else None,
        )
        write_metadata(self.directory, data)

    # -- quantization -------------------------------------------------------------------------

    def quantized(self) -> QuantizedOutcome:
        """The int8 model of ``--export-quantization`` and its artifact (made once)."""
        if self._quantized is None:
            self._quantized = self._quantize()
            if self._quantized.artifact is not None:
                self._write_metadata()
        return self._quantized

    def _quantize(self) -> QuantizedOutcome:
        mode = self.quantization
        outcome = QuantizedOutcome(mode)
        if mode == "none":
            outcome.unavailable = "quantization is off (--export-quantization none)"
            return outcome
        try:
            signature, tensors = self._traced_inputs()
            outcome.model = self._bounded(
                f"{mode} quantization",
                lambda: quantize_model(self.model, self.adapter, self.task, mode),
            )
            outcome.artifact = self._bounded(
                "exporting the int8 model",
                lambda: export_quantized(
                    outcome.model,  # type: ignore[arg-type]
                    self.adapter,
                    signature,
                    tensors,
                    self.directory,
                ),
            )
            outcome.runner = self.load("quantized", outcome.artifact)
        except QuantizationUnavailable as exc:
            outcome.unavailable = str(exc)
        except Exception as exc:
            outcome.error = exc
        return outcome
