"""Optional extras: a run that selects a tier whose libraries are missing is refused at once.

The missing libraries are simulated by a conftest.py that sets ``sys.modules[name] = None``, which
makes both ``import name`` and ``importlib.util.find_spec(name)`` see no such module; a real
core-only install is exercised in test_packaging.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib

from pytest_modeltiers.extras import (
    REPORT_EXTRA,
    SWEEP_EXTRA,
    TIER_EXTRAS,
    install_command,
    missing_extras_error,
)
from pytest_modeltiers.startup import OPT_OUT_VARIABLE

REPO = Path(__file__).resolve().parents[1]
TINY_GPT = REPO / "example_models" / "tiny_gpt.py"
ALL_TIERS = ("tier1", "tier2", "tier3", "tier4", "tier5")
EXTRA_MODULES = sorted({module for extra in TIER_EXTRAS.values() for module in extra.modules})

_IMPORTED_SUITES_PROBE = """
import sys


def pytest_collection_finish(session):
    print("suites imported:", sorted(
        name.rsplit(".", 1)[1] for name in sys.modules
        if name.startswith("pytest_modeltiers.suites.tier")
    ))
"""


def without(pytester: pytest.Pytester, *modules: str, probe: str = "") -> None:
    """A conftest.py under which ``modules`` look uninstalled."""
    hidden = "".join(f"sys.modules[{module!r}] = None\n" for module in modules)
    pytester.makeconftest(f"import sys\n\n{hidden}{probe}")


def test_pyproject_extras_install_what_each_tier_needs() -> None:
    """The table the usage error reads and the extras pip installs are the same lists."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra in TIER_EXTRAS.values():
        names = sorted(
            requirement.split(">")[0].split("=")[0] for requirement in extras[extra.name]
        )
        assert names == sorted(extra.modules), extra.name
    core = {requirement.split(">")[0] for requirement in project["dependencies"]}
    assert core == {"pytest", "torch", "numpy", "hypothesis", "safetensors"}
    assert not core & set(EXTRA_MODULES)
    features = {REPORT_EXTRA.name, SWEEP_EXTRA.name, "tracking"}  # not tied to a tier
    every = ",".join(sorted({extra.name for extra in TIER_EXTRAS.values()} | features))
    assert extras["all"] == [f"pytest-modeltiers[{every}]"]
    for extra in (REPORT_EXTRA, SWEEP_EXTRA):
        names = sorted(r.split(">")[0].replace("-", "_") for r in extras[extra.name])
        assert names == sorted(extra.modules), extra.name


def test_install_command_names_every_extra_as_all() -> None:
    assert install_command(["export"]) == "pip install 'pytest-modeltiers[export]'"
    assert install_command(["train", "export"]) == "pip install 'pytest-modeltiers[export,train]'"
    every = ["analysis", "monitor", "train", "export"]
    assert install_command(every) == "pip install 'pytest-modeltiers[all]'"


def test_nothing_missing_is_no_error() -> None:
    assert missing_extras_error(ALL_TIERS, ALL_TIERS, "-m tier4") is None


def test_a_missing_module_names_its_tier_extra_and_what_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert missing_extras_error(["tier1", "tier3"], ALL_TIERS, "-m 'tier1 or tier3'") is None
    error = missing_extras_error(["tier4"], ALL_TIERS, "-m tier4")
    assert error == (
        "-m tier4 runs tiers whose libraries are not installed: tier 4 needs onnxscript (the "
        "[export] extra). Install them with pip install 'pytest-modeltiers[export]', or run only "
        "the tiers this install has, with -m 'tier1 or tier2 or tier3 or tier5'"
    )


def test_a_tier_run_without_its_extra_is_one_usage_error_before_collection(
    pytester: pytest.Pytester,
) -> None:
    without(pytester, "onnxscript")
    result = pytester.runpytest_subprocess(f"--model={TINY_GPT}", "-m", "tier4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: -m tier4 runs tiers whose libraries are not installed: tier 4 needs "
            "onnxscript (the [export] extra). Install them with "
            "pip install 'pytest-modeltiers[export]', or run only the tiers this install has, "
            "with -m 'tier1 or tier2 or tier3 or tier5'"
        ]
    )
    assert "collected" not in result.stdout.str()


def test_every_tier_without_extras_asks_for_all(pytester: pytest.Pytester) -> None:
    """Without -m a model run is every tier, so a core install is told what to add or select."""
    without(pytester, *EXTRA_MODULES)
    result = pytester.runpytest_subprocess(f"--model={TINY_GPT}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --model without -m (every tier) runs tiers whose libraries are not installed: "
            "tier 2 needs captum (the [analysis] extra); tier 3 needs lightning (the [train] "
            "extra); tier 4 needs onnx, onnxruntime, "
            "onnxscript (the [export] extra); tier 5 needs scipy, pandas (the [monitor] extra). "
            "Install them with pip install 'pytest-modeltiers[all]', or run only the tiers this "
            "install has, with -m 'tier1'"
        ]
    )


@pytest.mark.parametrize("tricks_off", [False, True])
def test_tier1_runs_without_any_extra(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tricks_off: bool
) -> None:
    """A core install runs tier 1, with the start-up tricks on or off: a suite whose extra is
    missing is never imported when -m rules it out."""
    if tricks_off:
        monkeypatch.setenv(OPT_OUT_VARIABLE, "1")
    without(pytester, *EXTRA_MODULES, probe=_IMPORTED_SUITES_PROBE)
    result = pytester.runpytest_subprocess("-s", "--co", f"--model={TINY_GPT}", "-m", "tier1")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["suites imported: [[]'tier1'[]]", "*tests collected*"])


def test_a_run_without_model_needs_no_extra(pytester: pytest.Pytester) -> None:
    """Projects that only have the plugin installed are not affected by what it lacks."""
    without(pytester, *EXTRA_MODULES)
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-m", "tier4 or not tier4")
    result.assert_outcomes(passed=1)


def test_an_expression_that_can_select_a_tier_counts_it(pytester: pytest.Pytester) -> None:
    """Whatever the expression, a tier it can select needs its extra (-k is not read)."""
    without(pytester, "lightning")
    result = pytester.runpytest_subprocess(f"--model={TINY_GPT}", "-m", "not tier1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: -m 'not tier1' runs tiers whose libraries are not installed: tier 3 needs "
            "lightning (the [train] extra). Install them with "
            "pip install 'pytest-modeltiers[train]', or run only the tiers this install has, "
            "with -m 'tier1 or tier2 or tier4 or tier5'"
        ]
    )
