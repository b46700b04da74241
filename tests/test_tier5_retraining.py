"""test_retraining_triggers and the retraining_report fixture, through real tier 5 sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import compute_profile
from pytest_modeltiers.drift.profile_io import save_profile
from pytest_modeltiers.models.loader import LoadRequest, load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "example_models"
ONLY = "-k=test_retraining_triggers"

#: A policy whose only trigger is critical input drift: JS distance above 0.1 on any signal.
CRITICAL_DRIFT = {
    "triggers": [
        {
            "type": "drift",
            "name": "inputs_moved",
            "metric_name": "drift/js_distance",
            "threshold": 0.1,
            "severity": "critical",
        }
    ]
}


def _setup(pytester: pytest.Pytester) -> tuple[str, str]:
    """tiny_gpt in the test directory, a reference profile of its validation data, and a
    current-data file drawn from a shifted distribution."""
    shutil.copy(EXAMPLES / "tiny_gpt.py", pytester.path)
    spec = load_model(LoadRequest(spec=str(pytester.path / "tiny_gpt.py"), rootdir=pytester.path))
    data = task_dataset(spec.task, "validation")
    save_profile(
        compute_profile(spec.new_model(), spec.adapter, spec.task, data),
        pytester.path / "reference.json",
    )
    shifted = dict(task_dataset(spec.task, "test", shift=1.0).tensors)
    torch.save(shifted, pytester.path / "shifted.pt")
    return "tiny_gpt.py", "reference.json"


def test_healthy_data_passes_and_the_report_is_written_next_to_the_health_report(
    pytester: pytest.Pytester,
) -> None:
    model, reference = _setup(pytester)
    result = pytester.runpytest(
        f"--model={model}", "-m", "tier5", ONLY, "--reference-profile", reference,
        "--modeltiers-report", "out/health.json",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    written = json.loads((pytester.path / "out" / "retraining.json").read_text())
    assert written["severity"] == "none" and written["gate"] == "critical"
    assert (pytester.path / "out" / "retraining.md").read_text().startswith("# Retraining report")
    health = json.loads((pytester.path / "out" / "health.json").read_text())
    check = next(c for c in health["checks"] if c["check_name"] == "test_retraining_triggers")
    assert check["status"] == "passed" and check["details"]["severity"] == "none"
    assert check["details"]["written_to"].endswith("retraining.json")


def test_a_critical_trigger_fails_the_gate_and_a_lower_gate_catches_a_warning(
    pytester: pytest.Pytester,
) -> None:
    model, reference = _setup(pytester)
    (pytester.path / "policy.json").write_text(json.dumps(CRITICAL_DRIFT))
    shifted = ["--reference-profile", reference, "--current-data", "shifted.pt"]
    critical = pytester.runpytest(
        f"--model={model}", "-m", "tier5", ONLY, *shifted, "--retraining-policy", "policy.json"
    )
    critical.assert_outcomes(failed=1)
    critical.stdout.fnmatch_lines(["*retraining needed: severity critical reaches the gate*"])

    # The balanced preset's drift trigger is a warning: below the default gate, at a lower one.
    warned = pytester.runpytest(f"--model={model}", "-m", "tier5", ONLY, *shifted)
    warned.assert_outcomes(passed=1)
    gated = pytester.runpytest(
        f"--model={model}", "-m", "tier5", ONLY, *shifted, "--retraining-gate", "warning"
    )
    gated.assert_outcomes(failed=1)
    gated.stdout.fnmatch_lines(["*severity warning reaches the gate (warning)*"])


def test_a_bad_policy_is_an_error_that_names_the_fix(pytester: pytest.Pytester) -> None:
    model, _ = _setup(pytester)
    (pytester.path / "policy.json").write_text('{"preset": "balanced", "overides": {}}')
    result = pytester.runpytest(
        f"--model={model}", "-m", "tier5", ONLY, "--retraining-policy", "policy.json"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*retraining triggers could not be evaluated*overides*"])
    bad_gate = pytester.runpytest(f"--model={model}", "--retraining-gate", "loud")
    assert bad_gate.ret == pytest.ExitCode.USAGE_ERROR
    bad_gate.stderr.fnmatch_lines(["*--retraining-gate: expected one of info, warning, critical*"])


def test_the_registrys_production_model_is_the_baseline_without_a_run(
    pytester: pytest.Pytester,
) -> None:
    """--model-registry: the production alias's checkpoint is re-evaluated as the baseline, and
    its metrics feed the performance trigger; without a production model the test skips."""
    from pytest_modeltiers.store.model_registry import ModelRegistry

    model, _ = _setup(pytester)
    spec = load_model(LoadRequest(spec=str(pytester.path / model), rootdir=pytester.path))
    torch.save(spec.new_model().state_dict(), pytester.path / "prod.pt")
    registry = ModelRegistry(pytester.path / "models.db")
    args = [f"--model={model}", "-m", "tier5", "-k", "regression", "--model-registry", "models.db"]
    empty = pytester.runpytest(*args, "-rs")
    empty.assert_outcomes(skipped=1)
    empty.stdout.fnmatch_lines(["*no baseline to compare with*production alias*"])

    model_id = registry.register_model(
        "tiny_gpt", "1.0.0", pytester.path / "prod.pt", "language_modeling", "cfg-1"
    )
    registry.promote_model(model_id, "production")
    result = pytester.runpytest(*args, "--modeltiers-report", "health.json")
    result.assert_outcomes(passed=1)
    health = json.loads((pytester.path / "health.json").read_text())
    check = health["checks"][0]
    assert "registry production model tiny_gpt 1.0.0" in check["message"]
