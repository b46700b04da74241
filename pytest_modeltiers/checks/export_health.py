"""``ExportHealthChecker`` and ``ExportHealthReport``: a three-stage export health check
(before export on the live model, per artifact file, after export against eager PyTorch).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.checks.tier1_outputs import expected_logits_shape
from pytest_modeltiers.checks.tier1_resources import check_memory_footprint
from pytest_modeltiers.export.exporters import inspect_onnx
from pytest_modeltiers.export.formats import FORMATS, QUANTIZED_FILE, ArtifactError, find_artifact
from pytest_modeltiers.export.parity import compare_outputs
from pytest_modeltiers.export.runtime import load_artifact, read_metadata
from pytest_modeltiers.export.shapes import SweepShape, sweep_batch
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper, example_batch
from pytest_modeltiers.export.tolerances import ToleranceTable
from pytest_modeltiers.jsonio import dumps, markdown_cell
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.models.running import forward_logits, preserved_model
from pytest_modeltiers.models.timing import elapsed, time_interleaved
from pytest_modeltiers.report import CheckResult, CheckStatus
from pytest_modeltiers.report.health_report import summarize

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.export.runtime import ArtifactRunner
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["ExportHealthChecker", "ExportHealthReport"]

TIER = 4
MIB = 2**20
_FAILING = (CheckStatus.FAILED, CheckStatus.ERROR)


# --------------------------------------------------------------------------- the report


class ExportHealthReport:
    """Checks of one export, with everything else derived from them when read."""

    def __init__(
        self,
        timestamp: str | None = None,
        model_name: str = "model",
        checks: Iterable[CheckResult] = (),
    ) -> None:
        self.timestamp = timestamp or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.model_name = model_name
        self._checks: list[CheckResult] = []
        for check in checks:
            self.add_check(check)

    def __repr__(self) -> str:
        score = self.health_score
        shown = "n/a" if score is None else f"{score:.1f}"
        return f"<ExportHealthReport {self.model_name}: {len(self._checks)} checks, score {shown}>"

    def add_check(self, result: CheckResult) -> None:
        """Add one result (a user's own check too); the score includes it from now on."""
        if not isinstance(result, CheckResult):
            raise TypeError(
                f"add_check takes a CheckResult, got {type(result).__name__}; build one with "
                "CheckResult.passed/failed/warning(check_name, 4, message, details)"
            )
        self._checks.append(result)

    @property
    def checks(self) -> list[CheckResult]:
        return list(self._checks)

    @property
    def summary(self) -> dict[str, int]:
        counts = summarize(self._checks)
        return {
            "total": counts["total"],
            "passed": counts["passed"],
            "warnings": counts["warning"],
            "failed": counts["failed"],
            "errors": counts["error"],
            "skipped": counts["skipped"],
        }

    @property
    def health_score(self) -> float | None:
        """The session report's score (``report.compute_health_score``), to one decimal."""
        score = summarize(self._checks)["health_score"]
        return None if score is None else round(score, 1)

    @property
    def all_passed(self) -> bool:
        """No check failed or errored (warnings and skips allowed)."""
        return not self.get_failed_checks()

    def get_failed_checks(self) -> list[CheckResult]:
        return [c for c in self._checks if c.status in _FAILING]

    def get_warnings(self) -> list[CheckResult]:
        return [c for c in self._checks if c.status is CheckStatus.WARNING]

    @property
    def recommendations(self) -> list[str]:
        tips: list[str] = []
        for check in self.get_failed_checks():
            tips.append(f"Fix {check.check_name}: {_hint(check.check_name)}")
        for check in self.get_warnings():
            if "memory" in check.check_name:
                tips.append(
                    "Large memory footprint: consider int8 quantization (--export-quantization "
                    "dynamic) or a smaller model"
                )
            else:
                tips.append(f"Review {check.check_name}: {check.message.splitlines()[0]}")
        if not tips:
            tips.append("All checks passed: the artifacts match the model and load cleanly")
        return list(dict.fromkeys(tips))

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "model_name": self.model_name,
            "summary": self.summary,
            "health_score": self.health_score,
            "all_passed": self.all_passed,
            "checks": [check.to_dict() for check in self._checks],
            "recommendations": self.recommendations,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportHealthReport:
        """Rebuild a report from ``to_dict`` output; the derived keys are recomputed."""
        return cls(
            timestamp=str(data.get("timestamp") or ""),
            model_name=str(data.get("model_name", "model")),
            checks=[CheckResult.from_dict(c) for c in data.get("checks", [])],
        )

    def to_json(self) -> str:
        return dumps(self.to_dict(), indent=2) + "\n"

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON report atomically (never a truncated file)."""
        return atomic_write_text(path, self.to_json())

    def to_markdown(self) -> str:
        return _markdown(self.to_dict())

    def save_markdown(self, path: str | os.PathLike[str]) -> Path:
        """Write the Markdown report atomically."""
        return atomic_write_text(path, self.to_markdown())

    def print_summary(self) -> None:
        score = self.health_score
        shown = "n/a" if score is None else f"{score:.1f}/100"
        summary = self.summary
        print(
            f"Export health of {self.model_name}: {shown} ({summary['passed']} passed, "
            f"{summary['warnings']} warnings, {summary['failed']} failed, "
            f"{summary['errors']} errors, {summary['skipped']} skipped)"
        )
        for check in self._checks:
            print(f"  {check.status.marker:5} {check.check_name}: {check.message.splitlines()[0]}")


_HINTS = {
    "parameter_validation": "NaN/Inf weights come from unstable training: lower the learning "
    "rate, clip gradients, check the loss for log(0) or division by zero",
    "shape_validation": "the output must follow the task contract (tier 1 test_shape_robustness)",
    "forward_pass_validation": "the model must run at batch sizes 1, 2 and 4 with finite outputs",
    "memory_requirements": "the forward pass failed while memory was measured",
    "architecture_validation": "the model's modules could not be walked",
    "performance_benchmark": "an artifact raised while being timed",
}


def _hint(check_name: str) -> str:
    if check_name in _HINTS:
        return _HINTS[check_name]
    if check_name.endswith("_numerical_consistency"):
        return (
            "the artifact's outputs differ from PyTorch beyond the format's tolerance; run "
            "test_export_parity for the shapes and the minimal tolerance"
        )
    if check_name.endswith("_validation"):
        return "the artifact is missing, corrupt or does not load; export it again"
    return "see the check's message"


def _markdown(data: Mapping[str, Any]) -> str:
    score = data["health_score"]
    shown = "n/a" if score is None else f"{score:.1f}/100"
    summary = data["summary"]
    lines = [
        f"# Export health report: {data['model_name']}",
        "",
        f"- Created: {data['timestamp']}",
        f"- Health score: **{shown}**",
        f"- All passed: {'yes' if data['all_passed'] else 'no'}",
        "",
        "| total | passed | warnings | failed | errors | skipped |",
        "|---|---|---|---|---|---|",
        "| "
        + " | ".join(
            str(summary[k]) for k in ("total", "passed", "warnings", "failed", "errors", "skipped")
        )
        + " |",
        "",
    ]
    for title, statuses in (("Failed checks", ("failed", "error")), ("Warnings", ("warning",))):
        chosen = [c for c in data["checks"] if c["status"] in statuses]
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        for check in chosen:
            details = dumps(check["details"], indent=2)
            if len(details) > 4000:
                details = details[:4000] + "\n..."
            lines += [
                f"### {check['check_name']}",
                "",
                "```text",
                check["message"],
                "```",
                "",
                "```json",
                details,
                "```",
                "",
            ]
    lines += ["## All checks", "", "| status | check | message |", "|---|---|---|"]
    for check in data["checks"]:
        lines.append(
            f"| {CheckStatus(check['status']).marker} | {check['check_name']} | "
            f"{markdown_cell(check['message'], width=140)} |"
        )
    lines += ["", "## Recommendations", ""]
    lines += [f"- {tip}" for tip in data["recommendations"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the checker


class ExportHealthChecker:
    """Runs the three stages on ``model``.

    ``config`` (a ``TrainingConfig`` or mapping) is only recorded; it stays a parameter so the
    established call forms, ``ExportHealthChecker(model, config, task_spec)`` and
    ``ExportHealthChecker(model, config=..., task_spec=...)``, keep working. ``task_spec`` is
    required, ``adapter`` defaults to the task family's. The
    ``pytorch`` format is rebuilt from ``model_factory`` when given, else from a copy of
    ``model`` whose weights are first set to NaN (so only the file's weights can make it match).
    """

    def __init__(
        self,
        model: nn.Module,
        config: Any = None,
        task_spec: TaskSpec | None = None,
        *,
        adapter: TaskAdapter | None = None,
        model_factory: Callable[[], nn.Module] | None = None,
        device: str | torch.device | None = None,
        tolerances: ToleranceTable | None = None,
        batch_sizes: Sequence[int] = (1, 2, 4),
        memory_warning_mb: float = 1000.0,
        benchmark_iterations: int = 20,
        model_name: str | None = None,
    ) -> None:
        if task_spec is None:
            raise ValueError(
                "ExportHealthChecker needs task_spec= (a TaskSpec, e.g. "
                "get_builtin_task('lm_tiny').with_vocab_size(N)): it decides the inputs and the "
                "expected output shape"
            )
        if device is not None and torch.device(device).type != "cpu":
            model = model.to(device)
        self.model = model
        self.config = config
        self.task = task_spec
        self.adapter = adapter or get_adapter(task_spec)
        self.model_factory = model_factory
        self.tolerances = tolerances or ToleranceTable()
        self.batch_sizes = tuple(batch_sizes)
        self.memory_warning_mb = memory_warning_mb
        self.benchmark_iterations = benchmark_iterations
        self.model_name: str = model_name or str(task_spec.name)

    # -- the entry point -----------------------------------------------------------------------

    def run_all_checks(
        self,
        export_dir: str | os.PathLike[str] | None = None,
        formats: Sequence[str] | None = None,
        *,
        unavailable: Mapping[str, str] | None = None,
    ) -> ExportHealthReport:
        """Pre-export checks; with ``export_dir`` and ``formats`` also format and post checks.

        ``unavailable`` maps formats known to have no artifact to the reason (the export
        failed, and says so elsewhere): their ``<fmt>_validation`` is skipped with the reason
        instead of failing a second time for the same missing file.
        """
        report = ExportHealthReport(model_name=self.model_name)
        for check in self.run_pre_export_checks():
            report.add_check(check)
        unavailable = dict(unavailable or {})
        for fmt, reason in unavailable.items():
            report.add_check(
                CheckResult.skipped(
                    f"{fmt}_validation", TIER, f"no {fmt} artifact: {reason}", {"format": fmt}
                )
            )
        formats = [fmt for fmt in formats or () if fmt not in unavailable]
        if export_dir is None or not formats:
            return report
        directory = Path(export_dir)
        runners: dict[str, ArtifactRunner] = {}
        signature = None
        try:
            signature, metadata = self._metadata(directory)
        except ArtifactError as exc:
            for fmt in formats:
                report.add_check(CheckResult.failed(f"{fmt}_validation", TIER, str(exc)))
        if signature is not None:
            for fmt in formats:
                result, runner = self.validate_format(fmt, directory, signature, metadata)
                report.add_check(result)
                if runner is not None:
                    runners[fmt] = runner
            for fmt, runner in runners.items():
                report.add_check(self.numerical_consistency(fmt, runner, signature))
            report.add_check(self.performance_benchmark(runners, signature))
        return report

    # -- stage 1 -------------------------------------------------------------------------------

    def _batch(self, size: int, seed: int = 0) -> dict[str, Any]:
        return make_batch(self.task, size, seed=seed)

    def run_pre_export_checks(self) -> list[CheckResult]:
        checks = [self.architecture_validation(), self.parameter_validation()]
        checks += [self.shape_validation(), self.memory_requirements()]
        checks.append(self.forward_pass_validation())
        return checks

    def architecture_validation(self) -> CheckResult:
        start = time.perf_counter()
        name = "architecture_validation"
        counts: dict[str, int] = {}
        stochastic = []
        for module_name, module in self.model.named_modules():
            kind = type(module).__name__
            counts[kind] = counts.get(kind, 0) + 1
            is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            if module.training and (isinstance(module, nn.Dropout) or is_norm):
                stochastic.append(module_name or kind)
        details = {
            "total_modules": sum(counts.values()),
            "layer_counts": dict(sorted(counts.items())),
            "has_batchnorm": any("BatchNorm" in k for k in counts),
            "has_dropout": any("Dropout" in k for k in counts),
            "training_mode": self.model.training,
        }
        if stochastic:
            return CheckResult.warning(
                name,
                TIER,
                f"{len(stochastic)} Dropout/BatchNorm module(s) are in train mode "
                f"({', '.join(stochastic[:5])}); every artifact is exported in eval mode, so it "
                "behaves like model.eval(), not like the model as handed over",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(
            name,
            TIER,
            f"{details['total_modules']} modules, {len(counts)} module types",
            details,
            duration_seconds=elapsed(start),
        )

    def parameter_validation(self) -> CheckResult:
        start = time.perf_counter()
        name = "parameter_validation"
        bad: list[str] = []
        nan = inf = 0
        named = [*self.model.named_parameters(), *self.model.named_buffers()]
        for tensor_name, tensor in named:
            if not tensor.is_floating_point():
                continue
            n_nan = int(torch.isnan(tensor).sum())
            n_inf = int(torch.isinf(tensor).sum())
            if n_nan or n_inf:
                bad.append(tensor_name)
                nan += n_nan
                inf += n_inf
        params = list(self.model.parameters())
        stats = [
            {
                "name": n,
                "shape": list(p.shape),
                "mean": float(p.detach().float().mean()) if p.numel() else 0.0,
                "std": float(p.detach().float().std()) if p.numel() > 1 else 0.0,
            }
            for n, p in list(self.model.named_parameters())[:5]
        ]
        details = {
            "total_params": sum(p.numel() for p in params),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "nan_values": nan,
            "inf_values": inf,
            "tensors_with_nonfinite": bad[:20],
            "sample_stats": stats,
        }
        if bad:
            return CheckResult.failed(
                name,
                TIER,
                f"{len(bad)} tensor(s) hold NaN/Inf ({nan} NaN, {inf} Inf): "
                f"{', '.join(bad[:5])}; every artifact would carry them",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(
            name,
            TIER,
            f"{details['total_params']:,} parameters, all finite",
            details,
            duration_seconds=elapsed(start),
        )

    def _logits(self, batch: Mapping[str, Any]) -> torch.Tensor:
        with preserved_model(self.model, training=False), torch.no_grad():
            return forward_logits(self.model, self.adapter, batch)

    def shape_validation(self) -> CheckResult:
        start = time.perf_counter()
        name = "shape_validation"
        batch = self._batch(2)
        try:
            expected = expected_logits_shape(self.adapter, batch)
            logits = self._logits(batch)
        except Exception as exc:
            return CheckResult.failed(
                name,
                TIER,
                f"the forward pass raised {describe_model_exception(exc)}",
                exception_details(exc),
                duration_seconds=elapsed(start),
            )
        actual = list(logits.shape)
        details = {
            "input_shapes": {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")},
            "output_shape": actual,
            "expected_output_shape": expected,
            "output_dtype": str(logits.dtype).removeprefix("torch."),
        }
        if actual != expected:
            return CheckResult.failed(
                name,
                TIER,
                f"logits {actual} do not follow the task contract {expected} "
                f"({self.task.family} task {self.task.name}); an artifact would ship that shape",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(
            name,
            TIER,
            f"logits {actual} as the task expects",
            details,
            duration_seconds=elapsed(start),
        )

    def memory_requirements(self) -> CheckResult:
        start = time.perf_counter()
        name = "memory_requirements"
        measured = check_memory_footprint(self.model, self.adapter, self._batch(2))
        details = dict(measured.details)
        if measured.status is not CheckStatus.PASSED:
            return CheckResult.failed(
                name, TIER, measured.message, details, duration_seconds=elapsed(start)
            )
        total_mb = details["total_bytes"] / MIB
        details["parameter_memory_mb"] = details["param_bytes"] / MIB
        details["peak_memory_mb"] = details["peak_activation_bytes"] / MIB
        if total_mb > self.memory_warning_mb:
            return CheckResult.warning(
                name,
                TIER,
                f"{measured.message} exceeds {self.memory_warning_mb:g} MiB",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(
            name, TIER, measured.message, details, duration_seconds=elapsed(start)
        )

    def forward_pass_validation(self) -> CheckResult:
        start = time.perf_counter()
        name = "forward_pass_validation"
        results = []
        problems = []
        for size in self.batch_sizes:
            entry: dict[str, Any] = {"batch_size": size}
            try:
                logits = self._logits(self._batch(size, seed=size))
                entry["success"] = True
                entry["has_nan"] = bool(torch.isnan(logits).any())
                entry["has_inf"] = bool(torch.isinf(logits).any())
                if entry["has_nan"] or entry["has_inf"]:
                    problems.append(f"batch {size}: non-finite logits")
            except Exception as exc:
                entry["success"] = False
                entry["error"] = describe_model_exception(exc)
                problems.append(f"batch {size}: {entry['error']}")
            results.append(entry)
        details = {"test_results": results}
        if problems:
            return CheckResult.failed(
                name, TIER, "; ".join(problems), details, duration_seconds=elapsed(start)
            )
        sizes = ", ".join(str(s) for s in self.batch_sizes)
        return CheckResult.passed(
            name,
            TIER,
            f"finite logits at batch sizes {sizes}",
            details,
            duration_seconds=elapsed(start),
        )

    # -- stage 2 -------------------------------------------------------------------------------

    def _metadata(self, directory: Path) -> tuple[ExportSignature, dict[str, Any]]:
        metadata = read_metadata(directory)
        return ExportSignature.from_dict(metadata["signature"]), metadata

    def _example_inputs(
        self, signature: ExportSignature, size: int | None = None, seq: int | None = None
    ) -> dict[str, torch.Tensor]:
        if size is None:
            raw = example_batch(self.task, seed=1)
        else:
            target = self.task.max_target_len if self.task.family == "seq2seq" else None
            raw = sweep_batch(self.task, SweepShape(size, seq, target), seed=2)
        prepared = self.adapter.prepare_inputs(raw, self.task)
        return {name: prepared[name] for name in signature.names}

    def validate_format(
        self,
        fmt: str,
        directory: Path,
        signature: ExportSignature,
        metadata: Mapping[str, Any],
    ) -> tuple[CheckResult, ArtifactRunner | None]:
        """``<fmt>_validation``: the file's structure, then load and run the export example."""
        start = time.perf_counter()
        name = f"{fmt}_validation"
        filename = QUANTIZED_FILE if fmt == "quantized" else FORMATS[fmt].filename
        path = find_artifact(directory, filename)
        if path is None:
            return (
                CheckResult.failed(
                    name,
                    TIER,
                    f"no {filename} in {directory} (nor in its artifacts/ folder)",
                    {"format": fmt},
                    duration_seconds=elapsed(start),
                ),
                None,
            )
        details: dict[str, Any] = {
            "format": fmt,
            "path": str(path),
            "file_size_mb": path.stat().st_size / MIB,
        }
        problems: list[str] = []
        try:
            if fmt == "onnx":
                problems += self._onnx_structure(path, signature, details)
            elif fmt == "pytorch":
                problems += self._state_dict_completeness(path, details)
        except Exception as exc:
            problems.append(f"{filename} cannot be read: {describe_exception(exc)}")
        entry = metadata.get("quantization") if fmt == "quantized" else metadata["formats"].get(fmt)
        mode = str(((entry or {}).get("details") or {}).get("mode", "trace"))
        runner = None
        if not problems:
            try:
                runner = load_artifact(
                    fmt,
                    path,
                    signature,
                    adapter=self.adapter,
                    model_factory=self.model_factory,
                    template=self.model,
                    torchscript_mode=mode,
                )
                out = runner(self._example_inputs(signature))
                details["test_forward_pass"] = True
                details["output_shape"] = list(out.shape)
                details["has_nan"] = bool(torch.isnan(out).any())
                details["has_inf"] = bool(torch.isinf(out).any())
                if details["has_nan"] or details["has_inf"]:
                    problems.append("the artifact's output on the export example is not finite")
            except ArtifactError as exc:
                problems.append(str(exc))
                runner = None
            except Exception as exc:
                problems.append(
                    f"the artifact loads but fails on the export example: {describe_exception(exc)}"
                )
                runner = None
        if problems:
            return (
                CheckResult.failed(
                    name, TIER, "; ".join(problems), details, duration_seconds=elapsed(start)
                ),
                None,
            )
        return (
            CheckResult.passed(
                name,
                TIER,
                f"{path.name} loads and runs the export example ({details['output_shape']})",
                details,
                duration_seconds=elapsed(start),
            ),
            runner,
        )

    def _onnx_structure(
        self, path: Path, signature: ExportSignature, details: dict[str, Any]
    ) -> list[str]:
        import onnx

        problems = []
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            problems.append(f"onnx.checker rejects {path.name}: {describe_exception(exc)}")
            return problems
        info = inspect_onnx(path, signature)
        details.update(
            ir_version=info["ir_version"],
            opset_version=info["opset"].get("ai.onnx"),
            num_nodes=info["num_nodes"],
            op_types=info["op_types"],
            inputs=info["inputs"],
            fixed_dims=info["fixed_dims"],
        )
        for input_name, dim, axis, size in info["fixed_dims"]:
            problems.append(
                f"input {input_name} has its {axis} dimension {dim} fixed to {size}: the "
                "artifact only accepts that size"
            )
        return problems

    def _state_dict_completeness(self, path: Path, details: dict[str, Any]) -> list[str]:
        from safetensors.torch import load_file

        stored = load_file(str(path))
        live = self.model.state_dict()
        shared = _shared_names(self.model)
        missing = sorted(k for k in live if k not in stored and k not in shared)
        unexpected = sorted(k for k in stored if k not in live)
        mismatched = sorted(
            k for k in stored if k in live and tuple(stored[k].shape) != tuple(live[k].shape)
        )
        nonfinite = sorted(
            k
            for k, v in stored.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())
        )
        unique_live = sum(p.numel() for p in self.model.parameters())
        parameter_names = dict(self.model.named_parameters())
        details.update(
            num_keys=len(stored),
            total_params=sum(v.numel() for k, v in stored.items() if k in parameter_names),
            live_params=unique_live,
            missing_keys=missing[:20],
            unexpected_keys=unexpected[:20],
            shape_mismatches=mismatched[:20],
            nan_or_inf_tensors=nonfinite[:20],
        )
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} tensor(s) of the model are not in the file: "
                f"{', '.join(missing[:5])}"
            )
        if unexpected:
            problems.append(
                f"{len(unexpected)} tensor(s) in the file are not in the model: "
                f"{', '.join(unexpected[:5])}"
            )
        if mismatched:
            problems.append(
                f"{len(mismatched)} tensor(s) have another shape than the model's: "
                f"{', '.join(mismatched[:5])}"
            )
        if nonfinite:
            problems.append(
                f"{len(nonfinite)} stored tensor(s) hold NaN/Inf: {', '.join(nonfinite[:5])}"
            )
        return problems

    # -- stage 3 -------------------------------------------------------------------------------

    def numerical_consistency(
        self, fmt: str, runner: ArtifactRunner, signature: ExportSignature
    ) -> CheckResult:
        start = time.perf_counter()
        name = f"{fmt}_numerical_consistency"
        wrapper = ExportWrapper(self.model, self.adapter, signature)
        longest = self.task.max_seq_len if self.task.family != "vision" else None
        shapes = [
            ("export example", self._example_inputs(signature)),
            ("batch 1, longest input", self._example_inputs(signature, 1, longest)),
        ]
        per_shape: dict[str, Any] = {}
        problems = []
        worst_abs = worst_rel = 0.0
        for _, inputs in shapes:
            shape = signature.shape_of(inputs)
            try:
                with preserved_model(self.model, training=False), torch.no_grad():
                    reference = wrapper(*signature.select(inputs))
                output = runner(inputs)
                if tuple(output.shape) != tuple(reference.shape):
                    problems.append(
                        f"{shape}: artifact logits {list(output.shape)} vs eager "
                        f"{list(reference.shape)}"
                    )
                    continue
                tolerance = self.tolerances.get(
                    fmt if fmt in FORMATS else "quantized",
                    str(reference.dtype).removeprefix("torch."),
                )
                stats = compare_outputs(output, reference, tolerance)
            except Exception as exc:
                problems.append(f"{shape}: {describe_exception(exc)}")
                continue
            per_shape[shape] = {
                "max_absolute_error": stats.max_abs,
                "max_relative_error": stats.max_rel,
                "mismatch_fraction": stats.mismatch_fraction,
                "tolerance": tolerance.to_dict(),
            }
            worst_abs, worst_rel = max(worst_abs, stats.max_abs), max(worst_rel, stats.max_rel)
            if not stats.ok:
                problems.append(
                    f"{shape}: max abs error {stats.max_abs:.3g}, max rel error "
                    f"{stats.max_rel:.3g}, {stats.mismatch_fraction:.2%} of elements beyond "
                    f"{tolerance.describe()}"
                )
        details = {
            "shapes": per_shape,
            "max_absolute_error": worst_abs,
            "max_relative_error": worst_rel,
        }
        if problems:
            return CheckResult.failed(
                name,
                TIER,
                f"{fmt} differs from PyTorch: " + "; ".join(problems),
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(
            name,
            TIER,
            f"{fmt} matches PyTorch at {len(per_shape)} shapes (max abs error {worst_abs:.3g})",
            details,
            duration_seconds=elapsed(start),
        )

    def performance_benchmark(
        self, runners: Mapping[str, ArtifactRunner], signature: ExportSignature
    ) -> CheckResult:
        start = time.perf_counter()
        name = "performance_benchmark"
        inputs = self._example_inputs(signature)
        wrapper = ExportWrapper(self.model, self.adapter, signature)
        tensors = signature.select(inputs)
        calls: dict[str, Callable[[], Any]] = {"pytorch_eager": lambda: wrapper(*tensors)}
        for fmt, runner in runners.items():
            calls[fmt] = functools.partial(runner, inputs)
        try:
            with preserved_model(self.model, training=False), torch.no_grad():
                timings = time_interleaved(calls, iterations=self.benchmark_iterations)
        except Exception as exc:
            return CheckResult.failed(
                name,
                TIER,
                f"timing raised {describe_exception(exc)}",
                duration_seconds=elapsed(start),
            )
        eager = timings["pytorch_eager"]["median_ms"]
        details: dict[str, Any] = {"input": signature.shape_of(inputs)}
        parts = []
        for fmt, stats in timings.items():
            details[f"{fmt}_ms"] = stats["median_ms"]
            if fmt != "pytorch_eager":
                speedup = eager / stats["median_ms"] if stats["median_ms"] > 0 else math.inf
                details[f"{fmt}_speedup"] = speedup
                parts.append(f"{fmt} {stats['median_ms']:.3g} ms ({speedup:.2f}x)")
        text = f"median latency at {details['input']}: eager {eager:.3g} ms"
        if parts:
            text += "; " + ", ".join(parts)
        if not runners:
            return CheckResult.warning(
                name,
                TIER,
                text + "; no artifact could be timed",
                details,
                duration_seconds=elapsed(start),
            )
        return CheckResult.passed(name, TIER, text, details, duration_seconds=elapsed(start))


def _shared_names(model: nn.Module) -> set[str]:
    """State-dict names that alias another tensor (tied weights): stored once by safetensors."""
    seen: dict[int, str] = {}
    shared: set[str] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor):
            continue
        ident = tensor.data_ptr() if tensor.numel() else id(tensor)
        if ident in seen:
            shared.update({key, seen[ident]})
        else:
            seen[ident] = key
    return shared
