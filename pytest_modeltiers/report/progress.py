"""Progress of long checks in the terminal: a live line on a TTY, one line per stage elsewhere.

PYTEST_DONT_REWRITE

A three-minute training run used to show one dot. ``progress_for(config)`` gives the running
check a ``Progress`` that writes through pytest's terminal reporter, past output capture (as
pytest's live logging does): on a terminal, a line rewritten in place at most twice a second
(``tier 3 training: step 40/64, loss 0.532, ETA 6 s``) and cleared when the stage ends; in a CI
log or a pipe, one line when each stage ends (``modeltiers: tier 3 training: 64 steps in 12.1 s,
loss 0.213``), so logs stay short. Without a terminal reporter (an xdist worker, ``-p
no:terminal``) nothing is written. Standard library and pytest only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "Stage", "progress_for"]

#: Seconds between two rewrites of the live line.
REFRESH_SECONDS = 0.5


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class Stage:
    """One stage of a check (a training run, one export, a profile): its counts and last words."""

    progress: Progress
    title: str
    total: int | None = None
    unit: str = "steps"
    done: int = 0
    note: str = ""
    started: float = field(default=0.0)
    _shown: float = field(default=float("-inf"))

    def update(self, done: int, *, total: int | None = None, note: str = "") -> None:
        """``done`` of ``total`` units so far; on a terminal the live line shows it with an ETA."""
        self.done = done
        if total is not None:
            self.total = total
        if note:
            self.note = note
        now = self.progress.clock()
        if self.progress.live and now - self._shown >= REFRESH_SECONDS:
            self._shown = now
            self.progress.show(self.live_text(now))

    def live_text(self, now: float) -> str:
        elapsed = now - self.started
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        text = f"modeltiers: {self.title}: " + (
            f"{self.unit} {count}" if self.total or self.done else f"running {_duration(elapsed)}"
        )
        if self.note:
            text += f", {self.note}"
        if self.total and 0 < self.done < self.total:
            text += f", ETA {_duration(elapsed / self.done * (self.total - self.done))}"
        return text

    def final_text(self, now: float) -> str:
        count = f"{self.done} {self.unit} in " if self.done else ""
        text = f"modeltiers: {self.title}: {count}{_duration(now - self.started)}"
        return f"{text}, {self.note}" if self.note else text


@dataclass
class Progress:
    """Where a check reports its progress; ``write`` is None when nobody can see it."""

    write: Callable[[str], None] | None
    live: bool
    clock: Callable[[], float] = time.monotonic
    _width: int = 0

    @contextlib.contextmanager
    def stage(
        self, title: str, *, total: int | None = None, unit: str = "steps"
    ) -> Iterator[Stage]:
        """A stage: shown live while it runs (terminal), one line when it ends (elsewhere)."""
        current = Stage(self, title, total, unit, started=self.clock())
        if self.live:
            current.update(0)
        try:
            yield current
        finally:
            if self.write is not None:
                if self.live:
                    self.clear()
                else:
                    self.write(current.final_text(self.clock()) + "\n")

    def show(self, text: str) -> None:
        if self.write is None:
            return
        padding = " " * max(self._width - len(text), 0)
        self._width = len(text)
        self.write(f"\r{text}{padding}")

    def clear(self) -> None:
        if self.write is not None and self._width:
            self.write("\r" + " " * self._width + "\r")
            self._width = 0


def progress_for(config: Any) -> Progress:
    """The progress of a check run by ``config``'s session (nothing written when no terminal)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or hasattr(config, "workerinput"):
        return Progress(None, live=False)
    live = bool(reporter.isatty())

    def write(text: str) -> None:
        guard = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with guard:
            reporter.ensure_newline()  # off the line of dots (pytest starts a new one after)
            reporter.write(text, flush=True)

    return Progress(write, live=live)
