"""The safety scan as users meet it: ``pytest --model`` refuses a file before any of it runs.

Every malicious corpus file carries a payload that would create the file named by
``MODELTIERS_MARKER``; ``tests/test_safety.py`` proves each payload really runs when executed.
Here the plugin must refuse each one with a usage error naming the rule and line, and the marker
must never appear. ``--trust-model`` runs the file anyway (so the marker shows the test can fail).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "safety"


def _cases(kind: str) -> list[Path]:
    folder = CORPUS / kind
    files = sorted(p for p in folder.glob("*.py"))
    files += sorted(d / "model.py" for d in folder.iterdir() if (d / "model.py").is_file())
    return files


def _copy(case: Path, destination: Path) -> Path:
    """The case's file (or its whole folder, for cases with local imports) in ``destination``."""
    if case.name == "model.py":
        target = destination / case.parent.name
        shutil.copytree(case.parent, target)
        return target / "model.py"
    return Path(shutil.copy(case, destination))


@pytest.mark.parametrize("case", _cases("malicious"), ids=lambda p: p.parent.name + "/" + p.name)
def test_malicious_model_is_refused_and_never_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, case: Path
) -> None:
    marker = pytester.path / "marker"
    monkeypatch.setenv("MODELTIERS_MARKER", str(marker))
    model = _copy(case, pytester.path)
    result = pytester.runpytest("--co", f"--model={model}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "refused to run" in err and "--trust-model" in err
    assert not marker.exists(), "the payload ran before the refusal"


def test_trust_model_runs_the_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = pytester.path / "marker"
    monkeypatch.setenv("MODELTIERS_MARKER", str(marker))
    model = _copy(CORPUS / "malicious" / "os_system.py", pytester.path)
    result = pytester.runpytest("--co", f"--model={model}", "--trust-model")
    assert marker.exists(), result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("case", _cases("benign"), ids=lambda p: p.parent.name + "/" + p.name)
def test_benign_model_passes_the_scan(pytester: pytest.Pytester, case: Path) -> None:
    model = _copy(case, pytester.path)
    result = pytester.runpytest("--co", f"--model={model}")
    assert "refused to run" not in result.stderr.str()


PLANTED = "import os\nopen(os.environ['MODELTIERS_MARKER'], 'w').close()\nSCALE = 2\n"
HONEST = "SCALE = 2\n"


def test_planted_bytecode_of_a_local_import_never_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``__pycache__`` entry forged to match ``helper.py``'s size and mtime would make a plain
    import run code the scan never read; the loader imports with a fresh pycache prefix."""
    import importlib.util
    import os
    import py_compile

    marker = pytester.path / "marker"
    monkeypatch.setenv("MODELTIERS_MARKER", str(marker))
    helper = pytester.path / "helper.py"
    honest = HONEST.ljust(len(PLANTED) - 1) + "\n"
    helper.write_text(PLANTED)
    os.utime(helper, (1_700_000_000, 1_700_000_000))
    py_compile.compile(str(helper), cfile=importlib.util.cache_from_source(str(helper)))
    helper.write_text(honest)
    os.utime(helper, (1_700_000_000, 1_700_000_000))
    pytester.makepyfile(
        model=(
            "import torch\nimport helper\n\n"
            "def build_model():\n    return torch.nn.Embedding(10 * helper.SCALE, 4)\n"
        )
    )
    result = pytester.runpytest("--co", "--model", "model.py")
    assert "model model:" in result.stdout.str(), result.stderr.str()
    assert not marker.exists(), "the planted bytecode ran"
