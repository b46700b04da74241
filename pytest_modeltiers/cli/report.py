"""``modeltiers report health.json --html out.html``: a written health report as an HTML page.

PYTEST_DONT_REWRITE

The same page ``--modeltiers-html`` writes at the end of a session, made later from the JSON
(a CI artifact, a colleague's report): the score and verdict, the checks by tier, the plots,
and the plots again as ``plots/*.svg`` beside the page. A missing, corrupt or foreign file is
exit 2 with the reason, as ``modeltiers check-report`` says it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``report`` subcommand on ``commands`` (the parser's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="render a health report JSON as a self-contained HTML page with plots",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("report", type=Path, metavar="PATH", help="the --modeltiers-report file")
    parser.add_argument(
        "--html",
        type=Path,
        required=True,
        metavar="OUT",
        help="write the page here; its plots also go to plots/*.svg beside it",
    )
    parser.add_argument(
        "--no-plot-files",
        action="store_true",
        help="do not write the plots as separate SVG files (they are in the page anyway)",
    )
    return parser


def _error(message: str) -> int:
    print(f"modeltiers report: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Render ``args.report`` to ``args.html``; 0 when written, 2 with the reason otherwise."""
    from pytest_modeltiers.extras import REPORT_EXTRA, feature_missing_error
    from pytest_modeltiers.report.gate import GateVerdict, load_report

    missing = feature_missing_error(REPORT_EXTRA, "modeltiers report --html")
    if missing is not None:
        return _error(missing)
    loaded = load_report(args.report)
    if isinstance(loaded, GateVerdict):
        return _error("; ".join(loaded.lines))
    target: Path = args.html
    if target.is_dir():
        return _error(f"--html {target} is a directory; name a file in it, such as health.html")
    if target.absolute() == Path(args.report).absolute():
        return _error(f"--html {target} is the JSON report itself; give the page its own name")
    from pytest_modeltiers.report.html import PLOTS_DIR, write_html

    try:
        page, plots = write_html(
            loaded, target, plots_dir=None if args.no_plot_files else PLOTS_DIR
        )
    except OSError as exc:
        return _error(f"cannot write {target}: {exc}")
    where = f" and {len(plots)} plot(s) to {plots[0].parent}" if plots else ""
    print(f"modeltiers report: wrote {page}{where}")
    return EXIT_OK
