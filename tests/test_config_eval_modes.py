"""Tests of ``EvalConfig``, ``build_eval_config``, ``build_task_spec`` and the modes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_modeltiers.config import (
    MODE_NAMES,
    EvalConfig,
    TrainingConfig,
    build_configs_for_mode,
    build_eval_config,
    build_task_spec,
    get_builtin_task,
)
from pytest_modeltiers.errors import ConfigError, TaskSpecError

# -- EvalConfig -----------------------------------------------------------------------------


def test_eval_defaults_are_pinned() -> None:
    assert EvalConfig(dataset_id="d").to_dict() == {
        "dataset_id": "d",
        "split": "validation",
        "max_eval_examples": 512,
        "batch_size": 8,
        "num_workers": 0,
        "max_seq_length": 128,
        "eval_interval_steps": 100,
        "eval_on_start": True,
    }


EVAL_RULES: list[tuple[str, Any, Any]] = [
    ("dataset_id", "", "lm_tiny_v1"),
    ("dataset_id", None, "x"),
    ("split", "", "test"),
    ("max_eval_examples", 0, 1),
    ("batch_size", 0, 1),
    ("batch_size", 1.5, 2),
    ("num_workers", -1, 0),
    ("max_seq_length", 0, 1),
    ("eval_interval_steps", 0, 1),
    ("eval_on_start", "yes", False),
]


def test_eval_rules_cover_every_field() -> None:
    assert {case[0] for case in EVAL_RULES} == {f.name for f in dataclasses.fields(EvalConfig)}


@pytest.mark.parametrize(("name", "bad", "good"), EVAL_RULES)
def test_eval_rule_rejects_bad_and_accepts_good(name: str, bad: Any, good: Any) -> None:
    base: dict[str, Any] = {"dataset_id": "d"}
    with pytest.raises(ConfigError, match=rf"invalid EvalConfig:\n  - {name}\b"):
        EvalConfig(**{**base, name: bad})
    assert getattr(EvalConfig(**{**base, name: good}), name) == good


def test_eval_from_dict_requires_dataset_id() -> None:
    with pytest.raises(ConfigError, match="needs 'dataset_id'"):
        EvalConfig.from_dict({"split": "validation"})


def test_eval_from_dict_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match=r"'batchsize' \(did you mean 'batch_size'\?\)"):
        EvalConfig.from_dict({"dataset_id": "d", "batchsize": 2})


def test_eval_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        EvalConfig.from_dict("d")  # type: ignore[arg-type]


def test_eval_from_dict_applies_defaults() -> None:
    assert EvalConfig.from_dict({"dataset_id": "d"}) == EvalConfig(dataset_id="d")


def test_eval_config_is_frozen() -> None:
    config = EvalConfig(dataset_id="d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_name = "x"  # type: ignore[attr-defined]


@given(
    st.builds(
        EvalConfig,
        dataset_id=st.text(min_size=1, max_size=20).filter(str.strip),
        split=st.sampled_from(["train", "validation", "test"]),
        max_eval_examples=st.integers(1, 10**6),
        batch_size=st.integers(1, 4096),
        num_workers=st.integers(0, 64),
        max_seq_length=st.integers(1, 8192),
        eval_interval_steps=st.integers(1, 10**5),
        eval_on_start=st.booleans(),
    )
)
def test_eval_json_round_trip(config: EvalConfig) -> None:
    assert EvalConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- build_eval_config ----------------------------------------------------------------------


def test_build_eval_config_from_defaults() -> None:
    assert build_eval_config(TrainingConfig()) == EvalConfig(
        dataset_id="lm_tiny_v1",
        split="validation",
        max_eval_examples=512,
        batch_size=4,
        num_workers=0,
        max_seq_length=128,
        eval_interval_steps=100,
        eval_on_start=True,
    )


def test_build_eval_config_uses_training_values() -> None:
    training = TrainingConfig(
        task_name="cls_tiny",
        eval_dataset_id="mine",
        max_val_samples=40,
        batch_size=16,
        max_seq_len=32,
    )
    config = build_eval_config(training)
    assert (
        config.dataset_id,
        config.max_eval_examples,
        config.batch_size,
        config.max_seq_length,
    ) == (
        "mine",
        40,
        16,
        32,
    )
    assert build_eval_config(TrainingConfig(task_name="cls_tiny")).dataset_id == "cls_tiny_v1"


# -- build_task_spec ------------------------------------------------------------------------


def test_build_task_spec_takes_seq_len_and_keeps_vocab_unset() -> None:
    task = build_task_spec(TrainingConfig(max_seq_len=64))
    assert task.name == "lm_tiny"
    assert (task.max_seq_len, task.vocab_size) == (64, None)


@pytest.mark.parametrize("name", ["lm_tiny", "seq2seq_tiny", "cls_tiny"])
def test_build_task_spec_agrees_with_training_config(name: str) -> None:
    training = TrainingConfig(task_name=name, vocab_size=321, max_seq_len=48)
    task = build_task_spec(training)
    assert task.name == name
    assert (task.vocab_size, task.max_seq_len, task.max_target_len) == (321, 48, 48)
    assert task.get_input_shape(2) == (2, 48)


def test_build_task_spec_keeps_other_builtin_values() -> None:
    task = build_task_spec(TrainingConfig(task_name="cls_tiny"))
    assert task == get_builtin_task("cls_tiny")


def test_build_task_spec_vision_is_not_resized() -> None:
    task = build_task_spec(TrainingConfig(task_name="vision_tiny", vocab_size=100, max_seq_len=16))
    assert task == get_builtin_task("vision_tiny")


def test_build_task_spec_unknown_task() -> None:
    with pytest.raises(TaskSpecError, match="did you mean 'cls_tiny'"):
        build_task_spec(TrainingConfig(task_name="cls_tin"))


# -- modes ----------------------------------------------------------------------------------

EXPECTED_MODES: dict[str, dict[str, Any]] = {
    "FAST_DEV": {
        "epochs": 1,
        "batch_size": 2,
        "vocab_size": 101,
        "max_seq_len": 64,
        "learning_rate": 5e-4,
    },
    "STANDARD_EXPERIMENT": {
        "epochs": 3,
        "batch_size": 8,
        "vocab_size": 50257,
        "max_seq_len": 128,
        "learning_rate": 1e-4,
    },
    "ABLATION_SWEEP": {
        "epochs": 2,
        "batch_size": 4,
        "vocab_size": 1000,
        "max_seq_len": 128,
        "learning_rate": 2e-4,
    },
}


def test_mode_names() -> None:
    assert MODE_NAMES == ("FAST_DEV", "STANDARD_EXPERIMENT", "ABLATION_SWEEP")


@pytest.mark.parametrize("mode", list(EXPECTED_MODES))
def test_mode_values_are_pinned(mode: str) -> None:
    training, task, evaluation = build_configs_for_mode(mode)
    for key, value in EXPECTED_MODES[mode].items():
        assert getattr(training, key) == value, key
    assert training.task_name == "lm_tiny"
    assert evaluation == EvalConfig(
        dataset_id="lm_tiny_v1",
        split="validation",
        max_eval_examples=16,
        batch_size=max(2, EXPECTED_MODES[mode]["batch_size"]),
        num_workers=0,
        max_seq_length=EXPECTED_MODES[mode]["max_seq_len"],
        eval_interval_steps=100,
        eval_on_start=True,
    )
    assert task.name == "lm_tiny"


@pytest.mark.parametrize("mode", list(EXPECTED_MODES))
def test_mode_task_agrees_with_training_config(mode: str) -> None:
    training, task, evaluation = build_configs_for_mode(mode)
    assert task.vocab_size == training.vocab_size
    assert (
        task.input_schema["vocab_size"] == task.output_schema["vocab_size"] == training.vocab_size
    )
    assert task.max_seq_len == training.max_seq_len == evaluation.max_seq_length


@pytest.mark.parametrize("spelling", ["fast_dev", "Fast_Dev", " FAST_DEV ", "fast-dev"])
def test_mode_names_are_case_insensitive(spelling: str) -> None:
    training, _, _ = build_configs_for_mode(spelling)
    assert training.vocab_size == 101


def test_modes_return_fresh_objects() -> None:
    first, _, _ = build_configs_for_mode("FAST_DEV")
    first.epochs = 9
    second, _, _ = build_configs_for_mode("FAST_DEV")
    assert second.epochs == 1


def test_unknown_mode_lists_modes() -> None:
    with pytest.raises(ConfigError, match="did you mean 'FAST_DEV'") as info:
        build_configs_for_mode("fast_dve")
    assert "FAST_DEV, STANDARD_EXPERIMENT, ABLATION_SWEEP" in str(info.value)


def test_mode_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="mode must be a string"):
        build_configs_for_mode(1)  # type: ignore[arg-type]
