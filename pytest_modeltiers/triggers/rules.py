"""The five triggers (drift, performance, time, data volume, composite) and the factory that
builds any of them from a config.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.triggers.base import (
    Condition,
    Trigger,
    TriggerInputs,
    as_count,
    format_utc,
    parse_utc,
)
from pytest_modeltiers.triggers.config import (
    CompositeTriggerConfig,
    DataVolumeTriggerConfig,
    DriftTriggerConfig,
    PerformanceTriggerConfig,
    TimeTriggerConfig,
    TriggerConfig,
    config_from_dict,
)

__all__ = [
    "CompositeTrigger",
    "DataVolumeTrigger",
    "DriftTrigger",
    "PerformanceTrigger",
    "TimeTrigger",
    "build_trigger",
]


def _available(names: Iterable[str], prefix: str = "") -> str:
    shown = sorted(n for n in names if n.startswith(prefix))
    if not shown:
        return "none"
    extra = f", ... ({len(shown) - 12} more)" if len(shown) > 12 else ""
    return ", ".join(shown[:12]) + extra


class DriftTrigger(Trigger):
    """Fires when a drift measure (default ``drift/js_distance``) exceeds ``threshold``."""

    kind = "drift"

    def __init__(
        self,
        threshold: float = 0.15,
        metric_name: str = "drift/js_distance",
        severity: str = "warning",
        name: str = "drift_trigger",
        *,
        window_size: int | None = None,
        consecutive: int = 1,
        enabled: bool = True,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        config: DriftTriggerConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or DriftTriggerConfig(
            name=name,
            threshold=threshold,
            metric_name=metric_name,
            severity=severity,
            window_size=window_size,
            consecutive=consecutive,
            enabled=enabled,
            description=description,
            metadata=metadata or {},
        )

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    @property
    def metric_name(self) -> str:
        return str(self.config.metric_name)

    def condition(self, inputs: TriggerInputs) -> Condition:
        cfg: DriftTriggerConfig = self.config
        value = inputs.drift.get(cfg.metric_name)
        if value is None or math.isnan(value):
            what = "is missing" if value is None else "is NaN"
            return Condition(
                None,
                f"drift measure {cfg.metric_name!r} {what} in this window (drift measures "
                f"available: {_available(inputs.drift)}); pass the drift report of the current "
                "data, or change metric_name",
                threshold=cfg.threshold,
            )
        metrics: dict[str, Any] = {"metric_name": cfg.metric_name, "value": value}
        if cfg.window_size is not None:
            n = inputs.drift.get("drift/n_current")
            if n is None:
                return Condition(
                    None,
                    f"window_size={cfg.window_size} is set but the drift input does not say "
                    "how many observations it rests on (drift/n_current); pass the DriftReport "
                    "itself or add drift/n_current",
                    actual_value=value,
                    threshold=cfg.threshold,
                    metrics=metrics,
                )
            metrics["n_current"] = n
            if n < cfg.window_size:
                return Condition(
                    None,
                    f"the drift window holds {n:g} current observations, fewer than "
                    f"window_size={cfg.window_size}; wait for more data or lower window_size",
                    actual_value=value,
                    threshold=cfg.threshold,
                    metrics=metrics,
                )
        met = value > cfg.threshold
        return Condition(
            met,
            f"{cfg.metric_name} = {value:.4g} {'>' if met else '<='} threshold {cfg.threshold:g}",
            actual_value=value,
            threshold=cfg.threshold,
            metrics=metrics,
        )

    def recommend(self, cond: Condition) -> str:
        return (
            f"Data drift: {self.metric_name} = {cond.actual_value:.4g} exceeds "
            f"{self.threshold:g}. Inspect the drifted signals in the drift report; if the new "
            "distribution is expected, retrain on recent data and store a new reference profile."
        )


class PerformanceTrigger(Trigger):
    """Fires when a metric is worse than its baseline by more than ``threshold`` (relative)."""

    kind = "performance"

    def __init__(
        self,
        threshold: float = 0.05,
        metric_name: str = "val/loss",
        mode: str | None = None,
        severity: str = "warning",
        name: str = "performance_trigger",
        *,
        lookback_epochs: int = 5,
        consecutive: int = 1,
        enabled: bool = True,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        config: PerformanceTriggerConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or PerformanceTriggerConfig(
            name=name,
            threshold=threshold,
            metric_name=metric_name,
            mode=mode,
            severity=severity,
            lookback_epochs=lookback_epochs,
            consecutive=consecutive,
            enabled=enabled,
            description=description,
            metadata=metadata or {},
        )

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    @property
    def metric_name(self) -> str:
        return str(self.config.metric_name)

    @property
    def mode(self) -> str:
        return str(self.config.resolved_mode)

    def condition(self, inputs: TriggerInputs) -> Condition:
        cfg: PerformanceTriggerConfig = self.config
        name, mode = cfg.metric_name, cfg.resolved_mode
        raw = inputs.current.get(name)
        base = inputs.baseline.get(name)
        if raw is None or base is None:
            side, names = (
                ("current metrics", inputs.current)
                if raw is None
                else ("baseline", inputs.baseline)
            )
            return Condition(
                None,
                f"metric {name!r} is missing from the {side} (available: {_available(names)}); "
                "names are 'split/name' as the experiment database stores them",
                threshold=cfg.threshold,
            )
        if isinstance(raw, tuple):
            window = raw[-cfg.lookback_epochs :]
            current = math.fsum(window) / len(window)
            how = f"mean of the last {len(window)} value(s)"
        else:
            current, how = raw, "current value"
        if not math.isfinite(base):
            return Condition(
                None,
                f"the baseline of {name!r} is {base}, not a finite number; register the "
                "baseline model with finite metrics",
                threshold=cfg.threshold,
            )
        metrics: dict[str, Any] = {
            "metric_name": name,
            "mode": mode,
            "current_value": current,
            "baseline_value": base,
        }
        if not math.isfinite(current):
            metrics["change_percent"] = None
            return Condition(
                True,
                f"{name} {how} is {current}: the model diverged (baseline {base:.4g})",
                actual_value=math.inf,
                threshold=cfg.threshold,
                metrics=metrics,
            )
        if base == 0:
            change = 0.0 if current == base else math.copysign(math.inf, current - base)
        else:
            change = (current - base) / abs(base)
        degradation = change if mode == "min" else -change
        metrics["change_percent"] = change * 100
        met = degradation > cfg.threshold
        better = "lower" if mode == "min" else "higher"
        return Condition(
            met,
            f"{name} {how} {current:.4g} vs baseline {base:.4g} ({better} is better): "
            f"degradation {degradation:+.2%} {'>' if met else '<='} threshold {cfg.threshold:.2%}",
            actual_value=degradation,
            threshold=cfg.threshold,
            metrics=metrics,
        )

    def recommend(self, cond: Condition) -> str:
        return (
            f"Performance degradation: {self.metric_name} is worse than the baseline by more "
            f"than {self.threshold:.1%}. Retrain on recent data, or roll back to the baseline "
            "model; compare both on the same held-out data first."
        )


class TimeTrigger(Trigger):
    """Fires when at least ``interval_hours`` have passed since the last training (UTC)."""

    kind = "time"

    def __init__(
        self,
        interval_hours: float = 168.0,
        severity: str = "info",
        name: str = "time_trigger",
        *,
        last_training_time: datetime | str | None = None,
        consecutive: int = 1,
        enabled: bool = True,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        config: TimeTriggerConfig | None = None,
    ) -> None:
        super().__init__()
        stamp = last_training_time
        if isinstance(stamp, datetime):
            stamp = format_utc(parse_utc(stamp, "last_training_time", naive_as_utc=True))
        self.config = config or TimeTriggerConfig(
            name=name,
            interval_hours=interval_hours,
            severity=severity,
            last_training_time=stamp,
            consecutive=consecutive,
            enabled=enabled,
            description=description,
            metadata=metadata or {},
        )

    @property
    def interval_hours(self) -> float:
        return float(self.config.interval_hours)

    def condition(self, inputs: TriggerInputs) -> Condition:
        cfg: TimeTriggerConfig = self.config
        raw = inputs.metadata.get("last_training_time")
        source = "metadata"
        if raw is None:
            raw, source = cfg.last_training_time, "config"
        if raw is None:
            return Condition(
                None,
                "no last_training_time in the window's metadata or the trigger's config; pass "
                "it (aware UTC), or look the model up in the registry",
                threshold=cfg.interval_hours,
            )
        last = parse_utc(raw, "last_training_time", naive_as_utc=True)
        hours = (inputs.now - last).total_seconds() / 3600.0
        metrics = {
            "last_training_time": format_utc(last),
            "now": format_utc(inputs.now),
            "elapsed_hours": hours,
            "source": source,
        }
        if hours < 0:
            return Condition(
                False,
                f"last training {format_utc(last)} is {-hours:.2f} h in the future of "
                f"{format_utc(inputs.now)}; check the clocks",
                actual_value=hours,
                threshold=cfg.interval_hours,
                metrics=metrics,
            )
        met = hours >= cfg.interval_hours
        return Condition(
            met,
            f"{hours:.2f} h since the last training {'>=' if met else '<'} interval "
            f"{cfg.interval_hours:g} h",
            actual_value=hours,
            threshold=cfg.interval_hours,
            metrics=metrics,
        )

    def recommend(self, cond: Condition) -> str:
        return (
            f"Scheduled retraining is due: {cond.actual_value:.1f} h since the last training "
            f"(interval {self.interval_hours:g} h)."
        )


class DataVolumeTrigger(Trigger):
    """Fires when enough new data has arrived since the baseline (count or share)."""

    kind = "data_volume"

    def __init__(
        self,
        threshold_samples: int | None = None,
        threshold_percentage: float | None = 0.2,
        severity: str = "info",
        name: str = "data_volume_trigger",
        *,
        baseline_count: int | None = None,
        consecutive: int = 1,
        enabled: bool = True,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        config: DataVolumeTriggerConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or DataVolumeTriggerConfig(
            name=name,
            threshold_samples=threshold_samples,
            threshold_percentage=threshold_percentage,
            severity=severity,
            baseline_count=baseline_count,
            consecutive=consecutive,
            enabled=enabled,
            description=description,
            metadata=metadata or {},
        )

    def condition(self, inputs: TriggerInputs) -> Condition:
        cfg: DataVolumeTriggerConfig = self.config
        cur_raw = inputs.metadata.get("current_count")
        base_raw = inputs.metadata.get("baseline_count", cfg.baseline_count)
        if cur_raw is None or base_raw is None:
            missing = "current_count" if cur_raw is None else "baseline_count"
            return Condition(
                None,
                f"no {missing} in the window's metadata"
                + ("" if missing == "current_count" else " or the trigger's config")
                + "; pass the sample counts (current data, data the model was trained on)",
            )
        current = as_count(cur_raw, "current_count")
        baseline = as_count(base_raw, "baseline_count")
        new = current - baseline
        share = (math.inf if new > 0 else 0.0) if baseline == 0 else new / baseline
        by_count = cfg.threshold_samples is not None and new >= cfg.threshold_samples
        by_share = cfg.threshold_percentage is not None and share >= cfg.threshold_percentage
        met = by_count or by_share
        parts = []
        if cfg.threshold_samples is not None:
            parts.append(f"{new} new {'>=' if by_count else '<'} {cfg.threshold_samples}")
        if cfg.threshold_percentage is not None:
            parts.append(f"{share:+.2%} {'>=' if by_share else '<'} {cfg.threshold_percentage:.2%}")
        return Condition(
            met,
            f"{current} samples vs baseline {baseline}: " + " or ".join(parts),
            actual_value=float(new),
            threshold=float(
                cfg.threshold_samples
                if cfg.threshold_samples is not None
                else cfg.threshold_percentage  # type: ignore[arg-type]
            ),
            metrics={
                "current_count": current,
                "baseline_count": baseline,
                "new_samples": new,
                "increase_fraction": share,
                "threshold_samples": cfg.threshold_samples,
                "threshold_percentage": cfg.threshold_percentage,
            },
        )

    def recommend(self, cond: Condition) -> str:
        new = int(cond.actual_value or 0)
        return f"{new} new samples since the last training: retrain to learn from them."


class CompositeTrigger(Trigger):
    """``AND``/``OR`` over child triggers (which may be composites themselves)."""

    kind = "composite"

    def __init__(
        self,
        triggers: Sequence[Trigger],
        logic: str = "OR",
        severity: str = "warning",
        name: str = "composite_trigger",
        *,
        consecutive: int = 1,
        enabled: bool = True,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(triggers, Trigger) or not all(isinstance(t, Trigger) for t in triggers):
            raise ConfigError(
                f"composite trigger {name!r}: triggers must be a list of trigger objects "
                "(DriftTrigger(...), ...); build one from configs with build_trigger()"
            )
        self.children: tuple[Trigger, ...] = tuple(triggers)
        self.config = CompositeTriggerConfig(
            name=name,
            triggers=tuple(t.to_config() for t in self.children),
            logic=logic,
            severity=severity,
            consecutive=consecutive,
            enabled=enabled,
            description=description,
            metadata=metadata or {},
        )

    @property
    def logic(self) -> str:
        return str(self.config.logic)

    def state_dict(self) -> dict[str, Any]:
        return {
            "streak": self._streak,
            "children": {c.name: c.state_dict() for c in self.children},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        children = state.get("children") or {}
        for child in self.children:
            if child.name in children:
                child.load_state_dict(children[child.name])

    def reset(self) -> None:
        super().reset()
        for child in self.children:
            child.reset()

    def condition(self, inputs: TriggerInputs) -> Condition:
        details = tuple(child.evaluate_inputs(inputs) for child in self.children)
        active = [d for d in details if d.status != "disabled"]
        fired = [d for d in active if d.triggered]
        decided = [d for d in active if d.evaluated]
        unknown = [d for d in active if d.status == "no_data"]
        if not active:
            return Condition(None, "every child trigger is disabled", children=details)
        if self.logic == "OR":
            met: bool | None = True if fired else (None if unknown else False)
        else:
            not_fired = [d for d in decided if not d.triggered]
            met = False if not_fired else (None if unknown else True)
        names = ", ".join(d.trigger_name for d in fired) or "none"
        if met is None:
            reason = f"{self.logic} undecided: child(ren) without data: " + ", ".join(
                d.trigger_name for d in unknown
            )
        else:
            reason = f"{self.logic} of {len(active)} children: fired {names}"
        return Condition(
            met,
            reason,
            actual_value=float(len(fired)),
            threshold=float(len(active) if self.logic == "AND" else 1),
            metrics={"logic": self.logic, "fired_children": [d.trigger_name for d in fired]},
            children=details,
        )

    def recommend(self, cond: Condition) -> str:
        children = [c.recommendation for c in cond.children if c.triggered and c.recommendation]
        head = f"Policy {self.name!r} ({self.logic} of its triggers) is met."
        return " ".join([head, *children])


TRIGGER_TYPES: dict[str, type[Trigger]] = {
    "drift": DriftTrigger,
    "performance": PerformanceTrigger,
    "time": TimeTrigger,
    "data_volume": DataVolumeTrigger,
}


def build_trigger(config: TriggerConfig | Mapping[str, Any]) -> Trigger:
    """The trigger a config (object or dict with ``"type"``) describes; composites nest."""
    cfg = config_from_dict(config)
    if isinstance(cfg, CompositeTriggerConfig):
        return CompositeTrigger(
            [build_trigger(child) for child in cfg.triggers],
            logic=cfg.logic,
            severity=cfg.severity,
            name=cfg.name,
            consecutive=cfg.consecutive,
            enabled=cfg.enabled,
            description=cfg.description,
            metadata=cfg.metadata,
        )
    cls: Any = TRIGGER_TYPES[cfg.TYPE]
    trigger: Trigger = cls(config=cfg)
    return trigger
