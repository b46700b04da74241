"""MkDocs hook: tables that the code owns are rendered from the code when the site is built.

``docs/options.md`` holds a marker where the options table goes, built from
``pytest_modeltiers.options.OPTIONS``; ``docs/architecture.md`` one for the layer table, built
from ``LAYERS`` in ``tests/test_architecture.py`` (the test that enforces the layers). Neither
page can drift from what it describes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

from pytest_modeltiers.options import MODEL_FLAG, OPTIONS, Option

MARKER = "<!-- options-table -->"
PAGE = "options.md"
LAYERS_MARKER = "<!-- layers-table -->"
LAYERS_PAGE = "architecture.md"
ARCHITECTURE_TEST = Path(__file__).resolve().parents[2] / "tests" / "test_architecture.py"


def _flag_cell(option: Option) -> str:
    flags = list(option.flags)
    if option.dest == "modeltiers_model" and MODEL_FLAG not in flags:
        flags.insert(0, MODEL_FLAG)
    suffix = "" if option.flag or option.metavar is None else f" {option.metavar}"
    return " / ".join(f"`{flag}{suffix}`" for flag in flags)


def _ini_cell(option: Option) -> str:
    if option.multiple:
        kind = " (lines)"
    elif option.flag:
        kind = " (true/false)"
    else:
        kind = ""
    return f"`{option.ini_name}`{kind}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_options_table() -> str:
    """The Markdown table of every option: flags, ini twin, meaning."""
    rows = ["| option | ini | meaning |", "|---|---|---|"]
    for option in OPTIONS:
        rows.append(
            f"| {_escape(_flag_cell(option))} | {_ini_cell(option)} | {_escape(option.help)} |"
        )
    return "\n".join(rows)


def _layers() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``LAYERS`` of the architecture test, read from its source (a literal; nothing is run)."""
    tree = ast.parse(ARCHITECTURE_TEST.read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
            return ast.literal_eval(node.value)
    raise PluginError(f"{ARCHITECTURE_TEST} defines no LAYERS table for the architecture page")


def render_layers_table() -> str:
    """The Markdown table of the package's layers, top to bottom, from the architecture test."""
    rows = ["| layer | modules and packages of `pytest_modeltiers` |", "|---|---|"]
    for number, (name, units) in enumerate(_layers(), start=1):
        cells = ", ".join(f"`{unit}`" if unit else "the package root" for unit in units)
        rows.append(f"| {number}. {name} | {cells} |")
    return "\n".join(rows)


def _fill(markdown: str, page: str, marker: str, table: str) -> str:
    if marker not in markdown:
        raise PluginError(f"{page} has lost its {marker} marker; put it back where the table goes")
    return markdown.replace(marker, table)


def render_page(markdown: str) -> str:
    """The options page with its table filled in; a page without the marker is an error."""
    return _fill(markdown, PAGE, MARKER, render_options_table())


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs event: fill in the options and architecture pages, leave the others as they are."""
    if page.file.src_uri == PAGE:
        return render_page(markdown)
    if page.file.src_uri == LAYERS_PAGE:
        return _fill(markdown, LAYERS_PAGE, LAYERS_MARKER, render_layers_table())
    return markdown
