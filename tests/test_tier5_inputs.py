"""Tier 5's inputs are checked when the session starts: a bad one is one line and exit 4.

A reference profile that is garbage, truncated or a training run's, a database that is not one,
an evaluation file or config that cannot be read: each is the user's mistake, reported before
any test runs (never as failed drift tests, an error and a score of 20), and nothing is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import compute_profile
from pytest_modeltiers.drift.profile_io import save_profile
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "fixtures" / "tier5" / "bag_cls.py"
INPUTS = REPO / "fixtures" / "tier5_inputs"


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
    }


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    shutil.copy(MODEL, pytester.path)
    return pytester.runpytest("--model=bag_cls.py", "-m", "tier5", "-p", "no:cacheprovider", *args)


def _usage_error(pytester: pytest.Pytester, args: list[str], expected: str) -> None:
    """Exit 4 with ``expected`` on one line of stderr, no test run, no file written."""
    shutil.copy(MODEL, pytester.path)
    before = _files(pytester.path)
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr.str()
    assert _files(pytester.path) == before, "a rejected input must leave nothing behind"


def _profile(pytester: pytest.Pytester) -> Path:
    """A real reference profile of the fixture classifier's validation data."""
    loaded = load_model(LoadRequest(spec=str(MODEL), rootdir=MODEL.parent))
    data = task_dataset(loaded.task, "validation")
    profile = compute_profile(loaded.new_model(), loaded.adapter, loaded.task, data)
    return save_profile(profile, pytester.path / "reference.json")


# --------------------------------------------------------------------------- reference profiles


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("garbage.json", "--reference-profile *garbage.json is not valid JSON*recompute*"),
        ("training_config.json", "--reference-profile *is not a pytest-modeltiers profile*"),
        ("missing.json", "--reference-profile *missing.json does not exist (check the path)*"),
    ],
)
def test_a_reference_profile_file_that_is_not_one_is_a_usage_error(
    pytester: pytest.Pytester, fixture: str, expected: str
) -> None:
    if (INPUTS / fixture).exists():
        shutil.copy(INPUTS / fixture, pytester.path)
    _usage_error(pytester, ["--reference-profile", fixture], expected)


def test_a_truncated_or_edited_reference_profile_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    path = _profile(pytester)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    _usage_error(
        pytester, ["--reference-profile", path.name], "*is not valid JSON*truncated or corrupted*"
    )
    path.write_text(text.replace('"n_examples": 64', '"n_examples": 1000'))
    _usage_error(
        pytester, ["--reference-profile", path.name], "*fails its integrity check*edited or*"
    )


def test_a_training_run_as_reference_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """The observed case: a run id of a run that has no profile (a training run)."""
    db = ExperimentDB(pytester.path / "exp.db")
    run = db.log_run("training", {"learning_rate": 1e-3})
    db.close()
    _usage_error(
        pytester,
        ["--experiment-db", "exp.db", "--reference-profile", str(run)],
        f"--reference-profile {run}: run {run} has no profile named 'dataset_profile'*in exp.db*"
        "a training run stores none*",
    )
    _usage_error(
        pytester,
        ["--experiment-db", "exp.db", "--reference-profile", "7"],
        "--reference-profile 7: *run*7*",
    )


def test_a_run_id_needs_an_existing_database_and_none_is_created(
    pytester: pytest.Pytester,
) -> None:
    _usage_error(
        pytester, ["--reference-profile", "1"], "*no database is set: add --experiment-db*"
    )
    _usage_error(
        pytester,
        ["--experiment-db", "new.db", "--reference-profile", "1"],
        "--reference-profile 1: *new.db does not exist*",
    )


# --------------------------------------------------------------------------- databases


@pytest.mark.parametrize("option", ["--experiment-db", "--model-registry"])
def test_a_database_option_naming_something_else_is_a_usage_error(
    pytester: pytest.Pytester, option: str
) -> None:
    shutil.copy(INPUTS / "not_sqlite.db", pytester.path)
    _usage_error(pytester, [option, "not_sqlite.db"], f"{option} not_sqlite.db: *SQLite*")
    (pytester.path / "folder.db").mkdir()
    _usage_error(pytester, [option, "folder.db"], f"{option} folder.db: *director*")
    _usage_error(pytester, [option, "/proc"], f"{option} /proc: *")
    _usage_error(
        pytester, [option, "not_sqlite.db/new/x.db"], f"{option} *: *parent of this path is a file*"
    )


# --------------------------------------------------------------------------- evaluation data


@pytest.mark.parametrize("option", ["--eval-data", "--current-data"])
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("missing.pt", "*dataset file missing.pt does not exist (check the path)*"),
        ("garbage.pt", "*cannot read dataset file garbage.pt*dict of tensors*"),
        ("wrong_keys.jsonl", "*wrong_keys.jsonl lacks input_ids*(it has label, tokens)*"),
    ],
)
def test_unreadable_data_files_are_usage_errors(
    pytester: pytest.Pytester, option: str, fixture: str, expected: str
) -> None:
    if (INPUTS / fixture).exists():
        shutil.copy(INPUTS / fixture, pytester.path)
    _usage_error(pytester, [option, fixture], f"{option} {fixture}: {expected}")


def test_tier5_inputs_are_checked_only_when_tier5_can_run(pytester: pytest.Pytester) -> None:
    """An ini file naming tier 5's data is read by tier 5 runs, not by every tier 1 run."""
    shutil.copy(INPUTS / "garbage.pt", pytester.path)
    shutil.copy(MODEL, pytester.path)
    pytester.makeini("[pytest]\nmodeltiers_current_data = garbage.pt\n")
    tier1 = pytester.runpytest(
        "--model=bag_cls.py", "-m", "tier1", "--co", "-p", "no:cacheprovider"
    )
    assert tier1.ret == pytest.ExitCode.OK, tier1.stderr.str()
    tier5 = pytester.runpytest(
        "--model=bag_cls.py", "-m", "tier5", "--co", "-p", "no:cacheprovider"
    )
    assert tier5.ret == pytest.ExitCode.USAGE_ERROR
    tier5.stderr.fnmatch_lines(["ERROR: --current-data garbage.pt: *cannot read dataset file*"])


def test_data_out_of_the_models_vocabulary_is_a_usage_error(pytester: pytest.Pytester) -> None:
    ids = torch.full((4, 8), 500)
    torch.save(
        {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(4)},
        pytester.path / "big_ids.pt",
    )
    _usage_error(pytester, ["--eval-data", "big_ids.pt"], "*token ids in [[]500, 500] but*")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("eval_config_typo.json", "*unknown EvalConfig field(s): 'batchsize'*batch_size*"),
        ("eval_config_bad_split.json", "*split 'holdout' is not one of the task's shipped*"),
        ("garbage.json", "*garbage.json*"),
        ("missing.json", "*missing.json*"),
    ],
)
def test_a_bad_eval_config_is_a_usage_error(
    pytester: pytest.Pytester, fixture: str, expected: str
) -> None:
    if (INPUTS / fixture).exists():
        shutil.copy(INPUTS / fixture, pytester.path)
    _usage_error(pytester, ["--eval-config", fixture], f"--eval-config {fixture}: {expected}")


# --------------------------------------------------------------------------- good inputs


def test_good_inputs_pass_the_start_and_are_used(pytester: pytest.Pytester) -> None:
    """The same checks accept real files: the tier 5 tests run on them."""
    reference = _profile(pytester)
    loaded = load_model(LoadRequest(spec=str(MODEL), rootdir=MODEL.parent))
    torch.save(dict(task_dataset(loaded.task, "validation").tensors), pytester.path / "data.pt")
    (pytester.path / "eval.json").write_text('{"dataset_id": "cls_tiny_v1", "batch_size": 8}')
    result = _run(
        pytester, "--reference-profile", reference.name, "--eval-data", "data.pt",
        "--eval-config", "eval.json", "--current-data", "data.pt", "--experiment-db", "exp.db",
        "-k", "eval_metrics or drift",
    )  # fmt: skip
    result.assert_outcomes(passed=3)
    assert (pytester.path / "exp.db").is_file()
