"""Exceptions and the warning category shared by the whole package.

PYTEST_DONT_REWRITE

Every error a user can cause is a ``ModelTiersError`` whose message says what is wrong, why,
and how to fix it. The plugin turns the ones raised while resolving ``--model`` into
``pytest.UsageError`` (exit code 4), so a broken model file never becomes an INTERNALERROR.
"""

from __future__ import annotations

import pytest


class ModelTiersError(Exception):
    """Base class of every error this package raises on bad user input."""


class ModelSpecError(ModelTiersError):
    """The model spec (``--model``) cannot be resolved to an ``nn.Module``."""


class UnsafeModelError(ModelSpecError):
    """The safety scan refused a model file before any of it ran."""


class TaskSpecError(ModelTiersError, ValueError):
    """A task description is invalid; the message names the field and the expected form."""


class ConfigError(ModelTiersError, ValueError):
    """A training or evaluation config is invalid; the message names the field."""


class AdapterError(ModelTiersError):
    """An adapter cannot call the model or read its outputs."""


class ModelTiersWarning(pytest.PytestWarning):
    """Warnings from pytest-modeltiers.

    Filter them with ``-W ignore::pytest_modeltiers.ModelTiersWarning``.
    """
