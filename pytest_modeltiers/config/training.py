"""``TrainingConfig``: every setting of a training run, validated field by field.

PYTEST_DONT_REWRITE

Constructed values are validated, and every problem is reported at once in one
``ConfigError``; every size has an upper bound (``config.limits``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_modeltiers.config._util import (
    Rule,
    atomic_write_text,
    bool_rule,
    bulleted,
    choice_rule,
    did_you_mean,
    int_rule,
    is_int,
    positive_rule,
    range_rule,
    read_json_object,
    shown,
    str_rule,
)
from pytest_modeltiers.config.limits import LIMITS
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.jsonio import dumps

__all__ = [
    "COMPILE_MODES",
    "EXPORT_FORMATS",
    "FIELD_RULES",
    "LR_SCHEDULERS",
    "MODEL_TYPES",
    "PRECISIONS",
    "STRATEGIES",
    "TrainingConfig",
    "compare_configs",
    "format_config_diff",
]

MODEL_TYPES: tuple[str, ...] = ("gpt", "bert", "t5", "custom")
#: Accepted strategies; ``fsdp_native`` is an alias of ``fsdp``, kept for older config files.
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "ddp_spawn", "fsdp", "fsdp_native")
_STRATEGY_ALIASES: dict[str, str] = {"fsdp_native": "fsdp"}
#: Lightning precisions (canonical spelling first, then the accepted short aliases).
PRECISIONS: tuple[str, ...] = (
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "32",
    "16",
    "bf16",
    "64",
)
_PRECISION_ALIASES: dict[object, str] = {
    "32": "32-true",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
    "64": "64-true",
    32: "32-true",
    16: "16-mixed",
    64: "64-true",
}
COMPILE_MODES: tuple[str, ...] = (
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)
LR_SCHEDULERS: tuple[str, ...] = ("linear", "cosine", "constant", "constant_with_warmup")
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torch_export", "torchscript", "pytorch")
_PATH_FIELDS: frozenset[str] = frozenset(
    {"checkpoint_dir", "export_dir", "resume_from_checkpoint", "tensorboard_dir"}
)
_LIST_FIELDS: frozenset[str] = frozenset({"export_formats", "devices"})
_ACCUMULATION_FIELDS: tuple[str, str] = ("gradient_accumulation_steps", "accumulate_grad_batches")
#: Fields that ``compare_configs`` ignores: they differ between otherwise identical runs.
_DIFF_SKIPPED: frozenset[str] = frozenset({"created_at", "run_name"})


def _valid_count(value: Any) -> bool:
    """An accumulation count the field rules accept; invalid ones are reported by the rules."""
    return is_int(value) and value >= 1


def _utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _default_export_formats() -> list[str]:
    return ["onnx", "torch_export", "pytorch"]


def normalise_value(name: str, value: Any) -> Any:
    """Canonicalise aliases and container types on assignment, so equal settings compare equal."""
    if name in _PATH_FIELDS and isinstance(value, os.PathLike):
        return os.fspath(value)
    if name in _LIST_FIELDS and isinstance(value, tuple):
        return list(value)
    if name == "strategy" and isinstance(value, str):
        return _STRATEGY_ALIASES.get(value, value)
    if name == "precision" and isinstance(value, (str, int)) and not isinstance(value, bool):
        return _PRECISION_ALIASES.get(value, value)
    return value


@dataclass
class TrainingConfig:
    """All settings of one training run. Construction validates every field and raises
    ``ConfigError`` naming each problem, so a bad value never reaches a run."""

    # Reproducibility
    random_seed: int = 42
    deterministic: bool = False
    # Hyperparameters
    learning_rate: float = 5e-5
    batch_size: int = 4
    epochs: int = 10
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Learning-rate schedule
    use_lr_schedule: bool = True
    lr_scheduler: str = "linear"
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    # Training features
    use_amp: bool = True
    gradient_accumulation_steps: int = 1
    early_stopping_patience: int = 5
    validation_split: float = 0.1
    # torch.compile
    compile_mode: str | None = None
    compile_fullgraph: bool = False
    compile_dynamic: bool = True
    # Distribution and precision
    strategy: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    precision: str = "bf16-mixed"
    # Model
    model_name: str = "custom-transformer"
    model_type: str = "gpt"
    vocab_size: int | None = None
    max_seq_len: int = 128
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    # Task
    task_name: str = "lm_tiny"
    eval_dataset_id: str | None = None
    resume_from_checkpoint: str | None = None
    # Dataset (older field names, still used by the data loaders)
    dataset_name: str = "wikitext-103-v1"
    dataset_split: str = "train"
    dataset_subset: str | None = None
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    # Checkpointing
    checkpoint_dir: str = "checkpoints"
    save_every_n_epochs: int = 5
    keep_best_only: bool = False
    # Experiment tracking
    use_wandb: bool = False
    wandb_project: str = "transformer-builder-training"
    wandb_entity: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "pytest-modeltiers"
    tensorboard_dir: str | None = None
    run_name: str | None = None
    # Export
    export_bundle: bool = False
    export_formats: list[str] = field(default_factory=_default_export_formats)
    export_dir: str = "exports"
    # Meta
    created_at: str = field(default_factory=_utc_now_iso)
    config_version: str = "1.0"
    notes: str = ""

    def __setattr__(self, name: str, value: Any) -> None:
        value = normalise_value(name, value)
        object.__setattr__(self, name, value)
        if name in _ACCUMULATION_FIELDS and self.__dict__.get("_initialised", False):
            other = _ACCUMULATION_FIELDS[1 - _ACCUMULATION_FIELDS.index(name)]
            object.__setattr__(self, other, value)

    def __post_init__(self) -> None:
        steps, batches = self.gradient_accumulation_steps, self.accumulate_grad_batches
        if _valid_count(steps) and _valid_count(batches) and steps != batches:
            if batches == 1:
                object.__setattr__(self, "accumulate_grad_batches", steps)
            elif steps == 1:
                object.__setattr__(self, "gradient_accumulation_steps", batches)
        object.__setattr__(self, "_initialised", True)
        self.validate()

    # -- validation -------------------------------------------------------------------------

    def validation_errors(self) -> list[str]:
        """Every problem with this config, one message per problem (empty when valid)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return collect_errors(values)

    def validate(self) -> None:
        """Raise ``ConfigError`` listing every invalid field; return None when all are valid."""
        errors = self.validation_errors()
        if errors:
            noun = "problem" if len(errors) == 1 else "problems"
            raise ConfigError(bulleted(f"invalid TrainingConfig ({len(errors)} {noun}):", errors))

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict in field order (lists are copies)."""
        result: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            result[f.name] = list(value) if isinstance(value, list) else value
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Build and validate a config; an unknown key names the closest valid field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
        unknown = [key for key in data if key not in FIELD_NAMES]
        if unknown:
            details = ", ".join(f"{key!r}{did_you_mean(str(key), FIELD_NAMES)}" for key in unknown)
            raise ConfigError(f"unknown TrainingConfig field(s): {details}")
        return cls(**dict(data))

    def to_json(self, *, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Validate, then write the config as JSON atomically; return the path written.

        Without ``path`` the file is ``config_YYYYmmdd_HHMMSS.json`` (UTC) in the current
        directory, with a ``_2``, ``_3``... suffix rather than overwriting an existing file.
        """
        self.validate()
        if path is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
            target = Path.cwd() / f"config_{stamp}.json"
            counter = 1
            while target.exists():
                counter += 1
                target = Path.cwd() / f"config_{stamp}_{counter}.json"
        else:
            target = Path(path)
        return atomic_write_text(target, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingConfig:
        """Read a config saved with ``save``; errors name the file (and line, for bad JSON)."""
        data = read_json_object(path, ConfigError)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc}") from None


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TrainingConfig))


def _strategy_rule(value: Any) -> str | None:
    if value == "dp":
        return (
            "strategy 'dp' (DataParallel) was removed in Lightning 2.0; use 'ddp' "
            "(one process per device) instead"
        )
    return choice_rule("strategy", STRATEGIES)(value)


def _devices_rule(value: Any) -> str | None:
    expected = (
        f"devices must be 'auto', a positive integer up to {LIMITS['devices']} (-1 for all "
        "devices) or a non-empty list of distinct device indices >= 0 "
        f"(got {shown(value)})"
    )
    if value == "auto":
        return None
    if is_int(value):
        return None if 1 <= value <= LIMITS["devices"] or value == -1 else expected
    if isinstance(value, list):
        valid = (is_int(d) and 0 <= d < LIMITS["devices"] for d in value)
        if not value or len(value) > LIMITS["devices"] or not all(valid):
            return expected
        if len(set(value)) != len(value):
            return f"devices lists a device more than once (got {value!r})"
        return None
    return expected


def _export_formats_rule(value: Any) -> str | None:
    options = ", ".join(repr(f) for f in EXPORT_FORMATS)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"export_formats must be a list of formats from {options} (got {value!r})"
    unknown = [v for v in value if v not in EXPORT_FORMATS]
    if unknown:
        hints = "".join(did_you_mean(v, EXPORT_FORMATS) for v in unknown)
        return f"export_formats has unknown format(s) {unknown!r}{hints}; valid: {options}"
    if len(set(value)) != len(value):
        return f"export_formats lists a format more than once (got {value!r})"
    return None


def _created_at_rule(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return None
    example = "'2024-01-31T12:00:00+00:00'"
    return f"created_at must be an ISO 8601 timestamp such as {example} (got {value!r})"


def _seed_rule(value: Any) -> str | None:
    if not is_int(value) or not 0 <= value < 2**32:
        return f"random_seed must be an integer in [0, 2**32 - 1] (got {shown(value)})"
    return None


def _sized(name: str, minimum: int, optional: bool = False) -> Rule:
    """An integer size from ``minimum`` to its bound in ``LIMITS``."""
    return int_rule(name, minimum, optional=optional, maximum=LIMITS[name])


#: One rule per field. The builder uses the same rules for its progressive validation.
FIELD_RULES: dict[str, Rule] = {
    "random_seed": _seed_rule,
    "deterministic": bool_rule("deterministic"),
    "learning_rate": positive_rule("learning_rate"),
    "batch_size": _sized("batch_size", 1),
    "epochs": _sized("epochs", 1),
    "warmup_ratio": range_rule("warmup_ratio", 0, 1),
    "weight_decay": range_rule("weight_decay", 0),
    "max_grad_norm": positive_rule("max_grad_norm"),
    "use_lr_schedule": bool_rule("use_lr_schedule"),
    "lr_scheduler": choice_rule("lr_scheduler", LR_SCHEDULERS),
    "warmup_steps": _sized("warmup_steps", 0, optional=True),
    "min_lr_ratio": range_rule("min_lr_ratio", 0, 1),
    "use_amp": bool_rule("use_amp"),
    "gradient_accumulation_steps": _sized("gradient_accumulation_steps", 1),
    "early_stopping_patience": _sized("early_stopping_patience", 0),
    "validation_split": range_rule("validation_split", 0, 0.5),
    "compile_mode": choice_rule("compile_mode", COMPILE_MODES, optional=True),
    "compile_fullgraph": bool_rule("compile_fullgraph"),
    "compile_dynamic": bool_rule("compile_dynamic"),
    "strategy": _strategy_rule,
    "devices": _devices_rule,
    "num_nodes": _sized("num_nodes", 1),
    "accumulate_grad_batches": _sized("accumulate_grad_batches", 1),
    "precision": choice_rule("precision", PRECISIONS),
    "model_name": str_rule("model_name"),
    "model_type": choice_rule("model_type", MODEL_TYPES),
    "vocab_size": _sized("vocab_size", 1, optional=True),
    "max_seq_len": _sized("max_seq_len", 1),
    "d_model": _sized("d_model", 1),
    "num_layers": _sized("num_layers", 1),
    "num_heads": _sized("num_heads", 1),
    "d_ff": _sized("d_ff", 1),
    "dropout": range_rule("dropout", 0, 1),
    "task_name": str_rule("task_name"),
    "eval_dataset_id": str_rule("eval_dataset_id", optional=True),
    "resume_from_checkpoint": str_rule("resume_from_checkpoint", optional=True),
    "dataset_name": str_rule("dataset_name"),
    "dataset_split": str_rule("dataset_split"),
    "dataset_subset": str_rule("dataset_subset", optional=True),
    "max_train_samples": _sized("max_train_samples", 1, optional=True),
    "max_val_samples": _sized("max_val_samples", 1, optional=True),
    "checkpoint_dir": str_rule("checkpoint_dir"),
    "save_every_n_epochs": _sized("save_every_n_epochs", 1),
    "keep_best_only": bool_rule("keep_best_only"),
    "use_wandb": bool_rule("use_wandb"),
    "wandb_project": str_rule("wandb_project"),
    "wandb_entity": str_rule("wandb_entity", optional=True),
    "mlflow_tracking_uri": str_rule("mlflow_tracking_uri", optional=True),
    "mlflow_experiment": str_rule("mlflow_experiment"),
    "tensorboard_dir": str_rule("tensorboard_dir", optional=True),
    "run_name": str_rule("run_name", optional=True),
    "export_bundle": bool_rule("export_bundle"),
    "export_formats": _export_formats_rule,
    "export_dir": str_rule("export_dir"),
    "created_at": _created_at_rule,
    "config_version": str_rule("config_version"),
    "notes": str_rule("notes", allow_empty=True),
}


def heads_error(d_model: Any, num_heads: Any) -> str | None:
    """The divisibility rule's message; None when it holds or is moot."""
    valid = is_int(d_model) and is_int(num_heads) and d_model >= 1 and num_heads >= 1
    if valid and d_model % num_heads != 0:
        return f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"
    return None


def accumulation_error(steps: Any, batches: Any) -> str | None:
    """The two gradient-accumulation fields must agree (they are one setting)."""
    if _valid_count(steps) and _valid_count(batches) and steps != batches:
        return (
            f"gradient_accumulation_steps ({steps}) and accumulate_grad_batches ({batches}) "
            "must be equal: they are the same setting; set one of them"
        )
    return None


def collect_errors(values: Mapping[str, Any]) -> list[str]:
    """Apply every field rule and the cross-field rules to a full set of field values."""
    errors = [message for name, rule in FIELD_RULES.items() if (message := rule(values[name]))]
    for message in (
        heads_error(values["d_model"], values["num_heads"]),
        accumulation_error(
            values["gradient_accumulation_steps"], values["accumulate_grad_batches"]
        ),
    ):
        if message:
            errors.append(message)
    if values["export_bundle"] is True and values["export_formats"] == []:
        errors.append("export_bundle is true but export_formats is empty: name at least one format")
    return errors


def _as_dict(config: TrainingConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, TrainingConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(f"compare_configs takes TrainingConfig or mappings, got {type(config)!r}")


def compare_configs(
    old: TrainingConfig | Mapping[str, Any], new: TrainingConfig | Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Diff two configs (or config dicts, for example from files of different versions).

    Returns ``{"changed": {key: (old, new)}, "added": {key: new}, "removed": {key: old}}``.
    ``created_at`` and ``run_name`` are skipped: they differ between otherwise identical runs.
    """
    before, after = _as_dict(old), _as_dict(new)
    changed = {
        key: (before[key], after[key])
        for key in before
        if key in after and key not in _DIFF_SKIPPED and before[key] != after[key]
    }
    added = {k: v for k, v in after.items() if k not in before and k not in _DIFF_SKIPPED}
    removed = {k: v for k, v in before.items() if k not in after and k not in _DIFF_SKIPPED}
    return {"changed": changed, "added": added, "removed": removed}


def format_config_diff(diff: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a ``compare_configs`` result as text, one line per difference."""
    lines = [f"~ {key}: {old!r} -> {new!r}" for key, (old, new) in diff["changed"].items()]
    lines += [f"+ {key}: {value!r}" for key, value in diff["added"].items()]
    lines += [f"- {key}: {value!r}" for key, value in diff["removed"].items()]
    return "\n".join(lines) if lines else "no differences"
