"""Running payload model files unscanned, to show that what the scan refuses really fires."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_DRIVER = """
import importlib.util, json, os, sys
results = {}
for index, (model_file, marker) in enumerate(json.loads(sys.argv[1])):
    folder = os.path.dirname(model_file)
    os.environ["MODELTIERS_MARKER"] = marker
    before = set(sys.modules)
    sys.path.insert(0, folder)
    error = None
    try:
        spec = importlib.util.spec_from_file_location(f"_payload_{index}", model_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        module.build_model()
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sys.path.remove(folder)
        for name in set(sys.modules) - before:  # the case's own modules (helper, model)
            origin = str(getattr(sys.modules[name], "__file__", None) or "")
            if name == spec.name or origin.startswith(folder + os.sep):
                del sys.modules[name]
    results[model_file] = {"marker": os.path.lexists(marker), "error": error}
print(json.dumps(results))
"""


def run_payloads(cases: list[tuple[str, str]]) -> dict[str, dict[str, object]]:
    """Import each model file and call its ``build_model`` in one fresh interpreter (torch
    imported once), with ``MODELTIERS_MARKER`` naming the file the payload should create;
    per file: whether the marker exists afterwards and the error raised, if any."""
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results
