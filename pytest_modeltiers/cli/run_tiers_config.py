"""The ``modeltiers run-tiers`` config: its keys, validated, mapped to pytest options.

PYTEST_DONT_REWRITE

Every key is checked, and an unknown one names the closest known key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_modeltiers.config._util import (
    bool_rule,
    bulleted,
    choice_rule,
    did_you_mean,
    int_rule,
    output_path_error,
    read_json_object,
    str_rule,
)
from pytest_modeltiers.config.limits import LIMITS
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.export.formats import FORMATS, QUANTIZATION_MODES

__all__ = ["EXAMPLE_MODELS", "TiersRunConfig", "load_tiers_config"]

#: The example model of each built-in task, in the source checkout's ``example_models/``.
EXAMPLE_MODELS = {
    "lm_tiny": "tiny_gpt.py",
    "cls_tiny": "tiny_encoder_cls.py",
    "seq2seq_tiny": "tiny_seq2seq.py",
    "vision_tiny": "simple_cnn.py",
}
_TOP_KEYS = (
    "task_name",
    "model_file",
    "gist_id",
    "gist_revision",
    "mode",
    "tier",
    "modality",
    "vocab_size",
    "max_seq_len",
    "num_classes",
    "export",
    "eval",
    "db_path",
    "baseline_run_id",
    "reference_profile_id",
    "current_data",
)
_EXPORT_KEYS = ("formats", "quantization", "export_dir")
_EVAL_KEYS = (
    "dataset_id",
    "split",
    "max_eval_examples",
    "batch_size",
    "num_workers",
    "max_seq_length",
    "eval_interval_steps",
    "eval_on_start",
)
_TIERS = {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5}
_MODALITIES = ("text", "vision")
_FORMATS = tuple(FORMATS)


@dataclass(frozen=True)
class TiersRunConfig:
    """A validated ``run-tiers`` config, with paths resolved against the working directory."""

    tier: int
    #: The model file; None for a gist (``gist``), which the plugin fetches.
    model_file: Path | None
    model_note: str
    task_name: str | None
    task_options: tuple[str, ...] = ()
    export: Mapping[str, Any] = field(default_factory=dict)
    eval: Mapping[str, Any] = field(default_factory=dict)
    db_path: Path | None = None
    baseline_run_id: str | None = None
    reference_profile_id: str | None = None
    current_data: Path | None = None
    #: ``gist:ID[@REVISION]`` from ``gist_id`` and ``gist_revision``.
    gist: str | None = None

    @property
    def model_spec(self) -> str:
        """What ``--modeltiers-model`` gets: the model file, or the gist."""
        if self.gist is not None:
            return self.gist
        assert self.model_file is not None
        return str(self.model_file)

    def eval_config(self) -> dict[str, Any] | None:
        """The ``eval`` block as an EvalConfig mapping (``--eval-config``), or None."""
        if not self.eval:
            return None
        block = {k: v for k, v in self.eval.items() if k != "dataset_path"}
        block.setdefault("dataset_id", f"{self.task_name or 'task'}_shipped")
        if "dataset_path" in self.eval:
            block["dataset_id"] = str(self.eval["dataset_path"])
        return block

    def pytest_options(self, eval_config_file: Path | None = None) -> list[str]:
        """The plugin options that run this config's tier on its model.

        ``eval_config_file`` is where the caller wrote ``eval_config()`` as JSON. ``task_name``
        becomes ``--task`` only for a model file without its own ``TASK``: a file's ``TASK``
        (its vocabulary, lengths) describes the model better than the built-in of that name,
        and the caller checks afterwards that the two names agree.
        """
        args = ["--modeltiers-model", self.model_spec, "-m", f"tier{self.tier}"]
        # A gist's TASK is known only once it is fetched: task_name then wins over it.
        if self.task_name and (self.model_file is None or not declares_task(self.model_file)):
            args += ["--task", self.task_name]
        for option in self.task_options:
            args += ["--task-option", option]
        formats = self.export.get("formats")
        if formats:
            args += ["--export-formats", ",".join(formats)]
        if self.export.get("export_dir"):
            args += ["--export-dir", str(self.export["export_dir"])]
        if self.export.get("quantization"):
            args += ["--export-quantization", str(self.export["quantization"])]
        if self.db_path is not None:
            args += ["--experiment-db", str(self.db_path)]
        if self.baseline_run_id is not None:
            args += ["--baseline-run", self.baseline_run_id]
        if self.reference_profile_id is not None:
            args += ["--reference-profile", self.reference_profile_id]
        if eval_config_file is not None:
            args += ["--eval-config", str(eval_config_file)]
        if self.current_data is not None:
            args += ["--current-data", str(self.current_data)]
        return args


def load_tiers_config(path: str | os.PathLike[str], cwd: Path | None = None) -> TiersRunConfig:
    """Read and check a ``run-tiers`` config; every problem is listed in one ``ConfigError``."""
    data = read_json_object(path, ConfigError)
    base = Path.cwd() if cwd is None else cwd
    errors: list[str] = []
    _unknown(data, _TOP_KEYS, "", errors)
    for key, rule in (
        ("task_name", str_rule("task_name", optional=True)),
        ("model_file", str_rule("model_file", optional=True)),
        ("gist_id", str_rule("gist_id", optional=True)),
        ("gist_revision", str_rule("gist_revision", optional=True)),
        ("mode", str_rule("mode", optional=True)),
        ("modality", choice_rule("modality", _MODALITIES, optional=True)),
        ("vocab_size", int_rule("vocab_size", 1, optional=True, maximum=LIMITS["vocab_size"])),
        ("max_seq_len", int_rule("max_seq_len", 1, optional=True, maximum=LIMITS["max_seq_len"])),
        ("num_classes", int_rule("num_classes", 1, optional=True, maximum=LIMITS["num_classes"])),
        ("db_path", str_rule("db_path", optional=True)),
        ("current_data", str_rule("current_data", optional=True)),
    ):
        if key in data and (message := rule(data[key])) is not None:
            errors.append(message)
    tier = _tier(data, errors)
    export = _export(data.get("export"), base, errors)
    eval_block = _eval(data.get("eval"), base, errors)
    ids = {key: _run_id(data, key, errors) for key in ("baseline_run_id", "reference_profile_id")}
    db_path = _path(data.get("db_path"), base)
    if db_path is not None and (
        message := output_path_error("db_path", data["db_path"], db_path, folder=False)
    ):
        errors.append(message)
    gist = _gist(data, errors)
    if errors:
        raise ConfigError(bulleted(f"{path}: invalid run-tiers config:", errors))
    task_name = data.get("task_name")
    model_file: Path | None
    if gist is not None:
        model_file, note = None, f"gist_id {gist.removeprefix('gist:')}"
    else:
        model_file, note = _model_file(data.get("model_file"), task_name, base)
    if data.get("modality") is not None:
        label = data.get("model_file") or gist or os.path.relpath(str(model_file), base)
        _check_modality(data["modality"], task_name, model_file, label)
    options = tuple(
        f"{key}={data[key]}"
        for key in ("vocab_size", "max_seq_len", "num_classes")
        if data.get(key) is not None
    )
    return TiersRunConfig(
        tier=tier,
        model_file=model_file,
        model_note=note,
        task_name=task_name,
        task_options=options,
        export=export,
        eval=eval_block,
        db_path=db_path,
        baseline_run_id=ids["baseline_run_id"],
        reference_profile_id=ids["reference_profile_id"],
        current_data=_path(data.get("current_data"), base),
        gist=gist,
    )


def _gist(data: Mapping[str, Any], errors: list[str]) -> str | None:
    """``gist:ID[@REVISION]`` of ``gist_id`` and ``gist_revision``, checked; None without."""
    from pytest_modeltiers.models.gist import GistError, parse_gist_ref

    gist_id, revision = data.get("gist_id"), data.get("gist_revision")
    if gist_id is None:
        if revision is not None:
            errors.append("gist_revision needs gist_id (the gist it is a revision of)")
        return None
    if data.get("model_file") is not None:
        errors.append("name the model with one of model_file or gist_id, not both")
    if not isinstance(gist_id, str) or not isinstance(revision, str | None):
        return None  # the type rules above said so
    spec = f"gist:{gist_id}" + (f"@{revision}" if revision else "")
    try:
        parse_gist_ref(spec)
    except GistError as exc:
        errors.append(f"gist_id/gist_revision: {exc}")
        return None
    return spec


def _unknown(
    data: Mapping[str, Any], known: tuple[str, ...], where: str, errors: list[str]
) -> None:
    for key in data:
        if key not in known:
            errors.append(f"unknown key {where}{key!r}{did_you_mean(key, known)}")


def _tier(data: Mapping[str, Any], errors: list[str]) -> int:
    raw = data.get("tier")
    if raw is None:
        return 4 if data.get("mode") == "EXPORT" else 1
    text = str(raw).strip().lower().removeprefix("tier") if not isinstance(raw, bool) else ""
    if text not in _TIERS:
        errors.append(f"tier must be 1, 2, 3, 4 or 5 (a number or a string), got {raw!r}")
        return 0
    return _TIERS[text]


def _export(block: Any, base: Path, errors: list[str]) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        errors.append(f"export must be an object with {', '.join(_EXPORT_KEYS)}")
        return {}
    _unknown(block, _EXPORT_KEYS, "export.", errors)
    result: dict[str, Any] = {}
    formats = block.get("formats")
    if formats is not None:
        if not isinstance(formats, list) or not formats:
            errors.append(f"export.formats must be a non-empty list of {', '.join(_FORMATS)}")
        else:
            for name in formats:
                if name not in _FORMATS:
                    hint = did_you_mean(name, _FORMATS) if isinstance(name, str) else ""
                    errors.append(
                        f"export.formats: unknown format {name!r}{hint}; "
                        f"known: {', '.join(_FORMATS)}"
                    )
            result["formats"] = list(formats)
    if "quantization" in block:
        # A null means "no quantization" in these configs; the plugin's own default is dynamic.
        quantization = block["quantization"] or "none"
        rule = choice_rule("export.quantization", QUANTIZATION_MODES, optional=True)
        message = rule(quantization)
        if message:
            errors.append(message)
        result["quantization"] = quantization
    if block.get("export_dir") is not None:
        message = str_rule("export.export_dir")(block["export_dir"])
        if message:
            errors.append(message)
        else:
            export_dir = _path(block["export_dir"], base)
            assert export_dir is not None
            message = output_path_error(
                "export.export_dir", block["export_dir"], export_dir, folder=True
            )
            if message:
                errors.append(message)
            result["export_dir"] = export_dir
    return result


def _eval(block: Any, base: Path, errors: list[str]) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        errors.append(f"eval must be an object with {', '.join(_EVAL_KEYS)}")
        return {}
    _unknown(block, _EVAL_KEYS, "eval.", errors)
    for key in ("max_eval_examples", "batch_size", "max_seq_length"):
        rule = int_rule(f"eval.{key}", 1, optional=True, maximum=LIMITS[key])
        if message := rule(block.get(key)):
            errors.append(message)
    for key in ("num_workers", "eval_interval_steps"):
        message = int_rule(f"eval.{key}", 0, optional=True, maximum=LIMITS[key])(block.get(key))
        if message:
            errors.append(message)
    if "eval_on_start" in block and (
        message := bool_rule("eval.eval_on_start")(block["eval_on_start"])
    ):
        errors.append(message)
    result = {k: v for k, v in block.items() if k in _EVAL_KEYS}
    dataset = block.get("dataset_id")
    if dataset is not None:
        if not isinstance(dataset, str) or not dataset.strip():
            errors.append(f"eval.dataset_id must be a non-empty string (got {dataset!r})")
        elif dataset.endswith((".pt", ".jsonl")):
            result["dataset_path"] = _path(dataset, base)
    return result


def _run_id(data: Mapping[str, Any], key: str, errors: list[str]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        errors.append(f"{key} must be a run id (a number), a file path or null (got {value!r})")
        return None
    return str(value)


def declares_task(model_file: Path) -> bool:
    """Whether the file assigns ``TASK`` at module level (read with ``ast``, nothing runs)."""
    return _task_assignment(model_file) is not None


def _task_assignment(model_file: Path) -> Any:
    """The value node of the file's module-level ``TASK = ...``, or None (nothing runs)."""
    import ast

    try:
        tree = ast.parse(model_file.read_bytes())
    except (OSError, SyntaxError, ValueError, RecursionError):
        return None  # the plugin's loader reports the problem with its own message
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "TASK" for t in targets):
            return value if value is not None else ast.Constant(None)
    return None


def _check_modality(
    modality: str, task_name: str | None, model_file: Path | None, label: str
) -> None:
    """Refuse a ``modality`` that contradicts the task the run will use, when it is known.

    The task is ``task_name``, else the model file's ``TASK`` when it is a literal (a built-in
    name or a dict), else the default ``lm_tiny``. A task that cannot be resolved here is left
    to the plugin, which reports it with its own message.
    """
    import ast
    import contextlib

    from pytest_modeltiers.config.task_spec import resolve_task
    from pytest_modeltiers.errors import TaskSpecError

    candidates: list[tuple[Any, str]] = []
    if task_name is not None:
        candidates.append((task_name, ""))
    node = _task_assignment(model_file) if model_file is not None else None
    if node is not None:
        # A computed TASK raises here: only the plugin can know it.
        with contextlib.suppress(ValueError, TypeError, SyntaxError, RecursionError):
            candidates.append((ast.literal_eval(node), f", TASK in {label}"))
    elif task_name is None and model_file is not None:  # a gist's TASK: known once fetched
        candidates.append(("lm_tiny", ", the default when task_name is not set"))
    for value, where in candidates:
        try:
            task = resolve_task(value)
        except (TaskSpecError, OSError):
            continue
        if task.modality != modality:
            raise ConfigError(
                f"modality {modality!r} disagrees with task {task.name!r} (a {task.modality} "
                f"task{where}); set modality to {task.modality!r} or drop it"
            )


def _path(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _model_file(value: str | None, task_name: str | None, base: Path) -> tuple[Path, str]:
    if value is not None:
        path = _path(value, base)
        assert path is not None
        if path.is_dir():
            raise ConfigError(
                f"model_file {value!r} is a directory; name the model file in it, e.g. "
                f"{value.rstrip('/')}/model.py"
            )
        if not path.is_file():
            raise ConfigError(f"model_file {value!r} does not exist (looked at {path})")
        return path, f"model_file {value}"
    name = task_name or "lm_tiny"
    example = EXAMPLE_MODELS.get(name)
    if example is None:
        raise ConfigError(
            f"model_file is not set and task {name!r} has no example model; add "
            '"model_file": "path/to/model.py" to the config'
        )
    candidate = base / "example_models" / example
    if not candidate.is_file():
        raise ConfigError(
            f"model_file is not set, and the example model of task {name!r} "
            f"(example_models/{example}) is not in {base}: it ships with the source checkout. "
            'Add "model_file": "path/to/model.py" to the config.'
        )
    return candidate, f"model_file not set: using the example model of task {name!r}, " + str(
        Path("example_models") / example
    )
