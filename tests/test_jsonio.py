"""Every file the package writes spells NaN and infinities the same way, and reads them back.

One convention (``jsonio``): strict JSON, a non-finite float written as ``"nan"``, ``"inf"`` or
``"-inf"``; numpy and torch scalars, tuples, paths and enums converted the same way by every
writer. Each test writes the same awkward values through one writer, checks the spelling in the
file's text, and reads the file back where the package reads it.
"""

from __future__ import annotations

import enum
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from pytest_modeltiers.checks.export_health import ExportHealthReport
from pytest_modeltiers.drift.distribution import profile_signals
from pytest_modeltiers.drift.profile_io import load_profile, save_profile
from pytest_modeltiers.drift.verdicts import SignalDrift
from pytest_modeltiers.evaluation.regression import MetricComparison
from pytest_modeltiers.jsonio import (
    dumps,
    float_from_json,
    jsonable,
    markdown_cell,
    restore_floats,
)
from pytest_modeltiers.report import ENVIRONMENT_KEYS, CheckResult, HealthReport, load_schema
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.store.sqlite_base import StoreError
from pytest_modeltiers.training.results import TrainingResults
from pytest_modeltiers.triggers.base import TriggerDetail
from pytest_modeltiers.triggers.report import RetrainingReport

ENV: dict[str, str | None] = dict.fromkeys(ENVIRONMENT_KEYS, "1.0")


class Colour(enum.Enum):
    RED = "red"


#: The awkward values, and what every writer must turn them into.
AWKWARD: dict[str, Any] = {
    "nan": math.nan,
    "inf": math.inf,
    "ninf": -math.inf,
    "np_nan": np.float32("nan"),
    "np_ninf": np.float64("-inf"),
    "torch_inf": torch.tensor(float("inf")),
    "np_int": np.int64(7),
    "shape": (2, 3),
    "path": Path("runs") / "a.ckpt",
    "colour": Colour.RED,
    "finite": 0.25,
}
SPELLED: dict[str, Any] = {
    "nan": "nan",
    "inf": "inf",
    "ninf": "-inf",
    "np_nan": "nan",
    "np_ninf": "-inf",
    "torch_inf": "inf",
    "np_int": 7,
    "shape": [2, 3],
    "path": str(Path("runs") / "a.ckpt"),
    "colour": "red",
    "finite": 0.25,
}
#: The plain-float part, for writers that only take JSON's own types (the stores).
PLAIN = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "finite": 0.25, "shape": (2, 3)}


def strict(text: str) -> Any:
    """Parse ``text``, failing on Python's non-standard ``NaN``/``Infinity`` tokens."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON {name}"))


def same_floats(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (the round trips compare values that hold NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_floats(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_floats(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# -- the converter itself ---------------------------------------------------------------------


def test_the_converter_spells_every_awkward_value_once() -> None:
    assert jsonable(AWKWARD) == SPELLED
    assert strict(dumps(AWKWARD)) == SPELLED
    assert [float_from_json(v) for v in ("inf", "-inf", 1, None)] == [math.inf, -math.inf, 1, None]
    assert math.isnan(float_from_json("nan") or 0.0)
    assert same_floats(restore_floats(jsonable(PLAIN)), {**PLAIN, "shape": [2, 3]})
    with pytest.raises(ValueError, match="'NaN' is 'NaN', not a number"):
        float_from_json("NaN", where="'NaN'")
    with pytest.raises(TypeError, match=r"value\['x'\] is a builtins.object"):
        jsonable({"x": object()})  # never a repr


def test_one_markdown_cell_for_every_table() -> None:
    message = "shape (2|3) differs\nsecond line"
    cell = r"shape (2\|3) differs ..."
    assert markdown_cell(message) == cell
    check = CheckResult.failed("test_export_parity", 4, message)
    health = HealthReport([check], environment=ENV, created_at="2024-01-31T12:00:00Z")
    assert f"| {cell} |" in health.to_markdown()
    export = ExportHealthReport("2024-01-31T12:00:00Z", "m", [check]).to_markdown()
    assert f"| {cell} |" in export
    detail = TriggerDetail("t", "metric", "fired", "critical", message, actual_value=1.0)
    retraining = RetrainingReport.from_details([detail]).to_markdown()
    assert f"| {cell} |" in retraining


# -- every writer -----------------------------------------------------------------------------


def test_health_report_spells_them_validates_and_round_trips() -> None:
    check = CheckResult.failed("test_output_finite", 1, "outputs are NaN", AWKWARD)
    report = HealthReport([check], environment=ENV, created_at="2024-01-31T12:00:00Z")
    data = strict(report.to_json())
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    assert data["checks"][0]["details"] == SPELLED
    assert HealthReport.from_json(report.to_json()).to_json() == report.to_json()


def test_export_health_report_spells_them() -> None:
    check = CheckResult.failed("onnx_parity", 4, "max abs diff is inf", AWKWARD)
    report = ExportHealthReport("2024-01-31T12:00:00Z", "m", [check])
    assert strict(report.to_json())["checks"][0]["details"] == SPELLED
    assert '"ninf": "-inf"' in report.to_markdown()


def test_retraining_report_spells_them_and_reads_them_back() -> None:
    detail = TriggerDetail(
        "loss_up", "metric", "fired", "critical", "val/loss is NaN",
        metrics={"window": AWKWARD["np_ninf"], "values": (1.0, math.nan)},
        threshold=math.inf, actual_value=math.nan,
    )  # fmt: skip
    report = RetrainingReport.from_details([detail])
    data = strict(report.to_json())["trigger_details"][0]
    assert (data["threshold"], data["actual_value"]) == ("inf", "nan")
    assert data["metrics"] == {"window": "-inf", "values": [1.0, "nan"]}
    back = RetrainingReport.from_dict(json.loads(report.to_json())).trigger_details[0]
    assert back.threshold == math.inf and math.isnan(back.actual_value or 0.0)
    assert same_floats(dict(back.metrics), {"window": -math.inf, "values": [1.0, math.nan]})


def test_drift_verdict_spells_nan_apart_from_not_measured() -> None:
    signal = SignalDrift(
        "x", "numeric", "ks", math.inf, 0.05, math.nan, "drift", 10, 10, "why", dict(AWKWARD)
    )
    data = strict(json.dumps(signal.to_dict(), allow_nan=False))
    assert (data["statistic"], data["p_value"]) == ("inf", "nan")
    assert data["details"] == SPELLED
    skipped = SignalDrift("y", "numeric", None, None, None, None, "skipped", 0, 0, "no data")
    assert skipped.to_dict()["statistic"] is None  # null stays "not measured"


def test_profile_file_counts_non_finite_values_and_round_trips(tmp_path: Path) -> None:
    values = np.array([math.nan, math.inf, -math.inf, 1.0, 2.0])
    profile = profile_signals({"x": values, "label": ["a", "nan"]})
    path = save_profile(profile, tmp_path / "profile.json")
    strict(path.read_text(encoding="utf-8"))
    back = load_profile(path)
    assert back.signals["x"].nonfinite == 3 and back.content_hash == profile.content_hash
    assert back.signals["label"].counts == {"a": 1, "nan": 1}  # a label, not a float


def test_training_results_keep_the_sign_of_infinity() -> None:
    results = TrainingResults(
        run_id=None, run_name="r", run_dir="runs", eval_summary={"loss": math.nan},
        initial_eval=None, history=[{"epoch": 0, "val/loss": -math.inf}],
        best_checkpoint_path=None, last_checkpoint_path=None, checkpoint_paths=[],
        epochs_completed=1, global_step=np.int64(3), stopped_early=False, resumed_from=None,
        data="builtin", distribution={"devices": (1,)}, rank=0, world_size=1,
        duration_seconds=math.inf,
    )  # fmt: skip
    data = strict(dumps(results.to_dict()))
    assert data["eval_summary"] == {"loss": "nan"} and data["history"][0]["val/loss"] == "-inf"
    assert data["duration_seconds"] == "inf" and data["global_step"] == 3
    assert data["distribution"] == {"devices": [1]}


def test_evaluation_and_regression_results_spell_them() -> None:
    comparison = MetricComparison(
        "loss", math.nan, math.inf, -math.inf, None, False, -math.inf, math.inf, "error"
    )
    data = strict(json.dumps(comparison.to_dict(), allow_nan=False))
    assert (data["baseline"], data["candidate"], data["delta"]) == ("nan", "inf", "-inf")
    assert data["relative_change"] is None and data["ci"] == ["-inf", "inf"]


def test_store_params_and_metadata_use_the_same_spelling_and_round_trip(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path / "exp.db")
    run = db.log_run("r")
    db.log_params(run, {"failure": PLAIN})
    db.log_artifact(run, "checkpoint", "best.ckpt", {"score": -math.inf, "values": PLAIN})
    with sqlite3.connect(db.path) as conn:
        (text,) = conn.execute("SELECT value FROM params").fetchone()
    assert strict(text) == jsonable(PLAIN)
    expected = {**PLAIN, "shape": [2, 3]}
    assert same_floats(db.get_params(run)["failure"], expected)
    metadata = db.get_artifacts(run)["metadata"][0]
    assert same_floats(metadata, {"score": -math.inf, "values": expected})
    with pytest.raises(StoreError, match=r"param 'p' of run 1\[0\] is one of the strings"):
        db.log_params(run, {"p": ["inf"]})  # would come back as a float
    db.log_run("settings", {"mode": "inf"})  # a setting is never read back as a float
    assert db.get_run(2)["config"] == {"mode": "inf"}
