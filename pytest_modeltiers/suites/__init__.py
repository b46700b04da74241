"""The built-in tier suites: thin pytest modules that draw inputs, call a check, and assert.

The plugin collects them from here, whatever the user's rootdir or ``testpaths``, under node ids
``modeltiers/<module>::<test>`` (the package's install path would make ids unreadable).

Each suite module ``tierN.py`` marks all its tests ``tierN`` and nothing else carries a tier
marker, so ``-m`` decides which tiers a run can select before any suite is imported: the
extras those tiers need are checked then, and the start-up pre-filter leaves the other modules
unimported. This module imports only the standard library and pytest: the plugin loads it in
every run.
"""

from __future__ import annotations

from pathlib import Path

from pytest_modeltiers.extras import tier_installed
from pytest_modeltiers.startup import import_suite, may_select

SUITES_DIR = Path(__file__).parent
NODEID_PREFIX = "modeltiers/"
SUITE_TIERS = ("tier1", "tier2", "tier3", "tier4", "tier5")


def selected_tiers(markexpr: str = "") -> list[str]:
    """The tiers whose tests ``-m markexpr`` can select (all of them without ``-m``)."""
    return [tier for tier in SUITE_TIERS if may_select(markexpr, tier)]


def suite_paths(markexpr: str = "") -> list[Path]:
    """The suite modules to collect for ``-m markexpr``.

    A tier whose extra is missing is never imported: when ``-m`` can select it the run has
    already been refused (``missing_extras_error``), so here it is one that ``-m`` rules out.
    """
    return [
        SUITES_DIR / f"{tier}.py"
        for tier in SUITE_TIERS
        if import_suite(markexpr, tier) and tier_installed(tier)
    ]


def is_suite_nodeid(nodeid: str) -> bool:
    return nodeid.startswith(NODEID_PREFIX)
