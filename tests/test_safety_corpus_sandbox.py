"""The corpus again, with the scan switched off: every payload fires when run unprotected, and
none does inside the sandbox. The scan is a first layer; this is the wall behind it.

Each case gets a folder of its own holding what its payload needs (a pickle to load, a listener
to reach, a program to run) and the marker its payload creates when it fires. The folders are on
the import path (readable, as files next to a model are) and outside every writable place.
Both runs load every case in one interpreter (torch imported once); the confined one confines
itself first, like a session does before the model file runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_modeltiers.models.sandbox import available

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "safety_corpus" / "malicious"
MALICIOUS = sorted(CORPUS.glob("*.py"))

DRIVER = """
import importlib.util, json, os, sys
from pathlib import Path
args = json.loads(sys.argv[1])
for case in args["cases"]:
    sys.path.insert(0, case["dir"])
if args["confine"]:
    from pytest_modeltiers.models.sandbox import Sandbox
    from pytest_modeltiers.models.sandbox_plan import sandbox_policy
    out = Path(args["out"])
    sandbox = Sandbox(sandbox_policy([out], [Path(args["corpus"])]), scratch=out / "tmp")
    sandbox.enter()
results = {}
for index, case in enumerate(args["cases"]):
    os.environ.update(case["env"])
    error = None
    try:
        spec = importlib.util.spec_from_file_location(f"_payload_{index}", case["model"])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        module.build_model()
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    results[case["name"]] = error
print(json.dumps(results))
"""


class _Touch:
    """Unpickled, runs ``touch PATH``: what a poisoned checkpoint does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


class Case:
    """One corpus file's folder: its environment, and whether its payload fired."""

    def __init__(self, model: Path, folder: Path) -> None:
        self.model = model
        self.folder = folder
        self.marker = folder / "marker"
        self.fired_file = folder / "fired"
        self.env = {"MODELTIERS_MARKER": str(self.marker)}
        self.fired: Callable[[], bool] = lambda: any(
            p.name.startswith("marker") for p in folder.iterdir()
        )
        self.listener: socket.socket | None = None


def _listen(case: Case, family: int) -> None:
    """A listener that records a connection by creating the case's ``fired`` file."""
    server = socket.socket(family)
    if family == socket.AF_UNIX:
        server.bind(str(case.marker))
    else:
        server.bind(("127.0.0.1", 0))
        case.env["MODELTIERS_PORT"] = str(server.getsockname()[1])
    server.listen()
    server.settimeout(120)
    case.listener = server

    def accept() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        case.fired_file.touch()
        connection.close()

    threading.Thread(target=accept, daemon=True).start()
    case.fired = case.fired_file.exists


def _prepare(model: Path, folder: Path) -> Case:
    folder.mkdir(parents=True)
    case = Case(model, folder)
    name = model.stem
    touch = _Touch(case.fired_file)
    if name == "forking_pickler":
        case.marker.write_bytes(pickle.dumps(touch))
    elif name == "model_zoo_load_url":
        torch.save(touch, case.marker)
    elif name == "npz_allow_pickle":
        with case.marker.open("wb") as file:
            np.savez(file, weights=np.array([touch], dtype=object))
    elif name == "ops_load_library":
        source = folder / "payload.c"
        source.write_text(
            "#include <stdio.h>\n__attribute__((constructor)) static void fire(void) "
            f'{{ FILE *f = fopen("{case.fired_file}", "w"); if (f) fclose(f); }}\n'
        )
        compiler = shutil.which("cc") or shutil.which("gcc")
        assert compiler is not None
        built = folder / "marker.so"
        subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o", str(built)], check=True)
    elif name == "set_executable":
        case.marker.write_text(f"#!/bin/sh\ntouch {case.fired_file}\n")
        case.marker.chmod(case.marker.stat().st_mode | stat.S_IEXEC)
    elif name == "socket_handler":
        _listen(case, socket.AF_UNIX)
    elif name == "ssl_certificate":
        _listen(case, socket.AF_INET)
    elif name == "warnings_setoption":
        (folder / "payload_filters.py").write_text(
            f"import os\nos.system('touch {case.fired_file}')\nWarning = UserWarning\n"
        )
    elif name == "tempdir_rmtree":
        tree = folder / "marker.tree"
        tree.mkdir()
        (tree / "victim.txt").write_text("precious")
        case.fired = lambda: not tree.exists()
        return case
    else:
        return case
    if name not in ("socket_handler", "ssl_certificate"):
        case.fired = case.fired_file.exists
    return case


def _missing(name: str) -> str | None:
    if name == "tkinter_tcl":
        try:
            import tkinter  # noqa: F401
        except ImportError:
            return "this Python has no tkinter"
    if name == "ops_load_library" and not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler to build the library it loads"
    return None


@pytest.fixture
def cases(tmp_path: Path) -> Iterator[Callable[[str], dict[str, Case]]]:
    made: list[Case] = []

    def make(run: str) -> dict[str, Case]:
        found = {}
        for model in MALICIOUS:
            if _missing(model.stem) is None:
                found[model.stem] = _prepare(model, tmp_path / run / model.stem)
        made.extend(found.values())
        return found

    yield make
    for case in made:
        if case.listener is not None:
            case.listener.close()


def _run(cases: dict[str, Case], out: Path, *, confine: bool) -> dict[str, str | None]:
    out.mkdir(parents=True, exist_ok=True)
    args = {
        "confine": confine,
        "out": str(out),
        "corpus": str(CORPUS),
        "cases": [
            {"name": n, "model": str(c.model), "dir": str(c.folder), "env": c.env}
            for n, c in cases.items()
        ],
    }
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
        check=False,
        cwd=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_the_corpus_is_large_enough_and_every_file_has_a_case() -> None:
    assert len(MALICIOUS) >= 29


def test_every_payload_fires_when_run_unprotected(
    tmp_path: Path, cases: Callable[[str], dict[str, Case]]
) -> None:
    free = cases("free")
    results = _run(free, tmp_path / "out-free", confine=False)
    silent = {name: results[name] for name, case in free.items() if not case.fired()}
    assert not silent, f"payloads that did nothing unprotected: {json.dumps(silent, indent=1)}"


@pytest.mark.skipif(not available(), reason="this kernel has no Landlock")
def test_no_payload_fires_inside_the_sandbox_with_the_scan_off(
    tmp_path: Path, cases: Callable[[str], dict[str, Case]]
) -> None:
    walled = cases("walled")
    results = _run(walled, tmp_path / "out-walled", confine=True)
    escaped = {name: results[name] for name, case in walled.items() if case.fired()}
    assert not escaped, f"payloads that fired inside the sandbox: {json.dumps(escaped, indent=1)}"
