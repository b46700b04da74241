"""Tests of ``ModelRegistry``: the guide's API, versions, aliases and the audit log, the schema's
constraints (foreign keys, one alias per name, no lineage cycle), and clear errors for files it
cannot use."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.config.training import TrainingConfig
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.store import StoreError, StoreFileError
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.store.metric_names import MetricNameError
from pytest_modeltiers.store.model_registry import (
    SCHEMA,
    CheckpointNotFoundError,
    DuplicateModelError,
    LineageError,
    ModelNotFoundError,
    ModelRegistry,
    parse_version,
    version_key,
)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models.db")


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\0" * 2048)
    return path


def register(reg: ModelRegistry, ckpt: Path, version: str = "1.0.0", **kw: Any) -> int:
    args: dict[str, Any] = {
        "name": kw.pop("name", "gpt-small"),
        "version": version,
        "checkpoint_path": ckpt,
        "task_type": "lm",
        "config_hash": "abc123",
        "metrics": {"val/loss": 0.4, "val/accuracy": 0.85},
    }
    args.update(kw)
    return reg.register_model(**args)


def raw(reg: ModelRegistry) -> sqlite3.Connection:
    conn = sqlite3.connect(reg.path)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


# -- opening ---------------------------------------------------------------------------------


def test_new_file_has_the_registry_schema(registry: ModelRegistry) -> None:
    assert registry.schema_version() == SCHEMA.version == 1
    with registry.connect() as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "models.db"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a registry")
    with pytest.raises(StoreFileError, match="is not a SQLite database") as info:
        ModelRegistry(path)
    assert str(path) in str(info.value) and isinstance(info.value, ModelTiersError)


def test_truncated_database_is_a_store_error_not_a_crash(tmp_path: Path, ckpt: Path) -> None:
    path = tmp_path / "models.db"
    reg = ModelRegistry(path)
    for i in range(30):
        register(reg, ckpt, f"1.0.{i}", metadata={"pad": "x" * 500})
    reg.close()
    with sqlite3.connect(path) as conn:  # fold the WAL in, so the file holds everything
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=str(path)):
        ModelRegistry(path).list_models(limit=None)


def test_an_experiment_db_is_not_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "experiments.db"
    ExperimentDB(path).log_run("r")
    with pytest.raises(StoreFileError, match="not a pytest-modeltiers model registry"):
        ModelRegistry(path)


def test_newer_schema_is_refused(registry: ModelRegistry) -> None:
    with registry.connect() as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA.version + 1}")
    with pytest.raises(StoreFileError, match="newer than this"):
        ModelRegistry(registry.path)


# -- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["1.0.0", "0.0.1", "10.20.30", "2.1.0-rc.1", "1.0.0+build.5", "1.0.0-alpha-a.b-c"]
)
def test_valid_versions(version: str) -> None:
    parse_version(version)


@pytest.mark.parametrize(
    ("version", "hint"),
    [
        ("v1.0.0", "drop the 'v': '1.0.0'"),
        ("1.0", "write '1.0.0'"),
        ("2", "write '2.0.0'"),
        ("01.0.0", "semantic version"),
        ("1.0.0-", "semantic version"),
        ("1.0.0-01", "semantic version"),
        ("latest", "semantic version"),
    ],
)
def test_invalid_versions_are_refused_with_a_hint(version: str, hint: str) -> None:
    with pytest.raises(StoreError, match=hint.replace(".", r"\.").replace("(", r"\(")):
        parse_version(version)


def test_semver_precedence() -> None:
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.9.0",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(reversed(order), key=version_key) == order


# -- registration and lookups ----------------------------------------------------------------


def test_register_and_get(registry: ModelRegistry, ckpt: Path) -> None:
    mid = register(
        registry,
        ckpt,
        export_formats={"onnx": "model.onnx"},
        tags=["baseline"],
        metadata={"training_samples": 256},
        training_run_id=7,
    )
    model = registry.get_model(mid)
    assert model is not None
    assert model["name"] == "gpt-small" and model["version"] == "1.0.0"
    assert model["metrics"] == {"val/loss": 0.4, "val/accuracy": 0.85}
    assert model["metadata"] == {"training_samples": 256}
    assert model["checkpoint_path"] == str(ckpt.resolve())
    assert model["model_size_mb"] == pytest.approx(2048 / 2**20)
    assert model["export_formats"] == ["onnx"] and model["tags"] == ["baseline"]
    assert model["training_run_id"] == 7 and model["status"] == "active"
    assert registry.get_model(name="gpt-small", version="1.0.0") == model
    assert registry.get_model(tag="baseline") == model
    assert registry.get_model(12345) is None
    assert registry.get_model(name="gpt-small", version="9.9.9") is None


def test_latest_version_is_by_semver(registry: ModelRegistry, ckpt: Path) -> None:
    for v in ("1.9.0", "1.10.0", "1.10.1-rc.1", "1.2.0"):
        register(registry, ckpt, v)
    latest = registry.get_model(name="gpt-small")
    assert latest is not None and latest["version"] == "1.10.1-rc.1"
    registry.retire_model(latest["model_id"])
    again = registry.get_model(name="gpt-small")
    assert again is not None and again["version"] == "1.10.0"


def test_register_rejects_bad_input(registry: ModelRegistry, ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist; save the model first"):
        register(registry, tmp_path / "missing.pt")
    assert isinstance(CheckpointNotFoundError("x"), FileNotFoundError)
    register(registry, ckpt)
    with pytest.raises(
        DuplicateModelError, match=r"gpt-small 1\.0\.0 is already registered \(model id 1\)"
    ):
        register(registry, ckpt)
    # the old spelling val_loss is read as val/loss (tests/test_guide_compat.py)
    with pytest.raises(MetricNameError, match="empty path segment"):
        register(registry, ckpt, "2.0.0", metrics={"val//loss": 0.4})
    with pytest.raises(StoreError, match="finite metrics"):
        register(registry, ckpt, "2.0.0", metrics={"val/loss": math.nan})
    with pytest.raises(StoreError, match="not a semantic version"):
        register(registry, ckpt, "2.0")
    with pytest.raises(StoreError, match="model name must be a non-empty"):
        register(registry, ckpt, "2.0.0", name=" padded ")
    with pytest.raises(ModelNotFoundError, match="parent model 99 is not in the registry"):
        register(registry, ckpt, "2.0.0", parent_model_id=99)
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        register(registry, ckpt, "2.0.0", metadata={"path": Path("x")})
    assert len(registry.list_models(status=None)) == 1  # nothing half-written


def test_get_model_selector_errors(registry: ModelRegistry) -> None:
    with pytest.raises(StoreError, match="needs model_id"):
        registry.get_model()
    with pytest.raises(StoreError, match="one selector"):
        registry.get_model(1, tag="x")
    with pytest.raises(StoreError, match="version selects together with name"):
        registry.get_model(version="1.0.0")


def test_list_models_filters(registry: ModelRegistry, ckpt: Path) -> None:
    a = register(registry, ckpt, "1.0.0", metrics={"val/accuracy": 0.7})
    b = register(registry, ckpt, "1.1.0", metrics={"val/accuracy": 0.9}, tags=["candidate"])
    c = register(registry, ckpt, "1.2.0", metrics={})
    d = register(registry, ckpt, "1.0.0", name="cls", task_type="classification", metrics={})
    registry.retire_model(a)
    frame = registry.list_models()
    assert frame["model_id"].tolist() == [d, c, b]  # newest first, active only
    assert frame.loc[frame.model_id == b, "metrics"].item() == {"val/accuracy": 0.9}
    assert frame.loc[frame.model_id == b, "tags"].item() == ["candidate"]
    assert registry.list_models(status=None)["model_id"].tolist() == [d, c, b, a]
    assert registry.list_models(task_type="classification")["model_id"].tolist() == [d]
    assert registry.list_models(tag="candidate")["model_id"].tolist() == [b]
    assert registry.list_models(name="gpt-small", limit=1)["model_id"].tolist() == [c]
    # A model without the metric is left out (the guide counted it as inf).
    good = registry.list_models(status=None, metric_name="val/accuracy", min_metric_value=0.8)
    assert good["model_id"].tolist() == [b]
    low = registry.list_models(status=None, metric_name="val/accuracy", max_metric_value=0.8)
    assert low["model_id"].tolist() == [a]
    with pytest.raises(StoreError, match="need metric_name"):
        registry.list_models(min_metric_value=0.5)
    with pytest.raises(StoreError, match="status must be one of"):
        registry.list_models(status="deleted")


def test_compare_models(registry: ModelRegistry, ckpt: Path) -> None:
    a = register(registry, ckpt, "1.0.0", metrics={"val/loss": 0.5})
    b = register(registry, ckpt, "1.1.0", metrics={"val/loss": 0.4, "val/accuracy": 0.9})
    frame = registry.compare_models([b, a])
    assert frame.columns.tolist() == [
        "model_id",
        "name",
        "version",
        "status",
        "val/accuracy",
        "val/loss",
    ]
    assert frame["val/loss"].tolist() == [0.4, 0.5]
    assert math.isnan(frame["val/accuracy"].tolist()[1])
    assert registry.compare_models([a], metrics=["val/loss"]).columns.tolist()[-1] == "val/loss"
    with pytest.raises(ModelNotFoundError, match="model 77"):
        registry.compare_models([a, 77])


def test_compute_config_hash() -> None:
    h1 = ModelRegistry.compute_config_hash({"b": 1, "a": [1, 2]})
    assert h1 == ModelRegistry.compute_config_hash({"a": [1, 2], "b": 1})
    assert len(h1) == 64 and h1 != ModelRegistry.compute_config_hash({"a": [2, 1], "b": 1})
    cfg = TrainingConfig()
    assert ModelRegistry.compute_config_hash(cfg) == ModelRegistry.compute_config_hash(
        cfg.to_dict()
    )
    with pytest.raises(StoreError):
        ModelRegistry.compute_config_hash(object())


def test_exports(registry: ModelRegistry, ckpt: Path) -> None:
    mid = register(registry, ckpt, export_formats=["state_dict"])
    eid = registry.add_export_format(mid, "onnx", Path("out/model.onnx"), {"opset": 18})
    model = registry.get_model(mid)
    assert model is not None
    assert model["export_formats"] == ["state_dict", "onnx"]
    assert model["exports"][1]["export_id"] == eid
    assert model["exports"][1]["metadata"] == {"opset": 18}
    assert model["exports"][1]["export_path"] == "out/model.onnx"
    with pytest.raises(ModelNotFoundError):
        registry.add_export_format(99, "onnx", "x.onnx")


# -- aliases, promotion, audit ---------------------------------------------------------------


def test_promotion_moves_the_alias_and_is_audited(registry: ModelRegistry, ckpt: Path) -> None:
    v1 = register(registry, ckpt, "1.0.0")
    v2 = register(registry, ckpt, "1.1.0")
    other = register(registry, ckpt, "1.0.0", name="cls")
    registry.promote_model(v1, "production", actor="ci", reason="first release")
    registry.promote_model(other, "production")
    prod = registry.get_by_alias("production", name="gpt-small")
    assert prod is not None and prod["model_id"] == v1 and prod["aliases"] == ["production"]
    registry.promote_model(v2, "production", reason="better loss")
    prod = registry.get_by_alias("production", name="gpt-small")
    assert prod is not None and prod["model_id"] == v2
    assert registry.get_model(v1)["tags"] == []  # type: ignore[index]
    assert registry.get_model(other)["aliases"] == ["production"]  # type: ignore[index]
    with pytest.raises(StoreError, match="held by several models"):
        registry.get_by_alias("production")
    assert registry.get_model(alias="production", name="cls")["model_id"] == other  # type: ignore[index]
    log = registry.get_audit_log(name="gpt-small")
    assert log["action"].tolist() == [
        "registered",
        "registered",
        "promoted",
        "alias_set",
        "promoted",
        "alias_set",
    ]
    moved = log.iloc[-1]
    assert (moved.model_id, moved.target, moved.previous_model_id) == (v2, "production", v1)
    assert log.iloc[2].actor == "ci" and log.iloc[2].reason == "first release"


def test_aliases_and_tags(registry: ModelRegistry, ckpt: Path) -> None:
    v1 = register(registry, ckpt, "1.0.0")
    v2 = register(registry, ckpt, "1.1.0")
    registry.set_alias(v1, "champion")
    registry.set_alias(v1, "champion")  # idempotent: no second event
    registry.set_alias(v2, "champion")
    assert registry.get_by_alias("champion")["model_id"] == v2  # type: ignore[index]
    registry.remove_alias("gpt-small", "champion")
    assert registry.get_by_alias("champion") is None
    with pytest.raises(StoreError, match="has no alias 'champion'"):
        registry.remove_alias("gpt-small", "champion")
    with pytest.raises(StoreError, match="alias 'Prod!' is not valid"):
        registry.set_alias(v1, "Prod!")
    registry.promote_model(v1, "reviewed", remove_from_others=False)
    registry.promote_model(v2, "reviewed", remove_from_others=False)
    assert registry.get_model(v1)["tags"] == ["reviewed"]  # type: ignore[index]
    assert registry.get_model(tag="reviewed")["model_id"] == v2  # type: ignore[index]
    assert len(registry.get_audit_log(action="alias_set")) == 2


def test_retired_models_cannot_hold_or_take_aliases(registry: ModelRegistry, ckpt: Path) -> None:
    v1 = register(registry, ckpt, "1.0.0")
    registry.promote_model(v1, "production")
    with pytest.raises(StoreError, match=r"holds alias\(es\) \['production'\]"):
        registry.retire_model(v1)
    registry.retire_model(v1, force=True, reason="superseded")
    assert registry.get_by_alias("production") is None
    assert registry.get_model(v1)["status"] == "retired"  # type: ignore[index]
    with pytest.raises(StoreError, match="only active models can be promoted"):
        registry.promote_model(v1, "production")
    with pytest.raises(StoreError, match="aliases need active models"):
        registry.set_alias(v1, "staging")
    assert registry.get_audit_log(model_id=v1)["action"].tolist()[-2:] == [
        "alias_removed",
        "retired",
    ]


def test_delete_model_rules(registry: ModelRegistry, ckpt: Path) -> None:
    parent = register(registry, ckpt, "1.0.0", tags=["baseline"])
    child = register(registry, ckpt, "1.1.0", parent_model_id=parent)
    registry.add_export_format(parent, "onnx", "p.onnx")
    with pytest.raises(StoreError, match=r"has tags \['baseline'\], child models \[2\]"):
        registry.delete_model(parent)
    registry.delete_model(parent, force=True, actor="ops")
    assert registry.get_model(parent) is None
    assert registry.get_model(child)["parent_model_id"] is None  # type: ignore[index]
    with raw(registry) as conn:  # tags and exports went with it
        assert conn.execute("SELECT COUNT(*) FROM model_tags").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM model_exports").fetchone()[0] == 0
    log = registry.get_audit_log()
    assert "deleted" in log["action"].tolist()  # the log outlives the model
    registry.delete_model(child)
    with pytest.raises(ModelNotFoundError):
        registry.delete_model(child)


# -- constraints in the schema itself --------------------------------------------------------


def test_schema_enforces_foreign_keys_and_alias_names(registry: ModelRegistry, ckpt: Path) -> None:
    a = register(registry, ckpt, "1.0.0")
    b = register(registry, ckpt, "1.0.0", name="other")
    registry.promote_model(a, "production")
    conn = raw(registry)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute("INSERT INTO model_tags VALUES (99, 't', 'x')")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute("DELETE FROM models WHERE model_id = ?", (a,))  # holds an alias
        with pytest.raises(sqlite3.IntegrityError, match="another model name"):
            conn.execute("UPDATE model_aliases SET model_id = ? WHERE name = 'gpt-small'", (b,))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO models (name, version, checkpoint_path, task_type, config_hash, "
                "created_at, updated_at) VALUES ('gpt-small', '1.0.0', 'x', 'lm', 'h', 't', 't')"
            )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE models SET parent_model_id = model_id WHERE model_id = ?", (a,))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE models SET status = 'archived'")
    finally:
        conn.close()


# -- lineage ---------------------------------------------------------------------------------


def test_lineage_oldest_first_and_cycles_refused(registry: ModelRegistry, ckpt: Path) -> None:
    a = register(registry, ckpt, "1.0.0")
    b = register(registry, ckpt, "1.1.0", parent_model_id=a)
    c = register(registry, ckpt, "1.2.0", parent_model_id=b)
    assert [m["model_id"] for m in registry.get_model_lineage(c)] == [a, b, c]
    with pytest.raises(
        LineageError,
        match=r"it descends from it, so the lineage would be a cycle \(1 -> 3 -> 2 -> 1\)",
    ):
        registry.set_parent(a, c)
    with pytest.raises(LineageError, match="cycle"):
        registry.set_parent(a, a)
    registry.set_parent(c, a)  # skipping a generation is fine
    assert [m["model_id"] for m in registry.get_model_lineage(c)] == [a, c]
    registry.set_parent(c, None)
    assert [m["model_id"] for m in registry.get_model_lineage(c)] == [c]
    with pytest.raises(ModelNotFoundError):
        registry.get_model_lineage(42)


def test_lineage_walk_is_bounded_on_a_hand_edited_cycle(
    registry: ModelRegistry, ckpt: Path
) -> None:
    a = register(registry, ckpt, "1.0.0")
    b = register(registry, ckpt, "1.1.0", parent_model_id=a)
    with raw(registry) as conn:  # behind the API's back, as a hand edit would
        conn.execute("UPDATE models SET parent_model_id = ? WHERE model_id = ?", (b, a))
    with pytest.raises(LineageError, match=r"has a cycle \(2 -> 1 -> 2\).*set_parent"):
        registry.get_model_lineage(b)
    chain = [register(registry, ckpt, "2.0.0")]
    for i in range(1, 6):
        chain.append(register(registry, ckpt, f"2.0.{i}", parent_model_id=chain[-1]))
    with pytest.raises(LineageError, match="deeper than max_depth=3"):
        registry.get_model_lineage(chain[-1], max_depth=3)
