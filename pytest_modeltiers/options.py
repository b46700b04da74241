"""The plugin's options, declared once for pytest and the ``modeltiers`` command.

PYTEST_DONT_REWRITE

Every option has a command-line flag and an ini twin (``modeltiers_*``). The command line wins
over the ini file, which wins over the default. Values are checked by the option's parser, so a
bad value is reported with the option's name and the accepted forms before anything runs.
This module imports only the standard library (and the export package's standard-library
``formats``): it is loaded by every pytest run.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_modeltiers.export.formats import (
    DEFAULT_FORMATS,
    ONNX_EXPORTERS,
    QUANTIZATION_MODES,
    parse_formats,
)

PROFILES = ("fast", "ci", "thorough")
SANDBOX_MODES = ("auto", "on", "off")


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


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise OptionValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


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


# -- tier 4 parsers (the export package's standard-library modules hold the rules) -------------


def _parse_export_formats(value: str) -> tuple[str, ...]:
    try:
        return parse_formats(value)
    except ValueError as exc:
        raise OptionValueError(str(exc)) from None


def _parse_export_tolerance(value: str) -> str:
    from pytest_modeltiers.export.tolerances import ToleranceError, parse_tolerance

    try:
        parse_tolerance(value)
    except ToleranceError as exc:
        raise OptionValueError(str(exc)) from None
    return value


# -- tier 2 parsers -------------------------------------------------------------------------


def _parse_share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise OptionValueError(f"expected a share from 0 to 1 such as 0.9, got {value!r}") from None
    if not 0 <= share <= 1:
        raise OptionValueError(f"expected a share from 0 to 1 such as 0.9, got {value!r}")
    return share


# -- tier 5 parsers -------------------------------------------------------------------------

_RUN_ID = re.compile(r"^[1-9][0-9]*$")
_PROFILE_SPEC = re.compile(r"^[1-9][0-9]*(:.+)?$")
_DATA_SUFFIXES = (".pt", ".jsonl")


def _parse_json_file(value: str) -> str:
    if not value.strip() or not value.lower().endswith(".json"):
        raise OptionValueError(f"expected a .json file, got {value!r}")
    return value


def _parse_data_file(value: str) -> str:
    if not value.strip() or not value.lower().endswith(_DATA_SUFFIXES):
        raise OptionValueError(
            f"expected a dataset file ending in .pt (a dict of tensors) or .jsonl (one example "
            f"per line), got {value!r}"
        )
    return value


def _parse_run_spec(value: str) -> str:
    """A run of the experiment database: its id, ``latest`` or its name (resolved at start)."""
    text = value.strip()
    if not text or (text.isdigit() and not _RUN_ID.match(text)):
        raise OptionValueError(
            "expected a run id of the experiment database (a positive integer), a run name, "
            f"or latest (the newest completed run with a checkpoint), got {value!r}"
        )
    return text


def _parse_profile_spec(value: str) -> str:
    text = value.strip()
    if _PROFILE_SPEC.match(text) or text.lower().endswith(".json"):
        return text
    raise OptionValueError(
        f"expected a profile file (path/to/profile.json), a run id (RUN_ID, its profile "
        f"'dataset_profile') or RUN_ID:NAME, got {value!r}"
    )


def _parse_fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        raise OptionValueError(f"expected a fraction such as 0.1, got {value!r}") from None
    if not 0 <= fraction < 1:
        raise OptionValueError(f"expected a fraction from 0 to 1 (exclusive), got {value!r}")
    return fraction


def _parse_alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise OptionValueError(
            f"expected a significance level such as 0.05, got {value!r}"
        ) from None
    if not 0 < alpha < 1:
        raise OptionValueError(f"expected a significance level between 0 and 1, got {value!r}")
    return alpha


#: What ``--modeltiers-require`` accepts: each names a tier 5 input whose absence fails a check
#: (without it, a check with nothing to judge is skipped): a baseline, a reference profile with
#: outputs, data for every active retraining trigger, evaluation data of the user's own.
REQUIREMENTS: tuple[str, ...] = (
    "tier5.baseline",
    "tier5.reference",
    "tier5.triggers",
    "tier5.eval-data",
)


def _parse_requirements(value: str) -> tuple[str, ...]:
    accepted = ", ".join(REQUIREMENTS)
    names = [name.strip() for name in value.split(",")]
    if not any(names):
        raise OptionValueError(f"expected a comma-separated list of {accepted}, got {value!r}")
    for name in names:
        if name not in REQUIREMENTS:
            close = difflib.get_close_matches(name, REQUIREMENTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionValueError(
                f"unknown input {name!r}{hint}; expected a comma-separated list of {accepted}"
            )
    return tuple(dict.fromkeys(names))


# -- tier 3/5 storage parsers ---------------------------------------------------------------


def _parse_db_path(value: str) -> str:
    text = value.strip()
    if not text or text == ":memory:" or text.startswith("file::memory:"):
        raise OptionValueError(
            f"expected the path of a SQLite file (for example experiments.db), got {value!r}"
        )
    if text.endswith(("/", os.sep)):
        raise OptionValueError(f"expected a file path, not a directory, got {value!r}")
    return text


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

    @property
    def attribute(self) -> str:
        """Its attribute on ``Settings``: the ini name without its ``modeltiers_`` prefix."""
        return self.dest.removeprefix("modeltiers_")


MODEL_FLAG = "--model"

OPTIONS: tuple[Option, ...] = (
    Option(
        ("--modeltiers-model",),
        "modeltiers_model",
        "model to validate: path/to/file.py, file.py::NAME, package.module:attr or "
        "gist:ID[@REVISION][::NAME] (a GitHub gist, always run in the sandbox); repeat for "
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
        ("--modeltiers-sandbox",),
        "modeltiers_sandbox",
        "confine the process with Landlock before the model file runs (writes only to the "
        "session's outputs, no home directory, no programs but Python, no TCP): auto (where the "
        "kernel supports it; the default), on (a usage error where it does not) or off; a "
        "session running inside another one's process (pytester's in-process runpytest) is "
        "never confined, since confining is irreversible; pytest runs only: the modeltiers "
        "command does not confine itself yet; a gist model runs only confined: off, or no "
        "sandbox, is refused for it unless --trust-model is given too",
        metavar="auto|on|off",
        parse=_choice(SANDBOX_MODES),
    ),
    Option(
        ("--model-sha256",),
        "modeltiers_model_sha256",
        "refuse the model file unless its content has this SHA-256 (a gist: the hash of its "
        "file names and bytes, shown in the session header)",
        metavar="HEX",
        parse=_parse_sha256,
    ),
    Option(
        ("--modeltiers-cache-dir",),
        "modeltiers_cache_dir",
        "folder of the download cache (gist models under gists/ID/REVISION/); default "
        "$XDG_CACHE_HOME/pytest-modeltiers, else ~/.cache/pytest-modeltiers",
        metavar="DIR",
    ),
    Option(
        ("--modeltiers-profile",),
        "modeltiers_profile",
        "Hypothesis budget: fast, ci (derandomized) or thorough; "
        "default ci when CI=true, else fast",
        metavar="NAME",
        parse=_choice(PROFILES),
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
        ("--modeltiers-html",),
        "modeltiers_html",
        "write the session health report as one self-contained HTML page with plots to PATH "
        "(needs matplotlib: pip install 'pytest-modeltiers[report]'); the plots also go to "
        "plots/*.svg beside it",
        metavar="PATH",
    ),
    Option(
        ("--modeltiers-fail-under",),
        "modeltiers_fail_under",
        "fail the session when the health score is below SCORE (0-100)",
        metavar="SCORE",
        parse=_parse_score,
    ),
    Option(
        ("--modeltiers-github",),
        "modeltiers_github",
        "under GitHub Actions (GITHUB_ACTIONS=true), auto appends the health report to the "
        "job summary and annotates each failed check on the model's line; off does neither "
        "(default auto)",
        metavar="auto|off",
        parse=_choice(("auto", "off")),
        default="auto",
    ),
    # -- tier 2: measurements judged only against a bound the user sets ------------------------
    Option(
        ("--tier2-min-agreement",),
        "modeltiers_tier2_min_agreement",
        "fail test_robustness when the share of predictions unchanged under input noise falls "
        "below SHARE at any noise level (default: report only)",
        metavar="SHARE",
        parse=_parse_share,
    ),
    Option(
        ("--tier2-min-radius",),
        "modeltiers_tier2_min_radius",
        "fail test_robustness when the median FGSM robustness radius falls below EPS "
        "(default: report only)",
        metavar="EPS",
        parse=_parse_budget,
    ),
    Option(
        ("--tier2-max-dead-heads",),
        "modeltiers_tier2_max_dead_heads",
        "fail test_attention_health when the share of dead (uniform) or one-key heads exceeds "
        "SHARE (default: report only)",
        metavar="SHARE",
        parse=_parse_share,
    ),
    # -- tier 5: evaluation, baseline regression, drift ----------------------------------------
    Option(
        ("--eval-data",),
        "modeltiers_eval_data",
        "held-out data for test_eval_metrics and test_baseline_regression: a .pt dict of tensors "
        "or a .jsonl file in the raw batch layout (default: the task's shipped test split)",
        metavar="PATH",
        parse=_parse_data_file,
    ),
    Option(
        ("--eval-config",),
        "modeltiers_eval_config",
        "EvalConfig JSON for tier 5 (dataset_id, split, max_eval_examples, batch_size, "
        "max_seq_length, ...): which shipped split or file, how many examples, how batched "
        "(default: the whole test split, batches of 16)",
        metavar="PATH",
        parse=_parse_json_file,
    ),
    Option(
        ("--current-data",),
        "modeltiers_current_data",
        "data to check for drift against the reference profile: .pt or .jsonl "
        "(default: the task's shipped test split)",
        metavar="PATH",
        parse=_parse_data_file,
    ),
    Option(
        ("--baseline-run",),
        "modeltiers_baseline_run",
        "experiment-database run whose checkpoint test_baseline_regression compares the model "
        "with: a run id, a run name (its newest run) or latest (the newest completed run with a "
        "checkpoint, from before this session) (needs --experiment-db)",
        metavar="RUN",
        parse=_parse_run_spec,
    ),
    Option(
        ("--reference-profile",),
        "modeltiers_reference_profile",
        "reference profile for the drift tests: profile.json, or RUN_ID[:NAME] of the "
        "experiment database (default name dataset_profile)",
        metavar="RUN_ID|FILE",
        parse=_parse_profile_spec,
    ),
    Option(
        ("--regression-tolerance",),
        "modeltiers_regression_tolerance",
        "relative change of the primary metric that test_baseline_regression tolerates "
        "(default 0.1)",
        metavar="FRACTION",
        parse=_parse_fraction,
        default=0.1,
    ),
    Option(
        ("--drift-alpha",),
        "modeltiers_drift_alpha",
        "significance level of the drift tests before the Bonferroni correction (default 0.05)",
        metavar="ALPHA",
        parse=_parse_alpha,
        default=0.05,
    ),
    Option(
        ("--model-registry",),
        "modeltiers_registry",
        "model registry (SQLite file): its 'production' model is the baseline of "
        "test_baseline_regression when --baseline-run is not given, and of the retraining "
        "triggers",
        metavar="PATH",
        parse=_parse_db_path,
    ),
    Option(
        ("--retraining-policy",),
        "modeltiers_retraining_policy",
        "retraining triggers evaluated by test_retraining_triggers: a preset (conservative, "
        "balanced, aggressive) or a JSON policy file (default: balanced)",
        metavar="PRESET|FILE",
        default="balanced",
    ),
    Option(
        ("--retraining-gate",),
        "modeltiers_retraining_gate",
        "severity at which test_retraining_triggers fails: info, warning or critical "
        "(default: the policy's gate, critical unless the policy says otherwise)",
        metavar="SEVERITY",
        parse=_choice(("info", "warning", "critical")),
    ),
    Option(
        ("--modeltiers-require",),
        "modeltiers_require",
        "tier 5 inputs whose absence fails a check instead of skipping it, comma-separated: "
        + ", ".join(REQUIREMENTS),
        metavar="LIST",
        parse=_parse_requirements,
        default=(),
    ),
    # -- tier 3/5 storage ----------------------------------------------------------------------
    Option(
        ("--experiment-db",),
        "modeltiers_experiment_db",
        "experiment database (SQLite file, created if missing) where test_training_run logs its "
        "run and the tier 5 tests find baselines (default: a file in the session's temp dir)",
        metavar="PATH",
        parse=_parse_db_path,
    ),
    # -- tier 4: export --------------------------------------------------------------------
    Option(
        ("--export-formats",),
        "modeltiers_export_formats",
        "comma-separated export formats of tier 4: onnx, torch_export, torchscript (legacy), "
        "pytorch (default onnx,torch_export,pytorch)",
        metavar="LIST",
        parse=_parse_export_formats,
        default=DEFAULT_FORMATS,
    ),
    Option(
        ("--export-dir",),
        "modeltiers_export_dir",
        "directory for tier 4 artifacts, one subdirectory per model (default: pytest's "
        "temporary directory)",
        metavar="DIR",
    ),
    Option(
        ("--export-tolerance",),
        "modeltiers_export_tolerance",
        "parity tolerance FORMAT[.DTYPE]=ATOL,RTOL[,MAX_MISMATCH_FRACTION[,MIN_TOP1]], e.g. "
        "onnx=1e-4,1e-3 or quantized=0.1,0.1,0.01,0.9; repeatable; overrides pyproject.toml "
        "[tool.modeltiers.tolerance]",
        metavar="SPEC",
        multiple=True,
        parse=_parse_export_tolerance,
    ),
    Option(
        ("--export-quantization",),
        "modeltiers_export_quantization",
        "int8 model of test_quantized_parity: dynamic (Linear weights), static (calibrated on "
        "the task's data) or none (default dynamic)",
        metavar="MODE",
        parse=_choice(QUANTIZATION_MODES),
        default="dynamic",
    ),
    Option(
        ("--export-onnx-exporter",),
        "modeltiers_export_onnx_exporter",
        "ONNX exporter: dynamo (torch.onnx.export(dynamo=True)) or legacy (TorchScript-based) "
        "(default dynamo)",
        metavar="NAME",
        parse=_choice(ONNX_EXPORTERS),
        default="dynamo",
    ),
    Option(
        ("--export-latency-budget",),
        "modeltiers_export_latency_budget",
        "fail test_export_latency when an artifact's median latency exceeds MS milliseconds "
        "(default: report only)",
        metavar="MS",
        parse=_parse_budget,
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
