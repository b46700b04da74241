"""``modeltiers train --config FILE``: train a model file on its task's data from a JSON config.

PYTEST_DONT_REWRITE

The config keys are the ``modeltiers train`` keys plus every ``TrainingConfig`` field.
Everything is checked before anything is written (exit 2); a training failure exits 1. The
package's modules are imported inside the functions, so ``--help`` never imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.config._util import did_you_mean, output_path_error, read_json_object
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.training.job import JOB_DEFAULTS, eval_block, job_dataset, task_options

if TYPE_CHECKING:
    from pytest_modeltiers.models.gist import GistModel
    from pytest_modeltiers.models.loader import MetaProbe
    from pytest_modeltiers.models.sandbox import Sandbox

__all__ = ["CLI_KEYS", "TrainJob", "main_train", "prepare_job"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Keys of the config file that are not ``TrainingConfig`` fields, with their expected types.
CLI_KEYS: dict[str, tuple[type, ...]] = {
    "model_file": (str,),
    "model_path": (str,),
    "gist_id": (str,),
    "gist_revision": (str,),
    "trust_model": (bool,),
    "sandbox": (str,),
    "eval": (dict,),
    "train_file": (str,),
    "validation_file": (str,),
    "output_dir": (str,),
    "use_gpu": (bool,),
    "log_to_db": (bool,),
    "db_path": (str,),
    "sweep_id": (str,),
    "sweep_params": (dict,),
}


@dataclass
class TrainJob:
    """Everything a validated config asks for, ready to run."""

    loaded: Any
    training: Any
    evaluation: Any
    dataset: Any
    db_path: Path | None
    accelerator: str
    run_fields: dict[str, Any]
    #: The sandbox the model was loaded in (None: off, or unavailable under auto).
    sandbox: Any = None
    #: Params recorded with the run: this config and the model's files (for repro bundles).
    run_params: dict[str, Any] = dataclasses.field(default_factory=dict)


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", dict: "an object", int: "an integer"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_keys(data: Mapping[str, Any]) -> None:
    from pytest_modeltiers.config.training import FIELD_NAMES

    valid = (*CLI_KEYS, *FIELD_NAMES)
    unknown = [key for key in data if key not in valid]
    if unknown:
        details = ", ".join(f"{key!r}{did_you_mean(str(key), valid)}" for key in unknown)
        raise ConfigError(f"unknown config key(s): {details}")
    for key, types in CLI_KEYS.items():
        if key in data and data[key] is not None:
            value = data[key]
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                raise ConfigError(
                    f"{key} must be {_type_name(types)}, got {type(value).__name__} {value!r}"
                )
    sources = [k for k in ("model_file", "model_path", "gist_id") if data.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            "name the model with exactly one of model_file (a path to model.py), model_path "
            f"(its alias) or gist_id; got {sources or 'none'}"
        )


def _model_spec(data: Mapping[str, Any]) -> str:
    if data.get("gist_id"):
        revision = data.get("gist_revision")
        return f"gist:{data['gist_id']}" + (f"@{revision}" if revision else "")
    path = Path(str(data.get("model_file") or data.get("model_path")))
    if not path.is_file():
        raise ConfigError(f"model_file {path} does not exist (paths are relative to {Path.cwd()})")
    return str(path)


def prepare_job(config_path: str | os.PathLike[str], sandbox_mode: str | None = None) -> TrainJob:
    """Read and check the config, enter the sandbox (``sandbox_mode``, else the config's
    ``sandbox`` key, else ``auto``) and load the model; ``ModelTiersError`` on any problem.

    Writes nothing but the empty output folders the sandbox lets the run write: the database
    and the run directory are created only by the run.
    """
    from pytest_modeltiers.cli.train_sandbox import train_sandbox
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.training import FIELD_NAMES, TrainingConfig
    from pytest_modeltiers.models.loader import LoadRequest, load_model
    from pytest_modeltiers.models.spec import parse_model_spec

    data = read_json_object(config_path, ConfigError)
    _check_keys(data)
    _check_output_paths(data)
    spec = _model_spec(data)
    fields = {key: value for key, value in data.items() if key in FIELD_NAMES}
    fields = {**JOB_DEFAULTS, **fields}
    fields.setdefault("run_name", "cli-run")
    fields["checkpoint_dir"] = str(data.get("output_dir") or "training_output")
    training = TrainingConfig.from_dict(fields)  # every field rule, before the model loads
    from pytest_modeltiers.training.loggers import check_trackers

    check_trackers(training)  # a requested tracker's package is missing: before anything
    # The eval block's own rules too; its defaults depend on the task, set below.
    EvalConfig.from_dict({"dataset_id": "checked-before-loading", **dict(data.get("eval") or {})})
    resume = training.resume_from_checkpoint
    if resume:
        from pytest_modeltiers.training.checkpoints import read_checkpoint

        read_checkpoint(resume)
    preflight = _MemoryPreflight(data, training)
    parsed = parse_model_spec(spec, Path.cwd())  # a gist is fetched now, before confinement
    sandbox = train_sandbox(data, training, Path(config_path), sandbox_mode)
    if parsed.gist is not None:
        sandbox = _confine_gist(parsed.gist, sandbox, trust=bool(data.get("trust_model")))
    request = LoadRequest(
        spec=spec,
        rootdir=Path.cwd(),
        task=data.get("task_name"),
        task_options=task_options(data),
        trust=bool(data.get("trust_model", False)),
        preflight=preflight,
        enter_sandbox=sandbox.enter if sandbox is not None else None,
        parsed=parsed,
    )
    loaded = load_model(request)
    if sandbox is not None:
        print(f"modeltiers train: {sandbox.describe()}", file=sys.stderr)
    if "task_name" not in data:
        training = TrainingConfig.from_dict({**training.to_dict(), "task_name": loaded.task.name})
    evaluation = EvalConfig.from_dict(
        eval_block(data, loaded.task.name, training.batch_size, loaded.task.max_seq_len)
    )
    dataset = preflight.dataset if preflight.ran else job_dataset(data, loaded.task)
    log = bool(data.get("log_to_db", False))
    db_path = Path(str(data.get("db_path") or "experiments.db")) if log else None
    run_fields = {k: data[k] for k in ("sweep_id", "sweep_params") if data.get(k) is not None}
    run_fields.update(loaded.run_fields())  # a gist's id, resolved revision and hash
    return TrainJob(
        loaded=loaded,
        training=training,
        evaluation=evaluation,
        dataset=dataset,
        db_path=db_path,
        accelerator="auto" if data.get("use_gpu", True) else "cpu",
        run_fields=run_fields,
        sandbox=sandbox,
        run_params=_run_params(data, loaded),
    )


#: Config keys holding paths, recorded absolute so that a bundle can find the files later.
_PATH_KEYS = ("model_file", "model_path", "train_file", "validation_file", "resume_from_checkpoint")


def _run_params(data: Mapping[str, Any], loaded: Any) -> dict[str, Any]:
    """This config (paths made absolute) and the model file's sources with their hashes."""
    from pytest_modeltiers.repro.source import source_record

    recorded = dict(data)
    for key in _PATH_KEYS:
        if recorded.get(key):
            recorded[key] = str(Path(recorded[key]).absolute())
    params: dict[str, Any] = {"cli_config": recorded}
    if loaded.source_file is not None:
        params["model_source"] = source_record(loaded.source_file, **{"class": loaded.class_name})
    return params


def _confine_gist(gist: GistModel, sandbox: Sandbox | None, *, trust: bool) -> Sandbox | None:
    """A gist is untrusted code: refused without a sandbox unless ``trust_model``; the sandbox
    reads its cache folder (which holds its files only, even under the home directory)."""
    print(f"modeltiers train: {gist.describe()}", file=sys.stderr)
    if sandbox is None:
        if not trust:
            raise ConfigError(
                f"gist_id {gist.id}: a gist model is untrusted code and runs only inside the "
                'sandbox, which is off or unavailable here; drop "sandbox": "off" (or train '
                'where Landlock is, Linux 5.13+), or set "trust_model": true to train it '
                "unconfined and unscanned"
            )
        print(
            f"modeltiers train: WARNING: no sandbox, and trust_model: gist {gist.id} runs "
            "unconfined and unscanned, with all of your rights",
            file=sys.stderr,
        )
        return None
    sandbox.policy = dataclasses.replace(
        sandbox.policy,
        readable=(*sandbox.policy.readable, gist.path.parent),
        allowances=(*sandbox.policy.allowances, f"reading gist {gist.id}"),
    )
    return sandbox


def _check_output_paths(data: Mapping[str, Any]) -> None:
    """Refuse an output path that cannot be created (under a file, not writable) now, before
    the model loads, rather than as a training failure after the database exists."""
    outputs = [("output_dir", data.get("output_dir") or "training_output", True)]
    if data.get("log_to_db"):
        outputs.append(("db_path", data.get("db_path") or "experiments.db", False))
    for key, value, folder in outputs:
        if message := output_path_error(key, value, Path(value), folder=folder):
            raise ConfigError(message)


class _MemoryPreflight:
    """A loader preflight that refuses a run needing more memory than the machine has.

    The estimate (``models.memory_estimate``: parameters x 4 + buffers + activations x 2,
    measured on PyTorch's meta device) uses a batch of ``batch_size`` examples (fewer when the
    data has fewer) shaped like the run's first training example (the user's ``train_file`` or
    the task's shipped data, loaded here once and kept for the run) and is compared with the
    memory available now. A model that cannot be built on the meta device is not estimated,
    and stderr says so.
    """

    def __init__(self, data: Mapping[str, Any], training: Any) -> None:
        self.data = data
        self.batch_size: int = training.batch_size
        self.max_train_samples: int | None = training.max_train_samples
        self.ran = False
        self.dataset: Any = None

    def __call__(self, probe: MetaProbe) -> None:
        from pytest_modeltiers.datasets import DEFAULT_SIZES, task_dataset
        from pytest_modeltiers.models.memory_estimate import (
            available_memory,
            estimate_training_memory,
            format_bytes,
        )

        self.dataset = job_dataset(self.data, probe.task)
        self.ran = True
        if probe.meta_model is None:
            print(
                f"modeltiers train: memory not estimated before building the model: "
                f"{probe.meta_error}",
                file=sys.stderr,
            )
            return
        train = self.dataset["train"] if isinstance(self.dataset, dict) else self.dataset
        example = (train if train is not None else task_dataset(probe.task, size=1))[0]
        if train is None:  # the shipped data is generated at max_train_samples examples
            examples = self.max_train_samples or DEFAULT_SIZES["train"]
        else:
            examples = min(len(train), self.max_train_samples or len(train))
        rows = min(self.batch_size, examples)  # a batch never holds more than the data
        estimate = estimate_training_memory(
            probe.meta_model, probe.task, probe.adapter, rows, example
        )
        available = available_memory()
        if available is not None and estimate.total_bytes > available:
            raise ConfigError(
                f"not enough memory: training this model at batch_size {self.batch_size} needs "
                f"{estimate.describe()}; this machine has {format_bytes(available)} available. "
                "Lower batch_size or max_seq_len, or train a smaller model"
            )
        if estimate.activation_bytes is None:
            print(f"modeltiers train: memory estimate {estimate.describe()}", file=sys.stderr)


def main_train(config_path: str | os.PathLike[str], sandbox_mode: str | None = None) -> int:
    """Run ``modeltiers train --config FILE [--sandbox MODE]``; the exit status (0 ok, 1
    training failed, 2 bad config)."""
    try:
        job = prepare_job(config_path, sandbox_mode)
    except ModelTiersError as exc:
        message = str(exc)
        if not message.startswith(f"{config_path}: "):  # errors of reading it name it already
            message = f"{config_path}: {message}"
        print(f"modeltiers train: {message}", file=sys.stderr)
        return EXIT_USAGE
    from pytest_modeltiers.extras import TIER_EXTRAS, install_command

    train_extra = TIER_EXTRAS["tier3"]
    if missing := train_extra.missing():
        print(
            f"modeltiers train: training needs {', '.join(missing)}, which is not installed; "
            f"install it with {install_command([train_extra.name])}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from pytest_modeltiers.training.run import run_training

    db = None
    try:
        if job.db_path is not None:
            from pytest_modeltiers.store.experiment_db import ExperimentDB

            db = ExperimentDB(job.db_path)
        results = run_training(
            job.loaded.new_model(),
            job.loaded.adapter,
            job.training,
            job.loaded.task,
            job.evaluation,
            db=db,
            dataset=job.dataset,
            accelerator=job.accelerator,
            run_fields=job.run_fields,
            run_params=job.run_params,
        )
    except ModelTiersError as exc:
        print(f"modeltiers train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from pytest_modeltiers.models.sandbox import blocked_message

        reason = blocked_message(exc) or f"{type(exc).__name__}: {exc}"
        print(f"modeltiers train: training failed: {reason}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if db is not None:
            db.close()
        if job.sandbox is not None and job.sandbox.scratch.is_dir():
            shutil.rmtree(job.sandbox.scratch, ignore_errors=True)
    if results.rank == 0:
        print(dumps(results.to_dict(), indent=2))
    return EXIT_OK
