"""``modeltiers train --config FILE``: the shipped configs, resume, bad configs, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, **overrides: Any) -> Path:
    data = json.loads((REPO / "configs" / "example_train.json").read_text())
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not ...}
    path.write_text(json.dumps(data))
    return path


def small(workdir: Path, name: str = "small.json", **overrides: Any) -> Path:
    base: dict[str, Any] = {"epochs": 1, "max_train_samples": 32, "max_val_samples": 16}
    return write_config(workdir / name, **{**base, **overrides})


def test_example_config_trains_logs_and_prints_a_json_summary(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", "configs/example_train.json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_name"] == "cli-run-01" and summary["run_id"] == 1
    assert summary["eval_summary"]["loss"] < summary["initial_eval"]["loss"]
    assert Path(summary["run_dir"]).parent == workdir / "training_output"
    assert Path(summary["best_checkpoint_path"]).is_file()
    with ExperimentDB(workdir / "experiments.db") as db:
        run = db.get_run(1)
        assert run["status"] == "completed" and run["config"]["learning_rate"] == 0.003
        assert run["notes"].startswith("example:")
        assert list(db.get_metrics(1, "val/loss")["epoch"]) == [0, 1]


def test_resume_from_checkpoint_continues_the_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(small(workdir, log_to_db=False))]) == 0
    first = json.loads(capsys.readouterr().out)
    assert not (workdir / "experiments.db").exists()
    resume = small(
        workdir, "resume.json", epochs=2, resume_from_checkpoint=first["last_checkpoint_path"]
    )
    assert main(["train", "--config", str(resume)]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["resumed_from"] == first["last_checkpoint_path"]
    assert second["global_step"] == 2 * first["global_step"]
    assert [e["epoch"] for e in second["history"]] == [0, 1]
    with ExperimentDB(workdir / "experiments.db") as db:
        assert "resumed from" in db.get_run(second["run_id"])["notes"]


@pytest.mark.slow
def test_python_dash_m_entry_point(workdir: Path) -> None:
    config = small(workdir, log_to_db=False, output_dir="out")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_modeltiers.cli", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["epochs_completed"] == 1
    assert not (workdir / "lightning_logs").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"learning_rate": -0.1}, "learning_rate must be positive (got -0.1)"),
        ({"epocs": 2}, "unknown config key(s): 'epocs' (did you mean 'epochs'?)"),
        ({"log_to_db": "yes"}, "log_to_db must be true or false, got str 'yes'"),
        ({"batch_size": "8"}, "batch_size"),
        ({"eval": {"batch_size": 0}}, "batch_size"),
        ({"model_file": "missing.py"}, "model_file missing.py does not exist"),
        ({"gist_id": "abc"}, "exactly one of model_file"),
        ({"resume_from_checkpoint": "nope.ckpt"}, "checkpoint nope.ckpt does not exist"),
        ({"strategy": "dp"}, "Lightning 2.0"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_a_bad_config_is_exit_2_with_the_reason_and_writes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], content: Any, message: str
) -> None:
    path = workdir / "bad.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_config(path, **content)
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["train", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and captured.err.startswith("modeltiers train: ")
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_a_failing_model_is_exit_1(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(REPO / "fixtures" / "tier3" / "overfit_detached.py", workdir)
    config = small(workdir, model_file="overfit_detached.py", task_name=..., log_to_db=False)
    assert main(["train", "--config", str(config)]) == 1
    assert "training failed: NoGradientPathError" in capsys.readouterr().err


def test_without_lightning_the_train_extra_is_named(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "lightning" else real_find_spec(name, *args),
    )
    config = small(workdir, model_file="example_models/tiny_gpt.py")
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "training needs lightning, which is not installed" in err
    assert "pip install 'pytest-modeltiers[train]'" in err
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.slow
def test_torchrun_two_processes_with_the_ddp_example(workdir: Path) -> None:
    """The README's command: torchrun --nproc_per_node=2 -m pytest_modeltiers.cli train ..."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "pytest_modeltiers.cli",
            "train",
            "--config",
            "configs/example_train_ddp.json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # rank 0 alone prints
    assert summary["world_size"] == 2 and summary["distribution"]["strategy"] == "ddp"
    assert summary["global_step"] == 2  # 64 examples / 2 ranks / batch 8 / accumulate 2
    runs = list((workdir / "training_output").iterdir())
    assert len(runs) == 1
    with ExperimentDB(workdir / "experiments.db") as db:
        assert len(db.list_runs(limit=None)) == 1
