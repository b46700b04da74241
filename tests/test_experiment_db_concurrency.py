"""Several writer processes on one ``ExperimentDB``, and a writer killed with SIGKILL.

The writers are separate Python processes (``subprocess`` running a small script), which is
what several training jobs or xdist workers sharing one database are; unlike a
``multiprocessing`` target, the script does not depend on how pytest imported this module.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_modeltiers.store import ExperimentDB

pytestmark = pytest.mark.slow

WRITER = r"""
import os, sys, time
from pytest_modeltiers.store import ExperimentDB

path, mode, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 30
while not os.path.exists(go):  # start together, so the writes really overlap
    if time.monotonic() > deadline:
        sys.exit("never told to start")
    time.sleep(0.005)
db = ExperimentDB(path)  # several processes may create and migrate the file at once
run = db.log_run(f"writer-{os.getpid()}")
print(f"run {run}", flush=True)
if mode == "fixed":
    for i in range(count):
        db.log_metric(run, "train/loss", float(i), step=i)
elif mode == "forever":
    i = 0
    while True:
        db.log_metric(run, "train/loss", float(i), step=i)
        i += 1
        print(i, flush=True)  # i rows are committed (log_metric returned)
elif mode == "batches":
    i = 0
    while True:
        db.log_metrics(run, {f"m{k}": float(k) for k in range(count)}, "train", step=i)
        i += 1
        print(i * count, flush=True)
"""


def start_writer(path: Path, mode: str, count: int, go: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode, str(count), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_four_processes_500_metrics_each_all_present(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # does not exist yet: the writers race to create it
    go = tmp_path / "go"
    writers = [start_writer(path, "fixed", 500, go) for _ in range(4)]
    go.touch()
    finished = [(proc, *proc.communicate(timeout=60)) for proc in writers]  # every pipe closed
    run_ids = []
    for proc, out, err in finished:
        assert proc.returncode == 0, err
        run_ids.append(int(out.split()[1]))
    assert len(set(run_ids)) == 4
    db = ExperimentDB(path)
    for run in run_ids:
        frame = db.get_metrics(run)
        assert frame["step"].tolist() == list(range(500))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 2000
    finally:
        conn.close()
    assert integrity(path) == "ok"


def kill_after(proc: subprocess.Popen[str], rows: int) -> int:
    """Read the child's committed count until it reaches ``rows``, SIGKILL it mid-loop, and
    return the last count it confirmed (what it printed before dying is still in the pipe)."""
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert header.startswith("run "), header
    confirmed = 0
    deadline = time.monotonic() + 30
    while confirmed < rows:
        line = proc.stdout.readline()
        assert line, f"writer exited early: {proc.stderr.read() if proc.stderr else ''}"
        confirmed = int(line)
        assert time.monotonic() < deadline, "writer too slow"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # Read the rest through the same buffered reader (communicate() would bypass its buffer
    # and lose lines already read ahead into it).
    for line in proc.stdout.read().split():
        confirmed = int(line)
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    return confirmed


def test_writer_killed_mid_run_leaves_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    go = tmp_path / "go"
    go.touch()
    proc = start_writer(path, "forever", 0, go)
    confirmed = kill_after(proc, 300)
    assert integrity(path) == "ok"
    db = ExperimentDB(path)  # opens (WAL recovery) and still accepts writes
    steps = db.get_metrics(1)["step"].tolist()
    # Every confirmed commit is there; at most the one in flight when the kill came is extra.
    assert confirmed <= len(steps) <= confirmed + 1
    assert steps == list(range(len(steps)))  # no hole, no duplicate
    db.log_metric(1, "train/loss", 0.0, step=len(steps))
    assert integrity(path) == "ok"


def test_writer_killed_mid_batch_writes_whole_batches_only(tmp_path: Path) -> None:
    path = tmp_path / "batches.db"
    go = tmp_path / "go"
    go.touch()
    proc = start_writer(path, "batches", 50, go)
    confirmed = kill_after(proc, 50 * 40)
    assert integrity(path) == "ok"
    rows = len(ExperimentDB(path).get_metrics(1))
    assert rows % 50 == 0  # log_metrics is all or nothing
    assert confirmed <= rows <= confirmed + 50
