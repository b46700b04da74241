"""Tests of ``TrainingConfig``: defaults, every validation rule, serialisation, diffs."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_modeltiers.config.training import (
    COMPILE_MODES,
    EXPORT_FORMATS,
    FIELD_NAMES,
    FIELD_RULES,
    LR_SCHEDULERS,
    MODEL_TYPES,
    TrainingConfig,
    compare_configs,
    format_config_diff,
)
from pytest_modeltiers.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "configs"

EXPECTED_DEFAULTS: dict[str, Any] = {
    "random_seed": 42,
    "deterministic": False,
    "learning_rate": 5e-5,
    "batch_size": 4,
    "epochs": 10,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "use_lr_schedule": True,
    "lr_scheduler": "linear",
    "warmup_steps": None,
    "min_lr_ratio": 0.0,
    "use_amp": True,
    "gradient_accumulation_steps": 1,
    "early_stopping_patience": 5,
    "validation_split": 0.1,
    "compile_mode": None,
    "compile_fullgraph": False,
    "compile_dynamic": True,
    "strategy": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "accumulate_grad_batches": 1,
    "precision": "bf16-mixed",
    "model_name": "custom-transformer",
    "model_type": "gpt",
    "vocab_size": None,
    "max_seq_len": 128,
    "d_model": 768,
    "num_layers": 12,
    "num_heads": 12,
    "d_ff": 3072,
    "dropout": 0.1,
    "task_name": "lm_tiny",
    "eval_dataset_id": None,
    "resume_from_checkpoint": None,
    "dataset_name": "wikitext-103-v1",
    "dataset_split": "train",
    "dataset_subset": None,
    "max_train_samples": None,
    "max_val_samples": None,
    "checkpoint_dir": "checkpoints",
    "save_every_n_epochs": 5,
    "keep_best_only": False,
    "use_wandb": False,
    "wandb_project": "transformer-builder-training",
    "wandb_entity": None,
    "mlflow_tracking_uri": None,
    "mlflow_experiment": "pytest-modeltiers",
    "tensorboard_dir": None,
    "run_name": None,
    "export_bundle": False,
    "export_formats": ["onnx", "torch_export", "pytorch"],
    "export_dir": "exports",
    "config_version": "1.0",
    "notes": "",
}


def test_defaults_are_pinned() -> None:
    data = TrainingConfig().to_dict()
    created_at = data.pop("created_at")
    assert data == EXPECTED_DEFAULTS
    parsed = datetime.fromisoformat(created_at)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_default_lists_are_not_shared() -> None:
    first, second = TrainingConfig(), TrainingConfig()
    first.export_formats.append("torchscript")
    assert second.export_formats == ["onnx", "torch_export", "pytorch"]


# -- every field rule: a bad value is rejected naming the field, a good value passes ---------

RULE_CASES: list[tuple[str, Any, Any]] = [
    ("random_seed", -1, 0),
    ("random_seed", 2**32, 2**32 - 1),
    ("random_seed", True, 7),
    ("deterministic", "true", True),
    ("learning_rate", 0, 1e-3),
    ("learning_rate", float("nan"), 1),
    ("learning_rate", "1e-3", 0.5),
    ("batch_size", 0, 1),
    ("batch_size", 2.0, 2),
    ("batch_size", True, 3),
    ("epochs", 0, 1),
    ("warmup_ratio", 1.5, 1.0),
    ("warmup_ratio", -0.1, 0.0),
    ("weight_decay", -0.01, 0.0),
    ("max_grad_norm", 0, 0.5),
    ("use_lr_schedule", 1, False),
    ("lr_scheduler", "cosin", "cosine"),
    ("warmup_steps", -1, 0),
    ("warmup_steps", 1.5, None),
    ("min_lr_ratio", 1.1, 0.1),
    ("use_amp", None, False),
    ("gradient_accumulation_steps", 0, 2),
    ("early_stopping_patience", -1, 0),
    ("validation_split", 0.6, 0.5),
    ("compile_mode", "fast", None),
    ("compile_mode", "", "max-autotune"),
    ("compile_fullgraph", "no", True),
    ("compile_dynamic", 0, False),
    ("strategy", None, "ddp"),
    ("strategy", "deepspeed", "ddp_spawn"),
    ("strategy", "dp", "fsdp"),
    ("devices", 0, 1),
    ("devices", [], [0, 1]),
    ("devices", [0, 0], [1]),
    ("devices", "gpu", "auto"),
    ("devices", None, -1),
    ("devices", "2", 2),
    ("num_nodes", 0, 2),
    ("accumulate_grad_batches", 0, 1),
    ("precision", "fp8", "16-true"),
    ("precision", 8, "bf16-true"),
    ("model_name", "", "m"),
    ("model_type", "gtp", "bert"),
    ("vocab_size", 0, None),
    ("vocab_size", "50257", 50257),
    ("max_seq_len", 0, 1),
    ("d_model", 0, 384),
    ("num_layers", 0, 1),
    ("num_heads", 0, 8),
    ("d_ff", 0, 1),
    ("dropout", 1.5, 0.0),
    ("task_name", "", "cls_tiny"),
    ("eval_dataset_id", "", "x_v1"),
    ("resume_from_checkpoint", 3, "ckpt/last.ckpt"),
    ("dataset_name", None, "wikitext-2"),
    ("dataset_split", "", "validation"),
    ("dataset_subset", 1, "sub"),
    ("max_train_samples", 0, 10),
    ("max_val_samples", 0, None),
    ("checkpoint_dir", "", "ckpts"),
    ("save_every_n_epochs", 0, 1),
    ("keep_best_only", "False", True),
    ("use_wandb", "yes", True),
    ("wandb_project", "", "p"),
    ("wandb_entity", 5, "team"),
    ("mlflow_tracking_uri", "", "file:///tmp/mlruns"),
    ("mlflow_experiment", None, "exp"),
    ("tensorboard_dir", 3, "tb"),
    ("run_name", 5, "run-1"),
    ("export_bundle", 1, True),
    ("export_formats", ["tflite"], ["torchscript"]),
    ("export_formats", "onnx", []),
    ("export_formats", ["onnx", "onnx"], ["onnx"]),
    ("export_dir", "", "out"),
    ("created_at", "yesterday", "2024-05-01T10:20:30"),
    ("created_at", None, "2024-05-01T10:20:30Z"),
    ("config_version", "", "2.0"),
    ("notes", None, ""),
]


def test_rule_cases_cover_every_field() -> None:
    assert set(FIELD_RULES) == set(FIELD_NAMES)
    assert {case[0] for case in RULE_CASES} == set(FIELD_NAMES)


@pytest.mark.parametrize(("name", "bad", "good"), RULE_CASES)
def test_constructor_rejects_bad_value_naming_the_field(name: str, bad: Any, good: Any) -> None:
    with pytest.raises(ConfigError, match=rf"- {name}\b") as info:
        TrainingConfig(**{name: bad})
    assert info.value.args[0].startswith("invalid TrainingConfig (1 problem):")
    assert getattr(TrainingConfig(**{name: good}), name) == good


@pytest.mark.parametrize(("name", "bad", "good"), RULE_CASES)
def test_validate_checks_fields_set_after_construction(name: str, bad: Any, good: Any) -> None:
    config = TrainingConfig()
    setattr(config, name, good)
    config.validate()
    setattr(config, name, bad)
    with pytest.raises(ConfigError, match=rf"- {name}\b"):
        config.validate()


def test_guide_messages_are_exact() -> None:
    with pytest.raises(ConfigError, match=r"- learning_rate must be positive \(got -0\.001\)"):
        TrainingConfig(learning_rate=-0.001)
    with pytest.raises(
        ConfigError, match=r"- d_model \(768\) must be divisible by num_heads \(5\)$"
    ):
        TrainingConfig(num_heads=5)
    TrainingConfig(num_heads=8)


def test_dp_strategy_explains_the_replacement() -> None:
    with pytest.raises(ConfigError, match=r"removed in Lightning 2\.0; use 'ddp'"):
        TrainingConfig(strategy="dp")


def test_typo_in_choice_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'reduce-overhead'"):
        TrainingConfig(compile_mode="reduce_overhead")


def test_export_bundle_needs_a_format() -> None:
    with pytest.raises(ConfigError, match="export_bundle is true but export_formats is empty"):
        TrainingConfig(export_bundle=True, export_formats=[])
    TrainingConfig(export_bundle=False, export_formats=[])


def test_all_failures_are_aggregated() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(learning_rate=-1, batch_size=0, epochs=0, num_heads=5)
    message = str(info.value)
    assert message.startswith("invalid TrainingConfig (4 problems):")
    assert message.count("\n  - ") == 4


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=-3)


@pytest.mark.parametrize("choices", [MODEL_TYPES, COMPILE_MODES, LR_SCHEDULERS, EXPORT_FORMATS])
def test_every_documented_choice_is_accepted(choices: tuple[str, ...]) -> None:
    field_name = {
        MODEL_TYPES: "model_type",
        COMPILE_MODES: "compile_mode",
        LR_SCHEDULERS: "lr_scheduler",
        EXPORT_FORMATS: "export_formats",
    }[choices]
    for choice in choices:
        value: Any = [choice] if field_name == "export_formats" else choice
        assert getattr(TrainingConfig(**{field_name: value}), field_name) == value


# -- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("16", "16-mixed"),
        (16, "16-mixed"),
        ("bf16", "bf16-mixed"),
        ("32", "32-true"),
        (32, "32-true"),
        ("64", "64-true"),
        (64, "64-true"),
        ("bf16-true", "bf16-true"),
    ],
)
def test_precision_aliases_are_normalised(given: Any, stored: str) -> None:
    assert TrainingConfig(precision=given).precision == stored
    config = TrainingConfig()
    config.precision = given
    assert config.precision == stored


def test_fsdp_native_is_an_alias_of_fsdp() -> None:
    assert TrainingConfig(strategy="fsdp_native").strategy == "fsdp"


def test_paths_and_tuples_are_normalised(tmp_path: Path) -> None:
    config = TrainingConfig(
        checkpoint_dir=tmp_path / "ckpt",  # type: ignore[arg-type]
        export_dir=tmp_path / "exp",  # type: ignore[arg-type]
        resume_from_checkpoint=tmp_path / "last.ckpt",  # type: ignore[arg-type]
        export_formats=("onnx",),  # type: ignore[arg-type]
        devices=(0, 1),  # type: ignore[arg-type]
    )
    assert config.checkpoint_dir == str(tmp_path / "ckpt")
    assert config.export_dir == str(tmp_path / "exp")
    assert config.resume_from_checkpoint == str(tmp_path / "last.ckpt")
    assert config.export_formats == ["onnx"]
    assert config.devices == [0, 1]
    json.dumps(config.to_dict())


# -- gradient accumulation is one setting ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"gradient_accumulation_steps": 4}, 4),
        ({"accumulate_grad_batches": 3}, 3),
        ({"gradient_accumulation_steps": 2, "accumulate_grad_batches": 2}, 2),
        ({}, 1),
    ],
)
def test_accumulation_fields_agree_after_construction(
    kwargs: dict[str, Any], expected: int
) -> None:
    config = TrainingConfig(**kwargs)
    assert config.gradient_accumulation_steps == config.accumulate_grad_batches == expected


def test_accumulation_disagreement_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"gradient_accumulation_steps \(2\) and accumulate_grad_batches \(4\)"
    ):
        TrainingConfig(gradient_accumulation_steps=2, accumulate_grad_batches=4)


@pytest.mark.parametrize("name", ["gradient_accumulation_steps", "accumulate_grad_batches"])
def test_assigning_either_accumulation_field_sets_both(name: str) -> None:
    config = TrainingConfig()
    setattr(config, name, 6)
    assert config.gradient_accumulation_steps == config.accumulate_grad_batches == 6
    config.validate()


def test_dataclasses_replace_keeps_accumulation_in_sync() -> None:
    config = dataclasses.replace(TrainingConfig(), gradient_accumulation_steps=4)
    assert config.accumulate_grad_batches == 4


# -- serialisation ----------------------------------------------------------------------------


def test_from_dict_unknown_key_names_closest() -> None:
    with pytest.raises(ConfigError, match=r"'warmup_ratoi' \(did you mean 'warmup_ratio'\?\)"):
        TrainingConfig.from_dict({"warmup_ratoi": 0.1})


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        TrainingConfig.from_dict([("epochs", 1)])  # type: ignore[arg-type]


def test_from_dict_partial_uses_defaults() -> None:
    config = TrainingConfig.from_dict({"epochs": 2})
    assert config.epochs == 2 and config.batch_size == 4


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    config = TrainingConfig(epochs=2, devices=[0], run_name="r")
    path = config.save(tmp_path / "nested" / "config.json")
    assert path == tmp_path / "nested" / "config.json"
    assert TrainingConfig.load(path) == config
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_save_default_name_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = TrainingConfig().save()
    second = TrainingConfig(epochs=3).save()
    assert first.parent == second.parent == tmp_path
    assert first != second
    for path in (first, second):
        assert re.fullmatch(r"config_\d{8}_\d{6}(_\d+)?\.json", path.name)
    assert TrainingConfig.load(second).epochs == 3
    assert TrainingConfig.load(first).epochs == 10


def test_save_refuses_an_invalid_config(tmp_path: Path) -> None:
    config = TrainingConfig()
    config.epochs = 0
    with pytest.raises(ConfigError, match="epochs"):
        config.save(tmp_path / "c.json")
    assert list(tmp_path.iterdir()) == []


def test_load_bad_json_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"training_bad_json\.json:3:\d+: invalid JSON"):
        TrainingConfig.load(FIXTURES / "training_bad_json.json")


def test_load_unknown_key_names_file_and_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"training_unknown_key\.json: .*did you mean 'learning_rate'"
    ):
        TrainingConfig.load(FIXTURES / "training_unknown_key.json")


def test_load_invalid_values_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(FIXTURES / "training_invalid_values.json")
    message = str(info.value)
    assert "training_invalid_values.json: invalid TrainingConfig (5 problems)" in message
    for needle in (
        "learning_rate must be positive",
        "batch_size must be",
        "d_model (768) must be divisible by num_heads (5)",
        "precision must be",
        "'tflite'",
    ):
        assert needle in message


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        TrainingConfig.load(tmp_path / "missing.json")


def test_upstream_file_loads_and_is_made_consistent() -> None:
    config = TrainingConfig.load(FIXTURES / "training_upstream_v1.json")
    assert config.gradient_accumulation_steps == config.accumulate_grad_batches == 4
    assert config.strategy == "fsdp"
    assert config.precision == "bf16-mixed"
    assert config.created_at == "2024-05-01T10:20:30.123456"
    assert config.use_lr_schedule is True  # absent upstream: the default


def test_example_config_is_a_canonical_saved_config(tmp_path: Path) -> None:
    path = ROOT / "configs" / "example_training_config.json"
    config = TrainingConfig.load(path)
    assert config.vocab_size is None
    assert config.task_name == "lm_tiny"
    resaved = config.save(tmp_path / "again.json")
    assert resaved.read_text() == path.read_text()


# -- compare_configs ---------------------------------------------------------------------------


def test_compare_configs_reports_changes_and_skips_meta() -> None:
    old = TrainingConfig(run_name="a", created_at="2024-01-01T00:00:00+00:00")
    new = TrainingConfig(run_name="b", epochs=3, learning_rate=1e-4)
    diff = compare_configs(old, new)
    assert diff == {
        "changed": {"epochs": (10, 3), "learning_rate": (5e-5, 1e-4)},
        "added": {},
        "removed": {},
    }


def test_compare_configs_on_dicts_of_different_versions() -> None:
    old = {"epochs": 1, "legacy_field": "x", "created_at": "a"}
    new = TrainingConfig(epochs=2).to_dict()
    diff = compare_configs(old, new)
    assert diff["changed"] == {"epochs": (1, 2)}
    assert diff["removed"] == {"legacy_field": "x"}
    assert "use_lr_schedule" in diff["added"]
    assert "created_at" not in diff["added"]


def test_compare_configs_rejects_other_types() -> None:
    with pytest.raises(ConfigError, match="compare_configs"):
        compare_configs(TrainingConfig(), 3)  # type: ignore[arg-type]


def test_format_config_diff() -> None:
    diff = compare_configs({"a": 1, "b": 2}, {"a": 3, "c": 4})
    assert format_config_diff(diff).splitlines() == ["~ a: 1 -> 3", "+ c: 4", "- b: 2"]
    assert format_config_diff(compare_configs({}, {})) == "no differences"


# -- properties ---------------------------------------------------------------------------------


@st.composite
def training_configs(draw: st.DrawFn) -> TrainingConfig:
    """Valid configs with many fields drawn (heads divide d_model; accumulation agrees)."""
    heads = draw(st.integers(1, 16))
    accumulation = draw(st.integers(1, 16))
    return TrainingConfig(
        random_seed=draw(st.integers(0, 2**32 - 1)),
        deterministic=draw(st.booleans()),
        learning_rate=draw(st.floats(1e-8, 10)),
        batch_size=draw(st.integers(1, 4096)),
        epochs=draw(st.integers(1, 1000)),
        warmup_ratio=draw(st.floats(0, 1)),
        weight_decay=draw(st.floats(0, 1)),
        max_grad_norm=draw(st.floats(1e-3, 100)),
        lr_scheduler=draw(st.sampled_from(LR_SCHEDULERS)),
        warmup_steps=draw(st.none() | st.integers(0, 10_000)),
        gradient_accumulation_steps=accumulation,
        accumulate_grad_batches=accumulation,
        validation_split=draw(st.floats(0, 0.5)),
        compile_mode=draw(st.none() | st.sampled_from(COMPILE_MODES)),
        strategy=draw(st.sampled_from(["auto", "ddp", "ddp_spawn", "fsdp"])),
        devices=draw(
            st.just("auto")
            | st.integers(1, 64)
            | st.lists(st.integers(0, 64), min_size=1, max_size=8, unique=True)
        ),
        precision=draw(st.sampled_from(["32-true", "16-mixed", "bf16-mixed", "bf16-true"])),
        model_type=draw(st.sampled_from(MODEL_TYPES)),
        vocab_size=draw(st.none() | st.integers(1, 300_000)),
        num_heads=heads,
        d_model=heads * draw(st.integers(1, 128)),
        dropout=draw(st.floats(0, 1)),
        run_name=draw(st.none() | st.text(min_size=1, max_size=20).filter(str.strip)),
        export_formats=draw(st.lists(st.sampled_from(EXPORT_FORMATS), unique=True)),
        notes=draw(st.text(max_size=30)),
    )


@given(training_configs())
def test_json_round_trip(config: TrainingConfig) -> None:
    again = TrainingConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    assert compare_configs(config, again) == {"changed": {}, "added": {}, "removed": {}}


@given(training_configs(), st.floats(max_value=0, allow_nan=False))
def test_non_positive_learning_rate_is_always_rejected(config: TrainingConfig, lr: float) -> None:
    config.learning_rate = lr
    with pytest.raises(ConfigError, match="learning_rate must be positive"):
        config.validate()


@given(st.integers(1, 4096), st.integers(1, 64))
def test_heads_rule_matches_divisibility(d_model: int, heads: int) -> None:
    if d_model % heads == 0:
        TrainingConfig(d_model=d_model, num_heads=heads)
    else:
        with pytest.raises(
            ConfigError, match=rf"d_model \({d_model}\) must be divisible by num_heads \({heads}\)"
        ):
            TrainingConfig(d_model=d_model, num_heads=heads)


# -- the config layer stays light --------------------------------------------------------------


def test_importing_the_config_layer_does_not_import_torch() -> None:
    code = (
        "import sys, pytest_modeltiers.config, pytest_modeltiers.config.modes;"
        "heavy = ('torch', 'numpy', 'lightning', 'scipy', 'pandas');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
