"""What the user's model raised, and where: whose code each traceback frame is, and the text a
check reports (``"NameError: ... at model.py:12: return F.gelu(x)"``).

PYTEST_DONT_REWRITE

Messages point at the user's file and line, not at the frames of this package or torch, so the
message alone finds the line to fix. Standard library only.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from pytest_modeltiers.models.sandbox import blocked_message

__all__ = [
    "describe_exception",
    "describe_model_exception",
    "exception_details",
    "frame_origin",
    "is_user_file",
]

MAX_EXCEPTION_TEXT = 500
#: How many of the user's innermost frames ``exception_details`` lists.
MAX_USER_FRAMES = 5
MAX_SOURCE_TEXT = 200
#: Whose frames locate an exception, best first: the user's own files; else a library's (a
#: transformers model); else torch's or the standard library's (a bare ``nn.Transformer``).
_ORIGIN_PREFERENCE = (("user",), ("library",), ("torch", "stdlib"))
_MAX_CHAIN = 8
_PACKAGE_ROOT = os.path.realpath(Path(__file__).resolve().parents[1])
_SITE_ROOTS = tuple(
    {
        os.path.realpath(p)
        for p in (
            sysconfig.get_paths().get("purelib"),
            sysconfig.get_paths().get("platlib"),
            *site.getsitepackages(),
        )
        if p
    }
)
_STDLIB_ROOTS = tuple(
    {
        os.path.realpath(p)
        for p in (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib"))
        if p
    }
)
_TORCH_PACKAGES = ("torch", "functorch", "torchgen")


def frame_origin(filename: str) -> str:
    """Whose code a traceback frame's file is: ``user``, ``library`` (third-party), ``torch``,
    ``stdlib``, ``ours`` (this package) or ``internal`` (``<frozen ...>``, ``<string>``).

    The user's own files are those outside the interpreter's library folders and this package,
    so a model in an editable install counts as the user's; a model shipped in a package
    (transformers) is a library's.
    """
    if not filename or filename.startswith("<"):
        return "internal"
    real = os.path.realpath(filename)
    if _under(real, _PACKAGE_ROOT):
        return "ours"
    torch_roots = _loaded_torch_roots()
    if any(_under(real, root) for root in torch_roots):
        return "torch"
    for root in _SITE_ROOTS:
        if _under(real, root):
            top = os.path.relpath(real, root).split(os.sep)[0]
            return "torch" if top in _TORCH_PACKAGES else "library"
    if any(_under(real, root) for root in _STDLIB_ROOTS):
        return "stdlib"
    return "user"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _loaded_torch_roots() -> list[str]:
    """The folders of torch's packages already imported (an install outside site-packages)."""
    roots = []
    for name in _TORCH_PACKAGES:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            roots.append(os.path.realpath(os.path.dirname(file)))
    return roots


def is_user_file(filename: str) -> bool:
    """True for a file outside the standard library, site-packages and this package."""
    return frame_origin(filename) == "user"


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: message"``, truncated so that one bad model cannot flood a CI log.

    A permission error raised by the sandbox says so: the file system's own errors look the same.
    """
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_EXCEPTION_TEXT:
        text = text[: MAX_EXCEPTION_TEXT - 3] + "..."
    blocked = blocked_message(exc)
    return f"{text} ({blocked})" if blocked else text


def exception_details(exc: BaseException) -> dict[str, Any]:
    """What a check's ``details`` say about an exception the model raised, and where.

    ``exception`` is ``"NameError: name 'F' is not defined"``; ``location`` (``"model.py:12"``,
    relative to the current directory when under it), ``source`` (that line's code) and
    ``user_frames`` (up to ``MAX_USER_FRAMES`` of them, innermost last, as
    ``"model.py:12 in forward: code"``) locate it in the innermost frames of the user's code, else
    of a library, else of torch or the standard library, never in this package. The exception's
    ``__cause__`` and ``__context__`` are searched when its own traceback holds none of them (an
    error this package re-raised). An exception that was never raised has only ``exception``.
    """
    details: dict[str, Any] = {"exception": describe_exception(exc)}
    frames = _located_frames(exc)
    if frames:
        innermost = frames[-1]
        details["location"] = _frame_location(innermost)
        source = _frame_source(innermost)
        if source:
            details["source"] = source
        details["user_frames"] = [_describe_frame(frame) for frame in frames]
    return details


def describe_model_exception(exc: BaseException) -> str:
    """``"NameError: name 'F' is not defined at model.py:12: return F.gelu(x)"``.

    ``describe_exception`` followed by where the model raised it (see ``exception_details``);
    checks use it for an exception of the user's model, so the message alone finds the line.
    """
    details = exception_details(exc)
    text: str = details["exception"]
    if "location" in details:
        text += f" at {details['location']}"
        if "source" in details:
            text += f": {details['source']}"
    return text


def _located_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The innermost frames of the most preferred origin found in ``exc``'s chain."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < _MAX_CHAIN and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    extracted = [traceback.extract_tb(item.__traceback__) for item in chain]
    for origins in _ORIGIN_PREFERENCE:
        for frames in extracted:
            chosen = [f for f in frames if f.lineno and frame_origin(f.filename) in origins]
            if chosen:
                return chosen[-MAX_USER_FRAMES:]
    return []


def _frame_location(frame: traceback.FrameSummary) -> str:
    return f"{_display_path(frame.filename)}:{frame.lineno}"


def _frame_source(frame: traceback.FrameSummary) -> str:
    source = (frame.line or "").strip()
    if len(source) > MAX_SOURCE_TEXT:
        source = source[: MAX_SOURCE_TEXT - 3] + "..."
    return source


def _describe_frame(frame: traceback.FrameSummary) -> str:
    text = f"{_frame_location(frame)} in {frame.name}"
    source = _frame_source(frame)
    return f"{text}: {source}" if source else text


def _display_path(filename: str) -> str:
    """``filename`` relative to the current directory when it lies under it, else as it is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if relative.startswith(os.pardir) else relative
