"""Retraining triggers: the manager, and one call that turns tier 5's results into a decision.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pytest_modeltiers.errors import ConfigError, ModelTiersWarning
from pytest_modeltiers.triggers.base import (
    SEVERITIES,
    TRIGGER_SEVERITIES,
    Trigger,
    TriggerDetail,
    TriggerInputError,
    check_name,
    severity_at_least,
    severity_rank,
)
from pytest_modeltiers.triggers.config import (
    CompositeTriggerConfig,
    DataVolumeTriggerConfig,
    DriftTriggerConfig,
    PerformanceTriggerConfig,
    RetrainingPolicy,
    TimeTriggerConfig,
    TriggerConfig,
    get_aggressive_config,
    get_balanced_config,
    get_conservative_config,
    load_policy,
)
from pytest_modeltiers.triggers.inputs import build_inputs, drift_metrics_from_report
from pytest_modeltiers.triggers.report import RetrainingReport
from pytest_modeltiers.triggers.rules import (
    CompositeTrigger,
    DataVolumeTrigger,
    DriftTrigger,
    PerformanceTrigger,
    TimeTrigger,
    build_trigger,
)

__all__ = [
    "SEVERITIES",
    "TRIGGER_SEVERITIES",
    "CompositeTrigger",
    "CompositeTriggerConfig",
    "DataVolumeTrigger",
    "DataVolumeTriggerConfig",
    "DriftTrigger",
    "DriftTriggerConfig",
    "PerformanceTrigger",
    "PerformanceTriggerConfig",
    "RetrainingPolicy",
    "RetrainingReport",
    "RetrainingTriggerManager",
    "TimeTrigger",
    "TimeTriggerConfig",
    "Trigger",
    "TriggerConfig",
    "TriggerDetail",
    "TriggerInputError",
    "build_trigger",
    "drift_metrics_from_report",
    "evaluate_retraining",
    "gate_failed",
    "get_aggressive_config",
    "get_balanced_config",
    "get_conservative_config",
    "load_policy",
    "severity_at_least",
]

#: Prefix of the experiment-database runs that record trigger evaluations; an evaluation that
#: fired is named with ``EVENT_RUN_PREFIX`` instead, so ``run_name.str.contains(
#: "trigger_event")`` lists the trigger events, as the usage guide does.
CHECK_RUN_PREFIX = "retraining_check:"
EVENT_RUN_PREFIX = "trigger_event:"
#: Registry model metadata keys read by ``check_retraining_needed``.
TRAINED_AT_KEY = "trained_at"
TRAINING_SAMPLES_KEY = "training_samples"


class RetrainingTriggerManager:
    """Registers triggers, evaluates them window by window, and records the decisions.

    ``metrics_engine`` (a :class:`~pytest_modeltiers.evaluation.metrics_engine.MetricsEngine`)
    provides the latest drift report, ``model_registry`` the baseline model, ``experiment_db``
    current metrics and the event log; all are optional. ``scope`` names the stream of windows
    whose streaks persist (one per monitored model, say); ``gate`` is the reports' gate.
    """

    def __init__(
        self,
        metrics_engine: Any = None,
        model_registry: Any = None,
        experiment_db: Any = None,
        *,
        gate: str = "critical",
        scope: str = "default",
    ) -> None:
        if gate not in TRIGGER_SEVERITIES:
            raise ConfigError(f"gate must be one of {', '.join(TRIGGER_SEVERITIES)}, got {gate!r}")
        self.metrics_engine = metrics_engine
        self.model_registry = model_registry
        self.experiment_db = experiment_db
        self.gate = gate
        self.scope = check_name(scope, "scope")
        self.triggers: dict[str, Trigger] = {}
        self.trigger_history: list[RetrainingReport] = []
        self._restored = False

    @classmethod
    def from_config(cls, policy: Any, **kwargs: Any) -> RetrainingTriggerManager:
        """A manager with a policy's triggers and gate (see ``load_policy`` for the forms)."""
        loaded = load_policy(policy)
        manager = cls(gate=kwargs.pop("gate", loaded.gate), **kwargs)
        for cfg in loaded.triggers:
            manager.register_trigger(cfg.name, build_trigger(cfg))
        return manager

    # -- registration ------------------------------------------------------------------------

    def register_trigger(self, name: str, trigger: Trigger) -> Trigger:
        """Register ``trigger`` under ``name`` (it takes that name); a second registration of a
        name replaces the first, with a ``ModelTiersWarning``."""
        check_name(name)
        if not isinstance(trigger, Trigger):
            raise ConfigError(f"register_trigger needs a trigger object, got {type(trigger)}")
        if trigger.name != name:
            trigger.config = dataclasses.replace(trigger.config, name=name)
        if name in self.triggers:
            warnings.warn(
                f"retraining trigger {name!r} was already registered; the new one replaces it",
                ModelTiersWarning,
                stacklevel=2,
            )
        self.triggers[name] = trigger
        return trigger

    def register_drift_trigger(
        self,
        threshold: float = 0.15,
        metric_name: str = "drift/js_distance",
        severity: str = "warning",
        name: str = "drift_trigger",
        **kwargs: Any,
    ) -> DriftTrigger:
        trigger = DriftTrigger(threshold, metric_name, severity, name, **kwargs)
        self.register_trigger(name, trigger)
        return trigger

    def register_performance_trigger(
        self,
        threshold: float = 0.05,
        metric_name: str = "val/loss",
        mode: str | None = None,
        severity: str = "warning",
        name: str = "performance_trigger",
        **kwargs: Any,
    ) -> PerformanceTrigger:
        trigger = PerformanceTrigger(threshold, metric_name, mode, severity, name, **kwargs)
        self.register_trigger(name, trigger)
        return trigger

    def register_time_trigger(
        self,
        interval_hours: float = 168.0,
        severity: str = "info",
        name: str = "time_trigger",
        **kwargs: Any,
    ) -> TimeTrigger:
        trigger = TimeTrigger(interval_hours, severity, name, **kwargs)
        self.register_trigger(name, trigger)
        return trigger

    def register_data_volume_trigger(
        self,
        threshold_samples: int | None = None,
        threshold_percentage: float | None = 0.2,
        severity: str = "info",
        name: str = "data_volume_trigger",
        **kwargs: Any,
    ) -> DataVolumeTrigger:
        trigger = DataVolumeTrigger(
            threshold_samples, threshold_percentage, severity, name, **kwargs
        )
        self.register_trigger(name, trigger)
        return trigger

    def register_composite_trigger(
        self,
        triggers: list[Trigger],
        logic: str = "OR",
        severity: str = "warning",
        name: str = "composite_trigger",
        **kwargs: Any,
    ) -> CompositeTrigger:
        trigger = CompositeTrigger(triggers, logic, severity, name, **kwargs)
        self.register_trigger(name, trigger)
        return trigger

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(
        self,
        drift_metrics: Any = None,
        current_metrics: Mapping[str, Any] | None = None,
        baseline_metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        now: datetime | str | None = None,
        split: str | None = None,
    ) -> RetrainingReport:
        """Evaluate every registered trigger on one window and record the report.

        ``drift_metrics``: a ``DriftReport``, its dict, or ``{"js_distance": ...}``-style
        measures; ``current_metrics``: name -> value or history; ``baseline_metrics``: name ->
        value; ``metadata``: ``last_training_time``, ``current_count``, ``baseline_count``.
        ``split`` qualifies bare metric names (``"loss"`` with ``"eval"`` is ``eval/loss``).
        """
        if not self.triggers:
            raise ConfigError(
                "no retraining triggers are registered; register some (register_drift_trigger"
                "(), ...) or build the manager with RetrainingTriggerManager.from_config"
                "('balanced')"
            )
        inputs = build_inputs(
            drift=drift_metrics,
            current_metrics=current_metrics,
            baseline_metrics=baseline_metrics,
            metadata=metadata,
            now=now,
            split=split,
        )
        self._restore_streaks()
        details = [trigger.evaluate_inputs(inputs) for trigger in self.triggers.values()]
        report = RetrainingReport.from_details(
            details,
            gate=self.gate,
            now=inputs.now,
            metadata={
                "scope": self.scope,
                "inputs": {
                    "drift": {k: v for k, v in inputs.drift.items() if k.count("/") == 1},
                    "current_metrics": dict(inputs.current),
                    "baseline_metrics": dict(inputs.baseline),
                    "metadata": {k: _plain(v) for k, v in inputs.metadata.items()},
                },
            },
        )
        self.trigger_history.append(report)
        if self.experiment_db is not None:
            self._log_event(report)
        return report

    def check_retraining_needed(
        self,
        model_id: int | None = None,
        run_id: int | None = None,
        *,
        model_name: str | None = None,
        alias: str = "production",
        current_metrics: Mapping[str, Any] | None = None,
        baseline_metrics: Mapping[str, Any] | None = None,
        drift: Any = None,
        current_count: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        now: datetime | str | None = None,
        split: str | None = None,
    ) -> RetrainingReport:
        """Assemble the window from the attached stores, then :meth:`evaluate`.

        - baseline: ``baseline_metrics``, else the registry model ``model_id``, else the model
          holding ``alias`` (of ``model_name`` when given); its metrics are the baseline, its
          metadata ``trained_at`` (else its ``created_at``) the last training time and its
          metadata ``training_samples`` the data-volume baseline;
        - current metrics: ``current_metrics``, else run ``run_id``'s metrics in the experiment
          database as histories (the performance trigger averages the last
          ``lookback_epochs``);
        - drift: ``drift``, else the metrics engine's latest drift report.

        Explicit ``metadata`` keys win over the ones looked up.
        """
        meta: dict[str, Any] = {}
        baseline = baseline_metrics
        if baseline is None and self.model_registry is not None:
            model = self._baseline_model(model_id, model_name, alias)
            if model is not None:
                baseline = model.get("metrics") or {}
                info = model.get("metadata") or {}
                meta["last_training_time"] = info.get(TRAINED_AT_KEY) or model.get("created_at")
                if info.get(TRAINING_SAMPLES_KEY) is not None:
                    meta["baseline_count"] = info[TRAINING_SAMPLES_KEY]
        elif model_id is not None and self.model_registry is None:
            raise ConfigError("model_id was given but the manager has no model_registry")
        current = current_metrics
        if current is None and run_id is not None:
            if self.experiment_db is None:
                raise ConfigError("run_id was given but the manager has no experiment_db")
            current = _metric_histories(self.experiment_db, run_id)
        if drift is None and self.metrics_engine is not None:
            drift = getattr(self.metrics_engine, "latest_drift", None)
        if current_count is not None:
            meta["current_count"] = current_count
        meta.update(metadata or {})
        return self.evaluate(
            drift_metrics=drift,
            current_metrics=current,
            baseline_metrics=baseline,
            metadata=meta,
            now=now,
            split=split,
        )

    def get_trigger_history(self, limit: int | None = 10) -> list[RetrainingReport]:
        """The last ``limit`` reports of this manager, oldest first (``None``: all)."""
        if limit is None:
            return list(self.trigger_history)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
        return self.trigger_history[-limit:]

    def reset(self) -> None:
        """Forget every streak (call after retraining; the next windows count afresh)."""
        for trigger in self.triggers.values():
            trigger.reset()
        self._restored = True

    # -- stores ------------------------------------------------------------------------------

    def _baseline_model(
        self, model_id: int | None, model_name: str | None, alias: str
    ) -> dict[str, Any] | None:
        registry = self.model_registry
        if model_id is not None:
            model = registry.get_model(model_id=model_id)
            if model is None:
                raise ConfigError(
                    f"model {model_id} is not in the registry {registry}; list_models() shows "
                    "the registered ones"
                )
            return dict(model)
        found = registry.get_by_alias(alias, name=model_name)
        return None if found is None else dict(found)

    def _log_event(self, report: RetrainingReport) -> None:
        db = self.experiment_db
        state = {
            name: {"config": t.to_config().to_dict(), "state": t.state_dict()}
            for name, t in self.triggers.items()
        }
        metrics: dict[str, float] = {"trigger/severity_rank": float(severity_rank(report.severity))}
        for top in report.trigger_details:
            for path, d in top.walk():
                metrics[f"trigger/{path}/fired"] = 1.0 if d.triggered else 0.0
                metrics[f"trigger/{path}/streak"] = float(d.streak)
                if d.evaluated:
                    metrics[f"trigger/{path}/condition"] = 1.0 if d.streak > 0 else 0.0
                if d.actual_value is not None and math.isfinite(d.actual_value):
                    metrics[f"trigger/{path}/value"] = d.actual_value
        prefix = EVENT_RUN_PREFIX if report.triggered else CHECK_RUN_PREFIX
        run = db.log_run(
            f"{prefix}{self.scope}",
            {"scope": self.scope, "report": report.to_dict(), "triggers": state},
            notes=f"Retraining trigger check: severity {report.severity}",
        )
        db.log_metrics(run, metrics, None, epoch=0)
        db.update_run_status(run, "completed")

    def _restore_streaks(self) -> None:
        """Once per manager: load each unchanged trigger's streak from the newest check run."""
        if self._restored or self.experiment_db is None:
            self._restored = True
            return
        self._restored = True
        stored = _latest_check(self.experiment_db, self.scope)
        if not stored:
            return
        for name, trigger in self.triggers.items():
            saved = stored.get(name)
            if not isinstance(saved, Mapping):
                continue
            if saved.get("config") == trigger.to_config().to_dict():
                trigger.load_state_dict(saved.get("state") or {})


def _latest_check(db: Any, scope: str) -> dict[str, Any]:
    """The trigger states of the newest completed check run of ``scope`` (empty if none)."""
    # ExperimentDB has no query by run name; the runs table is this package's own schema.
    with db.read() as conn:
        row = conn.execute(
            "SELECT config FROM runs WHERE run_name IN (?, ?) AND status = 'completed' "
            "ORDER BY run_id DESC LIMIT 1",
            (f"{CHECK_RUN_PREFIX}{scope}", f"{EVENT_RUN_PREFIX}{scope}"),
        ).fetchone()
    if row is None:
        return {}
    config = json.loads(row[0])
    triggers = config.get("triggers") if isinstance(config, Mapping) else None
    return dict(triggers) if isinstance(triggers, Mapping) else {}


def trigger_history(db: Any, scope: str, *, limit: int = 50) -> dict[str, list[dict[str, Any]]]:
    """Each top-level trigger's measured value in the newest ``limit`` completed checks of
    ``scope`` (those that fired included), oldest first, for plots:
    ``{name: [{"run_id": 7, "value": 0.12}, ...]}``."""
    names = (f"{CHECK_RUN_PREFIX}{scope}", f"{EVENT_RUN_PREFIX}{scope}")
    with db.read() as conn:
        rows = conn.execute(
            "SELECT m.run_id, m.metric_name, m.value FROM metrics m WHERE m.run_id IN "
            "(SELECT run_id FROM runs WHERE run_name IN (?, ?) AND status = 'completed' "
            "ORDER BY run_id DESC LIMIT ?) AND m.metric_name LIKE 'trigger/%/value' "
            "ORDER BY m.run_id, m.metric_id",
            (*names, limit),
        ).fetchall()
    history: dict[str, list[dict[str, Any]]] = {}
    for run_id, metric, value in rows:
        parts = str(metric).split("/")
        if len(parts) == 3 and value is not None:
            history.setdefault(parts[1], []).append({"run_id": int(run_id), "value": float(value)})
    return history


def _metric_histories(db: Any, run_id: int) -> dict[str, tuple[float, ...]]:
    """A run's metrics as name -> values in logging order."""
    frame = db.get_metrics(run_id)
    out: dict[str, list[float]] = {}
    for name, value in zip(frame["metric_name"], frame["value"], strict=True):
        out.setdefault(str(name), []).append(float(value))
    return {k: tuple(v) for k, v in out.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# -- the call behind test_retraining_triggers ------------------------------------------------


def evaluate_retraining(
    policy: Any = "balanced",
    *,
    current_metrics: Mapping[str, Any] | None = None,
    baseline_metrics: Mapping[str, Any] | None = None,
    drift: Any = None,
    current_count: int | None = None,
    baseline_count: int | None = None,
    last_training_time: datetime | str | None = None,
    now: datetime | str | None = None,
    split: str | None = None,
    experiment_db: Any = None,
    model_registry: Any = None,
    model_id: int | None = None,
    model_name: str | None = None,
    alias: str = "production",
    scope: str = "default",
    gate: str | None = None,
) -> RetrainingReport:
    """Evaluate a retraining policy on one window of tier 5 results.

    ``policy``: a preset name, a dict or JSON file (``load_policy``), or a
    ``RetrainingPolicy``. ``current_metrics`` are the evaluation metrics (bare names are
    qualified by ``split``, e.g. ``"eval"``); ``drift`` a ``DriftReport`` or its dict;
    ``current_count``/``baseline_count`` the data volumes; ``last_training_time`` aware UTC.
    A missing baseline is looked up in ``model_registry`` (``model_id``, else ``alias`` of
    ``model_name``). With ``experiment_db`` the decision is logged and streaks persist per
    ``scope``. ``gate`` overrides the policy's gate.
    """
    kwargs: dict[str, Any] = {
        "model_registry": model_registry,
        "experiment_db": experiment_db,
        "scope": scope,
    }
    if gate is not None:
        kwargs["gate"] = gate
    manager = RetrainingTriggerManager.from_config(policy, **kwargs)
    metadata: dict[str, Any] = {}
    if baseline_count is not None:
        metadata["baseline_count"] = baseline_count
    if last_training_time is not None:
        metadata["last_training_time"] = last_training_time
    return manager.check_retraining_needed(
        model_id=model_id,
        model_name=model_name,
        alias=alias,
        current_metrics=current_metrics,
        baseline_metrics=baseline_metrics,
        drift=drift,
        current_count=current_count,
        metadata=metadata,
        now=now,
        split=split,
    )


def gate_failed(report: RetrainingReport, gate: str | None = None) -> bool:
    """True when the report's severity is ``gate`` (default: the report's own gate) or higher."""
    return report.fails_gate(gate)
