"""``create_repro_bundle`` / ``verify_repro_bundle`` on a run trained in Python.

The run trains a model split over two files (``fixtures/repro``), so the bundle must carry the
local import too. What a run did not record is listed as missing, never left out silently;
a file that changed since the run is refused, and the previous bundle stays intact.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors

from pytest_modeltiers import create_repro_bundle, run_training, verify_repro_bundle
from pytest_modeltiers.config import TrainingConfig
from pytest_modeltiers.config.task_spec import resolve_task
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.repro import ReproBundleError
from pytest_modeltiers.repro.fingerprint import dataset_fingerprint
from pytest_modeltiers.store.experiment_db import ExperimentDB, RunNotFoundError

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "fixtures" / "repro"

CONFIG: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "max_train_samples": 24,
    "max_val_samples": 8,
    "precision": "32-true",
    "use_amp": False,
    "deterministic": True,
    "early_stopping_patience": 0,
    "save_every_n_epochs": 1,
    "random_seed": 11,
    "run_name": "bundled",
}


def _load(folder: Path) -> tuple[Any, Any, Any]:
    """The fixture model, imported from ``folder`` as a user's notebook would (the module
    is not registered in sys.modules)."""
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("repro_tiny_lm", folder / "tiny_lm.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("tiny_layers", None)
    task = resolve_task(module.TASK)
    torch.manual_seed(0)
    return module.build_model(), get_adapter(task), task


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the fixture model, and a copy of its source folder the tests may edit."""
    root = tmp_path_factory.mktemp("trained")
    folder = root / "model"
    shutil.copytree(FIXTURE, folder)
    model, adapter, task = _load(folder)
    config = TrainingConfig(**CONFIG, checkpoint_dir=str(root / "runs"))
    with ExperimentDB(root / "experiments.db") as db:
        results = run_training(model, adapter, config, task, db=db, accelerator="cpu")
        other_model, other_adapter, _ = _load(folder)
        second = run_training(
            other_model,
            other_adapter,
            config,
            task,
            db=db,
            accelerator="cpu",
            dataset=task_dataset(task, "train", size=16, seed=3),
        )
    return {
        "root": root,
        "folder": folder,
        "db": root / "experiments.db",
        "results": results,
        "python_data_run": second.run_id,
        "config": config,
    }


@pytest.fixture(scope="module")
def bundle(trained: dict[str, Any]) -> Path:
    return create_repro_bundle(trained["results"].run_id, trained["db"], trained["root"] / "out")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of ``source`` with members replaced (bytes), removed (None) or added."""
    members = _members(source)
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def test_the_bundle_holds_configs_sources_environment_metrics_and_hashes(
    trained: dict[str, Any], bundle: Path
) -> None:
    members = _members(bundle)
    manifest = json.loads(members["MANIFEST.json"])
    assert manifest["missing"] == {}
    assert set(manifest["members"]) == set(members) - {"MANIFEST.json"}
    for name, entry in manifest["members"].items():
        assert hashlib.sha256(members[name]).hexdigest() == entry["sha256"], name

    run_id = trained["results"].run_id
    assert bundle.name == f"repro_run{run_id}.zip"
    for name in ("tiny_lm.py", "tiny_layers.py"):  # the local import travels with the model
        assert members[f"model/{name}"] == (trained["folder"] / name).read_bytes()
    source = json.loads(members["model/SOURCE.json"])
    assert source["entry"] == "tiny_lm.py"
    assert (
        source["files"]["tiny_layers.py"]
        == hashlib.sha256(members["model/tiny_layers.py"]).hexdigest()
    )

    training = json.loads(members["configs/training_config.json"])
    assert training == trained["config"].to_dict()
    assert json.loads(members["configs/task_spec.json"])["name"] == "lm_tiny"
    assert "max_eval_examples" in json.loads(members["configs/eval_config.json"])

    environment = json.loads(members["environment.json"])
    for side in ("run", "bundle"):
        assert environment[side]["torch"]["version"] == torch.__version__
        assert environment[side]["packages"]["torch"] == metadata.version("torch")
        assert environment[side]["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
        assert "commit" in environment[side]["git"]  # a commit, or the reason there is none

    with ExperimentDB(trained["db"]) as db:
        stored = db.get_metrics(run_id)
    rows = list(csv.DictReader(io.StringIO(members["metrics.csv"].decode())))
    assert sorted((r["metric_name"], int(r["epoch"]), float(r["value"])) for r in rows) == sorted(
        zip(stored["metric_name"], stored["epoch"].astype(int), stored["value"], strict=True)
    )
    seed = json.loads(members["seed.json"])
    assert seed["random_seed"] == 11 and seed["deterministic"] is True
    data = json.loads(members["data.json"])
    assert data["fingerprint"]["train"]["examples"] == 24
    assert len(data["fingerprint"]["train"]["sha256"]) == 64
    assert members["plots/val_loss.svg"].startswith(b"<?xml")
    assert "modeltiers train --config configs/train.json" in members["reproduce.sh"].decode()
    assert verify_repro_bundle(bundle).ok


def test_the_bundled_weights_are_the_trained_model(trained: dict[str, Any], bundle: Path) -> None:
    weights = load_safetensors(_members(bundle)["checkpoint/model.safetensors"])
    final = trained["results"].model.state_dict()
    assert set(weights) == set(final)
    assert all(torch.equal(weights[key], final[key]) for key in final)


def test_the_data_fingerprint_changes_with_the_data(trained: dict[str, Any]) -> None:
    with ExperimentDB(trained["db"]) as db:
        shipped = db.get_params(trained["results"].run_id)["data_fingerprint"]
        given = db.get_params(trained["python_data_run"])["data_fingerprint"]
    _, _, task = _load(trained["folder"])
    assert shipped["validation"] == dataset_fingerprint(
        task_dataset(task, "validation", size=8, seed=0)
    )
    assert shipped["train"]["sha256"] != given["train"]["sha256"]
    assert shipped["source"] == "the shipped lm_tiny dataset"


def test_a_changed_member_is_named_by_verify(tmp_path: Path, bundle: Path) -> None:
    members = _members(bundle)
    changed = _rewrite(
        bundle, tmp_path / "changed.zip", {"metrics.csv": members["metrics.csv"] + b"0,,"}
    )
    verdict = verify_repro_bundle(changed)
    assert not verdict.ok and verdict.first_bad == "metrics.csv"
    assert "sha256" in verdict.problems[0][1]

    removed = _rewrite(bundle, tmp_path / "removed.zip", {"model/tiny_layers.py": None})
    assert verify_repro_bundle(removed).problems == (
        ("model/tiny_layers.py", "listed in the manifest but not in the zip"),
    )
    added = _rewrite(bundle, tmp_path / "added.zip", {"model/extra.py": b"import os\n"})
    assert verify_repro_bundle(added).problems == (
        ("model/extra.py", "in the zip but not in the manifest"),
    )


def test_a_missing_or_corrupt_zip_is_an_error(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(ReproBundleError, match="no such file"):
        verify_repro_bundle(tmp_path / "nothing.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[:200])
    with pytest.raises(ReproBundleError, match="not a readable zip"):
        verify_repro_bundle(truncated)
    with pytest.raises(ReproBundleError, match=r"no MANIFEST\.json"):
        verify_repro_bundle(_rewrite(bundle, tmp_path / "bare.zip", {"MANIFEST.json": None}))


def test_a_changed_source_file_is_refused_and_the_previous_bundle_kept(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    run_id = trained["results"].run_id
    out = tmp_path / "out"
    first = create_repro_bundle(run_id, trained["db"], out, include_plots=False)
    before = first.read_bytes()
    layers = trained["folder"] / "tiny_layers.py"
    original = layers.read_bytes()
    layers.write_bytes(original + b"# edited after the run\n")
    try:
        with pytest.raises(ReproBundleError, match=r"tiny_layers\.py changed since run"):
            create_repro_bundle(run_id, trained["db"], out, include_plots=False)
    finally:
        layers.write_bytes(original)
    assert first.read_bytes() == before  # written atomically: the old zip is untouched
    assert sorted(p.name for p in out.iterdir()) == [first.name]  # no temporary file left


def test_given_configs_must_match_what_the_run_recorded(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    run_id = trained["results"].run_id
    same = TrainingConfig.from_dict(trained["config"].to_dict())
    assert create_repro_bundle(
        run_id, trained["db"], tmp_path, training_config=same, include_plots=False
    ).is_file()
    other = TrainingConfig.from_dict({**trained["config"].to_dict(), "learning_rate": 0.5})
    with pytest.raises(ReproBundleError, match=r"learning_rate: recorded 0\.01, given 0\.5"):
        create_repro_bundle(run_id, trained["db"], tmp_path / "x", training_config=other)
    assert not (tmp_path / "x").exists()


def test_what_is_left_out_is_listed_in_the_manifest_and_readme(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    path = create_repro_bundle(
        trained["results"].run_id,
        trained["db"],
        tmp_path,
        include_checkpoint=False,
        include_plots=False,
    )
    members = _members(path)
    manifest = json.loads(members["MANIFEST.json"])
    assert manifest["missing"] == {
        "checkpoint": "include_checkpoint=False",
        "plots": "include_plots=False",
    }
    assert not any(name.startswith(("checkpoint/", "plots/")) for name in members)
    assert "- `checkpoint`: include_checkpoint=False" in members["README.md"].decode()


def test_a_run_on_data_passed_in_python_says_it_cannot_be_retrained(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    path = create_repro_bundle(trained["python_data_run"], trained["db"], tmp_path)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path / "unzipped")
    done = subprocess.run(
        ["sh", str(tmp_path / "unzipped" / "reproduce.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot retrain" in done.stderr and "passed in Python" in done.stderr
    manifest = json.loads((tmp_path / "unzipped" / "MANIFEST.json").read_text())
    assert "passed in Python" in manifest["missing"]["reproduce"]
    assert not (tmp_path / "unzipped" / "configs" / "train.json").exists()


def test_plots_without_matplotlib_are_refused_before_anything_is_written(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    with pytest.raises(ReproBundleError, match=r"pytest-modeltiers\[report\]"):
        create_repro_bundle(trained["results"].run_id, trained["db"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_run_is_named(trained: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="99"):
        create_repro_bundle(99, trained["db"], tmp_path)
    with pytest.raises(ReproBundleError, match="does not exist"):
        create_repro_bundle(1, tmp_path / "missing.db", tmp_path)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_environment_names_the_git_commit_and_dirty_flag(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    folder = trained["folder"]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    def bundled_git(name: str) -> dict[str, Any]:
        path = create_repro_bundle(
            trained["results"].run_id, trained["db"], tmp_path / name, include_plots=False
        )
        return json.loads(_members(path)["environment.json"])["bundle"]["git"]

    try:
        git("init", "-q")
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "model")
        commit = git("rev-parse", "HEAD")
        clean = bundled_git("clean")
        assert (clean["commit"], clean["dirty"]) == (commit, False)
        assert Path(clean["repository"]).resolve() == folder.resolve()
        (folder / "notes.txt").write_text("not committed\n")
        git("add", "notes.txt")
        assert bundled_git("dirty")["dirty"] is True
    finally:
        shutil.rmtree(folder / ".git", ignore_errors=True)
        (folder / "notes.txt").unlink(missing_ok=True)


def test_local_imports_are_followed_through_packages_and_relative_imports(
    tmp_path: Path,
) -> None:
    from pytest_modeltiers.repro.source import local_source_files

    files = {
        "model.py": "import torch\nfrom blocks.attention import Attention\nimport helpers\n",
        "helpers.py": "X = 1\n",
        "blocks/__init__.py": "",
        "blocks/attention.py": "from .norms import RMSNorm\nfrom . import mlp\n",
        "blocks/norms.py": "",
        "blocks/mlp.py": "",
        "blocks/unused.py": "",
        "unrelated.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = [str(p.relative_to(tmp_path)) for p in local_source_files(tmp_path / "model.py")]
    assert found == [
        "model.py",
        "blocks/__init__.py",
        "blocks/attention.py",
        "blocks/mlp.py",
        "blocks/norms.py",
        "helpers.py",
    ]
