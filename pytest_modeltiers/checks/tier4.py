"""Tier 4 checks: does the exported artifact behave like the model? (Suite, CLI and users.)

PYTEST_DONT_REWRITE

Plain functions returning ``CheckResult`` (tier 4), named after the built-in tests:

- ``check_export(outcome)``: ``test_export[FORMAT]``: the artifact exists, loads and runs the
  export example; otherwise the exporter's actionable cause. A TorchScript trace that froze
  values computed from the input (TracerWarning) passes with a warning naming the line.
- ``ParitySweep.check(...)``: ``test_export_parity[FORMAT]`` (and ``test_quantized_parity``) at
  one input shape; the sweep accumulates, so the last result of a sweep also carries its worst
  error over every shape checked.
- ``check_export_latency``: ``test_export_latency``: median and p90 per format at two shapes,
  speed-up against eager; fails only over ``budget_ms``.
- ``check_export_health``: ``test_export_health``: the ``ExportHealthReport``'s verdict.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from pytest_modeltiers.export.cache import ExportOutcome
from pytest_modeltiers.export.formats import ArtifactError, ExportError
from pytest_modeltiers.export.parity import compare_outputs
from pytest_modeltiers.export.signature import ExportSignature
from pytest_modeltiers.export.tolerances import Tolerance
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.models.timing import elapsed, time_interleaved
from pytest_modeltiers.report import CheckResult

__all__ = [
    "EXPORT",
    "HEALTH",
    "LATENCY",
    "PARITY",
    "QUANTIZED",
    "ParitySweep",
    "check_export",
    "check_export_health",
    "check_export_latency",
]

TIER = 4
EXPORT = "test_export"
PARITY = "test_export_parity"
LATENCY = "test_export_latency"
QUANTIZED = "test_quantized_parity"
HEALTH = "test_export_health"

Inputs = dict[str, torch.Tensor]


def _kb(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KiB" if nbytes < 2**20 else f"{nbytes / 2**20:.1f} MiB"


def _axes_text(signature: ExportSignature) -> str:
    parts = []
    for spec in signature.inputs:
        dims = [spec.axes.get(i, str(size)) for i, size in enumerate(spec.shape)]
        parts.append(f"{spec.name}[{','.join(dims)}]")
    return " ".join(parts)


# --------------------------------------------------------------------------- test_export


def check_export(outcome: ExportOutcome) -> CheckResult:
    """``test_export[FORMAT]``: passed with the artifact's facts, or failed with the cause."""
    name = f"{EXPORT}[{outcome.format}]"
    seconds = outcome.seconds
    error = outcome.error
    if isinstance(error, ExportError):
        return CheckResult.failed(
            name,
            TIER,
            f"{outcome.format} export failed: {error.cause}",
            {"format": outcome.format, "location": error.location, **error.details},
            duration_seconds=seconds,
        )
    if isinstance(error, ArtifactError):
        return CheckResult.failed(
            name,
            TIER,
            f"the {outcome.format} artifact was written but cannot be loaded back: {error}",
            {"format": outcome.format, "error": str(error)},
            duration_seconds=seconds,
        )
    if error is not None:
        return CheckResult.failed(
            name,
            TIER,
            f"exporting {outcome.format} failed before the exporter ran: "
            f"{describe_model_exception(error)}. The model (or its adapter) must run on the "
            "export example, a batch of 2 at the task's shapes.",
            {"format": outcome.format, **exception_details(error)},
            duration_seconds=seconds,
        )
    artifact = outcome.artifact
    if artifact is None or outcome.runner is None:
        raise ValueError(f"outcome for {outcome.format} has neither an artifact nor an error")
    details: dict[str, Any] = {
        "format": outcome.format,
        "artifact": str(artifact.path),
        "files": [str(f) for f in artifact.files],
        "bytes": artifact.bytes,
        "export_seconds": artifact.seconds,
        "signature": artifact.signature.to_dict(),
        **artifact.details,
    }
    if outcome.smoke_error is not None:
        return CheckResult.failed(
            name,
            TIER,
            f"the {outcome.format} artifact loads but fails on the export example itself "
            f"({_example_shape(artifact.signature)}): "
            f"{describe_exception(outcome.smoke_error)}",
            details,
            duration_seconds=seconds,
        )
    summary = (
        f"exported {outcome.format} to {artifact.path} ({_kb(artifact.bytes)}, "
        f"{artifact.seconds:.2f} s); inputs {_axes_text(artifact.signature)}"
    )
    if outcome.format == "onnx":
        opset = artifact.details.get("opset", {}).get("ai.onnx")
        summary += (
            f"; opset {opset}, {artifact.details.get('num_nodes')} nodes, dynamic dims symbolic"
        )
    if artifact.details.get("fallback") == "legacy":
        return CheckResult.warning(
            name,
            TIER,
            f"{summary}; exported with the TorchScript-based ONNX exporter because the dynamo "
            f"exporter failed ({artifact.details.get('dynamo_error')}). The older exporter can "
            f"bake input sizes into the graph: test_export_parity[onnx] sweeps other shapes.",
            details,
            duration_seconds=seconds,
        )
    if artifact.warnings:
        return CheckResult.warning(
            name,
            TIER,
            f"{summary}; but the trace froze values computed from the input, so the artifact "
            f"may follow one path for every input: {'; '.join(artifact.warnings[:3])}. "
            f"test_export_parity[{outcome.format}] shows whether other inputs differ.",
            details,
            duration_seconds=seconds,
        )
    return CheckResult.passed(name, TIER, summary + ".", details, duration_seconds=seconds)


def _example_shape(signature: ExportSignature) -> str:
    """``"input_ids[2,8] attention_mask[2,8]"``: the shapes the artifact was exported from."""
    return " ".join(f"{s.name}[{','.join(str(d) for d in s.shape)}]" for s in signature.inputs)


# --------------------------------------------------------------------------- parity


def _pretty(value: float) -> str:
    return f"{value:.3g}"


class ParitySweep:
    """One artifact checked against the eager model over a sweep of input shapes.

    ``check`` compares one batch; each returned result's details include the sweep so far
    (``shapes_checked``, ``worst_max_abs_diff``, ``worst_max_rel_error`` and the shape of each,
    and ``errors_by_shape``, the largest errors of each shape, for the report's plot), so the
    last recorded result summarises the whole sweep.
    """

    #: ``errors_by_shape`` keeps at most this many shapes (the first ones compared).
    MAX_SHAPES = 64

    def __init__(
        self,
        label: str,
        check_name: str,
        signature: ExportSignature,
        tolerance_for: Callable[[str], Tolerance],
        *,
        run_artifact: Callable[[Inputs], torch.Tensor],
        run_eager: Callable[[Inputs], torch.Tensor],
        prepare: Callable[[dict[str, Any]], Inputs],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.label = label
        self.extra = dict(extra or {})
        self.check_name = check_name
        self.signature = signature
        self.tolerance_for = tolerance_for
        self.run_artifact = run_artifact
        self.run_eager = run_eager
        self.prepare = prepare
        self.shapes: set[str] = set()
        self.worst_abs = (0.0, "")
        self.worst_rel = (0.0, "")
        self.worst_top1: tuple[float, str] | None = None
        self.errors: dict[str, tuple[float, float]] = {}

    def _sweep(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "shapes_checked": len(self.shapes),
            "errors_by_shape": [
                {"input": shape, "max_abs_diff": abs_err, "max_rel_error": rel_err}
                for shape, (abs_err, rel_err) in self.errors.items()
            ],
            "worst_max_abs_diff": self.worst_abs[0],
            "worst_max_abs_diff_shape": self.worst_abs[1],
            "worst_max_rel_error": self.worst_rel[0],
            "worst_max_rel_error_shape": self.worst_rel[1],
        }
        if self.worst_top1 is not None:
            data["worst_top1_agreement"] = self.worst_top1[0]
            data["worst_top1_agreement_shape"] = self.worst_top1[1]
        return data

    def check(self, batch: dict[str, Any]) -> CheckResult:
        """Compare the artifact with eager PyTorch on ``batch`` (a raw batch of the task)."""
        start = time.perf_counter()
        name = self.check_name
        try:
            inputs = self.prepare(batch)
        except Exception as exc:
            return CheckResult.error(
                name, 4, f"the adapter cannot prepare this batch: {describe_exception(exc)}"
            )
        shape = self.signature.shape_of(inputs)
        self.shapes.add(shape)
        base = {
            **self.extra,
            "format": self.label,
            "input": shape,
            "export_example": _example_shape(self.signature),
        }
        try:
            reference = self.run_eager(inputs)
        except Exception as exc:
            return CheckResult.error(
                name,
                TIER,
                f"eager PyTorch itself raised at input shape {shape}: {describe_exception(exc)}; "
                "parity cannot be judged where the model fails (see tier 1's "
                "test_shape_robustness)",
                {**base, "exception": describe_exception(exc), **self._sweep()},
                duration_seconds=elapsed(start),
            )
        try:
            output = self.run_artifact(inputs)
        except Exception as exc:
            return CheckResult.failed(
                name,
                TIER,
                f"the {self.label} artifact raised at input shape {shape} (exported from "
                f"{_example_shape(self.signature)}): {describe_exception(exc)}. The artifact does "
                "not accept this shape although the model does: a size was baked in at export "
                "(positions from a Python int of the length, a reshape with literal sizes, "
                "the legacy ONNX exporter's nn.MultiheadAttention).",
                {**base, "exception": describe_exception(exc), **self._sweep()},
                duration_seconds=elapsed(start),
            )
        if tuple(output.shape) != tuple(reference.shape):
            return CheckResult.failed(
                name,
                TIER,
                f"the {self.label} artifact returns logits {list(output.shape)} where eager "
                f"PyTorch returns {list(reference.shape)} at input shape {shape} (exported from "
                f"{_example_shape(self.signature)}): a dimension of the output was fixed at "
                "export.",
                {
                    **base,
                    "artifact_shape": list(output.shape),
                    "eager_shape": list(reference.shape),
                    **self._sweep(),
                },
                duration_seconds=elapsed(start),
            )
        dtype = str(reference.dtype).removeprefix("torch.")
        tolerance = self.tolerance_for(dtype)
        stats = compare_outputs(output, reference, tolerance)
        if shape in self.errors or len(self.errors) < self.MAX_SHAPES:
            seen = self.errors.get(shape, (0.0, 0.0))
            self.errors[shape] = (max(seen[0], stats.max_abs), max(seen[1], stats.max_rel))
        if stats.max_abs >= self.worst_abs[0]:
            self.worst_abs = (stats.max_abs, shape)
        if stats.max_rel >= self.worst_rel[0]:
            self.worst_rel = (stats.max_rel, shape)
        if stats.top1_agreement is not None and (
            self.worst_top1 is None or stats.top1_agreement <= self.worst_top1[0]
        ):
            self.worst_top1 = (stats.top1_agreement, shape)
        details = {
            **base,
            "output_shape": stats.shape,
            "dtype": dtype,
            "tolerance": tolerance.to_dict(),
            **stats.to_dict(),
            "max_abs_diff": stats.max_abs,
            "max_rel_error": stats.max_rel,
            **self._sweep(),
        }
        numbers = f"max abs error {_pretty(stats.max_abs)}, max rel error {_pretty(stats.max_rel)}"
        if stats.ok:
            top1 = (
                f", top-1 agreement {stats.top1_agreement:.1%}"
                if tolerance.min_top1_agreement is not None and stats.top1_agreement is not None
                else ""
            )
            return CheckResult.passed(
                name,
                TIER,
                f"{self.label} matches eager PyTorch at {shape}: {numbers}{top1} within "
                f"{tolerance.describe()}; worst over {len(self.shapes)} shape(s): "
                f"{_pretty(self.worst_abs[0])} at {self.worst_abs[1]}.",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.failed(
            name,
            TIER,
            self._failure_text(shape, stats, tolerance),
            details,
            duration_seconds=elapsed(start),
        )

    def _failure_text(self, shape: str, stats: Any, tolerance: Tolerance) -> str:
        lines = [
            f"the {self.label} artifact differs from eager PyTorch at input shape {shape} "
            f"(logits {stats.shape}; exported from {_example_shape(self.signature)}): max abs "
            f"error {_pretty(stats.max_abs)}, max rel error {_pretty(stats.max_rel)}; "
            f"{stats.mismatch_fraction:.2%} of elements ({stats.mismatches}/{stats.elements}) "
            f"exceed atol + rtol*|eager| with {tolerance.describe()}."
        ]
        if (
            tolerance.min_top1_agreement is not None
            and stats.top1_agreement is not None
            and stats.top1_agreement < tolerance.min_top1_agreement
        ):
            lines.append(
                f"Top-1 agreement is {stats.top1_agreement:.1%}, below the required "
                f"{tolerance.min_top1_agreement:.0%}: the artifact changes predictions."
            )
        key = "quantized" if self.check_name == QUANTIZED else self.label
        lines.append(
            f"Minimum tolerance that would pass: atol >= {_pretty(stats.min_atol)} at rtol "
            f"{tolerance.rtol:g}, or rtol >= {_pretty(stats.min_rtol)} at atol "
            f"{tolerance.atol:g}. If that difference is acceptable, set it with "
            f"--export-tolerance {key}=ATOL,RTOL or in pyproject.toml "
            f"[tool.modeltiers.tolerance] {key} = {{ atol = ..., rtol = ... }}; if only shapes "
            "other than the export example differ, a size was baked into the artifact."
        )
        return " ".join(lines)


# --------------------------------------------------------------------------- latency


def check_export_latency(
    runners: Mapping[str, Callable[[Inputs], torch.Tensor]],
    eager: Callable[[Inputs], torch.Tensor],
    shapes: Sequence[tuple[str, Inputs]],
    *,
    budget_ms: float | None = None,
    missing: Mapping[str, str] | None = None,
    warmup: int = 3,
    iterations: int = 20,
) -> CheckResult:
    """``test_export_latency``: median and p90 per format and shape, speed-up against eager.

    ``runners`` maps format -> callable on artifact inputs; ``shapes`` are ``(label, inputs)``.
    Fails only when ``budget_ms`` is set and a format's median exceeds it at some shape; an
    artifact that cannot run at a shape is left out there with a warning (parity reports it).
    ``missing`` names formats without an artifact and why.
    """
    start = time.perf_counter()
    if budget_ms is not None and not budget_ms > 0:
        raise ValueError(f"budget_ms={budget_ms!r}; it must be a positive number of ms")
    missing = dict(missing or {})
    if not runners:
        reason = "; ".join(f"{fmt}: {why}" for fmt, why in missing.items()) or "none requested"
        return CheckResult.skipped(
            LATENCY, TIER, f"no exported artifact to time ({reason})", {"missing": missing}
        )
    per_shape: dict[str, dict[str, dict[str, float]]] = {}
    unrunnable: dict[str, str] = {}
    for label, inputs in shapes:
        calls: dict[str, Callable[[], Any]] = {"eager": functools.partial(eager, inputs)}
        for fmt, runner in runners.items():
            try:  # one trial call: an artifact that cannot run here is reported, not timed
                runner(inputs)
            except Exception as exc:
                unrunnable.setdefault(fmt, f"raised at {label}: {describe_exception(exc)}")
                continue
            calls[fmt] = functools.partial(runner, inputs)
        with torch.no_grad():
            timings = time_interleaved(calls, warmup=warmup, iterations=iterations)
        eager_median = timings["eager"]["median_ms"]
        for stats in timings.values():
            stats["speedup_vs_eager"] = (
                eager_median / stats["median_ms"] if stats["median_ms"] > 0 else float("inf")
            )
        per_shape[label] = timings
    lines: list[str] = []
    over: list[str] = []
    for label, timings in per_shape.items():
        parts = [
            f"{fmt} {t['median_ms']:.3g}/{t['p90_ms']:.3g} ms"
            + ("" if fmt == "eager" else f" ({t['speedup_vs_eager']:.2f}x)")
            for fmt, t in timings.items()
        ]
        lines.append(f"{label}: " + ", ".join(parts))
        if budget_ms is not None:
            over.extend(
                f"{fmt} at {label}: median {t['median_ms']:.3g} ms"
                for fmt, t in timings.items()
                if fmt != "eager" and t["median_ms"] > budget_ms
            )
    details: dict[str, Any] = {
        "shapes": per_shape,
        "budget_ms": budget_ms,
        "missing": missing,
        "unrunnable": unrunnable,
        "warmup": warmup,
        "iterations": iterations,
    }
    text = "median/p90 per format (speed-up vs eager): " + "; ".join(lines)
    if missing:
        text += "; not timed: " + ", ".join(f"{fmt} ({why})" for fmt, why in missing.items())
    if over:
        return CheckResult.failed(
            LATENCY,
            TIER,
            f"over the latency budget of {budget_ms:g} ms: {'; '.join(over)}. {text}",
            details,
            duration_seconds=elapsed(start),
        )
    if unrunnable:
        listed = "; ".join(f"{fmt} {why}" for fmt, why in unrunnable.items())
        return CheckResult.warning(
            LATENCY,
            TIER,
            f"{text}; not timed where the artifact cannot run: {listed} (test_export_parity "
            "reports those shapes)",
            details,
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(LATENCY, TIER, text, details, duration_seconds=elapsed(start))


# --------------------------------------------------------------------------- health


def check_export_health(report: Any, paths: Sequence[str] = ()) -> CheckResult:
    """``test_export_health``: failed if any health check failed or errored.

    Formats the report skipped because their export failed are listed in ``depends_on``
    (``test_export[FORMAT]``) and named in the message: that failure is counted once, there.
    """
    data = report.to_dict()
    failed = report.get_failed_checks()
    warnings = report.get_warnings()
    depends_on = [
        f"{EXPORT}[{c['details']['format']}]"
        for c in data["checks"]
        if c["status"] == "skipped"
        and c["check_name"].endswith("_validation")
        and "format" in (c.get("details") or {})
    ]
    details = {
        "health_score": data["health_score"],
        "summary": data["summary"],
        "checks": [
            {"check_name": c["check_name"], "status": c["status"], "message": c["message"]}
            for c in data["checks"]
        ],
        "report_files": list(paths),
        "depends_on": depends_on,
    }
    score = data["health_score"]
    shown = "n/a" if score is None else f"{score:.1f}"
    where = f" (report: {', '.join(paths)})" if paths else ""
    ran = len(data["checks"]) - data["summary"]["skipped"]
    unchecked = (
        f"; not checked: the artifacts of {', '.join(depends_on)}, which failed (counted there)"
        if depends_on
        else ""
    )
    if failed:
        listed = "; ".join(f"{c.check_name}: {c.message}" for c in failed[:5])
        return CheckResult.failed(
            HEALTH,
            TIER,
            f"{len(failed)} of {ran} export health checks failed, health score "
            f"{shown}{where}: {listed}{unchecked}",
            details,
        )
    if warnings:
        listed = "; ".join(f"{c.check_name}: {c.message}" for c in warnings[:5])
        return CheckResult.warning(
            HEALTH, TIER, f"health score {shown}{where}; warnings: {listed}{unchecked}", details
        )
    return CheckResult.passed(
        HEALTH,
        TIER,
        f"all {ran} export health checks {'that ran ' if unchecked else ''}passed, health score "
        f"{shown}{where}{unchecked}.",
        details,
    )
