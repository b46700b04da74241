"""Trigger configs, the three preset policies, and retraining policies loaded from JSON.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.config._util import did_you_mean, is_int, is_number, read_json_object
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.store.metric_names import (
    MetricNameError,
    resolve_metric_name,
    warn_old_spellings,
)
from pytest_modeltiers.triggers.base import (
    TRIGGER_SEVERITIES,
    TriggerInputError,
    check_name,
    format_utc,
    parse_utc,
)

__all__ = [
    "GATE_LEVELS",
    "PRESETS",
    "CompositeTriggerConfig",
    "DataVolumeTriggerConfig",
    "DriftTriggerConfig",
    "PerformanceTriggerConfig",
    "RetrainingPolicy",
    "TimeTriggerConfig",
    "TriggerConfig",
    "config_from_dict",
    "get_aggressive_config",
    "get_balanced_config",
    "get_conservative_config",
    "infer_mode",
    "load_policy",
]

#: Severities a gate can be set to: the report fails the gate at this severity or higher.
GATE_LEVELS: tuple[str, ...] = TRIGGER_SEVERITIES

_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "mse", "mae", "rmse", "nll", "wer", "cer")
_HIGHER_IS_BETTER = (
    "accuracy",
    "acc",
    "f1",
    "precision",
    "recall",
    "auc",
    "auroc",
    "bleu",
    "rouge",
    "top1",
    "top5",
    "map",
)


def infer_mode(metric_name: str) -> str | None:
    """``"min"``/``"max"`` from a metric name's last segment, or None when it cannot tell."""
    last = metric_name.rsplit("/", 1)[-1].lower()
    words = [w for w in last.replace("-", "_").split("_") if w]
    for word in reversed(words):
        if word in _LOWER_IS_BETTER:
            return "min"
        if word in _HIGHER_IS_BETTER or word.startswith(("accuracy", "top")):
            return "max"
    return None


def _fail(cfg: Any, message: str) -> ConfigError:
    return ConfigError(f"{cfg.TYPE} trigger {getattr(cfg, 'name', '?')!r}: {message}")


@dataclass(frozen=True)
class TriggerConfig:
    """Fields every trigger has. ``metadata`` is free JSON carried into the report."""

    TYPE: ClassVar[str] = "trigger"

    name: str = "trigger"
    enabled: bool = True
    severity: str = "warning"
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    consecutive: int = 1

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.enabled, bool):
            raise _fail(self, f"enabled must be true or false, got {self.enabled!r}")
        if self.severity not in TRIGGER_SEVERITIES:
            raise _fail(
                self,
                f"severity must be one of {', '.join(TRIGGER_SEVERITIES)}, got "
                f"{self.severity!r}{did_you_mean(str(self.severity), TRIGGER_SEVERITIES)}",
            )
        if not isinstance(self.description, str):
            raise _fail(self, f"description must be a string, got {self.description!r}")
        if not isinstance(self.metadata, Mapping):
            raise _fail(self, f"metadata must be a JSON object, got {self.metadata!r}")
        try:
            json.dumps(dict(self.metadata), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _fail(self, f"metadata is not strict JSON ({exc})") from None
        if not is_int(self.consecutive) or self.consecutive < 1:
            raise _fail(
                self,
                "consecutive must be an integer >= 1 (windows in a row the condition must "
                f"hold), got {self.consecutive!r}",
            )
        object.__setattr__(self, "metadata", dict(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as JSON text; written atomically to ``path`` when given."""
        text = dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriggerConfig:
        """Build this config class (or, on the base class, the one ``data["type"]`` names)."""
        if cls is TriggerConfig:
            return config_from_dict(data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"a trigger config must be a JSON object, got {type(data).__name__}")
        body = dict(data)
        kind = body.pop("type", cls.TYPE)
        if kind != cls.TYPE:
            raise ConfigError(f"{cls.__name__} got a config of type {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - names)
        if unknown:
            hints = "".join(did_you_mean(k, names) for k in unknown)
            raise ConfigError(
                f"{cls.TYPE} trigger {body.get('name', '?')!r}: unknown key(s) {unknown}"
                f"{hints}; accepted: {', '.join(sorted(names))}"
            )
        return cls(**body)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> TriggerConfig:
        """From JSON text (starting with ``{``) or a file path."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            try:
                data = json.loads(source)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"invalid trigger config JSON: {exc}") from None
        else:
            data = read_json_object(source, ConfigError)
        return cls.from_dict(data)


def _metric_name(cfg: Any, split: str | None, what: str) -> str:
    """``cfg.metric_name`` in the one scheme; an old spelling (``val_loss``) with a warning."""
    try:
        full, old = resolve_metric_name(cfg.metric_name, split, what=what)
    except MetricNameError as exc:
        raise _fail(cfg, str(exc)) from None
    warn_old_spellings({} if old is None else {old: full})
    return full


def _threshold(cfg: Any, value: Any, what: str, *, allow_zero: bool = True) -> None:
    if not is_number(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _fail(cfg, f"{what} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class DriftTriggerConfig(TriggerConfig):
    """Fires when the drift measure ``metric_name`` exceeds ``threshold`` (strictly).

    ``metric_name`` is in the ``drift`` split: ``"js_distance"`` means ``"drift/js_distance"``
    (the largest Jensen-Shannon distance, base 2). ``"drifted_share"`` is the principled
    dataset-level alternative (threshold 0.5, Evidently's default).
    """

    TYPE: ClassVar[str] = "drift"

    name: str = "drift_trigger"
    threshold: float = 0.15
    metric_name: str = "drift/js_distance"
    window_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _threshold(self, self.threshold, "threshold")
        full = _metric_name(self, "drift", "drift metric")
        object.__setattr__(self, "metric_name", full)
        if self.window_size is not None and (not is_int(self.window_size) or self.window_size < 1):
            raise _fail(
                self, f"window_size must be an integer >= 1 or null, got {self.window_size!r}"
            )


@dataclass(frozen=True)
class PerformanceTriggerConfig(TriggerConfig):
    """Fires when ``metric_name`` is worse than the baseline by more than ``threshold``
    (relative: 0.05 is 5 %)."""

    TYPE: ClassVar[str] = "performance"

    name: str = "performance_trigger"
    threshold: float = 0.05
    metric_name: str = "val/loss"
    mode: str | None = None
    lookback_epochs: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        _threshold(self, self.threshold, "threshold")
        full = _metric_name(self, None, "performance metric")
        object.__setattr__(self, "metric_name", full)
        if self.mode not in (None, "min", "max"):
            raise _fail(self, f"mode must be 'min', 'max' or null (inferred), got {self.mode!r}")
        if self.mode is None and infer_mode(full) is None:
            raise _fail(
                self,
                f"cannot tell whether higher or lower is better for {full!r}; set mode to "
                "'min' (lower is better, like a loss) or 'max' (like an accuracy)",
            )
        if not is_int(self.lookback_epochs) or self.lookback_epochs < 1:
            raise _fail(
                self, f"lookback_epochs must be an integer >= 1, got {self.lookback_epochs!r}"
            )

    @property
    def resolved_mode(self) -> str:
        return self.mode or infer_mode(self.metric_name) or "min"


@dataclass(frozen=True)
class TimeTriggerConfig(TriggerConfig):
    """Fires when at least ``interval_hours`` have passed since the last training."""

    TYPE: ClassVar[str] = "time"

    name: str = "time_trigger"
    severity: str = "info"
    interval_hours: float = 168.0
    last_training_time: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _threshold(self, self.interval_hours, "interval_hours", allow_zero=False)
        if self.last_training_time is not None:
            try:
                moment = parse_utc(self.last_training_time, "last_training_time", naive_as_utc=True)
            except TriggerInputError as exc:
                raise _fail(self, str(exc)) from None
            object.__setattr__(self, "last_training_time", format_utc(moment))


@dataclass(frozen=True)
class DataVolumeTriggerConfig(TriggerConfig):
    """Fires when the new samples since the baseline reach ``threshold_samples`` OR their share
    of the baseline reaches ``threshold_percentage`` (0.2 is 20 %). At least one is needed."""

    TYPE: ClassVar[str] = "data_volume"

    name: str = "data_volume_trigger"
    severity: str = "info"
    threshold_samples: int | None = None
    threshold_percentage: float | None = 0.2
    baseline_count: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold_samples is None and self.threshold_percentage is None:
            raise _fail(self, "set threshold_samples, threshold_percentage or both")
        if self.threshold_samples is not None and (
            not is_int(self.threshold_samples) or self.threshold_samples < 1
        ):
            raise _fail(
                self, f"threshold_samples must be an integer >= 1, got {self.threshold_samples!r}"
            )
        if self.threshold_percentage is not None:
            _threshold(self, self.threshold_percentage, "threshold_percentage", allow_zero=False)
        if self.baseline_count is not None and (
            not is_int(self.baseline_count) or self.baseline_count < 0
        ):
            raise _fail(
                self, f"baseline_count must be an integer >= 0, got {self.baseline_count!r}"
            )


@dataclass(frozen=True)
class CompositeTriggerConfig(TriggerConfig):
    """Fires when all (``AND``) or any (``OR``) of its children fire; children may nest."""

    TYPE: ClassVar[str] = "composite"

    name: str = "composite_trigger"
    triggers: tuple[TriggerConfig, ...] = ()
    logic: str = "OR"

    def __post_init__(self) -> None:
        super().__post_init__()
        logic = self.logic.upper() if isinstance(self.logic, str) else self.logic
        if logic not in ("AND", "OR"):
            raise _fail(self, f"logic must be 'AND' or 'OR', got {self.logic!r}")
        object.__setattr__(self, "logic", logic)
        if isinstance(self.triggers, (str, Mapping)) or not isinstance(self.triggers, Sequence):
            raise _fail(self, "triggers must be a list of trigger configs")
        children = tuple(
            t if isinstance(t, TriggerConfig) else config_from_dict(t) for t in self.triggers
        )
        if not children:
            raise _fail(self, "needs at least one child trigger")
        names = [c.name for c in children]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _fail(self, f"child names must be unique, repeated: {dupes}")
        object.__setattr__(self, "triggers", children)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["triggers"] = [t.to_dict() for t in self.triggers]
        return out


CONFIG_TYPES: dict[str, type[TriggerConfig]] = {
    c.TYPE: c
    for c in (
        DriftTriggerConfig,
        PerformanceTriggerConfig,
        TimeTriggerConfig,
        DataVolumeTriggerConfig,
        CompositeTriggerConfig,
    )
}


def config_from_dict(data: TriggerConfig | Mapping[str, Any]) -> TriggerConfig:
    """The config a dict describes, chosen by its ``"type"`` key."""
    if isinstance(data, TriggerConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"a trigger config must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in CONFIG_TYPES:
        raise ConfigError(
            f"trigger config {data.get('name', '?')!r} has type {kind!r}; use one of "
            f"{', '.join(CONFIG_TYPES)}{did_you_mean(str(kind), CONFIG_TYPES)}"
        )
    return CONFIG_TYPES[kind].from_dict(data)


# -- presets --------------------------------------------------------------------------------

#: name -> (drift threshold, drift severity, performance threshold, performance severity,
#: time interval hours, data volume percentage); time and data volume are ``info``.
PRESETS: dict[str, tuple[float, str, float, str, float, float]] = {
    "conservative": (0.20, "critical", 0.10, "critical", 336.0, 0.30),
    "balanced": (0.15, "warning", 0.05, "warning", 168.0, 0.20),
    "aggressive": (0.10, "warning", 0.03, "warning", 48.0, 0.10),
}


def _preset(label: str) -> dict[str, TriggerConfig]:
    drift, drift_sev, perf, perf_sev, hours, volume = PRESETS[label]
    return {
        "drift": DriftTriggerConfig(
            name=f"drift_{label}",
            threshold=drift,
            severity=drift_sev,
            description="Jensen-Shannon distance (base 2) of the most drifted categorical signal",
        ),
        "performance": PerformanceTriggerConfig(
            name=f"performance_{label}",
            threshold=perf,
            severity=perf_sev,
            description="relative degradation of val/loss against the baseline",
        ),
        "time": TimeTriggerConfig(
            name=f"time_{label}",
            interval_hours=hours,
            severity="info",
            description="scheduled retraining interval",
        ),
        "data_volume": DataVolumeTriggerConfig(
            name=f"data_volume_{label}",
            threshold_percentage=volume,
            severity="info",
            description="new data as a share of the baseline's training data",
        ),
    }


def get_conservative_config() -> dict[str, TriggerConfig]:
    """High thresholds, rare retraining: drift 0.20 and performance 10 % (critical), every 2
    weeks, 30 % more data (info)."""
    return _preset("conservative")


def get_balanced_config() -> dict[str, TriggerConfig]:
    """The recommended default: drift 0.15 and performance 5 % (warning), weekly, 20 % more
    data (info)."""
    return _preset("balanced")


def get_aggressive_config() -> dict[str, TriggerConfig]:
    """Low thresholds, frequent retraining: drift 0.10 and performance 3 % (warning), every 2
    days, 10 % more data (info)."""
    return _preset("aggressive")


# -- policies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainingPolicy:
    """The triggers to evaluate and the gate: the report fails the gate when its severity is
    ``gate`` or higher."""

    triggers: tuple[TriggerConfig, ...]
    gate: str = "critical"

    def __post_init__(self) -> None:
        if self.gate not in GATE_LEVELS:
            raise ConfigError(
                f"gate must be one of {', '.join(GATE_LEVELS)}, got {self.gate!r}"
                f"{did_you_mean(str(self.gate), GATE_LEVELS)}"
            )
        triggers = tuple(
            t if isinstance(t, TriggerConfig) else config_from_dict(t) for t in self.triggers
        )
        names = [t.name for t in triggers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"trigger names must be unique in a policy, repeated: {dupes}")
        object.__setattr__(self, "triggers", triggers)

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "triggers": [t.to_dict() for t in self.triggers]}


_POLICY_KEYS = ("preset", "overrides", "triggers", "gate")


def load_policy(source: Any) -> RetrainingPolicy:
    """A policy from a ``RetrainingPolicy``, a preset name, a dict, or a JSON file path.

    ``preset`` (conservative, balanced, aggressive) contributes its four triggers, keyed
    ``drift``, ``performance``, ``time``, ``data_volume`` for ``overrides`` (a dict of field
    changes per key, or ``{"enabled": false}`` to switch one off); ``triggers`` adds configs.
    """
    if isinstance(source, RetrainingPolicy):
        return source
    if isinstance(source, str) and source in PRESETS:
        return RetrainingPolicy(tuple(_preset(source).values()))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data: Mapping[str, Any] = read_json_object(path, ConfigError)
        where = f"{path}: "
    elif isinstance(source, Mapping):
        data, where = source, ""
    else:
        raise ConfigError(
            "a retraining policy must be a preset name (conservative, balanced, aggressive), "
            f"a dict or a JSON file path, got {type(source).__name__}"
        )
    unknown = sorted(set(data) - set(_POLICY_KEYS))
    if unknown:
        hints = "".join(did_you_mean(k, _POLICY_KEYS) for k in unknown)
        raise ConfigError(
            f"{where}unknown key(s) {unknown}{hints} in the retraining policy; accepted: "
            f"{', '.join(_POLICY_KEYS)}"
        )
    try:
        triggers: list[TriggerConfig] = []
        preset = data.get("preset")
        overrides = data.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                "overrides must be an object keyed drift/performance/time/data_volume"
            )
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}"
                    f"{did_you_mean(str(preset), PRESETS)}"
                )
            base = _preset(preset)
            bad = sorted(set(overrides) - set(base))
            if bad:
                raise ConfigError(
                    f"overrides for unknown preset trigger(s) {bad}; use {', '.join(base)}"
                )
            for key, cfg in base.items():
                change = overrides.get(key) or {}
                if not isinstance(change, Mapping):
                    raise ConfigError(f"overrides.{key} must be an object of field changes")
                merged = {**cfg.to_dict(), **change}
                triggers.append(config_from_dict(merged))
        elif overrides:
            raise ConfigError("overrides need a preset to apply to")
        extra = data.get("triggers") or []
        if isinstance(extra, (str, Mapping)) or not isinstance(extra, Sequence):
            raise ConfigError("triggers must be a list of trigger configs")
        triggers += [config_from_dict(t) for t in extra]
        if not triggers:
            raise ConfigError("the policy has no triggers; give a preset or a triggers list")
        return RetrainingPolicy(tuple(triggers), gate=data.get("gate", "critical"))
    except (ConfigError, TypeError) as exc:
        if isinstance(exc, TypeError):  # a misplaced JSON value reaching a dataclass
            raise ConfigError(f"{where}{exc}") from None
        if where:
            raise ConfigError(f"{where}{exc}") from None
        raise
