"""Exceptions and the warning category shared by the whole package.

PYTEST_DONT_REWRITE

Every error a user can cause is a ``ModelTiersError`` whose message says what is wrong, why,
and how to fix it. The plugin turns the ones raised while resolving ``--model`` into
``pytest.UsageError`` (exit code 4), so a broken model file never becomes an INTERNALERROR.
"""

from __future__ import annotations

import sys

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


def stacklevel_outside_package() -> int:
    """For ``warnings.warn`` in the calling function: the ``stacklevel`` of the first frame
    outside this package, so a warning names the user's line (a script, a notebook cell),
    however deep in the package it was raised."""
    package = __name__.partition(".")[0]
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module != package and not module.startswith(package + "."):
            break
        frame = frame.f_back
        level += 1
    return level
