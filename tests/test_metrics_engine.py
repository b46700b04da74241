"""Tests of ``MetricsEngine``: one transaction per epoch in the experiment DB, alerts on their
boundaries, drift against a real reference profile, and W&B only when asked for."""

from __future__ import annotations

import math
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import compute_profile
from pytest_modeltiers.drift.profile_io import profile_to_dict
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.evaluation.metrics_engine import (
    Alert,
    AlertRules,
    MetricsEngine,
    RegressionRule,
    ThresholdRule,
)
from pytest_modeltiers.store import ExperimentDB, RunNotFoundError, StoreError
from pytest_modeltiers.store.metric_names import MetricNameError
from pytest_modeltiers.triggers.manager import RetrainingTriggerManager


@pytest.fixture
def db(tmp_path: Path) -> ExperimentDB:
    return ExperimentDB(tmp_path / "experiments.db")


@pytest.fixture
def run(db: ExperimentDB) -> int:
    return db.log_run("train")


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


# -- logging ---------------------------------------------------------------------------------


def test_epochs_land_in_the_db_under_the_one_naming_scheme(db: ExperimentDB, run: int) -> None:
    engine = MetricsEngine(db, run)
    assert engine.log_epoch(0, {"train/loss": 2.0, "val/loss": 1.5, "learning_rate": 1e-3}) == []
    engine.log_epoch(1, {"train/loss": 1.0, "val/loss": 1.2})
    frame = db.get_metrics(run)
    assert set(frame["metric_name"]) == {"train/loss", "val/loss", "learning_rate", "alerts/count"}
    assert db.get_metrics(run, split="val")["metric_name"].tolist() == ["val/loss", "val/loss"]
    assert db.get_metrics(run, "alerts/count")["epoch"].tolist() == [0, 1]
    assert db.get_metrics(run, "learning_rate")["split"].isna().all()
    assert db.get_metrics(run, "val/loss")["value"].tolist() == [1.5, 1.2]
    assert engine.get_best_epoch("val/loss") == 1
    summary = engine.get_summary()
    assert summary["epoch"].tolist() == [0, 1]
    assert math.isnan(summary["learning_rate"].tolist()[1])


def test_in_memory_engine_needs_no_db() -> None:
    engine = MetricsEngine()
    engine.log_epoch(3, {"val/accuracy": 0.5})
    engine.log_epoch(4, {"val/accuracy": 0.7})
    assert engine.get_best_epoch("val/accuracy") == 4
    with pytest.raises(
        ConfigError,
        match=r"no epoch has a finite value of 'val/loss'; logged: alerts/count, val/accuracy",
    ):
        engine.get_best_epoch("val/loss")


def test_bad_input_is_refused_before_anything_is_written(db: ExperimentDB, run: int) -> None:
    engine = MetricsEngine(db, run)
    with pytest.raises(MetricNameError, match="write 'val/loss'"):
        engine.log_epoch(0, {"val_loss": 1.0})
    with pytest.raises(ConfigError, match="is a bool"):
        engine.log_epoch(0, {"val/loss": True})
    with pytest.raises(ConfigError, match="must be a number"):
        engine.log_epoch(0, {"val/loss": "low"})
    with pytest.raises(ConfigError, match="split the engine writes itself"):
        engine.log_epoch(0, {"drift/js_distance": 0.1})
    with pytest.raises(ConfigError, match="epoch must be an integer >= 0"):
        engine.log_epoch(-1, {})
    assert db.get_metrics(run).empty
    engine.log_epoch(1, {"val/loss": 1.0})
    with pytest.raises(ConfigError, match="epoch 1 is not after the last logged epoch 1"):
        engine.log_epoch(1, {"val/loss": 1.0})
    with pytest.raises(ConfigError, match="db and run_id together"):
        MetricsEngine(db)
    with pytest.raises(RunNotFoundError, match="run 99 does not exist"):
        MetricsEngine(db, 99)


def test_an_epoch_is_one_transaction(db: ExperimentDB, run: int) -> None:
    engine = MetricsEngine(db, run)
    # Make the artifact insert fail after the metric rows went in: nothing may remain.
    with sqlite3.connect(db.path) as conn:
        conn.execute(
            "CREATE TRIGGER no_artifacts BEFORE INSERT ON artifacts "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(StoreError, match="disk says no"):
        engine.log_epoch(0, {"val/loss": math.nan})  # NaN: an alert, so an artifact
    assert db.get_metrics(run).empty
    assert engine.history == [] and engine.get_alerts() == []
    with sqlite3.connect(db.path) as conn:
        conn.execute("DROP TRIGGER no_artifacts")
    alerts = engine.log_epoch(0, {"val/loss": math.nan})
    assert [a.rule for a in alerts] == ["non_finite"]
    assert math.isnan(db.get_metrics(run, "val/loss")["value"].item())  # stored, as NULL
    stored = db.get_artifacts(run, "alerts")["metadata"].item()
    assert stored["alerts"][0]["rule"] == "non_finite" and math.isnan(stored["alerts"][0]["value"])


# -- alerts ----------------------------------------------------------------------------------


def test_non_finite_metric_is_critical() -> None:
    seen: list[Alert] = []
    engine = MetricsEngine(on_alert=[seen.append])
    alerts = engine.log_epoch(0, {"train/loss": math.inf, "val/loss": 1.0})
    assert [(a.rule, a.severity, a.metric) for a in alerts] == [
        ("non_finite", "critical", "train/loss")
    ]
    assert "diverged" in alerts[0].message
    assert seen == alerts and engine.has_alerts()
    assert engine.get_alerts(clear=True) == alerts and not engine.has_alerts()


def test_loss_regression_against_the_best_epoch_boundary() -> None:
    rules = AlertRules(regressions=(RegressionRule("val/loss", relative=0.25),))
    engine = MetricsEngine(alert_rules=rules)
    engine.log_epoch(0, {"val/loss": 2.0})
    engine.log_epoch(1, {"val/loss": 1.0})  # the best
    assert engine.log_epoch(2, {"val/loss": 1.25}) == []  # exactly 25 % worse: allowed
    alerts = engine.log_epoch(3, {"val/loss": above(1.25)})
    assert [(a.rule, a.metric, a.threshold) for a in alerts] == [("regression", "val/loss", 0.25)]
    assert "worse than its best 1 by" in alerts[0].message


def test_accuracy_regression_absolute_boundary_with_the_default_rules() -> None:
    engine = MetricsEngine()
    engine.log_epoch(0, {"val/accuracy": 0.5})
    assert engine.log_epoch(1, {"val/accuracy": 0.45}) == []  # 0.05 below: allowed
    alerts = engine.log_epoch(2, {"val/accuracy": math.nextafter(0.45, 0.0)})
    assert [(a.rule, a.metric) for a in alerts] == [("regression", "val/accuracy")]
    assert engine.log_epoch(3, {"val/accuracy": 0.9}) == []  # a new best


def test_threshold_rule_and_rules_from_a_dict() -> None:
    rules = AlertRules.from_dict(
        {
            "regressions": [],
            "thresholds": [
                {"metric": "train/grad_norm", "max_value": 10.0, "severity": "critical"}
            ],
        }
    )
    engine = MetricsEngine(alert_rules=rules)
    assert engine.log_epoch(0, {"train/grad_norm": 10.0}) == []
    alerts = engine.log_epoch(1, {"train/grad_norm": above(10.0)})
    assert [(a.rule, a.severity) for a in alerts] == [("threshold", "critical")]
    assert (
        engine.log_epoch(2, {"val/loss": 5.0, "train/grad_norm": 1.0}) == []
    )  # no regression rules
    low = MetricsEngine(
        alert_rules=AlertRules(
            regressions=(), thresholds=(ThresholdRule("val/accuracy", min_value=0.5),)
        )
    )
    assert low.log_epoch(0, {"val/accuracy": 0.25})[0].message.endswith("is below 0.5")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"regresions": []}, "did you mean 'regressions'"),
        ({"regressions": [{"metric": "val/loss"}]}, "set relative, absolute or both"),
        ({"regressions": [{"metric": "val/custom", "relative": 0.1}]}, "set mode='min'"),
        ({"regressions": [{"metric": "val/loss", "relative": -1}]}, "must be a number >= 0"),
        ({"regressions": [{"metric": "val/loss", "relativ": 0.1}]}, "bad alert rule"),
        ({"thresholds": [{"metric": "x"}]}, "set max_value, min_value or both"),
        ({"drift_severity": "loud"}, "drift_severity must be one of"),
    ],
)
def test_bad_alert_rules(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AlertRules.from_dict(data)


# -- drift against a real reference profile --------------------------------------------------


@pytest.fixture(scope="module")
def vision_profiles() -> dict[str, Any]:
    task = get_builtin_task("vision_tiny")
    return {
        "reference": compute_profile(None, None, task, task_dataset(task, "train", seed=1)),
        "same": compute_profile(None, None, task, task_dataset(task, "test", seed=2)),
        "shifted": compute_profile(None, None, task, task_dataset(task, "test", shift=1.0, seed=2)),
    }


def test_drift_checks_against_the_reference_profile(
    db: ExperimentDB, run: int, vision_profiles: dict[str, Any]
) -> None:
    engine = MetricsEngine(db, run, reference_profile=vision_profiles["reference"])
    assert engine.log_epoch(0, {"val/loss": 1.0}, current_profile=vision_profiles["same"]) == []
    assert engine.latest_drift is not None and not engine.latest_drift.dataset_drifted
    alerts = engine.log_epoch(1, {"val/loss": 1.0}, current_profile=vision_profiles["shifted"])
    assert [(a.rule, a.severity) for a in alerts] == [("drift", "warning")]
    assert "of the signals drifted (pixel_mean_c0" in alerts[0].message
    share = db.get_metrics(run, "drift/drifted_share")["value"].tolist()
    assert share[0] == 0.0 and share[1] >= 0.5
    reports = db.get_artifacts(run, "drift_report")
    assert len(reports) == 2 and reports["metadata"].iloc[0]["dataset_drifted"] is True
    # The retraining triggers read the engine's latest drift under the same names.
    manager = RetrainingTriggerManager(metrics_engine=engine)
    manager.register_drift_trigger(threshold=0.49, metric_name="drifted_share", severity="critical")
    report = manager.check_retraining_needed()
    assert report.triggered and report.gate_failed


def test_dict_profiles_and_a_missing_reference(vision_profiles: dict[str, Any]) -> None:
    engine = MetricsEngine(reference_profile=profile_to_dict(vision_profiles["reference"]))
    engine.log_epoch(0, {}, current_profile=profile_to_dict(vision_profiles["shifted"]))
    assert engine.latest_drift is not None and engine.latest_drift.dataset_drifted
    with pytest.raises(ConfigError, match="no reference_profile"):
        MetricsEngine().log_epoch(0, {}, current_profile=vision_profiles["same"])


# -- Weights & Biases ------------------------------------------------------------------------


def test_wandb_requested_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(
        ModelTiersError,
        match=r"wandb=True but the wandb package is not installed; pip install wandb",
    ):
        MetricsEngine(wandb=True)
    MetricsEngine(wandb=False).log_epoch(0, {"val/loss": 1.0})  # off: never imported


def test_wandb_logs_each_epoch_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    module = types.ModuleType("wandb")
    module.run = None  # type: ignore[attr-defined]
    module.init = lambda **kw: calls.append(("init", kw))  # type: ignore[attr-defined]
    module.log = lambda data, step: calls.append(("log", (data, step)))  # type: ignore[attr-defined]
    module.finish = lambda: calls.append(("finish", None))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    with MetricsEngine(wandb=True, wandb_init={"project": "p"}) as engine:
        engine.log_epoch(0, {"val/loss": math.inf})
    assert calls[0] == ("init", {"project": "p"})
    assert calls[1] == ("log", ({"val/loss": "inf", "alerts/count": 1.0}, 0))
    assert calls[2] == ("finish", None)
