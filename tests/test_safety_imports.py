"""Every import a model file can make is scanned: parents that ``find_spec`` runs, packages
that ``pkgutil.walk_packages`` runs, local files that shadow a module something else imports
(a standard module, its C accelerator, an installed package, ``sitecustomize``), the current
directory when it is on the import path, and a file under ``site-packages`` that is not an
installed distribution's own unmodified file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modeltiers.models.installed import unmodified_distribution
from pytest_modeltiers.models.loader import _check_safety
from pytest_modeltiers.models.safety import scan_model_file

PAYLOAD = "import os\nos.system('touch ' + os.environ['MODELTIERS_MARKER'])\n"

#: Each case: the files of a model folder, the model file's code, and the file that must be
#: reported (its payload on line 2).
CASES = {
    "find-spec-runs-the-parent": (
        {"helper/__init__.py": PAYLOAD, "helper/sub.py": ""},
        "import importlib.util\nimportlib.util.find_spec('helper.sub')\n",
        "helper/__init__.py",
    ),
    "walk-packages-runs-every-package": (
        {"plugins/__init__.py": "", "plugins/extra/__init__.py": PAYLOAD},
        "import pkgutil\nfor _ in pkgutil.walk_packages(['.']):\n    pass\n",
        "plugins/extra/__init__.py",
    ),
    "accelerator-of-a-standard-module": (
        {"_statistics.py": PAYLOAD},
        "import statistics\n",
        "_statistics.py",
    ),
    "standard-module-imported-by-a-library": (
        {"json.py": PAYLOAD},
        "import torch\n",
        "json.py",
    ),
    "installed-package-imported-by-a-library": (
        {"yaml.py": PAYLOAD},
        "import torch\n",
        "yaml.py",
    ),
    "sitecustomize-of-every-python-started": (
        {"sitecustomize.py": PAYLOAD},
        "import torch\n",
        "sitecustomize.py",
    ),
}


def _make(folder: Path, files: dict[str, str], model: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "model.py").write_text(model)
    return folder / "model.py"


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_code_the_import_machinery_runs_is_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    files, model, culprit = CASES[case]
    model_file = _make(tmp_path, files, model)
    monkeypatch.chdir(tmp_path)
    findings = scan_model_file(model_file)
    hits = [f for f in findings if f.path.as_posix().endswith(culprit) and f.line == 2]
    assert hits and hits[0].rule == "process-execution", findings


# What each case's import runs, shown by running it: the payload fires without the scan.
FIRES = {
    "find-spec-runs-the-parent": "import importlib.util; importlib.util.find_spec('helper.sub')",
    "walk-packages-runs-every-package": "import pkgutil; list(pkgutil.walk_packages(['.']))",
    "accelerator-of-a-standard-module": "import statistics",
    "sitecustomize-of-every-python-started": "import subprocess, sys; "
    "subprocess.run([sys.executable, '-c', 'pass'], check=True)",
}


@pytest.mark.parametrize("case", FIRES, ids=list(FIRES))
def test_each_case_really_runs_the_file_when_imported(tmp_path: Path, case: str) -> None:
    files, _, _ = CASES[case]
    _make(tmp_path, files, "")
    marker = tmp_path / "fired"
    env = {**os.environ, "MODELTIERS_MARKER": str(marker), "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", FIRES[case]], cwd=tmp_path, env=env, check=False)
    assert marker.exists()


def test_the_current_directory_on_the_import_path_is_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``python -m pytest`` the current directory comes first on the import path: a
    model in another folder that imports ``helper`` gets the current directory's."""
    model_dir, cwd = tmp_path / "models", tmp_path / "project"
    model_file = _make(model_dir, {}, "import helper\n")
    _make(cwd, {"helper.py": PAYLOAD}, "")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    assert [f.path.name for f in scan_model_file(model_file)] == ["helper.py"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(cwd))])
    assert scan_model_file(model_file) == []  # not on the import path: not reachable


def test_ordinary_local_modules_are_not_shadows(tmp_path: Path) -> None:
    model_file = _make(tmp_path, {"my_layers.py": "import torch\n"}, "import torch\n")
    assert scan_model_file(model_file) == []


# -- site-packages -------------------------------------------------------------------------------


def _install(site: Path, files: dict[str, str]) -> None:
    """A distribution ``mymodels 1.0`` installed into ``site`` with a RECORD of its files."""
    rows = []
    for name, text in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        rows.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    info = site / "mymodels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mymodels\nVersion: 1.0\n")
    rows.append("mymodels-1.0.dist-info/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


MODEL = "from torch import nn\n\ndef build_model():\n    return nn.Linear(2, 2)\n"


def test_an_installed_unmodified_file_is_not_scanned(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    _install(site, {"mymodels/__init__.py": "", "mymodels/model.py": MODEL})
    assert unmodified_distribution(site / "mymodels" / "model.py") == "mymodels 1.0"
    verdict = _check_safety(site / "mymodels" / "model.py", trust=False)
    assert verdict == (
        "safety scan: not applicable (installed package mymodels 1.0, its files match its RECORD)"
    )


def test_an_edited_installed_package_is_scanned(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    _install(site, {"mymodels/__init__.py": "", "mymodels/model.py": MODEL})
    (site / "mymodels" / "model.py").write_text(MODEL + PAYLOAD)  # edited after installing
    assert unmodified_distribution(site / "mymodels" / "model.py") is None
    with pytest.raises(Exception, match=r"model.py:6: \[process-execution\]"):
        _check_safety(site / "mymodels" / "model.py", trust=False)


def test_any_edited_file_of_the_package_voids_the_record(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    _install(site, {"mymodels/__init__.py": "", "mymodels/model.py": MODEL})
    (site / "mymodels" / "__init__.py").write_text("# edited\n")
    assert unmodified_distribution(site / "mymodels" / "model.py") is None
    verdict = _check_safety(site / "mymodels" / "model.py", trust=False)
    assert verdict == "safety scan clean (the file and its local imports)"


def test_a_folder_merely_named_site_packages_is_scanned(tmp_path: Path) -> None:
    folder = tmp_path / "site-packages" / "models"
    model_file = _make(folder, {}, PAYLOAD)
    assert unmodified_distribution(model_file) is None
    with pytest.raises(Exception, match=r"model.py:2: \[process-execution\]"):
        _check_safety(model_file, trust=False)
