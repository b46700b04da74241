"""The package's layers: every import of our own modules points down, and none forms a cycle.

``LAYERS`` is the one place that says where each module sits, top to bottom; the architecture
page of the docs is written from it. A module may import modules of the layers below its own;
modules of one layer may import each other as long as no cycle forms. Imports are read from the
source (the AST), at any depth: a function-local import counts like a top-level one, so a local
import cannot hide an upward edge or a cycle. Imports under ``if TYPE_CHECKING:`` are skipped
(they never run), and a string naming one of our modules counts as an import (lazy tables such
as the package root's load modules by name).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "pytest_modeltiers"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: Top to bottom. Each entry names a module or a package (all of its modules), relative to
#: ``pytest_modeltiers``; ``""`` is the package root.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # pytest's entry point; the public names and the pre-split ``monitoring`` path, which only
    # re-export what lives below (nothing of ours imports them).
    ("plugin", ("plugin", "", "monitoring")),
    ("front ends", ("session", "fixtures", "cli")),
    ("suites", ("suites",)),
    ("checks", ("checks",)),
    # The option table parses export formats and tolerances with export's own parsers.
    ("options", ("options", "settings")),
    (
        "mechanisms",
        ("export", "training", "drift", "triggers", "evaluation", "analysis", "sweeps", "repro"),
    ),
    ("models", ("models", "datasets", "strategies")),
    ("records", ("report", "store", "config", "recorder")),
    (
        "leaf utilities",
        (
            "errors",
            "atomic",
            "digest",
            "version",
            "jsonio",
            "timeouts",
            "threads",
            "rootdir_guard",
            "hypothesis_profiles",
            "startup",
            "extras",
        ),
    ),
)


@dataclass(frozen=True)
class Edge:
    """One import of our module ``target`` by ``source`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The imports of our own modules that run in module ``name`` (file ``path``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    relative = str(path.relative_to(PACKAGE_DIR.parent))
    edges = []

    def add(target: str, line: int) -> None:
        edge = Edge(name, target, relative, line)
        if target != name and target in modules and edge not in edges:
            edges.append(edge)

    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_deepest(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in modules else _deepest(base, modules), node.lineno)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in modules
            and node.value != PACKAGE
        ):
            add(node.value, node.lineno)
    return edges


def _deepest(dotted: str, modules: dict[str, Path]) -> str:
    """The deepest module of ours that ``dotted`` names (``a.b.c`` where ``a.b.c`` exists)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str | None:
    """The ``LAYERS`` entry holding ``module``: the longest one that names it or a package above."""
    relative = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    best: str | None = None
    for _, units in LAYERS:
        for unit in units:
            named = unit == relative or (unit and relative.startswith(unit + "."))
            if named and (best is None or len(unit) > len(best)):
                best = unit
    return best


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    return None


def all_edges() -> list[Edge]:
    modules = module_names()
    return [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]


def upward_imports(edges: list[Edge]) -> list[str]:
    """One line per import of a module from a higher layer than the importer's."""
    problems = []
    for edge in edges:
        source, target = layer_of(edge.source), layer_of(edge.target)
        if source is None or target is None or target >= source:
            continue
        problems.append(
            f"{edge.path}:{edge.line}: {edge.source} ({LAYERS[source][0]}) imports "
            f"{edge.target} ({LAYERS[target][0]}), a higher layer: a module may import only "
            "its own layer or the layers below (tests/test_architecture.py LAYERS)"
        )
    return problems


def import_cycles(edges: list[Edge]) -> list[str]:
    """One line per cycle among our modules, naming each import in it with its file and line."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    cycles: list[list[Edge]] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(graph):
        path = _path_back(graph, start)
        if path is not None and frozenset(e.source for e in path) not in seen:
            seen.add(frozenset(e.source for e in path))
            cycles.append(path)
    return [
        "import cycle: "
        + " -> ".join(f"{e.source} ({e.path}:{e.line})" for e in cycle)
        + f" -> {cycle[0].source}: move the shared piece into a module both can import"
        for cycle in cycles
    ]


def _path_back(graph: dict[str, dict[str, Edge]], start: str) -> list[Edge] | None:
    """The shortest chain of imports from ``start`` back to itself, if any (breadth first)."""
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target, edge in sorted(graph.get(module, {}).items()):
                if target == start:
                    chain = [edge]
                    while chain[0].source != start:
                        chain.insert(0, previous[chain[0].source])
                    return chain
                if target not in previous:
                    previous[target] = edge
                    following.append(target)
        frontier = following
    return None


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in ``LAYERS`` before the other rules can judge it."""
    missing = sorted(name for name in module_names() if unit_of(name) is None)
    assert not missing, (
        f"modules without a layer: {missing}; add each (or its package) to LAYERS in "
        "tests/test_architecture.py"
    )


def test_every_layer_entry_names_a_module() -> None:
    """A misspelt or removed entry in ``LAYERS`` would place nothing and go unnoticed."""
    modules = module_names()
    unknown = [
        unit
        for _, units in LAYERS
        for unit in units
        if (f"{PACKAGE}.{unit}" if unit else PACKAGE) not in modules
    ]
    assert not unknown, f"LAYERS names no module or package for {unknown}"


def test_imports_point_down_the_layers() -> None:
    problems = upward_imports(all_edges())
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    problems = import_cycles(all_edges())
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the rules' own tests


def _write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for relative, source in files.items():
        path = root / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        parts = (PACKAGE, *Path(relative).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _edges(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str]) -> list[Edge]:
    monkeypatch.setattr(f"{__name__}.PACKAGE_DIR", tmp_path / PACKAGE)
    modules = _write_package(tmp_path, files)
    return [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]


def test_an_upward_import_inside_a_function_is_named_with_file_and_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    edges = _edges(
        monkeypatch,
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "checks/__init__.py": "",
            "models/__init__.py": "",
            "models/running.py": (
                "def run():\n    from pytest_modeltiers.checks import tier1\n    return tier1\n"
            ),
            "checks/tier1.py": "from ..errors import X\n",
        },
    )
    problems = upward_imports(edges)
    assert problems == [
        f"{PACKAGE}/models/running.py:2: {PACKAGE}.models.running (models) imports "
        f"{PACKAGE}.checks.tier1 (checks), a higher layer: a module may import only its own "
        "layer or the layers below (tests/test_architecture.py LAYERS)"
    ]


def test_type_checking_imports_are_ignored_and_lazy_tables_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    edges = _edges(
        monkeypatch,
        tmp_path,
        {
            "__init__.py": "",
            "checks/__init__.py": "",
            "checks/tier1.py": "",
            "export/__init__.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pytest_modeltiers.checks import tier1\n"
                "_EXPORTS = {'Checker': 'pytest_modeltiers.checks.tier1'}\n"
            ),
        },
    )
    assert [(e.source, e.target, e.line) for e in edges] == [
        (f"{PACKAGE}.export", f"{PACKAGE}.checks.tier1", 4)
    ]
    assert len(upward_imports(edges)) == 1


def test_a_cycle_in_one_layer_is_named_even_when_one_import_is_local(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    edges = _edges(
        monkeypatch,
        tmp_path,
        {
            "__init__.py": "",
            "export/__init__.py": "",
            "export/exporters.py": "def q():\n    from . import quantization\n",
            "export/quantization.py": "from pytest_modeltiers.export.exporters import _staged\n",
        },
    )
    assert not upward_imports(edges)
    assert import_cycles(edges) == [
        f"import cycle: {PACKAGE}.export.exporters ({PACKAGE}/export/exporters.py:2) -> "
        f"{PACKAGE}.export.quantization ({PACKAGE}/export/quantization.py:1) -> "
        f"{PACKAGE}.export.exporters: move the shared piece into a module both can import"
    ]
