"""``notebooks/training.ipynb`` runs top to bottom, as a reader runs it, on CPU.

The notebook is executed by nbclient in a real IPython kernel (this interpreter's, registered
as a kernelspec in a temporary ``JUPYTER_PATH``, so no installed kernel and no network are
needed), in a temporary directory that receives everything it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "training.ipynb"
KERNEL = "modeltiers-notebook-test"

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")


def _text(cell: Any) -> str:
    """Everything a code cell printed (stdout and stderr streams, text results)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def _cell(notebook: Any, marker: str) -> Any:
    found = [c for c in notebook.cells if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, f"one code cell should contain {marker!r}"
    return found[0]


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernelspec for this interpreter, and Jupyter's and IPython's files kept in tmp_path."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pytest-modeltiers test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)


def test_notebook_is_valid_and_guarded() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    install = _cell(notebook, "pip")
    assert "if IN_COLAB:" in install.source  # never installs anything outside Colab


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_env")
def test_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=300,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # CellExecutionError names the cell and the traceback on any failure

    assert "running on a local kernel" in _text(_cell(notebook, "IN_COLAB ="))
    summary = _text(_cell(notebook, "results = run_training("))
    assert "'loss':" in summary and "'accuracy':" in summary
    ddp = _text(_cell(notebook, "resolve_distribution("))
    assert "in a notebook: True; requested 'ddp', training with 'auto'" in ddp
    tier1 = _text(_cell(notebook, '"tier1",'))  # the cell asserts pytest's exit code 0
    assert "passed" in tier1 and "failed" not in tier1 and "health score 100.0" in tier1
    sweep = _text(_cell(notebook, "run_grid_sweep("))
    assert sweep.count("completed") >= 2 and "best: {'learning_rate':" in sweep
    assert "repro_run1.zip" in _text(_cell(notebook, "create_repro_bundle("))
    drift = _text(_cell(notebook, "compare_profiles("))
    assert "dataset drifted: True" in drift and "drift trigger: fired" in drift
    figures = [
        o for o in _cell(notebook, "plt.subplots").outputs if "image/png" in o.get("data", {})
    ]
    assert len(figures) == 1 and (work / "drift.png").stat().st_size > 1000
    for name in ("notebook_model.py", "experiments.db"):
        assert (work / name).is_file()
