"""The usage guide's call forms, each accepted where its meaning is unambiguous, beside the API
that replaced it: old metric names read as the new ones with one warning, a naive training time
read as UTC, the guide's MetricsEngine and log_epoch, CheckResult without a tier, ONNXExporter,
compute_dataset_profile, and trigger events found by name in the experiment database."""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_modeltiers import (
    CheckResult,
    DriftTrigger,
    ExperimentDB,
    ExportHealthReport,
    MetricsEngine,
    ModelRegistry,
    ModelTiersWarning,
    ONNXExporter,
    PerformanceTrigger,
    RetrainingTriggerManager,
    TimeTrigger,
    compare_profiles,
    compute_dataset_profile,
    get_adapter,
    resolve_task,
)
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.export.formats import ExportError
from pytest_modeltiers.store.metric_names import MetricNameError, resolve_metric_name

TASK = resolve_task({"name": "lm_tiny", "input_schema": {"vocab_size": 101, "max_seq_len": 16}})


def _one(record: pytest.WarningsRecorder) -> warnings.WarningMessage:
    """The single warning a call raised, which must point at this file (the caller's line)."""
    assert len(record) == 1, [str(w.message) for w in record]
    assert record[0].filename == __file__
    return record[0]


@pytest.fixture(scope="module")
def profiles() -> tuple[Any, Any]:
    """A reference profile and one of data whose token distribution moved."""
    reference = compute_dataset_profile(task_dataset(TASK, "train", size=96), TASK)
    shifted = compute_dataset_profile(task_dataset(TASK, "validation", size=96, shift=0.8), TASK)
    return reference, shifted


# -- metric names ----------------------------------------------------------------------------


def test_old_names_resolve_to_the_new_ones() -> None:
    assert resolve_metric_name("val_loss") == ("val/loss", "val_loss")
    assert resolve_metric_name("js_divergence", "drift") == ("drift/js_distance", "js_divergence")
    assert resolve_metric_name("drift/js_divergence") == (
        "drift/js_distance",
        "drift/js_divergence",
    )
    assert resolve_metric_name("val/loss") == ("val/loss", None)
    assert resolve_metric_name("loss", "eval") == ("eval/loss", None)
    with pytest.raises(MetricNameError, match="empty path segment"):
        resolve_metric_name("val//loss")


def test_trigger_names_warn_once_and_fire() -> None:
    with pytest.warns(DeprecationWarning, match="'val_loss' as 'val/loss'") as record:
        trigger = PerformanceTrigger(threshold=0.05, metric_name="val_loss", mode="min")
    _one(record)
    assert trigger.metric_name == "val/loss"
    with pytest.warns(DeprecationWarning) as record:
        detail = trigger.evaluate(
            current_metrics={"val_loss": 0.45}, baseline_metrics={"val_loss": 0.40}
        )
    assert "'val_loss' as 'val/loss'" in str(_one(record).message)
    assert detail.triggered and detail.actual_value == pytest.approx(0.125)


def test_js_divergence_reads_the_drift_report_instead_of_reporting_no_data(
    profiles: tuple[Any, Any],
) -> None:
    """A drift report has ``drift/js_distance``; under its old name the trigger used to look
    for ``drift/js_divergence``, find nothing and report no_data, silently."""
    report = compare_profiles(*profiles)
    with pytest.warns(DeprecationWarning, match="'js_divergence' as 'drift/js_distance'"):
        trigger = DriftTrigger(threshold=0.15, metric_name="js_divergence")
    detail = trigger.evaluate(drift_metrics=report)
    assert detail.status == "fired", detail.reason
    assert detail.actual_value is not None and detail.actual_value > 0.15
    quiet = DriftTrigger(threshold=0.15).evaluate(
        drift_metrics=compare_profiles(*[profiles[0]] * 2)
    )
    assert quiet.status == "quiet"


def test_manager_evaluate_warns_once_for_every_old_name_of_a_call() -> None:
    manager = RetrainingTriggerManager()
    manager.register_drift_trigger(threshold=0.15)
    manager.register_performance_trigger(threshold=0.05)
    with pytest.warns(DeprecationWarning) as record:
        report = manager.evaluate(
            drift_metrics={"js_divergence": 0.18},
            current_metrics={"val_loss": 0.45},
            baseline_metrics={"val_loss": 0.40},
        )
    message = str(_one(record).message)
    assert (
        "'js_divergence' as 'drift/js_distance'" in message
        and "'val_loss' as 'val/loss'" in message
    )
    assert [d.trigger_name for d in report.fired] == ["drift_trigger", "performance_trigger"]


def test_the_new_names_raise_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detail = PerformanceTrigger(metric_name="val/loss").evaluate(
            current_metrics={"val/loss": 0.45}, baseline_metrics={"val/loss": 0.40}
        )
    assert detail.triggered


def test_registry_reads_old_names_as_new(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.db")
    ckpt = tmp_path / "epoch_10.pt"
    ckpt.write_bytes(b"weights")
    with pytest.warns(DeprecationWarning) as record:
        model_id = registry.register_model(
            name="gpt-small-v1",
            version="1.0.0",
            checkpoint_path=ckpt,
            task_type="language_modeling",
            config_hash="abc",
            metrics={"val_loss": 0.40, "val_accuracy": 0.85},
        )
    assert "'val_accuracy' as 'val/accuracy'" in str(_one(record).message)
    assert registry.get_model(model_id=model_id)["metrics"] == {
        "val/loss": 0.4,
        "val/accuracy": 0.85,
    }
    with pytest.warns(DeprecationWarning, match="'val_loss' as 'val/loss'"):
        found = registry.list_models(metric_name="val_loss", max_metric_value=0.5)
    assert found["model_id"].tolist() == [model_id]
    with pytest.warns(DeprecationWarning) as record:
        table = registry.compare_models([model_id], metrics=["val_loss", "val_accuracy"])
    _one(record)
    assert table[["val/loss", "val/accuracy"]].values.tolist() == [[0.4, 0.85]]


# -- time ------------------------------------------------------------------------------------


def test_naive_last_training_time_is_read_as_utc_with_a_warning() -> None:
    now = datetime(2024, 5, 11, 12, tzinfo=timezone.utc)
    last = datetime(2024, 5, 1, 12)  # the guide: datetime.now() - timedelta(days=10)
    with pytest.warns(ModelTiersWarning, match="has no timezone; it is read as UTC") as record:
        detail = TimeTrigger(interval_hours=168).evaluate(
            metadata={"last_training_time": last.isoformat()}, now=now
        )
    _one(record)
    assert detail.triggered and detail.metrics["elapsed_hours"] == 240.0
    aware = last.replace(tzinfo=timezone.utc) + timedelta(days=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = TimeTrigger(interval_hours=168).evaluate(
            metadata={"last_training_time": aware}, now=now
        )
    assert not quiet.triggered


# -- MetricsEngine ---------------------------------------------------------------------------


def test_use_wandb_is_the_guides_name_for_wandb() -> None:
    assert MetricsEngine(use_wandb=False)._wandb is None
    with pytest.raises(ConfigError, match="contradict"):
        MetricsEngine(wandb=True, use_wandb=False)
    with pytest.raises(ConfigError, match="wandb must be True or False"):
        MetricsEngine(use_wandb="yes")  # type: ignore[arg-type]


def test_log_epoch_takes_the_guides_split_dicts(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "experiments.db")
    run = db.log_run("guide")
    engine = MetricsEngine(db, run, use_wandb=False)
    alerts = engine.log_epoch(
        epoch=0,
        train_metrics={"loss": 2.0, "accuracy": 0.3},
        val_metrics={"loss": 2.2, "accuracy": 0.28},
        learning_rate=1e-3,
        gradient_norm=0.7,
        epoch_duration=12.5,
    )
    assert alerts == [] and alerts.drift is None and alerts.drift_metrics == {}
    row = engine.history[0]
    assert {k: row[k] for k in ("train/loss", "val/accuracy", "learning_rate")} == {
        "train/loss": 2.0,
        "val/accuracy": 0.28,
        "learning_rate": 1e-3,
    }
    assert row["train/grad_norm"] == 0.7 and row["epoch_duration"] == 12.5
    stored = db.get_metrics(run)
    assert set(stored["metric_name"]) >= {"train/loss", "val/loss", "train/grad_norm"}
    regression = engine.log_epoch(epoch=1, val_metrics={"loss": 3.0})
    assert [a.rule for a in regression] == ["regression"]
    with pytest.raises(ConfigError, match="'val/loss' is given twice"):
        engine.log_epoch(2, {"val/loss": 1.0}, val_metrics={"loss": 1.0})
    with pytest.raises(ConfigError, match="train_metrics must be a dict"):
        engine.log_epoch(2, train_metrics=[1.0])  # type: ignore[arg-type]


def test_log_epoch_drift_with_a_reference_per_call(profiles: tuple[Any, Any]) -> None:
    reference, shifted = profiles
    engine = MetricsEngine(drift_threshold_warning=0.1, drift_threshold_critical=0.99)
    result = engine.log_epoch(
        epoch=0, val_metrics={"loss": 1.0}, reference_profile=reference, current_profile=shifted
    )
    assert result.drift is engine.latest_drift is not None
    distance = result.drift_metrics["drift/js_distance"]
    assert 0.1 < distance < 0.99
    assert [(a.rule, a.severity) for a in result if a.rule == "drift_threshold"] == [
        ("drift_threshold", "warning")
    ]
    with pytest.warns(DeprecationWarning, match="drift_metrics\\['drift/js_distance'\\]") as record:
        assert result.js_divergence == distance
    _one(record)
    same = engine.log_epoch(epoch=1, reference_profile=reference, current_profile=reference)
    assert not [a for a in same if a.rule == "drift_threshold"]
    with pytest.raises(ConfigError, match="no reference_profile"):
        MetricsEngine().log_epoch(0, current_profile=shifted)


def test_drift_thresholds_are_checked() -> None:
    with pytest.raises(ConfigError, match="drift_threshold_warning must be a number from 0 to 1"):
        MetricsEngine(drift_threshold_warning=2)
    with pytest.raises(ConfigError, match=r"critical .* is below drift_threshold_warning"):
        MetricsEngine(drift_threshold_warning=0.3, drift_threshold_critical=0.2)


# -- compute_dataset_profile -----------------------------------------------------------------


def test_compute_dataset_profile_samples_at_random_reproducibly() -> None:
    data = task_dataset(TASK, "train", size=80)
    first = compute_dataset_profile(data, TASK, sample_size=30)
    again = compute_dataset_profile(data, TASK, sample_size=30)
    other = compute_dataset_profile(data, TASK, sample_size=30, seed=1)
    assert first.n_examples == again.n_examples == 30
    assert compare_profiles(first, again).drifted_share == 0.0
    assert first.source == "compute_dataset_profile"
    whole = compute_dataset_profile(data, TASK, sample_size=None)
    assert whole.n_examples == 80 and other.n_examples == 30
    assert compute_dataset_profile(data, TASK, sample_size=1000).n_examples == 80
    with pytest.raises(ValueError, match="sample_size must be a positive integer"):
        compute_dataset_profile(data, TASK, sample_size=0)


# -- CheckResult -----------------------------------------------------------------------------


def test_check_result_without_tier_is_an_export_health_check() -> None:
    with pytest.warns(DeprecationWarning, match="has no tier; it is read as tier 4") as record:
        result = CheckResult(
            check_name="custom_validation",
            status="passed",
            message="Custom check passed",
            details={"metric": 0.95},
        )
    _one(record)
    assert (result.tier, result.status.value, result.details) == (4, "passed", {"metric": 0.95})
    report = ExportHealthReport(timestamp=datetime.now().isoformat(), model_name="my-model")
    report.add_check(result)
    assert report.summary["passed"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CheckResult("x", 2, "warning", "slow").tier == 2
    with pytest.raises(ValueError, match="tier must be an integer from 1 to 5; got 'passed'"):
        CheckResult("x", "passed", "msg")  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="must say why"):
        CheckResult(check_name="x", status="failed")


# -- ONNXExporter ----------------------------------------------------------------------------


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(101, 16)
        self.head = nn.Linear(16, 101)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.head(self.embed(input_ids))


class CountingLM(TinyLM):
    """Adds how often it was called: the export bakes in one count, eager moves on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        self.calls += 1
        return super().forward(input_ids) + float(self.calls)


class NormedLM(TinyLM):
    """A layer norm: ONNX's LayerNormalization is an opset 17 op, not expressible in 16."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.head(self.norm(self.embed(input_ids)))


def test_onnx_exporter_settings_are_checked() -> None:
    exporter = ONNXExporter(opset_version=16, optimize=True, validate=True)
    assert (exporter.opset_version, exporter.optimize, exporter.validate) == (16, True, True)
    with pytest.raises(ConfigError, match="opset_version must be an integer >= 7"):
        ONNXExporter(opset_version=5)
    with pytest.raises(ConfigError, match="optimize must be True or False"):
        ONNXExporter(optimize="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exporter must be one of"):
        ONNXExporter(exporter="tf2onnx")


@pytest.mark.slow
def test_onnx_exporter_validates_the_artifact(tmp_path: Path) -> None:
    adapter = get_adapter(TASK)
    artifact = ONNXExporter().export(TinyLM(), adapter, TASK, tmp_path / "good")
    assert artifact.path == tmp_path / "good" / "model.onnx" and artifact.path.is_file()
    assert artifact.details["opset"]["ai.onnx"] >= 18
    with pytest.raises(ExportError, match="differs from eager PyTorch at input shape"):
        ONNXExporter().export(CountingLM(), adapter, TASK, tmp_path / "counting")
    with pytest.raises(ExportError, match=r"opset 16 was asked for .* exporter='legacy'"):
        ONNXExporter(opset_version=16, validate=False).export(
            NormedLM(), adapter, TASK, tmp_path / "normed"
        )


# -- trigger events --------------------------------------------------------------------------


def test_trigger_events_are_found_by_name(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "experiments.db")
    policy = {"triggers": [{"type": "drift", "name": "d", "threshold": 0.1, "consecutive": 2}]}
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)

    def check(value: float) -> str:
        manager = RetrainingTriggerManager.from_config(policy, experiment_db=db)
        return (
            manager.evaluate(drift_metrics={"js_distance": value}, now=now)
            .trigger_details[0]
            .status
        )

    assert [check(0.5), check(0.5), check(0.5), check(0.0)] == [
        "pending",
        "fired",
        "fired",
        "quiet",
    ]
    runs = db.list_runs(limit=None)
    events = runs[runs["run_name"].str.contains("trigger_event")]
    assert len(events) == 2  # the two that fired, the third streak restored from an event run
    assert set(runs["run_name"]) == {"retraining_check:default", "trigger_event:default"}
    metrics = db.get_metrics(int(events["run_id"].iloc[0]))
    values = dict(zip(metrics["metric_name"], metrics["value"], strict=True))
    assert values["trigger/d/fired"] == 1.0 and math.isclose(values["trigger/d/value"], 0.5)
