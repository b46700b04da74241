"""The built-in tier suites: thin pytest modules that draw inputs, call a check, and assert.

The plugin collects them from here, whatever the user's rootdir or ``testpaths``, under node ids
``modeltiers/<module>::<test>`` (the package's install path would make ids unreadable).

Each suite module ``tierN.py`` marks all its tests ``tierN`` and nothing else carries a tier
marker, so ``-m`` can rule a whole module out before it is imported: ``-m tier1`` then never
imports tier 4's exporters or tier 5's statistics (seconds of onnx, scipy and pandas imports).
This module imports only the standard library and pytest: the plugin loads it in every run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

SUITES_DIR = Path(__file__).parent
NODEID_PREFIX = "modeltiers/"
SUITE_MODULES = ("tier1.py", "tier3.py", "tier4.py", "tier5.py")


_TIER_MARKER = re.compile(r"tier\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.:-]*")
#: Beyond this many other marker names in ``-m``, every suite is collected (2**N evaluations).
_MAX_OTHER_NAMES = 8


def suite_paths(markexpr: str = "") -> list[Path]:
    """The suite modules whose tests ``-m markexpr`` can select (all of them without ``-m``)."""
    return [
        SUITES_DIR / name
        for name in SUITE_MODULES
        if not markexpr or _may_select(markexpr, Path(name).stem)
    ]


def _may_select(markexpr: str, tier: str) -> bool:
    """Whether some test marked ``tier`` (and any other markers) can satisfy ``markexpr``.

    Tier names are decided (a test has its own tier and no other); every other marker name in
    the expression may be present or not, so the module is ruled out only when no combination
    of them selects it. When in doubt (an expression pytest will reject, a pytest without the
    expression API, a very long expression) the module is collected and pytest decides.
    """
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(markexpr)
    except (ImportError, SyntaxError):
        return True
    others = sorted(
        {name for name in _IDENTIFIER.findall(markexpr) if not _TIER_MARKER.fullmatch(name)}
        - {"and", "or", "not"}
    )
    if len(others) > _MAX_OTHER_NAMES:
        return True
    for values in itertools.product((False, True), repeat=len(others)):
        if expression.evaluate(_matcher(tier, dict(zip(others, values, strict=True)))):
            return True
    return False


def _matcher(tier: str, others: dict[str, bool]) -> Callable[..., bool]:
    def matches(name: str, /, **kwargs: object) -> bool:
        if _TIER_MARKER.fullmatch(name):
            return name == tier and not kwargs
        return others.get(name, True)

    return matches


def is_suite_nodeid(nodeid: str) -> bool:
    return nodeid.startswith(NODEID_PREFIX)
