"""The environment of a run: Python, platform, every installed package, torch and its devices,
and the git state of the model's repository.

PYTEST_DONT_REWRITE

Captured when the run trains (recorded with it) and again when its bundle is written, so a
bundle says both where the run happened and where it was packed. Package versions come from
``importlib.metadata`` (every installed distribution); git is asked through its command line
when there is one. Whatever cannot be read is recorded with the reason, never left out.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["capture_environment", "git_state", "installed_packages", "torch_state"]

_GIT_TIMEOUT_S = 10.0


def _path_state() -> tuple[tuple[str, int], ...]:
    """``sys.path`` folders with their modification times: installing or removing a package
    changes its folder's, so this keys the package list's cache."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


_PACKAGES: dict[tuple[tuple[str, int], ...], dict[str, str]] = {}


def installed_packages() -> dict[str, str]:
    """Every installed distribution, by its normalised name, with its version (read once per
    state of the import path: a sweep's runs do not each pay for reading every package)."""
    key = _path_state()
    cached = _PACKAGES.get(key)
    if cached is None:
        packages: dict[str, str] = {}
        for dist in metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                packages.setdefault(name.lower().replace("_", "-"), dist.version)
        cached = _PACKAGES[key] = dict(sorted(packages.items()))
    return dict(cached)


def torch_state() -> dict[str, Any]:
    """torch's version, its CUDA and cuDNN builds, and the accelerators this process sees."""
    import torch

    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "mps_available": bool(torch.backends.mps.is_available()),
        "num_threads": torch.get_num_threads(),
    }


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=_GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def git_state(folder: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The commit and dirty flag of the git repository holding ``folder``; ``reason`` when
    there is none (no folder, no git, not a repository, or git could not run)."""
    if folder is None:
        return {"commit": None, "reason": "the model has no source file"}
    if shutil.which("git") is None:
        return {"commit": None, "reason": "git is not installed"}
    path = Path(folder)
    try:
        top = _git(path, "rev-parse", "--show-toplevel")
        commit = _git(path, "rev-parse", "HEAD")
        changes = _git(path, "status", "--porcelain", "--untracked-files=no")
    except RuntimeError as exc:
        return {"commit": None, "reason": f"no git repository at {path}: {exc}"[:500]}
    except (OSError, subprocess.SubprocessError) as exc:  # a sandbox forbids running it
        return {"commit": None, "reason": f"git could not run for {path}: {exc}"[:500]}
    return {"repository": top, "commit": commit, "dirty": bool(changes)}


def capture_environment(model_folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything a reproduction needs to know about this process's environment."""
    return {
        "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": sys.implementation.name,
            "executable": sys.executable,
        },
        "platform": {
            "platform": platform.platform(),
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "torch": torch_state(),
        "git": git_state(model_folder),
        "packages": installed_packages(),
    }
