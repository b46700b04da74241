"""Sweeps on Optuna: grid, random and TPE trials as runs of the experiment database.

Most trials here are a small ``run_fn`` returning metrics, so the sweep machinery is tested
without training; the default trial (``run_training`` on a tiny model) runs in the last tests.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import pytest_modeltiers
from pytest_modeltiers import (
    ConfigError,
    ExperimentDB,
    TrainingConfig,
    get_runs_for_sweep,
    run_grid_sweep,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[1]
GRID = {"learning_rate": [0.001, 0.01], "batch_size": [2, 4]}


def quadratic(config: TrainingConfig) -> dict[str, float]:
    """A trial without training: its 'loss' is lowest at learning_rate 0.01, batch_size 4."""
    return {"val/loss": (config.learning_rate - 0.01) ** 2 + 1.0 / config.batch_size}


def test_public_names_import_from_the_package() -> None:
    for name in ("run_grid_sweep", "run_sweep", "get_runs_for_sweep", "SweepResult"):
        assert name in pytest_modeltiers.__all__
        assert callable(getattr(pytest_modeltiers, name))


def test_grid_sweep_runs_every_combination_once_as_a_tagged_run(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    result = run_grid_sweep(TrainingConfig(), GRID, quadratic, db=db, sweep_name="grid")
    points = [t.params for t in result.trials]
    assert sorted(json.dumps(p, sort_keys=True) for p in points) == sorted(
        json.dumps({"learning_rate": lr, "batch_size": bs}, sort_keys=True)
        for lr in GRID["learning_rate"]
        for bs in GRID["batch_size"]
    )
    assert [t.status for t in result.trials] == ["completed"] * 4
    assert result.best is not None and result.best.params == {
        "learning_rate": 0.01,
        "batch_size": 4,
    }
    runs = get_runs_for_sweep("grid", db=db)
    assert runs["run_id"].tolist() == result.run_ids
    assert runs["sweep_params"].tolist() == points
    with ExperimentDB(db) as database:
        for trial in result.trials:
            run = database.get_run(trial.run_id)
            assert run["status"] == "completed" and run["sweep_id"] == "grid"
            assert run["config"]["learning_rate"] == trial.params["learning_rate"]
            assert database.get_metrics(trial.run_id, "val/loss")["value"].tolist() == [trial.value]
        assert database.get_runs_for_sweep("grid")["sweep_id"].tolist() == ["grid"] * 4


def test_an_unknown_key_names_the_closest_one_before_any_trial(tmp_path: Path) -> None:
    calls: list[Any] = []
    db = tmp_path / "experiments.db"
    with pytest.raises(ConfigError, match=r"'learnin_rate' \(did you mean 'learning_rate'\?\)"):
        run_grid_sweep(TrainingConfig(), {"learnin_rate": [0.1]}, calls.append, db=db)
    nested = {"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]}, "epochs": 1}
    with pytest.raises(ConfigError, match=r"optimizer has no 'lrr' \(did you mean 'lr'\?\)"):
        run_grid_sweep(nested, {"optimizer.lrr": [0.1]}, calls.append, db=db)
    job = {"model_file": "model.py", "epochs": 1}
    with pytest.raises(ConfigError, match=r"'eval.batch_sise' \(did you mean 'batch_size'\?\)"):
        run_grid_sweep(job, {"eval.batch_sise": [2]}, db=db)
    assert calls == []
    assert get_runs_for_sweep("any", db=db).empty


def test_dotted_keys_set_nested_values_on_a_copy(tmp_path: Path) -> None:
    base = {"optimizer": {"lr": 0.1, "momentum": 0.0}, "epochs": 1}
    seen: list[dict[str, Any]] = []

    def record(config: dict[str, Any]) -> float:
        seen.append(config)
        return config["optimizer"]["lr"]

    run_grid_sweep(base, {"optimizer.lr": [0.5, 0.25]}, record, db=tmp_path / "e.db", metric="m")
    assert [c["optimizer"] for c in seen] == [
        {"lr": 0.5, "momentum": 0.0},
        {"lr": 0.25, "momentum": 0.0},
    ]
    assert base["optimizer"]["lr"] == 0.1


def test_a_failed_trial_is_recorded_with_its_error_and_the_sweep_goes_on(tmp_path: Path) -> None:
    def flaky(config: TrainingConfig) -> dict[str, float]:
        if config.batch_size == 2 and config.learning_rate == 0.01:
            raise RuntimeError("CUDA out of memory (simulated)")
        return quadratic(config)

    db = tmp_path / "experiments.db"
    result = run_grid_sweep(TrainingConfig(), GRID, flaky, db=db, sweep_name="flaky")
    assert [t.status for t in result.trials].count("completed") == 3
    (failed,) = result.failed
    assert failed.params == {"learning_rate": 0.01, "batch_size": 2}
    assert failed.error == "RuntimeError: CUDA out of memory (simulated)"
    with ExperimentDB(db) as database:
        run = database.get_run(failed.run_id)
        assert run["status"] == "failed" and run["sweep_params"] == failed.params
        assert database.get_params(failed.run_id)["failure"] == {
            "error": "RuntimeError",
            "message": "CUDA out of memory (simulated)",
        }


def test_a_run_fn_may_prune_its_trial(tmp_path: Path) -> None:
    import optuna

    def prune_big_batches(config: TrainingConfig) -> dict[str, float]:
        if config.batch_size == 4:
            raise optuna.TrialPruned("not promising")
        return quadratic(config)

    db = tmp_path / "experiments.db"
    result = run_grid_sweep(TrainingConfig(), GRID, prune_big_batches, db=db, sweep_name="p")
    assert [t.status for t in result.trials] == ["completed", "pruned"] * 2
    with ExperimentDB(db) as database:
        runs = database.get_runs_for_sweep("p")
    assert runs["status"].tolist() == ["completed", "pruned"] * 2


def test_a_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    calls: list[tuple[float, int]] = []

    def interrupted_once(config: TrainingConfig) -> dict[str, float]:
        calls.append((config.learning_rate, config.batch_size))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return quadratic(config)

    db = tmp_path / "experiments.db"
    with pytest.raises(KeyboardInterrupt):
        run_grid_sweep(TrainingConfig(), GRID, interrupted_once, db=db, sweep_name="resumed")
    assert len(calls) == 3
    result = run_grid_sweep(TrainingConfig(), GRID, interrupted_once, db=db, sweep_name="resumed")
    assert len(calls) == 5  # the interrupted trial again and the one never started
    assert calls[2] in calls[3:]
    assert len(set(calls)) == 4
    statuses = [t.status for t in result.trials]
    assert statuses.count("completed") == 4 and statuses.count("interrupted") == 1
    assert len(result.completed) == 4
    with ExperimentDB(db) as database:
        runs = database.get_runs_for_sweep("resumed")
    assert sorted(runs["status"]) == ["completed"] * 4 + ["interrupted"]
    again = run_grid_sweep(TrainingConfig(), GRID, interrupted_once, db=db, sweep_name="resumed")
    assert len(calls) == 5 and again.to_dict() == result.to_dict()


def test_another_sweep_under_the_same_name_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    run_grid_sweep(TrainingConfig(), GRID, quadratic, db=db, sweep_name="taken")
    with pytest.raises(ConfigError, match=r"a different sweep named 'taken' .*space: stored"):
        run_grid_sweep(
            TrainingConfig(), {"learning_rate": [0.5]}, quadratic, db=db, sweep_name="taken"
        )


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_random_and_tpe_sweeps_draw_n_trials_within_the_ranges(
    tmp_path: Path, sampler: str
) -> None:
    space = {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "batch_size": {"type": "int", "low": 2, "high": 8, "step": 2},
        "optimizer": ["adamw", "sgd"],
    }
    base = {"learning_rate": 0.0, "batch_size": 0, "optimizer": "adamw"}

    def score(config: dict[str, Any]) -> float:
        return abs(config["learning_rate"] - 0.01)

    result = run_sweep(
        base, space, 6, sampler, db=tmp_path / "e.db", metric="score", run_fn=score, seed=3
    )
    assert len(result.trials) == 6 and len(result.completed) == 6
    for trial in result.trials:
        assert 1e-4 <= trial.params["learning_rate"] <= 1e-1
        assert trial.params["batch_size"] in (2, 4, 6, 8)
        assert trial.params["optimizer"] in ("adamw", "sgd")
    assert result.best is not None
    assert result.best.value == min(t.value for t in result.trials if t.value is not None)


def test_bad_sweep_settings_are_refused_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    cases = [
        (
            dict(
                search_space={"learning_rate": {"type": "float", "low": 1, "high": 0}}, n_trials=2
            ),
            r"needs float low <= high",
        ),
        (
            dict(
                search_space={"learning_rate": {"type": "float", "low": 0.1, "high": 1}},
                sampler="grid",
            ),
            r"a grid sweep needs a list of values",
        ),
        (dict(search_space={"learning_rate": []}, n_trials=2), r"at least one value"),
        (dict(search_space=GRID, sampler="bayes", n_trials=2), r"sampler must be one of grid"),
        (dict(search_space=GRID, n_trials=0), r"needs n_trials, a positive integer"),
        (dict(search_space=GRID, direction="min", n_trials=2), r"direction must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_sweep(TrainingConfig(), run_fn=quadratic, db=db, **kwargs)
    with pytest.raises(ConfigError, match=r"base_config must be a training job naming the model"):
        run_grid_sweep(TrainingConfig(), GRID, db=db)
    with pytest.raises(ConfigError, match="must be picklable"):
        run_grid_sweep(TrainingConfig(), GRID, lambda c: 1.0, db=db, n_jobs=2)


class _Results(dict):  # type: ignore[type-arg]
    """Like TrainingResults: a mapping of what the run produced that also carries its run id."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_name="mine", eval_summary={"loss": 1.0})
        self.run_id = run_id


def test_a_run_fn_may_return_the_results_of_a_recorded_run(tmp_path: Path) -> None:
    """The results run_training(..., db=db) returns name their run; they are not metrics."""
    database = ExperimentDB(tmp_path / "e.db")

    def trained(config: TrainingConfig) -> _Results:
        run_id = database.log_run("mine", config)
        database.log_metric(run_id, "val/loss", config.learning_rate, epoch=0)
        database.update_run_status(run_id, "completed")
        return _Results(run_id)

    with database:
        result = run_grid_sweep(
            TrainingConfig(), {"learning_rate": [0.2, 0.1]}, trained, db=database, sweep_name="r"
        )
        assert [t.status for t in result.trials] == ["completed", "completed"]
        assert [t.value for t in result.trials] == [0.2, 0.1]
        assert database.get_runs_for_sweep("r")["run_name"].tolist() == ["mine", "mine"]


def test_a_run_fn_may_return_a_run_of_the_database(tmp_path: Path) -> None:
    database = ExperimentDB(tmp_path / "e.db")

    def own_run(config: TrainingConfig) -> int:
        run_id = database.log_run("mine", config)
        database.log_metric(run_id, "val/loss", config.learning_rate, epoch=0)
        database.log_metric(run_id, "val/loss", config.learning_rate / 2, epoch=1)
        database.update_run_status(run_id, "completed")
        return run_id

    with database:
        result = run_grid_sweep(
            TrainingConfig(), {"learning_rate": [0.2, 0.1]}, own_run, db=database, sweep_name="own"
        )
        assert [t.value for t in result.trials] == [0.1, 0.05]  # the last value logged
        runs = database.get_runs_for_sweep("own")
        assert runs["run_name"].tolist() == ["mine", "mine"]
        assert runs["sweep_params"].tolist() == [{"learning_rate": 0.2}, {"learning_rate": 0.1}]

        def wrong_metric(config: TrainingConfig) -> dict[str, float]:
            return {"val/los": 1.0}

        result = run_grid_sweep(
            TrainingConfig(), {"learning_rate": [0.2]}, wrong_metric, db=database
        )
        (trial,) = result.trials
        assert trial.status == "failed" and trial.error == (
            f"SweepError: run {trial.run_id} logged no 'val/loss' (did you mean 'val/los'?); "
            "it logged: val/los. Choose the sweep's metric among them"
        )
        assert database.get_run(trial.run_id)["status"] == "failed"


def test_a_missing_optuna_names_the_sweep_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError) as caught:
        run_grid_sweep(TrainingConfig(), GRID, quadratic, db=tmp_path / "e.db")
    assert str(caught.value) == (
        "sweeps needs optuna, which is not installed; install the [sweep] extra with "
        "pip install 'pytest-modeltiers[sweep]'"
    )


@pytest.mark.slow
def test_any_optuna_storage_url_holds_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    db = tmp_path / "e.db"
    result = run_grid_sweep(TrainingConfig(), GRID, quadratic, db=db, storage=url, sweep_name="rdb")
    assert len(result.completed) == 4 and result.storage == url
    import optuna

    study = optuna.load_study(study_name="rdb", storage=url)
    assert len(study.trials) == 4
    assert not (tmp_path / "e.optuna.journal").exists()


def barrier_trial(config: dict[str, Any]) -> dict[str, float]:
    """A trial that waits until two worker processes hold one each, proving they overlap."""
    folder = Path(config["folder"])
    (folder / f"worker-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(folder.glob("worker-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    return {"val/loss": float(config["x"]), "worker/pid": float(os.getpid())}


@pytest.mark.slow
def test_n_jobs_worker_processes_share_the_grid_and_run_no_trial_twice(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    grid = {"x": list(range(8))}
    result = run_grid_sweep(
        {"x": 0, "folder": str(tmp_path)}, grid, barrier_trial, db=db, sweep_name="par", n_jobs=2
    )
    assert len(result.completed) == 8
    with ExperimentDB(db) as database:
        runs = database.get_runs_for_sweep("par")
        assert sorted(p["x"] for p in runs["sweep_params"]) == list(range(8))
        pids = {
            database.get_metrics(run_id, "worker/pid")["value"].iloc[0] for run_id in runs["run_id"]
        }
    assert len(pids) == 2  # both processes ran trials


# --------------------------------------------------------------------------- run_training trials


def tiny_job(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "model_file": str(REPO / "example_models" / "tiny_gpt.py"),
        "epochs": 2,
        "batch_size": 8,
        "max_train_samples": 16,
        "max_val_samples": 8,
        "precision": "32-true",
        "early_stopping_patience": 0,
        "use_gpu": False,
        "output_dir": str(tmp_path / "out"),
        **overrides,
    }


def test_without_run_fn_each_trial_trains_the_job_with_run_training(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    with pytest.raises(ConfigError, match=r"the grid point batch_size=0 is not a valid config"):
        run_grid_sweep(tiny_job(tmp_path), {"batch_size": [2, 0]}, db=db)
    with pytest.raises(ConfigError, match=r"model_file chooses the model or its data"):
        run_grid_sweep(tiny_job(tmp_path), {"model_file": ["a.py"]}, db=db)
    result = run_grid_sweep(
        tiny_job(tmp_path), {"learning_rate": [0.003, 1e30]}, db=db, sweep_name="train"
    )
    ok, diverged = result.trials
    assert ok.status == "completed" and diverged.status == "failed"
    assert diverged.error is not None and diverged.error.startswith("NonFiniteTrainingError")
    with ExperimentDB(db) as database:
        run = database.get_run(ok.run_id)
        assert run["status"] == "completed" and run["run_name"] == "train-trial-000"
        assert run["config"]["learning_rate"] == 0.003
        losses = database.get_metrics(ok.run_id, "val/loss")
        assert losses["epoch"].tolist() == [0, 1] and losses["value"].iloc[-1] == ok.value
        bad = database.get_run(diverged.run_id)
        assert bad["status"] == "failed" and bad["sweep_params"] == {"learning_rate": 1e30}
        assert database.get_params(diverged.run_id)["failure"]["error"] == "NonFiniteTrainingError"


@pytest.mark.slow
def test_the_median_pruner_stops_a_run_that_falls_behind(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    rates = [0.003, 0.0031, 0.0032, 0.0033, 0.0034, 1e-7]  # five to learn from, then a poor one
    result = run_sweep(
        tiny_job(tmp_path),
        {"learning_rate": rates},
        sampler="grid",
        pruner="median",
        db=db,
        sweep_name="pruned",
    )
    assert [t.status for t in result.trials] == ["completed"] * 5 + ["pruned"]
    with ExperimentDB(db) as database:
        run = database.get_run(result.trials[-1].run_id)
        assert run["status"] == "pruned"
        assert database.get_metrics(run["run_id"], "val/loss")["epoch"].tolist() == [0]
