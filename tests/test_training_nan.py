"""A training run whose loss or gradients stop being finite: it stops at that step, says where
(step, loss, the first parameter with a non-finite gradient), and is stored as a failed run
with that diagnosis, instead of crashing the database write of the NaN checkpoint score."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import pytest_modeltiers.suites.tier3  # noqa: F401  (imported once, before in-process runs)
from pytest_modeltiers import run_training
from pytest_modeltiers.config import TrainingConfig
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.training.results import NonFiniteTrainingError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "storage"


def config(**overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "max_train_samples": 64,
        "max_val_samples": 32,
        "precision": "32-true",
        "early_stopping_patience": 0,
        "random_seed": 7,
    }
    base.update(overrides)
    return TrainingConfig(**base)


def test_training_run_fails_at_the_nan_step_and_stores_the_diagnosis(
    pytester: pytest.Pytester,
) -> None:
    shutil.copy(FIXTURES / "nan_after_steps.py", pytester.path)
    result = pytester.runpytest(
        "--model=nan_after_steps.py", "-m", "tier3", "-k", "test_training_run",
        "--experiment-db", "exp.db", "--modeltiers-report", "health.json",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the training run failed: NonFiniteTrainingError: the training loss is nan after "
            "3 optimizer steps (epoch 0, batch 3); first parameter with a non-finite gradient: "
            "emb.weight (3 of 3 parameters). Training stopped before this step changed the "
            "weights.*The run is stored as failed, with this diagnosis, as run 1 of exp.db.*"
        ]
    )
    assert "StoreError" not in result.stdout.str()
    db = ExperimentDB(pytester.path / "exp.db")
    assert db.get_run(1)["status"] == "failed"
    failure = db.get_params(1)["failure"]
    assert failure["error"] == "NonFiniteTrainingError"
    assert failure["step"] == 3 and failure["epoch"] == 0 and failure["batch"] == 3
    assert math.isnan(failure["loss"])  # stored as "nan", read back as NaN
    assert failure["parameter"] == "emb.weight"
    assert "emb.weight" in failure["message"]


def test_a_finite_loss_with_a_non_finite_gradient_names_that_parameter(tmp_path: Path) -> None:
    loaded = load_model(LoadRequest(spec=str(FIXTURES / "nan_grad_sqrt.py"), rootdir=FIXTURES))
    model = loaded.new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    db = ExperimentDB(tmp_path / "exp.db")
    with pytest.raises(NonFiniteTrainingError) as info:
        run_training(model, loaded.adapter, config(), loaded.task, db=db, run_dir=tmp_path / "run")
    message = str(info.value)
    assert "a non-finite gradient after 0 optimizer steps (epoch 0, batch 0)" in message
    assert "first parameter with a non-finite gradient: sharpness (1 of 4 parameters)" in message
    assert "the training loss is" not in message  # the loss itself was finite
    diagnosis = info.value.diagnosis
    assert math.isfinite(diagnosis["loss"]) and diagnosis["parameter"] == "sharpness"
    # stopped before the optimizer applied the step: the weights are the untrained ones
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    (run,) = db.list_runs()["run_id"]
    assert db.get_run(run)["status"] == "failed"
    assert db.get_params(run)["failure"]["parameter"] == "sharpness"


def test_a_healthy_run_records_no_failure(tmp_path: Path) -> None:
    loaded = load_model(
        LoadRequest(spec=str(REPO / "fixtures" / "tier5" / "bag_cls.py"), rootdir=REPO)
    )
    db = ExperimentDB(tmp_path / "exp.db")
    results = run_training(
        loaded.new_model(), loaded.adapter, config(), loaded.task, db=db, run_dir=tmp_path / "r"
    )
    assert db.get_run(results.run_id)["status"] == "completed"
    assert "failure" not in db.get_params(results.run_id)
