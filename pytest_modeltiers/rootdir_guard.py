"""Catch a path given to one of our options that moved pytest's rootdir or configuration file.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import inspect
import itertools
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest


def check_setup(config: pytest.Config, flags: Iterable[str]) -> str | None:
    """Raise ``pytest.UsageError`` when a value given to one of ``flags`` changed pytest's
    configuration file; return a header note when it changed only the rootdir, else ``None``.
    """
    culprit = _separate_path_value(config, set(flags))
    if culprit is None:
        return None
    expected = _setup_without_option_values(config)
    if expected is None:
        return None
    rootdir, inipath = expected
    flag, value = culprit
    if inipath != config.inipath:
        raise pytest.UsageError(
            f"{flag} {value} changed pytest's configuration: it read "
            f"{_describe(config.inipath)} (rootdir {config.rootpath}) instead of "
            f"{_describe(inipath)}, because pytest reads an option's value given as a separate "
            f"argument as a test path before plugins load. Write {flag}={value} (one argument, "
            "with '='), or pass -c and --rootdir."
        )
    if rootdir != config.rootpath:
        return (
            f"rootdir is {config.rootpath}, not {rootdir}, because of {flag} {value}; write "
            f"{flag}={value} to keep {rootdir}"
        )
    return None


def _describe(inipath: Path | None) -> str:
    return str(inipath) if inipath is not None else "no configuration file"


def _separate_path_value(config: pytest.Config, flags: set[str]) -> tuple[str, str] | None:
    """The first of ``flags`` given with an existing path as the next, separate argument."""
    args = _raw_args(config)
    here = config.invocation_params.dir
    for flag, value in itertools.pairwise(args):
        if flag in flags and not value.startswith("-"):
            path = Path(value.split("::")[0])
            if not path.is_absolute():
                path = here / path
            try:
                exists = path.exists()
            except OSError:
                exists = False
            if exists:
                return flag, value
    return None


def _raw_args(config: pytest.Config) -> list[str]:
    """The arguments pytest's early parse saw: ``PYTEST_ADDOPTS`` first, then the command line."""
    extra = os.environ.get("PYTEST_ADDOPTS", "")
    try:
        env_args = shlex.split(extra)
    except ValueError:
        env_args = []
    return [*env_args, *(str(arg) for arg in config.invocation_params.args)]


def _setup_without_option_values(config: pytest.Config) -> tuple[Path, Path | None] | None:
    """pytest's rootdir and configuration file from the positional arguments alone.

    Uses pytest's own ``determine_setup``; when its signature is not one this module knows (a
    future pytest), the check is skipped rather than guessed.
    """
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:
        return None
    option = config.option
    kwargs: dict[str, Any] = {
        "inifile": getattr(option, "inifilename", None),
        "args": _positional_args(getattr(option, "file_or_dir", None)),
        "rootdir_cmd_arg": getattr(option, "rootdir", None) or None,
        "invocation_dir": config.invocation_params.dir,
    }
    parameters = inspect.signature(determine_setup).parameters
    if "override_ini" in parameters:
        kwargs["override_ini"] = getattr(option, "override_ini", None)
    if any(name not in parameters for name in kwargs):
        return None
    try:
        result = determine_setup(**kwargs)
    except Exception:  # pytest reports its own setup problems; this check only compares
        return None
    return Path(result[0]), (Path(result[1]) if result[1] is not None else None)


def _positional_args(file_or_dir: Sequence[str] | None) -> list[str]:
    return [str(arg) for arg in (file_or_dir or [])]
