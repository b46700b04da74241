"""Tier 4 as one library call, and the JSON summary the ``modeltiers`` CLI prints.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.export.formats import DEFAULT_FORMATS
from pytest_modeltiers.report import CheckResult, CheckStatus

if TYPE_CHECKING:
    from torch import nn

    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.export.tolerances import Tolerance, ToleranceTable
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["run_export_validation", "tier4_summary"]

_PARAM = re.compile(r"^(?P<name>\w+)\[(?P<param>[^\]]+)\]$")
_RANK = {"ok": 0, "warn": 1, "fail": 2}


def _status(status: CheckStatus) -> str:
    if status in (CheckStatus.FAILED, CheckStatus.ERROR):
        return "fail"
    if status in (CheckStatus.WARNING, CheckStatus.SKIPPED):
        return "warn"
    return "ok"


def _worst(*statuses: str) -> str:
    return max(statuses, key=_RANK.__getitem__, default="ok")


def tier4_summary(checks: Iterable[CheckResult | Mapping[str, Any]]) -> dict[str, Any]:
    """The CLI's ``{"export": ..., "tier4": ...}`` from tier 4 check results (or their dicts).

    Checks of other tiers are ignored. A run without any tier 4 check has status ``fail``:
    nothing was validated, and saying ``ok`` would be a silent pass.
    """
    results = [c if isinstance(c, CheckResult) else CheckResult.from_dict(c) for c in checks]
    results = [r for r in results if r.tier == 4]
    exports: dict[str, str] = {}
    formats: dict[str, dict[str, Any]] = {}
    others: dict[str, dict[str, Any]] = {}
    latency: dict[str, Any] = {}
    for result in results:
        match = _PARAM.match(result.check_name)
        if match and match["name"] in ("test_export", "test_export_parity"):
            fmt = match["param"]
            entry = formats.setdefault(
                fmt,
                {
                    "status": "ok",
                    "max_abs_diff": None,
                    "max_rel_error": None,
                    "latency_ms": None,
                    "speedup_vs_eager": None,
                    "artifact": None,
                    "message": "",
                },
            )
            status = _status(result.status)
            if result.status is not CheckStatus.PASSED and (
                not entry["message"] or _RANK[status] > _RANK[entry["status"]]
            ):
                entry["message"] = result.message  # the worst problem's message
            entry["status"] = _worst(entry["status"], status)
            if match["name"] == "test_export":
                artifact = result.details.get("artifact")
                if artifact:
                    exports[fmt] = str(artifact)
                    entry["artifact"] = str(artifact)
            else:
                worst_abs = result.details.get("worst_max_abs_diff")
                worst_rel = result.details.get("worst_max_rel_error")
                entry["max_abs_diff"] = (
                    worst_abs if worst_abs is not None else result.details.get("max_abs_diff")
                )
                entry["max_rel_error"] = (
                    worst_rel if worst_rel is not None else result.details.get("max_rel_error")
                )
            continue
        others[result.check_name] = {"status": _status(result.status), "message": result.message}
        if result.check_name == "test_export_latency":
            latency = result.details.get("shapes", {}) or {}
    if latency:
        first = next(iter(latency.values()))
        for fmt, entry in formats.items():
            timing = first.get(fmt) if isinstance(first, Mapping) else None
            if isinstance(timing, Mapping):
                entry["latency_ms"] = timing.get("median_ms")
                entry["speedup_vs_eager"] = timing.get("speedup_vs_eager")
    statuses = [entry["status"] for entry in formats.values()]
    statuses += [entry["status"] for entry in others.values()]
    overall = _worst(*statuses) if statuses else "fail"
    return {"export": exports, "tier4": {"status": overall, "formats": formats, "checks": others}}


def run_export_validation(
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    export_dir: str | Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    *,
    model_factory: Callable[[], nn.Module] | None = None,
    quantization: str | None = None,
    onnx_exporter: str = "dynamo",
    tolerances: ToleranceTable | None = None,
    max_batch: int = 8,
    timeout: float = 300.0,
    latency_budget_ms: float | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``formats`` in ``export_dir`` and check every artifact.

    Returns ``tier4_summary`` of the results plus ``"checks"``: every ``CheckResult`` as a dict.
    ``model_factory`` rebuilds the architecture for the ``pytorch`` format (default: a copy of
    ``model``, whose weights are replaced by the file's before comparing).
    """
    # torch loads here, not at import: ``modeltiers run-tiers`` reads tier4_summary without it
    from pytest_modeltiers.checks import tier4
    from pytest_modeltiers.export.cache import ExportCache
    from pytest_modeltiers.export.shapes import fixed_sweep, latency_inputs, sweep_batch

    reference = copy.deepcopy(model).eval()
    cache = ExportCache(
        model_factory or (lambda: copy.deepcopy(reference)),
        adapter,
        task_spec,
        Path(export_dir),
        onnx_exporter=onnx_exporter,
        timeout=timeout,
        tolerances=tolerances,
        max_batch=max_batch,
        quantization=quantization or "none",
        model=reference,
    )

    @functools.cache
    def sweep_batches() -> list[dict[str, Any]]:
        # After the first export: the shapes follow the traced signature.
        shapes = fixed_sweep(task_spec, cache.signature, max_batch)
        return [sweep_batch(task_spec, shape, seed=i) for i, shape in enumerate(shapes)]

    def parity(
        label: str,
        check_name: str,
        tolerance_for: Callable[[str], Tolerance],
        runner: Callable[[Mapping[str, Any]], Any],
    ) -> CheckResult:
        sweep = tier4.ParitySweep(
            label,
            check_name,
            cache.signature,
            tolerance_for,
            run_artifact=runner,
            run_eager=cache.reference,
            prepare=lambda batch: adapter.prepare_inputs(batch, task_spec),
        )
        return _sweep(sweep, sweep_batches())

    results: list[CheckResult] = []
    runners = {}
    missing = {}
    for fmt in formats:
        outcome = cache.outcome(fmt)
        results.append(tier4.check_export(outcome))
        if not outcome.ok or outcome.runner is None:
            missing[fmt] = f"test_export[{fmt}] failed"
            continue
        runners[fmt] = outcome.runner
        tolerance_for = functools.partial(cache.tolerances.get, fmt)
        results.append(parity(fmt, f"{tier4.PARITY}[{fmt}]", tolerance_for, outcome.runner))
    results.append(
        tier4.check_export_latency(
            runners,
            cache.reference,
            latency_inputs(task_spec, adapter, max_batch),
            budget_ms=latency_budget_ms,
            missing=missing,
        )
    )
    if quantization not in (None, "none"):
        quantized = cache.quantized()
        if quantized.runner is not None:
            tolerance_for = functools.partial(cache.tolerances.get, "quantized")
            results.append(
                parity(f"{quantization} int8", tier4.QUANTIZED, tolerance_for, quantized.runner)
            )
        else:
            reason = quantized.unavailable or str(quantized.error)
            results.append(CheckResult.skipped(tier4.QUANTIZED, 4, reason))
    summary = tier4_summary(results)
    if (cache.directory / "metadata.json").is_file():
        summary["export"]["metadata"] = str(cache.directory / "metadata.json")
    summary["checks"] = [r.to_dict() for r in results]
    return summary


def _sweep(sweep: Any, batches: list[dict[str, Any]]) -> CheckResult:
    """The sweep's first failing result, else its last (which carries the sweep's worst)."""
    last = None
    for batch in batches:
        last = sweep.check(batch)
        if not last.ok:
            return last
    if last is None:
        raise ValueError("the shape sweep is empty")
    return last
