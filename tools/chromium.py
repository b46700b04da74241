"""Headless Chromium for the project's browser checks: Playwright's own, else the system's.

Playwright downloads its own Chromium (``playwright install chromium``); where that download is
impossible, an operating system's Chromium serves (Debian's ``chromium``, which ``.ci/run``
installs, or Google Chrome on GitHub's runners). Used by the browser test of the HTML report
and by ``screenshot_html_report.py``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Headless on a machine with no network and no display, as root: no browser sandbox (the
#: kernel refuses it to root), and none of the browser's calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NO_CHROMIUM = (
    "no Chromium: `playwright install chromium`, or the system's (Debian: "
    "apt-get install chromium, which .ci/run does)"
)


def chromium_executable(playwright: Any) -> str | None:
    """None when Playwright has its own Chromium, else a system Chromium's path; LookupError
    (saying how to install one) when there is neither."""
    if os.path.exists(playwright.chromium.executable_path):
        return None
    for name in SYSTEM_CHROMIUMS:
        found = shutil.which(name)
        if found is not None:
            return found
    raise LookupError(NO_CHROMIUM)


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser (Playwright's ``Browser``)."""
    return playwright.chromium.launch(
        executable_path=chromium_executable(playwright), args=CHROMIUM_ARGS
    )
