"""The built-in tier suites: thin pytest modules that draw inputs, call a check, and assert.

The plugin collects them from here, whatever the user's rootdir or ``testpaths``, under node ids
``modeltiers/<module>::<test>`` (the package's install path would make ids unreadable).
"""

from __future__ import annotations

from pathlib import Path

SUITES_DIR = Path(__file__).parent
NODEID_PREFIX = "modeltiers/"
SUITE_MODULES = ("tier1.py", "tier3.py")


def suite_paths() -> list[Path]:
    return [SUITES_DIR / name for name in SUITE_MODULES]


def is_suite_nodeid(nodeid: str) -> bool:
    return nodeid.startswith(NODEID_PREFIX)
