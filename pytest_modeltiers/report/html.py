"""The health report as one self-contained HTML page, with plots, readable on a phone.

PYTEST_DONT_REWRITE

The page puts the score and the verdict first (the verdict is the CI gate's: ``modeltiers
check-report`` passes the same reports), then the root causes, the models, the summary by tier
and, tier by tier, a table of the checks with the status, the time, the whole message and the
details folded in ``<details>``, followed by the tier's plots. Tiers are rendered from the
report's checks, whichever tiers they are, so a new tier needs no code here.

Self-contained: the CSS is inline, the plots are inline SVG (see ``plots``), there is no script
and no URL to fetch, so the file opens from a CI artifact, an e-mail or a phone without a
network. The same plots are written as ``plots/*.svg`` beside the page, to paste into a pull
request or keep in a repro bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.report.check_result import CheckStatus, check_marker
from pytest_modeltiers.report.gate import report_problems

if TYPE_CHECKING:
    from pytest_modeltiers.report.health_report import HealthReport
    from pytest_modeltiers.report.plots import Plot

__all__ = [
    "PLOTS_DIR",
    "details_json",
    "render_html",
    "summary_html",
    "verdict_of",
    "write_html",
]

#: Folder, beside the HTML page, that receives one SVG file per plot.
PLOTS_DIR = "plots"

TIER_TITLES = {
    1: "Tier 1: is the model wired right?",
    2: "Tier 2: what does it do inside?",
    3: "Tier 3: does it train?",
    4: "Tier 4: does the exported artifact behave like the model?",
    5: "Tier 5: is it still good in the world?",
}

_CSS = """
:root{--pass:#1b7f3a;--warn:#9a6700;--fail:#c62828;--skip:#5f6b7a;--line:#d8dee4;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328}
main{max-width:1100px;margin:0 auto;padding:12px}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em}
.score{display:flex;flex-wrap:wrap;gap:12px;align-items:center;padding:12px;border-radius:8px;
background:var(--bg);border-left:8px solid var(--skip)}
.score .number{font-size:2.4em;font-weight:700;line-height:1}
.verdict-pass{border-color:var(--pass)}.verdict-pass .word{color:var(--pass)}
.verdict-warn{border-color:var(--warn)}.verdict-warn .word{color:var(--warn)}
.verdict-fail{border-color:var(--fail)}.verdict-fail .word{color:var(--fail)}
.word{font-weight:700;font-size:1.2em}
.banner{background:#fff4e5;border:1px solid var(--warn);padding:8px;border-radius:6px}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid var(--line);padding:6px;text-align:left;vertical-align:top}
th{background:var(--bg)}
.status{font-weight:700;white-space:nowrap}
.s-passed{color:var(--pass)}.s-warning{color:var(--warn)}.s-failed,.s-error{color:var(--fail)}
.s-skipped{color:var(--skip)}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,Menlo,monospace}
details pre{background:var(--bg);padding:6px;max-height:24em;overflow:auto}
code{font:12px ui-monospace,Menlo,monospace;word-break:break-all}
figure{margin:1em 0;border:1px solid var(--line);border-radius:6px;padding:6px}
figure svg{width:100%;height:auto;max-width:720px;display:block}
figcaption{font-size:.9em;color:var(--skip)}
@media (max-width:640px){
main{padding:8px}.score .number{font-size:2em}
table.checks,table.checks tbody,table.checks tr,table.checks td{display:block;width:100%}
table.checks thead{display:none}
table.checks tr{border:1px solid var(--line);border-radius:6px;margin-bottom:8px;padding:4px}
table.checks td{border:0;padding:3px 6px}
table.checks td[data-label]::before{content:attr(data-label) ": ";font-weight:600}
}
""".strip()


def verdict_of(report: HealthReport) -> tuple[str, str, list[str]]:
    """``(word, css class, reasons)``: FAIL with the CI gate's reasons when ``modeltiers
    check-report`` would fail the report, WARN when it passes with warnings, else PASS."""
    problems = report_problems(report)
    if problems:
        return "FAIL", "verdict-fail", problems
    if report.summary["warning"]:
        count = report.summary["warning"]
        return "WARN", "verdict-warn", [f"{count} check(s) passed with a warning"]
    return "PASS", "verdict-pass", ["complete, and every judged check passed"]


def _text(value: Any) -> str:
    """Escaped for element content (quotes stay readable in the JSON of the details)."""
    return escape(str(value), quote=False)


def _attr(value: Any) -> str:
    """Escaped for a quoted attribute value."""
    return escape(str(value), quote=True)


def _score_text(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.1f}"


def _counts(summary: Mapping[str, Any]) -> str:
    parts = [
        f"{count} {word}" + ("s" if plural and count > 1 else "")
        for count, word, plural in (
            (summary["passed"], "passed", False),
            (summary["warning"], "warning", True),
            (summary["failed"], "failed", False),
            (summary["error"], "error", True),
        )
        if count
    ]
    skipped = summary["skipped"] - summary["not_judged"]
    if skipped:
        parts.append(f"{skipped} skipped")
    if summary["not_judged"]:
        parts.append(f"{summary['not_judged']} not judged (no data)")
    return ", ".join(parts) or "no checks"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, css: str = "") -> str:
    """A table whose cells are already HTML; each cell carries its column name for phones."""
    head = "".join(f"<th>{_text(name)}</th>" for name in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{_attr(name)}">{cell}</td>'
            for name, cell in zip(header, row, strict=True)
        )
        + "</tr>\n"
        for row in rows
    )
    cls = f' class="{css}"' if css else ""
    return (
        f'<div class="table-wrap"><table{cls}><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}</tbody></table></div>"
    )


def _status_cell(check: Mapping[str, Any]) -> str:
    return f'<span class="status s-{check["status"]}">{check_marker(check)}</span>'


def _details_cell(check: Mapping[str, Any], plot: Plot | None) -> str:
    parts = []
    if plot is not None:
        parts.append(f'<a href="#plot-{_attr(plot.key)}">plot</a>')
    if check["details"]:
        shown = details_json(check["details"])
        parts.append(f"<details><summary>details</summary><pre>{_text(shown)}</pre></details>")
    return " ".join(parts) or "-"


def _check_rows(
    checks: Sequence[Mapping[str, Any]], plots: Mapping[tuple[str, str | None], Plot]
) -> tuple[list[str], list[list[str]]]:
    with_model = any(check.get("model") for check in checks)
    header = ["Status", "Check", *(["Model"] if with_model else []), "Time (s)", "Message"]
    header.append("Details")
    rows = []
    for check in checks:
        plot = plots.get((check["check_name"], check.get("model")))
        name = f"<code>{_text(check['check_name'])}</code>"
        if check.get("nodeid"):
            name += f"<br><small><code>{_text(check['nodeid'])}</code></small>"
        rows.append(
            [
                _status_cell(check),
                name,
                *([_text(check.get("model") or "-")] if with_model else []),
                f"{check['duration_seconds']:.2f}",
                f"<pre>{_text(check['message'])}</pre>",
                _details_cell(check, plot),
            ]
        )
    return header, rows


def _figure(plot: Plot) -> str:
    return (
        f'<figure id="plot-{_attr(plot.key)}">{plot.svg}'
        f"<figcaption>{_text(plot.title)}</figcaption></figure>"
    )


def _summary_rows(data: Mapping[str, Any]) -> list[list[str]]:
    def row(label: str, summary: Mapping[str, Any]) -> list[str]:
        return [
            label,
            _score_text(summary["health_score"]),
            *(
                str(summary[key])
                for key in ("total", "passed", "warning", "failed", "error", "skipped")
            ),
        ]

    rows = [
        row(f'<a href="#tier-{tier["tier"]}">{tier["tier"]}</a>', tier) for tier in data["tiers"]
    ]
    rows.append(row("<strong>All</strong>", data["summary"]))
    return rows


def render_html(report: HealthReport, plots: Sequence[Plot] = ()) -> str:
    """The page for ``report``; ``plots`` (from ``plots.draw_checks``) are placed under their
    tier and linked from their check's row."""
    data = report.to_dict()
    summary = data["summary"]
    word, css, reasons = verdict_of(report)
    score = summary["health_score"]
    by_check = {(plot.check_name, plot.model): plot for plot in plots}
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Model health report: {_score_text(score)} ({word})</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        "<h1>Model health report</h1>",
        f'<section class="score {css}" id="score">'
        f'<div><div class="number">{_score_text(score)}</div><div>of 100</div></div>'
        f'<div><div class="word">{word}</div>'
        f"<div>{_text(_counts(summary))}</div></div></section>",
    ]
    out.append("<ul>" + "".join(f"<li>{_text(reason)}</li>" for reason in reasons) + "</ul>")
    if data["status"] != "complete":
        out.append(
            f'<p class="banner"><strong>INCOMPLETE:</strong> {_text(data["status_reason"])}</p>'
        )
    for cause in data["root_causes"]:
        where = f" at <code>{_text(cause['location'])}</code>" if cause["location"] else ""
        out.append(
            f'<p class="banner"><strong>{cause["count"]} checks failed on one root cause:</strong> '
            f"<code>{_text(cause['exception'])}</code>{where}</p>"
        )
    versions = ", ".join(
        f"{name} {version}" for name, version in data["environment"].items() if version
    )
    out.append(
        f"<p><small>Written {_text(data['created_at'])} by {_text(data['tool']['name'])} "
        f"{_text(data['tool']['version'])}; {_text(versions)}. Score = (passed + 0.5 x "
        "warnings) / checks not skipped x 100.</small></p>"
    )

    out.append('<h2 id="models">Models</h2>')
    if data["models"]:
        rows = [
            [
                _text(model["key"]),
                _text(model["class_name"] or "-"),
                "-" if model["num_parameters"] is None else f"{model['num_parameters']:,}",
                _text(model["task"] or "-"),
                _text(model["adapter"] or "-"),
                f"<code>{_text(model['file'] or model['spec'] or '-')}</code>",
                "-" if model["sha256"] is None else f"<code>{_text(model['sha256'])}</code>",
            ]
            for model in data["models"]
        ]
        out.append(
            _table(["Model", "Class", "Parameters", "Task", "Adapter", "File", "SHA-256"], rows)
        )
    else:
        out.append("<p>No model identity was recorded.</p>")

    out.append('<h2 id="tiers">Summary by tier</h2>')
    out.append(
        _table(
            ["Tier", "Score", "Checks", "Passed", "Warnings", "Failed", "Errors", "Skipped"],
            _summary_rows(data),
        )
    )

    checks: list[Mapping[str, Any]] = data["checks"]
    if not checks:
        out.append("<p>No checks ran.</p>")
    for tier in sorted({check["tier"] for check in checks}):
        in_tier = [check for check in checks if check["tier"] == tier]
        out.append(f'<h2 id="tier-{tier}">{_text(TIER_TITLES.get(tier, f"Tier {tier}"))}</h2>')
        header, rows = _check_rows(in_tier, by_check)
        out.append(_table(header, rows, css="checks"))
        for check in in_tier:
            plot = by_check.get((check["check_name"], check.get("model")))
            if plot is not None:
                out.append(_figure(plot))

    if data["not_run"]:
        out.append('<h2 id="not-run">Tests that did not run</h2><ul>')
        out.extend(f"<li><code>{_text(nodeid)}</code></li>" for nodeid in data["not_run"])
        out.append("</ul>")
    out.append('<h2 id="recommendations">Recommendations</h2>')
    if data["recommendations"]:
        out.append("<ol>")
        for item in data["recommendations"]:
            marker = CheckStatus(item["status"]).marker
            out.append(
                f'<li><span class="status s-{item["status"]}">{marker}</span> '
                f"<code>{_text(item['check_name'])}</code> (tier {item['tier']}): "
                f"<pre>{_text(item['message'])}</pre>Hint: {_text(item['hint'])}.</li>"
            )
        out.append("</ol>")
    else:
        out.append("<p>None: no check failed, errored or warned.</p>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def write_html(
    report: HealthReport, path: str | os.PathLike[str], *, plots_dir: str | None = PLOTS_DIR
) -> tuple[Path, list[Path]]:
    """Draw the plots, write the page to ``path`` and each plot to ``plots_dir`` beside it
    (``None``: no files). Everything is drawn before anything is written; each file is
    replaced atomically. Returns the page and the plot files."""
    from pytest_modeltiers.report.plots import draw_checks

    target = Path(path)
    if target.is_dir():
        raise ValueError(
            f"the HTML report path {target} is a directory; name a file in it, such as "
            f"{target / 'health.html'}"
        )
    plots = draw_checks(report.to_dict()["checks"])
    page = render_html(report, plots)
    written: list[Path] = []
    atomic_write_text(target, page)
    if plots_dir is not None:
        folder = target.parent / plots_dir
        for plot in plots:
            written.append(atomic_write_text(folder / f"{plot.key}.svg", plot.svg))
    return target, written


def summary_html(report: HealthReport) -> str:
    """One line of HTML with the score, the verdict and the counts (for other reports)."""
    word, css, _ = verdict_of(report)
    summary = report.summary
    return (
        f'<p class="modeltiers-score {css}"><strong>modeltiers health score '
        f"{_score_text(summary['health_score'])} / 100: {word}</strong> "
        f"({_text(_counts(summary))})</p>"
    )


def details_json(details: Mapping[str, Any]) -> str:
    """A check's details as indented JSON text (NaN and infinities written as strings)."""
    return dumps(dict(details), indent=2, ensure_ascii=False, sort_keys=True)
