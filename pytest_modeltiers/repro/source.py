"""A model's source files and their hashes: the file the model came from and its local imports.

PYTEST_DONT_REWRITE

A run records where its model's code lives so that a reproducibility bundle can carry exactly
that code. The entry file is the one ``modeltiers train`` loaded (or, for a model passed in
Python, the file that defines its class); its local imports are the ``.py`` files beside it
that it imports, followed transitively through the AST without running anything, as the
loader's safety scan follows them.
"""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path
from typing import Any

from pytest_modeltiers.digest import file_sha256

__all__ = ["local_source_files", "model_class_source", "source_record"]


def _module_files(root: Path, dotted: str) -> list[Path]:
    """The files under ``root`` that importing ``dotted`` runs (packages' ``__init__`` too)."""
    found: list[Path] = []
    parts = dotted.split(".") if dotted else []
    folder = root
    for index, part in enumerate(parts):
        module, package = folder / f"{part}.py", folder / part / "__init__.py"
        if package.is_file():
            found.append(package)
            folder = folder / part
        elif module.is_file() and index == len(parts) - 1:
            found.append(module)
        else:
            break
    return found


def _imports(path: Path, root: Path) -> list[Path]:
    """Local files that ``path`` imports (absolute ones resolved from ``root``)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return []  # the loader refuses such a file; nothing of it to follow
    found: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _module_files(root, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = root
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
            module = node.module or ""
            found += _module_files(base, module)
            for alias in node.names:  # ``from pkg import submodule``
                found += _module_files(base, f"{module}.{alias.name}".lstrip("."))
    return found


def local_source_files(entry: str | os.PathLike[str]) -> list[Path]:
    """``entry`` and every local module it imports, transitively, sorted, entry first."""
    start = Path(entry).resolve()
    root = start.parent
    seen: list[Path] = [start]
    pending = [start]
    while pending:
        current = pending.pop()
        for found in _imports(current, root):
            resolved = found.resolve()
            if resolved not in seen and resolved.is_relative_to(root):
                seen.append(resolved)
                pending.append(resolved)
    return [start, *sorted(seen[1:])]


def source_record(entry: str | os.PathLike[str], **extra: Any) -> dict[str, Any]:
    """What a run records about its model's code: the entry file, its folder and the sha256 of
    each file (paths relative to the folder), plus ``extra`` keys (the class, a gist...)."""
    files = local_source_files(entry)
    root = files[0].parent
    return {
        "entry": files[0].name,
        "root": str(root),
        "files": {str(path.relative_to(root)): file_sha256(path) for path in files},
        **extra,
    }


def model_class_source(model: Any) -> dict[str, Any]:
    """``source_record`` of the file defining ``type(model)``, or why there is none (a class
    defined in a notebook or the interpreter has no file)."""
    cls = type(model)
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # its module is not in sys.modules (a file run by spec_from_file_location)
        codes = [v.__code__ for v in vars(cls).values() if hasattr(v, "__code__")]
        path = codes[0].co_filename if codes else None
    if path is None or not Path(path).is_file():
        return {"class": name, "entry": None, "reason": f"{name} is not defined in a file"}
    if _installed(Path(path)):
        package = cls.__module__.split(".")[0]
        return {
            "class": name,
            "entry": None,
            "reason": f"{name} comes from the installed package {package!r} (its version is in "
            "environment.json), not from a model file of the run",
        }
    return source_record(path, **{"class": name})


def _installed(path: Path) -> bool:
    """Whether ``path`` belongs to the Python installation (stdlib or installed packages)."""
    import sysconfig

    resolved = path.resolve()
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots) or any(
        part in ("site-packages", "dist-packages") for part in resolved.parts
    )
