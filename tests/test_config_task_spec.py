"""Tests of ``TaskSpec``, the built-in tasks and ``resolve_task``."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_modeltiers.config.task_spec import (
    TASK_TYPES,
    TaskSpec,
    builtin_task_names,
    get_builtin_task,
    resolve_task,
)
from pytest_modeltiers.errors import TaskSpecError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "configs"


def lm(**overrides: Any) -> dict[str, Any]:
    """A minimal valid LM task dict."""
    data: dict[str, Any] = {
        "name": "my_lm",
        "task_type": "lm",
        "input_fields": ["input_ids"],
        "input_schema": {"max_seq_len": 16},
    }
    data.update(overrides)
    return data


def vision(**overrides: Any) -> dict[str, Any]:
    """A minimal valid vision task dict."""
    data: dict[str, Any] = {
        "name": "my_vision",
        "task_type": "vision_classification",
        "input_fields": ["pixel_values"],
        "input_schema": {"image_size": [3, 8, 8]},
        "output_schema": {"num_classes": 3},
    }
    data.update(overrides)
    return data


def cls(**overrides: Any) -> dict[str, Any]:
    """A minimal valid classification task dict."""
    data: dict[str, Any] = {
        "name": "my_cls",
        "task_type": "classification",
        "input_fields": ["input_ids"],
        "input_schema": {"max_seq_len": 16},
        "output_schema": {"num_classes": 2},
    }
    data.update(overrides)
    return data


# -- built-ins --------------------------------------------------------------------------------

EXPECTED_BUILTINS: dict[str, dict[str, Any]] = {
    "lm_tiny": {
        "name": "lm_tiny",
        "task_type": "lm",
        "model_family": "decoder_only",
        "input_fields": ["input_ids", "attention_mask"],
        "target_field": "labels",
        "loss_type": "cross_entropy",
        "metrics": ["loss", "perplexity", "accuracy"],
        "special_tokens": {"pad_token_id": 0},
        "additional_config": {"shift_labels": True},
        "modality": "text",
        "input_schema": {"max_seq_len": 128},
        "output_schema": {},
        "preprocessing_config": None,
    },
    "cls_tiny": {
        "name": "cls_tiny",
        "task_type": "classification",
        "model_family": "encoder_only",
        "input_fields": ["input_ids", "attention_mask"],
        "target_field": "labels",
        "loss_type": "cross_entropy",
        "metrics": ["loss", "accuracy", "macro_f1"],
        "special_tokens": {"pad_token_id": 0},
        "additional_config": {},
        "modality": "text",
        "input_schema": {"max_seq_len": 128},
        "output_schema": {"num_classes": 2},
        "preprocessing_config": None,
    },
    "seq2seq_tiny": {
        "name": "seq2seq_tiny",
        "task_type": "seq2seq",
        "model_family": "encoder_decoder",
        "input_fields": ["input_ids", "attention_mask", "decoder_input_ids"],
        "target_field": "labels",
        "loss_type": "cross_entropy",
        "metrics": ["loss"],
        "special_tokens": {"pad_token_id": 0, "decoder_start_token_id": 0},
        "additional_config": {"teacher_forcing": True},
        "modality": "text",
        "input_schema": {"max_seq_len": 128, "max_target_len": 128},
        "output_schema": {},
        "preprocessing_config": None,
    },
    "vision_tiny": {
        "name": "vision_tiny",
        "task_type": "vision_classification",
        "model_family": "encoder_only",
        "input_fields": ["pixel_values"],
        "target_field": "labels",
        "loss_type": "cross_entropy",
        "metrics": ["loss", "accuracy"],
        "special_tokens": {},
        "additional_config": {},
        "modality": "vision",
        "input_schema": {"image_size": [3, 32, 32], "channels_first": True},
        "output_schema": {"num_classes": 4},
        "preprocessing_config": {"normalize": True, "mean": [0.5] * 3, "std": [0.5] * 3},
    },
}


def test_builtin_names_in_order() -> None:
    assert builtin_task_names() == ["lm_tiny", "cls_tiny", "seq2seq_tiny", "vision_tiny"]


@pytest.mark.parametrize("name", list(EXPECTED_BUILTINS))
def test_builtin_values_are_pinned(name: str) -> None:
    assert get_builtin_task(name).to_dict() == EXPECTED_BUILTINS[name]


@pytest.mark.parametrize("name", ["lm_tiny", "cls_tiny", "seq2seq_tiny"])
def test_text_builtins_do_not_invent_a_vocab_size(name: str) -> None:
    task = get_builtin_task(name)
    assert task.vocab_size is None
    assert "vocab_size" not in task.input_schema
    assert "vocab_size" not in task.output_schema


def test_builtin_properties() -> None:
    lm_task = get_builtin_task("lm_tiny")
    assert (lm_task.family, lm_task.is_text, lm_task.is_vision) == ("lm", True, False)
    assert (lm_task.max_seq_len, lm_task.max_target_len, lm_task.pad_token_id) == (128, 128, 0)
    assert lm_task.task_name == "lm_tiny"
    assert lm_task.image_size is None and lm_task.num_classes is None
    assert get_builtin_task("cls_tiny").num_classes == 2
    s2s = get_builtin_task("seq2seq_tiny")
    assert (s2s.family, s2s.decoder_start_token_id) == ("seq2seq", 0)
    vis = get_builtin_task("vision_tiny")
    assert (vis.family, vis.is_vision, vis.image_size, vis.num_classes) == (
        "vision",
        True,
        (3, 32, 32),
        4,
    )
    assert vis.pad_token_id is None and vis.max_seq_len is None


def test_text_classification_is_the_classification_family() -> None:
    task = TaskSpec.from_dict(cls(task_type="text_classification"))
    assert task.family == "classification"


def test_decoder_start_defaults_to_pad_and_can_differ() -> None:
    base = get_builtin_task("seq2seq_tiny")
    no_start = base.merged({"special_tokens": {"decoder_start_token_id": None, "pad_token_id": 3}})
    assert no_start.decoder_start_token_id == 3
    explicit = base.merged({"special_tokens": {"decoder_start_token_id": 5}})
    assert explicit.decoder_start_token_id == 5


def test_max_target_len_overrides_max_seq_len() -> None:
    task = get_builtin_task("seq2seq_tiny").merged({"input_schema": {"max_target_len": 32}})
    assert (task.max_seq_len, task.max_target_len) == (128, 32)
    without = task.merged({"input_schema": {"max_target_len": None}})
    assert without.max_target_len == 128


def test_unknown_builtin_lists_builtins_and_suggests() -> None:
    with pytest.raises(TaskSpecError, match="did you mean 'cls_tiny'") as info:
        get_builtin_task("cls_tinny")
    assert "lm_tiny, cls_tiny, seq2seq_tiny, vision_tiny" in str(info.value)


# -- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lm_tiny", (4, 128)),
        ("cls_tiny", (4, 128)),
        ("seq2seq_tiny", (4, 128)),
        ("vision_tiny", (4, 3, 32, 32)),
    ],
)
def test_get_input_shape(name: str, expected: tuple[int, ...]) -> None:
    assert get_builtin_task(name).get_input_shape(4) == expected


def test_get_input_shape_default_batch_and_channels_last() -> None:
    task = TaskSpec.from_dict(
        vision(input_schema={"image_size": [1, 5, 7], "channels_first": False})
    )
    assert task.get_input_shape() == (1, 5, 7, 1)


def test_get_input_shape_rejects_bad_batch() -> None:
    with pytest.raises(TaskSpecError, match="batch_size"):
        get_builtin_task("lm_tiny").get_input_shape(0)


def test_get_input_shape_without_seq_len_says_how_to_fix() -> None:
    task = TaskSpec.from_dict(cls(input_schema={}))
    with pytest.raises(TaskSpecError, match="max_seq_len"):
        task.get_input_shape()


# -- field validation: each rule rejects a bad value naming the field, accepts a good one --

FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # (id, bad dict, good dict, text the error must contain)
    ("name", lm(name=""), lm(name="x"), "name"),
    ("name_type", lm(name=3), lm(name="three"), "name"),
    ("task_type", lm(task_type="lmm"), lm(task_type="lm"), "task_type"),
    ("model_family", lm(model_family=""), lm(model_family="decoder_only"), "model_family"),
    (
        "input_fields_str",
        lm(input_fields="input_ids"),
        lm(input_fields=["input_ids"]),
        "input_fields",
    ),
    ("input_fields_empty", lm(input_fields=[]), lm(input_fields=["a"]), "input_fields"),
    (
        "input_fields_dupes",
        lm(input_fields=["a", "a"]),
        lm(input_fields=["a", "b"]),
        "input_fields",
    ),
    ("input_fields_items", lm(input_fields=["a", 1]), lm(input_fields=["a", "b"]), "input_fields"),
    ("target_field", lm(target_field=""), lm(target_field=None), "target_field"),
    ("loss_type", lm(loss_type=None), lm(loss_type="cross_entropy"), "loss_type"),
    ("metrics", lm(metrics="loss"), lm(metrics=[]), "metrics"),
    ("special_tokens_type", lm(special_tokens=[0]), lm(special_tokens={}), "special_tokens"),
    (
        "special_tokens_value",
        lm(special_tokens={"pad_token_id": -1}),
        lm(special_tokens={"pad_token_id": 0}),
        "special_tokens.pad_token_id",
    ),
    (
        "special_tokens_bool",
        lm(special_tokens={"pad_token_id": True}),
        lm(special_tokens={"pad_token_id": 1}),
        "special_tokens.pad_token_id",
    ),
    (
        "additional_config_json",
        lm(additional_config={"f": float("nan")}),
        lm(additional_config={"f": 1.5, "nested": {"a": [1, None]}}),
        "additional_config",
    ),
    ("modality", lm(modality="video"), lm(modality="text"), "modality"),
    (
        "input_schema_type",
        lm(input_schema=[128]),
        lm(input_schema={"max_seq_len": 1}),
        "input_schema",
    ),
    (
        "input_schema_key",
        lm(input_schema={"max_seq_len": 8, "max_seqlen": 8}),
        lm(input_schema={"max_seq_len": 8}),
        "max_seqlen",
    ),
    (
        "vocab_size",
        lm(input_schema={"max_seq_len": 8, "vocab_size": 0}),
        lm(input_schema={"max_seq_len": 8, "vocab_size": 1}),
        "input_schema.vocab_size",
    ),
    (
        "max_seq_len",
        lm(input_schema={"max_seq_len": 0}),
        lm(input_schema={"max_seq_len": 1}),
        "input_schema.max_seq_len",
    ),
    (
        "max_target_len",
        {
            **get_builtin_task("seq2seq_tiny").to_dict(),
            "input_schema": {"max_seq_len": 8, "max_target_len": 0},
        },
        {
            **get_builtin_task("seq2seq_tiny").to_dict(),
            "input_schema": {"max_seq_len": 8, "max_target_len": 4},
        },
        "input_schema.max_target_len",
    ),
    (
        "image_size_len",
        vision(input_schema={"image_size": [32, 32]}),
        vision(input_schema={"image_size": [1, 32, 32]}),
        "input_schema.image_size",
    ),
    (
        "image_size_value",
        vision(input_schema={"image_size": [3, 0, 32]}),
        vision(input_schema={"image_size": [3, 1, 32]}),
        "input_schema.image_size",
    ),
    (
        "channels_first",
        vision(input_schema={"image_size": [3, 4, 4], "channels_first": "yes"}),
        vision(input_schema={"image_size": [3, 4, 4], "channels_first": False}),
        "input_schema.channels_first",
    ),
    (
        "output_schema_type",
        cls(output_schema=2),
        cls(output_schema={"num_classes": 2}),
        "output_schema",
    ),
    (
        "output_schema_key",
        cls(output_schema={"num_clases": 2}),
        cls(output_schema={"num_classes": 2}),
        "num_clases",
    ),
    (
        "num_classes",
        cls(output_schema={"num_classes": 1}),
        cls(output_schema={"num_classes": 2}),
        "output_schema.num_classes",
    ),
    (
        "output_vocab_size",
        lm(output_schema={"vocab_size": 0}),
        lm(output_schema={"vocab_size": 10}),
        "output_schema.vocab_size",
    ),
    (
        "preprocessing_type",
        vision(preprocessing_config=[1]),
        vision(preprocessing_config=None),
        "preprocessing_config",
    ),
    (
        "preprocessing_key",
        vision(preprocessing_config={"normalise": True}),
        vision(preprocessing_config={"normalize": True}),
        "normalise",
    ),
    (
        "normalize",
        vision(preprocessing_config={"normalize": 1}),
        vision(preprocessing_config={"normalize": False}),
        "preprocessing_config.normalize",
    ),
    (
        "mean",
        vision(preprocessing_config={"mean": "0.5"}),
        vision(preprocessing_config={"mean": [0.4, 0.5, 0.6]}),
        "preprocessing_config.mean",
    ),
    (
        "std",
        vision(preprocessing_config={"std": 0}),
        vision(preprocessing_config={"std": 0.2}),
        "preprocessing_config.std",
    ),
    (
        "mean_channels",
        vision(preprocessing_config={"mean": [0.5, 0.5]}),
        vision(preprocessing_config={"mean": [0.5, 0.5, 0.5]}),
        "preprocessing_config.mean",
    ),
    (
        "augmentations",
        vision(preprocessing_config={"augmentations": "flip"}),
        vision(preprocessing_config={"augmentations": ["flip"]}),
        "preprocessing_config.augmentations",
    ),
]


@pytest.mark.parametrize(
    ("bad", "good", "needle"), [case[1:] for case in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_field_rule_rejects_bad_and_accepts_good(
    bad: dict[str, Any], good: dict[str, Any], needle: str
) -> None:
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.from_dict(bad)
    assert needle in str(info.value)
    assert TaskSpec.from_dict(good).name == good["name"]


@pytest.mark.parametrize("task_type", ["vision_multilabel", "audio", "tabular"])
def test_unimplemented_task_types_list_supported_ones(task_type: str) -> None:
    with pytest.raises(TaskSpecError, match="not implemented") as info:
        TaskSpec.from_dict(lm(task_type=task_type))
    assert ", ".join(TASK_TYPES) in str(info.value)


@pytest.mark.parametrize("modality", ["audio", "tabular"])
def test_unimplemented_modalities_are_refused(modality: str) -> None:
    with pytest.raises(TaskSpecError, match=rf"modality '{modality}' is not implemented"):
        TaskSpec.from_dict(lm(modality=modality))


def test_typo_in_task_type_suggests_the_closest() -> None:
    with pytest.raises(TaskSpecError, match="did you mean 'classification'"):
        TaskSpec.from_dict(cls(task_type="clasification"))


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.from_dict(lm(name="", loss_type="", metrics="loss"))
    message = str(info.value)
    for field_name in ("name", "loss_type", "metrics"):
        assert f"- {field_name} must" in message


# -- consistency ----------------------------------------------------------------------------

CONSISTENCY_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "vision_needs_image_size",
        vision(input_schema={}),
        vision(input_schema={"image_size": [3, 4, 4]}),
        "input_schema.image_size is required",
    ),
    (
        "vision_needs_num_classes",
        vision(output_schema={}),
        vision(output_schema={"num_classes": 2}),
        "output_schema.num_classes is required",
    ),
    (
        "classification_needs_num_classes",
        cls(output_schema={}),
        cls(output_schema={"num_classes": 5}),
        "output_schema.num_classes is required",
    ),
    (
        "lm_needs_max_seq_len",
        lm(input_schema={}),
        lm(input_schema={"max_seq_len": 4}),
        "max_seq_len is required",
    ),
    (
        "seq2seq_needs_max_seq_len",
        {**get_builtin_task("seq2seq_tiny").to_dict(), "input_schema": {}},
        {**get_builtin_task("seq2seq_tiny").to_dict(), "input_schema": {"max_seq_len": 4}},
        "max_seq_len is required",
    ),
    (
        "vision_modality",
        vision(modality="text"),
        vision(modality="vision"),
        "modality must be 'vision'",
    ),
    ("text_modality", lm(modality="vision"), lm(modality="text"), "modality must be 'text'"),
    (
        "image_size_on_text",
        lm(input_schema={"max_seq_len": 4, "image_size": [3, 4, 4]}),
        lm(input_schema={"max_seq_len": 4}),
        "input_schema.image_size only applies to vision",
    ),
    (
        "seq_len_on_vision",
        vision(input_schema={"image_size": [3, 4, 4], "max_seq_len": 4}),
        vision(input_schema={"image_size": [3, 4, 4]}),
        "input_schema.max_seq_len does not apply to vision",
    ),
    (
        "max_target_len_only_seq2seq",
        lm(input_schema={"max_seq_len": 4, "max_target_len": 4}),
        lm(input_schema={"max_seq_len": 4}),
        "max_target_len only applies to seq2seq",
    ),
    (
        "num_classes_on_lm",
        lm(output_schema={"num_classes": 3}),
        lm(output_schema={}),
        "output_schema.num_classes does not apply",
    ),
    (
        "output_vocab_on_classifier",
        cls(output_schema={"num_classes": 2, "vocab_size": 10}),
        cls(output_schema={"num_classes": 2}),
        "output_schema.vocab_size only applies",
    ),
    (
        "lm_vocab_agreement",
        lm(input_schema={"max_seq_len": 4, "vocab_size": 10}, output_schema={"vocab_size": 11}),
        lm(input_schema={"max_seq_len": 4, "vocab_size": 10}, output_schema={"vocab_size": 10}),
        "must agree",
    ),
    (
        "pad_below_vocab",
        lm(input_schema={"max_seq_len": 4, "vocab_size": 10}, special_tokens={"pad_token_id": 10}),
        lm(input_schema={"max_seq_len": 4, "vocab_size": 10}, special_tokens={"pad_token_id": 9}),
        "special_tokens.pad_token_id (10) must be < vocab_size (10)",
    ),
]


@pytest.mark.parametrize(
    ("bad", "good", "needle"),
    [case[1:] for case in CONSISTENCY_CASES],
    ids=[c[0] for c in CONSISTENCY_CASES],
)
def test_consistency_rule_rejects_bad_and_accepts_good(
    bad: dict[str, Any], good: dict[str, Any], needle: str
) -> None:
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.from_dict(bad)
    assert needle in str(info.value)
    TaskSpec.from_dict(good)


# -- construction and immutability ----------------------------------------------------------


def test_lists_become_tuples_and_modality_is_derived() -> None:
    task = TaskSpec(
        "t",
        "vision_classification",
        **{k: v for k, v in vision().items() if k not in ("name", "task_type")},
    )
    assert task.input_fields == ("pixel_values",)
    assert task.input_schema["image_size"] == (3, 8, 8)
    assert task.modality == "vision"
    assert TaskSpec.from_dict(lm()).modality == "text"


def test_scalar_mean_std_expand_per_channel() -> None:
    task = TaskSpec.from_dict(vision(preprocessing_config={"mean": 0.5, "std": 0.25}))
    assert task.preprocessing_config == {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def test_taskspec_is_immutable() -> None:
    task = get_builtin_task("lm_tiny")
    with pytest.raises(AttributeError):
        task.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        task.input_schema["max_seq_len"] = 1  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        task.special_tokens.update(pad_token_id=3)  # type: ignore[attr-defined]


def test_caller_dicts_are_copied() -> None:
    schema = {"max_seq_len": 16}
    task = TaskSpec.from_dict(lm(input_schema=schema))
    schema["max_seq_len"] = 99
    assert task.max_seq_len == 16


def test_pickle_copy_hash_and_json_dumps() -> None:
    task = get_builtin_task("vision_tiny")
    assert pickle.loads(pickle.dumps(task)) == task
    assert copy.deepcopy(task) == task
    assert hash(task) == hash(get_builtin_task("vision_tiny"))
    assert json.loads(json.dumps(task.input_schema)) == {
        "image_size": [3, 32, 32],
        "channels_first": True,
    }


# -- derivation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "output_vocab"), [("lm_tiny", 77), ("seq2seq_tiny", 77), ("cls_tiny", None)]
)
def test_with_vocab_size(name: str, output_vocab: int | None) -> None:
    base = get_builtin_task(name)
    task = base.with_vocab_size(77)
    assert task.vocab_size == 77
    assert task.input_schema["vocab_size"] == 77
    assert task.output_schema.get("vocab_size") == output_vocab
    assert base.vocab_size is None


@pytest.mark.parametrize("bad", [0, -1, True, 3.0])
def test_with_vocab_size_rejects_bad_values(bad: Any) -> None:
    with pytest.raises(TaskSpecError, match="vocab_size"):
        get_builtin_task("lm_tiny").with_vocab_size(bad)


def test_with_vocab_size_refuses_vision() -> None:
    with pytest.raises(TaskSpecError, match="vision"):
        get_builtin_task("vision_tiny").with_vocab_size(10)


def test_merged_merges_nested_and_replaces_others() -> None:
    base = get_builtin_task("lm_tiny")
    task = base.merged(
        {
            "name": "lm_small",
            "metrics": ["loss"],
            "input_schema": {"vocab_size": 50},
            "additional_config": {"extra": 1},
        }
    )
    assert task.name == "lm_small"
    assert task.metrics == ("loss",)
    assert task.input_schema == {"max_seq_len": 128, "vocab_size": 50}
    assert task.additional_config == {"shift_labels": True, "extra": 1}
    assert task.special_tokens == {"pad_token_id": 0}
    assert base == get_builtin_task("lm_tiny")


def test_merged_none_removes_a_nested_key_and_result_is_validated() -> None:
    base = get_builtin_task("lm_tiny").with_vocab_size(10)
    assert (
        base.merged(
            {"input_schema": {"vocab_size": None}, "output_schema": {"vocab_size": None}}
        ).vocab_size
        is None
    )
    with pytest.raises(TaskSpecError, match=r"input_schema\.max_seq_len is required"):
        base.merged({"input_schema": {"max_seq_len": None}})


def test_merged_preprocessing_from_none() -> None:
    task = TaskSpec.from_dict(vision()).merged({"preprocessing_config": {"normalize": True}})
    assert task.preprocessing_config == {"normalize": True}


def test_merged_unknown_key_suggests() -> None:
    with pytest.raises(TaskSpecError, match="did you mean 'input_schema'"):
        get_builtin_task("lm_tiny").merged({"input_schem": {}})


# -- serialisation --------------------------------------------------------------------------


def test_from_dict_unknown_key_names_closest() -> None:
    with pytest.raises(TaskSpecError, match="'metric' \\(did you mean 'metrics'\\?\\)"):
        TaskSpec.from_dict({**lm(), "metric": ["loss"]})


def test_from_dict_missing_required_fields() -> None:
    with pytest.raises(
        TaskSpecError, match="missing required field\\(s\\): task_type, input_fields"
    ):
        TaskSpec.from_dict({"name": "x"})


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(TaskSpecError, match="mapping"):
        TaskSpec.from_dict(["lm_tiny"])  # type: ignore[arg-type]


def test_from_json_reports_line() -> None:
    with pytest.raises(TaskSpecError, match="line 2"):
        TaskSpec.from_json('{"name": "x",\n oops}')


def test_save_load_roundtrip(tmp_path: Path) -> None:
    task = get_builtin_task("vision_tiny")
    path = task.save(tmp_path / "sub" / "task.json")
    assert path == tmp_path / "sub" / "task.json"
    assert TaskSpec.load(path) == task
    assert [p.name for p in path.parent.iterdir()] == ["task.json"]


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    get_builtin_task("lm_tiny").save(path)
    get_builtin_task("cls_tiny").save(path)
    assert TaskSpec.load(path).name == "cls_tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.json"]


def test_load_bad_json_names_file_and_line() -> None:
    path = FIXTURES / "task_bad_json.json"
    with pytest.raises(TaskSpecError, match=r"task_bad_json\.json:4:3: invalid JSON"):
        TaskSpec.load(path)


def test_load_unknown_key_names_file_and_suggestion() -> None:
    with pytest.raises(
        TaskSpecError, match=r"task_unknown_key\.json: .*did you mean 'input_schema'"
    ):
        TaskSpec.load(FIXTURES / "task_unknown_key.json")


def test_load_invalid_task_names_file_and_field() -> None:
    with pytest.raises(
        TaskSpecError, match=r"(?s)task_vision_without_image_size\.json: .*image_size"
    ):
        TaskSpec.load(FIXTURES / "task_vision_without_image_size.json")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TaskSpecError, match="file not found"):
        TaskSpec.load(tmp_path / "nope.json")


def test_load_non_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(TaskSpecError, match="expected a JSON object"):
        TaskSpec.load(path)


# -- resolve_task ---------------------------------------------------------------------------


def test_resolve_builtin_name() -> None:
    assert resolve_task("cls_tiny") == get_builtin_task("cls_tiny")


def test_resolve_json_path() -> None:
    task = resolve_task(str(FIXTURES / "task_custom_classifier.json"))
    assert (task.name, task.num_classes, task.vocab_size, task.pad_token_id) == (
        "sentiment_3way",
        3,
        30522,
        1,
    )
    assert resolve_task(FIXTURES / "task_custom_classifier.json") == task


def test_resolve_dict_merges_over_builtin() -> None:
    task = resolve_task({"name": "cls_tiny", "output_schema": {"num_classes": 5}})
    assert task.num_classes == 5
    assert task.metrics == ("loss", "accuracy", "macro_f1")


def test_resolve_complete_dict() -> None:
    assert resolve_task(lm()).name == "my_lm"


def test_resolve_incomplete_dict_names_missing_fields() -> None:
    with pytest.raises(TaskSpecError, match="missing required field\\(s\\): input_fields") as info:
        resolve_task({"name": "mine", "task_type": "lm"})
    assert "lm_tiny" in str(info.value)


def test_resolve_incomplete_dict_suggests_builtin() -> None:
    with pytest.raises(TaskSpecError, match="did you mean 'lm_tiny'"):
        resolve_task({"name": "lm_tiyn"})


def test_resolve_unknown_name() -> None:
    with pytest.raises(TaskSpecError, match=r"did you mean 'vision_tiny'.*\.json"):
        resolve_task("vision_tinny")


def test_resolve_missing_json_path(tmp_path: Path) -> None:
    with pytest.raises(TaskSpecError, match="file not found"):
        resolve_task(str(tmp_path / "task.json"))


def test_resolve_taskspec_and_bad_type() -> None:
    task = get_builtin_task("lm_tiny")
    assert resolve_task(task) is task
    with pytest.raises(TaskSpecError, match="built-in name"):
        resolve_task(3)  # type: ignore[arg-type]


# -- JSON round trip (property) -------------------------------------------------------------

_identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def task_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Valid task dicts of every supported task type."""
    task_type = draw(st.sampled_from(TASK_TYPES))
    data: dict[str, Any] = {
        "name": draw(_identifiers),
        "task_type": task_type,
        "model_family": draw(_identifiers),
        "input_fields": draw(st.lists(_identifiers, min_size=1, max_size=4, unique=True)),
        "target_field": draw(st.none() | _identifiers),
        "loss_type": draw(_identifiers),
        "metrics": draw(st.lists(_identifiers, max_size=4, unique=True)),
        "additional_config": draw(st.dictionaries(st.text(max_size=6), _json_values, max_size=3)),
    }
    if task_type == "vision_classification":
        channels = draw(st.integers(1, 4))
        image_size = [channels, draw(st.integers(1, 64)), draw(st.integers(1, 64))]
        schema: dict[str, Any] = {"image_size": image_size}
        if draw(st.booleans()):
            schema["channels_first"] = True
        data["input_schema"] = schema
        data["output_schema"] = {"num_classes": draw(st.integers(2, 1000))}
        if draw(st.booleans()):
            floats = st.floats(0.01, 10, allow_nan=False)
            data["preprocessing_config"] = {
                "normalize": draw(st.booleans()),
                "mean": draw(st.lists(floats, min_size=channels, max_size=channels)),
                "std": draw(st.lists(floats, min_size=channels, max_size=channels)),
            }
        return data
    vocab = draw(st.none() | st.integers(2, 100_000))
    schema = {"max_seq_len": draw(st.integers(1, 4096))}
    if vocab is not None:
        schema["vocab_size"] = vocab
        data["special_tokens"] = {"pad_token_id": draw(st.integers(0, vocab - 1))}
    if task_type == "seq2seq" and draw(st.booleans()):
        schema["max_target_len"] = draw(st.integers(1, 4096))
    data["input_schema"] = schema
    if task_type in ("classification", "text_classification"):
        data["output_schema"] = {"num_classes": draw(st.integers(2, 1000))}
    elif vocab is not None:
        data["output_schema"] = {"vocab_size": vocab}
    return data


@given(task_dicts())
def test_json_round_trip(data: dict[str, Any]) -> None:
    task = TaskSpec.from_dict(data)
    again = TaskSpec.from_json(task.to_json())
    assert again == task
    assert again.to_dict() == task.to_dict()
    assert hash(again) == hash(task)
    assert json.loads(task.to_json()) == task.to_dict()


@given(task_dicts())
def test_to_dict_preserves_given_values(data: dict[str, Any]) -> None:
    result = TaskSpec.from_dict(data).to_dict()
    for key, value in data.items():
        assert result[key] == value, key


@given(task_dicts())
def test_merged_with_nothing_is_identity(data: dict[str, Any]) -> None:
    task = TaskSpec.from_dict(data)
    assert task.merged({}) == task
