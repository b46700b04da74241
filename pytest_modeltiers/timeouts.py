"""Bounding user code in time: a model that hangs fails with "timed out after N s".

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
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


#: The shortest time a check may take to stop after its timeout signal.
MIN_GRACE_SECONDS = 2.0


def grace_period(timeout: float) -> float:
    """How long past its deadline a check may run before the watchdog gives up on it."""
    return max(MIN_GRACE_SECONDS, timeout / 2)


@contextmanager
def check_deadline(
    seconds: float, what: str, *, on_stuck: Callable[[float], object] | None = None
) -> Iterator[bool]:
    """Raise ``CheckTimeout`` in the block past ``seconds``; yields whether the bound is active.

    Only the main thread of a POSIX process can be interrupted; elsewhere the block runs
    unbounded and the caller is told so by the yielded ``False``. With ``on_stuck``, a watchdog
    thread calls ``on_stuck(grace)`` if the block is still running ``grace_period(seconds)``
    after the deadline, whether or not the signal could be used; it is cancelled when the
    block ends.
    """
    watchdog = None
    if on_stuck is not None:
        grace = grace_period(seconds)
        watchdog = threading.Timer(seconds + grace, on_stuck, (grace,))
        watchdog.name = f"modeltiers watchdog: {what}"
        watchdog.daemon = True
        watchdog.start()
    try:
        if not _can_use_signals():
            yield False
        else:
            with _alarm(seconds, what, CheckTimeout):
                yield True
    finally:
        if watchdog is not None:
            watchdog.cancel()


def main_thread_stack() -> str:
    """The main thread's current stack, innermost frame last, as a traceback prints it.

    The outer frames of the test runner (pytest, pluggy, the interpreter's start-up) come
    before the test function and say nothing about the model; they are left out.
    """
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    if frame is None:
        return "  (the main thread has ended)\n"
    frames = traceback.extract_stack(frame)
    start = 0
    while start < len(frames) - 1 and _is_runner_frame(frames[start].filename):
        start += 1
    return "".join(traceback.format_list(frames[start:]))


def _is_runner_frame(filename: str) -> bool:
    parts = set(re.split(r"[\\/]", filename))
    return filename.startswith("<frozen") or bool(parts & {"_pytest", "pluggy", "pytest"})


def end_process(code: int) -> None:
    """Flush the standard streams and end the process at once (no cleanup can hang it)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to save
            stream.flush()
    os._exit(code)


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
