"""Long checks show their progress: a live line on a terminal, one line per stage in a CI log;
the session fixtures a check needed count in its duration, not only in pytest's setup line."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_modeltiers.report.progress import REFRESH_SECONDS, Progress

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "fixtures" / "tier5" / "bag_cls.py"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_in_a_log_each_stage_is_one_line_when_it_ends() -> None:
    written: list[str] = []
    clock = Clock()
    progress = Progress(written.append, live=False, clock=clock)
    with progress.stage("tier 3 training run", total=64) as stage:
        for step in range(1, 65):
            clock.now += 0.25
            stage.update(step, note=f"loss {1 / step:.3g}")
    assert written == ["modeltiers: tier 3 training run: 64 steps in 16.0 s, loss 0.0156\n"]


def test_on_a_terminal_one_line_is_rewritten_with_an_eta_then_cleared() -> None:
    written: list[str] = []
    clock = Clock()
    progress = Progress(written.append, live=True, clock=clock)
    with progress.stage("tier 3 training run", total=40) as stage:
        for step in range(1, 11):
            clock.now += REFRESH_SECONDS / 2
            stage.update(step, note="loss 0.5")
    assert written[0] == "\rmodeltiers: tier 3 training run: steps 0/40"
    assert all(text.startswith("\r") and "\n" not in text for text in written)
    assert written[2] == "\rmodeltiers: tier 3 training run: steps 4/40, loss 0.5, ETA 9.0 s"
    assert len(written) == 2 + 10 // 2  # at most one rewrite per refresh interval
    assert written[-1].strip() == "" and written[-1].endswith("\r")


def test_nobody_watching_means_nothing_written() -> None:
    progress = Progress(None, live=False)
    with progress.stage("tier 5 current profile", total=3, unit="rows") as stage:
        stage.update(3)


def test_tier4_and_tier5_stages_appear_in_a_ci_log_and_setup_counts_in_the_check(
    pytester: pytest.Pytester,
) -> None:
    shutil.copy(MODEL, pytester.path)
    result = pytester.runpytest(
        f"--model={MODEL.name}", "-m", "tier4 or tier5", "-p", "no:randomly",
        "-k", "test_export or parity or eval_metrics", "--export-formats", "pytorch",
        "--export-quantization", "none", "--modeltiers-report", "health.json",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    output = result.stdout.str()
    assert re.search(r"^modeltiers: tier 4 export pytorch: [\d.]+ s, exported$", output, re.M)
    parity = re.search(
        r"^modeltiers: tier 4 parity pytorch: (\d+) shapes in [\d.]+ s, (\d+) fixed and (\d+) "
        r"drawn shapes match$",
        output,
        re.M,
    )
    assert parity and int(parity[1]) == int(parity[2]) + int(parity[3]), output
    assert re.search(
        r"^modeltiers: tier 5 reference profile: \d+ rows in [\d.]+ s, of ", output, re.M
    )
    assert "\r" not in output  # no live line in a log


@pytest.mark.slow
def test_the_training_run_reports_progress_and_its_fixture_time_counts_in_the_check(
    pytester: pytest.Pytester,
) -> None:
    shutil.copy(MODEL, pytester.path)
    result = pytester.runpytest(
        f"--model={MODEL.name}", "-m", "tier3", "-k", "test_training_run", "-p", "no:randomly",
        "--durations=0", "--durations-min=0", "--modeltiers-report", "health.json",
        "--junitxml", "junit.xml",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    line = re.search(
        r"^modeltiers: tier 3 training run: (\d+) steps in [\d.]+ s, loss ", output, re.M
    )
    assert line and int(line[1]) > 0, output
    durations = {
        when: float(seconds)
        for seconds, when in re.findall(
            r"^([\d.]+)s (setup|call) +modeltiers/tier3.py::test_training_run$", output, re.M
        )
    }
    assert set(durations) == {"setup", "call"}, output
    (check,) = json.loads((pytester.path / "health.json").read_text())["checks"]
    # The check's duration is what it cost: its setup (the training run) and its call.
    assert check["duration_seconds"] >= durations["setup"] > check["duration_seconds"] / 2
    testcase = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    assert testcase is not None
    properties = {p.get("name"): p.get("value") for p in testcase.iter("property")}
    assert float(properties["modeltiers_setup_seconds"]) == pytest.approx(
        durations["setup"], abs=0.01
    )
