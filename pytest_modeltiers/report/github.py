"""GitHub Actions, natively: the health report in the job summary, one annotation per failure.

PYTEST_DONT_REWRITE

Under GitHub Actions (``GITHUB_ACTIONS=true``) a session appends the health report's Markdown to
``$GITHUB_STEP_SUMMARY`` (the page of the job) and prints one ``::error`` workflow command per
failed check, so the pull request shows the failure on the line of the user's model that caused
it. The line is, best first: the model file's frame the check recorded (``details["location"]``,
an export failure's ``location``, the innermost of ``user_frames``), the model file's innermost
frame in the test's traceback, another file of the workspace in either; else the model file with
no line. Paths are written relative to ``$GITHUB_WORKSPACE`` (else the rootdir), as GitHub
matches them against the checkout.

Only the controller of an xdist run writes, once, and the summary is appended with one
``O_APPEND`` write under an exclusive ``flock``, so concurrent steps writing the same file never
interleave. Standard library and pytest only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.report.check_result import CheckResult, CheckStatus

__all__ = [
    "Annotation",
    "GitHubActions",
    "annotation_for",
    "append_step_summary",
    "escape_data",
    "escape_property",
    "github_actions_active",
    "step_summary_path",
    "traceback_locations",
]

#: ``model.py:12``, ``model.py:12 in forward: `code```, ``/abs/model.py:12: code``.
_LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?=$|\s|:)")
#: GitHub shows the first lines of an annotation; a check's message stays whole up to this.
MAX_MESSAGE = 4000


def github_actions_active(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a GitHub Actions job (the runner sets ``GITHUB_ACTIONS=true``)."""
    return environ.get("GITHUB_ACTIONS", "").lower() == "true"


def step_summary_path(setting: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The job summary file a session appends to: None when off or outside GitHub Actions."""
    summary = environ.get("GITHUB_STEP_SUMMARY")
    if setting == "off" or not github_actions_active(environ) or not summary:
        return None
    return Path(summary).absolute()


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as the runner unescapes it (``%``, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``file=``, ``title=``): ``:`` and ``,`` too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotation:
    """One ``::error`` workflow command: where (file, line) and what (title, message)."""

    file: str
    line: int | None
    title: str
    message: str

    def command(self) -> str:
        properties = [f"file={escape_property(self.file)}"]
        if self.line is not None:
            properties.append(f"line={self.line}")
        properties.append(f"title={escape_property(self.title)}")
        return f"::error {','.join(properties)}::{escape_data(self.message)}"


def _parse_location(text: Any) -> tuple[str, int] | None:
    if not isinstance(text, str):
        return None
    match = _LOCATION.match(text.strip())
    return (match["file"], int(match["line"])) if match else None


def check_locations(result: CheckResult) -> list[tuple[str, int]]:
    """The places a check's details name, innermost last (its ``location`` last of all)."""
    details = result.details
    found: list[tuple[str, int]] = []
    frames = details.get("user_frames")
    if isinstance(frames, list):
        found.extend(loc for loc in map(_parse_location, frames) if loc is not None)
    for key in ("called_at", "location"):
        loc = _parse_location(details.get(key))
        if loc is not None:
            found.append(loc)
    return found


def traceback_locations(longrepr: Any) -> list[tuple[str, int]]:
    """The ``(path, line)`` of each entry of a test report's traceback, innermost last.

    Works on pytest's own representation and on the one xdist carries to the controller; a
    representation without file locations (``--tb=native``, a plain string) gives none.
    """
    chain = getattr(longrepr, "chain", None)
    tracebacks = (
        [part[0] for part in chain] if chain else [getattr(longrepr, "reprtraceback", None)]
    )
    found: list[tuple[str, int]] = []
    for reprtraceback in tracebacks:
        for entry in getattr(reprtraceback, "reprentries", None) or ():
            location = getattr(entry, "reprfileloc", None)
            if location is not None and isinstance(getattr(location, "lineno", None), int):
                found.append((str(location.path), location.lineno))
    return found


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def annotation_for(
    result: CheckResult,
    *,
    model_files: Sequence[Path],
    traceback: Sequence[tuple[str, int]] = (),
    base: Path,
    workspace: Path,
    rootdir: Path | None = None,
) -> Annotation:
    """The annotation of a failed check, on the line of the model where the failure comes from.

    ``model_files`` are the loaded models' source files (absolute), ``traceback`` the test
    report's locations, ``base`` the folder relative locations are relative to (the session's
    working directory), ``workspace`` where the checkout is (``$GITHUB_WORKSPACE``).
    """
    models = [m.resolve() for m in model_files]
    # The check's own locations first, then the traceback's; innermost last in each.
    groups = [
        [
            ((Path(file) if Path(file).is_absolute() else base / file).resolve(), line)
            for file, line in source
        ]
        for source in (check_locations(result), traceback)
    ]
    chosen: tuple[Path, int | None] | None = None
    for wanted in (lambda p: p in models, lambda p: _workspace_file(p, workspace)):
        for group in groups:
            hits = [(p, line) for p, line in group if wanted(p)]
            if hits:
                chosen = hits[-1]
                break
        if chosen is not None:
            break
    if chosen is None:  # no line known: the model file (an installed model's: the workspace)
        chosen = (models[0], None) if models else (workspace, None)
    file = _relative(chosen[0], workspace, rootdir)
    title = f"modeltiers tier {result.tier}: {result.check_name}"
    if result.model:
        title += f" ({result.model})"
    message = result.message or result.status.value
    if result.nodeid:
        message += f"\n{result.nodeid}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return Annotation(file, chosen[1], title, message)


def _installed_roots() -> list[Path]:
    """Where installed code lives (site-packages, this plugin): never the user's own file."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [
        paths.get("purelib"),
        paths.get("platlib"),
        paths.get("stdlib"),
        *site.getsitepackages(),
    ]
    return [Path(root).resolve() for root in roots if root] + [Path(__file__).resolve().parents[1]]


def _workspace_file(path: Path, workspace: Path) -> bool:
    """A file of the checkout, not of an installed package or this plugin."""
    return _within(path, workspace) and not any(_within(path, r) for r in _installed_roots())


def _relative(path: Path, workspace: Path, rootdir: Path | None) -> str:
    for folder in (workspace, rootdir):
        if folder is not None and _within(path, folder.resolve()):
            return path.relative_to(folder.resolve()).as_posix() or "."
    return path.as_posix()


def append_step_summary(path: str | os.PathLike[str], markdown: str) -> None:
    """Append ``markdown`` to the job summary in one write, under an exclusive lock.

    ``O_APPEND`` makes the write land at the end even when another process appends too; the
    ``flock`` keeps a reader (or a writer on a file system where appends are not atomic) from
    seeing half of it.
    """
    import fcntl

    data = (markdown.rstrip("\n") + "\n\n").encode("utf-8")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write: the rest, still at the end
                written += os.write(fd, data[written:])
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(eq=False)
class GitHubActions:
    """The session's GitHub Actions output, registered as a plugin in the controller only.

    ``checks`` returns the session's results so far, ``markdown`` the health report's Markdown,
    ``model_files`` the loaded models' files.
    """

    checks: Callable[[], Iterable[CheckResult]]
    markdown: Callable[[pytest.Session], str]
    model_files: Sequence[Path]
    base: Path
    rootdir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    tracebacks: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    summary_written: bool = False

    @property
    def workspace(self) -> Path:
        configured = self.environ.get("GITHUB_WORKSPACE")
        return Path(configured).resolve() if configured else self.rootdir.resolve()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.tracebacks.setdefault(report.nodeid, []).extend(
                traceback_locations(report.longrepr)
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        summary = self.environ.get("GITHUB_STEP_SUMMARY")
        if self.summary_written or not summary or not list(self.checks()):
            return
        try:
            append_step_summary(summary, self.markdown(session))
        except OSError as exc:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"modeltiers: GITHUB_STEP_SUMMARY {summary} not written: {exc}; check that "
                    "the step runs on a GitHub runner, or pass --modeltiers-github off"
                )
        self.summary_written = True

    def annotations(self) -> list[Annotation]:
        """One per failed or errored check, in the order they finished."""
        return [
            annotation_for(
                check,
                model_files=self.model_files,
                traceback=self.tracebacks.get(check.nodeid or "", ()),
                base=self.base,
                workspace=self.workspace,
                rootdir=self.rootdir,
            )
            for check in self.checks()
            if check.status in (CheckStatus.FAILED, CheckStatus.ERROR)
        ]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for annotation in self.annotations():
            terminalreporter.write_line(annotation.command())
