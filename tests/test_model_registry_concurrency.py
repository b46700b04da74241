"""Several processes registering and promoting models in one registry file at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from pytest_modeltiers.store.model_registry import ModelRegistry

WRITER = r"""
import os, sys, time
from pytest_modeltiers.store.model_registry import ModelRegistry

path, ckpt, go = sys.argv[1], sys.argv[2], sys.argv[5]
worker, count = int(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + 30
while not os.path.exists(go):  # start together, so the writes really overlap
    if time.monotonic() > deadline:
        sys.exit("never told to start")
    time.sleep(0.005)
reg = ModelRegistry(path)  # the processes race to create the file
for i in range(count):
    metrics = {"val/loss": 1.0 / (i + 1)}
    mid = reg.register_model("shared", f"{worker}.{i}.0", ckpt, "lm", "h", metrics)
    reg.promote_model(mid, "production")
print("ok", flush=True)
"""


def test_four_processes_register_and_promote(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(ckpt), str(w), "15", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(1, 5)
    ]
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    reg = ModelRegistry(path)
    frame = reg.list_models(status=None, limit=None)
    assert len(frame) == 60 and frame["version"].nunique() == 60
    # Exactly one version holds production and the tag; every move is in the audit log.
    prod = reg.get_by_alias("production", name="shared")
    assert prod is not None and prod["tags"] == ["production"]
    assert len(reg.list_models(tag="production", status=None)) == 1
    log = reg.get_audit_log(action="alias_set")
    assert len(log) == 60
    assert log["model_id"].iloc[-1] == prod["model_id"]
    # Each move names the holder before it: the audit log is one unbroken chain.
    assert log["previous_model_id"].iloc[1:].tolist() == log["model_id"].iloc[:-1].tolist()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
