"""The core install, as a team that only wants tier 1 gets it: ``pip install pytest-modeltiers``
in a fresh venv, with none of the extras' libraries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modeltiers.extras import TIER_EXTRAS

REPO = Path(__file__).resolve().parents[1]
EXTRA_MODULES = sorted({module for extra in TIER_EXTRAS.values() for module in extra.modules})


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTEST_ADDOPTS"}}
    env["PIP_NO_INPUT"] = "1"
    return subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_core_install_runs_tier1_and_names_the_extra_tier4_needs(tmp_path: Path) -> None:
    # A copy, so that the build's build/ and egg-info stay out of the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "pytest_modeltiers",
        source / "pytest_modeltiers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    venv = tmp_path / "venv"
    created = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    # This test's pip installs into the venv (none bootstrapped there), reusing its cache; the
    # pins keep torch to the local CPU build. --no-compile: Python compiles only what the runs
    # import, not all of torch (a third of the time).
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-compile",
        "-c", REPO / "constraints.txt", source, cwd=tmp_path,
    )  # fmt: skip
    output = installed.stdout + installed.stderr
    assert installed.returncode == 0, output
    assert "Deprecat" not in output and "BuildBackendWarning" not in output, output

    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    present = _run(python, "-c", probe, *EXTRA_MODULES, cwd=tmp_path)
    assert present.stdout.strip() == "[]", "the core install pulled in an extra's library"

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "example_models" / "tiny_gpt.py", project / "tiny_gpt.py")
    tier1 = _run(python, "-m", "pytest", "-p", "no:cacheprovider", "--model=tiny_gpt.py",
                 "-m", "tier1", cwd=project)  # fmt: skip
    assert tier1.returncode == 0, tier1.stdout + tier1.stderr
    assert "passed" in tier1.stdout and "failed" not in tier1.stdout

    tier4 = _run(python, "-m", "pytest", "-p", "no:cacheprovider", "--model=tiny_gpt.py",
                 "-m", "tier4", cwd=project)  # fmt: skip
    assert tier4.returncode == pytest.ExitCode.USAGE_ERROR, tier4.stdout + tier4.stderr
    assert "pip install 'pytest-modeltiers[export]'" in tier4.stderr
    assert "collected" not in tier4.stdout
