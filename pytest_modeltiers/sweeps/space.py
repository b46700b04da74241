"""What a sweep varies: dotted config keys, checked against the base config before any trial
runs, and the values or ranges each key is drawn from.

PYTEST_DONT_REWRITE

Standard library and the config layer only: a misspelt key or an empty range is reported
without importing Optuna or torch.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_modeltiers.config._util import bulleted, did_you_mean, is_int, is_number
from pytest_modeltiers.config.eval_config import EvalConfig
from pytest_modeltiers.config.training import FIELD_NAMES, TrainingConfig
from pytest_modeltiers.errors import ConfigError

__all__ = [
    "JOB_KEYS",
    "Dimension",
    "apply_params",
    "check_keys",
    "grid_points",
    "is_job_config",
    "parse_space",
]

#: Keys of a training-job config beyond ``TrainingConfig``'s fields (``modeltiers train``'s
#: model and data keys); ``eval`` holds ``EvalConfig`` fields, addressed as ``eval.batch_size``.
JOB_KEYS: tuple[str, ...] = (
    "model_file",
    "model_path",
    "trust_model",
    "eval",
    "train_file",
    "validation_file",
    "output_dir",
    "use_gpu",
)
_EVAL_FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig))
_KINDS = ("categorical", "float", "int")
_GRID_VALUE_TYPES = (str, int, float, bool, type(None))


def is_job_config(base: Any) -> bool:
    """A mapping naming a model file: what the default ``run_fn`` trains."""
    return isinstance(base, Mapping) and bool(base.get("model_file") or base.get("model_path"))


# --------------------------------------------------------------------------- keys


def _key_error(base: Any, key: str) -> str | None:
    """Why ``key`` does not name a setting of ``base`` (the closest name included), or None."""
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        return f"{key!r} is not a config key (use names like 'learning_rate' or 'eval.batch_size')"
    parts = key.split(".")
    if isinstance(base, TrainingConfig) or is_job_config(base):
        head = parts[0]
        valid = FIELD_NAMES if isinstance(base, TrainingConfig) else (*FIELD_NAMES, *JOB_KEYS)
        if head not in valid:
            return f"unknown config key {key!r}{did_you_mean(head, valid)}"
        if head == "eval" and not isinstance(base, TrainingConfig):
            if len(parts) != 2:
                return f"{key!r}: name one EvalConfig field, as in 'eval.batch_size'"
            if parts[1] not in _EVAL_FIELDS:
                return f"unknown config key {key!r}{did_you_mean(parts[1], _EVAL_FIELDS)}"
            return None
        if len(parts) > 1:
            return f"{key!r}: {head} is a single value, it has no {parts[1]!r} inside"
        return None
    node = base
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the base config"
        if isinstance(node, Mapping):
            names = [str(name) for name in node]
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            names = [f.name for f in dataclasses.fields(node)]
        else:
            return f"{key!r}: {where} is a single value, it has no {part!r} inside"
        if part not in names:
            return f"unknown config key {key!r}: {where} has no {part!r}{did_you_mean(part, names)}"
        node = node[part] if isinstance(node, Mapping) else getattr(node, part)
    return None


def check_keys(base: Any, keys: Sequence[str]) -> None:
    """Refuse, before any trial, a key that names nothing in ``base`` (each with its closest
    valid name), so a typo fails in a second rather than after a sweep of identical runs."""
    if not isinstance(base, (Mapping, TrainingConfig)) and not (
        dataclasses.is_dataclass(base) and not isinstance(base, type)
    ):
        raise ConfigError(
            "base_config must be a TrainingConfig, a dict (a training job naming model_file, or "
            f"any config your run_fn reads) or a dataclass, got {type(base).__name__}"
        )
    errors = [message for key in keys if (message := _key_error(base, key)) is not None]
    if errors:
        raise ConfigError(bulleted("the sweep names config keys that do not exist:", errors))


def apply_params(base: Any, params: Mapping[str, Any]) -> Any:
    """A copy of ``base`` with each dotted key set (``base`` itself is never changed).

    A ``TrainingConfig`` is rebuilt with ``from_dict``, so every field rule checks the value.
    """
    if isinstance(base, TrainingConfig):
        return TrainingConfig.from_dict({**base.to_dict(), **params})
    result = copy.deepcopy(base)
    for key, value in params.items():
        *path, last = key.split(".")
        node = result
        for part in path:
            child = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
            if child is None and isinstance(node, dict):  # a job config without an eval block
                child = node[part] = {}
            node = child
        if isinstance(node, dict):
            node[last] = value
            continue
        try:
            setattr(node, last, value)
        except dataclasses.FrozenInstanceError:
            raise ConfigError(
                f"cannot set {key!r}: {type(node).__name__} is a frozen dataclass; pass a dict "
                "or a mutable config as base_config"
            ) from None
    return result


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class Dimension:
    """One swept key: a list of values (``categorical``) or a ``float``/``int`` range."""

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def suggest(self, trial: Any) -> Any:
        """The trial's value, through Optuna's ``suggest_*`` (so samplers and storage see it)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name,
                int(self.low or 0),
                int(self.high or 0),
                step=int(self.step or 1),
                log=self.log,
            )
        return trial.suggest_float(
            self.name, float(self.low or 0.0), float(self.high or 0.0), step=self.step, log=self.log
        )

    def grid_values(self) -> list[Any]:
        """Every value a grid visits: the list, or each step of an int range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low or 0), int(self.high or 0) + 1, int(self.step or 1)))
        raise ConfigError(
            f"{self.name}: a grid sweep needs a list of values, not a float range; give a list "
            "such as [0.001, 0.003, 0.01], or use sampler='random' or 'tpe'"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON form, stored with the study so a resumed sweep can check it is the same."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {
            "type": self.kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "step": self.step,
        }


def _dimension(name: str, spec: Any) -> Dimension:
    if isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{name}: expected a list of values or a range such as {{'type': 'float', 'low': "
            f"1e-4, 'high': 1e-2, 'log': true}}, got {type(spec).__name__} {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _KINDS:
        raise ConfigError(f"{name}: type must be one of {', '.join(_KINDS)}, got {kind!r}")
    allowed = (
        {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    )
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(
            f"{name}: unknown field(s) {unknown} for type {kind!r}; allowed: {sorted(allowed)}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{name}: give at least one value to try, got {choices!r}")
        bad = [value for value in choices if not isinstance(value, _GRID_VALUE_TYPES)]
        if bad or any(isinstance(v, float) and not math.isfinite(v) for v in choices):
            raise ConfigError(
                f"{name}: values must be strings, numbers, true/false or null (the study storage "
                f"keeps them), got {bad or choices!r}"
            )
        if len({repr(value) for value in choices}) != len(choices):
            raise ConfigError(f"{name}: the values {list(choices)!r} repeat one another")
        return Dimension(name, "categorical", choices=tuple(choices))
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    log: Any = spec.get("log", False)
    step: Any = spec.get("step")
    check = is_int if kind == "int" else is_number
    if not check(low) or not check(high) or low > high:
        raise ConfigError(
            f"{name}: a {kind} range needs {kind} low <= high, got low={low!r}, high={high!r}"
        )
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"{name}: log must be true or false, and a log range needs low > 0")
    if step is not None and (not check(step) or step <= 0 or log):
        raise ConfigError(f"{name}: step must be a positive {kind} (and not used with log)")
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def parse_space(search_space: Mapping[str, Any]) -> dict[str, Dimension]:
    """Each key's ``Dimension``; every problem is reported at once."""
    if not isinstance(search_space, Mapping) or not search_space:
        raise ConfigError(
            "the search space must be a non-empty dict of config key -> values, such as "
            f"{{'learning_rate': [0.001, 0.01]}}, got {search_space!r}"
        )
    dims: dict[str, Dimension] = {}
    errors = []
    for name, spec in search_space.items():
        try:
            dims[str(name)] = _dimension(str(name), spec)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError(bulleted("invalid search space:", errors))
    return dims


def grid_points(dims: Mapping[str, Dimension]) -> list[dict[str, Any]]:
    """Every combination, in key order then value order (the order trials are queued)."""
    names = list(dims)
    values = [dims[name].grid_values() for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
