"""``modeltiers train``: hostile and oversized configs are one clear line and exit 2, at start.

Each refused config leaves the working directory as it was (no database, no run folder), and
the config with the mistake fixed is accepted, so every refusal is tested both ways.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_modeltiers.cli import main
from pytest_modeltiers.cli.train import prepare_job
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.models import memory_estimate
from pytest_modeltiers.models.adapters import get_adapter

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "bad_input"
GiB = 2**30


def base_config(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "configs" / "example_train.json").read_text())
    data.update({"epochs": 1, "max_train_samples": 16, "max_val_samples": 8}, **overrides)
    return data


def config_text(**overrides: Any) -> str:
    return json.dumps(base_config(**overrides))


def with_raw_value(key: str, raw: str) -> str:
    """The example config with ``"key": raw`` spliced in as written (not valid Python JSON)."""
    return config_text()[:-1] + f', "{key}": {raw}}}'


def refused(workdir: Path, capsys: pytest.CaptureFixture[str], text: str) -> str:
    path = workdir / "bad.json"
    path.write_text(text)
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["train", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"modeltiers train: {path}: ")
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in workdir.iterdir()) == before, "a refused config writes nothing"
    return captured.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"epochs": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "the JSON nests too deeply to read (more than about",
        ),
        (
            with_raw_value("learning_rate", "1" + "0" * 400),
            "learning_rate: 100000000000... (401 characters) is out of range: numbers in a "
            "config must be finite floats or integers within 64 bits",
        ),
        (with_raw_value("learning_rate", "1e400"), "learning_rate: 1e400 is out of range"),
        (with_raw_value("epochs", "9" * 5000), "epochs: 999999999999... (5000 characters)"),
        (
            with_raw_value("sweep_params", '{"lr": 0.1, "dropout": NaN}'),
            "sweep_params.dropout: NaN is not a number a config can hold; write a finite number",
        ),
        (
            with_raw_value("eval", '{"batch_size": [1, -Infinity]}'),
            "eval.batch_size[1]: -Infinity is not a number",
        ),
    ],
    ids=["deep-nesting", "int-overflow", "float-overflow", "5000-digits", "nan", "infinity"],
)
def test_json_that_would_crash_a_consumer_is_refused_with_its_key(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert message in refused(workdir, capsys, text)


def test_sweep_params_with_nan_leave_no_empty_database(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = with_raw_value("sweep_params", '{"lr": NaN}')
    assert base_config()["log_to_db"] is True
    refused(workdir, capsys, text)
    assert not (workdir / "experiments.db").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"vocab_size": 10**12},
            "vocab_size must be an integer >= 1 and <= 16_777_216 or null (got 1000000000000)",
        ),
        ({"batch_size": 10**6}, "batch_size must be an integer >= 1 and <= 65_536"),
        ({"epochs": 10**7}, "epochs must be an integer >= 1 and <= 100_000"),
        ({"max_seq_len": 10**9}, "max_seq_len must be an integer >= 1 and <= 1_048_576"),
        ({"d_model": 2**20, "num_heads": 1}, "d_model must be an integer >= 1 and <= 65_536"),
        ({"num_layers": 10**5}, "num_layers must be an integer >= 1 and <= 1_024"),
        ({"max_train_samples": 10**12}, "max_train_samples must be an integer >= 1 and <= "),
        ({"eval": {"batch_size": 10**6}}, "batch_size must be an integer >= 1 and <= 65_536"),
        ({"learning_rate": 10**400}, "learning_rate: 100000000000... (401 characters)"),
    ],
)
def test_every_size_has_an_upper_bound_named_in_its_error(
    workdir: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any], message: str
) -> None:
    assert message in refused(workdir, capsys, config_text(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"db_path": "blocker/experiments.db"},
            "db_path 'blocker/experiments.db' cannot be created: ",
        ),
        ({"output_dir": "blocker/runs"}, "output_dir 'blocker/runs' cannot be created: "),
        ({"output_dir": "blocker"}, "output_dir 'blocker' cannot be used: "),
    ],
)
def test_an_output_path_under_a_file_is_a_config_error(
    workdir: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any], message: str
) -> None:
    (workdir / "blocker").write_text("a file, not a folder")
    err = refused(workdir, capsys, config_text(**overrides))
    assert message in err and "blocker is a file, not a folder" in err


def test_a_database_path_naming_a_folder_is_a_config_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(workdir, capsys, config_text(db_path="example_models"))
    assert "db_path 'example_models' is a folder; name a file in it" in err


def test_output_paths_in_new_folders_are_accepted(workdir: Path) -> None:
    config = workdir / "ok.json"
    config.write_text(config_text(db_path="new/experiments.db", output_dir="new/runs"))
    job = prepare_job(config)
    assert job.db_path == Path("new/experiments.db")
    assert not (workdir / "new").exists(), "preparing the job creates nothing"


def test_a_model_no_machine_can_hold_is_refused_with_the_estimate(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURES / "huge_lm.py", workdir)
    err = refused(workdir, capsys, config_text(model_file="huge_lm.py"))
    assert "not enough memory: training this model at batch_size 16 needs about 16 TiB" in err
    assert "parameters 4 TiB x 4 (weights, gradients, Adam's two moments)" in err
    assert "Lower batch_size or max_seq_len, or train a smaller model" in err


def test_a_vocabulary_that_does_not_fit_is_refused_and_one_that_fits_loads(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_estimate, "available_memory", lambda: GiB)
    shutil.copy(FIXTURES / "wide_vocab_lm.py", workdir)
    text = config_text(model_file="wide_vocab_lm.py", vocab_size=2_000_000)
    err = refused(workdir, capsys, text)
    assert "this machine has 1 GiB available" in err
    assert "parameters 7.64 GiB x 4" in err
    config = workdir / "ok.json"
    config.write_text(config_text(model_file="wide_vocab_lm.py", vocab_size=1000))
    job = prepare_job(config)
    assert job.loaded.task.vocab_size == 1000 and job.loaded.num_parameters == 1000 * 512 * 2 + 1000


def test_a_batch_that_does_not_fit_is_refused_and_a_small_one_loads(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_estimate, "available_memory", lambda: GiB)
    err = refused(workdir, capsys, config_text(batch_size=4096, max_train_samples=4096))
    assert "at batch_size 4096 needs about 2.25 GiB" in err
    assert "for a batch of input_ids[4096, 32], attention_mask[4096, 32], labels[4096, 32]" in err
    config = workdir / "ok.json"
    config.write_text(config_text(batch_size=16))
    assert prepare_job(config).training.batch_size == 16
    # A batch never holds more examples than the data has: 16 examples at batch_size 65536.
    config.write_text(config_text(batch_size=65_536, max_train_samples=16))
    assert prepare_job(config).training.batch_size == 65_536


def test_a_model_that_cannot_be_built_on_the_meta_device_still_loads_and_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURES / "reads_values_lm.py", workdir)
    config = workdir / "ok.json"
    config.write_text(config_text(model_file="reads_values_lm.py"))
    job = prepare_job(config)
    assert job.loaded.class_name == "ScaledLM"
    err = capsys.readouterr().err
    assert err.startswith("modeltiers train: memory not estimated before building the model: ")
    assert "meta" in err


def test_the_estimate_follows_its_formula() -> None:
    task = get_builtin_task("lm_tiny").with_vocab_size(10)
    with torch.device("meta"):
        model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    estimate = memory_estimate.estimate_training_memory(model, task, get_adapter(task), 3)
    parameters = (10 * 4 + 4 * 10 + 10) * 4
    activations = 3 * 128 * (4 + 10) * 4  # each leaf's float32 output, batch 3 x 128 tokens
    assert estimate.parameter_bytes == parameters
    assert estimate.activation_bytes == activations
    assert estimate.total_bytes == 4 * parameters + 2 * activations
    assert memory_estimate.available_memory() is not None
