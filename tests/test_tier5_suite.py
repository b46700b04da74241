"""The built-in tier 5 suite as users run it: evaluation, the regression gate, drift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import pytest_modeltiers.suites.tier5  # noqa: F401  (imported once, before in-process runs)
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import compute_profile
from pytest_modeltiers.drift.profile_io import save_profile
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
from pytest_modeltiers.store.experiment_db import ExperimentDB

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
FIXTURES = REPO / "fixtures" / "tier5"
TIER5_TESTS = [
    "test_eval_metrics",
    "test_baseline_regression",
    "test_input_drift",
    "test_prediction_drift",
]
ONLY_MINE = "-k=" + " or ".join(TIER5_TESTS)


def copy_model(pytester: pytest.Pytester, source: Path) -> str:
    """The model copied into the test's directory (rootdir and relative paths are there)."""
    shutil.copy(source, pytester.path)
    return source.name


def loaded(path: Path) -> LoadedModel:
    return load_model(LoadRequest(spec=str(path), rootdir=path.parent))


def run_tier5(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--model={model}", "-m", "tier5", ONLY_MINE, "-rs", *args)


def test_tier5_collects_its_checks(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co", "-q", f"--model={EXAMPLES / 'simple_cnn.py'}", "-m", "tier5", "--strict-markers"
    )
    result.stdout.fnmatch_lines([f"modeltiers/tier5.py::{name}" for name in TIER5_TESTS])
    assert "modeltiers/tier1.py" not in result.stdout.str()


@pytest.mark.parametrize("example", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"])
def test_example_models_evaluate_and_skip_what_has_no_baseline(
    pytester: pytest.Pytester, example: str
) -> None:
    result = run_tier5(pytester, copy_model(pytester, EXAMPLES / f"{example}.py"))
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED *no baseline to compare with: pass --baseline-run RUN_ID*",
            "SKIPPED *no reference profile to compare inputs with: pass --reference-profile*",
            "SKIPPED *no reference profile to compare predictions with*",
        ]
    )


def test_eval_metrics_are_recorded_as_a_run(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, EXAMPLES / "tiny_encoder_cls.py")
    result = run_tier5(
        pytester, model, "--experiment-db", "exp.db", "--modeltiers-report", "health.json"
    )
    result.assert_outcomes(passed=1, skipped=3)
    db = ExperimentDB(pytester.path / "exp.db")
    (run_id,) = db.list_runs()["run_id"].tolist()
    metrics = db.get_metrics(run_id)
    assert sorted(metrics["metric_name"]) == ["eval/accuracy", "eval/loss", "eval/macro_f1"]
    assert db.get_run(run_id)["status"] == "completed"
    assert db.get_profile(run_id, "dataset_profile")["profile"]["n_examples"] == 64
    (checkpoint,) = db.get_artifacts(run_id, "checkpoint")["filepath"]
    assert set(torch.load(checkpoint, weights_only=True)) >= {"head.weight"}
    report = json.loads((pytester.path / "health.json").read_text())
    check = next(c for c in report["checks"] if c["check_name"] == "test_eval_metrics")
    assert check["tier"] == 5 and check["details"]["run_id"] == run_id
    stored = dict(zip(metrics["metric_name"], metrics["value"], strict=True))
    assert check["details"]["metrics"]["accuracy"] == pytest.approx(stored["eval/accuracy"])


# --------------------------------------------------------------------------- regression


@pytest.fixture(scope="module")
def trained_weights() -> dict[str, torch.Tensor]:
    """The fixture classifier trained to ~95 % held-out accuracy (the good baseline)."""
    bag = loaded(FIXTURES / "bag_cls.py")
    model, adapter, task = bag.new_model(), bag.adapter, bag.task
    data = dict(task_dataset(task, "train").tensors)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(20):
        opt.zero_grad()
        adapter.loss(adapter.forward(model, data), data, task).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def baseline_run(pytester: pytest.Pytester, name: str, checkpoint: object) -> int:
    torch.save(checkpoint, pytester.path / f"{name}.pt")
    db = ExperimentDB(pytester.path / "exp.db")
    run = db.log_run(name)
    db.log_artifact(run, "checkpoint", f"{name}.pt")  # relative: found next to the database
    return run


def test_a_regressed_model_fails_the_gate_and_an_equal_one_passes(
    pytester: pytest.Pytester, trained_weights: dict[str, torch.Tensor]
) -> None:
    model = copy_model(pytester, FIXTURES / "bag_cls.py")
    good = baseline_run(pytester, "trained", trained_weights)
    untrained = loaded(pytester.path / model).new_model().state_dict()
    equal_lean = baseline_run(pytester, "equal", {"model": untrained, "step": 0})
    lightning = {"state_dict": {f"model.{k}": v for k, v in untrained.items()}, "epoch": 1}
    equal_lightning = baseline_run(pytester, "lightning", lightning)

    worse = run_tier5(
        pytester,
        model,
        "-k",
        "regression",
        "--experiment-db",
        "exp.db",
        "--baseline-run",
        str(good),
    )
    worse.assert_outcomes(failed=1)
    worse.stdout.fnmatch_lines(
        [
            f"*candidate vs baseline run {good} on 64 paired examples: the primary metric "
            "accuracy regressed*",
            "*accuracy (primary): baseline 0.9* -> candidate 0.5*; 95% paired bootstrap CI*",
            "rerun: *python* -m pytest --modeltiers-model=* -k test_baseline_regression",
        ]
    )
    for run in (equal_lean, equal_lightning):
        same = run_tier5(
            pytester,
            model,
            "-k",
            "regression",
            "--experiment-db",
            "exp.db",
            "--baseline-run",
            str(run),
        )
        same.assert_outcomes(passed=1)
    comparisons = ExperimentDB(pytester.path / "exp.db").get_comparisons()
    assert sorted(comparisons["baseline_run_id"]) == [good, equal_lean, equal_lightning]
    assert comparisons["notes"][0].startswith("fail: accuracy (primary)")


def test_a_tolerance_wide_enough_lets_the_regression_through(
    pytester: pytest.Pytester, trained_weights: dict[str, torch.Tensor]
) -> None:
    model = copy_model(pytester, FIXTURES / "bag_cls.py")
    run = baseline_run(pytester, "trained", trained_weights)
    result = run_tier5(
        pytester, model, "-k", "regression", "--experiment-db", "exp.db",
        "--baseline-run", str(run), "--regression-tolerance", "0.6",
    )  # fmt: skip
    result.assert_outcomes(passed=1)


def test_unusable_baselines_fail_with_the_fix(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, FIXTURES / "bag_cls.py")
    no_db = run_tier5(pytester, model, "-k", "regression", "--baseline-run", "3")
    no_db.assert_outcomes(failed=1)
    no_db.stdout.fnmatch_lines(["*--baseline-run 3 names a run of the experiment database*"])
    db = ExperimentDB(pytester.path / "exp.db")
    empty = db.log_run("no checkpoint")
    missing = run_tier5(
        pytester,
        model,
        "-k",
        "regression",
        "--experiment-db",
        "exp.db",
        "--baseline-run",
        str(empty),
    )
    missing.stdout.fnmatch_lines([f"*run {empty} of exp.db has no checkpoint*"])
    other = baseline_run(pytester, "other", {"weight": torch.zeros(2, 2)})
    mismatch = run_tier5(
        pytester,
        model,
        "-k",
        "regression",
        "--experiment-db",
        "exp.db",
        "--baseline-run",
        str(other),
    )
    mismatch.assert_outcomes(failed=1)
    mismatch.stdout.fnmatch_lines(["*does not fit BagClassifier*same parameter names*"])


# --------------------------------------------------------------------------- drift


def reference_file(pytester: pytest.Pytester, model: str, *, outputs: bool = True) -> str:
    """A reference profile of the validation split, with the model's outputs."""
    spec = loaded(pytester.path / model)
    net = spec.new_model() if outputs else None
    profile = compute_profile(
        net, spec.adapter if outputs else None, spec.task, task_dataset(spec.task, "validation")
    )
    save_profile(profile, pytester.path / "reference.json")
    return "reference.json"


def test_shifted_data_drifts_and_reference_data_does_not(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    reference = reference_file(pytester, model)
    quiet = run_tier5(pytester, model, "-k", "drift", "--reference-profile", reference)
    quiet.assert_outcomes(passed=2)

    task = loaded(pytester.path / model).task
    torch.save(dict(task_dataset(task, "test", shift=1.0).tensors), pytester.path / "shifted.pt")
    loud = run_tier5(
        pytester, model, "-k", "drift", "--reference-profile", reference,
        "--current-data", "shifted.pt", "--modeltiers-report", "health.json",
    )  # fmt: skip
    loud.assert_outcomes(failed=2)
    loud.stdout.fnmatch_lines(
        [
            "*input drift against the reference (file *reference.json): pixel_mean_c0, *",
            "*pixel_mean_c0: drift: ks p-value * <= 0.00833 (alpha 0.05, bonferroni over 6 tests)*",
            "*prediction drift against the reference*",
        ]
    )
    report = json.loads((pytester.path / "health.json").read_text())
    drift = next(c for c in report["checks"] if c["check_name"] == "test_input_drift")
    assert drift["status"] == "failed" and drift["details"]["dataset_drifted"] is True


def test_a_profile_without_outputs_skips_prediction_drift(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, EXAMPLES / "tiny_gpt.py")
    reference = reference_file(pytester, model, outputs=False)
    result = run_tier5(pytester, model, "-k", "drift", "--reference-profile", reference)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED *has no output signals: it was computed without a model*"]
    )


def test_a_tier5_run_is_the_next_sessions_reference_and_baseline(
    pytester: pytest.Pytester,
) -> None:
    model = copy_model(pytester, EXAMPLES / "tiny_encoder_cls.py")
    first = run_tier5(pytester, model, "--experiment-db", "exp.db")
    first.assert_outcomes(passed=1, skipped=3)
    again = run_tier5(
        pytester, model, "--experiment-db", "exp.db", "--reference-profile", "1",
        "--baseline-run", "1",
    )  # fmt: skip
    again.assert_outcomes(passed=4)


def test_a_tampered_reference_is_refused_at_start_with_the_integrity_message(
    pytester: pytest.Pytester,
) -> None:
    model = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    reference = reference_file(pytester, model)
    path = pytester.path / reference
    data = json.loads(path.read_text())
    data["n_examples"] = 1000
    path.write_text(json.dumps(data))
    result = run_tier5(pytester, model, "-k", "input_drift", "--reference-profile", reference)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*fails its integrity check*edited or corrupted*"])


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--drift-alpha", "2", "*--drift-alpha: expected a significance level between 0 and 1*"),
        ("--eval-data", "data.csv", "*--eval-data: expected a dataset file ending in .pt*"),
        ("--baseline-run", "0", "*--baseline-run: expected a run id*"),
        ("--reference-profile", "ref.yaml", "*--reference-profile: expected a profile file*"),
        ("--regression-tolerance", "10", "*--regression-tolerance: expected a fraction*"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, option: str, value: str, expected: str
) -> None:
    result = pytester.runpytest(f"--model={EXAMPLES / 'simple_cnn.py'}", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
