"""Timing: elapsed time of a check, and latency as median and p90 (a forward pass, an artifact).

PYTEST_DONT_REWRITE

Each callable runs ``warmup`` untimed calls, then ``iterations`` calls timed one by one with
``time.perf_counter``. The median, not the mean, is what budgets and speed-ups use: one
scheduling hiccup on a shared CI runner moves the mean and the max, not the median. p90 shows
the tail. Formats are timed interleaved round by round (eager, onnx, ..., then again), so a
burst of load on the machine hits every format alike instead of whichever ran during it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["elapsed", "percentile", "summarize_times", "time_interleaved"]


def elapsed(start: float) -> float:
    """Seconds since ``start`` (a ``time.perf_counter()`` reading), never negative."""
    return max(0.0, time.perf_counter() - start)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values by linear interpolation (numpy's default)."""
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize_times(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {
        "median_ms": percentile(ordered, 0.5),
        "p90_ms": percentile(ordered, 0.9),
        "mean_ms": sum(ordered) / len(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "iterations": len(ordered),
    }


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]], *, warmup: int = 3, iterations: int = 20
) -> dict[str, dict[str, float]]:
    """``{name: summarize_times(...)}`` for each zero-argument callable, timed round-robin."""
    if iterations < 1:
        raise ValueError(f"iterations={iterations}; it must be >= 1")
    for _ in range(max(0, warmup)):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: summarize_times(values) for name, values in times.items()}
