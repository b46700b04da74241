"""The run state of one pytest session: resolved options and the models they name.

PYTEST_DONT_REWRITE

One ``ModelTiersSession`` lives in ``config.stash``. It reads the options once, loads each
model when the session starts (a broken model file becomes a ``pytest.UsageError`` naming the
problem and the fix, never an INTERNALERROR), and keeps the loaded models for the fixtures.
Only the standard library and pytest are imported at module level; the model loader, which
needs torch, is imported when a model is actually named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.options import (
    MODEL_FLAG,
    OPTIONS,
    OptionValueError,
    default_profile,
    option_named,
    resolve_value,
)

if TYPE_CHECKING:
    from pytest_modeltiers.models.loader import LoadedModel

SESSION_KEY = pytest.StashKey["ModelTiersSession"]()


@dataclass
class ModelTiersSession:
    """Options of this run and the models loaded for it, keyed by their display name."""

    values: dict[str, Any]
    rootdir: Path
    model_flag_taken: bool = False
    models: dict[str, LoadedModel] = field(default_factory=dict)
    previous_profile: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config, *, model_flag_taken: bool) -> ModelTiersSession:
        values: dict[str, Any] = {}
        for option in OPTIONS:
            try:
                values[option.dest] = resolve_value(
                    option, config.getoption(option.dest), config.getini(option.ini_name)
                )
            except OptionValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        if values["modeltiers_profile"] is None:
            values["modeltiers_profile"] = default_profile()
        return cls(values=values, rootdir=config.rootpath, model_flag_taken=model_flag_taken)

    @property
    def model_specs(self) -> list[str]:
        specs: list[str] = self.values["modeltiers_model"]
        return specs

    @property
    def model_keys(self) -> list[str]:
        return list(self.models)

    @property
    def timeout(self) -> float:
        seconds: float = self.values["modeltiers_timeout"]
        return seconds

    def start(self) -> None:
        """Load every named model; a problem with one is a usage error that names the fix."""
        if not self.model_specs:
            return
        from pytest_modeltiers.models.loader import LoadRequest, load_model
        from pytest_modeltiers.profiles import load_profile

        self.previous_profile = load_profile(self.values["modeltiers_profile"])
        for spec in self.model_specs:
            request = LoadRequest.from_options(spec, self.values, self.rootdir)
            try:
                loaded = load_model(request)
            except ModelTiersError as exc:
                raise pytest.UsageError(f"--model {spec}: {exc}") from None
            self.models[self._unique_key(loaded.name)] = loaded

    def stop(self) -> None:
        """Give back what ``start`` changed in the process (the active Hypothesis profile)."""
        if self.previous_profile is not None:
            from pytest_modeltiers.profiles import restore_profile

            restore_profile(self.previous_profile)
            self.previous_profile = None

    def _unique_key(self, name: str) -> str:
        key, n = name, 2
        while key in self.models:
            key, n = f"{name}-{n}", n + 1
        return key

    def model(self, key: str | None) -> LoadedModel:
        """The loaded model for ``key`` (the only one when ``key`` is None)."""
        if not self.models:
            raise ModelTiersError(
                "no model to test: name one with --model path/to/model.py "
                "(or --modeltiers-model, or the ini option modeltiers_model)"
            )
        if key is None:
            return next(iter(self.models.values()))
        return self.models[key]

    def header_lines(self) -> list[str]:
        lines = []
        if self.model_flag_taken:
            lines.append(
                f"modeltiers: {MODEL_FLAG} is defined by conftest.py or another plugin; "
                f"name models with {option_named('modeltiers_model').display}"
            )
        for key, loaded in self.models.items():
            lines.extend(f"modeltiers: {line}" for line in loaded.describe(key))
        if self.models:
            lines.append(
                f"modeltiers: profile {self.values['modeltiers_profile']}, "
                f"timeout {self.timeout:g} s, CI={os.environ.get('CI', 'unset')}"
            )
        return lines
