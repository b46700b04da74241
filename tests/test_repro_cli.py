"""``modeltiers repro``: bundle a run, rerun it from the bundle elsewhere, verify bundles.

The reproduction is tested as a user would do it: ``modeltiers train``, ``modeltiers repro``,
unzip into a fresh folder, ``sh reproduce.sh``, and the retrained run's final metrics equal
the original's (deterministic settings on CPU).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pytest_modeltiers.cli import main
from pytest_modeltiers.report import HealthReport
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_bundle_retrains_the_run_to_the_same_final_metrics(
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = json.loads((workdir / "configs" / "example_train.json").read_text())
    config.update(
        epochs=2,
        max_train_samples=32,
        max_val_samples=16,
        deterministic=True,
        use_gpu=False,
        sandbox="off",  # in-process: the sandbox would confine pytest itself
    )
    (workdir / "small.json").write_text(json.dumps(config))
    assert main(["train", "--config", "small.json"]) == 0
    original = json.loads(capsys.readouterr().out)
    run_id = original["run_id"]

    assert main(["repro", str(run_id), "--db", "experiments.db", "--output", "bundles"]) == 0
    assert f"wrote bundles/repro_run{run_id}.zip" in capsys.readouterr().out
    bundle = workdir / "bundles" / f"repro_run{run_id}.zip"
    assert main(["repro", "--verify", str(bundle)]) == 0

    fresh = tmp_path_factory.mktemp("elsewhere")
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(fresh)
    script = (fresh / "reproduce.sh").read_text()
    assert "exec modeltiers train --config configs/train.json" in script
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the same reductions as this process
    }
    done = subprocess.run(
        ["sh", str(fresh / "reproduce.sh")],
        cwd=workdir.parent,  # run from anywhere
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reproduced = json.loads(done.stdout)
    assert reproduced["eval_summary"] == original["eval_summary"]
    assert reproduced["history"] == original["history"]

    with ExperimentDB(fresh / "reproduced" / "experiments.db") as db:
        params = db.get_params(reproduced["run_id"])
        metrics = db.get_metrics(reproduced["run_id"])
    bundled_data = json.loads((fresh / "data.json").read_text())
    assert params["data_fingerprint"] == bundled_data["fingerprint"]
    rows = list(csv.DictReader(io.StringIO((fresh / "metrics.csv").read_text())))
    assert sorted((r["metric_name"], int(r["epoch"]), float(r["value"])) for r in rows) == sorted(
        zip(metrics["metric_name"], metrics["epoch"].astype(int), metrics["value"], strict=True)
    )


@pytest.fixture
def logged_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run logged by hand (no training): metrics, no checkpoint, no recorded sources."""
    monkeypatch.chdir(tmp_path)
    with ExperimentDB(tmp_path / "experiments.db") as db:
        run_id = db.log_run("by-hand", {"learning_rate": 0.1})
        for epoch, loss in enumerate([2.0, 1.5]):
            db.log_metrics(run_id, {"loss": loss}, "val", epoch=epoch)
        db.update_run_status(run_id, "completed")
    return tmp_path / "experiments.db"


def test_repro_lists_what_the_run_did_not_record(
    logged_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["repro", "1", "--db", str(logged_run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "wrote repro_run1.zip" in out
    assert "not in the bundle: checkpoint: run 1 ('by-hand') of" in out
    assert "recorded no checkpoint" in out
    assert "not in the bundle: model: run 1 ('by-hand')" in out
    assert "not in the bundle: reproduce: " in out
    with zipfile.ZipFile(logged_run.parent / "repro_run1.zip") as archive:
        assert "val/loss" in archive.read("metrics.csv").decode()


def test_verify_exit_codes_name_the_first_bad_member(
    logged_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["repro", "1", "--db", str(logged_run), "--no-plots"]) == 0
    bundle = tmp_path / "repro_run1.zip"
    assert main(["repro", "--verify", str(bundle)]) == 0
    capsys.readouterr()

    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["seed.json"] = members["seed.json"].replace(b"42", b"43")
    members["metrics.csv"] += b"tampered\n"
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert main(["repro", "--verify", str(tampered)]) == 1
    err = capsys.readouterr().err
    assert f"modeltiers repro: {tampered}: member metrics.csv is bad: sha256 " in err
    assert "(and 1 more bad member)" in err

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[:100])
    assert main(["repro", "--verify", str(truncated)]) == 2
    assert "is not a readable zip file" in capsys.readouterr().err
    assert main(["repro", "--verify", str(tmp_path / "absent.zip")]) == 2
    assert "absent.zip: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["repro"], "name a run: modeltiers repro RUN_ID --db experiments.db"),
        (["repro", "1"], "name a run"),
        (["repro", "1", "--verify", "x.zip"], "not both"),
        (["repro", "99", "--db", "experiments.db"], "99"),
        (["repro", "1", "--db", "missing.db"], "missing.db does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    logged_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("modeltiers repro: ") and message in err
    assert not list(logged_run.parent.glob("*.zip"))


def test_a_health_report_travels_with_its_page_and_plots(
    logged_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = REPO / "fixtures" / "html" / "five_tiers.json"
    assert main(["repro", "1", "--db", str(logged_run), "--health-report", str(report)]) == 0
    bundle = logged_run.parent / "repro_run1.zip"
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MANIFEST.json"))
        page = archive.read("health/health.html").decode()
        carried = json.loads(archive.read("health/health.json"))
        markdown = archive.read("health/health.md").decode()
    assert carried == json.loads(report.read_text(encoding="utf-8"))
    assert markdown == HealthReport.read(report).to_markdown()
    svgs = sorted(name for name in names if name.startswith("health/plots/"))
    assert len(svgs) == 15  # every plot the page draws, as files
    assert "health/plots/tier5-test_input_drift-tiny_gpt.svg" in svgs
    assert page.count("<figure") == 15
    assert {name for name in names if name.startswith("health/")} <= set(manifest["members"])
    assert main(["repro", "--verify", str(bundle)]) == 0

    assert (
        main(["repro", "1", "--db", str(logged_run), "--no-plots", "--health-report", str(report)])
        == 0
    )
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
    assert "health/health.html" in names and not any("health/plots/" in n for n in names)


def test_an_unreadable_health_report_is_refused_before_anything_is_written(
    logged_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = logged_run.parent / "health.json"
    broken.write_text('{"schema_version": ', encoding="utf-8")
    argv = ["repro", "1", "--db", str(logged_run), "--health-report", str(broken)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("modeltiers repro: the health report cannot go in the bundle: ")
    assert str(broken) in err
    assert not list(logged_run.parent.glob("*.zip"))
