"""Which tiers need which optional extra, and the usage error for a run that lacks one.

PYTEST_DONT_REWRITE

The core install runs tier 1; tiers 2 to 5 import libraries that only their extra installs.
A run that selects such a tier without them is refused before collection, with the ``pip``
command that installs what is missing, instead of failing test by test on an ImportError.
Only the standard library is imported: presence is tested with ``find_spec``, which imports
nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass

DISTRIBUTION = "pytest-modeltiers"


@dataclass(frozen=True)
class Extra:
    """An optional extra of the distribution and the top-level modules it installs."""

    name: str
    modules: tuple[str, ...]

    def missing(self) -> list[str]:
        return [module for module in self.modules if not _installed(module)]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # imported without a ``__spec__`` (optuna_integration's lazy module)
        return sys.modules.get(module) is not None


#: The extra each tier's suite needs beyond the core (tier 1 needs none). Tier 3 asks for
#: ``train`` as a whole: only its real training run imports Lightning, but a tier that runs
#: without one of its checks would score the model on less than it claims.
TIER_EXTRAS: dict[str, Extra] = {
    "tier2": Extra("analysis", ("captum",)),
    "tier3": Extra("train", ("lightning",)),
    "tier4": Extra("export", ("onnx", "onnxruntime", "onnxscript")),
    "tier5": Extra("monitor", ("scipy", "pandas")),
}


#: The extra of the HTML report's plots (``--modeltiers-html``, ``modeltiers report --html``).
REPORT_EXTRA = Extra("report", ("matplotlib",))

#: The extra of hyperparameter sweeps (``run_sweep``, ``modeltiers sweep``).
SWEEP_EXTRA = Extra("sweep", ("optuna", "optuna_integration"))


def feature_missing_error(extra: Extra, feature: str) -> str | None:
    """The error for using ``feature`` without the modules of ``extra``, naming them and the
    command that installs them; None when everything is installed."""
    missing = extra.missing()
    if not missing:
        return None
    return (
        f"{feature} needs {', '.join(missing)}, which is not installed; install the "
        f"[{extra.name}] extra with {install_command([extra.name])}"
    )


def tier_installed(tier: str) -> bool:
    """Whether everything ``tier``'s suite imports is installed."""
    extra = TIER_EXTRAS.get(tier)
    return extra is None or not extra.missing()


def install_command(extras: Iterable[str]) -> str:
    """The ``pip install`` command for ``extras`` (``[all]`` when that is every one of them)."""
    names = sorted(set(extras))
    if names == sorted(extra.name for extra in TIER_EXTRAS.values()):
        names = ["all"]
    return f"pip install '{DISTRIBUTION}[{','.join(names)}]'"


def missing_extras_error(
    selected: Iterable[str], tiers: Iterable[str], selection: str
) -> str | None:
    """The usage error when a tier in ``selected`` (what ``selection`` runs) lacks its extra,
    naming the missing modules, the command that installs them and the ``-m`` that runs the
    ``tiers`` this install has; None when nothing is missing.
    """
    missing = {tier: extra.missing() for tier, extra in TIER_EXTRAS.items()}
    lacking = [tier for tier in selected if missing.get(tier)]
    if not lacking:
        return None
    needs = "; ".join(
        f"{tier.replace('tier', 'tier ')} needs {', '.join(missing[tier])} "
        f"(the [{TIER_EXTRAS[tier].name}] extra)"
        for tier in lacking
    )
    runnable = " or ".join(tier for tier in tiers if not missing.get(tier))
    return (
        f"{selection} runs tiers whose libraries are not installed: {needs}. Install them with "
        f"{install_command(TIER_EXTRAS[tier].name for tier in lacking)}, or run only the tiers "
        f"this install has, with -m '{runnable}'"
    )
