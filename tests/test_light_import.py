"""The plugin loads in every pytest run of every project: it must not import heavy packages.

The check runs a real session in a subprocess and reads ``sys.modules`` in the last hook that
runs (``pytest_unconfigure``), so imports made by late hooks (header, terminal summary) count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "scipy", "lightning", "onnx", "onnxruntime", "pandas", "hypothesis")

RECORDER = """
import json, sys

def pytest_unconfigure(config):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def _modules_after_session(pytester: pytest.Pytester, *args: str) -> set[str]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    return set(json.loads(pytester.path.joinpath("modules.json").read_text()))


def test_session_without_model_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    """Compared with the same session with the plugin disabled: other installed plugins
    (Hypothesis' own, for one) may import their package, but ours adds nothing heavy."""
    pytester.makeconftest(RECORDER)
    pytester.makepyfile("def test_trivial():\n    assert True\n")
    with_plugin = _modules_after_session(pytester)
    without_plugin = _modules_after_session(pytester, "-p", "no:modeltiers")
    assert "pytest_modeltiers.plugin" in with_plugin, "the plugin was not loaded at all"
    assert "pytest_modeltiers.plugin" not in without_plugin
    added = sorted(m for m in with_plugin - without_plugin if m.split(".")[0] in HEAVY)
    assert not added, f"the plugin made a plain pytest run import: {added[:10]}"


def test_package_import_is_light() -> None:
    code = (
        "import sys, pytest_modeltiers, pytest_modeltiers.plugin; "
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names_load_on_first_use() -> None:
    code = (
        "import pytest_modeltiers as m; "
        "from pytest_modeltiers import TrainingConfigBuilder, TaskSpec, EvalConfig, "
        "build_configs_for_mode, TrainingConfig; import sys; print('torch' in sys.modules); "
        "m.get_adapter; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
