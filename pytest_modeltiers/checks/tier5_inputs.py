"""Tier 5's input options, checked when the session starts, before anything is collected.

PYTEST_DONT_REWRITE

A reference profile that is garbage, truncated or a training run's, a database option naming a
directory or a foreign file, an evaluation file or config that cannot be read: each is a usage
mistake, so it is reported once, as one line naming the option, the problem and the fix (the
plugin makes it exit code 4), instead of as failed drift tests, an error and a low health score.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.options import option_named

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.settings import Settings

__all__ = ["Tier5InputError", "check_tier5_inputs", "resolve_baseline_run"]

_T = TypeVar("_T")
_RUN_SPEC = re.compile(r"^(?P<run>\d+)(?::(?P<name>.+))?$")


class Tier5InputError(ModelTiersError):
    """A tier 5 option names something unusable; the message is one line: option, value, fix."""


def check_tier5_inputs(settings: Settings, tasks: Mapping[str, TaskSpec]) -> None:
    """Raise ``Tier5InputError`` for the first given tier 5 input that cannot be used.

    ``settings`` are the session's, ``tasks`` each loaded model's task by model key (data
    files are checked against every model that will read them).
    """
    databases = (
        ("modeltiers_experiment_db", settings.experiment_db, "experiment_db"),
        ("modeltiers_registry", settings.registry, "model_registry"),
    )
    for dest, path, kind in databases:
        if path:
            _guard(dest, path, partial(_check_database, path, kind))
    spec = settings.reference_profile
    if spec is not None:
        db = settings.experiment_db
        _guard("modeltiers_reference_profile", spec, partial(_check_reference, spec, db))
    current = settings.current_data
    for key, task in tasks.items():
        where = f" (model {key})" if len(tasks) > 1 else ""
        _check_eval_inputs(settings, task, where)
        if current is not None:
            _guard("modeltiers_current_data", current, partial(_read_data, task, current), where)


def _guard(dest: str, value: Any, check: Callable[[], _T], where: str = "") -> _T:
    """Run ``check``; a ``ModelTiersError`` becomes one line that names the option."""
    try:
        return check()
    except ModelTiersError as exc:
        flag = option_named(dest).display
        text = " ".join(str(exc).split())
        raise Tier5InputError(f"{flag} {value}{where}: {text}") from None


def _check_database(path: str, kind: str) -> None:
    """The file identified read-only; folders that do not exist yet are the store's to create."""
    from pytest_modeltiers.store.sqlite_base import check_database_file

    file = Path(path)
    existing = next((p for p in file.parents if p.exists()), None)
    if existing is not None and existing != file.parent and existing.is_dir():
        return  # a new database in a new folder (runs/experiments.db): created when first used
    check_database_file(file, kind)


def _check_reference(spec: str, db_option: str | None) -> None:
    """What the drift tests will load: a profile file, or a run's profile in the database."""
    from pytest_modeltiers.drift.profile_io import (
        DEFAULT_PROFILE_NAME,
        load_profile,
        load_profile_from_db,
    )

    match = _RUN_SPEC.match(spec.strip())
    if match is None:
        load_profile(spec.strip())
        return
    run, name = int(match["run"]), match["name"] or DEFAULT_PROFILE_NAME
    if not db_option:
        raise Tier5InputError(
            "a run id names a run of the experiment database, but no database is set: add "
            "--experiment-db PATH (or pass a profile .json file)"
        )
    db_path = Path(db_option)
    if not db_path.exists():
        raise Tier5InputError(
            f"it names run {run} of the experiment database, but {db_path} does not exist; "
            "run tier 5 once with --experiment-db to record a reference, or pass a profile "
            ".json file"
        )
    from pytest_modeltiers.store.experiment_db import ExperimentDB, RunNotFoundError
    from pytest_modeltiers.store.sqlite_base import StoreError

    with ExperimentDB(db_path) as db:
        try:
            load_profile_from_db(db, run, name)
        except RunNotFoundError:
            raise
        except StoreError as exc:  # the run exists and stored no profile of that name
            raise Tier5InputError(
                f"{exc} (in {db_path}). Pass the id of a run that stored a profile: a tier 5 "
                f"run with --experiment-db stores {DEFAULT_PROFILE_NAME!r}; a training run "
                "stores none. Or pass a profile .json file."
            ) from None


def _check_eval_inputs(settings: Settings, task: TaskSpec, where: str) -> None:
    """``--eval-config`` parsed, then the evaluation data it and ``--eval-data`` name resolved."""
    data = settings.eval_data
    config_path = settings.eval_config
    if data is None and config_path is None:
        return
    from pytest_modeltiers.config._util import read_json_object
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.errors import ConfigError
    from pytest_modeltiers.evaluation.held_out import resolve_eval_dataset

    config = None
    if config_path is not None:
        read = partial(read_json_object, config_path, ConfigError)
        raw = _guard("modeltiers_eval_config", config_path, read)
        config = _guard("modeltiers_eval_config", config_path, partial(EvalConfig.from_dict, raw))
    if data is not None:
        _guard("modeltiers_eval_data", data, partial(_read_data, task, data), where)
    else:
        # The config's dataset_id (a file) or split decides which data tier 5 evaluates.
        resolve = partial(resolve_eval_dataset, task, config)
        _guard("modeltiers_eval_config", config_path, resolve, where)


def _read_data(task: TaskSpec, path: str) -> None:
    from pytest_modeltiers.evaluation.held_out import resolve_eval_dataset

    resolve_eval_dataset(task, path=path)


def resolve_baseline_run(settings: Settings) -> tuple[str, str] | None:
    """``--baseline-run``'s run id and a line saying which run it is, or None to leave as given.

    Resolved once, when the session starts and before any check records a run of its own, so
    ``latest`` is never this session's run. None without ``--baseline-run`` or a database
    (the check says what is missing), and for ``latest`` when no run saved a checkpoint yet
    (the first run of a CI recipe: the check is skipped, or fails under
    ``--modeltiers-require tier5.baseline``). An id or name not in the database is a
    ``Tier5InputError`` naming the runs there are.
    """
    spec = settings.baseline_run
    db_option = settings.experiment_db
    if spec is None or not db_option:
        return None
    from pytest_modeltiers.store.baseline_transfer import LATEST, resolve_run
    from pytest_modeltiers.store.experiment_db import ExperimentDB

    flag = option_named("modeltiers_baseline_run").display
    db_path = Path(db_option)
    if not db_path.is_file():
        if spec == LATEST:
            return None
        raise Tier5InputError(
            f"{flag} {spec}: the experiment database {db_path} does not exist yet; run tier 5 "
            f"with --experiment-db {db_path} once to record a baseline, or pass "
            f"{flag} {LATEST} (skipped while there is none)"
        )
    with ExperimentDB(db_path) as db:
        try:
            run_id = resolve_run(db, spec)
        except ModelTiersError as exc:
            raise Tier5InputError(f"{flag} {spec}: {' '.join(str(exc).split())}") from None
        if run_id is None:
            return None
        row = db.get_run(run_id)
        if spec == str(run_id):
            return str(run_id), ""
        name, created = row["run_name"], row["created_at"]
        return str(run_id), f"{flag} {spec} is run {run_id} ({name!r}, {created}) of {db_path}"
