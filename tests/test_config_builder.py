"""Tests of ``TrainingConfigBuilder``: presets, progressive validation, immutability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.config.builder import PRESET_NAMES, TrainingConfigBuilder
from pytest_modeltiers.config.training import TrainingConfig
from pytest_modeltiers.errors import ConfigError, ModelTiersWarning

WITH_METHODS = [
    "with_model",
    "with_training",
    "with_optimizer",
    "with_scheduler",
    "with_hardware",
    "with_logging",
    "with_checkpointing",
    "with_export",
    "with_reproducibility",
    "with_dataset",
]


def defaults() -> dict[str, Any]:
    data = TrainingConfig().to_dict()
    del data["created_at"]
    return data


def built(builder: TrainingConfigBuilder) -> dict[str, Any]:
    data = builder.build().to_dict()
    del data["created_at"]
    return data


# -- presets: every value pinned ------------------------------------------------------------

PRESET_COMMON: dict[str, Any] = {
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "use_amp": True,
    "random_seed": 42,
    "vocab_size": 50257,
    "validation_split": 0.1,
}

EXPECTED_PRESETS: dict[str, dict[str, Any]] = {
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
        "precision": "bf16-mixed",
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
        "deterministic": False,
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
        "deterministic": False,
        "wandb_project": "transformer-builder-training",
    },
}


def test_preset_names() -> None:
    assert PRESET_NAMES == (
        "quick_prototype",
        "baseline",
        "production",
        "distributed",
        "low_memory",
    )


@pytest.mark.parametrize("name", list(EXPECTED_PRESETS))
def test_preset_values_are_pinned(name: str) -> None:
    builder = getattr(TrainingConfigBuilder, name)()
    assert built(builder) == {**defaults(), **PRESET_COMMON, **EXPECTED_PRESETS[name]}


@pytest.mark.parametrize("name", list(EXPECTED_PRESETS))
def test_presets_are_fresh_each_call(name: str) -> None:
    first = getattr(TrainingConfigBuilder, name)()
    config = first.build()
    config.export_formats.append("pytorch")
    assert (
        getattr(TrainingConfigBuilder, name)().build().export_formats
        == first.build().export_formats
    )
    assert first.build().export_formats != config.export_formats


# -- the ten with_* methods ------------------------------------------------------------------


def test_there_are_exactly_ten_with_methods() -> None:
    names = sorted(n for n in dir(TrainingConfigBuilder) if n.startswith("with_"))
    assert names == sorted(WITH_METHODS)


SETTERS: list[tuple[str, dict[str, Any]]] = [
    (
        "with_model",
        {
            "model_name": "m",
            "model_type": "bert",
            "vocab_size": 1000,
            "max_seq_len": 64,
            "d_model": 256,
            "num_layers": 4,
            "num_heads": 4,
            "d_ff": 1024,
            "dropout": 0.0,
        },
    ),
    (
        "with_training",
        {
            "learning_rate": 1e-3,
            "batch_size": 16,
            "epochs": 2,
            "validation_split": 0.2,
            "early_stopping_patience": 0,
            "max_train_samples": 100,
            "max_val_samples": 10,
        },
    ),
    (
        "with_optimizer",
        {
            "weight_decay": 0.0,
            "max_grad_norm": 0.5,
            "warmup_ratio": 0.2,
            "gradient_accumulation_steps": 3,
        },
    ),
    (
        "with_scheduler",
        {
            "use_lr_schedule": False,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.0,
            "warmup_steps": 100,
            "min_lr_ratio": 0.1,
        },
    ),
    (
        "with_hardware",
        {
            "use_amp": False,
            "compile_mode": "max-autotune",
            "compile_fullgraph": True,
            "compile_dynamic": False,
            "strategy": "ddp",
            "devices": [0, 1],
            "num_nodes": 2,
            "precision": "16-mixed",
            "accumulate_grad_batches": 5,
        },
    ),
    (
        "with_logging",
        {
            "use_wandb": True,
            "wandb_project": "p",
            "wandb_entity": "e",
            "run_name": "r",
            "notes": "n",
        },
    ),
    (
        "with_checkpointing",
        {
            "checkpoint_dir": "ck",
            "save_every_n_epochs": 2,
            "keep_best_only": True,
            "resume_from_checkpoint": None,
        },
    ),
    (
        "with_export",
        {"export_bundle": True, "export_formats": ["torch_export"], "export_dir": "ex"},
    ),
    ("with_reproducibility", {"random_seed": 7, "deterministic": True}),
    (
        "with_dataset",
        {
            "dataset_name": "tiny",
            "dataset_split": "validation",
            "dataset_subset": "s",
            "task_name": "cls_tiny",
            "eval_dataset_id": "cls_tiny_v2",
        },
    ),
]


def test_setters_cover_every_method() -> None:
    assert [name for name, _ in SETTERS] == WITH_METHODS


@pytest.mark.parametrize(("method", "kwargs"), SETTERS, ids=[s[0] for s in SETTERS])
def test_with_method_sets_its_fields_and_leaves_original_unchanged(
    method: str, kwargs: dict[str, Any]
) -> None:
    original = TrainingConfigBuilder()
    derived = getattr(original, method)(**kwargs)
    assert derived is not original
    config = derived.build()
    for key, value in kwargs.items():
        assert getattr(config, key) == value, key
    assert original.to_dict() == {}
    assert built(original) == defaults()


BAD_VALUES: list[tuple[str, str, Any]] = [
    ("with_model", "dropout", 1.5),
    ("with_model", "model_type", "rnn"),
    ("with_model", "vocab_size", 0),
    ("with_training", "batch_size", 0),
    ("with_training", "validation_split", 0.9),
    ("with_training", "max_train_samples", 0),
    ("with_optimizer", "weight_decay", -1.0),
    ("with_optimizer", "max_grad_norm", 0),
    ("with_optimizer", "gradient_accumulation_steps", 0),
    ("with_scheduler", "lr_scheduler", "cyclic"),
    ("with_scheduler", "warmup_steps", -5),
    ("with_scheduler", "min_lr_ratio", 2.0),
    ("with_hardware", "compile_mode", "turbo"),
    ("with_hardware", "strategy", "dp"),
    ("with_hardware", "devices", 0),
    ("with_hardware", "num_nodes", 0),
    ("with_hardware", "precision", "fp8"),
    ("with_logging", "wandb_project", ""),
    ("with_logging", "use_wandb", "yes"),
    ("with_checkpointing", "save_every_n_epochs", 0),
    ("with_checkpointing", "checkpoint_dir", ""),
    ("with_export", "export_formats", ["onnx", "coreml"]),
    ("with_export", "export_bundle", "no"),
    ("with_reproducibility", "random_seed", -1),
    ("with_reproducibility", "deterministic", 1),
    ("with_dataset", "task_name", ""),
    ("with_dataset", "dataset_split", None),
]


@pytest.mark.parametrize(("method", "key", "bad"), BAD_VALUES)
def test_with_method_rejects_bad_value_immediately(method: str, key: str, bad: Any) -> None:
    builder = TrainingConfigBuilder.baseline()
    with pytest.raises(ConfigError) as info:
        getattr(builder, method)(**{key: bad})
    assert str(info.value).startswith(key)


def test_every_method_has_a_bad_value_case() -> None:
    assert {case[0] for case in BAD_VALUES} == set(WITH_METHODS)


def test_guide_progressive_messages_are_exact() -> None:
    with pytest.raises(ValueError) as heads:
        TrainingConfigBuilder().with_model(d_model=768, num_heads=5)
    assert str(heads.value) == "d_model (768) must be divisible by num_heads (5)"
    with pytest.raises(ConfigError) as lr:
        TrainingConfigBuilder().with_training(learning_rate=-0.001)
    assert str(lr.value).startswith("learning_rate must be positive")


def test_heads_are_checked_against_values_set_earlier() -> None:
    with pytest.raises(
        ConfigError, match=r"^d_model \(768\) must be divisible by num_heads \(5\)$"
    ):
        TrainingConfigBuilder.baseline().with_model(num_heads=5)
    # With nothing set before, the architecture may be given over several calls.
    builder = TrainingConfigBuilder().with_model(d_model=512).with_model(num_heads=8)
    assert (builder.build().d_model, builder.build().num_heads) == (512, 8)


def test_several_bad_values_are_listed_together() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_training(batch_size=0, epochs=0)
    message = str(info.value)
    assert message.startswith("2 invalid settings:")
    assert "- batch_size" in message and "- epochs" in message


@pytest.mark.parametrize(
    ("method", "typo", "suggestion"),
    [
        ("with_model", "dmodel", "d_model"),
        ("with_training", "learning_rat", "learning_rate"),
        ("with_optimizer", "weight_decya", "weight_decay"),
        ("with_scheduler", "lr_schedule", "lr_scheduler"),
        ("with_hardware", "device", "devices"),
        ("with_logging", "wandb_projcet", "wandb_project"),
        ("with_checkpointing", "checkpoint_dri", "checkpoint_dir"),
        ("with_export", "export_format", "export_formats"),
        ("with_reproducibility", "random_sed", "random_seed"),
        ("with_dataset", "dataset_nam", "dataset_name"),
    ],
)
def test_unknown_keyword_names_closest_parameter(method: str, typo: str, suggestion: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"{method}\(\) got unexpected keyword argument\(s\) "
        rf"'{typo}' \(did you mean '{suggestion}'\?\)",
    ):
        getattr(TrainingConfigBuilder(), method)(**{typo: 1})


def test_constructor_unknown_field_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainingConfigBuilder(epoch=3)


def test_constructor_validates_values() -> None:
    with pytest.raises(ConfigError, match=r"^epochs must be"):
        TrainingConfigBuilder(epochs=0)


# -- gradient accumulation and other upstream bugs ------------------------------------------


def test_optimizer_accumulation_sets_both_fields() -> None:
    config = (
        TrainingConfigBuilder.distributed().with_optimizer(gradient_accumulation_steps=4).build()
    )
    assert config.gradient_accumulation_steps == config.accumulate_grad_batches == 4


def test_hardware_accumulation_sets_both_fields() -> None:
    config = TrainingConfigBuilder.low_memory().with_hardware(accumulate_grad_batches=3).build()
    assert config.gradient_accumulation_steps == config.accumulate_grad_batches == 3


def test_constructor_with_disagreeing_accumulation_is_an_error() -> None:
    with pytest.raises(ConfigError, match="must be equal"):
        TrainingConfigBuilder(gradient_accumulation_steps=2, accumulate_grad_batches=3)


def test_compile_mode_can_be_turned_off() -> None:
    assert (
        TrainingConfigBuilder.baseline().with_hardware(compile_mode=None).build().compile_mode
        is None
    )


def test_with_scheduler_builds() -> None:
    config = (
        TrainingConfigBuilder()
        .with_scheduler(use_lr_schedule=True, lr_scheduler="constant_with_warmup")
        .build()
    )
    assert (config.use_lr_schedule, config.lr_scheduler) == (True, "constant_with_warmup")


def test_aliases_are_accepted_by_the_builder() -> None:
    config = TrainingConfigBuilder().with_hardware(strategy="fsdp_native", precision="bf16").build()
    assert (config.strategy, config.precision) == ("fsdp", "bf16-mixed")


def test_export_formats_tuple_is_accepted() -> None:
    config = TrainingConfigBuilder().with_export(export_formats=("onnx",)).build()  # type: ignore[arg-type]
    assert config.export_formats == ["onnx"]


# -- warnings ---------------------------------------------------------------------------------


def test_amp_with_full_precision_warns_at_the_callers_line() -> None:
    with pytest.warns(ModelTiersWarning, match="use_amp=True has no effect") as record:
        TrainingConfigBuilder().with_hardware(precision="32")
    assert record[0].filename == __file__


def test_amp_off_with_full_precision_does_not_warn() -> None:
    TrainingConfigBuilder().with_hardware(
        use_amp=False, precision="32-true"
    )  # filterwarnings=error


def test_missing_resume_checkpoint_warns(tmp_path: Path) -> None:
    with pytest.warns(ModelTiersWarning, match="does not exist"):
        TrainingConfigBuilder().with_checkpointing(resume_from_checkpoint=str(tmp_path / "x.ckpt"))
    existing = tmp_path / "last.ckpt"
    existing.write_bytes(b"")
    config = (
        TrainingConfigBuilder().with_checkpointing(resume_from_checkpoint=str(existing)).build()
    )
    assert config.resume_from_checkpoint == str(existing)


# -- the guide's own examples ----------------------------------------------------------------


def test_guide_customisation_examples_build() -> None:
    extended = (
        TrainingConfigBuilder.baseline()
        .with_training(epochs=30, batch_size=8)
        .with_optimizer(gradient_accumulation_steps=4)
        .with_logging(run_name="extended-baseline-v1", notes="Extended training")
        .build()
    )
    assert (extended.epochs, extended.batch_size, extended.accumulate_grad_batches) == (30, 8, 4)
    tight = (
        TrainingConfigBuilder.low_memory()
        .with_training(batch_size=1, max_train_samples=5000)
        .with_optimizer(gradient_accumulation_steps=16)
        .with_model(max_seq_len=64)
        .build()
    )
    assert (tight.batch_size, tight.accumulate_grad_batches, tight.max_seq_len) == (1, 16, 64)
    multi = (
        TrainingConfigBuilder.distributed()
        .with_hardware(devices=8, strategy="ddp")
        .with_model(d_model=1024, num_layers=24)
        .with_optimizer(gradient_accumulation_steps=4)
        .build()
    )
    assert (multi.devices, multi.gradient_accumulation_steps) == (8, 4)


def test_guide_from_scratch_example_builds() -> None:
    config = (
        TrainingConfigBuilder()
        .with_model(
            model_name="custom-gpt",
            model_type="gpt",
            d_model=512,
            num_layers=6,
            num_heads=8,
            vocab_size=50257,
        )
        .with_training(
            learning_rate=1e-4,
            batch_size=16,
            epochs=20,
            validation_split=0.1,
            max_train_samples=50000,
        )
        .with_optimizer(
            weight_decay=0.01, max_grad_norm=1.0, warmup_ratio=0.1, gradient_accumulation_steps=2
        )
        .with_hardware(use_amp=True, compile_mode="default", devices=1, precision="bf16-mixed")
        .with_logging(
            wandb_project="transformer-experiments", run_name="custom-config-v1", notes="Testing"
        )
        .with_checkpointing(
            checkpoint_dir="./checkpoints", save_every_n_epochs=2, keep_best_only=True
        )
        .with_reproducibility(random_seed=42, deterministic=False)
        .build()
    )
    assert isinstance(config, TrainingConfig)
    assert (config.d_model, config.learning_rate, config.accumulate_grad_batches) == (512, 1e-4, 2)


def test_repr_and_equality() -> None:
    first = TrainingConfigBuilder().with_training(epochs=2)
    assert repr(first) == "TrainingConfigBuilder(epochs=2)"
    assert first == TrainingConfigBuilder(epochs=2)
    assert first != TrainingConfigBuilder(epochs=3)
