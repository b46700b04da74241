"""A baseline travels between CI runs: ``--baseline-run latest`` or a run name finds it, and
``modeltiers baseline export`` / ``import`` move it, hashes checked, between databases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.store.baseline_transfer import BaselineError, export_baseline
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "fixtures" / "tier5" / "bag_cls.py"
EVAL_RUN = "tier5-eval-cls_tiny"


def run_tier5(
    pytester: pytest.Pytester, *args: str, k: str = "eval_metrics or baseline_regression"
) -> pytest.RunResult:
    return pytester.runpytest(
        f"--model={MODEL.name}", "-m", "tier5", "-rs", "-p", "no:randomly", "-k", k, *args
    )


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    """A first CI run: no baseline yet (skipped, said why), and it records one."""
    shutil.copy(MODEL, pytester.path)
    result = run_tier5(pytester, "--experiment-db", "exp.db", "--baseline-run", "latest")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*no baseline to compare with: --baseline-run latest found no completed run with a "
         "checkpoint in exp.db*"]
    )  # fmt: skip
    return pytester.path / "exp.db"


def test_latest_is_the_run_an_earlier_session_recorded(
    pytester: pytest.Pytester, recorded: Path
) -> None:
    result = run_tier5(pytester, "--experiment-db", "exp.db", "--baseline-run", "latest")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"modeltiers: --baseline-run latest is run 1 ('{EVAL_RUN}', *"])
    db = ExperimentDB(recorded)
    assert db.get_comparisons()["baseline_run_id"].tolist() == [1]  # never its own run 2
    by_name = run_tier5(pytester, "--experiment-db", "exp.db", "--baseline-run", EVAL_RUN)
    by_name.assert_outcomes(passed=2)
    by_name.stdout.fnmatch_lines([f"modeltiers: --baseline-run {EVAL_RUN} is run 2 (*"])


def test_a_run_that_is_not_there_is_a_usage_error_listing_the_runs(
    pytester: pytest.Pytester, recorded: Path
) -> None:
    for spec in ("nightly", "7"):
        result = run_tier5(pytester, "--experiment-db", "exp.db", "--baseline-run", spec)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [f"*--baseline-run {spec}: no run*in exp.db; its runs, newest first: "
             f"1 '{EVAL_RUN}' (completed, checkpoint)*latest*"]
        )  # fmt: skip


def test_export_and_import_move_the_baseline_to_a_fresh_database(
    pytester: pytest.Pytester, recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["baseline", "export", "--db", "exp.db", "--run", "latest", "--to", "kept"]) == 0
    manifest = json.loads((pytester.path / "kept" / "manifest.json").read_text())
    assert manifest["run"]["run_name"] == EVAL_RUN
    assert any(f.startswith("checkpoints/") for f in manifest["files"])
    assert "profiles/dataset_profile.json" in manifest["files"]
    assert main(["baseline", "import", "kept", "--db", "ci/fresh.db"]) == 0
    assert "imported into ci/fresh.db as run 1" in capsys.readouterr().out
    fresh = ExperimentDB(pytester.path / "ci" / "fresh.db")
    assert (
        fresh.get_metrics(1)["metric_name"].tolist()
        == ExperimentDB(recorded).get_metrics(1)["metric_name"].tolist()
    )
    result = run_tier5(
        pytester, "--experiment-db", "ci/fresh.db", "--baseline-run", "latest",
        "--reference-profile", "kept/profiles/dataset_profile.json",
        k="eval_metrics or baseline_regression or input_drift",
    )  # fmt: skip
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["modeltiers: --baseline-run latest is run 1 (*ci/fresh.db"])

    # The same baseline again is refused, not a second copy.
    assert main(["baseline", "import", "kept", "--db", "ci/fresh.db"]) == 1
    assert "already holds this baseline as run 1" in capsys.readouterr().err


def test_a_changed_file_or_a_taken_folder_is_refused_and_nothing_is_written(
    pytester: pytest.Pytester, recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_baseline(recorded, "1", pytester.path / "kept")
    with pytest.raises(BaselineError, match="exists and is not an empty folder"):
        export_baseline(recorded, "1", pytester.path / "kept")
    checkpoint = next((pytester.path / "kept" / "checkpoints").iterdir())
    checkpoint.write_bytes(checkpoint.read_bytes() + b"x")
    assert main(["baseline", "import", "kept", "--db", "other.db"]) == 1
    err = capsys.readouterr().err
    assert f"{checkpoint.name} has sha256" in err and "export the baseline again" in err
    assert ExperimentDB(pytester.path / "other.db").list_runs().empty
    assert main(["baseline", "import", "nowhere", "--db", "other.db"]) == 1
    assert "holds no manifest.json" in capsys.readouterr().err
    assert main(["baseline", "export", "--db", "missing.db", "--to", "x"]) == 1
    assert "no experiment database at missing.db" in capsys.readouterr().err
