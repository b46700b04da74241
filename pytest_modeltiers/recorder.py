"""Collecting what a built-in suite test's check calls returned, one verdict per test.

PYTEST_DONT_REWRITE

A suite test calls its check once per Hypothesis example (and once per swept shape). The
report must show one ``CheckResult`` per test that agrees with pytest's outcome: the failing
result when the test failed (Hypothesis replays the shrunk example last, so the last failure
is the minimal one), else a passed or warning result that says how many inputs were tried.
"""

from __future__ import annotations

import dataclasses

import pytest

from pytest_modeltiers.report import CheckResult, CheckStatus

_FAILING = (CheckStatus.FAILED, CheckStatus.ERROR)


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
            return failures[-1]
        warnings = [r for r in self.results if r.status is CheckStatus.WARNING]
        chosen = warnings[-1] if warnings else self.results[-1]
        ran = [r for r in self.results if r.status is not CheckStatus.SKIPPED]
        if not ran:
            return chosen
        details = {**chosen.details, "inputs_checked": len(ran)}
        return dataclasses.replace(chosen, details=details)


RECORDER_KEY = pytest.StashKey[CheckRecorder]()
