"""An exporter's failure as one actionable cause, pointing at the user's file and line.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import io
import linecache
import logging
import re
import sys
import traceback
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pytest_modeltiers.models.exceptions import frame_origin, is_user_file

__all__ = ["ExportFailure", "ExporterLog", "explain_export_error", "quiet_exporter", "user_frame"]

_MAX_CAUSE = 600
_RAISED_AT = re.compile(
    r'The following call raised this error:\s*\n\s*File "(?P<file>[^"]+)", line (?P<line>\d+), '
    r"in (?P<func>\S+)"
)
_SPECIALIZED = re.compile(
    r"You marked (?P<axis>\w+) as dynamic but your code specialized it to be a constant "
    r"\((?P<value>-?\d+)\)"
)
_NARROWER = re.compile(r"Not all values of (?P<axis>\w+) in the specified range (?P<rest>[^\n]*)")
_GUARD_EQ = re.compile(r"^Eq\((?P<symbol>s\d+), (?P<value>-?\d+)\)$")
_UNSUPPORTED = re.compile(
    r"(?:No decompositions registered for|Unsupported FX nodes?|not supported|"
    r"Cannot find symbolic function for|Exporting the operator) ?:?\s*(?P<what>[^\n]*)",
    re.IGNORECASE,
)


def describe_location(filename: str, line: int, func: str | None = None) -> str:
    """``"model.py:12 in forward: `if x.sum() > 0:`"`` (the source line when readable)."""
    text = f"{filename}:{line}"
    if func:
        text += f" in {func}"
    source = linecache.getline(filename, line).strip()
    if source:
        text += f": `{source}`"
    return text


def user_frame(exc: BaseException) -> str | None:
    """The innermost frame of user code in ``exc``'s traceback chain, described."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if is_user_file(frame.filename) and frame.lineno is not None:
                found = describe_location(frame.filename, frame.lineno, frame.name)
        current = current.__cause__ or current.__context__
    return found


@dataclass(frozen=True)
class GuardSite:
    """Where the exporter fixed a size to a constant (a guard like ``Eq(s70, 8)``).

    ``module`` is the innermost ``nn.Module`` whose ``forward`` was running (``"nn.LSTM"`` for
    torch's own modules, ``package.module.Class`` for a library's, the class name for the
    user's), ``module_path`` its attribute path in the model (``"encoder.lstm"``), ``origin``
    whose code that ``forward`` is (``frame_origin``), and ``location`` the innermost frame of
    the user's code then running, described: the line that fixed the size when ``origin`` is
    ``user``, else the line that called the module that did.
    """

    expression: str
    location: str | None = None
    module: str | None = None
    module_path: str | None = None
    origin: str | None = None

    @property
    def in_users_code(self) -> bool:
        return self.origin in (None, "user")

    def to_dict(self) -> dict[str, Any]:
        facts = {
            "guard": self.expression,
            "module": self.module,
            "module_path": self.module_path,
            "module_origin": self.origin,
        }
        return facts if self.in_users_code else {**facts, "called_at": self.location}


@dataclass
class ExporterLog:
    """Log records of torch's loggers while an exporter runs, captured instead of printed.

    ``sites`` are the ``GuardSite`` of every guard that fixed a size to a constant, found from
    the Python stack when torch logged the guard (the stack names the module that did it even
    when torch's own record points into its internals); ``guards`` are ``(expression,
    location)`` pairs of the guards with a known location.
    """

    records: list[logging.LogRecord] = field(default_factory=list)
    output: io.StringIO = field(default_factory=io.StringIO)
    sites: list[GuardSite] = field(default_factory=list)

    @property
    def guards(self) -> list[tuple[str, str]]:
        found = [(s.expression, s.location) for s in self.sites if s.location and s.in_users_code]
        known = {s.expression for s in self.sites}
        for record in self.records:
            args = record.args
            if not (_is_guard(record) and isinstance(args, tuple)):
                continue
            expression, where = str(args[1]), _guard_location(args[2])
            if where is not None and expression not in known:
                found.append((expression, where))
        return found

    def specialization_site(self, value: int | None = None) -> GuardSite | None:
        """The site where a size was fixed to ``value`` (any constant when None), or None."""
        for guard in self.sites:
            match = _GUARD_EQ.match(guard.expression)
            if match and (value is None or int(match["value"]) == value):
                return guard
        return None

    def specialization(self, value: int | None = None) -> str | None:
        """Where the user's code fixed a size to ``value`` (any constant when None), or None
        (also when torch's or a library's module fixed it: see ``specialization_site``)."""
        site = self.specialization_site(value)
        if site is not None:
            return site.location if site.in_users_code else None
        for expression, where in self.guards:
            match = _GUARD_EQ.match(expression)
            if match and (value is None or int(match["value"]) == value):
                return where
        return None

    def messages(self, limit: int = 10) -> list[str]:
        """The last warning-or-worse messages (for the failure's details)."""
        texts = []
        for record in self.records:
            if record.levelno >= logging.WARNING:
                with contextlib.suppress(Exception):
                    texts.append(record.getMessage()[:300])
        return texts[-limit:]


def describe_site(site: GuardSite) -> str:
    """``"nn.LSTM `lstm` (called at model.py:21 in forward: `...`)"`` or the user's line."""
    if site.in_users_code or not site.module:
        return site.location or site.expression
    text = site.module + (f" `{site.module_path}`" if site.module_path else "")
    return text + (f" (called at {site.location})" if site.location else "")


def _is_guard(record: logging.LogRecord) -> bool:
    return (
        "[guard added]" in str(record.msg)
        and isinstance(record.args, tuple)
        and len(record.args) >= 3
    )


def _guard_site(expression: str, sloc: Any) -> GuardSite:
    """The ``GuardSite`` of a guard being added now, from the current Python stack.

    Walks outwards from the logging call: the first frame of user code is the location, the
    first ``forward`` of an ``nn.Module`` the module that fixed the size; the walk ends at this
    package's export wrapper, whose callers are not the model.
    """
    nn = getattr(sys.modules.get("torch"), "nn", None)
    location: str | None = None
    modules: list[tuple[Any, str]] = []
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        origin = frame_origin(code.co_filename)
        if origin == "ours" and code.co_name == "forward":
            break
        if location is None and origin == "user":
            location = describe_location(code.co_filename, frame.f_lineno, code.co_name)
        if nn is not None and code.co_name == "forward":
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and not any(owner is m for m, _ in modules):
                modules.append((owner, origin))
        frame = frame.f_back
    if location is None:
        location = _guard_location(sloc)
    if not modules:
        return GuardSite(expression, location)
    inner, origin = modules[0]
    root = modules[-1][0]
    path = None
    if inner is not root:
        path = next((name for name, m in root.named_modules() if m is inner), None)
    return GuardSite(expression, location, _module_name(inner, origin), path, origin)


def _module_name(module: Any, origin: str) -> str:
    cls = type(module)
    if origin == "torch" and cls.__module__.startswith("torch.nn."):
        return f"nn.{cls.__qualname__}"
    if origin in ("torch", "library"):
        return f"{cls.__module__}.{cls.__qualname__}"
    return str(cls.__qualname__)


def _guard_location(sloc: Any) -> str | None:
    """The user frame of a guard's source location (torch's ``SLoc`` or a plain string)."""
    for attribute in ("maybe_user_loc", "framework_loc"):
        frame = getattr(sloc, attribute, None)
        filename = getattr(frame, "filename", None)
        lineno = getattr(frame, "lineno", None)
        if filename and lineno and is_user_file(filename):
            return describe_location(filename, int(lineno), getattr(frame, "name", None))
    return None


class _Capture(logging.Handler):
    def __init__(self, log: ExporterLog) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.records.append(record)
        args = record.args
        if not (_is_guard(record) and isinstance(args, tuple) and _GUARD_EQ.match(str(args[1]))):
            return
        try:
            site = _guard_site(str(args[1]), args[2])
        except Exception:  # a model whose modules cannot be walked: torch's own location
            site = GuardSite(str(args[1]), _guard_location(args[2]))
        self.log.sites.append(site)


_CAPTURED_LEVELS = {"torch.fx.experimental.symbolic_shapes": logging.INFO}


@contextlib.contextmanager
def quiet_exporter() -> Iterator[ExporterLog]:
    """Capture torch's and onnxscript's log records, printed output and warnings while exporting.

    ``torch.export`` prints whole graphs to stderr when it fails, and the ONNX exporter prints
    its progress to stdout; both go to ``ExporterLog.output`` instead of the test log.
    Loggers are restored afterwards (handlers, level, propagation). Warnings raised by the
    exporters (deprecations, TracerWarnings) are recorded, not raised: a project that turns
    warnings into errors must not have its export fail on torch's own deprecation notices.
    The TorchScript exporter reads TracerWarnings from ``warnings.catch_warnings`` itself.
    """
    log = ExporterLog()
    handler = _Capture(log)
    saved: list[tuple[logging.Logger, list[logging.Handler], int, bool]] = []
    names = [
        name
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
        and name.split(".")[0] in ("torch", "onnxscript", "onnx_ir")
        and (logger.handlers or name in _CAPTURED_LEVELS or "." not in name)
    ]
    names.extend(n for n in _CAPTURED_LEVELS if n not in names)
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
        if name in _CAPTURED_LEVELS:
            logger.setLevel(_CAPTURED_LEVELS[name])
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(log.output),
            contextlib.redirect_stderr(log.output),
        ):
            warnings.simplefilter("ignore")
            yield log
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate


@dataclass(frozen=True)
class ExportFailure:
    """One export failure: its kind, a cause that says what and how to fix, and where."""

    kind: str
    cause: str
    location: str | None
    exception: str
    #: More facts for the report (the module that fixed a size, whose code it is).
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cause": self.cause,
            "location": self.location,
            "exception": self.exception,
            **self.facts,
        }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_lines(text: str, limit: int = _MAX_CAUSE) -> str:
    """The first meaningful line of an exception text; for the ONNX exporter's report, the
    line after its "## Exception summary" heading (the underlying error)."""
    text = _ANSI.sub("", text)
    _, sep, tail = text.partition("## Exception summary")
    if sep:
        text = tail
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _summary(exc: BaseException) -> str:
    """The exception chain's text (the ONNX exporter wraps torch.export's error)."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _specialized_outside_user_code(
    axis: str, value: int, site: GuardSite, fmt: str, exception: str
) -> ExportFailure:
    """A size fixed inside a module of torch or of a library: not the user's code to change."""
    owner = "torch" if site.origin == "torch" else str(site.module).split(".")[0]
    where = describe_site(site)
    if site.origin == "torch":
        why = (
            f"the cause is in torch, not in your code: torch.export traces {site.module} for "
            f"one {axis} length (this torch version specialises it)."
        )
    else:
        why = (
            f"the cause is in {owner}'s code, not in yours: it turns the size into a Python "
            f"number; a newer {owner} release may keep it symbolic."
        )
    others = "torchscript, onnx or pytorch" if fmt == "torch_export" else "another format"
    cause = (
        f"the {axis} dimension was fixed to the constant {value} inside {where}: {why} The "
        f"{fmt} artifact would only accept {axis} {value}. Export this model with {others} "
        "instead (--export-formats; the ONNX export falls back to the TorchScript-based "
        "exporter, or choose it with --export-onnx-exporter legacy), or leave "
        f"{fmt} out of --export-formats if you do not ship it."
    )
    # No location: the user's code is not the cause (an ONNX export may then fall back).
    return ExportFailure(
        "specialized_dimension", cause, None, exception, {"cause_in": site.origin, **site.to_dict()}
    )


def explain_export_error(
    exc: BaseException, fmt: str, log: ExporterLog | None = None
) -> ExportFailure:
    """Classify ``exc`` raised while exporting ``fmt`` into one actionable cause."""
    text = _ANSI.sub("", _summary(exc))
    exception = f"{type(exc).__name__}: {_first_lines(str(exc))}"
    log = log or ExporterLog()
    where = _RAISED_AT.search(text)
    raised_at = (
        describe_location(where["file"], int(where["line"]), where["func"])
        if where and is_user_file(where["file"])
        else None
    )
    if "timed out after" in text and type(exc).__name__ == "ModelTimeoutError":
        return ExportFailure(
            "timeout",
            f"{exc}; raise --modeltiers-timeout if the model is large, or export fewer "
            "formats with --export-formats",
            None,
            exception,
        )
    if "data-dependent" in text or "GuardOnDataDependentSymNode" in text:
        location = raised_at or log.specialization() or user_frame(exc)
        at = f" at {location}" if location else ""
        return ExportFailure(
            "data_dependent_control_flow",
            f"data-dependent control flow{at}: the code branches on (or reads) the value of a "
            "tensor, which an exported graph cannot do; the artifact would follow one branch "
            "for every input. Compute both branches and select with torch.where, use "
            "torch.cond, or decide from shapes only.",
            location,
            exception,
        )
    special = _SPECIALIZED.search(text)
    if special is not None:
        axis, value = special["axis"], int(special["value"])
        site = log.specialization_site(value)
        if site is not None and not site.in_users_code and site.module:
            return _specialized_outside_user_code(axis, value, site, fmt, exception)
        location = log.specialization(value) or raised_at or user_frame(exc)
        at = f" at {location}" if location else ""
        return ExportFailure(
            "specialized_dimension",
            f"the {axis} dimension was fixed to the constant {value}{at}: the code turns the "
            "size into a Python number (int(x.shape[1]), .item(), .tolist(), torch.tensor of a "
            "Python list, range(len(...))), so the artifact would only accept that size. Keep "
            "sizes symbolic: build positions with torch.arange(x.shape[1]) and index with "
            "tensors.",
            location,
            exception,
            {"cause_in": "user", **(site.to_dict() if site is not None else {})},
        )
    narrower = _NARROWER.search(text)
    if narrower is not None:
        location = raised_at or user_frame(exc)
        at = f" (guard added at {location})" if location else ""
        return ExportFailure(
            "constrained_dimension",
            f"the {narrower['axis']} dimension only works in a narrower range than the task "
            f"allows{at}: {_first_lines(narrower['rest'], 300)}. Make the model accept every "
            "size up to the task's maximum, or lower the task's max_seq_len.",
            location,
            exception,
        )
    unsupported = _UNSUPPORTED.search(text)
    if unsupported is not None:
        location = raised_at or user_frame(exc)
        at = f" (called at {location})" if location else ""
        return ExportFailure(
            "unsupported_operator",
            f"the {fmt} exporter cannot convert an operator{at}: "
            f"{_first_lines(unsupported.group(0), 300)}. Replace the operation with a "
            "supported one, or leave this format out with --export-formats.",
            location,
            exception,
        )
    location = raised_at or user_frame(exc)
    at = f" at {location}" if location else ""
    return ExportFailure(
        "exception",
        f"the exporter raised {exception}{at}",
        location,
        exception,
    )
