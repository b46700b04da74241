"""``modeltiers run-tiers``: bad paths and a contradicting modality are config errors at start.

Each mistake exits 2 with one line that names the key and the fix, before pytest starts (so
never as a failure of the model), and the same config with the mistake fixed is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.cli.run_tiers_config import load_tiers_config


def _config(workdir: Path, data: dict[str, Any]) -> str:
    path = workdir / "run.json"
    path.write_text(json.dumps(data))
    return str(path)


def refused(workdir: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any]) -> str:
    config = _config(workdir, data)
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["run-tiers", "--config", config]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err and "pytest could not run" not in captured.err
    assert sorted(p.name for p in workdir.iterdir()) == before
    return captured.err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"task_name": "lm_tiny", "modality": "vision"},
            "modality 'vision' disagrees with task 'lm_tiny' (a text task); set modality to "
            "'text' or drop it",
        ),
        (
            {"model_file": "example_models/simple_cnn.py", "modality": "text"},
            "modality 'text' disagrees with task 'vision_tiny' (a vision task, TASK in "
            "example_models/simple_cnn.py); set modality to 'vision' or drop it",
        ),
        (
            {"modality": "vision"},
            "modality 'vision' disagrees with task 'lm_tiny' (a text task, TASK in "
            "example_models/tiny_gpt.py)",
        ),
        (
            {"model_file": "no_task.py", "modality": "vision"},
            "modality 'vision' disagrees with task 'lm_tiny' (a text task, the default when "
            "task_name is not set)",
        ),
    ],
)
def test_a_modality_that_disagrees_with_the_task_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], message: str
) -> None:
    (workdir / "no_task.py").write_text("from torch import nn\n\nmodel = nn.Linear(4, 4)\n")
    assert message in refused(workdir, capsys, data)


@pytest.mark.parametrize(
    "data",
    [
        {"task_name": "lm_tiny", "modality": "text"},
        {"task_name": "vision_tiny", "modality": "vision"},
        {"model_file": "example_models/simple_cnn.py", "modality": "vision"},
        {"model_file": "example_models/tiny_gpt.py", "modality": "text"},
    ],
)
def test_a_modality_that_agrees_with_the_task_is_accepted(
    workdir: Path, data: dict[str, Any]
) -> None:
    config = load_tiers_config(_config(workdir, data))
    assert config.model_file.is_file()


def test_model_file_naming_a_directory_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(workdir, capsys, {"model_file": "example_models"})
    assert "model_file 'example_models' is a directory" in err
    assert "name the model file in it, e.g. example_models/model.py" in err


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"tier": 4, "export": {"export_dir": "blocker/exports"}}, "export.export_dir"),
        ({"tier": 4, "export": {"export_dir": "blocker"}}, "export.export_dir"),
        ({"tier": 5, "db_path": "blocker/experiments.db"}, "db_path"),
    ],
)
def test_an_output_path_under_a_file_is_a_config_error(
    workdir: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], key: str
) -> None:
    (workdir / "blocker").write_text("not a folder")
    err = refused(workdir, capsys, data)
    assert f"{key} {data.get('db_path') or data['export']['export_dir']!r}" in err
    assert "blocker is a file, not a folder" in err
    assert "model must run" not in err


def test_an_output_path_in_a_new_folder_is_accepted(workdir: Path) -> None:
    data = {"tier": 4, "export": {"export_dir": "new/exports"}, "db_path": "new/x.db"}
    config = load_tiers_config(_config(workdir, data))
    assert config.export["export_dir"] == workdir / "new" / "exports"
    assert not (workdir / "new").exists(), "validating the config creates nothing"
