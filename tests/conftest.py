"""Shared helpers for the project's tests."""

from __future__ import annotations

import os
from pathlib import Path

# Pytester's in-process runs restore ``sys.modules`` afterwards, dropping modules first imported
# inside them. A C extension such as torch cannot be imported twice in one process, and
# re-importing hypothesis and this package in every run costs seconds of assertion rewriting,
# so what model loading imports is imported here, before any in-process run.
import hypothesis
import pytest
import torch
import torch._dynamo  # noqa: F401  (registers torch ops once; a model may reach it in a run)

import pytest_modeltiers.checks.tier1
import pytest_modeltiers.checks.tier3
import pytest_modeltiers.models.loader
import pytest_modeltiers.profiles
import pytest_modeltiers.strategies
import pytest_modeltiers.suites.tier1
import pytest_modeltiers.suites.tier3  # noqa: F401
from pytest_modeltiers.threads import share_cpus_between_workers

# The machines are shared and noisy: a per-example deadline would turn load into flaky failures.
hypothesis.settings.register_profile("modeltiers-project-tests", deadline=None)
hypothesis.settings.load_profile("modeltiers-project-tests")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The in-process runs of the built-in suites are not xdist workers themselves, so this test
    # process applies the plugin's CPU sharing for them (see pytest_modeltiers.threads).
    share_cpus_between_workers(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture
def loader_models(pytester: pytest.Pytester) -> Path:
    """The loader fixture models (``fixtures/models``) copied into the pytester directory."""
    pytester.copy_example("models")
    return pytester.path
