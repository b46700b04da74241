"""Tier 3: randomness at construction that the seed does not reach, next to its correct twin.

``fixtures/verdicts/init_clock_seeded.py`` draws its initial weights from a generator seeded
with the clock; its twin seeds the same private generator from torch's global one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_checks_tier1_outputs import load

from pytest_modeltiers.checks import tier3
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT / "fixtures" / "verdicts"


def seed_check(pytester: pytest.Pytester, model: str) -> dict:
    pytester.runpytest(
        f"--model={VERDICTS / model}",
        "-m",
        "tier3",
        "-k",
        "seed_reproducibility",
        "--modeltiers-report",
        "health.json",
    )
    report = json.loads((pytester.path / "health.json").read_text())
    (check,) = report["checks"]
    assert check["check_name"] == "test_seed_reproducibility"
    return check


def test_clock_seeded_initial_weights_fail_seed_reproducibility(
    pytester: pytest.Pytester,
) -> None:
    check = seed_check(pytester, "init_clock_seeded.py")
    assert check["status"] == "failed"
    message = check["message"]
    assert "built twice" in message and "emb.weight" in message, message
    assert "initial weights" in message and "clock" in message, message
    assert check["details"]["construction"]["mismatched_parameters"] == ["emb.weight"]


def test_a_private_generator_seeded_from_torch_passes(pytester: pytest.Pytester) -> None:
    check = seed_check(pytester, "init_private_generator_twin.py")
    assert check["status"] == "passed", check["message"]
    assert check["details"]["construction"]["mismatched_parameters"] == []


def test_without_a_factory_construction_is_not_compared() -> None:
    """Called with one built model only, the check says what it could not see."""
    model, adapter, task = load(VERDICTS / "init_clock_seeded.py")
    batches = [make_batch(task, 4, 8, seed=s) for s in range(2)]
    result = tier3.check_seed_reproducibility(model, adapter, batches)
    assert result.status is CheckStatus.PASSED
    assert "construction" not in result.details


def test_a_factory_that_raises_is_a_failure_naming_it() -> None:
    loaded = load_model(LoadRequest(spec=str(VERDICTS / "init_clock_seeded.py"), rootdir=ROOT))
    model, adapter, task = loaded.new_model(), loaded.adapter, loaded.task

    def broken_factory() -> None:
        raise RuntimeError("no weights file")

    batches = [make_batch(task, 4, 8, seed=s) for s in range(2)]
    result = tier3.check_seed_reproducibility(
        model,
        adapter,
        batches,
        factory=broken_factory,  # type: ignore[arg-type]
    )
    assert result.status is CheckStatus.FAILED
    assert "RuntimeError: no weights file" in result.message
