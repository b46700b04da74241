"""Take the README's picture of the HTML report: a real browser's screenshots of the page.

Renders the committed five-tier report (``fixtures/html/five_tiers.json``) with ``write_html``,
opens it in headless Chromium through Playwright (Playwright's own Chromium when it is
installed, else the system's: Debian's ``chromium`` or Google Chrome) and stacks two shots of
the one page: its top (score, verdict, models, summary by tier) and the plot of the failing
check (``test_input_drift``).

Usage:

    .venv/bin/python tools/screenshot_html_report.py [--out docs/img/health-report.png]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from chromium import launch_chromium  # tools/chromium.py, beside this script

from pytest_modeltiers.report import HealthReport
from pytest_modeltiers.report.html import write_html

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "fixtures" / "html" / "five_tiers.json"
#: The plot of the report's failing check, by its key (``plots.Plot.key``).
FAILING_PLOT = "tier5-test_input_drift-tiny_gpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "health-report.png")
    parser.add_argument("--width", type=int, default=1000, help="viewport width in CSS pixels")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        page_path, _ = write_html(HealthReport.read(REPORT), Path(tmp) / "health.html")
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(page_path.as_uri())
            tier_1 = page.locator("#tier-1").bounding_box()
            assert tier_1 is not None, "the page has no tier 1 heading"
            top = page.screenshot(clip={"x": 0, "y": 0, "width": args.width, "height": tier_1["y"]})
            plot = page.locator(f"figure#plot-{FAILING_PLOT}").screenshot()
            version = browser.version
        finally:
            browser.close()
    _stack([top, plot], args.out)
    print(f"wrote {args.out} ({args.width} px wide, Chromium {version})")


def _stack(shots: list[bytes], out: Path) -> None:
    """The screenshots one above the other, on white, as one PNG."""
    from PIL import Image

    images = [Image.open(io.BytesIO(shot)).convert("RGB") for shot in shots]
    width = max(image.width for image in images)
    canvas = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    main()
