"""The session's options as one frozen, typed object, built once when pytest is configured.

PYTEST_DONT_REWRITE

``Settings`` has one attribute per option of ``options.OPTIONS``, named as the option's ini key
without its ``modeltiers_`` prefix (``modeltiers_max_batch_size`` -> ``max_batch_size``), so a
misspelt name is an ``AttributeError`` (and a mypy error) rather than a silent ``None``. A test
keeps the attributes and the option table in step. Options given several times hold tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_modeltiers.options import OPTIONS, OptionValueError, default_profile, resolve_value

__all__ = ["SETTINGS_KEY", "Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option's effective value: command line over ini file over default, parsed."""

    model: tuple[str, ...]
    task: str | None
    task_options: tuple[str, ...]
    adapter: str | None
    trust_model: bool
    #: auto, on or off; None when not given (off, without the header's warning).
    sandbox: str | None
    model_sha256: str | None
    #: The download cache (gists); None: the default under ``$XDG_CACHE_HOME`` or ``~/.cache``.
    cache_dir: str | None
    #: Never None: without the option, ``ci`` under CI (``CI=true``), else ``fast``.
    profile: str
    timeout: float
    max_batch_size: int
    overfit_steps: int | None
    expect_no_grad: tuple[str, ...]
    memory_budget: float | None
    latency_budget: float | None
    report: str | None
    html: str | None
    fail_under: float | None
    #: auto (GitHub Actions job summary and annotations when GITHUB_ACTIONS=true) or off.
    github: str
    eval_data: str | None
    eval_config: str | None
    current_data: str | None
    #: A run id, ``latest`` or a run name; the session replaces it with the id it resolves to.
    baseline_run: str | None
    reference_profile: str | None
    regression_tolerance: float
    drift_alpha: float
    registry: str | None
    retraining_policy: str
    retraining_gate: str | None
    require: tuple[str, ...]
    experiment_db: str | None
    export_formats: tuple[str, ...]
    export_dir: str | None
    export_tolerance: tuple[str, ...]
    export_quantization: str
    export_onnx_exporter: str
    export_latency_budget: float | None
    tier2_min_agreement: float | None
    tier2_min_radius: float | None
    tier2_max_dead_heads: float | None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """The settings of a pytest run; a bad value is a usage error naming the option."""
        try:
            return cls.from_sources(config.getoption, config.getini)
        except OptionValueError as exc:
            raise pytest.UsageError(str(exc)) from None

    @classmethod
    def from_values(cls, command_line: Mapping[str, Any]) -> Settings:
        """The settings of a command without an ini file (``modeltiers inspect``).

        ``command_line`` holds the values as given, keyed by ``Option.dest`` (an argparse
        namespace's ``vars``); a missing key is an option not given. Raises ``OptionValueError``.
        """
        return cls.from_sources(command_line.get, lambda _name: None)

    @classmethod
    def from_sources(
        cls, command_line: Callable[[str], Any], ini: Callable[[str], Any]
    ) -> Settings:
        """Resolve every option from its command-line value (by dest) and ini value (by name)."""
        resolved: dict[str, Any] = {}
        for option in OPTIONS:
            value = resolve_value(option, command_line(option.dest), ini(option.ini_name))
            resolved[option.attribute] = tuple(value) if option.multiple else value
        if resolved["profile"] is None:
            resolved["profile"] = default_profile()
        return cls(**resolved)

    def as_options(self) -> dict[str, Any]:
        """The values keyed by option destination, as the ``modeltiers_options`` fixture serves
        them (lists for options given several times)."""
        options: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(self, option.attribute)
            options[option.dest] = list(value) if option.multiple else value
        return options


#: Where the session's ``Settings`` live in ``config.stash`` for code that has the pytest
#: config but no fixture (``pytest_generate_tests``, the rerun command of a failed check).
SETTINGS_KEY = pytest.StashKey[Settings]()
