"""``RetrainingTriggerManager`` and ``evaluate_retraining``: registration, the event log in the
experiment DB, streaks that persist from one run to the next, baselines from the registry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_modeltiers.errors import ConfigError, ModelTiersWarning
from pytest_modeltiers.store import ExperimentDB
from pytest_modeltiers.store.model_registry import ModelRegistry
from pytest_modeltiers.triggers.manager import (
    DriftTrigger,
    RetrainingTriggerManager,
    evaluate_retraining,
    gate_failed,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> ExperimentDB:
    return ExperimentDB(tmp_path / "experiments.db")


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models.db")


def test_guide_quick_start() -> None:
    manager = RetrainingTriggerManager()
    manager.register_drift_trigger(threshold=0.15, severity="warning")
    manager.register_performance_trigger(threshold=0.05, metric_name="val/loss", severity="warning")
    manager.register_time_trigger(interval_hours=168, severity="info")
    manager.register_data_volume_trigger(threshold_percentage=0.20, severity="info")
    report = manager.evaluate(
        drift_metrics={"js_distance": 0.18},
        current_metrics={"val/loss": 0.45},
        baseline_metrics={"val/loss": 0.40},
        metadata={
            "last_training_time": NOW - timedelta(days=10),
            "current_count": 6000,
            "baseline_count": 5000,
        },
        now=NOW,
    )
    assert report.triggered and report.severity == "warning" and not report.gate_failed
    assert [d.status for d in report.trigger_details] == ["fired"] * 4
    assert report.metadata["inputs"]["drift"] == {"drift/js_distance": 0.18}
    assert manager.get_trigger_history() == [report]


def test_registration_rules() -> None:
    manager = RetrainingTriggerManager()
    with pytest.raises(ConfigError, match="no retraining triggers are registered"):
        manager.evaluate()
    trig = DriftTrigger(name="x")
    manager.register_trigger("renamed", trig)
    assert trig.name == "renamed" and list(manager.triggers) == ["renamed"]
    with pytest.warns(ModelTiersWarning, match="'renamed' was already registered"):
        manager.register_drift_trigger(name="renamed")
    comp = manager.register_composite_trigger([DriftTrigger(name="a"), DriftTrigger(name="b")])
    assert comp.name == "composite_trigger"
    with pytest.raises(ConfigError, match="gate must be one of"):
        RetrainingTriggerManager(gate="none")
    with pytest.raises(ConfigError, match="scope must be"):
        RetrainingTriggerManager(scope="my scope")


def test_history_is_bounded_by_limit() -> None:
    manager = RetrainingTriggerManager.from_config({"triggers": [{"type": "drift"}]})
    reports = [manager.evaluate(drift_metrics={"js_distance": v}, now=NOW) for v in (0.1, 0.2, 0.3)]
    assert manager.get_trigger_history(2) == reports[1:]
    assert manager.get_trigger_history(None) == reports
    with pytest.raises(ConfigError, match="positive integer"):
        manager.get_trigger_history(0)


def test_every_evaluation_is_logged_to_the_experiment_db(db: ExperimentDB) -> None:
    manager = RetrainingTriggerManager.from_config("balanced", experiment_db=db, scope="gpt")
    report = manager.evaluate(drift_metrics={"js_distance": 0.5}, now=NOW)
    runs = db.list_runs()
    assert runs["run_name"].tolist() == ["trigger_event:gpt"]  # it fired
    assert runs["status"].tolist() == ["completed"]
    run = int(runs["run_id"].item())
    stored = db.get_run(run)["config"]
    assert stored["report"] == report.to_dict()
    assert stored["triggers"]["drift_balanced"]["state"] == {"streak": 1}
    metrics = db.get_metrics(run)
    values = dict(zip(metrics["metric_name"], metrics["value"], strict=True))
    assert values["trigger/drift_balanced/fired"] == 1.0
    assert values["trigger/drift_balanced/value"] == 0.5
    assert values["trigger/performance_balanced/fired"] == 0.0
    assert "trigger/performance_balanced/condition" not in values  # no data: no condition
    assert values["trigger/severity_rank"] == 2.0  # warning
    # A quiet window is logged too: the streaks of the next run are rebuilt from it.
    manager.evaluate(drift_metrics={"js_distance": 0.0}, now=NOW)
    assert db.list_runs()["run_name"].tolist() == ["retraining_check:gpt", "trigger_event:gpt"]


def test_streaks_persist_across_runs_through_the_db(db: ExperimentDB) -> None:
    policy = {"triggers": [{"type": "drift", "name": "d", "threshold": 0.1, "consecutive": 2}]}

    def ci_run(value: float, scope: str = "model-a", policy: dict = policy) -> str:
        # A fresh manager per CI run, as each pytest session builds its own.
        report = evaluate_retraining(
            policy, drift={"js_distance": value}, experiment_db=db, scope=scope, now=NOW
        )
        return report.trigger_details[0].status

    assert ci_run(0.5) == "pending"
    assert ci_run(0.5) == "fired"  # the second run in a row
    assert ci_run(0.5, scope="model-b") == "pending"  # another stream
    assert ci_run(0.0) == "quiet"
    assert ci_run(0.5) == "pending"  # the quiet run broke the streak
    changed = {"triggers": [{"type": "drift", "name": "d", "threshold": 0.2, "consecutive": 2}]}
    assert ci_run(0.5, policy=changed) == "pending"  # a changed config counts afresh


def test_reset_after_retraining(db: ExperimentDB) -> None:
    manager = RetrainingTriggerManager(experiment_db=db)
    manager.register_drift_trigger(threshold=0.1, consecutive=2)
    manager.evaluate(drift_metrics={"js_distance": 0.5})
    manager.reset()
    assert (
        manager.evaluate(drift_metrics={"js_distance": 0.5}).trigger_details[0].status == "pending"
    )


def test_baseline_time_and_volume_from_the_registry(
    registry: ModelRegistry, db: ExperimentDB, tmp_path: Path
) -> None:
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"w")
    old = registry.register_model("gpt", "1.0.0", ckpt, "lm", "h", {"val/loss": 0.4})
    prod = registry.register_model(
        "gpt",
        "1.1.0",
        ckpt,
        "lm",
        "h",
        {"val/loss": 0.5},
        metadata={"trained_at": "2024-04-20T12:00:00Z", "training_samples": 1000},
    )
    registry.promote_model(prod, "production")
    run = db.log_run("monitoring")
    for epoch, loss in enumerate([0.9, 0.55, 0.56]):
        db.log_metric(run, "val/loss", loss, epoch=epoch)
    manager = RetrainingTriggerManager.from_config(
        {
            "preset": "balanced",
            "overrides": {"performance": {"lookback_epochs": 2}},
        },
        model_registry=registry,
        experiment_db=db,
    )
    report = manager.check_retraining_needed(run_id=run, current_count=1250, now=NOW)
    by_kind = {d.kind: d for d in report.trigger_details}
    perf = by_kind["performance"]
    assert perf.metrics["baseline_value"] == 0.5  # the production model, not the older one
    assert perf.metrics["current_value"] == pytest.approx(0.555)  # mean of the last 2 epochs
    assert perf.triggered  # 11 % worse than 0.5
    assert by_kind["time"].triggered and by_kind["time"].metrics["elapsed_hours"] == 264.0
    assert by_kind["data_volume"].triggered  # 250 new on 1000 is 25 %
    assert by_kind["drift"].status == "no_data"
    # An explicit model id wins over the alias.
    older = manager.check_retraining_needed(
        model_id=old, current_metrics={"val/loss": 0.41}, now=NOW
    )
    assert {d.kind: d for d in older.trigger_details}["performance"].status == "quiet"
    with pytest.raises(ConfigError, match="model 99 is not in the registry"):
        manager.check_retraining_needed(model_id=99)


def test_no_production_model_means_no_baseline(registry: ModelRegistry) -> None:
    report = evaluate_retraining(
        "balanced", current_metrics={"loss": 1.0}, split="val", model_registry=registry, now=NOW
    )
    perf = next(d for d in report.trigger_details if d.kind == "performance")
    assert perf.status == "no_data" and "missing from the baseline" in perf.reason
    assert "Trigger 'performance_balanced' could not be evaluated" in " ".join(
        report.recommendations
    )


def test_the_gate(tmp_path: Path) -> None:
    quiet = evaluate_retraining("conservative", drift={"js_distance": 0.2}, now=NOW)
    assert not quiet.triggered and not gate_failed(quiet)
    loud = evaluate_retraining("conservative", drift={"js_distance": 0.21}, now=NOW)
    assert loud.severity == "critical" and gate_failed(loud)
    warn = evaluate_retraining("balanced", drift={"js_distance": 0.21}, now=NOW)
    assert not gate_failed(warn) and gate_failed(warn, "warning")
    stricter = evaluate_retraining("balanced", drift={"js_distance": 0.21}, now=NOW, gate="warning")
    assert stricter.gate_failed
    stricter.to_json(tmp_path / "retraining.json")
    assert json.loads((tmp_path / "retraining.json").read_text())["gate_failed"] is True


def test_example_config_file() -> None:
    path = ROOT / "configs" / "example_triggers.json"
    both = evaluate_retraining(
        path,
        drift={"drifted_share": 0.5, "js_distance": 0.0},
        current_metrics={"eval/loss": 1.2},
        baseline_metrics={"eval/loss": 1.0},
        now=NOW,
    )
    composite = next(d for d in both.trigger_details if d.kind == "composite")
    assert composite.triggered and both.severity == "critical" and both.gate_failed
    only_drift = evaluate_retraining(
        path,
        drift={"drifted_share": 0.5, "js_distance": 0.0},
        current_metrics={"eval/loss": 1.0},
        baseline_metrics={"eval/loss": 1.0},
        now=NOW,
    )
    assert not only_drift.gate_failed
