"""Process-wide tricks that shorten a run, and the one switch that turns them all off.

PYTEST_DONT_REWRITE

What each saves on ``pytest --model=tiny_gpt.py -m tier1`` (2.0 s with all four; a ``pip
install '.[all]'`` venv on a 2-core machine, medians of 11 runs): taking this package and
Hypothesis off pytest's assertion-rewriting list 0.56 s (0.67 s with PYTHONDONTWRITEBYTECODE=1);
importing torch and Hypothesis with the garbage collector paused 0.15 s; freezing the loaded
heap for the session and at exit 0.37 s; leaving unimported the suites ``-m`` cannot select
0.83 s. With all four off the run takes 4.9 s. They change how fast a run is, never what it
checks. ``PYTEST_MODELTIERS_NO_STARTUP_TRICKS=1`` in the environment turns every one of them
off. Only the standard library is imported here: the package imports this module first.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import itertools
import os
import re
import sys
from collections.abc import Callable, Generator

OPT_OUT_VARIABLE = "PYTEST_MODELTIERS_NO_STARTUP_TRICKS"


def enabled() -> bool:
    """Whether the tricks apply: unless the opt-out variable is set to anything but 0."""
    return os.environ.get(OPT_OUT_VARIABLE, "0").strip() in {"", "0"}


# -- assertion rewriting -------------------------------------------------------------------


def exempt_from_assertion_rewriting(hook: object, packages: tuple[str, ...]) -> None:
    """Take ``packages`` (and any of their modules marked alone) off the list of modules pytest's
    assertion-rewriting hook rewrites.

    pytest rewrites every module of a package that declares a ``pytest11`` entry point, as if it
    were test code: it parses and recompiles each one and caches the result next to the source,
    so where bytecode cannot be written (``PYTHONDONTWRITEBYTECODE=1``, common in CI images, or a
    read-only site-packages) that work is repeated by every pytest run. A hook without the
    marked set (another pytest version, ``--assert=plain``) is left alone.
    """
    marked = getattr(hook, "_must_rewrite", None)
    if not enabled() or not isinstance(marked, set):
        return
    prefixes = tuple(f"{package}." for package in packages)
    marked.difference_update(
        {name for name in marked if name in packages or name.startswith(prefixes)}
    )
    cache = getattr(hook, "_marked_for_rewrite_cache", None)
    if isinstance(cache, dict):
        cache.clear()


def active_rewrite_hook() -> object | None:
    """pytest's assertion-rewriting import hook, when pytest is importing this package."""
    return next(
        (finder for finder in sys.meta_path if type(finder).__name__ == "AssertionRewritingHook"),
        None,
    )


def exempt_hypothesis(rewrite_hook: object) -> None:
    """Let Hypothesis import as plain Python, not as rewritten test code.

    pytest marks Hypothesis for rewriting because it ships a pytest plugin: some 120 modules
    parsed and rewritten when the suites import it, on every run where bytecode cannot be
    cached. Hypothesis holds no user tests, so nothing is lost; only runs with ``--model``
    call this.
    """
    exempt_from_assertion_rewriting(rewrite_hook, ("hypothesis",))


# -- the garbage collector -----------------------------------------------------------------


@contextlib.contextmanager
def collector_paused() -> Generator[bool, None, None]:
    """Import the libraries of a run (torch, Hypothesis) with the cyclic collector paused, and
    freeze them; yields whether it does (not with the tricks off).

    Importing torch allocates some 165,000 long-lived objects, and the collector, triggered by
    the allocations, scans them again and again while they load (some 370 collections). Paused,
    the import leaves 0.7 MB of cyclic garbage, frozen with the rest rather than collected. Only
    library imports run here: the user's model file and ``build_model`` run with the collector
    on, so garbage they make in cycles is collected as usual.
    """
    if not enabled():
        yield False
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield True
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def freeze_heap() -> bool:
    """Move what is alive now (torch, Hypothesis, the models) out of the collector's sight for
    the session, and again at interpreter exit; whether it did (``thaw_heap`` undoes it).

    They stay loaded for the whole session, so every collection the session makes (pytest's
    own at the end included) would scan them for nothing. Garbage made by the tests is
    collected as usual.
    """
    if not enabled():
        return False
    gc.freeze()
    _freeze_heap_at_exit()
    return True


def thaw_heap() -> None:
    """Give the frozen heap back to the collector (after pytest's last collection)."""
    gc.unfreeze()


@functools.cache
def _freeze_heap_at_exit() -> None:
    """At interpreter exit, freeze the heap so that shutdown's garbage collections skip it.

    Python's shutdown runs full collections over every object still alive, with torch loaded
    a sizeable part of a short run, spent after the last test. Reference counting still frees
    everything modules hold, so files are flushed and ``__del__`` methods run as before; only
    garbage already in a reference cycle at exit is left to the operating system, and Python
    never promised to finalise that. ``atexit`` handlers run only when the interpreter ends, so
    a process that goes on after ``pytest.main()`` keeps its normal collector. Registered once
    per process (cached).
    """
    atexit.register(gc.freeze)


# -- the marker-expression pre-filter ------------------------------------------------------

_TIER_MARKER = re.compile(r"tier\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.:-]*")
#: Beyond this many other marker names in ``-m``, every tier may be selected (2**N evaluations).
_MAX_OTHER_NAMES = 8


def import_suite(markexpr: str, tier: str) -> bool:
    """Whether to import the suite module of ``tier``: the pre-filter leaves out the ones
    ``-m markexpr`` cannot select (seconds of onnx, scipy and pandas imports for ``-m tier1``);
    with the tricks off every module is imported and pytest's ``-m`` deselects their tests."""
    return not enabled() or may_select(markexpr, tier)


def may_select(markexpr: str, tier: str) -> bool:
    """Whether some test marked ``tier`` (and any other markers) can satisfy ``markexpr``.

    Tier names are decided (a test has its own tier and no other); every other marker name in
    the expression may be present or not, so the tier is ruled out only when no combination of
    them selects it. When in doubt (an expression pytest will reject, a pytest without the
    expression API, a very long expression) the answer is yes and pytest decides.
    """
    if not markexpr:
        return True
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
