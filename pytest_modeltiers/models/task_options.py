"""``--task-option KEY=VALUE``: overriding single fields of the chosen task.

PYTEST_DONT_REWRITE

Values are read as JSON when they parse (``64``, ``[3,64,64]``, ``true``), else as strings.
Short keys name the schema field they belong to; dotted keys (``input_schema.max_seq_len``)
reach any nested field; other keys must be ``TaskSpec`` fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable
from typing import Any

from pytest_modeltiers.config.task_spec import TaskSpec
from pytest_modeltiers.errors import ModelSpecError, TaskSpecError

SHORT_KEYS = {
    "max_seq_len": "input_schema",
    "max_target_len": "input_schema",
    "image_size": "input_schema",
    "channels_first": "input_schema",
    "num_classes": "output_schema",
    "pad_token_id": "special_tokens",
    "decoder_start_token_id": "special_tokens",
}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_task_options(task: TaskSpec, options: Iterable[str]) -> TaskSpec:
    """``task`` with each ``KEY=VALUE`` applied in order; errors name the option."""
    fields = {f.name for f in dataclasses.fields(TaskSpec)}
    for option in options:
        key, _, text = option.partition("=")
        value = parse_value(text)
        try:
            if key == "vocab_size":
                task = task.with_vocab_size(value)
                continue
            if key in SHORT_KEYS:
                override: dict[str, Any] = {SHORT_KEYS[key]: {key: value}}
            elif "." in key:
                section, _, inner = key.partition(".")
                if section not in fields:
                    raise ModelSpecError(_unknown(key, section, fields))
                override = {section: {inner: value}}
            elif key in fields:
                override = {key: value}
            else:
                raise ModelSpecError(_unknown(key, key, fields | set(SHORT_KEYS) | {"vocab_size"}))
            task = task.merged(override)
        except TaskSpecError as exc:
            raise ModelSpecError(f"--task-option {option}: {exc}") from None
    return task


def _unknown(option: str, key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    valid_keys = ", ".join(sorted(valid))
    return f"--task-option {option}: unknown task field {key!r}{hint}; valid: {valid_keys}"
