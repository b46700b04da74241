"""Tests of ``ExperimentDB``: the guide's API, the schema rules (foreign keys, one timestamp
format, WAL), migrations from an older file, and clear errors for files it cannot use."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.store import (
    ExperimentDB,
    MetricNotFoundError,
    RunNotFoundError,
    StoreError,
    StoreFileError,
)
from pytest_modeltiers.store.experiment_db import SCHEMA, qualify_metric_name

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def db(tmp_path: Path) -> ExperimentDB:
    return ExperimentDB(tmp_path / "experiments.db")


def raw(db: ExperimentDB) -> sqlite3.Connection:
    """A plain connection for looking at the file behind the API's back."""
    return sqlite3.connect(db.path)


# -- opening, pragmas, schema ----------------------------------------------------------------


def test_new_file_is_wal_with_current_schema_version(db: ExperimentDB) -> None:
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA.version
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"runs", "params", "metrics", "artifacts", "profiles", "comparisons"} <= tables
    assert db.schema_version() == SCHEMA.version == 3


def test_every_connection_enforces_foreign_keys_and_waits_for_locks(db: ExperimentDB) -> None:
    with db.connect() as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        # The schema itself refuses an orphan even past the API's own check.
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute(
                "INSERT INTO metrics (run_id, metric_name, value, timestamp) "
                "VALUES (999, 'x', 1.0, 't')"
            )


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "e.db"  # parents are created
    run = ExperimentDB(path).log_run("r", {"a": 1})
    again = ExperimentDB(str(path))
    assert again.get_run(run)["config"] == {"a": 1}
    assert repr(again) == f"ExperimentDB({str(path)!r})"


def test_import_does_not_load_pandas() -> None:
    code = (
        "import sys, pytest_modeltiers, pytest_modeltiers.store; "
        "print('pandas' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n")
    with pytest.raises(StoreFileError, match="is not a SQLite database") as info:
        ExperimentDB(path)
    assert str(path) in str(info.value)
    assert "a path that does not exist yet" in str(info.value)
    assert isinstance(info.value, ModelTiersError)
    assert path.read_text() == "these are my notes, not a database\n"  # untouched


def test_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    ExperimentDB(path).log_run("r")


def test_newer_schema_is_a_clear_error(db: ExperimentDB) -> None:
    with db.connect() as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA.version + 1}")
    with pytest.raises(StoreFileError, match="newer than this") as info:
        ExperimentDB(db.path)
    message = str(info.value)
    assert str(db.path) in message
    assert f"schema version {SCHEMA.version + 1}" in message
    assert "pip install -U pytest-modeltiers" in message


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER)")  # the guide's file or anything else
    conn.commit()
    conn.close()
    with pytest.raises(StoreFileError, match="not a pytest-modeltiers experiment database"):
        ExperimentDB(path)


def test_in_memory_path_is_refused() -> None:
    with pytest.raises(StoreError, match="needs a file path"):
        ExperimentDB(":memory:")


# The version-1 schema exactly as the first release wrote it. Frozen here, independently of the
# migration code, so a later edit of migration 1 cannot make real old files unreadable unseen.
V1_SCHEMA = [
    """CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, run_name TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}', notes TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'running', sweep_id TEXT, sweep_params TEXT, gist_id TEXT,
        gist_revision TEXT, gist_sha256 TEXT, task_name TEXT, modality TEXT, strategy TEXT,
        devices TEXT, artifact_paths TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX idx_runs_sweep ON runs(sweep_id)",
    """CREATE TABLE metrics (metric_id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, split TEXT,
        metric_name TEXT NOT NULL, value REAL, step INTEGER, epoch INTEGER,
        timestamp TEXT NOT NULL)""",
    "CREATE INDEX idx_metrics_run_name ON metrics(run_id, metric_name)",
    """CREATE TABLE artifacts (artifact_id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        artifact_type TEXT NOT NULL, filepath TEXT NOT NULL, metadata TEXT,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX idx_artifacts_run ON artifacts(run_id)",
    """CREATE TABLE comparisons (comparison_id INTEGER PRIMARY KEY AUTOINCREMENT,
        baseline_run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        candidate_run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        notes TEXT, created_at TEXT NOT NULL)""",
]


def make_v1_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    ts = "2024-01-02T03:04:05.000000Z"
    conn.execute(
        "INSERT INTO runs (run_name, config, created_at, updated_at) VALUES (?, ?, ?, ?)",
        ("old-run", json.dumps({"lr": 0.1}), ts, ts),
    )
    conn.execute(
        "INSERT INTO metrics (run_id, split, metric_name, value, epoch, timestamp) "
        "VALUES (1, 'val', 'val/loss', 0.75, 0, ?)",
        (ts,),
    )
    conn.execute(f"PRAGMA application_id={SCHEMA.application_id}")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_version_1_file_is_migrated_on_open_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_v1_file(path)
    db = ExperimentDB(path)
    assert db.schema_version() == SCHEMA.version
    assert db.get_run(1)["config"] == {"lr": 0.1}
    assert db.get_metrics(1)["value"].tolist() == [0.75]
    # The tables version 2 added work on the migrated file.
    db.log_params(1, {"batch_size": 8})
    assert db.get_params(1) == {"batch_size": 8}
    db.log_profile(1, "reference", {"mean": 0.0}, "sha256:abc")
    assert db.get_profile(1, "reference")["profile"] == {"mean": 0.0}
    assert ExperimentDB(path).schema_version() == SCHEMA.version  # second open: no-op


def test_migrating_a_file_with_dangling_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_v1_file(path)
    conn = sqlite3.connect(path)  # foreign keys off here, as in the guide's files
    conn.execute(
        "INSERT INTO metrics (run_id, metric_name, value, timestamp) VALUES (9, 'x', 1, 't')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreFileError, match="reference missing rows"):
        ExperimentDB(path)


def test_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_v1_file(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE params (x INTEGER)")  # makes migration 2 fail half-way
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="params already exists"):
        ExperimentDB(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "profiles" not in tables  # the statements before the failure were rolled back
    finally:
        conn.close()


# -- runs ------------------------------------------------------------------------------------


def test_log_run_and_get_run(db: ExperimentDB) -> None:
    run = db.log_run(
        "baseline",
        {"lr": 1e-3, "layers": [2, 4]},
        "first try",
        sweep_id="s1",
        sweep_params={"lr": 1e-3},
        gist_id="abc",
        gist_revision="rev",
        gist_sha256="00ff",
    )
    info = db.get_run(run)
    assert info["run_name"] == "baseline"
    assert info["config"] == {"lr": 1e-3, "layers": [2, 4]}
    assert info["notes"] == "first try"
    assert info["status"] == "running"
    assert info["sweep_params"] == {"lr": 1e-3}
    assert (info["gist_id"], info["gist_revision"], info["gist_sha256"]) == ("abc", "rev", "00ff")
    assert TIMESTAMP.match(info["created_at"])
    assert info["created_at"] == info["updated_at"]


def test_log_run_accepts_a_training_config(db: ExperimentDB) -> None:
    from pytest_modeltiers.config.training import TrainingConfig

    config = TrainingConfig()
    run = db.log_run("tc", config)
    assert db.get_run(run)["config"] == json.loads(json.dumps(config.to_dict()))


def test_unserialisable_config_is_an_error_not_a_str(db: ExperimentDB) -> None:
    with pytest.raises(StoreError, match="config of run 'r' is not JSON-serialisable"):
        db.log_run("r", {"path": Path("x")})
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        db.log_run("r", {"lr": float("nan")})
    assert db.list_runs().empty


def test_register_run(db: ExperimentDB) -> None:
    run = db.register_run(
        {
            "run_name": "tier5",
            "task_name": "lm_tiny",
            "modality": "text",
            "strategy": "ddp",
            "devices": [0, 1],
            "artifact_paths": {"ckpt": "best.ckpt"},
        }
    )
    info = db.get_run(run)
    assert info["task_name"] == "lm_tiny"
    assert info["devices"] == [0, 1]
    assert info["artifact_paths"] == {"ckpt": "best.ckpt"}
    assert info["config"] == {}


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"run_name": "x", "task": "lm"}, r"unknown key\(s\) \['task'\]"),
        ({}, "run_name must be a non-empty string"),
        ({"run_name": "  "}, "run_name must be a non-empty string"),
        ({"run_name": "x", "task_name": 3}, "task_name must be a string"),
    ],
)
def test_register_run_rejects_bad_input(
    db: ExperimentDB, info: dict[str, Any], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        db.register_run(info)


def test_update_run_status(db: ExperimentDB) -> None:
    run = db.log_run("r")
    before = db.get_run(run)["updated_at"]
    db.update_run_status(run, "completed")
    info = db.get_run(run)
    assert info["status"] == "completed"
    assert info["updated_at"] >= before
    with pytest.raises(StoreError, match="unknown run status 'complete'"):
        db.update_run_status(run, "complete")
    with pytest.raises(RunNotFoundError, match="run 42 does not exist"):
        db.update_run_status(42, "failed")


def test_get_run_missing_is_a_value_error_naming_the_id(db: ExperimentDB) -> None:
    with pytest.raises(ValueError, match="run 7 does not exist"):
        db.get_run(7)


def test_list_runs_newest_first_with_limit(db: ExperimentDB) -> None:
    ids = [db.log_run(f"r{i}") for i in range(5)]
    db.update_run_status(ids[0], "failed")
    frame = db.list_runs(limit=3)
    assert list(frame.columns) == [
        "run_id",
        "run_name",
        "created_at",
        "status",
        "notes",
        "sweep_id",
    ]
    assert frame["run_id"].tolist() == ids[::-1][:3]
    assert len(db.list_runs(limit=None)) == 5
    assert db.list_runs(status="failed")["run_id"].tolist() == [ids[0]]
    with pytest.raises(StoreError, match="limit must be a positive integer"):
        db.list_runs(limit=0)
    with pytest.raises(StoreError, match="limit must be an integer"):
        db.list_runs(limit="5")  # type: ignore[arg-type]


def test_get_runs_for_sweep(db: ExperimentDB) -> None:
    a = db.log_run("a", {"lr": 1}, sweep_id="sw", sweep_params={"lr": 1})
    db.log_run("other", sweep_id="other")
    b = db.log_run("b", {"lr": 2}, sweep_id="sw", sweep_params={"lr": 2})
    frame = db.get_runs_for_sweep("sw")
    assert frame["run_id"].tolist() == [a, b]
    assert frame["sweep_params"].tolist() == [{"lr": 1}, {"lr": 2}]
    assert frame["config"].tolist() == [{"lr": 1}, {"lr": 2}]
    assert db.get_runs_for_sweep("none").empty


# -- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split", "expected"),
    [
        ("val/loss", None, ("val/loss", "val")),
        ("loss", "val", ("val/loss", "val")),
        ("val/loss", "val", ("val/loss", "val")),
        ("drift/js_divergence", None, ("drift/js_divergence", "drift")),
        ("drift/js", "eval", ("eval/drift/js", "eval")),
        ("learning_rate", None, ("learning_rate", None)),
    ],
)
def test_metric_naming_scheme(name: str, split: str | None, expected: tuple[str, Any]) -> None:
    assert qualify_metric_name(name, split) == expected


@pytest.mark.parametrize(
    ("name", "split"), [("", None), ("/loss", None), ("val//loss", None), ("loss", "a/b")]
)
def test_bad_metric_names_are_errors(name: str, split: str | None) -> None:
    with pytest.raises(StoreError):
        qualify_metric_name(name, split)


def test_log_metric_and_get_metrics(db: ExperimentDB) -> None:
    run = db.log_run("r")
    db.log_metric(run, "train/loss", 2.0, step=1, epoch=0)
    db.log_metric(run, "loss", 1.5, 2, 0, split="train")
    db.log_metric(run, "learning_rate", 1e-3)
    frame = db.get_metrics(run)
    assert list(frame.columns) == [
        "metric_id",
        "run_id",
        "split",
        "metric_name",
        "value",
        "step",
        "epoch",
        "timestamp",
    ]
    assert frame["metric_name"].tolist() == ["train/loss", "train/loss", "learning_rate"]
    assert frame["value"].tolist() == [2.0, 1.5, 1e-3]
    assert frame["step"].tolist()[:2] == [1, 2]
    assert frame["step"].isna().tolist() == [False, False, True]
    assert all(TIMESTAMP.match(t) for t in frame["timestamp"])
    only = db.get_metrics(run, "train/loss")
    assert only["value"].tolist() == [2.0, 1.5]
    assert db.get_metrics(run, split="train")["metric_name"].nunique() == 1
    assert db.get_run_metrics(run).shape == frame.shape


def test_log_metrics_is_one_transaction_with_split(db: ExperimentDB) -> None:
    run = db.log_run("r")
    db.log_metrics(run, {"loss": 0.5, "accuracy": 0.9}, "val", step=10, epoch=1)
    frame = db.get_metrics(run)
    assert frame["metric_name"].tolist() == ["val/loss", "val/accuracy"]
    assert set(frame["split"]) == {"val"}
    assert frame["timestamp"].nunique() == 1
    # A bad value anywhere means nothing of the call is written.
    with pytest.raises(StoreError, match="'val/bad'"):
        db.log_metrics(run, {"loss": 0.4, "bad": "high"}, "val")
    assert len(db.get_metrics(run)) == 2


def test_metric_values_accept_numpy_and_nan(db: ExperimentDB) -> None:
    import numpy as np

    run = db.log_run("r")
    db.log_metric(np.int64(run), "train/loss", np.float32(0.25), step=np.int64(3))
    db.log_metric(run, "train/loss", float("nan"))
    db.log_metric(run, "train/loss", float("inf"))
    values = db.get_metrics(run)["value"].tolist()
    assert values[0] == 0.25
    assert math.isnan(values[1])
    assert values[2] == math.inf
    with pytest.raises(StoreError, match="is a bool"):
        db.log_metric(run, "x", True)


def test_metric_for_missing_run_names_the_run(db: ExperimentDB) -> None:
    with pytest.raises(RunNotFoundError, match="run 99 does not exist") as info:
        db.log_metric(99, "val/loss", 1.0)
    assert str(db.path) in str(info.value)
    with pytest.raises(RunNotFoundError, match="run 99"):
        db.log_metrics(99, {"loss": 1.0}, "val")
    with pytest.raises(RunNotFoundError):
        db.get_metrics(99)
    conn = raw(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    finally:
        conn.close()


def test_get_best_run(db: ExperimentDB) -> None:
    a = db.log_run("a", {"lr": 1})
    b = db.log_run("b", {"lr": 2})
    db.log_run("no-metric")
    for epoch, value in enumerate([0.9, 0.5, 0.6]):
        db.log_metric(a, "val/loss", value, epoch=epoch)
    for epoch, value in enumerate([0.8, 0.4, float("nan")]):
        db.log_metric(b, "val/loss", value, epoch=epoch, step=epoch * 10)
    db.log_metric(a, "val/accuracy", 0.7)
    db.log_metric(b, "val/accuracy", 0.6)
    best = db.get_best_run("val/loss")
    assert best == {
        "run_id": b,
        "run_name": "b",
        "best_value": 0.4,
        "best_epoch": 1,
        "best_step": 10,
        "config": {"lr": 2},
    }
    assert db.get_best_run("val/accuracy", mode="max")["run_id"] == a
    assert db.get_best_run("val/loss", mode="max")["best_value"] == 0.9
    with pytest.raises(MetricNotFoundError, match=r"'val/f1'.*val/accuracy, val/loss"):
        db.get_best_run("val/f1")
    with pytest.raises(StoreError, match="mode must be 'min' or 'max'"):
        db.get_best_run("val/loss", mode="best")


def test_get_best_run_on_empty_db(db: ExperimentDB) -> None:
    with pytest.raises(MetricNotFoundError, match="metrics logged: none"):
        db.get_best_run("val/loss")


def test_compare_runs_default_view(db: ExperimentDB) -> None:
    a = db.log_run("a")
    b = db.log_run("b")
    for epoch, (train, val) in enumerate([(1.0, 0.9), (0.6, 0.5), (0.4, 0.55)]):
        db.log_metrics(a, {"loss": train}, "train", epoch=epoch)
        db.log_metrics(a, {"loss": val}, "val", epoch=epoch)
    db.log_metrics(b, {"loss": 2.0}, "train", epoch=0)
    frame = db.compare_runs([b, a])
    assert list(frame.columns) == [
        "run_id",
        "run_name",
        "created_at",
        "status",
        "final_train_loss",
        "final_val_loss",
        "best_val_loss",
        "best_epoch",
        "total_epochs",
    ]
    assert frame["run_id"].tolist() == [b, a]
    row_a = frame.iloc[1]
    assert (row_a["final_train_loss"], row_a["final_val_loss"]) == (0.4, 0.55)
    assert (row_a["best_val_loss"], row_a["best_epoch"], row_a["total_epochs"]) == (0.5, 1, 3)
    row_b = frame.iloc[0]
    assert row_b["final_train_loss"] == 2.0
    assert math.isnan(row_b["final_val_loss"])
    assert math.isnan(row_b["best_val_loss"])
    assert frame["best_epoch"].isna().tolist() == [True, False]


def test_compare_runs_chosen_metrics(db: ExperimentDB) -> None:
    a = db.log_run("a")
    db.log_metric(a, "val/accuracy", 0.7, epoch=0)
    db.log_metric(a, "val/accuracy", 0.9, epoch=1)
    db.log_metric(a, "val/accuracy", 0.8, epoch=2)
    frame = db.compare_runs([a], {"val/accuracy": "max"})
    row = frame.iloc[0]
    assert row["final_val/accuracy"] == 0.8
    assert row["best_val/accuracy"] == 0.9
    assert row["best_epoch_val/accuracy"] == 1
    finals = db.compare_runs([a], ["val/accuracy"])
    assert "best_val/accuracy" not in finals.columns
    assert finals.iloc[0]["final_val/accuracy"] == 0.8
    assert list(db.compare_runs([a], "val/accuracy").columns) == list(finals.columns)
    with pytest.raises(RunNotFoundError, match="run 5, 6 does not exist"):
        db.compare_runs([a, 5, 6])
    with pytest.raises(StoreError, match="must be 'min' or 'max'"):
        db.compare_runs([a], {"val/accuracy": "up"})
    assert db.compare_runs([]).empty


# -- params, artifacts, comparisons, profiles ------------------------------------------------


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    # the strings the stores read back as non-finite floats are refused (tested apart)
    | st.text().filter(lambda text: text not in ("nan", "inf", "-inf")),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40)
@given(params=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=6))
def test_params_round_trip(tmp_path_factory: pytest.TempPathFactory, params: dict) -> None:
    db = ExperimentDB(tmp_path_factory.mktemp("params") / "e.db")
    run = db.log_run("r")
    db.log_params(run, params)
    assert db.get_params(run) == params


@settings(max_examples=40)
@given(config=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_config_round_trip(tmp_path_factory: pytest.TempPathFactory, config: dict) -> None:
    db = ExperimentDB(tmp_path_factory.mktemp("config") / "e.db")
    run = db.log_run("r", config)
    assert db.get_run(run)["config"] == config


def test_params_last_write_wins_and_validation(db: ExperimentDB) -> None:
    run = db.log_run("r")
    db.log_params(run, {"lr": 0.1, "opt": "adam"})
    db.log_param(run, "lr", 0.2)
    assert db.get_params(run) == {"lr": 0.2, "opt": "adam"}
    with pytest.raises(StoreError, match="param 'p' of run"):
        db.log_params(run, {"ok": 1, "p": object()})
    assert db.get_params(run) == {"lr": 0.2, "opt": "adam"}
    with pytest.raises(RunNotFoundError):
        db.log_params(123, {"a": 1})


def test_artifacts(db: ExperimentDB, tmp_path: Path) -> None:
    run = db.log_run("r")
    first = db.log_artifact(run, "checkpoint", tmp_path / "best.ckpt", {"epoch": 3})
    second = db.log_artifact(run, "export", "model.onnx")
    frame = db.get_artifacts(run)
    assert frame["artifact_id"].tolist() == [second, first]  # newest first
    assert frame["filepath"].tolist() == ["model.onnx", str(tmp_path / "best.ckpt")]
    assert frame["metadata"].tolist() == [None, {"epoch": 3}]
    assert all(TIMESTAMP.match(t) for t in frame["created_at"])
    assert db.get_artifacts(run, "checkpoint")["artifact_id"].tolist() == [first]
    with pytest.raises(RunNotFoundError):
        db.log_artifact(77, "checkpoint", "x")


def test_comparisons(db: ExperimentDB) -> None:
    a, b, c = (db.log_run(n) for n in "abc")
    first = db.create_comparison(a, b, "b beats a")
    second = db.create_comparison(b, c)
    frame = db.get_comparisons()
    assert frame["comparison_id"].tolist() == [first, second]
    assert db.get_comparisons(c)["comparison_id"].tolist() == [second]
    with pytest.raises(RunNotFoundError, match="run 50 does not exist"):
        db.create_comparison(a, 50)


def test_profiles(db: ExperimentDB) -> None:
    run = db.log_run("r")
    profile = {"features": {"len": {"mean": 12.5, "hist": [1, 2, 3]}}}
    pid = db.log_profile(run, "reference", profile, "sha256:aa")
    assert db.log_profile(run, "reference", profile, "sha256:aa") == pid  # idempotent
    got = db.get_profile(run, "reference")
    assert got["profile"] == profile
    assert got["content_hash"] == "sha256:aa"
    assert TIMESTAMP.match(got["created_at"])
    with pytest.raises(StoreError, match="not overwritten"):
        db.log_profile(run, "reference", {"x": 1}, "sha256:bb")
    with pytest.raises(StoreError, match="no profile named 'current'; it has: reference"):
        db.get_profile(run, "current")


def test_one_timestamp_format_in_every_table(db: ExperimentDB) -> None:
    run = db.log_run("r")
    db.log_metric(run, "val/loss", 1.0)
    db.log_params(run, {"a": 1})
    db.log_artifact(run, "t", "p")
    db.log_profile(run, "p", {}, "h")
    db.create_comparison(run, run)
    conn = raw(db)
    try:
        stamps = [
            *conn.execute("SELECT created_at FROM runs UNION ALL SELECT updated_at FROM runs"),
            *conn.execute("SELECT timestamp FROM metrics"),
            *conn.execute("SELECT logged_at FROM params"),
            *conn.execute("SELECT created_at FROM artifacts"),
            *conn.execute("SELECT created_at FROM profiles"),
            *conn.execute("SELECT created_at FROM comparisons"),
        ]
    finally:
        conn.close()
    assert len(stamps) == 7
    assert all(TIMESTAMP.match(s[0]) for s in stamps), stamps


def test_locked_database_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "e.db", busy_timeout=0.05)
    run = db.log_run("r")
    blocker = sqlite3.connect(db.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match=r"locked after waiting 0\.05 s") as info:
            db.log_metric(run, "val/loss", 1.0)
        assert str(db.path) in str(info.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    db.log_metric(run, "val/loss", 1.0)  # free again


def test_one_object_from_several_threads(db: ExperimentDB) -> None:
    import threading

    run = db.log_run("threads")

    def work(offset: int) -> None:
        for i in range(100):
            db.log_metric(run, "train/loss", 1.0, step=offset + i)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(db.get_metrics(run)["step"].tolist()) == list(range(400))


def test_close_and_context_manager(tmp_path: Path) -> None:
    with ExperimentDB(tmp_path / "e.db") as db:
        run = db.log_run("r")
    # Still usable after close: the next call opens a new connection.
    db.log_metric(run, "val/loss", 1.0)
    db.close()
    db.close()
    assert len(ExperimentDB(tmp_path / "e.db").get_metrics(run)) == 1
