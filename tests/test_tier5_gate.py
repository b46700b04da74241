"""Tier 5 passes only on what it judged: no baseline, reference or trigger data is not a pass.

Without inputs the checks that had nothing to judge are skipped with the reason and
``details["no_data"]`` naming what was missing; the retraining report says it could not
decide; ``--modeltiers-require`` (ini ``modeltiers_require``) turns a missing input into a
failure that names the option to pass.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_modeltiers.checks.tier5 import check_retraining
from pytest_modeltiers.datasets import task_dataset
from pytest_modeltiers.drift.distribution import compute_profile
from pytest_modeltiers.drift.profile_io import save_profile
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.triggers.manager import (
    DataVolumeTrigger,
    DriftTrigger,
    RetrainingReport,
    TimeTrigger,
    TriggerDetail,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "fixtures" / "tier5" / "bag_cls.py"
NOW = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
TRIGGERS = ["drift_balanced", "performance_balanced", "time_balanced", "data_volume_balanced"]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    shutil.copy(MODEL, pytester.path)
    return pytester.runpytest(
        "--model=bag_cls.py", "-m", "tier5", "-rs", "-p", "no:cacheprovider", *args
    )


def _checks(pytester: pytest.Pytester) -> dict[str, dict[str, object]]:
    health = json.loads((pytester.path / "health.json").read_text())
    return {c["check_name"]: c for c in health["checks"]}


def _reference(pytester: pytest.Pytester) -> str:
    loaded = load_model(LoadRequest(spec=str(MODEL), rootdir=MODEL.parent))
    data = task_dataset(loaded.task, "validation")
    profile = compute_profile(loaded.new_model(), loaded.adapter, loaded.task, data)
    save_profile(profile, pytester.path / "reference.json")
    return "reference.json"


# --------------------------------------------------------------------------- sessions


def test_without_inputs_nothing_is_judged_and_the_retraining_report_cannot_decide(
    pytester: pytest.Pytester,
) -> None:
    """The observation: no baseline, no reference, no trigger data scored 100 and said
    "No retraining needed: none of the 4 active trigger(s) fired"."""
    result = _run(pytester, "--modeltiers-report", "health.json")
    result.assert_outcomes(passed=1, skipped=4)
    result.stdout.fnmatch_lines(
        ["SKIPPED *: could not decide: no data for drift_balanced (*). Pass --reference-profile*"]
    )
    assert "No retraining needed" not in result.stdout.str()
    report = json.loads((pytester.path / "retraining.json").read_text())
    assert report["decided"] is False
    assert report["recommendations"][0].startswith("Could not decide: no data for")
    markdown = (pytester.path / "retraining.md").read_text()
    assert "**Could not decide**" in markdown and "No retraining needed" not in markdown
    # The health report keeps what was missing, so it can count these checks apart.
    checks = _checks(pytester)
    assert checks["test_baseline_regression"]["details"]["no_data"] == ["baseline"]
    for drift in ("test_input_drift", "test_prediction_drift"):
        assert checks[drift]["status"] == "skipped"
        assert checks[drift]["details"]["no_data"] == ["reference profile"]
    retraining = checks["test_retraining_triggers"]
    assert retraining["status"] == "skipped"
    assert retraining["details"]["no_data"] == [f"trigger data: {t}" for t in TRIGGERS]


def test_a_partly_decided_report_passes_on_what_was_judged_and_names_the_rest(
    pytester: pytest.Pytester,
) -> None:
    reference = _reference(pytester)
    result = _run(
        pytester, "-k", "retraining", "--reference-profile", reference, "-v",
        "--modeltiers-report", "health.json",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    check = _checks(pytester)["test_retraining_triggers"]
    message = str(check["message"])
    assert message.startswith("no retraining trigger fired among the 1 evaluated (drift_balanced)")
    assert "could not decide: no data for performance_balanced, time_balanced, " in message
    assert "no_data" not in check["details"]  # it passed: the undecided ones are named instead
    assert check["details"]["not_evaluated"] == TRIGGERS[1:]


def test_require_turns_missing_inputs_into_failures_naming_the_option(
    pytester: pytest.Pytester,
) -> None:
    result = _run(pytester, "--modeltiers-require", "tier5.baseline,tier5.reference")
    result.assert_outcomes(passed=1, failed=3, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*--modeltiers-require tier5.baseline: no baseline to compare with*--baseline-run*",
            "*--modeltiers-require tier5.reference: no reference profile*--reference-profile*",
        ]
    )
    # The ini twin, and a requirement met: the drift tests judge, so they pass.
    reference = _reference(pytester)
    pytester.makeini("[pytest]\nmodeltiers_require = tier5.reference, tier5.triggers\n")
    met = _run(pytester, "-k", "drift or retraining", "--reference-profile", reference)
    met.assert_outcomes(passed=2, failed=1)
    met.stdout.fnmatch_lines(
        [
            "*--modeltiers-require tier5.triggers: could not decide: no data for "
            "performance_balanced*--baseline-run*--model-registry*"
        ]
    )


def test_require_eval_data_fails_on_the_shipped_split_and_passes_on_a_file(
    pytester: pytest.Pytester,
) -> None:
    shipped = _run(pytester, "-k", "eval_metrics", "--modeltiers-require", "tier5.eval-data")
    shipped.assert_outcomes(failed=1)
    shipped.stdout.fnmatch_lines(["*tier5.eval-data: *shipped*pass --eval-data PATH*"])
    loaded = load_model(LoadRequest(spec=str(MODEL), rootdir=MODEL.parent))
    import torch

    torch.save(dict(task_dataset(loaded.task, "test").tensors), pytester.path / "held_out.pt")
    own = _run(
        pytester, "-k", "eval_metrics", "--modeltiers-require", "tier5.eval-data",
        "--eval-data", "held_out.pt",
    )  # fmt: skip
    own.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tier5.basline", "*--modeltiers-require: unknown input 'tier5.basline' (did you mean "
         "'tier5.baseline'?)*expected a comma-separated list of tier5.baseline, tier5.reference,*"),
        ("", "*--modeltiers-require: expected a comma-separated list of*"),
    ],
)  # fmt: skip
def test_an_unknown_requirement_is_a_usage_error(
    pytester: pytest.Pytester, value: str, expected: str
) -> None:
    result = _run(pytester, "--modeltiers-require", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


# --------------------------------------------------------------------------- the verdict


def _window(js_distance: float | None = None) -> list[TriggerDetail]:
    """Three triggers; drift is evaluated only when a distance is given, the others never."""
    drift = None if js_distance is None else {"drift/js_distance": js_distance}
    trigger = DriftTrigger(threshold=0.1, name="drift", severity="critical")
    return [
        trigger.evaluate(drift_metrics=drift, now=NOW),
        TimeTrigger(name="time").evaluate(now=NOW),
        DataVolumeTrigger(name="volume").evaluate(metadata={}, now=NOW),
    ]


def test_the_verdict_of_every_kind_of_window() -> None:
    undecided = RetrainingReport.from_details(_window(), now=NOW)
    assert not undecided.decided and undecided.severity == "none"
    skipped = check_retraining(undecided)
    assert skipped.status.value == "skipped"
    assert skipped.details["no_data"] == [f"trigger data: {t}" for t in ("drift", "time", "volume")]
    assert skipped.message.startswith("could not decide: no data for drift (")
    assert check_retraining(undecided, require_data=True).status.value == "failed"

    quiet = RetrainingReport.from_details(_window(0.05), now=NOW)
    assert quiet.decided
    passed = check_retraining(quiet)
    assert passed.status.value == "passed"
    assert "could not decide: no data for time, volume" in passed.message
    required = check_retraining(quiet, require_data=True)
    assert required.status.value == "failed"
    assert required.message.startswith("--modeltiers-require tier5.triggers: could not decide")

    fired = check_retraining(RetrainingReport.from_details(_window(0.5), now=NOW))
    assert (
        fired.status.value == "failed" and "not evaluated (no data): time, volume" in fired.message
    )

    complete = RetrainingReport.from_details(_window(0.05)[:1], now=NOW)
    assert complete.recommendations[0] == (
        "No retraining needed: none of the 1 active trigger(s) fired."
    )
    assert check_retraining(complete, require_data=True).status.value == "passed"
