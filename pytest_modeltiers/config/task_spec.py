"""``TaskSpec``: what a model is asked to do, and the four built-in tasks.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from pytest_modeltiers.config._util import (
    atomic_write_text,
    bulleted,
    did_you_mean,
    is_int,
    is_json_value,
    is_number,
    read_json_object,
    shown,
)
from pytest_modeltiers.config.limits import LIMITS
from pytest_modeltiers.errors import TaskSpecError
from pytest_modeltiers.jsonio import dumps

__all__ = [
    "INPUT_SCHEMA_KEYS",
    "MODALITIES",
    "OUTPUT_SCHEMA_KEYS",
    "PREPROCESSING_KEYS",
    "TASK_TYPES",
    "ReadOnlyDict",
    "TaskSpec",
    "builtin_task_names",
    "get_builtin_task",
    "resolve_task",
]

#: Task types with an adapter, data and metrics in this package.
TASK_TYPES: tuple[str, ...] = (
    "lm",
    "classification",
    "text_classification",
    "seq2seq",
    "vision_classification",
)
#: Task types with a name but no implementation; refused with a clear message.
_UNIMPLEMENTED_TASK_TYPES: tuple[str, ...] = ("vision_multilabel", "audio", "tabular")
MODALITIES: tuple[str, ...] = ("text", "vision")
_UNIMPLEMENTED_MODALITIES: tuple[str, ...] = ("audio", "tabular")

INPUT_SCHEMA_KEYS: tuple[str, ...] = (
    "vocab_size",
    "max_seq_len",
    "max_target_len",
    "image_size",
    "channels_first",
)
OUTPUT_SCHEMA_KEYS: tuple[str, ...] = ("vocab_size", "num_classes")
PREPROCESSING_KEYS: tuple[str, ...] = ("normalize", "mean", "std", "augmentations")

_FAMILY_OF_TYPE: dict[str, str] = {
    "lm": "lm",
    "classification": "classification",
    "text_classification": "classification",
    "seq2seq": "seq2seq",
    "vision_classification": "vision",
}
_NESTED_FIELDS: tuple[str, ...] = (
    "special_tokens",
    "additional_config",
    "input_schema",
    "output_schema",
    "preprocessing_config",
)
_REQUIRED_FIELDS: tuple[str, ...] = ("name", "task_type", "input_fields")


class ReadOnlyDict(dict[str, Any]):
    """A ``dict`` that refuses mutation, is hashable, and still pickles and JSON-serialises.

    ``types.MappingProxyType`` would be read-only too, but it cannot be pickled (DataLoader
    workers pickle datasets that hold a task) nor passed to ``json.dumps``.
    """

    def _refuse(self) -> NoReturn:
        raise TypeError("TaskSpec mappings are read-only; use TaskSpec.merged() to derive a task")

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        self._refuse()

    def __delitem__(self, key: str) -> NoReturn:
        self._refuse()

    def __ior__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        self._refuse()

    def clear(self) -> NoReturn:
        self._refuse()

    def pop(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse()

    def popitem(self) -> NoReturn:
        self._refuse()

    def setdefault(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse()

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        return (ReadOnlyDict, (dict(self),))

    def __copy__(self) -> ReadOnlyDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyDict:
        return self


def _freeze(value: Any) -> Any:
    """Turn nested mappings into ``ReadOnlyDict`` and lists into tuples."""
    if isinstance(value, Mapping):
        return ReadOnlyDict({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of ``_freeze``: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


def _got(value: object) -> str:
    return f"got {shown(value, 60)} ({type(value).__name__})"


def _supported_types_text() -> str:
    return ", ".join(TASK_TYPES)


class _Checker:
    """Collects every problem with a task, so the user fixes them all in one go."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)

    def text(self, name: str, value: object, *, optional: bool = False) -> None:
        if optional and value is None:
            return
        if not isinstance(value, str) or not value.strip():
            kind = "a non-empty string or null" if optional else "a non-empty string"
            self.fail(f"{name} must be {kind}, {_got(value)}")

    def str_tuple(self, name: str, value: object, *, allow_empty: bool) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            self.fail(f"{name} must be a list of strings such as ['input_ids'], {_got(value)}")
            return ()
        items = tuple(value)
        bad = [item for item in items if not isinstance(item, str) or not item.strip()]
        if bad:
            self.fail(f"{name} must contain only non-empty strings, got {bad!r}")
        elif not items and not allow_empty:
            self.fail(f"{name} must not be empty: name at least one model input")
        elif len(set(items)) != len(items):
            dupes = sorted({item for item in items if items.count(item) > 1})
            self.fail(f"{name} lists {dupes!r} more than once")
        return items

    def mapping(self, name: str, value: object, allowed: tuple[str, ...] | None) -> bool:
        if not isinstance(value, Mapping):
            self.fail(f"{name} must be a mapping (a JSON object), {_got(value)}")
            return False
        ok = True
        for key in value:
            if not isinstance(key, str):
                self.fail(f"{name} keys must be strings, got {key!r}")
                ok = False
            elif allowed is not None and key not in allowed:
                self.fail(
                    f"{name} has unknown key {key!r}{did_you_mean(key, allowed)}; "
                    f"valid keys: {', '.join(allowed)}"
                )
                ok = False
        return ok

    def int_at_least(self, name: str, value: object, minimum: int, limit: str) -> None:
        """An integer from ``minimum`` to ``LIMITS[limit]`` (a bound keeps typos finite)."""
        maximum = LIMITS[limit]
        if not is_int(value) or not minimum <= value <= maximum:  # type: ignore[operator]
            self.fail(f"{name} must be an integer >= {minimum} and <= {maximum:_}, {_got(value)}")


@dataclass(frozen=True)
class TaskSpec:
    """An immutable, validated description of a task.

    ``name`` and ``task_type`` may be passed positionally; everything else is keyword-only.
    Lists are stored as tuples and mappings as ``ReadOnlyDict``. Invalid values raise
    ``TaskSpecError`` naming every offending field and the expected form.
    """

    name: str
    task_type: str
    _: KW_ONLY
    model_family: str = "custom"
    input_fields: tuple[str, ...]
    target_field: str | None = "labels"
    loss_type: str = "cross_entropy"
    metrics: tuple[str, ...] = ("loss",)
    special_tokens: Mapping[str, int] = field(default_factory=dict)
    additional_config: Mapping[str, Any] = field(default_factory=dict)
    modality: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)
    preprocessing_config: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check = _Checker()
        self._check_fields(check)
        if not check.errors:
            self._check_consistency(check)
        if check.errors:
            label = self.name if isinstance(self.name, str) else "<unnamed>"
            raise TaskSpecError(bulleted(f"invalid TaskSpec {label!r}:", check.errors))

    # -- validation -----------------------------------------------------------------------

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_fields(self, check: _Checker) -> None:
        check.text("name", self.name)
        if not isinstance(self.task_type, str) or self.task_type not in TASK_TYPES:
            if self.task_type in _UNIMPLEMENTED_TASK_TYPES:
                check.fail(
                    f"task_type {self.task_type!r} is not implemented (no adapter, data or "
                    f"metrics); supported task types: {_supported_types_text()}"
                )
            else:
                hint = (
                    did_you_mean(self.task_type, TASK_TYPES)
                    if isinstance(self.task_type, str)
                    else ""
                )
                check.fail(
                    f"task_type must be one of {_supported_types_text()}, "
                    f"{_got(self.task_type)}{hint}"
                )
        check.text("model_family", self.model_family)
        self._set(
            "input_fields", check.str_tuple("input_fields", self.input_fields, allow_empty=False)
        )
        check.text("target_field", self.target_field, optional=True)
        check.text("loss_type", self.loss_type)
        self._set("metrics", check.str_tuple("metrics", self.metrics, allow_empty=True))

        if check.mapping("special_tokens", self.special_tokens, None):
            for key, token in self.special_tokens.items():
                check.int_at_least(f"special_tokens.{key}", token, 0, "vocab_size")
            self._set("special_tokens", _freeze(self.special_tokens))

        if check.mapping("additional_config", self.additional_config, None):
            if not is_json_value(self.additional_config):
                check.fail(
                    "additional_config must hold only JSON values (strings, finite numbers, "
                    "booleans, null, lists and objects)"
                )
            self._set("additional_config", _freeze(self.additional_config))

        if self.modality == "":
            # Derived from the task type; an invalid task type is reported above already.
            if self.task_type in _FAMILY_OF_TYPE:
                derived = "vision" if _FAMILY_OF_TYPE[self.task_type] == "vision" else "text"
                self._set("modality", derived)
        elif self.modality in _UNIMPLEMENTED_MODALITIES:
            check.fail(
                f"modality {self.modality!r} is not implemented; supported modalities: "
                f"{', '.join(MODALITIES)}"
            )
        if self.modality != "" and self.modality not in MODALITIES + _UNIMPLEMENTED_MODALITIES:
            check.fail(f"modality must be one of {', '.join(MODALITIES)}, {_got(self.modality)}")

        if check.mapping("input_schema", self.input_schema, INPUT_SCHEMA_KEYS):
            self._check_input_schema(check, self.input_schema)
            self._set("input_schema", _freeze(self.input_schema))
        if check.mapping("output_schema", self.output_schema, OUTPUT_SCHEMA_KEYS):
            out = self.output_schema
            if "vocab_size" in out:
                check.int_at_least("output_schema.vocab_size", out["vocab_size"], 1, "vocab_size")
            if "num_classes" in out:
                check.int_at_least(
                    "output_schema.num_classes", out["num_classes"], 2, "num_classes"
                )
            self._set("output_schema", _freeze(out))
        if self.preprocessing_config is not None and check.mapping(
            "preprocessing_config", self.preprocessing_config, PREPROCESSING_KEYS
        ):
            self._check_preprocessing(check, self.preprocessing_config)
            self._set("preprocessing_config", _freeze(self.preprocessing_config))

    @staticmethod
    def _check_input_schema(check: _Checker, schema: Mapping[str, Any]) -> None:
        for key in ("vocab_size", "max_seq_len", "max_target_len"):
            if key in schema:
                check.int_at_least(f"input_schema.{key}", schema[key], 1, key)
        if "image_size" in schema:
            size = schema["image_size"]
            if (
                not isinstance(size, (list, tuple))
                or len(size) != 3
                or not all(is_int(d) and d >= 1 for d in size)
                or size[0] > LIMITS["channels"]
                or max(size[1:]) > LIMITS["image_side"]
            ):
                check.fail(
                    "input_schema.image_size must be [channels, height, width] with integers "
                    f">= 1, at most {LIMITS['channels']} channels and {LIMITS['image_side']} "
                    f"pixels a side, {_got(size)}"
                )
        if "channels_first" in schema and not isinstance(schema["channels_first"], bool):
            value = schema["channels_first"]
            check.fail(f"input_schema.channels_first must be true or false, {_got(value)}")

    @staticmethod
    def _check_preprocessing(check: _Checker, config: Mapping[str, Any]) -> None:
        if "normalize" in config and not isinstance(config["normalize"], bool):
            check.fail(
                f"preprocessing_config.normalize must be true or false, {_got(config['normalize'])}"
            )
        for key in ("mean", "std"):
            if key not in config:
                continue
            value = config[key]
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values or not all(is_number(v) for v in values):
                check.fail(
                    f"preprocessing_config.{key} must be a number or a list of numbers, "
                    f"{_got(value)}"
                )
            elif key == "std" and not all(v > 0 for v in values):
                check.fail(f"preprocessing_config.std must be positive, {_got(value)}")
        if "augmentations" in config:
            check.str_tuple(
                "preprocessing_config.augmentations", config["augmentations"], allow_empty=True
            )

    def _check_consistency(self, check: _Checker) -> None:
        family = self.family
        schema_in, schema_out = self.input_schema, self.output_schema
        if family == "vision":
            if self.modality != "vision":
                check.fail(f"modality must be 'vision' for task_type {self.task_type!r}")
            if "image_size" not in schema_in:
                check.fail("input_schema.image_size is required for vision tasks, e.g. [3, 32, 32]")
            for key in ("vocab_size", "max_seq_len", "max_target_len"):
                if key in schema_in:
                    check.fail(f"input_schema.{key} does not apply to vision tasks")
        else:
            if self.modality != "text":
                check.fail(f"modality must be 'text' for task_type {self.task_type!r}")
            for key in ("image_size", "channels_first"):
                if key in schema_in:
                    check.fail(f"input_schema.{key} only applies to vision tasks")
        if family in ("vision", "classification"):
            if "num_classes" not in schema_out:
                check.fail(
                    f"output_schema.num_classes is required for task_type {self.task_type!r}"
                )
            if "vocab_size" in schema_out:
                check.fail(
                    "output_schema.vocab_size only applies to lm and seq2seq tasks; "
                    "put the input vocabulary in input_schema.vocab_size"
                )
        else:
            if "max_seq_len" not in schema_in:
                check.fail(f"input_schema.max_seq_len is required for task_type {self.task_type!r}")
            if "num_classes" in schema_out:
                check.fail(f"output_schema.num_classes does not apply to {self.task_type!r} tasks")
        if "max_target_len" in schema_in and family != "seq2seq":
            check.fail("input_schema.max_target_len only applies to seq2seq tasks")
        if (
            family == "lm"
            and "vocab_size" in schema_in
            and "vocab_size" in schema_out
            and schema_in["vocab_size"] != schema_out["vocab_size"]
        ):
            check.fail(
                f"input_schema.vocab_size ({schema_in['vocab_size']}) and "
                f"output_schema.vocab_size ({schema_out['vocab_size']}) must agree for an LM"
            )
        vocab = self.vocab_size
        if vocab is not None:
            for key, token in self.special_tokens.items():
                if token >= vocab:
                    check.fail(f"special_tokens.{key} ({token}) must be < vocab_size ({vocab})")
        if family == "vision" and self.preprocessing_config is not None:
            self._expand_per_channel(check)

    def _expand_per_channel(self, check: _Checker) -> None:
        """Expand scalar mean/std to one value per channel and check list lengths."""
        assert self.preprocessing_config is not None  # for mypy; checked by the caller
        channels = self.input_schema["image_size"][0]  # always [C, H, W]
        config = dict(self.preprocessing_config)
        for key in ("mean", "std"):
            if key not in config:
                continue
            value = config[key]
            if isinstance(value, tuple):
                if len(value) != channels:
                    check.fail(
                        f"preprocessing_config.{key} has {len(value)} values but the image has "
                        f"{channels} channels"
                    )
            else:
                config[key] = (value,) * channels
        self._set("preprocessing_config", _freeze(config))

    # -- derived properties -----------------------------------------------------------------

    @property
    def task_name(self) -> str:
        """Alias of ``name``, for configs that spell it this way."""
        return self.name

    @property
    def family(self) -> str:
        """The adapter family: ``lm``, ``classification``, ``seq2seq`` or ``vision``."""
        return _FAMILY_OF_TYPE[self.task_type]

    @property
    def is_text(self) -> bool:
        return self.modality == "text"

    @property
    def is_vision(self) -> bool:
        return self.modality == "vision"

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary size if known; None means "read it from the model's embedding"."""
        value = self.input_schema.get("vocab_size", self.output_schema.get("vocab_size"))
        return int(value) if value is not None else None

    @property
    def max_seq_len(self) -> int | None:
        value = self.input_schema.get("max_seq_len")
        return int(value) if value is not None else None

    @property
    def max_target_len(self) -> int | None:
        """The decoder length of a seq2seq task; defaults to ``max_seq_len``."""
        value = self.input_schema.get("max_target_len")
        return int(value) if value is not None else self.max_seq_len

    @property
    def image_size(self) -> tuple[int, ...] | None:
        value = self.input_schema.get("image_size")
        return tuple(value) if value is not None else None

    @property
    def channels_first(self) -> bool:
        return bool(self.input_schema.get("channels_first", True))

    @property
    def num_classes(self) -> int | None:
        value = self.output_schema.get("num_classes")
        return int(value) if value is not None else None

    @property
    def pad_token_id(self) -> int | None:
        return self.special_tokens.get("pad_token_id")

    @property
    def decoder_start_token_id(self) -> int | None:
        """The first decoder token of a seq2seq task; defaults to the pad token (T5 style)."""
        return self.special_tokens.get("decoder_start_token_id", self.pad_token_id)

    def get_input_shape(self, batch_size: int = 1) -> tuple[int, ...]:
        """The shape of the main input tensor: ``(B, T)`` for text, ``(B, C, H, W)`` for images.

        A vision task with ``channels_first`` false gives ``(B, H, W, C)``.
        """
        if not is_int(batch_size) or batch_size < 1:
            raise TaskSpecError(f"batch_size must be an integer >= 1, {_got(batch_size)}")
        if self.is_vision:
            size = self.image_size
            assert size is not None  # guaranteed by validation
            channels, height, width = size
            if self.channels_first:
                return (batch_size, channels, height, width)
            return (batch_size, height, width, channels)
        if self.max_seq_len is None:
            raise TaskSpecError(
                f"task {self.name!r} has no input_schema.max_seq_len, so the input shape is "
                "unknown; set it with task.merged({'input_schema': {'max_seq_len': N}})"
            )
        return (batch_size, self.max_seq_len)

    # -- derivation -------------------------------------------------------------------------

    def with_vocab_size(self, vocab_size: int) -> TaskSpec:
        """Return a copy whose input (and, for lm/seq2seq, output) vocabulary is ``vocab_size``."""
        if not is_int(vocab_size) or vocab_size < 1:
            raise TaskSpecError(f"vocab_size must be an integer >= 1, {_got(vocab_size)}")
        if self.is_vision:
            raise TaskSpecError(f"task {self.name!r} is a vision task; it has no vocabulary")
        overrides: dict[str, Any] = {"input_schema": {"vocab_size": vocab_size}}
        if self.family in ("lm", "seq2seq"):
            overrides["output_schema"] = {"vocab_size": vocab_size}
        return self.merged(overrides)

    def merged(self, overrides: Mapping[str, Any]) -> TaskSpec:
        """Return a validated copy with ``overrides`` applied.

        The mapping fields (schemas, special tokens, additional and preprocessing config) are
        merged key by key, and a nested value of ``None`` removes that key; every other field is
        replaced.
        """
        if not isinstance(overrides, Mapping):
            raise TaskSpecError(
                f"overrides must be a mapping of TaskSpec fields, {_got(overrides)}"
            )
        _reject_unknown_keys(overrides)
        data = self.to_dict()
        for key, value in overrides.items():
            if key in _NESTED_FIELDS and isinstance(value, Mapping):
                current = dict(data[key] or {})
                for sub_key, sub_value in value.items():
                    if sub_value is None:
                        current.pop(sub_key, None)
                    else:
                        current[sub_key] = _thaw(sub_value)
                data[key] = current
            else:
                data[key] = _thaw(value)
        return type(self).from_dict(data)

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (lists, not tuples) in field order."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Build a task from a mapping; unknown keys name the closest valid key."""
        if not isinstance(data, Mapping):
            raise TaskSpecError(f"a task must be a mapping (JSON object), {_got(data)}")
        _reject_unknown_keys(data)
        missing = [key for key in _REQUIRED_FIELDS if key not in data]
        if missing:
            raise TaskSpecError(
                f"task is missing required field(s): {', '.join(missing)} "
                f"(required: {', '.join(_REQUIRED_FIELDS)})"
            )
        return cls(**dict(data))

    def to_json(self, *, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskSpecError(
                f"invalid task JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the task as JSON, atomically (temporary file + ``os.replace``)."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaskSpec:
        """Read a task saved with ``save``; errors name the file (and line, for bad JSON)."""
        data = read_json_object(path, TaskSpecError)
        try:
            return cls.from_dict(data)
        except TaskSpecError as exc:
            raise TaskSpecError(f"{os.fspath(path)}: {exc}") from None


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TaskSpec))


def _reject_unknown_keys(data: Mapping[str, Any]) -> None:
    unknown = [key for key in data if key not in _FIELD_NAMES]
    if unknown:
        details = [f"{key!r}{did_you_mean(str(key), _FIELD_NAMES)}" for key in unknown]
        raise TaskSpecError(
            f"unknown TaskSpec field(s): {', '.join(details)}; valid fields: "
            f"{', '.join(_FIELD_NAMES)}"
        )


# -- built-in tasks ---------------------------------------------------------------------------

_BUILTIN_TASKS: dict[str, dict[str, Any]] = {
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
        "preprocessing_config": {"normalize": True, "mean": 0.5, "std": 0.5},
    },
}


def builtin_task_names() -> list[str]:
    """The names of the built-in tasks, in a stable order."""
    return list(_BUILTIN_TASKS)


def get_builtin_task(name: str) -> TaskSpec:
    """Return the built-in task ``name``; an unknown name lists the built-ins."""
    if not isinstance(name, str) or name not in _BUILTIN_TASKS:
        hint = did_you_mean(name, _BUILTIN_TASKS) if isinstance(name, str) else ""
        raise TaskSpecError(
            f"unknown built-in task {name!r}{hint}; built-in tasks: {', '.join(_BUILTIN_TASKS)}"
        )
    return TaskSpec.from_dict(_BUILTIN_TASKS[name])


def resolve_task(value: str | os.PathLike[str] | Mapping[str, Any] | TaskSpec) -> TaskSpec:
    """Turn what a user wrote (``--task``, a module's ``TASK``) into a ``TaskSpec``.

    Accepted: a built-in name; a mapping whose ``"name"`` is a built-in, merged over that
    built-in (see ``TaskSpec.merged``); a complete task mapping; a path to a ``.json`` file
    holding either kind of mapping (so a file and a module's ``TASK`` dict mean the same); or a
    ``TaskSpec``, returned as is.
    """
    if isinstance(value, TaskSpec):
        return value
    builtins = ", ".join(_BUILTIN_TASKS)
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if text in _BUILTIN_TASKS:
            return get_builtin_task(text)
        if text.endswith(".json") or Path(text).is_file():
            data = read_json_object(text, TaskSpecError)
            try:
                return resolve_task(data)
            except TaskSpecError as exc:
                raise TaskSpecError(f"{text}: {exc}") from None
        raise TaskSpecError(
            f"unknown task {text!r}{did_you_mean(text, _BUILTIN_TASKS)}: give a built-in task "
            f"({builtins}) or the path of a .json task file"
        )
    if isinstance(value, Mapping):
        base = value.get("name")
        if isinstance(base, str) and base in _BUILTIN_TASKS:
            return get_builtin_task(base).merged(value)
        missing = [key for key in _REQUIRED_FIELDS if key not in value]
        if missing:
            hint = did_you_mean(base, _BUILTIN_TASKS) if isinstance(base, str) else ""
            raise TaskSpecError(
                f"task mapping is missing required field(s): {', '.join(missing)}. A mapping "
                f"must either name a built-in task to merge over ({builtins}) or be complete; "
                f"its name {base!r} is not a built-in{hint}"
            )
        return TaskSpec.from_dict(value)
    raise TaskSpecError(
        f"a task must be a built-in name, a .json path, a mapping or a TaskSpec, {_got(value)}"
    )
