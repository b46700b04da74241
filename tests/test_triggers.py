"""Retraining triggers, rule by rule: each fires just past its boundary and stays quiet on it;
persistence over consecutive windows; configs, presets and the factory; the report."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_modeltiers.drift.verdicts import compare_signals
from pytest_modeltiers.errors import ConfigError, ModelTiersError, ModelTiersWarning
from pytest_modeltiers.store.metric_names import MetricNameError, canonical_metric_name
from pytest_modeltiers.triggers.base import parse_utc
from pytest_modeltiers.triggers.config import infer_mode
from pytest_modeltiers.triggers.inputs import build_inputs
from pytest_modeltiers.triggers.manager import (
    CompositeTrigger,
    DataVolumeTrigger,
    DriftTrigger,
    DriftTriggerConfig,
    PerformanceTrigger,
    PerformanceTriggerConfig,
    RetrainingPolicy,
    RetrainingReport,
    TimeTrigger,
    TimeTriggerConfig,
    TriggerConfig,
    TriggerInputError,
    build_trigger,
    drift_metrics_from_report,
    get_aggressive_config,
    get_balanced_config,
    get_conservative_config,
    load_policy,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


# -- the naming scheme -----------------------------------------------------------------------


def test_one_metric_naming_scheme() -> None:
    assert canonical_metric_name("loss", "val") == "val/loss"
    assert canonical_metric_name("val/loss") == "val/loss"
    assert canonical_metric_name("learning_rate") == "learning_rate"
    assert canonical_metric_name("js_distance", "drift") == "drift/js_distance"
    with pytest.raises(MetricNameError, match=r"'val_loss' uses the old underscore.*'val/loss'"):
        canonical_metric_name("val_loss")
    with pytest.raises(MetricNameError, match="empty path segment"):
        canonical_metric_name("val//loss")


def test_guide_names_are_read_as_the_new_ones_with_one_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'val_loss' as 'val/loss'; write the new") as seen:
        trig = PerformanceTrigger(metric_name="val_loss")
    assert trig.metric_name == "val/loss" and len(seen) == 1
    with pytest.warns(DeprecationWarning, match="'train_accuracy' as 'train/accuracy'") as seen:
        detail = PerformanceTrigger(metric_name="train/accuracy").evaluate(
            current_metrics={"train_accuracy": 0.5}, baseline_metrics={"train_accuracy": 0.9}
        )
    assert detail.triggered and len(seen) == 1


# -- drift -----------------------------------------------------------------------------------


def test_drift_fires_strictly_above_threshold() -> None:
    quiet = DriftTrigger(threshold=0.15).evaluate(drift_metrics={"js_distance": 0.15})
    assert quiet.status == "quiet" and not quiet.triggered
    assert "<= threshold 0.15" in quiet.reason
    fired = DriftTrigger(threshold=0.15).evaluate(drift_metrics={"drift/js_distance": above(0.15)})
    assert fired.triggered and fired.actual_value == above(0.15) and fired.threshold == 0.15
    assert "Data drift" in fired.recommendation


def test_drift_missing_measure_is_no_data_listing_what_exists() -> None:
    detail = DriftTrigger().evaluate(drift_metrics={"drifted_share": 0.9})
    assert detail.status == "no_data" and not detail.triggered
    assert "'drift/js_distance' is missing" in detail.reason
    assert "drift/drifted_share" in detail.reason
    assert DriftTrigger().evaluate().status == "no_data"


def test_drift_window_size_is_used() -> None:
    trig = DriftTrigger(threshold=0.1, window_size=100)
    small = trig.evaluate(drift_metrics={"js_distance": 0.5, "n_current": 99})
    assert small.status == "no_data" and "fewer than window_size=100" in small.reason
    enough = trig.evaluate(drift_metrics={"js_distance": 0.5, "n_current": 100})
    assert enough.triggered
    unknown = trig.evaluate(drift_metrics={"js_distance": 0.5})
    assert unknown.status == "no_data" and "drift/n_current" in unknown.reason


def _report(shift: float, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    probs_ref = np.array([0.4, 0.3, 0.2, 0.1])
    probs_cur = (1 - shift) * probs_ref + shift * np.array([0.1, 0.2, 0.3, 0.4])
    ref = {
        "predicted_class": rng.choice(4, size=5000, p=probs_ref),
        "max_prob": rng.normal(0.7, 0.1, size=5000),
    }
    cur = {
        "predicted_class": rng.choice(4, size=5000, p=probs_cur),
        "max_prob": rng.normal(0.7 + shift * 0.2, 0.1, size=5000),
    }
    return compare_signals(ref, cur)


def test_drift_report_flattens_to_measures_and_drives_the_trigger() -> None:
    shifted, same = _report(1.0), _report(0.0)
    measures = drift_metrics_from_report(shifted)
    assert measures["drift/dataset_drifted"] == 1.0
    assert measures["drift/drifted_share"] == 1.0
    assert measures["drift/n_current"] == 5000
    assert measures["drift/js_distance"] == measures["drift/predicted_class/js_distance"]
    assert measures["drift/wasserstein_normalized"] > 0.1
    assert drift_metrics_from_report(shifted.to_dict()) == measures  # the dict form works too
    trig = DriftTrigger(threshold=0.15)
    assert trig.evaluate(drift_metrics=shifted).triggered
    assert trig.evaluate(drift_metrics=same).status == "quiet"
    share = DriftTrigger(threshold=0.49, metric_name="drifted_share")
    assert share.evaluate(drift_metrics=shifted.to_dict()).triggered
    assert not share.evaluate(drift_metrics=same).triggered


def test_inconclusive_drift_report_gives_no_data() -> None:
    tiny = compare_signals({"x": np.arange(5.0)}, {"x": np.arange(5.0)})
    assert tiny.inconclusive
    measures = drift_metrics_from_report(tiny)
    assert "drift/drifted_share" not in measures
    detail = DriftTrigger(metric_name="drifted_share", threshold=0.5).evaluate(drift_metrics=tiny)
    assert detail.status == "no_data"


# -- performance -----------------------------------------------------------------------------


def test_performance_min_boundary() -> None:
    trig = PerformanceTrigger(threshold=0.125, metric_name="val/loss")
    base = {"val/loss": 1.0}
    quiet = trig.evaluate(current_metrics={"val/loss": 1.125}, baseline_metrics=base)
    assert quiet.status == "quiet" and quiet.actual_value == 0.125
    fired = trig.evaluate(current_metrics={"val/loss": above(1.125)}, baseline_metrics=base)
    assert fired.triggered
    assert fired.metrics["change_percent"] == pytest.approx(12.5)
    better = trig.evaluate(current_metrics={"val/loss": 0.5}, baseline_metrics=base)
    assert better.status == "quiet" and better.actual_value == -0.5


def test_performance_max_boundary_and_inferred_direction() -> None:
    trig = PerformanceTrigger(threshold=0.125, metric_name="val/accuracy")
    assert trig.mode == "max"
    base = {"val/accuracy": 1.0}
    assert not trig.evaluate(
        current_metrics={"val/accuracy": 0.875}, baseline_metrics=base
    ).triggered
    assert trig.evaluate(
        current_metrics={"val/accuracy": below(0.875)}, baseline_metrics=base
    ).triggered
    assert not trig.evaluate(current_metrics={"val/accuracy": 1.5}, baseline_metrics=base).triggered


def test_perplexity_is_lower_is_better_unlike_the_guide() -> None:
    trig = PerformanceTrigger(threshold=0.05, metric_name="eval/perplexity")
    assert trig.mode == "min"
    worse = trig.evaluate(
        current_metrics={"eval/perplexity": 30}, baseline_metrics={"eval/perplexity": 20}
    )
    assert worse.triggered


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("val/loss", "min"),
        ("eval/token_accuracy", "max"),
        ("eval/macro_f1", "max"),
        ("test/top5_accuracy", "max"),
        ("val/mse", "min"),
        ("eval/bleu", "max"),
        ("custom_score", None),
    ],
)
def test_infer_mode(name: str, mode: str | None) -> None:
    assert infer_mode(name) == mode


def test_unknown_direction_needs_mode() -> None:
    with pytest.raises(ConfigError, match="set mode to 'min'"):
        PerformanceTrigger(metric_name="eval/custom_score")
    trig = PerformanceTrigger(metric_name="eval/custom_score", mode="max", threshold=0.0)
    assert trig.evaluate(
        current_metrics={"eval/custom_score": 0.9}, baseline_metrics={"eval/custom_score": 1.0}
    ).triggered


def test_performance_zero_baseline_and_divergence() -> None:
    trig = PerformanceTrigger(threshold=0.05)
    zero = {"val/loss": 0.0}
    assert trig.evaluate(current_metrics={"val/loss": 0.0}, baseline_metrics=zero).status == "quiet"
    assert trig.evaluate(current_metrics={"val/loss": 1e-9}, baseline_metrics=zero).triggered
    nan = trig.evaluate(current_metrics={"val/loss": math.nan}, baseline_metrics={"val/loss": 1.0})
    assert nan.triggered and "diverged" in nan.reason
    bad_base = trig.evaluate(
        current_metrics={"val/loss": 1.0}, baseline_metrics={"val/loss": math.inf}
    )
    assert bad_base.status == "no_data" and "not a finite number" in bad_base.reason


def test_performance_missing_metric_is_no_data_naming_available() -> None:
    detail = PerformanceTrigger().evaluate(
        current_metrics={"eval/loss": 2.0}, baseline_metrics={"val/loss": 1.0}
    )
    assert detail.status == "no_data"
    assert "'val/loss' is missing from the current metrics (available: eval/loss)" in detail.reason


def test_split_qualifies_bare_names() -> None:
    trig = PerformanceTrigger(metric_name="eval/loss")
    inputs = build_inputs(
        current_metrics={"loss": 2.0}, baseline_metrics={"loss": 1.0}, split="eval"
    )
    detail = trig.evaluate_inputs(inputs)
    assert detail.triggered


def test_lookback_epochs_averages_the_tail_of_a_history() -> None:
    base = {"val/loss": 1.0}
    history = {"val/loss": [5.0, 1.0, 1.0]}
    assert (
        not PerformanceTrigger(lookback_epochs=2)
        .evaluate(current_metrics=history, baseline_metrics=base)
        .triggered
    )
    fired = PerformanceTrigger(lookback_epochs=3).evaluate(
        current_metrics=history, baseline_metrics=base
    )
    assert fired.triggered and "mean of the last 3 value(s)" in fired.reason
    assert fired.metrics["current_value"] == pytest.approx(7 / 3)


# -- time ------------------------------------------------------------------------------------


def test_time_fires_at_the_interval_exactly() -> None:
    trig = TimeTrigger(interval_hours=168)
    at = trig.evaluate(metadata={"last_training_time": NOW - timedelta(hours=168)}, now=NOW)
    assert at.triggered and at.actual_value == 168.0
    just_before = NOW - timedelta(hours=168) + timedelta(microseconds=1)
    early = trig.evaluate(metadata={"last_training_time": just_before}, now=NOW)
    assert early.status == "quiet" and "< interval 168 h" in early.reason
    assert "Scheduled retraining" in at.recommendation


def test_time_is_utc_aware_whatever_the_offset() -> None:
    trig = TimeTrigger(interval_hours=2)
    # 12:00 at +02:00 is 10:00 UTC: exactly two hours before NOW.
    assert trig.evaluate(
        metadata={"last_training_time": "2024-05-01T12:00:00+02:00"}, now=NOW
    ).triggered
    assert trig.evaluate(metadata={"last_training_time": "2024-05-01T10:00:00Z"}, now=NOW).triggered
    assert not trig.evaluate(
        metadata={"last_training_time": "2024-05-01T10:00:01Z"}, now=NOW
    ).triggered
    stored = "2024-05-01T10:00:00.000000Z"  # the stores' own format
    assert trig.evaluate(metadata={"last_training_time": stored}, now=NOW).triggered


def test_naive_times_are_read_as_utc_with_a_warning() -> None:
    # A naive last training time (the usage guide's datetime.now().isoformat()) is read as
    # UTC with a warning; a naive ``now`` (this package's own argument) is refused.
    for naive in (datetime(2024, 4, 24, 12), "2024-04-24T12:00:00"):
        with pytest.warns(ModelTiersWarning, match="has no timezone; it is read as UTC"):
            detail = TimeTrigger().evaluate(metadata={"last_training_time": naive}, now=NOW)
        assert detail.triggered and detail.metrics["elapsed_hours"] == 168.0
    with pytest.raises(TriggerInputError, match="has no timezone"):
        TimeTrigger().evaluate(now=datetime(2024, 1, 1))
    with pytest.raises(TriggerInputError, match="not an ISO 8601"):
        parse_utc("last tuesday", "t")
    with pytest.warns(ModelTiersWarning, match="read as UTC"):
        config = TimeTriggerConfig(last_training_time="2024-01-01T00:00:00")
    assert config.last_training_time == "2024-01-01T00:00:00.000000Z"


def test_time_config_fallback_and_future_and_missing() -> None:
    trig = TimeTrigger(interval_hours=1, last_training_time=NOW - timedelta(hours=1))
    assert trig.config.last_training_time == "2024-05-01T11:00:00.000000Z"
    detail = trig.evaluate(now=NOW)
    assert detail.triggered and detail.metrics["source"] == "config"
    future = trig.evaluate(metadata={"last_training_time": NOW + timedelta(hours=1)}, now=NOW)
    assert future.status == "quiet" and "in the future" in future.reason
    assert TimeTrigger().evaluate(now=NOW).status == "no_data"


# -- data volume -----------------------------------------------------------------------------


def test_data_volume_percentage_boundary() -> None:
    trig = DataVolumeTrigger(threshold_percentage=0.2)
    assert trig.evaluate(metadata={"current_count": 6000, "baseline_count": 5000}).triggered
    quiet = trig.evaluate(metadata={"current_count": 5999, "baseline_count": 5000})
    assert quiet.status == "quiet"


def test_data_volume_samples_boundary_and_or() -> None:
    trig = DataVolumeTrigger(threshold_samples=1000, threshold_percentage=None)
    assert trig.evaluate(metadata={"current_count": 11000, "baseline_count": 10000}).triggered
    assert not trig.evaluate(metadata={"current_count": 10999, "baseline_count": 10000}).triggered
    either = DataVolumeTrigger(threshold_samples=1000, threshold_percentage=0.2)
    # 500 new samples is below 1000, but 50 % of a 1000 baseline is above 20 %: OR fires.
    detail = either.evaluate(metadata={"current_count": 1500, "baseline_count": 1000})
    assert detail.triggered and detail.actual_value == 500
    assert detail.metrics["increase_fraction"] == 0.5


def test_data_volume_edge_cases() -> None:
    trig = DataVolumeTrigger(threshold_percentage=0.2, baseline_count=100)
    assert trig.evaluate(metadata={"current_count": 120}).triggered  # config baseline
    assert trig.evaluate(metadata={"current_count": 1, "baseline_count": 0}).triggered
    assert not trig.evaluate(metadata={"current_count": 0, "baseline_count": 0}).triggered
    assert not trig.evaluate(metadata={"current_count": 50}).triggered  # less data
    assert DataVolumeTrigger().evaluate(metadata={"baseline_count": 5}).status == "no_data"
    with pytest.raises(TriggerInputError, match="integer count"):
        trig.evaluate(metadata={"current_count": 10.5})
    with pytest.raises(ConfigError, match="set threshold_samples, threshold_percentage or both"):
        DataVolumeTrigger(threshold_samples=None, threshold_percentage=None)


# -- composite -------------------------------------------------------------------------------


def _drift(name: str, threshold: float = 0.1) -> DriftTrigger:
    return DriftTrigger(threshold=threshold, metric_name=name, name=name)


@pytest.mark.parametrize(
    ("logic", "a", "b", "expected"),
    [
        ("OR", 0.2, 0.0, "fired"),
        ("OR", 0.0, 0.0, "quiet"),
        ("OR", 0.0, None, "no_data"),
        ("OR", 0.2, None, "fired"),
        ("AND", 0.2, 0.2, "fired"),
        ("AND", 0.2, 0.0, "quiet"),
        ("AND", 0.2, None, "no_data"),
        ("AND", 0.0, None, "quiet"),
    ],
)
def test_composite_logic(logic: str, a: float, b: float | None, expected: str) -> None:
    comp = CompositeTrigger([_drift("a"), _drift("b")], logic=logic, name="both")
    measures = {"a": a} if b is None else {"a": a, "b": b}
    detail = comp.evaluate(drift_metrics=measures)
    assert detail.status == expected
    assert [c.trigger_name for c in detail.children] == ["a", "b"]


def test_composite_nests_and_disabled_children_are_left_out() -> None:
    inner = CompositeTrigger([_drift("a"), _drift("b")], logic="OR", name="inner")
    off = DriftTrigger(metric_name="c", name="c", enabled=False)
    policy = CompositeTrigger([inner, _drift("d"), off], logic="AND", name="policy")
    fired = policy.evaluate(drift_metrics={"a": 0.0, "b": 0.5, "d": 0.5})
    assert fired.triggered
    paths = [p for p, _ in fired.walk()]
    assert paths == [
        "policy",
        "policy/inner",
        "policy/inner/a",
        "policy/inner/b",
        "policy/d",
        "policy/c",
    ]
    assert fired.children[2].status == "disabled"
    assert "Policy 'policy'" in fired.recommendation and "Data drift" in fired.recommendation
    assert not policy.evaluate(drift_metrics={"a": 0.0, "b": 0.0, "d": 0.5}).triggered


def test_composite_rejects_bad_children() -> None:
    with pytest.raises(ConfigError, match="list of trigger objects"):
        CompositeTrigger([{"type": "drift"}])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="child names must be unique"):
        CompositeTrigger([_drift("a"), _drift("a")])


# -- persistence, enabled --------------------------------------------------------------------


def test_consecutive_windows() -> None:
    trig = DriftTrigger(threshold=0.1, consecutive=2)
    first = trig.evaluate(drift_metrics={"js_distance": 0.5})
    assert first.status == "pending" and first.streak == 1
    assert "held in 1 consecutive window(s), 2 required" in first.reason
    second = trig.evaluate(drift_metrics={"js_distance": 0.5})
    assert second.triggered and second.streak == 2
    assert trig.evaluate(drift_metrics={"js_distance": 0.5}).triggered  # stays fired
    assert trig.evaluate(drift_metrics={"js_distance": 0.0}).streak == 0
    assert trig.evaluate(drift_metrics={"js_distance": 0.5}).status == "pending"
    assert trig.evaluate().status == "no_data"  # a window without data breaks the streak
    assert trig.evaluate(drift_metrics={"js_distance": 0.5}).status == "pending"


def test_state_round_trip_and_reset() -> None:
    comp = CompositeTrigger([_drift("a")], consecutive=3, name="c")
    comp.evaluate(drift_metrics={"a": 0.5})
    state = comp.state_dict()
    assert state == {"streak": 1, "children": {"a": {"streak": 1}}}
    again = CompositeTrigger([_drift("a")], consecutive=3, name="c")
    again.load_state_dict(state)
    assert again.evaluate(drift_metrics={"a": 0.5}).streak == 2
    again.reset()
    assert again.streak == 0 and again.children[0].streak == 0
    with pytest.raises(TriggerInputError, match="streak"):
        again.load_state_dict({"streak": -1})


def test_disabled_trigger_is_not_evaluated() -> None:
    detail = DriftTrigger(enabled=False).evaluate(drift_metrics={"js_distance": 1.0})
    assert detail.status == "disabled" and not detail.triggered and not detail.evaluated


# -- configs, factory, presets ---------------------------------------------------------------


def test_every_trigger_round_trips_through_its_config() -> None:
    triggers = [
        DriftTrigger(0.2, "drifted_share", "critical", "d", window_size=50, consecutive=2),
        PerformanceTrigger(0.1, "val/accuracy", None, "warning", "p", lookback_epochs=3),
        TimeTrigger(24, "info", "t", last_training_time="2024-01-01T00:00:00Z"),
        DataVolumeTrigger(10, 0.5, "info", "v", baseline_count=7),
    ]
    comp = CompositeTrigger(triggers, logic="and", name="all", description="everything")
    for trig in [*triggers, comp]:
        data = json.loads(trig.to_config().to_json())
        rebuilt = build_trigger(data)
        assert type(rebuilt) is type(trig)
        assert rebuilt.to_config() == trig.to_config()
        assert TriggerConfig.from_json(json.dumps(data)) == trig.to_config()
    assert comp.logic == "AND"


def test_config_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['treshold'\] \(did you mean 'threshold'\?\)"
    ):
        build_trigger({"type": "drift", "treshold": 0.2})
    with pytest.raises(ConfigError, match=r"type 'drfit'.*did you mean 'drift'"):
        build_trigger({"type": "drfit"})
    with pytest.raises(ConfigError, match="severity must be one of info, warning, critical"):
        DriftTriggerConfig(severity="high")
    with pytest.raises(ConfigError, match="consecutive must be an integer >= 1"):
        DriftTriggerConfig(consecutive=0)
    with pytest.raises(ConfigError, match="threshold must be a finite number >= 0"):
        PerformanceTriggerConfig(threshold=-0.1)
    with pytest.raises(ConfigError, match="trigger name must be"):
        DriftTriggerConfig(name="has space")
    with pytest.raises(ConfigError, match="logic must be 'AND' or 'OR'"):
        build_trigger({"type": "composite", "logic": "XOR", "triggers": [{"type": "time"}]})
    with pytest.raises(ConfigError, match="at least one child"):
        build_trigger({"type": "composite", "triggers": []})
    assert isinstance(ConfigError("x"), ModelTiersError)


def test_presets_carry_the_guides_numbers() -> None:
    expected = {
        "conservative": (get_conservative_config, 0.20, "critical", 0.10, "critical", 336, 0.30),
        "balanced": (get_balanced_config, 0.15, "warning", 0.05, "warning", 168, 0.20),
        "aggressive": (get_aggressive_config, 0.10, "warning", 0.03, "warning", 48, 0.10),
    }
    for label, (fn, drift, dsev, perf, psev, hours, volume) in expected.items():
        cfg = fn()
        assert set(cfg) == {"drift", "performance", "time", "data_volume"}
        assert (cfg["drift"].threshold, cfg["drift"].severity) == (drift, dsev)
        assert (cfg["performance"].threshold, cfg["performance"].severity) == (perf, psev)
        assert (cfg["time"].interval_hours, cfg["time"].severity) == (hours, "info")
        assert (cfg["data_volume"].threshold_percentage, cfg["data_volume"].severity) == (
            volume,
            "info",
        )
        assert cfg["drift"].name == f"drift_{label}"
        assert cfg["performance"].metric_name == "val/loss"
        assert all(isinstance(build_trigger(c), type(build_trigger(c))) for c in cfg.values())


def test_load_policy_forms(tmp_path: Path) -> None:
    assert load_policy("balanced").triggers[0].name == "drift_balanced"
    policy = load_policy(
        {
            "preset": "aggressive",
            "overrides": {"drift": {"consecutive": 2}, "time": {"enabled": False}},
            "triggers": [
                {"type": "drift", "name": "share", "metric_name": "drifted_share", "threshold": 0.5}
            ],
            "gate": "warning",
        }
    )
    assert policy.gate == "warning"
    by_name = {t.name: t for t in policy.triggers}
    assert by_name["drift_aggressive"].consecutive == 2
    assert by_name["time_aggressive"].enabled is False
    assert by_name["share"].metric_name == "drift/drifted_share"
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy.to_dict()))
    assert load_policy(path) == policy
    assert load_policy(ROOT / "configs" / "example_triggers.json").gate == "critical"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"presett": "balanced"}, "did you mean 'preset'"),
        ({"preset": "balancd"}, "did you mean 'balanced'"),
        ({"preset": "balanced", "overrides": {"drfit": {}}}, "unknown preset trigger"),
        ({"overrides": {"drift": {}}}, "need a preset"),
        ({}, "no triggers"),
        ({"preset": "balanced", "gate": "severe"}, "gate must be one of"),
        ({"triggers": [{"type": "time", "name": "a"}, {"type": "time", "name": "a"}]}, "unique"),
        ({"preset": "balanced", "overrides": {"drift": {"threshold": "high"}}}, "finite number"),
    ],
)
def test_bad_policies(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_policy(data)


def test_bad_policy_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"preset": "balanced",}')
    with pytest.raises(ConfigError, match=r"bad.json:1:\d+: invalid JSON"):
        load_policy(path)
    path.write_text('{"preset": "nope"}')
    with pytest.raises(ConfigError, match=r"bad.json: unknown preset 'nope'"):
        load_policy(path)


def test_policy_rejects_bad_gate_directly() -> None:
    with pytest.raises(ConfigError, match="gate must be one of info, warning, critical"):
        RetrainingPolicy((DriftTriggerConfig(),), gate="none")


# -- the report ------------------------------------------------------------------------------


def _details(**values: float) -> list[Any]:
    out = []
    for sev, value in values.items():
        trig = DriftTrigger(threshold=0.1, metric_name=sev, name=sev, severity=sev)
        out.append(trig.evaluate(drift_metrics={sev: value}))
    return out


def test_report_severity_is_the_highest_fired_and_the_gate_compares_it() -> None:
    none = RetrainingReport.from_details(_details(info=0.0, critical=0.0), now=NOW)
    assert none.severity == "none" and not none.triggered and not none.gate_failed
    assert none.recommendations[0].startswith("No retraining needed")
    warn = RetrainingReport.from_details(_details(info=0.5, warning=0.5, critical=0.0), now=NOW)
    assert warn.severity == "warning" and warn.triggered
    assert not warn.gate_failed and warn.fails_gate("warning") and warn.fails_gate("info")
    crit = RetrainingReport.from_details(_details(critical=0.5), now=NOW)
    assert crit.gate_failed and crit.timestamp == "2024-05-01T12:00:00.000000Z"


def test_child_of_an_unmet_and_does_not_raise_the_severity() -> None:
    crit = DriftTrigger(threshold=0.1, metric_name="a", name="a", severity="critical")
    comp = CompositeTrigger([crit, _drift("b")], logic="AND", severity="info", name="c")
    report = RetrainingReport.from_details([comp.evaluate(drift_metrics={"a": 0.5, "b": 0.0})])
    assert report.trigger_details[0].children[0].triggered
    assert report.severity == "none" and not report.gate_failed


def test_report_json_round_trip_and_markdown(tmp_path: Path) -> None:
    details = [
        *_details(warning=0.5),
        PerformanceTrigger().evaluate(
            current_metrics={"val/loss": math.nan}, baseline_metrics={"val/loss": 1.0}
        ),
        TimeTrigger().evaluate(now=NOW),
    ]
    report = RetrainingReport.from_details(details, now=NOW, metadata={"model": "m"})
    path = tmp_path / "out" / "retraining.json"
    text = report.to_json(path)
    assert path.read_text() == text
    data = json.loads(text)  # strict JSON: the diverged loss's inf is a string
    assert data["trigger_details"][1]["actual_value"] == "inf"
    assert data["not_evaluated"] == ["time_trigger"]
    assert RetrainingReport.from_dict(data).to_dict() == data == report.to_dict()
    md_path = tmp_path / "retraining.md"
    md = report.to_markdown(md_path)
    assert md_path.read_text() == md
    assert "**Retraining recommended** - severity **warning**" in md
    assert "> - `time_trigger`: no last_training_time" in md
    assert "| `performance_trigger` | performance | warning | FIRED | inf | 0.05 |" in md
    assert "## Recommendations" in md
    assert "retraining: severity warning (gate critical); 2/3 trigger(s) fired" in report.summary()
    with pytest.raises(ConfigError, match="schema_version 99 is not 1"):
        RetrainingReport.from_dict({**data, "schema_version": 99})
    with pytest.raises(ConfigError, match="damaged: KeyError 'timestamp'"):
        RetrainingReport.from_dict({k: v for k, v in data.items() if k != "timestamp"})
