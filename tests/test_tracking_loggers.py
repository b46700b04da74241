"""TrainingConfig's tracking fields: W&B (offline), MLflow (file store), TensorBoard, CSV.

Each requested tracker receives the run's epochs, through Lightning's loggers, and
``MetricsEngine`` writes through the same loggers; a tracker whose package is missing stops
the run before it trains, naming the package and the extra.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modeltiers import run_training
from pytest_modeltiers.cli import main
from pytest_modeltiers.config import TrainingConfig
from pytest_modeltiers.config.builder import TrainingConfigBuilder
from pytest_modeltiers.config.task_spec import resolve_task
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.evaluation.metrics_engine import MetricsEngine
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.training.loggers import CSV_SUBDIR, check_trackers, open_loggers

REPO = Path(__file__).resolve().parents[1]

SMALL: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "max_train_samples": 32,
    "max_val_samples": 16,
    "precision": "32-true",
    "use_amp": False,
    "early_stopping_patience": 0,
    "random_seed": 3,
}


def tiny_gpt() -> tuple[Any, Any, Any]:
    spec = importlib.util.spec_from_file_location(
        "tracking_tiny_gpt", REPO / "example_models" / "tiny_gpt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = resolve_task(module.TASK)
    torch.manual_seed(0)
    return module.build_model(), get_adapter(task), task


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "wandb-home"
    folder.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(folder / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(folder / "cache"))
    return folder


@pytest.fixture
def mlflow_file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A file-store tracking URI (MLflow 3 asks for an opt-in to the file store)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _wandb_history(folder: Path) -> list[dict[str, Any]]:
    """The history rows of the one offline W&B run under ``folder``, read from its ``.wandb``
    file (LevelDB log blocks of protobuf records; offline runs write no summary JSON)."""
    from wandb.proto import wandb_internal_pb2

    runs = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"expected one offline W&B run under {folder}, found {runs}"
    data = runs[0].read_bytes()
    assert data[:4] == b":W&B"
    rows, kinds, pending, position = [], [], b"", 7
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        _, length, chunk_type = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if chunk_type in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kinds.append(record.WhichOneof("record_type"))
            if kinds[-1] == "history":
                items = record.history.item
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                )
    assert kinds[-1] == "exit", "the W&B run was not finished"
    return rows


def _mlflow_history(uri: str, experiment: str, metric: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} at {uri}"
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.status == "FINISHED"
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)]


def _tensorboard_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.mark.slow
def test_with_logging_use_wandb_logs_every_tracker_it_names(
    tmp_path: Path, offline_wandb: Path, mlflow_file_store: str
) -> None:
    """The guide's ``with_logging(use_wandb=True)`` used to train without logging anything."""
    model, adapter, task = tiny_gpt()
    uri = mlflow_file_store
    config = (
        TrainingConfigBuilder(**SMALL, checkpoint_dir=str(tmp_path / "runs"))
        .with_logging(
            use_wandb=True,
            wandb_project="tiny",
            mlflow_tracking_uri=uri,
            mlflow_experiment="tiny-exp",
            tensorboard_dir=str(tmp_path / "tb"),
            run_name="tracked",
        )
        .build()
    )
    with ExperimentDB(tmp_path / "experiments.db") as db:
        results = run_training(model, adapter, config, task, db=db, accelerator="cpu")
        stored = db.get_metrics(results.run_id, "val/loss")
    val_losses = [entry["val/loss"] for entry in results.history]
    assert list(stored["value"]) == pytest.approx(val_losses)

    history = _wandb_history(offline_wandb)
    assert [row["val/loss"] for row in history] == pytest.approx(val_losses)
    assert [row["train/loss"] for row in history] == pytest.approx(
        [entry["train/loss"] for entry in results.history]
    )
    assert all("alerts/count" in row for row in history)  # MetricsEngine's, same logger

    assert _mlflow_history(uri, "tiny-exp", "val/loss") == [
        (epoch, pytest.approx(value)) for epoch, value in enumerate(val_losses)
    ]
    assert _tensorboard_scalars(tmp_path / "tb", "val/loss") == [
        (epoch, pytest.approx(value)) for epoch, value in enumerate(val_losses)
    ]
    with open(Path(results.run_dir) / CSV_SUBDIR / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["val/loss"]) for row in rows] == pytest.approx(val_losses)
    assert [int(row["step"]) for row in rows] == [0, 1]


def test_a_failed_run_is_marked_failed_in_the_tracker(
    tmp_path: Path, mlflow_file_store: str
) -> None:
    """The twin of the run above: a model whose loss cannot train stops the run, and the
    MLflow run says FAILED rather than staying RUNNING."""
    spec = importlib.util.spec_from_file_location(
        "tracking_detached", REPO / "fixtures" / "tier3" / "overfit_detached.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = resolve_task(module.TASK)
    config = TrainingConfig(
        **{**SMALL, "epochs": 1},
        checkpoint_dir=str(tmp_path / "runs"),
        mlflow_tracking_uri=mlflow_file_store,
    )
    with pytest.raises(Exception, match="does not depend on any trainable parameter"):
        run_training(module.build_model(), get_adapter(task), config, task, accelerator="cpu")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_file_store)
    found = client.get_experiment_by_name("pytest-modeltiers")
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_csv_is_written_without_any_tracker(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    config = TrainingConfig(**{**SMALL, "epochs": 1}, checkpoint_dir=str(tmp_path / "runs"))
    results = run_training(model, adapter, config, task, accelerator="cpu")
    with open(Path(results.run_dir) / CSV_SUBDIR / "metrics.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["train/loss"]) == pytest.approx(results.history[0]["train/loss"])
    assert not (tmp_path / "wandb").exists() and not (Path.cwd() / "mlruns").exists()


@pytest.mark.parametrize(
    ("fields", "package"),
    [
        ({"use_wandb": True}, "wandb"),
        ({"mlflow_tracking_uri": "file:///tmp/never-written"}, "mlflow-skinny"),
        ({"tensorboard_dir": "never-written"}, "tensorboard"),
    ],
)
def test_a_missing_tracker_package_stops_the_run_before_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    package: str,
) -> None:
    module = {"wandb": "wandb", "mlflow-skinny": "mlflow", "tensorboard": "tensorboard"}[package]
    monkeypatch.setitem(sys.modules, module, None)  # find_spec raises ValueError then; hide it
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == module else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    model, adapter, task = tiny_gpt()
    config = TrainingConfig(**SMALL, checkpoint_dir=str(tmp_path / "runs"), **fields)
    with ExperimentDB(tmp_path / "experiments.db") as db:
        with pytest.raises(ConfigError) as caught:
            run_training(model, adapter, config, task, db=db, accelerator="cpu")
        assert db.list_runs().empty
    message = str(caught.value)
    assert f"needs the {package} package, which is not installed" in message
    assert "pip install 'pytest-modeltiers[tracking]'" in message
    assert not (tmp_path / "runs").exists()


def test_modeltiers_train_refuses_a_missing_tracker_with_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "wandb" else real_find_spec(name, *args),
    )
    data = json.loads((workdir / "configs" / "example_train.json").read_text())
    (workdir / "tracked.json").write_text(json.dumps({**data, "use_wandb": True}))
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["train", "--config", "tracked.json"]) == 2
    err = capsys.readouterr().err
    assert "use_wandb=True needs the wandb package" in err and "[tracking]" in err
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_check_trackers_passes_when_nothing_is_requested_or_all_are_installed() -> None:
    check_trackers(TrainingConfig())
    check_trackers(TrainingConfig(tensorboard_dir="tb", mlflow_tracking_uri="file:///x"))


def test_metrics_engine_logs_its_rows_through_the_loggers(tmp_path: Path) -> None:
    """A loop without Lightning's Trainer (the lean loop) logs the same way."""
    config = TrainingConfig(tensorboard_dir=str(tmp_path / "tb"))
    with open_loggers(config, tmp_path / "run", "lean") as loggers:
        engine = MetricsEngine(loggers=loggers)
        engine.log_epoch(0, {"train/loss": 2.0, "val/loss": 1.5})
        engine.log_epoch(1, {"train/loss": 1.0, "val/loss": float("nan")})
    with open(tmp_path / "run" / CSV_SUBDIR / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["train/loss"]) for row in rows] == [("0", "2.0"), ("1", "1.0")]
    assert rows[1]["alerts/count"] == "1.0"  # the NaN raised a non-finite alert
    assert _tensorboard_scalars(tmp_path / "tb", "train/loss") == [(0, 2.0), (1, 1.0)]


def test_metrics_engine_refuses_an_object_that_is_not_a_logger() -> None:
    with pytest.raises(ConfigError, match="has no log_metrics"):
        MetricsEngine(loggers=[object()])
