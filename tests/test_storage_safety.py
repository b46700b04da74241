"""Storage safety: a file that is not ours is identified read-only and left untouched, every
path a store is given is checked before anything runs (``check_database_file``), and what the
experiment database records can be found again later (checkpoints named by the database's
identity, stored relative to it and hash-checked; nothing recorded inside a temporary folder).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import pytest_modeltiers.suites.tier5  # noqa: F401  (imported once, before in-process runs)
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.store import ExperimentDB, ModelRegistry, StoreError, StoreFileError
from pytest_modeltiers.store.experiment_db import SCHEMA as EXPERIMENT_SCHEMA
from pytest_modeltiers.store.experiment_db import ArtifactError
from pytest_modeltiers.store.sqlite_base import check_database_file
from pytest_modeltiers.training.checkpoints import load_model_weights

KINDS = ("experiment_db", "model_registry")
STORES: dict[str, Callable[[Path], object]] = {
    "experiment_db": ExperimentDB,
    "model_registry": ModelRegistry,
}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime: what 'untouched' means."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def foreign_database(path: Path, *, wal: bool = False, application_id: int = 0) -> Path:
    """Another program's SQLite file (rollback journal unless ``wal``)."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    if application_id:
        conn.execute(f"PRAGMA application_id={application_id}")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    return path


# -- foreign files are never changed --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
@pytest.mark.parametrize("application_id", [0, 0x12345678], ids=["no-app-id", "other-app-id"])
def test_store_refuses_a_foreign_sqlite_file_without_touching_it(
    tmp_path: Path, kind: str, wal: bool, application_id: int
) -> None:
    path = foreign_database(tmp_path / "shop.db", wal=wal, application_id=application_id)
    before = snapshot(tmp_path)
    with pytest.raises(StoreFileError, match="is a SQLite database but not a pytest-modeltiers"):
        STORES[kind](path)
    assert snapshot(tmp_path) == before  # header, journal mode, mtime; no -wal/-shm left
    # Bytes 18-19 of the header: 1 for a rollback journal, 2 for WAL (what the bug changed).
    assert path.read_bytes()[18:20] == (b"\x02\x02" if wal else b"\x01\x01")


def test_foreign_wal_file_being_written_is_refused(tmp_path: Path) -> None:
    """A live writer keeps the newest header in its write-ahead log: read it from there."""
    path = tmp_path / "live.db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE sensor (x REAL)")
        assert Path(f"{path}-wal").stat().st_size > 0
        with pytest.raises(StoreFileError, match=r"not a pytest-modeltiers .*tables: sensor"):
            check_database_file(path, "experiment_db")
        with pytest.raises(StoreFileError, match="not a pytest-modeltiers experiment database"):
            ExperimentDB(path)
    finally:
        writer.close()


def test_own_database_open_elsewhere_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "experiments.db"
    db = ExperimentDB(path)  # keeps its connection: the schema may still be in the WAL only
    db.log_run("r")
    check_database_file(path, "experiment_db")
    assert ExperimentDB(path).list_runs()["run_name"].tolist() == ["r"]


# -- check_database_file: one clear line for every bad path ---------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_check_accepts_a_new_path_and_creates_nothing(tmp_path: Path, kind: str) -> None:
    check_database_file(tmp_path / "new.db", kind)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_check_accepts_its_own_store_and_an_empty_file(tmp_path: Path, kind: str) -> None:
    store = STORES[kind](tmp_path / "mine.db")
    store.close()  # type: ignore[attr-defined]
    (tmp_path / "empty.db").touch()
    before = snapshot(tmp_path)
    check_database_file(tmp_path / "mine.db", kind)
    check_database_file(tmp_path / "empty.db", kind)
    assert snapshot(tmp_path) == before


def truncated_copy(tmp_path: Path, size: int) -> Path:
    source = tmp_path / "source.db"
    ExperimentDB(source).close()
    data = source.read_bytes()
    target = tmp_path / "cut.db"
    target.write_bytes(data[:size])
    source.unlink()
    return target


BAD_PATHS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (lambda tmp: tmp, r"is a directory; pass a file path, for example .*\.db"),
    "garbage": (
        lambda tmp: _write(tmp / "g.db", os.urandom(64).replace(b"S", b"x") + b"\0" * 4000),
        r"is not a SQLite database \(it starts with",
    ),
    "text": (
        lambda tmp: _write(tmp / "notes.db", b"my notes\n"),
        "is not a SQLite database",
    ),
    "cut-in-header": (
        lambda tmp: truncated_copy(tmp, 40),
        r"truncated or damaged SQLite file \(only 40 bytes",
    ),
    "cut-mid-page": (
        lambda tmp: truncated_copy(tmp, 4096 + 1000),
        r"truncated or damaged .*not a whole number of 4096-byte pages.*restore it from a backup",
    ),
    "cut-at-page": (
        lambda tmp: truncated_copy(tmp, 4096),
        r"truncated or damaged .*its header counts \d+ pages of 4096",
    ),
    "foreign": (
        lambda tmp: foreign_database(tmp / "shop.db"),
        r"a SQLite database but not a pytest-modeltiers .*it was left untouched",
    ),
    "other-app-id": (
        lambda tmp: foreign_database(tmp / "shop.db", application_id=0x47504B47),
        r"application_id 0x47504b47.*pass another path",
    ),
    "parent-missing": (
        lambda tmp: tmp / "no" / "such" / "dir" / "e.db",
        r"the directory .*dir does not exist; create it \(mkdir -p",
    ),
    "parent-is-a-file": (
        lambda tmp: _write(tmp / "file.txt", b"x") / "e.db",
        "is a file, not a directory",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_check_refuses_bad_paths_without_changing_them(
    tmp_path: Path, kind: str, case: str
) -> None:
    make, message = BAD_PATHS[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(StoreFileError, match=message) as info:
        check_database_file(path, kind)
    assert str(path) in str(info.value)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob("*-wal")) == []


@pytest.mark.parametrize("kind", KINDS)
def test_check_refuses_a_newer_schema(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "future.db"
    STORES[kind](path).close()  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(StoreFileError, match="schema version 99, newer than this"):
        check_database_file(path, kind)
    assert snapshot(tmp_path) == before


def test_check_names_the_other_kind_of_store(tmp_path: Path) -> None:
    registry = tmp_path / "registry.db"
    ModelRegistry(registry).close()
    with pytest.raises(
        StoreFileError, match=r"another kind of pytest-modeltiers store \(the model registry\)"
    ):
        check_database_file(registry, "experiment_db")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/proc/experiments.db", "virtual 'proc' filesystem, which holds no database files"),
        ("/proc/self/status", "virtual 'proc' filesystem"),
        ("/proc", "virtual 'proc' filesystem"),
    ],
)
def test_check_refuses_proc(path: str, message: str) -> None:
    with pytest.raises(StoreFileError, match=message):
        check_database_file(Path(path), "experiment_db")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files"
)
def test_check_refuses_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    ExperimentDB(path).close()
    path.chmod(0)
    try:
        with pytest.raises(StoreFileError, match="cannot be read"):
            check_database_file(path, "experiment_db")
    finally:
        path.chmod(0o600)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_check_refuses_a_pipe_without_reading_it(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.db"
    os.mkfifo(pipe)  # reading it would block until a writer came
    with pytest.raises(StoreFileError, match="is not a regular file"):
        check_database_file(pipe, "model_registry")


def test_check_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown store kind 'experiments'; use one of"):
        check_database_file(tmp_path / "e.db", "experiments")


def test_store_keeps_creating_missing_parents(tmp_path: Path) -> None:
    """Opening a store in code still creates its directories; only the start-of-session
    check insists the directory exists (a typo in a CLI path should not create a tree)."""
    path = tmp_path / "a" / "b" / "e.db"
    ExperimentDB(path).log_run("r")
    assert path.exists()
    assert EXPERIMENT_SCHEMA.key == "experiment_db"


# -- the experiment database's artifacts: identity, copies, hashes --------------------------


def test_each_database_has_its_own_identity_and_artifact_folder(tmp_path: Path) -> None:
    first, second = ExperimentDB(tmp_path / "a.db"), ExperimentDB(tmp_path / "b.db")
    assert len(first.identity) == 32 and first.identity != second.identity
    assert first.identity == ExperimentDB(tmp_path / "a.db").identity  # stored, not drawn again
    assert first.artifact_dir == tmp_path / f"a-{first.identity[:8]}-checkpoints"
    run = first.log_run("r")
    assert first.artifact_path(run, "weights.pt") == first.artifact_dir / f"run-{run}-weights.pt"
    with pytest.raises(StoreError, match="plain file name"):
        first.artifact_path(run, "../escape.pt")


def test_an_artifact_written_to_the_artifact_folder_is_relative_and_hashed(
    tmp_path: Path,
) -> None:
    db = ExperimentDB(tmp_path / "exp.db")
    run = db.log_run("r")
    target = db.artifact_path(run, "weights.pt")
    target.parent.mkdir()
    target.write_bytes(b"weights")
    artifact = db.log_artifact(run, "checkpoint", target)
    (row,) = db.get_artifacts(run).to_dict("records")
    assert row["filepath"] == f"{db.artifact_dir.name}/run-{run}-weights.pt"
    assert row["sha256"] == hashlib.sha256(b"weights").hexdigest() and row["size_bytes"] == 7
    # the database and its folder move together
    db.close()  # the last connection folds the write-ahead log into the file
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(tmp_path / "exp.db", moved / "exp.db")
    shutil.move(db.artifact_dir, moved / db.artifact_dir.name)
    again = ExperimentDB(moved / "exp.db")
    assert again.artifact_file(artifact).read_bytes() == b"weights"


def test_a_changed_or_missing_artifact_is_refused_naming_the_file(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "exp.db")
    run = db.log_run("r")
    path = tmp_path / "model.pt"
    path.write_bytes(b"original")
    artifact = db.log_artifact(run, "checkpoint", path)
    assert db.artifact_file(artifact) == path
    path.write_bytes(b"overwritten")
    with pytest.raises(ArtifactError, match=r"has changed since it was recorded: .*model\.pt"):
        db.artifact_file(artifact)
    path.unlink()
    with pytest.raises(ArtifactError, match=r"does not exist: no file at .*model\.pt. Restore"):
        db.artifact_file(artifact)


@pytest.fixture
def system_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the system's temporary folder, and a permanent folder beside it."""
    temp = tmp_path / "system-tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.delenv("PYTEST_DEBUG_TEMPROOT", raising=False)
    (tmp_path / "project").mkdir()
    return temp


def test_a_file_in_a_temporary_folder_is_copied_next_to_the_database(
    tmp_path: Path, system_temp: Path
) -> None:
    db = ExperimentDB(tmp_path / "project" / "exp.db")
    run = db.log_run("r")
    scratch = system_temp / "pytest-of-me" / "pytest-7" / "run"
    scratch.mkdir(parents=True)
    (scratch / "last.ckpt").write_bytes(b"weights")
    assert db.must_copy(scratch / "last.ckpt")
    artifact = db.log_artifact(run, "checkpoint", scratch / "last.ckpt")
    (recorded,) = db.get_artifacts(run)["filepath"]
    assert recorded == f"{db.artifact_dir.name}/run-{run}-last.ckpt"
    shutil.rmtree(system_temp / "pytest-of-me")  # what pytest does a few sessions later
    assert db.artifact_file(artifact).read_bytes() == b"weights"
    # refused, not referenced, when copying is turned off
    (scratch).mkdir(parents=True)
    (scratch / "other.ckpt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"lies in the temporary folder .* pass copy=True"):
        db.log_artifact(run, "checkpoint", scratch / "other.ckpt", copy=False)
    assert len(db.get_artifacts(run)) == 1
    # a database that is itself temporary keeps referencing its neighbours
    temporary_db = ExperimentDB(system_temp / "exp.db")
    assert not temporary_db.must_copy(scratch / "other.ckpt")


def test_non_finite_floats_round_trip_in_params_and_metadata(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "exp.db")
    run = db.log_run("r")
    values = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "nested": [1.0, {"x": math.nan}]}
    db.log_params(run, {"failure": values})
    back = db.get_params(run)["failure"]
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert back["nested"][0] == 1.0 and math.isnan(back["nested"][1]["x"])
    db.log_artifact(run, "checkpoint", "best.ckpt", {"score": math.nan})
    assert math.isnan(db.get_artifacts(run)["metadata"][0]["score"])
    with sqlite3.connect(db.path) as conn:  # the stored text is strict JSON
        (text,) = conn.execute("SELECT value FROM params WHERE key = 'failure'").fetchone()
    assert '"inf": "inf"' in text and '"ninf": "-inf"' in text and "NaN," not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON {name}"))
    with pytest.raises(StoreError, match=r"param 'odd' of run 1\['x'\] is one of the strings"):
        db.log_params(run, {"odd": {"x": "nan"}})  # it would come back as a float
    with pytest.raises(StoreError, match="store the float itself"):
        db.log_artifact(run, "checkpoint", "last.ckpt", {"note": ["-inf"]})
    with pytest.raises(StoreError, match="not JSON-serialisable"):  # a setting stays strict
        db.log_run("r", {"lr": math.nan})


# -- tier 5 baselines, as users run them ----------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
BAG_CLS = REPO / "fixtures" / "tier5" / "bag_cls.py"
OTHER_MODEL = REPO / "example_models" / "tiny_encoder_cls.py"


def tier5(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--model={model}", "-m", "tier5", "-p", "no:cacheprovider", *args)


def record_tier5_run(pytester: pytest.Pytester, model: str, db: str) -> None:
    tier5(pytester, model, "-k", "test_eval_metrics", "--experiment-db", db).assert_outcomes(
        passed=1
    )


def test_two_databases_in_one_folder_keep_their_own_baselines(pytester: pytest.Pytester) -> None:
    shutil.copy(BAG_CLS, pytester.path)
    shutil.copy(OTHER_MODEL, pytester.path)
    record_tier5_run(pytester, "bag_cls.py", "a.db")  # run 1 of a.db
    record_tier5_run(pytester, "tiny_encoder_cls.py", "b.db")  # run 1 of b.db
    a, b = ExperimentDB(pytester.path / "a.db"), ExperimentDB(pytester.path / "b.db")
    (path_a,) = a.get_artifacts(1, "checkpoint")["filepath"]
    (path_b,) = b.get_artifacts(1, "checkpoint")["filepath"]
    assert path_a == f"a-{a.identity[:8]}-checkpoints/run-1-weights.pt"  # relative, own folder
    assert path_b.startswith(f"b-{b.identity[:8]}-checkpoints/")
    result = tier5(
        pytester, "bag_cls.py", "-k", "test_baseline_regression",
        "--experiment-db", "a.db", "--baseline-run", "1",
    )  # fmt: skip
    result.assert_outcomes(passed=1)  # a.db's run 1 is still the bag classifier's weights


def test_an_overwritten_baseline_checkpoint_fails_naming_the_file(
    pytester: pytest.Pytester,
) -> None:
    shutil.copy(BAG_CLS, pytester.path)
    record_tier5_run(pytester, "bag_cls.py", "exp.db")
    db = ExperimentDB(pytester.path / "exp.db")
    (recorded,) = db.get_artifacts(1, "checkpoint")["filepath"]
    weights = torch.load(pytester.path / recorded, weights_only=True)
    torch.save({k: v + 1 for k, v in weights.items()}, pytester.path / recorded)
    result = tier5(
        pytester, "bag_cls.py", "-k", "test_baseline_regression",
        "--experiment-db", "exp.db", "--baseline-run", "1",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*checkpoint {recorded} of run 1 in exp.db has changed since it was recorded*"]
    )


def make_version_2_database(path: Path, checkpoints: list[str]) -> None:
    """A database as the previous release wrote it (schema 2, no identity, no hashes), with a
    tier 5 run whose checkpoint artifacts are the given paths."""
    conn = sqlite3.connect(path)
    for migration in EXPERIMENT_SCHEMA.migrations[:2]:
        migration(conn)
    stamp = "2024-01-02T03:04:05.000000Z"
    conn.execute(
        "INSERT INTO runs (run_name, created_at, updated_at, status) VALUES (?, ?, ?, ?)",
        ("tier5-eval-cls_tiny", stamp, stamp, "completed"),
    )
    for checkpoint in checkpoints:
        conn.execute(
            "INSERT INTO artifacts (run_id, artifact_type, filepath, metadata, created_at) "
            "VALUES (1, 'checkpoint', ?, '{\"format\": \"state_dict\"}', ?)",
            (checkpoint, stamp),
        )
    conn.execute(f"PRAGMA application_id={EXPERIMENT_SCHEMA.application_id}")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("recorded", ["absolute", "old-relative"])
def test_a_previous_releases_database_still_gives_its_baseline(
    pytester: pytest.Pytester, recorded: str
) -> None:
    shutil.copy(BAG_CLS, pytester.path)
    folder = pytester.path / "modeltiers-checkpoints"
    folder.mkdir()
    model = load_model(LoadRequest(spec=str(pytester.path / "bag_cls.py"), rootdir=pytester.path))
    torch.save(model.new_model().state_dict(), folder / "tier5-run-1.pt")
    path = (
        str(folder / "tier5-run-1.pt")
        if recorded == "absolute"
        else "modeltiers-checkpoints/tier5-run-1.pt"
    )
    make_version_2_database(pytester.path / "old.db", [path])
    result = tier5(
        pytester, "bag_cls.py", "-k", "test_baseline_regression",
        "--experiment-db", "old.db", "--baseline-run", "1",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    db = ExperimentDB(pytester.path / "old.db")
    assert db.schema_version() == EXPERIMENT_SCHEMA.version and len(db.identity) == 32
    assert db.get_artifacts(1)["filepath"].tolist() == [path]  # records are not rewritten


# -- tier 3: a recorded run never points into pytest's temporary folders ---------------------


def test_a_tier3_run_recorded_in_a_database_outlives_pytests_temporary_folders(
    pytester: pytest.Pytester,
) -> None:
    shutil.copy(BAG_CLS, pytester.path / "bag_run.py")
    trained = pytester.runpytest(
        "--model=bag_run.py", "-m", "tier3", "-k", "test_training_run",
        "--experiment-db", "runs/exp.db", "-p", "no:cacheprovider",
    )  # fmt: skip
    trained.assert_outcomes(passed=1)
    basetemp = pytester.path.parent / "basetemp"  # the session's pytest temporary folder
    db = ExperimentDB(pytester.path / "runs" / "exp.db")
    artifacts = db.get_artifacts(1, "checkpoint")
    assert len(artifacts) == 2 and all(artifacts["sha256"].str.len() == 64)
    prefix = f"exp-{db.identity[:8]}-checkpoints/run-1-"
    assert all(path.startswith(prefix) for path in artifacts["filepath"])
    recorded = json.dumps(
        [db.get_run(1), db.get_params(1), artifacts.to_dict("records")], default=str
    )
    assert str(basetemp) not in recorded and "basetemp" not in recorded
    shutil.rmtree(basetemp)  # what pytest does a few sessions later
    for artifact in artifacts["artifact_id"]:
        weights = load_model_weights(db.artifact_file(int(artifact)))
        assert set(weights) == {"emb.weight", "head.weight", "head.bias"}
    db.close()
    # the trained run is the baseline of a later session: the untrained model regressed
    gate = pytester.runpytest(
        "--model=bag_run.py", "-m", "tier5", "-k", "test_baseline_regression",
        "--experiment-db", "runs/exp.db", "--baseline-run", "1", "-p", "no:cacheprovider",
    )  # fmt: skip
    gate.assert_outcomes(failed=1)
    gate.stdout.fnmatch_lines(["*candidate vs baseline run 1 on * examples*regressed*"])
