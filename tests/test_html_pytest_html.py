"""pytest-html's report carries our checks: each test's details and plot, and the score.

Run as users run it (``pytest --model ... --html report.html``); with and without xdist, and
without pytest-html, where nothing of it must be needed.
"""

from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path

# Matplotlib's pybind11 extensions cannot be imported twice in one process, and pytester's
# in-process runs drop modules first imported inside them: import them here, once.
import matplotlib.backends.backend_svg
import matplotlib.figure  # noqa: F401
import pytest

from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.report.pytest_html_bridge import check_extras

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
            return self.head(self.tok_emb(input_ids))
"""
ARGS = ("-p", "no:cacheprovider", "--model", "model.py", "-m", "tier1", "--modeltiers-profile=ci")
SELECTED = ("-k", "output_finite or shape_robustness")


def _images(page: str) -> list[str]:
    """The SVG images pytest-html embedded (data URIs), decoded."""
    found = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page)
    return [base64.b64decode(data).decode("utf-8") for data in found]


def test_extras_carry_the_details_and_the_plot_of_a_check() -> None:
    check = CheckResult.passed(
        "test_batch_independence",
        1,
        "2 samples alone match",
        {"atol": 1e-4, "points": [{"batch": 2, "length": 5, "max_abs_diff": 0.0}]},
    ).to_dict()
    block, image = check_extras(check)
    assert block["format_type"] == "html" and "modeltiers PASSED" in str(block["content"])
    assert "<details><summary>modeltiers details</summary>" in str(block["content"])
    assert image["format_type"] == "image" and image["mime_type"] == "image/svg+xml"
    assert base64.b64decode(str(image["content"])).startswith(b"<svg")
    plain = CheckResult.passed("test_gradient_flow", 1, "all parameters get gradients").to_dict()
    assert [extra["format_type"] for extra in check_extras(plain)] == ["html"]


@pytest.mark.parametrize("workers", [None, "1"], ids=["serial", "xdist"])
def test_pytest_html_report_shows_our_checks_and_the_score(
    pytester: pytest.Pytester, workers: str | None
) -> None:
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    xdist = ("-n", workers) if workers else ()
    result = pytester.runpytest(
        *ARGS, *SELECTED, *xdist, "--html", "report.html", "--self-contained-html"
    )
    result.assert_outcomes(passed=2)
    page = (pytester.path / "report.html").read_text(encoding="utf-8")
    assert "modeltiers health score 100.0 / 100: PASS" in page
    assert page.count("modeltiers details") == 2  # one per built-in test
    images = _images(page)
    assert len(images) == 1  # test_output_finite has a plot; test_shape_robustness has none
    assert images[0].startswith("<svg") and "Non-finite logits" in images[0]


def test_without_pytest_html_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    result = pytester.runpytest(*ARGS, *SELECTED, "-p", "no:html")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    assert not list(Path(pytester.path).glob("*.html"))


def test_pytest_html_installed_but_not_asked_for_adds_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "def pytest_sessionfinish(session):\n"
        "    plugin = session.config.pluginmanager.get_plugin('modeltiers-pytest-html')\n"
        "    print('bridge registered:', plugin is not None)\n"
    )
    pytester.makepyfile(model=textwrap.dedent(TINY_LM))
    result = pytester.runpytest(*ARGS, "-k", "shape_robustness", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*bridge registered: False*"])
