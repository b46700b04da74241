"""run_training on Lightning: results, database, checkpoints, resume, data sources, options."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from pytest_modeltiers import run_training
from pytest_modeltiers.config import TrainingConfig
from pytest_modeltiers.config.task_spec import TaskSpec, resolve_task
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.training.checkpoints import (
    SECTION,
    CheckpointError,
    load_model_weights,
    read_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


def _module(path: Path) -> ModuleType:
    name = f"run_training_model_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setup(path: Path) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    module = _module(path)
    task = resolve_task(module.TASK)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = module.build_model()
    return model, get_adapter(task), task


def tiny_gpt() -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    return _setup(REPO / "example_models" / "tiny_gpt.py")


def dropout_lm() -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    return _setup(REPO / "fixtures" / "tier3" / "dropout_lm.py")


def config(**overrides: Any) -> TrainingConfig:
    base: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "max_train_samples": 64,
        "max_val_samples": 32,
        "precision": "32-true",
        "save_every_n_epochs": 1,
        "early_stopping_patience": 0,
        "random_seed": 7,
    }
    base.update(overrides)
    return TrainingConfig(**base)


def test_a_run_trains_logs_to_the_db_and_writes_safe_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    model, adapter, task = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    db = ExperimentDB(tmp_path / "exp.db")
    results = run_training(model, adapter, config(run_name="smoke"), task, db=db)

    assert results["eval_summary"] is results.eval_summary
    assert results.eval_summary["split"] == "validation"
    assert results.eval_summary["loss"] < results.initial_eval["loss"]  # type: ignore[index]
    assert {"perplexity", "accuracy"} <= set(results.eval_summary)
    assert [e["epoch"] for e in results.history] == [0, 1]
    assert [e["step"] for e in results.history] == [4, 8]
    assert results.epochs_completed == 2 and results.global_step == 8
    assert all({"train/loss", "val/loss", "learning_rate"} <= set(e) for e in results.history)
    assert not torch.equal(model.state_dict()["lm_head.weight"], before["lm_head.weight"])
    # everything under the run directory, nothing in the working directory but what we made
    assert [p.name for p in cwd.iterdir()] == ["checkpoints"]
    run_dir = Path(results.run_dir)
    assert run_dir.parent == cwd / "checkpoints" and run_dir.name.startswith("smoke-")
    names = sorted(Path(p).name for p in results.checkpoint_paths)
    assert names == ["epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"]
    # the database: run, params, per-epoch metrics through the metrics engine, artifacts
    run = db.get_run(results.run_id)
    assert run["status"] == "completed" and run["task_name"] == "lm_tiny"
    metrics = db.get_metrics(results.run_id, "val/loss")
    assert list(metrics["epoch"]) == [0, 1]
    assert list(metrics["value"]) == pytest.approx([e["val/loss"] for e in results.history])
    params = db.get_params(results.run_id)
    assert params["initial_eval"]["loss"] == pytest.approx(results.initial_eval["loss"])  # type: ignore[index]
    artifacts = db.get_artifacts(results.run_id, "checkpoint")
    assert results.best_checkpoint_path in set(artifacts["filepath"])
    # checkpoints load with weights_only=True and give the model's own weights
    for path in results.checkpoint_paths:
        data = torch.load(path, weights_only=True)
        assert {"state_dict", "optimizer_states", "lr_schedulers", SECTION} <= set(data)
        assert data[SECTION]["rng"]["torch"].dtype == torch.uint8
    weights = load_model_weights(results.last_checkpoint_path)  # type: ignore[arg-type]
    assert set(weights) == set(model.state_dict())
    assert torch.equal(weights["lm_head.weight"], model.state_dict()["lm_head.weight"])
    json.dumps(results.to_dict(), allow_nan=False)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path) -> None:
    """Model, optimizer, scheduler, epoch/step and the dropout RNG all come back: resuming
    from the first epoch's checkpoint reproduces the uninterrupted run's later epochs."""
    model, adapter, task = dropout_lm()
    cfg = config(lr_scheduler="linear", warmup_ratio=0.25, epochs=3)
    straight = run_training(model, adapter, cfg, task, run_dir=tmp_path / "a")
    after_first = Path(straight.run_dir) / "checkpoints" / "epoch=000.ckpt"

    fresh, _, _ = dropout_lm()
    resumed_cfg = config(
        lr_scheduler="linear", warmup_ratio=0.25, epochs=3, resume_from_checkpoint=str(after_first)
    )
    resumed = run_training(fresh, adapter, resumed_cfg, task, run_dir=tmp_path / "b")
    assert resumed.resumed_from == str(after_first)
    assert resumed.global_step == straight.global_step == 12
    assert [e["epoch"] for e in resumed.history] == [0, 1, 2]
    assert resumed.history[0] == straight.history[0]  # restored from the checkpoint
    for a, b in zip(straight.history[1:], resumed.history[1:], strict=True):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-6, abs=1e-7)
        assert b["learning_rate"] == pytest.approx(a["learning_rate"])
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    # the evaluation "before training" of a resumed run is the checkpoint's model
    assert resumed.initial_eval["loss"] == pytest.approx(  # type: ignore[index]
        straight.history[0]["val/loss"], rel=1e-5
    )


def test_resume_refuses_missing_and_unsafe_checkpoints(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    with pytest.raises(CheckpointError, match="does not exist"):
        run_training(model, adapter, config(resume_from_checkpoint=str(tmp_path / "x.ckpt")), task)
    unsafe = tmp_path / "unsafe.ckpt"
    import datetime

    torch.save({"state_dict": {}, "when": datetime.date(2024, 1, 1)}, unsafe)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*Unsupported global.*datetime"):
        run_training(model, adapter, config(resume_from_checkpoint=str(unsafe)), task)
    assert not (tmp_path / "checkpoints").exists()


def test_keep_best_only_and_save_every_n_epochs(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    best_only = run_training(
        model, adapter, config(epochs=3, keep_best_only=True), task, run_dir=tmp_path / "best"
    )
    assert len(best_only.checkpoint_paths) == 1
    assert best_only.best_checkpoint_path == best_only.checkpoint_paths[0]
    assert best_only.last_checkpoint_path == best_only.best_checkpoint_path
    model, _, _ = tiny_gpt()
    sparse = run_training(
        model, adapter, config(epochs=3, save_every_n_epochs=2), task, run_dir=tmp_path / "every"
    )
    names = sorted(Path(p).name for p in sparse.checkpoint_paths)
    assert names == ["epoch=001.ckpt", "last.ckpt"]


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path: Path) -> None:
    model, adapter, task = _setup(REPO / "fixtures" / "tier3" / "overfit_frozen_head.py")
    results = run_training(
        model, adapter, config(epochs=6, early_stopping_patience=1), task, run_dir=tmp_path
    )
    assert results.stopped_early
    assert results.epochs_completed < 6


def test_gradient_accumulation_and_clipping_reach_lightning(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    results = run_training(
        model,
        adapter,
        config(epochs=1, gradient_accumulation_steps=2, max_grad_norm=0.5),
        task,
        run_dir=tmp_path,
    )
    assert results.global_step == 2  # 4 batches, 2 per optimizer step


def test_warmup_schedule_drives_the_learning_rate(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    results = run_training(
        model,
        adapter,
        config(epochs=2, lr_scheduler="linear", warmup_steps=2, min_lr_ratio=0.0),
        task,
        run_dir=tmp_path,
    )
    # 8 steps: warm-up over 2, then linear decay to 0 at step 8
    assert results.history[0]["learning_rate"] == pytest.approx(3e-3 * (1 - 2 / 6))
    assert results.history[1]["learning_rate"] == pytest.approx(0.0, abs=1e-12)


def test_deterministic_mode_is_restored_after_the_run(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    assert not torch.are_deterministic_algorithms_enabled()
    run_training(model, adapter, config(epochs=1, deterministic=True), task, run_dir=tmp_path)
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        model, adapter, task = dropout_lm()
        runs.append(run_training(model, adapter, config(epochs=1), task, run_dir=tmp_path / name))
    assert runs[0].history == runs[1].history


def test_a_users_dataset_dataloader_or_mapping(tmp_path: Path) -> None:
    model, adapter, task = tiny_gpt()
    data = task_dataset(task, "train", size=40, seed=3)
    split = run_training(
        model, adapter, config(epochs=1), task, dataset=data, run_dir=tmp_path / "a"
    )
    assert split.data.startswith("the given Dataset split")
    assert split.eval_summary["split"] == "validation" and split.eval_summary["examples"] == 4

    model, _, _ = tiny_gpt()
    loader = DataLoader(data, batch_size=8)
    plain = run_training(
        model, adapter, config(epochs=1), task, dataset=loader, run_dir=tmp_path / "b"
    )
    assert plain.eval_summary["split"] == "train" and plain.global_step == 5
    assert [Path(p).name for p in plain.checkpoint_paths] == ["epoch=000.ckpt", "last.ckpt"]

    model, _, _ = tiny_gpt()
    val = task_dataset(task, "validation", size=16)
    both = run_training(
        model,
        adapter,
        config(epochs=1),
        task,
        dataset={"train": loader, "validation": val},
        run_dir=tmp_path / "c",
    )
    assert both.eval_summary["examples"] == 16 and "val/loss" in both.history[0]

    with pytest.raises(ConfigError, match="must be a torch Dataset or DataLoader"):
        run_training(model, adapter, config(), task, dataset=[1, 2, 3])
    with pytest.raises(ConfigError, match="needs a 'train' key"):
        run_training(model, adapter, config(), task, dataset={"training": data})


def test_a_failing_run_is_marked_failed_in_the_db(tmp_path: Path) -> None:
    model, adapter, task = _setup(REPO / "fixtures" / "tier3" / "overfit_detached.py")
    db = ExperimentDB(tmp_path / "exp.db")
    with pytest.raises(Exception, match="does not depend on any trainable parameter"):
        run_training(model, adapter, config(), task, db=db, run_dir=tmp_path / "run")
    runs = db.list_runs()
    assert list(runs["status"]) == ["failed"]


def test_bad_arguments_are_config_errors() -> None:
    model, adapter, task = tiny_gpt()
    with pytest.raises(ConfigError, match=r"needs an nn\.Module"):
        run_training("model", adapter, config(), task)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a TrainingConfig"):
        run_training(model, adapter, {"epochs": 1}, task)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="accelerator must be one of"):
        run_training(model, adapter, config(), task, accelerator="tpu")


def test_read_checkpoint_rejects_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        read_checkpoint(path)


def test_lightning_is_imported_only_by_run_training() -> None:
    code = (
        "import sys, pytest_modeltiers, pytest_modeltiers.training, "
        "pytest_modeltiers.suites.tier3, pytest_modeltiers.checks.tier3, "
        "pytest_modeltiers.training.run\n"
        "from pytest_modeltiers import run_training\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'lightning_fabric'))\n"
        "assert not bad, bad[:5]\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
