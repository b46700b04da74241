"""``ONNXExporter``: the usage guide's ONNX exporter object, on this package's ONNX export.

PYTEST_DONT_REWRITE

The guide configures ONNX export as an object (``ONNXExporter(opset_version=16, optimize=True,
validate=True)``). Here it holds those settings and exports through :func:`export_onnx` (the
dynamo exporter, axes named after the task's signature); ``validate`` checks the written file
against eager PyTorch at the tier 4 sweep's shapes under the tier 4 tolerances, so an artifact
that computes something else is an ``ExportError`` at export time, not in production.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_modeltiers.config._util import is_int
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.export.artifacts import ExportedArtifact
from pytest_modeltiers.export.formats import ONNX_EXPORTERS, ExportError
from pytest_modeltiers.export.tolerances import ToleranceTable

if TYPE_CHECKING:
    from torch import nn

    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["ONNXExporter"]


@dataclass(frozen=True)
class ONNXExporter:
    """ONNX export settings: ``opset_version`` (None: the exporter's default), ``optimize``
    (graph optimisation), ``validate`` (parity with eager PyTorch after export, at up to
    ``max_batch`` examples per shape, under ``tolerances``), ``exporter`` (``"dynamo"`` or
    ``"legacy"``, the TorchScript-based one)."""

    opset_version: int | None = None
    optimize: bool = True
    validate: bool = True
    exporter: str = "dynamo"
    max_batch: int = 2
    tolerances: ToleranceTable = field(default_factory=ToleranceTable)

    def __post_init__(self) -> None:
        opset = self.opset_version
        if opset is not None and (not is_int(opset) or opset < 7):
            raise ConfigError(f"opset_version must be an integer >= 7 or None, got {opset!r}")
        for name in ("optimize", "validate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.exporter not in ONNX_EXPORTERS:
            raise ConfigError(
                f"exporter must be one of {', '.join(ONNX_EXPORTERS)}, got {self.exporter!r}"
            )
        if not is_int(self.max_batch) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")

    def export(
        self,
        model: nn.Module,
        adapter: TaskAdapter,
        task_spec: TaskSpec,
        export_dir: str | os.PathLike[str],
    ) -> ExportedArtifact:
        """Write ``export_dir/model.onnx`` and, with ``validate``, check it; ``ExportError``
        naming the cause (or the shape and the difference) otherwise."""
        from pytest_modeltiers.export.exporters import export_onnx
        from pytest_modeltiers.export.signature import build_signature

        directory = Path(export_dir)
        directory.mkdir(parents=True, exist_ok=True)
        signature, tensors = build_signature(model, adapter, task_spec)
        artifact = export_onnx(
            model,
            adapter,
            signature,
            tensors,
            directory,
            exporter=self.exporter,
            opset=self.opset_version,
            optimize=self.optimize,
        )
        written = (artifact.details.get("opset") or {}).get("ai.onnx")
        if self.opset_version is not None and written != self.opset_version:
            raise ExportError(
                "onnx",
                f"opset {self.opset_version} was asked for but the {self.exporter} exporter "
                f"wrote opset {written} ({artifact.path}): the model's ops do not convert to "
                f"opset {self.opset_version}. Pass opset_version={written}, or "
                "exporter='legacy' (the TorchScript-based exporter writes older opsets)",
                details={"requested_opset": self.opset_version, "written_opset": written},
            )
        if self.validate:
            self._check_parity(model, adapter, task_spec, artifact)
        return artifact

    def _check_parity(
        self,
        model: nn.Module,
        adapter: TaskAdapter,
        task_spec: TaskSpec,
        artifact: ExportedArtifact,
    ) -> None:
        import torch

        from pytest_modeltiers.export.parity import compare_outputs
        from pytest_modeltiers.export.runtime import load_artifact
        from pytest_modeltiers.export.shapes import fixed_sweep, sweep_batch
        from pytest_modeltiers.export.signature import ExportWrapper
        from pytest_modeltiers.models.running import preserved_model

        signature = artifact.signature
        runner = load_artifact("onnx", artifact.path, signature)
        wrapper = ExportWrapper(model, adapter, signature)
        for shape in fixed_sweep(task_spec, signature, self.max_batch):
            inputs = adapter.prepare_inputs(sweep_batch(task_spec, shape), task_spec)
            with preserved_model(model, training=False), torch.no_grad():
                reference = wrapper(*signature.select(inputs)).detach().cpu()
            output = runner(inputs)
            where = f"at input shape {shape.describe()}"
            try:
                stats = compare_outputs(
                    output,
                    reference,
                    self.tolerances.get("onnx", str(reference.dtype).removeprefix("torch.")),
                )
            except ValueError as exc:
                raise ExportError("onnx", f"the artifact's output {where}: {exc}") from None
            if not stats.ok:
                raise ExportError(
                    "onnx",
                    f"the artifact differs from eager PyTorch {where}: max abs difference "
                    f"{stats.max_abs:.3g}, {stats.mismatches} of {stats.elements} values outside "
                    "the tolerance. Look for ops the exporter translates differently, or pass "
                    "ONNXExporter(tolerances=...) if the difference is acceptable",
                    details=stats.to_dict(),
                )
