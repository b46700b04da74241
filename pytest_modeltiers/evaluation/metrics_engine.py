"""``MetricsEngine``: the one place an epoch's metrics go: the experiment DB, drift, alerts, W&B.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.config._util import did_you_mean, is_int, is_number
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.jsonio import jsonable
from pytest_modeltiers.store.experiment_db import RunNotFoundError, qualify_metric_name
from pytest_modeltiers.store.metric_names import canonical_metric_name
from pytest_modeltiers.store.sqlite_base import dumps_json, utc_now
from pytest_modeltiers.triggers.base import TRIGGER_SEVERITIES
from pytest_modeltiers.triggers.config import infer_mode
from pytest_modeltiers.triggers.inputs import drift_metrics_from_report

if TYPE_CHECKING:
    import pandas as pd

    from pytest_modeltiers.drift.verdicts import DriftReport
    from pytest_modeltiers.store.experiment_db import ExperimentDB

__all__ = [
    "Alert",
    "AlertRules",
    "EpochAlerts",
    "MetricsEngine",
    "RegressionRule",
    "ThresholdRule",
]


def _severity(value: Any, what: str) -> str:
    if value not in TRIGGER_SEVERITIES:
        raise ConfigError(
            f"{what} must be one of {', '.join(TRIGGER_SEVERITIES)}, got {value!r}"
            f"{did_you_mean(str(value), TRIGGER_SEVERITIES)}"
        )
    return str(value)


@dataclass(frozen=True)
class Alert:
    """Something in an epoch needs a human: which rule, how bad, the numbers, one sentence."""

    rule: str
    severity: str
    epoch: int
    message: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    timestamp: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "rule": self.rule,
                "severity": self.severity,
                "epoch": self.epoch,
                "message": self.message,
                "metric": self.metric,
                "value": self.value,
                "threshold": self.threshold,
                "timestamp": self.timestamp,
            }
        )


@dataclass(frozen=True)
class RegressionRule:
    """Alert when ``metric`` is worse than its best earlier value by more than ``relative``
    (a share of the best's magnitude) or ``absolute``; at least one is required. ``mode`` None
    infers the direction from the name (loss lower is better, accuracy higher)."""

    metric: str
    relative: float | None = None
    absolute: float | None = None
    mode: str | None = None
    severity: str = "warning"

    def __post_init__(self) -> None:
        name = canonical_metric_name(self.metric, what="alert rule metric")
        object.__setattr__(self, "metric", name)
        if self.relative is None and self.absolute is None:
            raise ConfigError(f"regression rule on {name!r}: set relative, absolute or both")
        for key in ("relative", "absolute"):
            value = getattr(self, key)
            if value is not None and (not is_number(value) or value < 0):
                raise ConfigError(
                    f"regression rule on {name!r}: {key} must be a number >= 0, got {value!r}"
                )
        if self.mode not in (None, "min", "max"):
            raise ConfigError(f"regression rule on {name!r}: mode must be 'min', 'max' or None")
        if self.mode is None and infer_mode(name) is None:
            raise ConfigError(
                f"regression rule on {name!r}: cannot tell whether higher or lower is better; "
                "set mode='min' or mode='max'"
            )
        _severity(self.severity, f"regression rule on {name!r}: severity")

    @property
    def resolved_mode(self) -> str:
        return self.mode or infer_mode(self.metric) or "min"


@dataclass(frozen=True)
class ThresholdRule:
    """Alert when ``metric`` is above ``max_value`` or below ``min_value`` (strictly), e.g.
    ``ThresholdRule("train/grad_norm", max_value=10.0)`` for exploding gradients."""

    metric: str
    max_value: float | None = None
    min_value: float | None = None
    severity: str = "warning"

    def __post_init__(self) -> None:
        name = canonical_metric_name(self.metric, what="alert rule metric")
        object.__setattr__(self, "metric", name)
        if self.max_value is None and self.min_value is None:
            raise ConfigError(f"threshold rule on {name!r}: set max_value, min_value or both")
        for key in ("max_value", "min_value"):
            value = getattr(self, key)
            if value is not None and not is_number(value):
                raise ConfigError(f"threshold rule on {name!r}: {key} must be a finite number")
        _severity(self.severity, f"threshold rule on {name!r}: severity")


_DEFAULT_REGRESSIONS = (
    RegressionRule("val/loss", relative=0.2),
    RegressionRule("val/accuracy", absolute=0.05),
)


@dataclass(frozen=True)
class AlertRules:
    """The engine's alert rules; ``AlertRules.from_dict`` reads the JSON form
    ``{"regressions": [{"metric": ..., "relative": ...}], "thresholds": [...],
    "non_finite_severity": "critical", "drift_severity": "warning"}``."""

    regressions: tuple[RegressionRule, ...] = _DEFAULT_REGRESSIONS
    thresholds: tuple[ThresholdRule, ...] = ()
    non_finite_severity: str = "critical"
    drift_severity: str = "warning"

    def __post_init__(self) -> None:
        object.__setattr__(self, "regressions", tuple(self.regressions))
        object.__setattr__(self, "thresholds", tuple(self.thresholds))
        _severity(self.non_finite_severity, "non_finite_severity")
        _severity(self.drift_severity, "drift_severity")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRules:
        keys = ("regressions", "thresholds", "non_finite_severity", "drift_severity")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ConfigError(
                f"unknown alert rule key(s) {unknown}"
                f"{''.join(did_you_mean(k, keys) for k in unknown)}; accepted: {', '.join(keys)}"
            )
        try:
            regressions = tuple(RegressionRule(**r) for r in data.get("regressions", ()))
            thresholds = tuple(ThresholdRule(**r) for r in data.get("thresholds", ()))
        except TypeError as exc:
            raise ConfigError(f"bad alert rule: {exc}") from None
        return cls(
            regressions=regressions if "regressions" in data else _DEFAULT_REGRESSIONS,
            thresholds=thresholds,
            non_finite_severity=data.get("non_finite_severity", "critical"),
            drift_severity=data.get("drift_severity", "warning"),
        )


def _checked_loggers(loggers: Sequence[Any]) -> tuple[Any, ...]:
    """Experiment-tracker loggers (Lightning's, or anything with their ``log_metrics(metrics,
    step)`` and ``save()``), refused at construction rather than at the first epoch."""
    for logger in loggers:
        for method in ("log_metrics", "save"):
            if not callable(getattr(logger, method, None)):
                raise ConfigError(
                    f"loggers: {type(logger).__name__} has no {method}() method; pass "
                    "Lightning loggers (training.loggers.build_loggers builds them from a "
                    "TrainingConfig)"
                )
    return tuple(loggers)


class EpochAlerts(list[Alert]):
    """What ``log_epoch`` returns: the epoch's alerts (a list), with its drift report and the
    report's ``drift/...`` measures (empty without a current profile)."""

    def __init__(
        self, alerts: Sequence[Alert], drift: DriftReport | None, drift_metrics: Mapping[str, float]
    ) -> None:
        super().__init__(alerts)
        self.drift = drift
        self.drift_metrics = dict(drift_metrics)

    @property
    def js_divergence(self) -> float | None:
        """The usage guide's name of ``drift_metrics["drift/js_distance"]`` (None: no drift)."""
        warnings.warn(
            "js_divergence is the old name of drift_metrics['drift/js_distance'] (the largest "
            "Jensen-Shannon distance); read that instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.drift_metrics.get("drift/js_distance")


def _epoch_metrics(
    metrics: Any, splits: Mapping[str, Mapping[str, Any] | None], scalars: Mapping[str, Any]
) -> Any:
    """``metrics`` merged with the usage guide's per-split dicts and scalars (a name given
    twice is an error); ``metrics`` as it is when the guide's form is not used."""
    if all(v is None for v in splits.values()) and all(v is None for v in scalars.values()):
        return {} if metrics is None else metrics
    if metrics is not None and not isinstance(metrics, Mapping):
        return metrics  # refused by _values with the usual message
    out: dict[str, Any] = dict(metrics or {})

    def add(key: str, value: Any) -> None:
        if key in out:
            raise ConfigError(f"metric {key!r} is given twice in one log_epoch call")
        out[key] = value

    for split, group in splits.items():
        if group is None:
            continue
        if not isinstance(group, Mapping):
            raise ConfigError(
                f"{split}_metrics must be a dict of name -> number, got {type(group).__name__}"
            )
        for name, value in group.items():
            add(canonical_metric_name(name, split, what=f"{split}_metrics name"), value)
    for name, value in scalars.items():
        if value is not None:
            add(name, value)
    return out


def _drift_thresholds(warning: Any, critical: Any) -> tuple[tuple[str, float], ...]:
    """(severity, threshold) on ``drift/js_distance``, worst first; checked here, once."""
    out = []
    for severity, value in (("critical", critical), ("warning", warning)):
        if value is None:
            continue
        if not is_number(value) or not 0 <= value <= 1:
            raise ConfigError(
                f"drift_threshold_{severity} must be a number from 0 to 1 (a Jensen-Shannon "
                f"distance), got {value!r}"
            )
        out.append((severity, float(value)))
    if len(out) == 2 and out[0][1] < out[1][1]:
        raise ConfigError(
            f"drift_threshold_critical ({critical}) is below drift_threshold_warning ({warning})"
        )
    return tuple(out)


def _drift_threshold_alert(
    epoch: int, report: DriftReport, thresholds: Sequence[tuple[str, float]]
) -> Alert | None:
    """An alert when the largest Jensen-Shannon distance exceeds a threshold (worst first)."""
    value = drift_metrics_from_report(report).get("drift/js_distance")
    if value is None or math.isnan(value):
        return None
    for severity, threshold in thresholds:
        if value > threshold:
            return Alert(
                "drift_threshold",
                severity,
                epoch,
                f"drift/js_distance = {value:.4g} at epoch {epoch} exceeds the {severity} "
                f"threshold {threshold:g}",
                "drift/js_distance",
                value,
                threshold,
            )
    return None


class MetricsEngine:
    """Logs an epoch's metrics to the experiment DB, checks drift, raises alerts.

    ``db`` and ``run_id`` go together (an ``ExperimentDB`` and one of its runs); without them
    the engine keeps its history in memory only. ``reference_profile`` is a profile
    (``compute_profile``) or its dict, compared with each epoch's ``current_profile``;
    ``drift_options`` are passed to ``compare_profiles`` (``alpha``, ``correction``, ...).
    ``wandb=True`` logs to Weights & Biases (a run is started with ``wandb_init`` keyword
    arguments when none is active, and finished by :meth:`close`). ``on_alert`` callables
    receive each alert as it is raised. ``loggers`` (Lightning loggers: CSV, W&B, MLflow,
    TensorBoard) receive each epoch's row, alerts and drift included, at ``step=epoch``.
    ``drift_threshold_warning``/``drift_threshold_critical`` add a ``drift_threshold`` alert
    when ``drift/js_distance`` exceeds them; ``use_wandb`` is the usage guide's name of
    ``wandb``. One engine may be shared by threads.
    """

    def __init__(
        self,
        db: ExperimentDB | None = None,
        run_id: int | None = None,
        *,
        reference_profile: Any = None,
        alert_rules: AlertRules | Mapping[str, Any] | None = None,
        wandb: bool = False,
        wandb_init: Mapping[str, Any] | None = None,
        drift_options: Mapping[str, Any] | None = None,
        on_alert: Sequence[Callable[[Alert], None]] = (),
        loggers: Sequence[Any] = (),
        use_wandb: bool | None = None,
        drift_threshold_warning: float | None = None,
        drift_threshold_critical: float | None = None,
    ) -> None:
        if (db is None) != (run_id is None):
            raise ConfigError(
                "MetricsEngine takes db and run_id together: run_id = db.log_run('name') "
                "creates the run to log into"
            )
        if db is not None and run_id is not None:
            db.get_run(run_id)  # RunNotFoundError naming the id, before any epoch
        self.db = db
        self.run_id = run_id
        self.reference_profile = reference_profile
        if alert_rules is None:
            alert_rules = AlertRules()
        elif isinstance(alert_rules, Mapping):
            alert_rules = AlertRules.from_dict(alert_rules)
        elif not isinstance(alert_rules, AlertRules):
            raise ConfigError(f"alert_rules must be AlertRules or a dict, got {type(alert_rules)}")
        self.alert_rules: AlertRules = alert_rules
        self.drift_options = dict(drift_options or {})
        self.on_alert = tuple(on_alert)
        self.loggers = _checked_loggers(loggers)
        self.history: list[dict[str, float]] = []
        self.alerts: list[Alert] = []
        self.drift_history: list[tuple[int, DriftReport]] = []
        self._lowest: dict[str, float] = {}  # best so far of lower-is-better metrics
        self._highest: dict[str, float] = {}
        self._last_epoch: int | None = None
        self._lock = threading.RLock()
        self._wandb: Any = None
        self._owns_wandb_run = False
        if use_wandb is not None:  # the usage guide's name for the same switch
            if wandb and not use_wandb:
                raise ConfigError("wandb=True and use_wandb=False contradict; pass one of them")
            wandb = use_wandb
        if not isinstance(wandb, bool):
            raise ConfigError(f"wandb must be True or False, got {wandb!r}")
        self.drift_thresholds = _drift_thresholds(drift_threshold_warning, drift_threshold_critical)
        if wandb:
            self._start_wandb(dict(wandb_init or {}))

    # -- W&B -------------------------------------------------------------------------------

    def _start_wandb(self, init_kwargs: dict[str, Any]) -> None:
        try:
            import wandb as wandb_module
        except ImportError:
            raise ModelTiersError(
                "wandb=True but the wandb package is not installed; pip install wandb (and run "
                "'wandb login'), or pass wandb=False to log to the experiment database only"
            ) from None
        if getattr(wandb_module, "run", None) is None:
            wandb_module.init(**init_kwargs)
            self._owns_wandb_run = True
        self._wandb = wandb_module

    def close(self) -> None:
        """Finish the W&B run this engine started (a no-op otherwise)."""
        with self._lock:
            if self._wandb is not None and self._owns_wandb_run:
                self._wandb.finish()
            self._owns_wandb_run = False

    def __enter__(self) -> MetricsEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the epoch -------------------------------------------------------------------------

    def log_epoch(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        current_profile: Any = None,
        train_metrics: Mapping[str, Any] | None = None,
        val_metrics: Mapping[str, Any] | None = None,
        learning_rate: float | None = None,
        gradient_norm: float | None = None,
        epoch_duration: float | None = None,
        reference_profile: Any = None,
    ) -> EpochAlerts:
        """Record one epoch and return the alerts it raised (with the epoch's drift).

        ``epoch`` must increase from call to call; ``metrics`` maps names (one naming scheme)
        to numbers, NaN and infinities included (they raise alerts, and are stored).
        The usage guide's form is accepted too: ``train_metrics``/``val_metrics`` hold bare
        names (``{"loss": 0.4}`` is ``train/loss``), ``learning_rate``, ``gradient_norm``
        (``train/grad_norm``) and ``epoch_duration`` are scalars, and ``reference_profile``
        replaces the engine's reference for this epoch's drift check.
        """
        metrics = _epoch_metrics(
            metrics,
            {"train": train_metrics, "val": val_metrics},
            {
                "learning_rate": learning_rate,
                "train/grad_norm": gradient_norm,
                "epoch_duration": epoch_duration,
            },
        )
        with self._lock:
            if not is_int(epoch) or epoch < 0:
                raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
            if self._last_epoch is not None and epoch <= self._last_epoch:
                raise ConfigError(
                    f"epoch {epoch} is not after the last logged epoch {self._last_epoch}; "
                    "log each epoch once, in order (a resumed run needs a new run_id)"
                )
            values = self._values(metrics)
            report = self._drift(current_profile, reference_profile)
            measures = {} if report is None else drift_metrics_from_report(report)
            alerts = self._alerts(epoch, values, report)
            rows = {**values, **measures, "alerts/count": float(len(alerts))}
            if self.db is not None:
                self._write(epoch, rows, alerts, report)
            if self._wandb is not None:
                self._wandb.log(jsonable(rows), step=epoch)
            for logger in self.loggers:
                logger.log_metrics(dict(rows), step=epoch)
                logger.save()
            self._last_epoch = epoch
            for name, value in values.items():
                if math.isfinite(value):
                    self._lowest[name] = min(value, self._lowest.get(name, math.inf))
                    self._highest[name] = max(value, self._highest.get(name, -math.inf))
            self.history.append({"epoch": float(epoch), **rows})
            if report is not None:
                self.drift_history.append((epoch, report))
            self.alerts.extend(alerts)
        for alert in alerts:
            for callback in self.on_alert:
                callback(alert)
        return EpochAlerts(alerts, report, measures)

    def _values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"metrics must be a dict of name -> number, got {type(metrics)}")
        out: dict[str, float] = {}
        for name, raw in metrics.items():
            key = canonical_metric_name(name, what="metric")
            if key.startswith(("drift/", "alerts/")):
                raise ConfigError(
                    f"metric {key!r} is in a split the engine writes itself (drift/, alerts/); "
                    "rename it"
                )
            if isinstance(raw, bool):
                raise ConfigError(f"metric {key!r} is a bool ({raw!r}); log a number")
            try:
                out[key] = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"metric {key!r} must be a number, got {type(raw).__name__} {raw!r}"
                ) from None
        return out

    def _drift(self, current_profile: Any, reference_profile: Any = None) -> DriftReport | None:
        if current_profile is None:
            return None
        reference = self.reference_profile if reference_profile is None else reference_profile
        if reference is None:
            raise ConfigError(
                "log_epoch got a current_profile but the engine has no reference_profile; "
                "pass MetricsEngine(..., reference_profile=compute_profile(...))"
            )
        # scipy only when a reference profile is given: training may run without the extra
        from pytest_modeltiers.drift.distribution import compare_profiles

        return compare_profiles(reference, current_profile, **self.drift_options)

    def _alerts(
        self, epoch: int, values: Mapping[str, float], report: DriftReport | None
    ) -> list[Alert]:
        rules = self.alert_rules
        alerts: list[Alert] = []
        for name, value in values.items():
            if not math.isfinite(value):
                alerts.append(
                    Alert(
                        "non_finite",
                        rules.non_finite_severity,
                        epoch,
                        f"{name} is {value} at epoch {epoch}: training diverged or the metric "
                        "is broken",
                        name,
                        value,
                    )
                )
        for rule in rules.regressions:
            current = values.get(rule.metric)
            lower = rule.resolved_mode == "min"
            best = (self._lowest if lower else self._highest).get(rule.metric)
            if current is None or best is None or not math.isfinite(current):
                continue
            value = current
            worse = value - best if lower else best - value
            limits = []
            if rule.relative is not None:
                limits.append(rule.relative * abs(best))
            if rule.absolute is not None:
                limits.append(rule.absolute)
            limit = min(limits)
            if worse > limit:
                alerts.append(
                    Alert(
                        "regression",
                        rule.severity,
                        epoch,
                        f"{rule.metric} = {value:.4g} at epoch {epoch} is worse than its best "
                        f"{best:.4g} by {worse:.4g} (> {limit:.4g} allowed)",
                        rule.metric,
                        value,
                        limit,
                    )
                )
        for trule in rules.thresholds:
            seen = values.get(trule.metric)
            if seen is None or not math.isfinite(seen):
                continue
            value = seen
            if trule.max_value is not None and value > trule.max_value:
                bound, side = trule.max_value, "above"
            elif trule.min_value is not None and value < trule.min_value:
                bound, side = trule.min_value, "below"
            else:
                continue
            alerts.append(
                Alert(
                    "threshold",
                    trule.severity,
                    epoch,
                    f"{trule.metric} = {value:.4g} at epoch {epoch} is {side} {bound:g}",
                    trule.metric,
                    value,
                    bound,
                )
            )
        if report is not None and self.drift_thresholds:
            alert = _drift_threshold_alert(epoch, report, self.drift_thresholds)
            if alert is not None:
                alerts.append(alert)
        if report is not None:
            if report.inconclusive:
                alerts.append(
                    Alert(
                        "drift_inconclusive",
                        "info",
                        epoch,
                        f"drift check at epoch {epoch} skipped every signal: "
                        + "; ".join(f"{s.name}: {s.reason}" for s in report.skipped[:3]),
                    )
                )
            elif report.dataset_drifted:
                share = report.drifted_share or 0.0
                names = ", ".join(s.name for s in report.drifted_signals)
                alerts.append(
                    Alert(
                        "drift",
                        rules.drift_severity,
                        epoch,
                        f"dataset drift at epoch {epoch}: {share:.0%} of the signals drifted "
                        f"({names})",
                        "drift/drifted_share",
                        share,
                        report.drift_share,
                    )
                )
        return alerts

    def _write(
        self,
        epoch: int,
        rows: Mapping[str, float],
        alerts: Sequence[Alert],
        report: DriftReport | None,
    ) -> None:
        """One transaction for the whole epoch. ``ExperimentDB.log_metrics`` and
        ``log_artifact`` each commit on their own, so the rows are written here, in the
        experiment database's own layout and naming scheme, inside one ``write()``."""
        db = self.db
        assert db is not None and self.run_id is not None
        now = utc_now()
        metric_rows = []
        for name, value in rows.items():
            full, split = qualify_metric_name(name, None)
            metric_rows.append(
                (self.run_id, split, full, None if math.isnan(value) else value, epoch, now)
            )
        artifacts = []
        if alerts:
            meta = dumps_json({"alerts": [a.to_dict() for a in alerts]}, "alerts")
            artifacts.append(("alerts", f"alerts:epoch{epoch:04d}", meta))
        if report is not None:
            meta = dumps_json(report.to_dict(), "drift report")
            artifacts.append(("drift_report", f"drift:epoch{epoch:04d}", meta))
        with db.write() as conn:
            if (
                conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (self.run_id,)).fetchone()
                is None
            ):
                raise RunNotFoundError(f"run {self.run_id} no longer exists in {db.path}")
            conn.executemany(
                "INSERT INTO metrics (run_id, split, metric_name, value, epoch, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                metric_rows,
            )
            conn.executemany(
                "INSERT INTO artifacts (run_id, artifact_type, filepath, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.run_id, kind, path, meta, now) for kind, path, meta in artifacts],
            )

    # -- reading back ----------------------------------------------------------------------

    @property
    def latest_drift(self) -> DriftReport | None:
        """The newest drift report (``RetrainingTriggerManager`` reads it)."""
        with self._lock:
            return self.drift_history[-1][1] if self.drift_history else None

    def get_alerts(self, clear: bool = False) -> list[Alert]:
        """Alerts raised so far, oldest first; ``clear=True`` empties the buffer."""
        with self._lock:
            out = list(self.alerts)
            if clear:
                self.alerts.clear()
            return out

    def has_alerts(self) -> bool:
        with self._lock:
            return bool(self.alerts)

    def get_summary(self) -> pd.DataFrame:
        """One row per epoch, one column per metric (NaN where an epoch lacks one)."""
        import pandas as pd

        with self._lock:
            frame = pd.DataFrame.from_records(list(self.history))
        if not frame.empty:
            frame["epoch"] = frame["epoch"].astype("int64")
        return frame

    def get_best_epoch(self, metric: str = "val/loss", mode: str | None = None) -> int:
        """The epoch with the best finite value of ``metric`` (direction inferred unless
        ``mode``); ``ConfigError`` listing the metrics when none has it."""
        name = canonical_metric_name(metric)
        direction = mode or infer_mode(name)
        if direction not in ("min", "max"):
            raise ConfigError(f"cannot tell the direction of {name!r}; pass mode='min' or 'max'")
        with self._lock:
            rows = [r for r in self.history if math.isfinite(r.get(name, math.nan))]
            if not rows:
                known = sorted({k for r in self.history for k in r} - {"epoch"})
                raise ConfigError(
                    f"no epoch has a finite value of {name!r}; logged: {', '.join(known) or 'none'}"
                )
            pick = min if direction == "min" else max
            return int(pick(rows, key=lambda r: r[name])["epoch"])
