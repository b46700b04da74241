"""Distributed training on this CPU machine: two gloo processes, one writer (rank 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modeltiers.store.experiment_db import ExperimentDB

SCRIPT = Path(__file__).with_name("ddp_training_script.py")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PL_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_both_ranks_and_rank0_alone_writes(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    for report in ranks:
        assert report["world_size"] == 2 and report["strategy"] == "ddp"
        # 64 examples split over 2 ranks, batches of 8: 4 steps an epoch, 2 epochs
        assert report["global_step"] == 8
        assert report["changed_tensors"] > 0
    # DDP keeps the replicas identical; both ranks know rank 0's run id and history
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    assert ranks[0]["run_id"] == ranks[1]["run_id"] == 1
    assert ranks[0]["history"] == ranks[1]["history"]
    # one run, one set of metrics, one set of checkpoints: written by rank 0 only
    with ExperimentDB(tmp_path / "exp.db") as db:
        runs = db.list_runs(limit=None)
        assert list(runs["run_id"]) == [1] and list(runs["status"]) == ["completed"]
        metrics = db.get_metrics(1, "val/loss")
        assert list(metrics["epoch"]) == [0, 1]
        assert db.get_params(1)["world_size"] == 2
        assert len(db.get_artifacts(1, "checkpoint")) == 2
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"]
    left = {p.name for p in tmp_path.iterdir() if not p.name.startswith("exp.db")}
    assert left == {"rank0.json", "rank1.json", "run"}
