"""pytest hooks of pytest-modeltiers: options, markers, the session header, the run state.

This module is loaded by every pytest run in an environment where the package is installed, so
it imports only the standard library and pytest. Everything heavy (torch, the model) is loaded
by ``ModelTiersSession`` and only when a model is named.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from collections.abc import Generator
from typing import Any

import pytest

from pytest_modeltiers import fixtures, rootdir_guard, startup
from pytest_modeltiers.extras import missing_extras_error
from pytest_modeltiers.options import MODEL_FLAG, OPTIONS
from pytest_modeltiers.session import (
    SESSION_KEY,
    ModelTiersSession,
    misspelt_tier_marker,
    registered_markers,
)
from pytest_modeltiers.suites import SUITE_TIERS, selected_tiers

MARKERS = {
    "tier1": "tier 1 (wiring): shapes, gradients, stability, batch independence, masking, init",
    "tier2": "tier 2 (analysis): attention maps, attribution completeness, robustness",
    "tier3": "tier 3 (training): overfit one batch, accumulation, resume, seeds, a real run",
    "tier4": "tier 4 (export): ONNX, torch.export, TorchScript parity, latency, health report",
    "tier5": "tier 5 (monitoring): evaluation, baseline regression, drift, retraining triggers",
}

_MODEL_FLAG_TAKEN = pytest.StashKey[bool]()
_ROOTDIR_NOTE = pytest.StashKey["str | None"]()
#: The session whose frozen heap the cleanup registered in ``pytest_load_initial_conftests``
#: gives back; absent when that cleanup was never registered.
_HEAP_OWNER = pytest.StashKey["ModelTiersSession | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modeltiers", "pytest-modeltiers: validate PyTorch models in tiers")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help}
        if option.flag:
            kwargs["action"] = "store_true"
            kwargs["default"] = None
        else:
            kwargs["metavar"] = option.metavar
            if option.multiple:
                kwargs["action"] = "append"
        group.addoption(*option.flags, **kwargs)
        if option.multiple:
            parser.addini(option.ini_name, help=option.help, type="linelist")
        elif option.flag:
            parser.addini(option.ini_name, help=option.help, type="bool")
        else:
            parser.addini(option.ini_name, help=option.help, type="string")


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    """Add the short ``--model`` alias once the project's own conftest.py files are loaded.

    A project (or another plugin) that defines ``--model`` itself keeps it: the alias is left out
    and ``--modeltiers-model`` remains, which the session header then points out.
    """
    early_config.stash[_HEAP_OWNER] = None
    early_config.add_cleanup(functools.partial(_thaw_heap, early_config))
    result = yield
    try:
        parser.getgroup("modeltiers").addoption(
            MODEL_FLAG,
            dest="modeltiers_model",
            action="append",
            metavar="SPEC",
            help="alias of --modeltiers-model",
        )
    except argparse.ArgumentError:
        early_config.stash[_MODEL_FLAG_TAKEN] = True
    return result


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[_ROOTDIR_NOTE] = rootdir_guard.check_setup(config, _path_taking_flags(config))
    state = ModelTiersSession.from_config(
        config, model_flag_taken=config.stash.get(_MODEL_FLAG_TAKEN, False)
    )
    config.stash[SESSION_KEY] = state
    if _HEAP_OWNER in config.stash:
        config.stash[_HEAP_OWNER] = state
    config.pluginmanager.register(fixtures, "modeltiers-fixtures")
    config.pluginmanager.register(state, "modeltiers-session")
    if not (config.option.help or config.option.version):
        if config.option.markexpr and not hasattr(config, "workerinput"):
            error = misspelt_tier_marker(config.option.markexpr, registered_markers(config))
            if error is not None:
                raise pytest.UsageError(error)
        if state.model_specs:
            _check_extras(config.option.markexpr or "")
            startup.exempt_hypothesis(getattr(config.pluginmanager, "rewrite_hook", None))
        state.start(getattr(config, "workerinput", None))


def _check_extras(markexpr: str) -> None:
    """Refuse, before collection, a run whose tiers need an extra that is not installed."""
    selection = f"-m {shlex.quote(markexpr)}" if markexpr else "--model without -m (every tier)"
    error = missing_extras_error(selected_tiers(markexpr), SUITE_TIERS, selection)
    if error is not None:
        raise pytest.UsageError(error)


def _path_taking_flags(config: pytest.Config) -> list[str]:
    """Our flags that take a value (``--model`` too, unless the project defines its own)."""
    flags = [flag for option in OPTIONS if not option.flag for flag in option.flags]
    if not config.stash.get(_MODEL_FLAG_TAKEN, False):
        flags.append(MODEL_FLAG)
    return flags


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(SESSION_KEY, None)
    lines = state.header_lines() if state is not None else []
    note = config.stash.get(_ROOTDIR_NOTE, None)
    return [*lines, f"modeltiers: {note}"] if note else lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several models, every test that uses a model fixture runs once per model."""
    state = metafunc.config.stash[SESSION_KEY]
    if fixtures.MODEL_KEY_FIXTURE in metafunc.fixturenames and len(state.model_keys) > 1:
        metafunc.parametrize(
            fixtures.MODEL_KEY_FIXTURE, state.model_keys, ids=state.model_keys, scope="session"
        )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Last, so that pytest's own end-of-session garbage collection still sees a frozen heap."""
    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.stop()
        if _HEAP_OWNER not in config.stash:
            state.thaw_heap()
        config.pluginmanager.unregister(state)
        del config.stash[SESSION_KEY]


def _thaw_heap(config: pytest.Config) -> None:
    """Unfreeze the heap frozen by ``ModelTiersSession.start``, as the very last cleanup.

    Registered before any plugin is configured, so it runs after every later cleanup, pytest's
    unraisable-exception garbage collection (0.1 s on an unfrozen heap) included.
    """
    state = config.stash.get(_HEAP_OWNER, None)
    if state is not None:
        state.thaw_heap()
        config.stash[_HEAP_OWNER] = None
