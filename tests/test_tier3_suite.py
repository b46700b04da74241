"""The built-in tier 3 suite as users run it: collection, outcomes, messages, the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pytest_modeltiers.checks.tier3
import pytest_modeltiers.suites.tier3  # noqa: F401  (imported once, before in-process runs)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
FIXTURES = REPO / "fixtures" / "tier3"
TIER3_TESTS = [
    "test_overfit_single_batch",
    "test_gradient_accumulation_equivalence",
    "test_resume_equivalence",
    "test_seed_reproducibility",
    "test_training_run",
]


def copy_fixture(pytester: pytest.Pytester, name: str) -> str:
    """The fixture model copied into the test's directory, so that rootdir (where failing
    batches are saved) is the pytester directory, not this repository."""
    shutil.copy(FIXTURES / f"{name}.py", pytester.path)
    return f"{name}.py"


def test_tier3_collects_its_checks(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co", "-q", f"--model={EXAMPLES / 'tiny_gpt.py'}", "-m", "tier3", "--strict-markers"
    )
    result.stdout.fnmatch_lines([f"modeltiers/tier3.py::{name}" for name in TIER3_TESTS])
    assert "modeltiers/tier1.py" not in result.stdout.str()


@pytest.mark.parametrize("example", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"])
def test_example_models_pass_tier3(pytester: pytest.Pytester, example: str) -> None:
    result = pytester.runpytest(
        f"--model={EXAMPLES / (example + '.py')}", "-m", "tier3", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=len(TIER3_TESTS))


def test_a_model_that_cannot_train_fails_with_the_cause(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={copy_fixture(pytester, 'overfit_detached')}",
        "-m",
        "tier3",
        "--modeltiers-report",
        "health.json",
    )
    result.assert_outcomes(failed=len(TIER3_TESTS))
    result.stdout.fnmatch_lines(
        [
            "*the loss cannot decrease: the loss (*) does not depend on any trainable parameter*",
            "*input: input_ids[[]4,16[]] attention_mask[[]4,16[]] labels[[]4[]]*",
            "*failing batch saved to modeltiers-failures/test_overfit_single_batch.pt*",
            "rerun: *python* -m pytest --modeltiers-model=* -k test_overfit_single_batch",
        ]
    )
    data = json.loads((pytester.path / "health.json").read_text())
    checks = {c["check_name"]: c for c in data["checks"]}
    assert sorted(checks) == sorted(TIER3_TESTS)
    assert all(c["tier"] == 3 and c["status"] == "failed" for c in checks.values())
    assert data["summary"]["health_score"] == 0.0
    saved = pytester.path / "modeltiers-failures" / "test_overfit_single_batch.pt"
    assert saved.is_file()


def test_batchnorm_model_skips_accumulation_with_the_reason(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        f"--model={copy_fixture(pytester, 'accum_batchnorm')}", "-m", "tier3", "-rs"
    )
    result.assert_outcomes(passed=len(TIER3_TESTS) - 1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED *tier3.py:* the model normalises with batch statistics in train mode (norm)*"]
    )


@pytest.mark.parametrize(
    ("fixture", "failing", "expected"),
    [
        ("accum_batch_mixing", "test_gradient_accumulation_equivalence", "*mixes examples*"),
        ("resume_hidden_counter", "test_resume_equivalence", "*outside state_dict()*"),
        ("seed_private_generator", "test_seed_reproducibility", "*private torch.Generator*"),
    ],
)
def test_each_training_bug_fails_its_own_check(
    pytester: pytest.Pytester, fixture: str, failing: str, expected: str
) -> None:
    result = pytester.runpytest(
        f"--model={copy_fixture(pytester, fixture)}", "-m", "tier3", "-k", failing
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([expected, f"FAILED modeltiers/tier3.py::{failing}*"])


# -- test_training_run: the session's real run_training --------------------------------------


def test_training_run_logs_to_the_experiment_db_option(pytester: pytest.Pytester) -> None:
    shutil.copy(EXAMPLES / "tiny_gpt.py", pytester.path / "tiny_gpt_run.py")
    result = pytester.runpytest(
        "--model",
        "tiny_gpt_run.py",
        "-m",
        "tier3",
        "-k",
        "test_training_run",
        "--experiment-db",
        "runs/exp.db",
        "--modeltiers-report",
        "health.json",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    from pytest_modeltiers.store.experiment_db import ExperimentDB

    with ExperimentDB(pytester.path / "runs" / "exp.db") as db:
        runs = db.list_runs()
        assert list(runs["status"]) == ["completed"]
        metrics = db.get_metrics(int(runs["run_id"][0]), "val/loss")
        assert list(metrics["epoch"]) == [0, 1]
    check = json.loads((pytester.path / "health.json").read_text())["checks"][0]
    assert check["check_name"] == "test_training_run" and check["tier"] == 3
    details = check["details"]
    assert details["eval_summary"]["loss"] < details["initial_eval"]["loss"]
    assert not (pytester.path / "lightning_logs").exists()


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("overfit_frozen_head", "*the validation loss did not decrease: 0.6* before training*"),
        ("overfit_detached", "*the training run failed: NoGradientPathError: the loss *"),
        (
            "run_unsafe_checkpoint",
            "*cannot be loaded with torch.load(weights_only=True): UnpicklingError: "
            "Unsupported global: GLOBAL datetime.date*",
        ),
    ],
)
def test_training_run_fails_a_model_that_does_not_train_or_checkpoint(
    pytester: pytest.Pytester, fixture: str, expected: str
) -> None:
    result = pytester.runpytest(
        f"--model={copy_fixture(pytester, fixture)}", "-m", "tier3", "-k", "test_training_run"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([expected, "FAILED modeltiers/tier3.py::test_training_run*"])


def test_trained_model_fixture_gives_users_the_trained_model(pytester: pytest.Pytester) -> None:
    shutil.copy(EXAMPLES / "tiny_gpt.py", pytester.path / "tiny_gpt_users.py")
    pytester.makepyfile(
        test_uses_trained="""
        def test_trained(trained_model, training_run, model):
            assert trained_model is training_run.results.model
            assert not trained_model.lm_head.weight.equal(model.lm_head.weight)
        """
    )
    result = pytester.runpytest(
        "--model", "tiny_gpt_users.py", "-k", "test_trained", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
