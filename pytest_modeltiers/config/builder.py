"""``TrainingConfigBuilder``: a fluent, immutable way to assemble a ``TrainingConfig``.

PYTEST_DONT_REWRITE

Each ``with_*`` method validates what it is given right away and returns a new builder, so a
preset builder can be shared and branched safely; ``build()`` validates the whole config with
the same field rules.
"""

from __future__ import annotations

import enum
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pytest_modeltiers.config._util import bulleted, did_you_mean
from pytest_modeltiers.config.training import (
    FIELD_NAMES,
    FIELD_RULES,
    TrainingConfig,
    accumulation_error,
    heads_error,
    normalise_value,
)
from pytest_modeltiers.errors import ConfigError, ModelTiersWarning

__all__ = ["PRESET_NAMES", "TrainingConfigBuilder"]


class _Unset(enum.Enum):
    """Marks a ``with_*`` parameter that was not given (None is a meaningful value)."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the user's line, not at this module."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


_ACCUMULATION: tuple[str, str] = ("gradient_accumulation_steps", "accumulate_grad_batches")

#: Values every preset sets.
_PRESET_COMMON: dict[str, Any] = {
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "use_amp": True,
    "random_seed": 42,
    "vocab_size": 50257,
    "validation_split": 0.1,
}

_PRESETS: dict[str, dict[str, Any]] = {
    "quick_prototype": {
        "model_name": "quick-prototype",
        "d_model": 512,
        "num_layers": 6,
        "num_heads": 8,
        "d_ff": 2048,
        "max_seq_len": 128,
        "learning_rate": 5e-4,
        "batch_size": 8,
        "epochs": 3,
        "warmup_ratio": 0.05,
        "early_stopping_patience": 2,
        "gradient_accumulation_steps": 1,
        "accumulate_grad_batches": 1,
        "compile_mode": None,
        "strategy": "auto",
        "devices": "auto",
        "save_every_n_epochs": 1,
        "keep_best_only": True,
        "deterministic": False,
        "wandb_project": "transformer-builder-training",
    },
    "baseline": {
        "model_name": "baseline-transformer",
        "d_model": 768,
        "num_layers": 12,
        "num_heads": 12,
        "d_ff": 3072,
        "max_seq_len": 128,
        "learning_rate": 5e-5,
        "batch_size": 4,
        "epochs": 10,
        "warmup_ratio": 0.1,
        "early_stopping_patience": 5,
        "gradient_accumulation_steps": 1,
        "accumulate_grad_batches": 1,
        "compile_mode": "default",
        "compile_dynamic": True,
        "strategy": "auto",
        "devices": "auto",
        "precision": "bf16-mixed",
        "save_every_n_epochs": 5,
        "keep_best_only": False,
        "deterministic": False,
        "wandb_project": "transformer-builder-training",
    },
    "production": {
        "model_name": "production-transformer",
        "d_model": 768,
        "num_layers": 12,
        "num_heads": 12,
        "d_ff": 3072,
        "max_seq_len": 256,
        "learning_rate": 3e-5,
        "batch_size": 8,
        "epochs": 20,
        "warmup_ratio": 0.1,
        "early_stopping_patience": 10,
        "gradient_accumulation_steps": 4,
        "accumulate_grad_batches": 4,
        "compile_mode": "reduce-overhead",
        "compile_dynamic": True,
        "strategy": "auto",
        "devices": "auto",
        "precision": "bf16-mixed",
        "save_every_n_epochs": 2,
        "keep_best_only": False,
        "export_bundle": True,
        "export_formats": ["onnx", "torchscript"],
        "export_dir": "exports",
        "wandb_project": "transformer-builder-production",
        "deterministic": True,
    },
    "distributed": {
        "model_name": "distributed-transformer",
        "d_model": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "d_ff": 4096,
        "max_seq_len": 256,
        "learning_rate": 1e-4,
        "batch_size": 8,
        "epochs": 15,
        "warmup_ratio": 0.1,
        "early_stopping_patience": 8,
        "gradient_accumulation_steps": 2,
        "accumulate_grad_batches": 2,
        "compile_mode": "default",
        "strategy": "ddp",
        "devices": 4,
        "num_nodes": 1,
        "precision": "bf16-mixed",
        "save_every_n_epochs": 3,
        "keep_best_only": False,
        "wandb_project": "transformer-builder-distributed",
    },
    "low_memory": {
        "model_name": "low-memory-transformer",
        "d_model": 384,
        "num_layers": 6,
        "num_heads": 6,
        "d_ff": 1536,
        "max_seq_len": 128,
        "learning_rate": 5e-5,
        "batch_size": 2,
        "epochs": 10,
        "warmup_ratio": 0.1,
        "early_stopping_patience": 5,
        "gradient_accumulation_steps": 8,
        "accumulate_grad_batches": 8,
        "compile_mode": None,
        "strategy": "auto",
        "devices": 1,
        "precision": "16-mixed",
        "save_every_n_epochs": 5,
        "keep_best_only": True,
        "max_train_samples": 10000,
        "max_val_samples": 1000,
        "wandb_project": "transformer-builder-training",
    },
}

#: The preset classmethods, in the order they are documented.
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


class TrainingConfigBuilder:
    """Immutable fluent builder for ``TrainingConfig``.

    ``TrainingConfigBuilder(**fields)`` starts from explicit field values; the presets start
    from their documented values. Fields never set keep the ``TrainingConfig`` defaults.
    """

    __slots__ = ("_values",)

    _values: dict[str, Any]

    def __init__(self, **fields: Any) -> None:
        unknown = [key for key in fields if key not in FIELD_NAMES]
        if unknown:
            details = ", ".join(f"{key!r}{did_you_mean(key, FIELD_NAMES)}" for key in unknown)
            raise ConfigError(f"TrainingConfigBuilder() got unknown field(s): {details}")
        self._values = {}
        self._values = self._updated(fields)

    # -- internals --------------------------------------------------------------------------

    def _updated(self, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``updates`` against the current values; return the merged values."""
        changes = {key: normalise_value(key, value) for key, value in updates.items()}
        errors = [message for key, value in changes.items() if (message := FIELD_RULES[key](value))]
        given = [key for key in _ACCUMULATION if key in changes]
        if len(given) == 2:
            message = accumulation_error(changes[given[0]], changes[given[1]])
            if message:
                errors.append(message)
        elif len(given) == 1:
            other = _ACCUMULATION[1 - _ACCUMULATION.index(given[0])]
            changes[other] = changes[given[0]]
        merged = {**self._values, **changes}
        if ("d_model" in changes or "num_heads" in changes) and not errors:
            message = heads_error(merged.get("d_model"), merged.get("num_heads"))
            if message:
                errors.append(message)
        if errors:
            if len(errors) == 1:
                raise ConfigError(errors[0])
            raise ConfigError(bulleted(f"{len(errors)} invalid settings:", errors))
        self._warn(changes, merged)
        return merged

    @staticmethod
    def _warn(changes: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
        if "use_amp" in changes or "precision" in changes:
            use_amp = merged.get("use_amp", True)
            precision = merged.get("precision", "bf16-mixed")
            if use_amp is True and precision in ("32-true", "64-true"):
                warnings.warn(
                    f"use_amp=True has no effect with precision={precision!r}: Lightning's "
                    "precision decides mixed precision. Use precision='bf16-mixed' or "
                    "'16-mixed' for AMP, or use_amp=False for full precision.",
                    ModelTiersWarning,
                    stacklevel=_user_stacklevel(),
                )
        resume = changes.get("resume_from_checkpoint")
        if isinstance(resume, str) and not Path(resume).exists():
            warnings.warn(
                f"resume_from_checkpoint {resume!r} does not exist (yet); training will fail "
                "to resume unless it is created first",
                ModelTiersWarning,
                stacklevel=_user_stacklevel(),
            )

    def _derive(self, updates: Mapping[str, Any]) -> TrainingConfigBuilder:
        new = object.__new__(type(self))
        new._values = self._updated(updates)
        return new

    def _apply(self, method: str, arguments: Mapping[str, Any]) -> TrainingConfigBuilder:
        """Handle one ``with_*`` call given its ``locals()``."""
        unknown: Mapping[str, Any] = arguments["unknown"]
        params = {k: v for k, v in arguments.items() if k not in ("self", "unknown")}
        if unknown:
            details = ", ".join(f"{key!r}{did_you_mean(key, params)}" for key in unknown)
            raise ConfigError(
                f"{method}() got unexpected keyword argument(s) {details}; "
                f"its parameters are: {', '.join(params)}"
            )
        return self._derive({k: v for k, v in params.items() if v is not UNSET})

    # -- public API -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fields set so far (a copy); unset fields take the ``TrainingConfig`` defaults."""
        return {key: list(v) if isinstance(v, list) else v for key, v in self._values.items()}

    def build(self) -> TrainingConfig:
        """Construct the ``TrainingConfig``, validating every field together."""
        return TrainingConfig(**self.to_dict())

    def __repr__(self) -> str:
        items = ", ".join(f"{key}={value!r}" for key, value in self._values.items())
        return f"TrainingConfigBuilder({items})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainingConfigBuilder):
            return NotImplemented
        return self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def with_model(
        self,
        *,
        model_name: str | _Unset = UNSET,
        model_type: str | _Unset = UNSET,
        vocab_size: int | _Unset | None = UNSET,
        max_seq_len: int | _Unset = UNSET,
        d_model: int | _Unset = UNSET,
        num_layers: int | _Unset = UNSET,
        num_heads: int | _Unset = UNSET,
        d_ff: int | _Unset = UNSET,
        dropout: float | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Architecture. ``vocab_size=None`` means "read it from the model"."""
        return self._apply("with_model", locals())

    def with_training(
        self,
        *,
        learning_rate: float | _Unset = UNSET,
        batch_size: int | _Unset = UNSET,
        epochs: int | _Unset = UNSET,
        validation_split: float | _Unset = UNSET,
        early_stopping_patience: int | _Unset = UNSET,
        max_train_samples: int | _Unset | None = UNSET,
        max_val_samples: int | _Unset | None = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Core hyperparameters and sample limits."""
        return self._apply("with_training", locals())

    def with_optimizer(
        self,
        *,
        weight_decay: float | _Unset = UNSET,
        max_grad_norm: float | _Unset = UNSET,
        warmup_ratio: float | _Unset = UNSET,
        gradient_accumulation_steps: int | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Optimizer settings; gradient accumulation also sets ``accumulate_grad_batches``."""
        return self._apply("with_optimizer", locals())

    def with_scheduler(
        self,
        *,
        use_lr_schedule: bool | _Unset = UNSET,
        lr_scheduler: str | _Unset = UNSET,
        warmup_ratio: float | _Unset = UNSET,
        warmup_steps: int | _Unset | None = UNSET,
        min_lr_ratio: float | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Learning-rate schedule; ``warmup_steps``, when set, overrides ``warmup_ratio``."""
        return self._apply("with_scheduler", locals())

    def with_hardware(
        self,
        *,
        use_amp: bool | _Unset = UNSET,
        compile_mode: str | _Unset | None = UNSET,
        compile_fullgraph: bool | _Unset = UNSET,
        compile_dynamic: bool | _Unset = UNSET,
        strategy: str | _Unset = UNSET,
        devices: int | str | list[int] | _Unset = UNSET,
        num_nodes: int | _Unset = UNSET,
        precision: str | int | _Unset = UNSET,
        accumulate_grad_batches: int | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Devices, distribution, precision and ``torch.compile`` (None turns it off).

        Warns (``ModelTiersWarning``) when ``use_amp`` is on with a full precision.
        """
        return self._apply("with_hardware", locals())

    def with_logging(
        self,
        *,
        use_wandb: bool | _Unset = UNSET,
        wandb_project: str | _Unset = UNSET,
        wandb_entity: str | _Unset | None = UNSET,
        mlflow_tracking_uri: str | _Unset | None = UNSET,
        mlflow_experiment: str | _Unset = UNSET,
        tensorboard_dir: str | _Unset | None = UNSET,
        run_name: str | _Unset | None = UNSET,
        notes: str | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Experiment tracking (W&B, MLflow, TensorBoard; CSV always) and run naming."""
        return self._apply("with_logging", locals())

    def with_checkpointing(
        self,
        *,
        checkpoint_dir: str | _Unset = UNSET,
        save_every_n_epochs: int | _Unset = UNSET,
        keep_best_only: bool | _Unset = UNSET,
        resume_from_checkpoint: str | _Unset | None = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Checkpoints; warns (``ModelTiersWarning``) if the resume path does not exist."""
        return self._apply("with_checkpointing", locals())

    def with_export(
        self,
        *,
        export_bundle: bool | _Unset = UNSET,
        export_formats: list[str] | _Unset = UNSET,
        export_dir: str | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Export after training (formats: onnx, torch_export, torchscript, pytorch)."""
        return self._apply("with_export", locals())

    def with_reproducibility(
        self,
        *,
        random_seed: int | _Unset = UNSET,
        deterministic: bool | _Unset = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Seed and deterministic algorithms."""
        return self._apply("with_reproducibility", locals())

    def with_dataset(
        self,
        *,
        dataset_name: str | _Unset = UNSET,
        dataset_split: str | _Unset = UNSET,
        dataset_subset: str | _Unset | None = UNSET,
        task_name: str | _Unset = UNSET,
        eval_dataset_id: str | _Unset | None = UNSET,
        **unknown: Any,
    ) -> TrainingConfigBuilder:
        """Dataset and task selection."""
        return self._apply("with_dataset", locals())

    # -- presets ----------------------------------------------------------------------------

    @classmethod
    def _preset(cls, name: str) -> TrainingConfigBuilder:
        return cls(**{**_PRESET_COMMON, **_PRESETS[name]})

    @classmethod
    def quick_prototype(cls) -> TrainingConfigBuilder:
        """Fast iteration and debugging: 6 layers, d_model 512, 3 epochs."""
        return cls._preset("quick_prototype")

    @classmethod
    def baseline(cls) -> TrainingConfigBuilder:
        """Balanced defaults: 12 layers, d_model 768, 10 epochs, compiled."""
        return cls._preset("baseline")

    @classmethod
    def production(cls) -> TrainingConfigBuilder:
        """Reproducible final runs: 20 epochs, deterministic, export bundle on."""
        return cls._preset("production")

    @classmethod
    def distributed(cls) -> TrainingConfigBuilder:
        """Multi-GPU DDP on 4 devices: 24 layers, d_model 1024."""
        return cls._preset("distributed")

    @classmethod
    def low_memory(cls) -> TrainingConfigBuilder:
        """Small GPUs: batch 2 with 8x gradient accumulation, 16-bit mixed precision."""
        return cls._preset("low_memory")
