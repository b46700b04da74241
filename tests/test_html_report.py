"""The HTML health report: one self-contained page with plots, from a session or the CLI.

Most tests render the committed report of a real five-tier session on the example GPT
(``fixtures/html/five_tiers.json``: tier 2 included, drift against a shifted dataset, a
baseline and a trigger history), so what they check is what users see for a full run; the
session tests run the plugin as users do.
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

# Matplotlib's pybind11 extensions cannot be imported twice in one process, and pytester's
# in-process runs drop modules first imported inside them: import them here, once.
import matplotlib.backends.backend_svg
import matplotlib.figure  # noqa: F401
import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.report import CheckResult, HealthReport
from pytest_modeltiers.report.html import render_html, verdict_of, write_html
from pytest_modeltiers.report.plots import Plot, draw_check, draw_checks, plot_worthy

REPO = Path(__file__).resolve().parents[1]
FIVE_TIERS = REPO / "fixtures" / "html" / "five_tiers.json"
EXAMPLES = REPO / "example_models"

#: The checks of the five-tier report that draw a plot: every plot-worthy check with data.
PLOTTED = [
    "test_batch_independence",
    "test_output_finite",
    "test_overfit_single_batch",
    "test_resume_equivalence",
    "test_seed_reproducibility",
    "test_training_run",
    "test_export_latency",
    "test_export_parity[onnx]",
    "test_export_parity[pytorch]",
    "test_export_parity[torch_export]",
    "test_quantized_parity",
    "test_input_drift",
    "test_prediction_drift",
    "test_retraining_triggers",
    "test_attention_health",  # tier 2
]

VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


class StrictPage(HTMLParser):
    """Parses a page and records every nesting error, id, URL-bearing attribute and tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids.append(value)
            if name in ("src", "href", "xlink:href", "action", "poster", "data"):
                self.urls.append(value or "")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._attrs(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._attrs(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> StrictPage:
    parser = StrictPage()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>")
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed tags: {parser.stack}"
    return parser


@pytest.fixture(scope="module")
def five_tiers() -> HealthReport:
    return HealthReport.read(FIVE_TIERS)


@pytest.fixture(scope="module")
def plots(five_tiers: HealthReport) -> list[Plot]:
    return draw_checks(five_tiers.to_dict()["checks"])


@pytest.fixture(scope="module")
def page(five_tiers: HealthReport, plots: list[Plot]) -> str:
    return render_html(five_tiers, plots)


def test_the_page_is_valid_html_with_unique_ids(page: str) -> None:
    parsed = parse(page)
    assert len(parsed.ids) == len(set(parsed.ids)), "duplicate ids: plots would share clip paths"
    assert parsed.tags.count("html") == parsed.tags.count("body") == 1


def test_the_page_is_self_contained(page: str) -> None:
    parsed = parse(page)
    assert not {"script", "link", "iframe", "img", "object", "embed"} & set(parsed.tags)
    assert all(url.startswith("#") for url in parsed.urls), [
        url for url in parsed.urls if not url.startswith("#")
    ][:5]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "@import" not in page and "url(http" not in page


def test_score_and_verdict_come_first_and_phones_get_a_viewport(page: str) -> None:
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media (max-width:640px)" in page
    score = page.index('id="score"')
    assert score < page.index("<table")
    head = page[score : page.index("</section>", score)]
    assert "95.7" in head and "FAIL" in head  # one drift failure closes the CI gate
    assert "test_input_drift" in page[score : page.index("<table")]  # the gate says which


def test_one_figure_per_plot_worthy_check_placed_in_its_tier(
    five_tiers: HealthReport, plots: list[Plot], page: str
) -> None:
    checks = five_tiers.to_dict()["checks"]
    assert sorted(plot.check_name for plot in plots) == sorted(PLOTTED)
    assert sorted(c["check_name"] for c in checks if plot_worthy(c)) == sorted(PLOTTED)
    assert page.count("<figure") == len(PLOTTED) == page.count("<svg")
    for plot in plots:
        figure = page.index(f'<figure id="plot-{plot.key}"')
        assert page.index(f'id="tier-{plot.tier}"') < figure, plot.check_name
        assert f'href="#plot-{plot.key}"' in page  # the check's row links to it
    titles = "".join(plot.svg for plot in plots)
    for words in ("Batch-independence error", "Overfitting one batch", "Training run",
                  "parity error by input shape", "Latency by input shape and format",
                  "Input drift", "DRIFT", "Retraining triggers", "Attention entropy"):  # fmt: skip
        assert words in titles


def test_every_tier_is_rendered_from_its_checks_tier_2_included(
    five_tiers: HealthReport, page: str
) -> None:
    tiers = sorted({check.tier for check in five_tiers.checks})
    assert tiers == [1, 2, 3, 4, 5]
    for tier in tiers:
        assert f'<h2 id="tier-{tier}">' in page
    assert "test_attention_health" in page


def test_messages_are_whole_and_details_folded() -> None:
    long = "the model failed because " + "of a very long reason " * 30 + "END"
    checks = [
        CheckResult.failed("test_output_finite", 1, long, {"nan": 3, "input": "input_ids[2,8]"}),
        CheckResult.passed("test_shape_robustness", 1, "fine", {}),
    ]
    page = render_html(HealthReport(checks))
    parse(page)
    assert long in page
    assert page.count("<details>") == 1
    folded = page[page.index("<details>") : page.index("</details>")]
    assert '"nan": 3' in folded


def test_a_check_without_the_data_draws_no_plot() -> None:
    bare = CheckResult.passed("test_output_finite", 1, "all finite", {"input": "x[2,3]"})
    skipped = CheckResult.skipped("test_input_drift", 5, "no reference", {"no_data": ["ref"]})
    for result in (bare, skipped):
        assert plot_worthy(result.to_dict())
        assert draw_check(result.to_dict()) is None
    page = render_html(HealthReport([bare, skipped]))
    assert "<figure" not in page and "NO DATA" in page


def test_an_incomplete_report_says_so_and_fails() -> None:
    report = HealthReport(
        [CheckResult.passed("test_output_finite", 1, "ok")],
        status="incomplete",
        status_reason="the process was killed",
    )
    word, _, reasons = verdict_of(report)
    assert word == "FAIL" and any("INCOMPLETE" in reason for reason in reasons)
    page = render_html(report)
    assert "INCOMPLETE:</strong> the process was killed" in page


# --------------------------------------------------------------------------- the data


def test_the_recorder_gathers_the_points_of_every_call() -> None:
    recorder = CheckRecorder()
    for batch, length, diff in ((2, 4, 0.0), (3, 4, 1e-6), (2, 4, 2e-6), (4, 9, 0.0)):
        point = {"batch": batch, "length": length, "max_abs_diff": diff}
        recorder.record(CheckResult.passed("test_batch_independence", 1, "ok", {"point": point}))
    final = recorder.final()
    assert final is not None and "point" not in final.details
    assert final.details["points"] == [
        {"batch": 2, "length": 4, "max_abs_diff": 2e-6},  # the worst of the two calls
        {"batch": 3, "length": 4, "max_abs_diff": 1e-6},
        {"batch": 4, "length": 9, "max_abs_diff": 0.0},
    ]
    bad = {"batch": 5, "length": 1, "max_abs_diff": 0.5}
    recorder.record(CheckResult.failed("test_batch_independence", 1, "mixes", {"point": bad}))
    failed = recorder.final()
    assert failed is not None and failed.status.value == "failed"
    assert bad in failed.details["points"] and len(failed.details["points"]) == 4


def test_drift_distributions_share_bins_and_name_the_top_categories() -> None:
    import numpy as np

    from pytest_modeltiers.checks.tier5 import TOP_CATEGORIES, signal_distribution
    from pytest_modeltiers.drift.profile import CategoricalSignal, NumericSignal

    ref = NumericSignal("input", np.arange(10.0), None)
    cur = NumericSignal("input", np.arange(5.0, 25.0), None)
    numeric = signal_distribution(ref, cur)
    assert numeric["kind"] == "numeric" and numeric["edges"][0] == 0 and numeric["edges"][-1] == 24
    assert len(numeric["reference"]) == len(numeric["current"]) == len(numeric["edges"]) - 1
    assert sum(numeric["reference"]) == pytest.approx(1) == sum(numeric["current"])
    counts = {f"class{i}": 100 - i for i in range(15)}
    categorical = signal_distribution(
        CategoricalSignal("output", counts), CategoricalSignal("output", {"class0": 5})
    )
    assert categorical["labels"][0] == "class0" and categorical["labels"][-1] == "other"
    assert len(categorical["labels"]) == TOP_CATEGORIES + 1
    assert categorical["current"][0] == 1.0


def test_trigger_history_lists_each_triggers_values_oldest_first(tmp_path: Path) -> None:
    from pytest_modeltiers.store.experiment_db import ExperimentDB
    from pytest_modeltiers.triggers.manager import evaluate_retraining, trigger_history

    db = ExperimentDB(tmp_path / "exp.db")
    for loss in (1.0, 1.2, 1.5):
        evaluate_retraining(
            {"preset": "balanced", "overrides": {"performance": {"metric_name": "eval/loss"}}},
            current_metrics={"eval/loss": loss},
            baseline_metrics={"eval/loss": 1.0},
            experiment_db=db,
            scope="tier5.m",
        )
    history = trigger_history(db, "tier5.m")
    values = [point["value"] for point in history["performance_balanced"]]
    assert values == pytest.approx([0.0, 0.2, 0.5])
    assert trigger_history(db, "tier5.other") == {}


# --------------------------------------------------------------------------- the CLI


def test_cli_renders_a_report_file_and_saves_each_plot_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "out.html"
    assert main(["report", str(FIVE_TIERS), "--html", str(out)]) == 0
    assert f"wrote {out} and {len(PLOTTED)} plot(s)" in capsys.readouterr().out
    parse(out.read_text(encoding="utf-8"))
    files = sorted((tmp_path / "reports" / "plots").glob("*.svg"))
    assert len(files) == len(PLOTTED)
    for file in files:
        root = ET.fromstring(file.read_text(encoding="utf-8"))  # well-formed on its own
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert not root.findall(".//{http://www.w3.org/2000/svg}image")  # no raster, no URL
    small = tmp_path / "small.json"
    HealthReport([CheckResult.passed("test_shape_robustness", 1, "ok")]).write(small)
    assert main(["report", str(small), "--html", str(tmp_path / "b.html"), "--no-plot-files"]) == 0
    assert (tmp_path / "b.html").is_file()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no health report here"),
        ("{not json", "is not valid JSON"),
        ('{"schema_version": "0.1"}', "is not a health report this version can judge"),
    ],
    ids=["missing", "corrupt", "foreign"],
)
def test_cli_refuses_a_missing_or_corrupt_report_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    source = tmp_path / "health.json"
    if content is not None:
        source.write_text(content, encoding="utf-8")
    assert main(["report", str(source), "--html", str(tmp_path / "out.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modeltiers report: ") and expected in err
    assert not (tmp_path / "out.html").exists()


def test_cli_refuses_a_directory_as_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(FIVE_TIERS), "--html", str(tmp_path)]) == 2
    assert "is a directory; name a file in it" in capsys.readouterr().err


# --------------------------------------------------------------------------- in a session

TINY_LM = """
    import torch
    from torch import nn
    TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 40, "max_seq_len": 12}}
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(40, 8)
            self.head = nn.Linear(8, 40)
        def forward(self, input_ids, attention_mask=None):
            logits = self.head(self.tok_emb(input_ids))
            if POISON:  # NaN wherever the last token id is
                logits = logits + torch.log(1 - (input_ids == 39).unsqueeze(-1).float()) * 0
            return logits
    POISON = False
"""


def test_a_session_writes_the_page_with_its_plots(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    pytester.makeini("[pytest]\nmodeltiers_html = reports/health.html\n")  # the ini twin
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--model", "model.py", "-m", "tier1",
        "-k", "output_finite or batch_independence", "--modeltiers-profile", "ci",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "modeltiers: HTML report written to reports?health.html, 2 plot(s) in *plots "
            "(* s with Matplotlib's import)"
        ]
    )
    page = (pytester.path / "reports" / "health.html").read_text(encoding="utf-8")
    parse(page)
    assert page.count("<figure") == 2
    plots = sorted(p.name for p in (pytester.path / "reports" / "plots").glob("*.svg"))
    assert plots == [
        "tier1-test_batch_independence-model.svg",  # tier, check and model
        "tier1-test_output_finite-model.svg",
    ]


def test_a_failing_check_draws_its_failing_inputs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(model=textwrap.dedent(TINY_LM).replace("POISON = False", "POISON = True"))
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--model", "model.py", "-m", "tier1", "-k", "output_finite",
        "--modeltiers-profile", "ci", "--modeltiers-report", "health.json",
        "--modeltiers-html", "health.html",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    check = json.loads((pytester.path / "health.json").read_text())["checks"][0]
    assert any(point["non_finite"] > 0 for point in check["details"]["points"])
    page = (pytester.path / "health.html").read_text(encoding="utf-8")
    assert page.count("<figure") == 1 and "#d62728" in page  # red: the non-finite inputs


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".", "--modeltiers-html .: . is a directory; name a file in it"),
        ("health.json", "--modeltiers-report writes that file"),
    ],
)
def test_a_bad_html_path_is_a_usage_error(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    result = pytester.runpytest(
        "--model", "model.py", "--modeltiers-report", "health.json", "--modeltiers-html", value
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


RECORDER = """
import json, sys

def pytest_unconfigure(config):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def _modules_of_run(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--model", "model.py", "-m", "tier1", "-k", "output_finite",
        "--modeltiers-report", "health.json", *args,
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    modules: list[str] = json.loads((pytester.path / "modules.json").read_text())
    assert "torch" in modules  # the session did run the check
    return modules


@pytest.mark.slow
def test_only_a_run_that_asks_for_html_imports_matplotlib(pytester: pytest.Pytester) -> None:
    """Read at the end of real sessions (the last hook), in fresh processes, which confine
    themselves (Landlock) where the kernel allows: the page is drawn inside the sandbox."""
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    plain = _modules_of_run(pytester)
    assert not [m for m in plain if m.split(".")[0] == "matplotlib"]
    assert "pytest_modeltiers.report.plots" not in plain
    with_html = _modules_of_run(pytester, "--modeltiers-html", "out/health.html")
    assert "matplotlib" in with_html
    assert (pytester.path / "out" / "plots" / "tier1-test_output_finite-model.svg").is_file()


RECORDER_PER_PROCESS = """
import json, sys

def pytest_unconfigure(config):
    worker = getattr(config, "workerinput", {}).get("workerid", "controller")
    with open(f"modules-{worker}.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


@pytest.mark.slow
def test_under_xdist_only_the_process_that_draws_the_page_loads_matplotlib(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(RECORDER_PER_PROCESS)
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--model", "model.py", "-m", "tier1",
        "-k", "output_finite or batch_independence", "--modeltiers-html", "health.html",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["modeltiers: HTML report written to health.html, 2 plot(s) in *plots (* s with "
         "Matplotlib's import)"]
    )  # fmt: skip
    modules = {
        path.stem.removeprefix("modules-"): json.loads(path.read_text())
        for path in pytester.path.glob("modules-*.json")
    }
    assert sorted(modules) == ["controller", "gw0", "gw1"]
    assert "matplotlib" in modules["controller"]
    for worker in ("gw0", "gw1"):
        assert "torch" in modules[worker]  # the worker ran checks
        assert not [m for m in modules[worker] if m.split(".")[0] == "matplotlib"], worker
    assert (pytester.path / "health.html").read_text(encoding="utf-8").count("<figure") == 2


# --------------------------------------------------------------------------- a real browser


def _chromium_tools() -> Any:
    """``tools/chromium.py`` (Playwright's Chromium, else the system's), or a skip saying what
    is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright")
    spec = importlib.util.spec_from_file_location(
        "modeltiers_chromium", REPO / "tools" / "chromium.py"
    )
    assert spec is not None and spec.loader is not None
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    with sync_playwright() as playwright:
        try:
            tools.chromium_executable(playwright)
        except LookupError as exc:
            pytest.skip(str(exc))
    return tools


@pytest.mark.slow
def test_the_page_renders_in_a_real_browser(five_tiers: HealthReport, tmp_path: Path) -> None:
    tools = _chromium_tools()
    from playwright.sync_api import sync_playwright

    target, _ = write_html(five_tiers, tmp_path / "health.html")
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = tools.launch_chromium(playwright)
        try:
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.on("request", lambda request: requests.append(request.url))
            phone.goto(target.as_uri())
            assert phone.locator("#score .number").inner_text() == "95.7"
            assert phone.locator("figure svg").count() == len(PLOTTED)
            box = phone.locator("figure svg").first.bounding_box()
            assert box is not None and box["width"] <= 390  # the plots fit a phone
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "the page scrolls sideways on a phone"
            phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [target.as_uri()], "the page fetched something besides itself"
    assert (tmp_path / "phone.png").stat().st_size > 0
