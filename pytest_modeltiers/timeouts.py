"""Bounding user code in time: a model that hangs fails with "timed out after N s".

PYTEST_DONT_REWRITE

On the main thread of a POSIX process (pytest's usual case, xdist workers included) the bound
is a real-time interval timer whose signal raises ``ModelTimeoutError`` inside the running
code, so the session continues cleanly. Elsewhere (a non-main thread, Windows) the code runs in
a daemon thread that is abandoned when time runs out: the caller still gets the error, but the
runaway thread keeps its CPU until the process ends. Code blocked inside a C call that never
returns to Python (a deadlocked kernel) is only interrupted when it returns.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from pytest_modeltiers.errors import ModelTiersError

T = TypeVar("T")


class ModelTimeoutError(ModelTiersError):
    """User code ran past its time budget."""


class CheckTimeout(BaseException):
    """A built-in check ran past ``--modeltiers-timeout``.

    A ``BaseException`` on purpose: Hypothesis treats an ``Exception`` raised inside a property
    as a failure to shrink, which would run the hanging model again and again; this one passes
    straight through to the plugin, which fails the check with its message.
    """


def _can_use_signals() -> bool:
    return (
        sys.platform != "win32"
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )


@contextmanager
def _alarm(
    seconds: float, what: str, error: type[BaseException] = ModelTimeoutError
) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise error(f"{what} timed out after {seconds:g} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


@contextmanager
def check_deadline(seconds: float, what: str) -> Iterator[bool]:
    """Raise ``CheckTimeout`` in the block past ``seconds``; yields whether the bound is active.

    Only the main thread of a POSIX process can be interrupted; elsewhere the block runs
    unbounded and the caller is told so by the yielded ``False``.
    """
    if not _can_use_signals():
        yield False
        return
    with _alarm(seconds, what, CheckTimeout):
        yield True


def call_with_timeout(fn: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``fn()``; raise ``ModelTimeoutError("<what> timed out after N s")`` past ``seconds``."""
    if _can_use_signals():
        with _alarm(seconds, what):
            return fn()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the calling thread below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"modeltiers: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise ModelTimeoutError(f"{what} timed out after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
