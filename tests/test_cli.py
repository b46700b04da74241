"""The ``modeltiers`` command: inspect and scan, with the plugin's option declarations."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modeltiers.cli import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[1]


def test_inspect_prints_the_resolution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", f"--model={REPO / 'example_models' / 'tiny_gpt.py'}"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "model tiny_gpt: tiny_gpt.py::build_model -> TinyGPT" in out
    assert "task lm_tiny (TASK in tiny_gpt.py" in out


def test_inspect_reports_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", "missing.py"]) == EXIT_USAGE
    assert "model file not found: missing.py" in capsys.readouterr().err


def test_inspect_checks_option_values(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["inspect", "--model", "m.py", "--modeltiers-timeout", "0"]
    assert main(args) == EXIT_USAGE
    assert "--modeltiers-timeout: expected a positive number" in capsys.readouterr().err


def test_inspect_refuses_a_sandbox_it_would_not_enter(capsys: pytest.CaptureFixture[str]) -> None:
    model = f"--model={REPO / 'example_models' / 'tiny_gpt.py'}"
    assert main(["inspect", model, "--modeltiers-sandbox", "on"]) == EXIT_USAGE
    assert "--modeltiers-sandbox on is not supported here" in capsys.readouterr().err


def test_scan_clean_and_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text("import torch\nmodel = torch.nn.Linear(2, 2)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nos.system('true')\n")
    assert main(["scan", str(clean)]) == EXIT_OK
    assert main(["scan", str(clean), str(bad)]) == EXIT_FINDINGS
    out = capsys.readouterr().out
    assert f"{clean}: clean" in out
    assert f"{bad}:2: [process-execution]" in out


def test_console_script_is_installed() -> None:
    script = shutil.which("modeltiers", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "inspect" in result.stdout and "scan" in result.stdout
