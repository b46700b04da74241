"""Collecting what a built-in suite test's check calls returned, one verdict per test.

PYTEST_DONT_REWRITE

A suite test calls its check once per Hypothesis example (and once per swept shape). The
report must show one ``CheckResult`` per test that agrees with pytest's outcome: the failing
result when the test failed (Hypothesis replays the shrunk example last, so the last failure
is the minimal one), else a passed or warning result that says how many inputs were tried.
A check that puts a ``point`` in its details (the input's batch size and length and the value
it measured) gets the ``points`` of every call in the verdict, for the report's plots.
"""

from __future__ import annotations

import dataclasses

import pytest

from pytest_modeltiers.report import CheckResult, CheckStatus

_FAILING = (CheckStatus.FAILED, CheckStatus.ERROR)
#: At most this many ``points`` are kept (the largest values), to keep the report small.
MAX_POINTS = 200


class CheckRecorder:
    """Results of one test's check calls, reduced to the test's verdict by ``final``."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def record(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        return result

    def final(self) -> CheckResult | None:
        if not self.results:
            return None
        failures = [r for r in self.results if r.status in _FAILING]
        if failures:
            return self._with_points(failures[-1], {})
        warnings = [r for r in self.results if r.status is CheckStatus.WARNING]
        chosen = warnings[-1] if warnings else self.results[-1]
        ran = [r for r in self.results if r.status is not CheckStatus.SKIPPED]
        if not ran:
            return chosen
        return self._with_points(chosen, {"inputs_checked": len(ran)})

    def _with_points(self, chosen: CheckResult, extra: dict[str, object]) -> CheckResult:
        """``chosen`` with ``extra`` and, when its calls measured points, their ``points``:
        one per distinct batch size and length, the largest value of each numeric field."""
        merged: dict[tuple[object, object], dict[str, object]] = {}
        for result in self.results:
            point = result.details.get("point")
            if not isinstance(point, dict):
                continue
            key = (point.get("batch"), point.get("length"))
            kept = merged.setdefault(key, dict(point))
            for name, value in point.items():
                old = kept.get(name)
                if isinstance(value, (int, float)) and isinstance(old, (int, float)):
                    kept[name] = max(old, value)
        if not merged and not extra:
            return chosen
        details = {k: v for k, v in chosen.details.items() if k != "point"}
        details.update(extra)
        if merged:
            points = sorted(merged.values(), key=_point_order)
            if len(points) > MAX_POINTS:
                points = sorted(points, key=_point_value, reverse=True)[:MAX_POINTS]
                points.sort(key=_point_order)
            details["points"] = points
        return dataclasses.replace(chosen, details=details)


def _point_order(point: dict[str, object]) -> tuple[int, int]:
    batch, length = point.get("batch"), point.get("length")
    return (
        batch if isinstance(batch, int) else -1,
        length if isinstance(length, int) else -1,
    )


def _point_value(point: dict[str, object]) -> float:
    """The largest measured number of a point (batch size and length are not measurements)."""
    values = [
        float(value)
        for name, value in point.items()
        if name not in ("batch", "length") and isinstance(value, (int, float))
    ]
    return max(values, default=0.0)


RECORDER_KEY = pytest.StashKey[CheckRecorder]()
