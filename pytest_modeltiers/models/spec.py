"""Parsing a model spec (``--model``) into where the model's code lives.

PYTEST_DONT_REWRITE

Accepted forms: ``path/to/file.py``, ``path/to/file.py::NAME``, ``package.module:attr`` and
``gist:ID[@REVISION][::NAME]`` (or a gist URL). Parsing touches the file system only to find
files, and the network only to fetch a gist into its cache; nothing is imported here, so the
safety scan can look at the code before any of it runs.
"""

from __future__ import annotations

import importlib.machinery
import re
from dataclasses import dataclass
from pathlib import Path

from pytest_modeltiers.errors import ModelSpecError
from pytest_modeltiers.models.gist import GistModel, fetch_gist, parse_gist_ref

FORMS = "path/to/file.py, path/to/file.py::NAME, package.module:attr or gist:ID[@REVISION][::NAME]"

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: a file (``path``) or an importable module (``module``).

    For a gist, ``path`` is its model file in the cache and ``gist`` says which revision.
    """

    raw: str
    path: Path | None = None
    module: str | None = None
    attr: str | None = None
    gist: GistModel | None = None

    @property
    def source_file(self) -> Path | None:
        """The Python file whose code defines the model, when one can be found without importing."""
        if self.path is not None:
            return self.path
        assert self.module is not None
        return find_module_file(self.module)


def parse_model_spec(raw: str, rootdir: Path, *, cache_dir: Path | None = None) -> ModelSpec:
    """Parse ``raw``; relative paths are taken from ``rootdir`` when not found from the cwd.

    A gist is fetched into ``cache_dir`` (default: ``gist.default_cache_dir()``), or found there.
    """
    text = raw.strip()
    if not text:
        raise ModelSpecError(f"empty model spec; expected {FORMS}")
    ref = parse_gist_ref(text)
    if ref is not None:
        gist = fetch_gist(ref, cache_dir=cache_dir)
        return ModelSpec(raw=text, path=gist.model_file, attr=ref.attr, gist=gist)
    if "::" in text:
        file_part, _, attr = text.partition("::")
        if not attr.isidentifier():
            raise ModelSpecError(f"{attr!r} after '::' is not a Python name; expected {FORMS}")
        return ModelSpec(raw=text, path=_existing_file(file_part, rootdir), attr=attr)
    if text.endswith(".py") or "/" in text or "\\" in text:
        return ModelSpec(raw=text, path=_existing_file(text, rootdir))
    if ":" in text:
        module, _, attr = text.partition(":")
        if not _DOTTED.match(module) or not attr.isidentifier():
            raise ModelSpecError(f"{text!r} is not package.module:attr; expected {FORMS}")
        return ModelSpec(raw=text, module=module, attr=attr)
    raise ModelSpecError(
        f"{text!r} is neither a .py file nor package.module:attr; expected {FORMS}"
    )


def _existing_file(text: str, rootdir: Path) -> Path:
    candidate = Path(text).expanduser()
    for path in (candidate, rootdir / candidate):
        if path.is_file():
            if path.suffix != ".py":
                raise ModelSpecError(f"{text} is not a Python file (.py)")
            return path.resolve()
    if candidate.is_dir() or (rootdir / candidate).is_dir():
        raise ModelSpecError(f"{text} is a directory; name the model file, e.g. {text}/model.py")
    raise ModelSpecError(
        f"model file not found: {text} (looked in the current directory and {rootdir})"
    )


def find_module_file(dotted: str) -> Path | None:
    """The source file of ``dotted`` found on ``sys.path`` without importing any package.

    ``importlib.util.find_spec`` would import the parent packages (running their code before
    the safety scan), so the search walks the path finders level by level instead.
    """
    search: list[str] | None = None
    origin: str | None = None
    for part in dotted.split("."):
        spec = importlib.machinery.PathFinder.find_spec(part, search)
        if spec is None:
            return None
        origin = spec.origin
        search = list(spec.submodule_search_locations or [])
    if origin is None or not origin.endswith(".py"):
        return None
    return Path(origin)
