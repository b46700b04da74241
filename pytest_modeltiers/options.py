"""The plugin's options, declared once for pytest and the ``modeltiers`` command.

PYTEST_DONT_REWRITE

Every option has a command-line flag and an ini twin (``modeltiers_*``). The command line wins
over the ini file, which wins over the default. Values are checked by the option's parser, so a
bad value is reported with the option's name and the accepted forms before anything runs.
This module imports only the standard library: it is loaded by every pytest run.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROFILES = ("fast", "ci", "thorough")


class OptionValueError(ValueError):
    """An option's value has the wrong form; the message names the option and the fix."""


def _parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise OptionValueError(f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise OptionValueError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def _parse_profile(value: str) -> str:
    if value not in PROFILES:
        raise OptionValueError(f"expected one of {', '.join(PROFILES)}, got {value!r}")
    return value


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _parse_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise OptionValueError(
            f"expected 64 hexadecimal digits (the output of `sha256sum model.py`), got {value!r}"
        )
    return value.lower()


_TASK_OPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def _parse_task_option(value: str) -> str:
    if not _TASK_OPTION.match(value):
        raise OptionValueError(
            f"expected KEY=VALUE (for example vocab_size=1000 or input_schema.max_seq_len=64), "
            f"got {value!r}"
        )
    return value


def _parse_score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise OptionValueError(f"expected a health score from 0 to 100, got {value!r}") from None
    if not 0 <= score <= 100:
        raise OptionValueError(f"expected a health score from 0 to 100, got {value!r}")
    return score


def _parse_budget(value: str) -> float:
    try:
        budget = float(value)
    except ValueError:
        raise OptionValueError(f"expected a positive number, got {value!r}") from None
    if not math.isfinite(budget) or budget <= 0:
        raise OptionValueError(f"expected a positive number, got {value!r}")
    return budget


def _parse_count(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise OptionValueError(f"expected a whole number, got {value!r}") from None
    if size < 1:
        raise OptionValueError(f"expected at least 1, got {value!r}")
    return size


def _identity(value: str) -> str:
    return value


@dataclass(frozen=True)
class Option:
    """One option: its flags, its ini twin, and how its value is parsed."""

    flags: tuple[str, ...]
    dest: str
    help: str
    metavar: str | None = None
    multiple: bool = False
    flag: bool = False
    parse: Callable[[str], Any] = _identity
    default: Any = None

    @property
    def ini_name(self) -> str:
        return self.dest

    @property
    def display(self) -> str:
        return self.flags[0]


MODEL_FLAG = "--model"

OPTIONS: tuple[Option, ...] = (
    Option(
        ("--modeltiers-model",),
        "modeltiers_model",
        "model to validate: path/to/file.py, file.py::NAME or package.module:attr; repeat for "
        "several models (alias --model unless another plugin or conftest.py defines it)",
        metavar="SPEC",
        multiple=True,
    ),
    Option(
        ("--task",),
        "modeltiers_task",
        "task: a built-in name (lm_tiny, cls_tiny, seq2seq_tiny, vision_tiny) or a task JSON "
        "file; default: the model file's TASK, else inferred from forward()",
        metavar="NAME|FILE",
    ),
    Option(
        ("--task-option",),
        "modeltiers_task_options",
        "override one task field, e.g. vocab_size=1000 or input_schema.max_seq_len=64; repeatable",
        metavar="KEY=VALUE",
        multiple=True,
        parse=_parse_task_option,
    ),
    Option(
        ("--adapter",),
        "modeltiers_adapter",
        "adapter: lm, classification, seq2seq, vision or package.module:Class; default: by task",
        metavar="NAME",
    ),
    Option(
        ("--trust-model",),
        "modeltiers_trust_model",
        "run the model file even if the safety scan finds process, network, dynamic-code or "
        "file-write capabilities in it",
        flag=True,
        default=False,
    ),
    Option(
        ("--model-sha256",),
        "modeltiers_model_sha256",
        "refuse the model file unless its content has this SHA-256",
        metavar="HEX",
        parse=_parse_sha256,
    ),
    Option(
        ("--modeltiers-profile",),
        "modeltiers_profile",
        "Hypothesis budget: fast, ci (derandomized) or thorough; "
        "default ci when CI=true, else fast",
        metavar="NAME",
        parse=_parse_profile,
    ),
    Option(
        ("--modeltiers-timeout",),
        "modeltiers_timeout",
        "seconds allowed for loading the model and for each check (default 300)",
        metavar="SECONDS",
        parse=_parse_timeout,
        default=300.0,
    ),
    Option(
        ("--modeltiers-max-batch-size",),
        "modeltiers_max_batch_size",
        "largest batch the tier checks draw (default 8)",
        metavar="N",
        parse=_parse_count,
        default=8,
    ),
    Option(
        ("--modeltiers-overfit-steps",),
        "modeltiers_overfit_steps",
        "optimizer steps test_overfit_single_batch may take to halve the loss (default 100)",
        metavar="N",
        parse=_parse_count,
    ),
    Option(
        ("--expect-no-grad",),
        "modeltiers_expect_no_grad",
        "parameter name pattern (fnmatch) expected to get no gradient, e.g. 'pooler.*'; repeatable",
        metavar="PATTERN",
        multiple=True,
    ),
    Option(
        ("--modeltiers-memory-budget",),
        "modeltiers_memory_budget",
        "fail test_memory_footprint when parameters, buffers and peak activations of the "
        "reference batch exceed MB megabytes (default: report only)",
        metavar="MB",
        parse=_parse_budget,
    ),
    Option(
        ("--modeltiers-latency-budget",),
        "modeltiers_latency_budget",
        "fail test_inference_speed when the median latency exceeds MS milliseconds "
        "(default: report only)",
        metavar="MS",
        parse=_parse_budget,
    ),
    Option(
        ("--modeltiers-report",),
        "modeltiers_report",
        "write the session health report as JSON to PATH, with a Markdown twin next to it",
        metavar="PATH",
    ),
    Option(
        ("--modeltiers-fail-under",),
        "modeltiers_fail_under",
        "fail the session when the health score is below SCORE (0-100)",
        metavar="SCORE",
        parse=_parse_score,
    ),
)


def option_named(dest: str) -> Option:
    """The option whose destination is ``dest``."""
    for option in OPTIONS:
        if option.dest == dest:
            return option
    raise KeyError(dest)


def default_profile(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """``ci`` when running under CI (``CI=true``), else ``fast``."""
    return "ci" if environ.get("CI", "").lower() in {"1", "true", "yes"} else "fast"


def resolve_value(option: Option, cli_value: Any, ini_value: Any) -> Any:
    """The option's effective value: command line, else ini, else default, parsed and checked.

    Raises ``OptionValueError`` whose message names the option (flag or ini key) that was wrong.
    """
    if option.multiple:
        raw: Sequence[str] = list(cli_value or []) or [str(v) for v in ini_value or []]
        return [_checked(option, item, from_ini=not cli_value) for item in raw]
    if option.flag:
        return bool(cli_value) or bool(ini_value)
    if cli_value is not None:
        return _checked(option, str(cli_value), from_ini=False)
    if ini_value not in (None, ""):
        return _checked(option, str(ini_value).strip(), from_ini=True)
    return option.default


def _checked(option: Option, value: str, *, from_ini: bool) -> Any:
    try:
        return option.parse(value)
    except OptionValueError as exc:
        where = f"ini option {option.ini_name}" if from_ini else option.display
        raise OptionValueError(f"{where}: {exc}") from None
