"""Hyperparameter sweeps on Optuna, every trial a run of the experiment database.

PYTEST_DONT_REWRITE

A sweep is an Optuna study whose name is the sweep's ``sweep_id``, kept in a storage that
outlives the process (a journal file next to the database by default), so a sweep that stops
resumes where it stopped and several processes, on one machine or many, share it:

- a grid is queued once, when the study is created (``enqueue_trial``), and each worker takes
  the next queued trial with the storage's atomic WAITING -> RUNNING step, so no combination
  runs twice however many workers take part;
- random and TPE sweeps ask Optuna for trials until the study holds ``n_trials``.

A trial that raises is recorded as failed, with its error, in the study and in the database,
and the sweep goes on; a trial interrupted with Ctrl-C is queued again for the next run.
Optuna is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pytest_modeltiers.config._util import did_you_mean, is_int, is_number
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.extras import SWEEP_EXTRA, feature_missing_error
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.sweeps.space import (
    Dimension,
    apply_params,
    check_keys,
    grid_points,
    is_job_config,
    parse_space,
)
from pytest_modeltiers.sweeps.storage import describe_storage, open_storage

if TYPE_CHECKING:
    import pandas as pd

    from pytest_modeltiers.sweeps.train_job import TrainJob

__all__ = [
    "DIRECTIONS",
    "SAMPLERS",
    "SweepResult",
    "TrialRecord",
    "get_runs_for_sweep",
    "run_grid_sweep",
    "run_sweep",
]

SAMPLERS = ("grid", "random", "tpe")
DIRECTIONS = ("minimize", "maximize")
PRUNERS = ("median", "none")
DEFAULT_METRIC = "val/loss"
#: Study user attribute holding the sweep's definition, checked when a sweep resumes.
DEFINITION_ATTR = "modeltiers_sweep"
#: Study user attribute set once the whole grid is queued.
QUEUED_ATTR = "modeltiers_grid_queued"
#: Trial user attribute holding what the sweep records of a trial, written once as it ends:
#: run_name, run_id, duration_seconds, error, interrupted (one journal write, not five).
TRIAL_ATTR = "modeltiers"
#: How long a worker that found the study waits for its creator to finish queueing the grid.
QUEUE_WAIT_S = 60.0

RunFn = Callable[[Any], Any]


class SweepError(ModelTiersError):
    """The sweep cannot go on (its storage or database refused it); the message says why."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep as the study and the database know it."""

    number: int
    params: dict[str, Any]
    status: str
    value: float | None
    run_id: int | None
    error: str | None
    duration_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SweepResult:
    """Every trial of the sweep (from all workers), in trial order, and the best one."""

    sweep_id: str
    metric: str
    direction: str
    sampler: str
    storage: str
    db_path: str
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def run_ids(self) -> list[int]:
        """The database runs of the trials, in trial order (the guide's return value)."""
        return [t.run_id for t in self.trials if t.run_id is not None]

    @property
    def completed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "completed"]

    @property
    def failed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "failed"]

    @property
    def best(self) -> TrialRecord | None:
        """The completed trial with the best value (None when none completed)."""
        done = [t for t in self.completed if t.value is not None]
        if not done:
            return None
        sign = 1.0 if self.direction == "minimize" else -1.0
        return min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "sweep_id": self.sweep_id,
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "storage": self.storage,
            "db_path": self.db_path,
            "trials": [t.to_dict() for t in self.trials],
            "best": None if best is None else best.to_dict(),
        }


@dataclass(frozen=True)
class _Sweep:
    """Everything a worker needs (picklable, for ``n_jobs`` worker processes)."""

    name: str
    base: Any
    dims: dict[str, Dimension]
    sampler: str
    n_trials: int
    direction: str
    metric: str
    db_path: str
    storage: Any
    run_fn: RunFn | None
    pruner: str
    seed: int | None

    def definition(self) -> dict[str, Any]:
        """What must match when a worker joins or resumes the study (JSON round-tripped)."""
        data: dict[str, Any] = {
            "sampler": self.sampler,
            "metric": self.metric,
            "direction": self.direction,
            "space": {name: dim.to_dict() for name, dim in self.dims.items()},
        }
        if self.sampler != "grid":
            data["n_trials"] = self.n_trials
        result: dict[str, Any] = json.loads(json.dumps(data))
        return result


# --------------------------------------------------------------------------- public API


def run_grid_sweep(
    base_config: Any,
    param_grid: Mapping[str, Sequence[Any]],
    run_fn: RunFn | None = None,
    *,
    db: ExperimentDB | str | os.PathLike[str],
    sweep_name: str | None = None,
    n_jobs: int = 1,
    metric: str = DEFAULT_METRIC,
    direction: str = "minimize",
    storage: Any = None,
) -> SweepResult:
    """Run every combination of ``param_grid`` (dotted config keys -> lists of values) on
    ``base_config``, each trial a run of ``db`` tagged with ``sweep_id`` and ``sweep_params``.

    ``run_fn(config)`` runs one trial on a copy of ``base_config`` with the trial's values
    set, and returns the id of a run of ``db``, a ``TrainingResults`` recorded in ``db``, a
    dict of metrics, or the metric's value as a float. Without ``run_fn``, ``base_config`` is a
    training job (``modeltiers train``'s keys: ``model_file`` and ``TrainingConfig`` fields)
    trained with ``run_training``. The trial's value is the last value of ``metric``.
    ``sweep_name`` names the study: the same name resumes it (completed trials are not run
    again); None starts a new one. ``n_jobs`` worker processes share the study.
    """
    return run_sweep(
        base_config,
        param_grid,
        None,
        "grid",
        direction,
        metric,
        db=db,
        storage=storage,
        run_fn=run_fn,
        sweep_name=sweep_name,
        pruner="none",
        n_jobs=n_jobs,
    )


def run_sweep(
    base_config: Any,
    search_space: Mapping[str, Any],
    n_trials: int | None = None,
    sampler: str = "tpe",
    direction: str = "minimize",
    metric: str = DEFAULT_METRIC,
    *,
    db: ExperimentDB | str | os.PathLike[str],
    storage: Any = None,
    run_fn: RunFn | None = None,
    sweep_name: str | None = None,
    pruner: str = "median",
    n_jobs: int = 1,
    seed: int | None = None,
) -> SweepResult:
    """An Optuna sweep of ``search_space`` on ``base_config``.

    ``search_space`` maps dotted config keys to a list of values, or to a range:
    ``{"type": "float", "low": 1e-4, "high": 1e-2, "log": True}`` (``"int"`` likewise, with an
    optional ``step``). ``sampler``: ``grid`` (every combination; lists and int ranges only),
    ``random`` or ``tpe``. ``n_trials``: the study's total (a grid's is its size).
    ``pruner``: ``median`` stops a ``run_training`` trial whose ``metric`` falls behind the
    median of earlier trials at the same epoch (Optuna's ``MedianPruner`` through its Lightning
    callback), ``none`` never does. ``storage``: an Optuna storage URL, a journal file path or
    a storage object (default: a journal file next to ``db``). ``seed`` seeds the sampler
    (give each worker of a shared random or TPE sweep its own). The rest is as in
    ``run_grid_sweep``.
    """
    if message := feature_missing_error(SWEEP_EXTRA, "sweeps"):
        raise ConfigError(message)
    sweep, job = _prepare(
        base_config,
        search_space,
        n_trials,
        sampler,
        direction,
        metric,
        db,
        storage,
        run_fn,
        sweep_name,
        pruner,
        n_jobs,
        seed,
    )
    if n_jobs > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_jobs - 1, mp_context=context) as pool:
            helpers = [pool.submit(_work, sweep, None) for _ in range(n_jobs - 1)]
            _work(sweep, job)
            for helper in helpers:
                helper.result()
    else:
        _work(sweep, job)
    return sweep_result(sweep.name, sweep.db_path, sweep.storage)


def get_runs_for_sweep(sweep_id: str, *, db: ExperimentDB | str | os.PathLike[str]) -> pd.DataFrame:
    """The database runs of one sweep in creation order, ``sweep_params`` parsed."""
    with _database(db) as database:
        return database.get_runs_for_sweep(sweep_id)


def sweep_result(name: str, db_path: str | os.PathLike[str], storage: Any = None) -> SweepResult:
    """The sweep ``name`` as its study stands now (what ``modeltiers sweep`` prints)."""
    import optuna

    opened = open_storage(storage, db_path)
    with _quiet_optuna():
        try:
            study = optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            raise ConfigError(
                f"no sweep named {name!r} in {describe_storage(storage, db_path)}"
            ) from None
    definition = study.user_attrs.get(DEFINITION_ATTR) or {}
    records = [_record(trial) for trial in study.get_trials(deepcopy=False)]
    return SweepResult(
        sweep_id=name,
        metric=str(definition.get("metric", DEFAULT_METRIC)),
        direction=str(definition.get("direction", "minimize")),
        sampler=str(definition.get("sampler", "?")),
        storage=describe_storage(storage, db_path),
        db_path=str(db_path),
        trials=sorted(records, key=lambda r: r.number),
    )


# --------------------------------------------------------------------------- checks


def _prepare(
    base: Any,
    space: Mapping[str, Any],
    n_trials: int | None,
    sampler: str,
    direction: str,
    metric: str,
    db: Any,
    storage: Any,
    run_fn: RunFn | None,
    sweep_name: str | None,
    pruner: str,
    n_jobs: int,
    seed: int | None,
) -> tuple[_Sweep, TrainJob | None]:
    """Check everything a sweep is given, before any trial runs (``ConfigError``)."""
    for value, name, choices in (
        (sampler, "sampler", SAMPLERS),
        (direction, "direction", DIRECTIONS),
        (pruner, "pruner", PRUNERS),
    ):
        if value not in choices:
            raise ConfigError(
                f"{name} must be one of {', '.join(choices)}, got {value!r}"
                f"{did_you_mean(str(value), choices)}"
            )
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric must be a metric name such as 'val/loss', got {metric!r}")
    if not is_int(n_jobs) or n_jobs < 1:
        raise ConfigError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    if seed is not None and not is_int(seed):
        raise ConfigError(f"seed must be an integer or None, got {seed!r}")
    if sweep_name is not None and (not isinstance(sweep_name, str) or not sweep_name.strip()):
        raise ConfigError(f"sweep_name must be a non-empty string, got {sweep_name!r}")
    if run_fn is not None and not callable(run_fn):
        raise ConfigError(f"run_fn must be callable (config -> run id or metrics), got {run_fn!r}")
    dims = parse_space(space)
    check_keys(base, list(dims))
    if sampler == "grid":
        points = grid_points(dims)
        if n_trials is not None and n_trials != len(points):
            raise ConfigError(
                f"a grid sweep runs all {len(points)} combinations; leave n_trials out "
                f"(got {n_trials!r})"
            )
        count = len(points)
    elif is_int(n_trials) and n_trials is not None and n_trials >= 1:
        count = n_trials
    else:
        raise ConfigError(f"a {sampler} sweep needs n_trials, a positive integer; got {n_trials!r}")
    job = None
    if run_fn is None:
        if not is_job_config(base):
            raise ConfigError(
                "without run_fn, base_config must be a training job naming the model, such as "
                "{'model_file': 'model.py', 'epochs': 1, ...}; for any other config, pass "
                "run_fn=lambda config: ... that runs one trial"
            )
        from pytest_modeltiers.sweeps.train_job import TrainJob

        TrainJob.check_swept(list(dims))
        job = TrainJob(base)
        if sampler == "grid":  # every combination's settings, before the first trial
            for point in grid_points(dims):
                _check_point(job, apply_params(base, point), point)
    db_path = _db_path(db)
    if n_jobs > 1:
        if not isinstance(storage, (str, os.PathLike, type(None))):
            raise ConfigError(
                "n_jobs > 1 runs trials in worker processes, which open the storage themselves: "
                "give storage as a URL or a journal file path, not a storage object"
            )
        try:
            pickle.dumps((base, run_fn))
        except Exception as exc:
            raise ConfigError(
                "n_jobs > 1 runs trials in worker processes, so base_config and run_fn must be "
                f"picklable (run_fn a module-level function, not a lambda): {exc}"
            ) from None
    name = sweep_name or (
        f"sweep-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    )
    sweep = _Sweep(
        name=name,
        base=base,
        dims=dims,
        sampler=sampler,
        n_trials=count,
        direction=direction,
        metric=metric,
        db_path=str(db_path),
        storage=storage,
        run_fn=run_fn,
        pruner=pruner,
        seed=seed,
    )
    return sweep, job


def _check_point(job: TrainJob, config: Any, point: Mapping[str, Any]) -> None:
    try:
        job.check(config)
    except ConfigError as exc:
        shown = ", ".join(f"{key}={value!r}" for key, value in point.items())
        raise ConfigError(f"the grid point {shown} is not a valid config: {exc}") from None


def _db_path(db: Any) -> Path:
    if isinstance(db, ExperimentDB):
        return Path(db.path)
    if isinstance(db, (str, os.PathLike)):
        with _database(db):  # creates or migrates it now, or says why it cannot
            pass
        return Path(db)
    raise ConfigError(f"db must be an ExperimentDB or a path to one, got {type(db).__name__}")


@contextlib.contextmanager
def _database(db: Any) -> Iterator[ExperimentDB]:
    if isinstance(db, ExperimentDB):
        yield db
        return
    database = ExperimentDB(db)
    try:
        yield database
    finally:
        database.close()


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off: the sweep reports trials itself."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# --------------------------------------------------------------------------- the worker


def _work(sweep: _Sweep, job: TrainJob | None) -> None:
    """Take trials of the study until none is left; the same in every worker process."""
    if job is None and sweep.run_fn is None:
        from pytest_modeltiers.sweeps.train_job import TrainJob

        job = TrainJob(sweep.base)
    storage = open_storage(sweep.storage, sweep.db_path)
    with _quiet_optuna(), _database(sweep.db_path) as db:
        study = _open_study(sweep, storage)
        while (trial := _next_trial(sweep, study, storage)) is not None:
            _run_trial(sweep, study, trial, db, job)


def _make_sampler(sweep: _Sweep) -> Any:
    import optuna

    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(
            {name: dim.grid_values() for name, dim in sweep.dims.items()}, seed=0
        )
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    return optuna.samplers.TPESampler(seed=sweep.seed)


def _open_study(sweep: _Sweep, storage: Any) -> Any:
    """Create the study (and queue the grid), or join the existing one after checking that it
    is the same sweep."""
    import optuna

    pruner = (
        optuna.pruners.MedianPruner() if sweep.pruner == "median" else optuna.pruners.NopPruner()
    )
    definition = sweep.definition()
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=sweep.name,
            sampler=_make_sampler(sweep),
            pruner=pruner,
            direction=cast(Any, sweep.direction),
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=sweep.name, storage=storage, sampler=_make_sampler(sweep), pruner=pruner
        )
        _join(sweep, study, definition)
        return study
    study.set_user_attr(DEFINITION_ATTR, definition)
    if sweep.sampler == "grid":
        _queue_grid(sweep, study)
    return study


def _join(sweep: _Sweep, study: Any, definition: dict[str, Any]) -> None:
    deadline = time.monotonic() + QUEUE_WAIT_S
    ready = DEFINITION_ATTR if sweep.sampler != "grid" else QUEUED_ATTR
    while ready not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker that created the study is still writing it
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:  # its creator stopped before describing it: take over
        study.set_user_attr(DEFINITION_ATTR, definition)
    elif stored != definition:
        changed = sorted(
            key for key in set(stored) | set(definition) if stored.get(key) != definition.get(key)
        )
        details = "; ".join(
            f"{key}: stored {stored.get(key)!r}, asked {definition.get(key)!r}" for key in changed
        )
        raise ConfigError(
            f"a different sweep named {sweep.name!r} is already in "
            f"{describe_storage(sweep.storage, sweep.db_path)} ({details}); resume it with the "
            "same settings, or give this sweep another name"
        )
    if sweep.sampler == "grid" and QUEUED_ATTR not in study.user_attrs:
        _queue_grid(sweep, study)


def _queue_grid(sweep: _Sweep, study: Any) -> None:
    """Queue each grid point that has no trial yet, then mark the grid queued."""
    known = {
        _point_key(trial.system_attrs.get("fixed_params", trial.params))
        for trial in study.get_trials(deepcopy=False)
    }
    for point in grid_points(sweep.dims):
        if _point_key(point) not in known:
            study.enqueue_trial(point)
    study.set_user_attr(QUEUED_ATTR, True)


def _point_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


def _budget_used(study: Any) -> int:
    """Trials that count against ``n_trials``: all but those interrupted (queued again)."""
    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if not trial.user_attrs.get(TRIAL_ATTR, {}).get("interrupted")
    )


def _next_trial(sweep: _Sweep, study: Any, storage: Any) -> Any:
    """The next queued trial, claimed atomically (None when the queue is empty); for random and
    TPE sweeps, a new trial while the study holds fewer than ``n_trials``."""
    import optuna
    from optuna.trial import Trial, TrialState

    study_id = storage.get_study_id_from_name(sweep.name)
    for waiting in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker took it and finished it already
    if sweep.sampler == "grid" or _budget_used(study) >= sweep.n_trials:
        return None
    return study.ask()


def _run_trial(
    sweep: _Sweep, study: Any, trial: Any, db: ExperimentDB, job: TrainJob | None
) -> None:
    """Run one trial and tell the study how it ended; only Ctrl-C stops the sweep."""
    import optuna
    from optuna.trial import TrialState

    params = {name: dim.suggest(trial) for name, dim in sweep.dims.items()}
    run_name = f"{sweep.name}-trial-{trial.number:03d}"
    start = time.perf_counter()
    outcome = _TrialOutcome()
    try:
        value = _objective(sweep, trial, params, run_name, db, job, outcome)
    except optuna.TrialPruned as exc:
        run_id = outcome.run_id
        if run_id is None:  # a run_fn that raised TrialPruned: the trial still gets its run
            run_id = _record_failure(db, sweep, run_name, params, outcome, exc, status="pruned")
        _finish_attrs(trial, run_name, run_id, start)
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt as exc:
        run_id = _record_failure(db, sweep, run_name, params, outcome, exc, status="interrupted")
        _finish_attrs(
            trial, run_name, run_id, start, error="interrupted (queued again)", interrupted=True
        )
        study.enqueue_trial(params)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:
        run_id = _record_failure(db, sweep, run_name, params, outcome, exc, status="failed")
        error = f"{type(exc).__name__}: {exc}"[:2000]
        _finish_attrs(trial, run_name, run_id, start, error=error)
        study.tell(trial, state=TrialState.FAIL)
    else:
        _finish_attrs(trial, run_name, outcome.run_id, start)
        study.tell(trial, value)


@dataclass
class _TrialOutcome:
    """What a trial got to before it ended (a failure is recorded against its run)."""

    run_id: int | None = None
    config: Any = None


def _finish_attrs(
    trial: Any,
    run_name: str,
    run_id: int | None,
    start: float,
    error: str | None = None,
    *,
    interrupted: bool = False,
) -> None:
    record: dict[str, Any] = {
        "run_name": run_name,
        "run_id": run_id,
        "duration_seconds": round(time.perf_counter() - start, 4),
    }
    if error is not None:
        record["error"] = error
    if interrupted:
        record["interrupted"] = True
    trial.set_user_attr(TRIAL_ATTR, record)


def _objective(
    sweep: _Sweep,
    trial: Any,
    params: dict[str, Any],
    run_name: str,
    db: ExperimentDB,
    job: TrainJob | None,
    outcome: _TrialOutcome,
) -> float:
    outcome.config = apply_params(sweep.base, params)
    fields = {"sweep_id": sweep.name, "sweep_params": params}
    if job is not None:
        callbacks = []
        pruning = None
        if sweep.pruner != "none":
            from pytest_modeltiers.sweeps.pruning import LIGHTNING_METRICS, StopWhenPruned

            if sweep.metric in LIGHTNING_METRICS:
                pruning = StopWhenPruned(trial, sweep.metric)
                callbacks.append(pruning)
        results = job.run(
            outcome.config, db=db, run_name=run_name, run_fields=fields, callbacks=callbacks
        )
        outcome.run_id = results.run_id
        if pruning is not None and pruning.pruned is not None:
            db.update_run_status(int(results.run_id or 0), "pruned")
            raise pruning.pruned
        return _final_value(db, int(results.run_id or 0), sweep.metric)
    returned = cast(RunFn, sweep.run_fn)(outcome.config)
    outcome.run_id = _record_returned(db, sweep, returned, run_name, params, outcome.config)
    direct: Any = (
        None
        if hasattr(returned, "run_id")
        else returned.get(sweep.metric)
        if isinstance(returned, Mapping)
        else returned
    )
    if is_number(direct) and not is_int(direct):  # the value just recorded: no need to read it
        return float(direct)
    return _final_value(db, outcome.run_id, sweep.metric)


def _record_returned(
    db: ExperimentDB,
    sweep: _Sweep,
    returned: Any,
    run_name: str,
    params: dict[str, Any],
    config: Any,
) -> int:
    """The run a custom ``run_fn``'s return value stands for, tagged with the sweep."""
    # TrainingResults carries its run's id, and is a Mapping too: the id decides.
    results = hasattr(returned, "run_id")
    run_id: Any = (
        returned.run_id if results else None if isinstance(returned, Mapping) else returned
    )
    if not results and (
        isinstance(returned, Mapping) or (is_number(returned) and not is_int(returned))
    ):
        metrics = dict(returned) if isinstance(returned, Mapping) else {sweep.metric: returned}
        new_id = db.register_run(
            {
                "run_name": run_name,
                "config": config if _storable(config) else None,
                "sweep_id": sweep.name,
                "sweep_params": params,
            }
        )
        db.log_metrics(new_id, metrics, None)
        db.update_run_status(new_id, "completed")
        return new_id
    if run_id is None and results:
        raise SweepError(
            "run_fn returned results of a run that was not recorded: pass db= to run_training, "
            "or return the metrics as a dict"
        )
    if not is_int(run_id):
        raise SweepError(
            "run_fn must return a run id of the sweep's database, TrainingResults, a dict of "
            f"metrics or the metric's value (a float); got {type(returned).__name__} {returned!r}"
        )
    run = db.get_run(run_id)
    if run.get("sweep_id") not in (None, sweep.name):
        raise SweepError(
            f"run_fn returned run {run_id}, which belongs to sweep {run['sweep_id']!r}"
        )
    db.set_run_sweep(run_id, sweep.name, params)
    return int(run_id)


def _storable(config: Any) -> bool:
    import dataclasses

    return (
        isinstance(config, Mapping)
        or hasattr(config, "to_dict")
        or (dataclasses.is_dataclass(config) and not isinstance(config, type))
    )


def _final_value(db: ExperimentDB, run_id: int, metric: str) -> float:
    """The trial's value: the last value of ``metric`` the run logged."""
    frame = db.get_metrics(run_id, metric)
    if frame.empty:
        logged = sorted(set(db.get_metrics(run_id)["metric_name"]))
        raise SweepError(
            f"run {run_id} logged no {metric!r}{did_you_mean(metric, logged)}; it logged: "
            f"{', '.join(logged) or 'nothing'}. Choose the sweep's metric among them"
        )
    value = float(frame["value"].iloc[-1])
    if not math.isfinite(value):
        raise SweepError(f"run {run_id} ended with {metric} = {value}")
    return value


def _record_failure(
    db: ExperimentDB,
    sweep: _Sweep,
    run_name: str,
    params: dict[str, Any],
    outcome: _TrialOutcome,
    exc: BaseException,
    *,
    status: str,
) -> int | None:
    """Mark the trial's run failed (or interrupted) with its error: the run the trial made, or
    a new one when it failed before making one. The trial's own error is never replaced."""
    try:
        run_id = outcome.run_id
        if run_id is None:
            runs = db.get_runs_for_sweep(sweep.name)
            mine = runs[runs["run_name"] == run_name]["run_id"].tolist()
            run_id = int(mine[-1]) if mine else None
        if run_id is None:
            config = outcome.config if _storable(outcome.config) else None
            run_id = db.register_run(
                {
                    "run_name": run_name,
                    "config": config,
                    "sweep_id": sweep.name,
                    "sweep_params": params,
                }
            )
        failure = {"error": type(exc).__name__, "message": str(exc)[:2000]}
        if "failure" not in db.get_params(run_id):
            db.log_params(run_id, {"failure": failure})
        db.update_run_status(run_id, status)
        return run_id
    except Exception as db_error:  # the trial's error stays the one reported
        exc.add_note(f"the sweep could not record this failure in {db.path}: {db_error}")
        return None


def _record(trial: Any) -> TrialRecord:
    from optuna.trial import TrialState

    status = {
        TrialState.COMPLETE: "completed",
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[trial.state]
    record = trial.user_attrs.get(TRIAL_ATTR, {})
    if status == "failed" and record.get("interrupted"):
        status = "interrupted"
    params = dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))
    run_id = record.get("run_id")
    duration = record.get("duration_seconds")
    return TrialRecord(
        number=trial.number,
        params=params,
        status=status,
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        run_id=None if run_id is None else int(run_id),
        error=record.get("error"),
        duration_seconds=None if duration is None else float(duration),
    )
