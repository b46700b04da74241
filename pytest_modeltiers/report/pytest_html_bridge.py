"""Our checks in pytest-html's report: each built-in test's details and plot, and the score.

PYTEST_DONT_REWRITE

Registered by the session only when pytest-html is writing a report (``--html``), so a run
without it never imports this module's heavy parts (Matplotlib) nor needs pytest-html itself:
the ``pytest_html_*`` hook is optional, and an extra is a plain dict in pytest-html's format
(what ``pytest_html.extras`` builds), so nothing here imports pytest-html.

Each built-in test's call report carries its ``CheckResult`` (``modeltiers_check``, set by the
session); this plugin's report wrapper, outside the session's and pytest-html's, appends to
``report.extras`` an HTML block (status, message, the details folded) and, for a check with a
plot, the plot as an SVG image. Under xdist this runs in the worker and the extras travel with
the report. The results summary gets the health score and the CI gate's verdict.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_modeltiers.report.health_report import HealthReport

__all__ = ["PytestHtmlBridge", "check_extras", "pytest_html_active"]


def pytest_html_active(config: pytest.Config) -> bool:
    """True when pytest-html is installed and asked to write a report (``--html PATH``)."""
    return config.pluginmanager.hasplugin("html") and bool(getattr(config.option, "htmlpath", None))


def _extra(content: str, format_type: str, **fields: str | None) -> dict[str, str | None]:
    """One extra as ``pytest_html.extras.extra`` builds it."""
    return {
        "name": fields.get("name"),
        "format_type": format_type,
        "content": content,
        "mime_type": fields.get("mime_type"),
        "extension": fields.get("extension"),
    }


def check_extras(check: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """pytest-html extras for one check (a ``CheckResult.to_dict()``): its block of HTML, and
    its plot as an SVG image when it has one."""
    from pytest_modeltiers.report.html import details_json
    from pytest_modeltiers.report.plots import draw_check, plot_worthy

    status = str(check["status"])
    block = (
        f'<div class="modeltiers-check"><p><strong>modeltiers {escape(status.upper())}</strong> '
        f"<code>{escape(str(check['check_name']))}</code> (tier {check['tier']})</p>"
        f'<pre style="white-space:pre-wrap">{escape(str(check["message"]))}</pre>'
    )
    if check.get("details"):
        block += (
            "<details><summary>modeltiers details</summary><pre>"
            f"{escape(details_json(check['details']))}</pre></details>"
        )
    extras = [_extra(block + "</div>", "html")]
    plot = draw_check(check) if plot_worthy(check) else None
    if plot is not None:
        encoded = base64.b64encode(plot.svg.encode("utf-8")).decode("ascii")
        extras.append(
            _extra(encoded, "image", name=plot.title, mime_type="image/svg+xml", extension="svg")
        )
    return extras


class PytestHtmlBridge:
    """The plugin that feeds pytest-html; ``health_report`` gives the session's report so far."""

    def __init__(self, health_report: Callable[[], HealthReport]) -> None:
        self.health_report = health_report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Outermost, so the session has put ``modeltiers_check`` on the report and
        pytest-html has gathered its own extras before ours are appended."""
        report = yield
        check = getattr(report, "modeltiers_check", None)
        if report.when == "call" and isinstance(check, Mapping):
            existing = list(getattr(report, "extras", []))
            report.extras = [*existing, *check_extras(check)]  # type: ignore[attr-defined]
        return report

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        """The health score and verdict at the top of pytest-html's summary."""
        from pytest_modeltiers.report.html import summary_html

        report = self.health_report()
        if report.checks:
            prefix.append(summary_html(report))
