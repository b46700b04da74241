"""Reproducibility bundles: one zip that holds everything needed to rerun a training run.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from pytest_modeltiers.repro.bundle import ReproBundleError, create_repro_bundle
from pytest_modeltiers.repro.verify import BundleVerification, verify_repro_bundle

__all__ = [
    "BundleVerification",
    "ReproBundleError",
    "create_repro_bundle",
    "verify_repro_bundle",
]
