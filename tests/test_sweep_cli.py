"""``modeltiers sweep --config FILE``: the shipped config, resume, exit codes, shared workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "configs/example_sweep.json"


def sweep_config(path: Path, **overrides: Any) -> Path:
    data = json.loads((REPO / EXAMPLE).read_text())
    data.update(overrides)
    path.write_text(json.dumps(data))
    return path


def test_example_config_prints_the_trials_and_the_best_then_resumes(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--config", EXAMPLE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep example-sweep: 4 trials, grid sampler, minimize val/loss")
    assert out[1].split() == [
        "trial",
        "learning_rate",
        "batch_size",
        "val/loss",
        "status",
        "time",
        "run",
    ]
    rows = [line.split() for line in out[2:6]]
    assert [row[:3] for row in rows] == [
        ["0", "0.001", "4"],
        ["1", "0.001", "8"],
        ["2", "0.003", "4"],
        ["3", "0.003", "8"],
    ]
    assert [row[4] for row in rows] == ["completed"] * 4
    assert out[6] == "4 completed"
    best = min(rows, key=lambda row: float(row[3]))
    assert out[7].startswith(f"best: trial {best[0]} (run {best[6]}) val/loss=")
    with ExperimentDB(workdir / "experiments.db") as db:
        runs = db.get_runs_for_sweep("example-sweep")
        assert runs["status"].tolist() == ["completed"] * 4
    # The same command again resumes the finished study: nothing runs twice.
    assert main(["sweep", "--config", EXAMPLE, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 4
    assert summary["best"]["number"] == int(best[0])
    assert summary["storage"] == "journal:experiments.optuna.journal"
    with ExperimentDB(workdir / "experiments.db") as db:
        assert len(db.get_runs_for_sweep("example-sweep")) == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"param": {}}, "unknown key(s): 'param' (did you mean 'params'?)"),
        ({"params": {"learnig_rate": [0.1]}}, "'learnig_rate' (did you mean 'learning_rate'?)"),
        ({"sampler": "bayes"}, "sampler must be one of grid, random, tpe, got 'bayes'"),
        ({"n_trials": 3}, "a grid sweep runs all 4 combinations; leave n_trials out"),
        ({"params": {"batch_size": [2, 0]}}, "the grid point batch_size=0 is not a valid config"),
    ],
)
def test_a_config_that_cannot_run_exits_2_before_any_trial(
    workdir: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any], message: str
) -> None:
    config = sweep_config(workdir / "bad.json", **overrides)
    assert main(["sweep", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "sweep_output").exists()


def test_a_failed_trial_exits_1_and_names_its_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sweep_config(
        workdir / "diverges.json", name="diverges", params={"learning_rate": [0.003, 1e30]}
    )
    assert main(["sweep", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "1 completed, 1 failed" in captured.out
    assert "modeltiers sweep: trial 1 failed: NonFiniteTrainingError: the training loss is nan" in (
        captured.err
    )
    nothing = sweep_config(
        workdir / "nothing.json", name="nothing", params={"learning_rate": [1e30]}
    )
    assert main(["sweep", "--config", str(nothing)]) == 1
    assert "best: none (no trial completed)" in capsys.readouterr().out


def test_a_missing_optuna_exits_2_naming_the_extra(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["sweep", "--config", EXAMPLE]) == 2
    assert "install the [sweep] extra with pip install 'pytest-modeltiers[sweep]'" in (
        capsys.readouterr().err
    )


BARRIER_MODEL = """
import os
import time
from pathlib import Path

from tiny_gpt import TASK, build_model as build_tiny_gpt

WORKERS = Path(__file__).parent / "workers"


def build_model():
    # Each worker process waits here, the first time, until both have started: the two then
    # take trials from the shared study at the same time.
    marker = WORKERS / str(os.getpid())
    if not marker.exists():
        WORKERS.mkdir(exist_ok=True)
        marker.touch()
        deadline = time.monotonic() + 120
        while len(list(WORKERS.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return build_tiny_gpt()
"""


@pytest.mark.slow
def test_two_worker_processes_share_one_study_and_run_no_trial_twice(workdir: Path) -> None:
    models = workdir / "example_models"
    (models / "barrier_model.py").write_text(BARRIER_MODEL)
    base = json.loads((REPO / EXAMPLE).read_text())["base"]
    base.update(model_file="example_models/barrier_model.py", trust_model=True, epochs=1)
    rates = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]
    config = sweep_config(
        workdir / "shared.json",
        name="shared",
        pruner="none",
        base=base,
        params={"learning_rate": rates},
    )
    journal = workdir / "shared" / "study.journal"
    storage = ["--storage", f"journal:{journal}"]
    # One worker is another process, the other this one (it has torch loaded already).
    other = subprocess.Popen(
        [sys.executable, "-m", "pytest_modeltiers.cli", "sweep", "--config", str(config), *storage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert main(["sweep", "--config", str(config), *storage]) == 0
    finally:
        output = other.communicate(timeout=300)
    assert other.returncode == 0, output
    assert len(list((models / "workers").iterdir())) == 2
    with ExperimentDB(workdir / "experiments.db") as db:
        runs = db.get_runs_for_sweep("shared")
    assert sorted(p["learning_rate"] for p in runs["sweep_params"]) == rates
    assert runs["status"].tolist() == ["completed"] * 6
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 6
    assert sorted(t.params["learning_rate"] for t in study.trials) == rates
