"""Tier 4: does the exported artifact behave like the model, for every input shape it will see?

Each format of ``--export-formats`` is exported once per session (the ``exported_model``
fixture); ``test_export[FORMAT]`` reports the export, ``test_export_parity[FORMAT]`` compares
the loaded artifact with eager PyTorch over a fixed sweep of the extreme shapes and then shapes
drawn by Hypothesis, ``test_export_latency`` times every artifact, ``test_quantized_parity`` the
int8 model of ``--export-quantization``, and ``test_export_health`` runs the export health
checker on the artifacts and writes its report next to them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pytest_modeltiers.checks import tier4
from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.export.cache import ExportCache, ExportOutcome
from pytest_modeltiers.export.shapes import (
    SweepShape,
    fixed_sweep,
    latency_inputs,
    shape_strategy,
    sweep_batch,
)
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.report.progress import progress_for
from pytest_modeltiers.settings import SETTINGS_KEY, Settings
from pytest_modeltiers.suites.support import expect

pytestmark = pytest.mark.tier4

Batch = dict[str, torch.Tensor]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``test_export`` and ``test_export_parity`` run once per format of ``--export-formats``."""
    if "export_format" in metafunc.fixturenames:
        formats = list(metafunc.config.stash[SETTINGS_KEY].export_formats)
        metafunc.parametrize("export_format", formats, ids=formats, scope="session")


def _cause(outcome: ExportOutcome) -> str:
    error = outcome.error or outcome.smoke_error
    return describe_exception(error) if error is not None else "no artifact"


def test_export(
    request: pytest.FixtureRequest, exported_model: ExportOutcome, modeltiers_check: CheckRecorder
) -> None:
    """The format exports, and the artifact loads and runs the export example."""
    expect(request, modeltiers_check, tier4.check_export(exported_model))


def test_export_parity(
    request: pytest.FixtureRequest,
    exported_model: ExportOutcome,
    modeltiers_exports: ExportCache,
    task_spec: TaskSpec,
    adapter: TaskAdapter,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """The loaded artifact matches eager PyTorch at every shape of the sweep and drawn ones."""
    fmt = exported_model.format
    name = f"{tier4.PARITY}[{fmt}]"
    if not exported_model.ok or exported_model.runner is None:
        expect(
            request,
            modeltiers_check,
            CheckResult.skipped(
                name,
                4,
                f"no {fmt} artifact to compare: test_export[{fmt}] failed "
                f"({_cause(exported_model)})",
            ),
        )
        return
    cache = modeltiers_exports
    signature = cache.signature
    sweep = tier4.ParitySweep(
        fmt,
        name,
        signature,
        lambda dtype: cache.tolerances.get(fmt, dtype),
        run_artifact=exported_model.runner,
        run_eager=cache.reference,
        prepare=lambda batch: adapter.prepare_inputs(batch, task_spec),
    )
    max_batch = modeltiers_settings.max_batch_size
    fixed = list(fixed_sweep(task_spec, signature, max_batch))
    progress = progress_for(request.config)
    with progress.stage(f"tier 4 parity {fmt}", total=len(fixed), unit="shapes") as stage:
        for seed, shape in enumerate(fixed):
            batch = sweep_batch(task_spec, shape, seed=seed)
            expect(request, modeltiers_check, sweep.check(batch), batch)
            stage.update(seed + 1)

        @given(shape=shape_strategy(task_spec, signature, max_batch), seed=st.integers(0, 2**16))
        def any_shape(shape: SweepShape, seed: int) -> None:
            batch = sweep_batch(task_spec, shape, seed=seed)
            expect(request, modeltiers_check, sweep.check(batch), batch)
            stage.update(stage.done + 1, total=max(stage.done + 1, stage.total or 0))

        any_shape()
        stage.note = f"{len(fixed)} fixed and {stage.done - len(fixed)} drawn shapes match"


def test_export_latency(
    request: pytest.FixtureRequest,
    modeltiers_exports: ExportCache,
    task_spec: TaskSpec,
    adapter: TaskAdapter,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """Median and p90 latency of every artifact at two shapes, and its speed-up over eager."""
    cache = modeltiers_exports
    runners, missing = {}, {}
    for fmt in modeltiers_settings.export_formats:
        outcome = cache.outcome(fmt)
        if outcome.ok and outcome.runner is not None:
            runners[fmt] = outcome.runner
        else:
            missing[fmt] = f"test_export[{fmt}] failed"
    shapes = latency_inputs(task_spec, adapter, modeltiers_settings.max_batch_size)
    result = tier4.check_export_latency(
        runners,
        cache.reference,
        shapes,
        budget_ms=modeltiers_settings.export_latency_budget,
        missing=missing,
    )
    expect(request, modeltiers_check, result)


def test_quantized_parity(
    request: pytest.FixtureRequest,
    modeltiers_exports: ExportCache,
    task_spec: TaskSpec,
    adapter: TaskAdapter,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """The int8 artifact stays close to the fp32 model and mostly predicts the same class."""
    cache = modeltiers_exports
    quantized = cache.quantized()
    if quantized.unavailable is not None:
        expect(
            request,
            modeltiers_check,
            CheckResult.skipped(
                tier4.QUANTIZED, 4, f"{quantized.mode} quantization: {quantized.unavailable}"
            ),
        )
        return
    if quantized.error is not None or quantized.runner is None or quantized.artifact is None:
        error = quantized.error
        expect(
            request,
            modeltiers_check,
            CheckResult.failed(
                tier4.QUANTIZED,
                4,
                f"the {quantized.mode} int8 model could not be made or exported: "
                f"{describe_model_exception(error) if error else 'no artifact'}",
                exception_details(error) if error else {},
            ),
        )
        return
    signature = cache.signature
    sweep = tier4.ParitySweep(
        f"{quantized.mode} int8",
        tier4.QUANTIZED,
        signature,
        lambda dtype: cache.tolerances.get("quantized", dtype),
        run_artifact=quantized.runner,
        run_eager=cache.reference,
        prepare=lambda batch: adapter.prepare_inputs(batch, task_spec),
        extra={
            "artifact": str(quantized.artifact.path),
            "quantization": quantized.mode,
            "quantized_layers": len(quantized.artifact.details.get("quantized_layers", [])),
            "int8_ops": quantized.artifact.details.get("int8_ops", []),
        },
    )
    max_batch = modeltiers_settings.max_batch_size
    for seed, shape in enumerate(fixed_sweep(task_spec, signature, max_batch)):
        batch = sweep_batch(task_spec, shape, seed=seed)
        expect(request, modeltiers_check, sweep.check(batch), batch)


def test_export_health(
    request: pytest.FixtureRequest,
    modeltiers_exports: ExportCache,
    task_spec: TaskSpec,
    adapter: TaskAdapter,
    modeltiers_check: CheckRecorder,
    modeltiers_settings: Settings,
) -> None:
    """The export health checker's three stages pass on the model and its artifacts.

    A format whose export failed has no artifact; ``test_export[FORMAT]`` already fails for
    it, so the health report skips that format's validation with a reference to it rather than
    failing a second time for the same missing file.
    """
    from pytest_modeltiers.checks.export_health import ExportHealthChecker

    cache = modeltiers_exports
    formats = list(modeltiers_settings.export_formats)
    unavailable = {}
    for fmt in formats:
        outcome = cache.outcome(fmt)
        if outcome.error is not None:
            unavailable[fmt] = f"test_export[{fmt}] failed ({_cause(outcome)})"
    checker = ExportHealthChecker(
        cache.model,
        task_spec=task_spec,
        adapter=adapter,
        model_factory=cache.model_factory,
        tolerances=cache.tolerances,
        model_name=cache.directory.name,
    )
    report = checker.run_all_checks(cache.directory, formats=formats, unavailable=unavailable)
    paths = [
        str(report.save_json(cache.directory / "health_report.json")),
        str(report.save_markdown(cache.directory / "health_report.md")),
    ]
    expect(request, modeltiers_check, tier4.check_export_health(report, paths))
