"""The run state of one pytest session: resolved options and the models they name.

PYTEST_DONT_REWRITE

One ``ModelTiersSession`` lives in ``config.stash``. It reads the options once, loads each
model when the session starts (a broken model file becomes a ``pytest.UsageError`` naming the
problem and the fix, never an INTERNALERROR), and keeps the loaded models for the fixtures.
Only the standard library and pytest are imported at module level; the model loader, which
needs torch, is imported when a model is actually named.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import os
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.options import (
    MODEL_FLAG,
    OPTIONS,
    OptionValueError,
    default_profile,
    option_named,
    resolve_value,
)
from pytest_modeltiers.recorder import RECORDER_KEY
from pytest_modeltiers.suites import NODEID_PREFIX, is_suite_nodeid, suite_paths
from pytest_modeltiers.timeouts import CheckTimeout, check_deadline

if TYPE_CHECKING:
    from pytest_modeltiers.models.loader import LoadedModel
    from pytest_modeltiers.report import CheckResult, HealthReport

SESSION_KEY = pytest.StashKey["ModelTiersSession"]()
VERDICT_KEY = pytest.StashKey["CheckResult | None"]()


_SUITE_TEST = re.compile(r"^modeltiers/tier(?P<tier>\d)\.py::(?P<name>\w+)(\[(?P<param>.*)\])?$")


@dataclass(eq=False)
class ModelTiersSession:
    """Options of this run, the models loaded for it, and the checks' results.

    Registered as a plugin for the session: its hook methods add the built-in suites to the
    collection, bound each check in time, and gather one ``CheckResult`` per suite test from the
    test reports (which xdist carries to the controller), so the report written at the end
    agrees with pytest's outcomes with or without ``-n``.
    """

    values: dict[str, Any]
    rootdir: Path
    model_flag_taken: bool = False
    models: dict[str, LoadedModel] = field(default_factory=dict)
    previous_profile: str | None = None
    froze_gc: bool = False
    checks: list[CheckResult] = field(default_factory=list)
    report_paths: tuple[Path, Path] | None = None
    score_failed: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config, *, model_flag_taken: bool) -> ModelTiersSession:
        values: dict[str, Any] = {}
        for option in OPTIONS:
            try:
                values[option.dest] = resolve_value(
                    option, config.getoption(option.dest), config.getini(option.ini_name)
                )
            except OptionValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        if values["modeltiers_profile"] is None:
            values["modeltiers_profile"] = default_profile()
        return cls(values=values, rootdir=config.rootpath, model_flag_taken=model_flag_taken)

    @property
    def model_specs(self) -> list[str]:
        specs: list[str] = self.values["modeltiers_model"]
        return specs

    @property
    def model_keys(self) -> list[str]:
        return list(self.models)

    @property
    def timeout(self) -> float:
        seconds: float = self.values["modeltiers_timeout"]
        return seconds

    def start(self, workerinput: dict[str, Any] | None = None) -> None:
        """Load every named model; a problem with one is a usage error that names the fix."""
        if not self.model_specs:
            return
        with _collector_paused():
            from pytest_modeltiers.models.loader import LoadRequest, load_model
            from pytest_modeltiers.profiles import load_profile
            from pytest_modeltiers.threads import share_cpus_between_workers

            self.previous_profile = load_profile(self.values["modeltiers_profile"])
        self.froze_gc = True
        if workerinput is not None:
            share_cpus_between_workers(int(workerinput.get("workercount", 1)))
        for spec in self.model_specs:
            request = LoadRequest.from_options(spec, self.values, self.rootdir)
            try:
                loaded = load_model(request)
            except ModelTiersError as exc:
                raise pytest.UsageError(f"--model {spec}: {exc}") from None
            self.models[self._unique_key(loaded.name)] = loaded
        # torch, Hypothesis and the models stay loaded for the whole session. Moving what exists
        # now into the permanent generation spares the session's garbage collections (pytest's
        # own at the end included) from scanning it: 0.15 s of a 2.6 s tier 1 run on a small
        # model (benchmarks/bench_tier1.py). Garbage made by the tests is collected as usual;
        # ``thaw_heap`` unfreezes after pytest's final collection, and the interpreter's exit
        # freezes it again (``_freeze_heap_at_exit``).
        gc.freeze()
        _freeze_heap_at_exit()

    def stop(self) -> None:
        """Give back the Hypothesis profile ``start`` replaced."""
        if self.previous_profile is not None:
            from pytest_modeltiers.profiles import restore_profile

            restore_profile(self.previous_profile)
            self.previous_profile = None

    def thaw_heap(self) -> None:
        """Undo ``start``'s ``gc.freeze`` (the plugin calls it after pytest's last collection)."""
        if self.froze_gc:
            gc.unfreeze()
            self.froze_gc = False

    def _unique_key(self, name: str) -> str:
        key, n = name, 2
        while key in self.models:
            key, n = f"{name}-{n}", n + 1
        return key

    def model(self, key: str | None) -> LoadedModel:
        """The loaded model for ``key`` (the only one when ``key`` is None)."""
        if not self.models:
            raise ModelTiersError(
                "no model to test: name one with --model path/to/model.py "
                "(or --modeltiers-model, or the ini option modeltiers_model)"
            )
        if key is None:
            return next(iter(self.models.values()))
        return self.models[key]

    def header_lines(self) -> list[str]:
        lines = []
        if self.model_flag_taken:
            lines.append(
                f"modeltiers: {MODEL_FLAG} is defined by conftest.py or another plugin; "
                f"name models with {option_named('modeltiers_model').display}"
            )
        for key, loaded in self.models.items():
            lines.extend(f"modeltiers: {line}" for line in loaded.describe(key))
        if self.models:
            lines.append(
                f"modeltiers: profile {self.values['modeltiers_profile']}, "
                f"timeout {self.timeout:g} s, CI={os.environ.get('CI', 'unset')}"
            )
        return lines

    # -- the built-in suites ---------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        """With a model named, the built-in suites join the session's top-level collectors."""
        report = yield
        if isinstance(collector, pytest.Session) and report.passed and self.models:
            report.result.extend(
                pytest.Module.from_parent(collector, path=path, nodeid=NODEID_PREFIX + path.name)
                for path in suite_paths(collector.config.option.markexpr or "")
            )
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        """Each built-in check runs under ``--modeltiers-timeout``; a hang fails only that test."""
        if not is_suite_nodeid(item.nodeid):
            return (yield)
        try:
            with check_deadline(self.timeout, item.name):
                return (yield)
        except CheckTimeout as exc:
            pytest.fail(str(exc), pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """The test's verdict rides on its report as ``modeltiers_check`` (a JSON-able dict)."""
        report = yield
        if is_suite_nodeid(item.nodeid) and report.when == "call":
            result = self._verdict(item, report)
            if result is not None:
                report.modeltiers_check = result.to_dict()  # type: ignore[attr-defined]
        return report

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_runtest_metadata(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> dict[str, Any]:
        """pytest-json-report: the check's result in the test's metadata."""
        if call.when != "call" or not is_suite_nodeid(item.nodeid):
            return {}
        result = self._verdict(item, pytest.TestReport.from_item_and_call(item, call))
        return {"modeltiers_check": result.to_dict()} if result is not None else {}

    def _verdict(self, item: pytest.Item, report: pytest.TestReport) -> CheckResult | None:
        """The test's ``CheckResult``, computed once per test and kept on the item."""
        if VERDICT_KEY not in item.stash:
            recorder = item.stash.get(RECORDER_KEY, None)
            final = recorder.final() if recorder is not None else None
            item.stash[VERDICT_KEY] = self._reconcile(final, report)
        return item.stash[VERDICT_KEY]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not is_suite_nodeid(report.nodeid):
            return
        carried = getattr(report, "modeltiers_check", None)
        if carried is not None:
            from pytest_modeltiers.report import CheckResult

            self.checks.append(CheckResult.from_dict(carried))
        elif report.when != "call" and (report.failed or report.skipped):
            result = self._reconcile(None, report)
            if result is not None:
                self.checks.append(result)

    def _reconcile(
        self, final: CheckResult | None, report: pytest.TestReport
    ) -> CheckResult | None:
        """One result that agrees with pytest's outcome for this report."""
        from pytest_modeltiers.report import CheckResult, CheckStatus

        match = _SUITE_TEST.match(report.nodeid)
        if match is None:
            return None
        name, tier = match["name"], int(match["tier"])
        model, rest = self._split_param(match["param"])
        if rest:  # a test's own parameter (test_export[onnx]) stays in its name
            name = f"{name}[{rest}]"
        reason = _report_reason(report)
        if report.skipped:
            result = CheckResult.skipped(name, tier, reason or "skipped")
        elif report.failed and (final is None or final.ok):
            status = CheckStatus.FAILED if report.when == "call" else CheckStatus.ERROR
            result = CheckResult(name, tier, status, reason or f"{report.when} failed")
        elif final is None:
            result = CheckResult.passed(name, tier, "passed")
        else:
            result = final
        return dataclasses.replace(
            result, model=model, nodeid=report.nodeid, duration_seconds=max(report.duration, 0.0)
        )

    def _split_param(self, param: str | None) -> tuple[str | None, str]:
        """``"onnx-tiny_gpt"`` -> (``"tiny_gpt"``, ``"onnx"``): the model key among a suite
        test's parameters (the plugin adds it with several models), and the test's own."""
        single = self.model_keys[0] if len(self.models) == 1 else None
        if not param:
            return single, ""
        for key in sorted(self.models, key=len, reverse=True):
            for own in (param.removesuffix(f"-{key}"), param.removeprefix(f"{key}-")):
                if own != param:
                    return key, own
            if param == key:
                return key, ""
        return single, param

    # -- the health report -----------------------------------------------------------------

    def health_report(self) -> HealthReport:
        from pytest_modeltiers.report import HealthReport

        return HealthReport(self.checks, models=[m.identity(k) for k, m in self.models.items()])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self.models:
            return
        path = self.values["modeltiers_report"]
        threshold = self.values["modeltiers_fail_under"]
        if path is None and threshold is None:
            return
        report = self.health_report()
        if path is not None:
            self.report_paths = report.write(Path(path))
        if threshold is not None and report.fail_under(threshold):
            self.score_failed = True
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.summary_lines():
            terminalreporter.write_line(line)

    def summary_lines(self) -> list[str]:
        if not self.checks:
            return []
        report = self.health_report()
        summary = report.summary
        score = report.health_score
        shown = "n/a" if score is None else f"{score:.1f}"
        counts = ", ".join(
            f"{summary[k]} {k}"
            for k in ("passed", "warning", "failed", "error", "skipped")
            if summary.get(k)
        )
        lines = [f"modeltiers: health score {shown} ({counts})"]
        if self.report_paths is not None:
            lines.append(
                f"modeltiers: report written to {self.report_paths[0]} and {self.report_paths[1]}"
            )
        if self.score_failed:
            lines.append(
                f"modeltiers: FAILED: health score {shown} is below "
                f"--modeltiers-fail-under {self.values['modeltiers_fail_under']:g}"
            )
        return lines


def _report_reason(report: pytest.TestReport) -> str:
    """The first meaningful line of a report's failure or skip text."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = report.longreprtext.strip()
    for line in text.splitlines():
        if line.startswith("E "):
            return line[2:].strip()
    return text.splitlines()[-1] if text else ""


@contextlib.contextmanager
def _collector_paused() -> Generator[None, None, None]:
    """Import the libraries of a run (torch, Hypothesis) with the cyclic collector paused.

    Importing torch allocates some 165,000 long-lived objects, and the collector, triggered
    by the allocations, scans them again and again while they load: 0.12-0.17 s of a 1.1 s
    ``import torch`` on a 2-core machine, some 370 collections. Paused, importing torch and
    Hypothesis leaves 0.7 MB of cyclic garbage (7,000 small objects: the import machinery's
    tuples, cells and functions), which is frozen with the rest (``gc.freeze`` moves it out of
    the collector's sight without a scan) rather than collected. Only library imports
    run here: the user's model file and ``build_model`` run with the collector on, so garbage
    they make in cycles is collected as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


@functools.cache
def _freeze_heap_at_exit() -> None:
    """At interpreter exit, freeze the heap so that shutdown's garbage collections skip it.

    Python's shutdown runs full collections over every object still alive; with torch loaded
    that is 0.4-0.5 s of a few-second tier 1 run, spent after the last test (``python -c
    "import torch"`` alone takes 1.6 s, of which 0.45 s is shutdown; 1.2 s with the heap
    frozen). Reference counting still frees everything modules hold, so files are flushed and
    ``__del__`` methods run as before; only garbage already in a reference cycle at exit is
    left to the operating system, and Python never promised to finalise that. ``atexit``
    handlers run only when the interpreter ends, so a process that goes on after
    ``pytest.main()`` keeps its normal collector. Registered once per process (cached).
    """
    atexit.register(gc.freeze)
