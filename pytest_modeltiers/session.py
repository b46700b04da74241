"""The run state of one pytest session: resolved options and the models they name.

PYTEST_DONT_REWRITE

One ``ModelTiersSession`` lives in ``config.stash``. It reads the options once, checks the
output paths, loads each model when the session starts (a broken model file becomes a
``pytest.UsageError`` naming the problem and the fix, never an INTERNALERROR), and keeps the
loaded models for the fixtures. With ``--modeltiers-report`` it writes the report as
incomplete before loading anything and completes it when the session finishes, so a process
that dies on the way leaves a report that says so (``modeltiers check-report`` fails it).
Only the standard library and pytest are imported at module level; the model loader, which
needs torch, is imported when a model is actually named.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import getpass
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modeltiers import startup
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.options import MODEL_FLAG, option_named
from pytest_modeltiers.recorder import RECORDER_KEY
from pytest_modeltiers.settings import SETTINGS_KEY, Settings
from pytest_modeltiers.suites import NODEID_PREFIX, is_suite_nodeid, selected_tiers, suite_paths
from pytest_modeltiers.timeouts import (
    CheckTimeout,
    check_deadline,
    end_process,
    main_thread_stack,
)

if TYPE_CHECKING:
    from pytest_modeltiers.models.loader import LoadedModel
    from pytest_modeltiers.models.sandbox import Sandbox
    from pytest_modeltiers.models.spec import ModelSpec
    from pytest_modeltiers.report import CheckResult, HealthReport

SESSION_KEY = pytest.StashKey["ModelTiersSession"]()
VERDICT_KEY = pytest.StashKey["CheckResult | None"]()
#: A check's setup that took this long ran session fixtures for it: shown as a JUnit property.
SHOWN_SETUP_SECONDS = 0.05
#: The key of xdist's ``workerinput`` that carries the controller's resolved ``--baseline-run``.
BASELINE_RUN_INPUT = "modeltiers_baseline_run"
#: The key of xdist's ``workerinput`` that carries the revision each of the controller's gists
#: resolved to and its cache: a worker, already confined (no network, a sandbox's own cache
#: variables), reads exactly those files.
GIST_PINS_INPUT = "modeltiers_gist_pins"


_SUITE_TEST = re.compile(r"^modeltiers/tier(?P<tier>\d)\.py::(?P<name>\w+)(\[(?P<param>.*)\])?$")

#: Exit status of a session the timeout watchdog aborts: pytest's INTERRUPTED, as for Ctrl-C,
#: because the run was cut short (tests not run), not completed with failures.
ABORTED_EXIT_CODE = int(pytest.ExitCode.INTERRUPTED)
#: What the report says from the session's start until it completes.
STARTED_REASON = (
    "the session started at {started} and did not run to its end: if pytest has finished, it "
    "stopped early (a usage error at start, or its process ended: model code called os._exit, "
    "it crashed, or it was killed); read the pytest output, fix the cause and run it again"
)


@dataclass(eq=False)
class ModelTiersSession:
    """Options of this run, the models loaded for it, and the checks' results.

    Registered as a plugin for the session: its hook methods add the built-in suites to the
    collection, bound each check in time, and gather one ``CheckResult`` per suite test from the
    test reports (which xdist carries to the controller), so the report written at the end
    agrees with pytest's outcomes with or without ``-n``.
    """

    settings: Settings
    rootdir: Path
    model_flag_taken: bool = False
    models: dict[str, LoadedModel] = field(default_factory=dict)
    previous_profile: str | None = None
    froze_gc: bool = False
    checks: list[CheckResult] = field(default_factory=list)
    report_paths: tuple[Path, Path] | None = None
    #: ``--modeltiers-html``: the page and its plot files, once written.
    html_paths: tuple[Path, list[Path]] | None = None
    #: Seconds this process spent on the page: loading Matplotlib, drawing, writing.
    html_seconds: float = 0.0
    score_failed: bool = False
    threads_note: str | None = None
    #: The session's items (after selection) and the node ids that finished, for ``not_run``.
    items: list[pytest.Item] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    #: Each built-in check's setup time: the session fixtures it was first to need (a training
    #: run, an export) are part of what the check cost, in its duration and JUnit properties.
    setup_seconds: dict[str, float] = field(default_factory=dict)
    #: The pytest config, for the places a sandboxed session writes (its temp dir, cache).
    config: pytest.Config | None = field(default=None, repr=False)
    #: The sandbox the loader enters before model code runs, and the header's line about it.
    sandbox: Sandbox | None = None
    sandbox_note: str | None = None
    #: ``[gist:ID@REVISION, cache folder]`` of each gist spec, for the xdist workers.
    gist_pins: dict[str, list[str]] = field(default_factory=dict)
    #: The header's line saying which run ``--baseline-run latest`` (or a name) is.
    baseline_note: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config, *, model_flag_taken: bool) -> ModelTiersSession:
        """The session of ``config``; its settings also go in ``config.stash[SETTINGS_KEY]``."""
        settings = Settings.from_config(config)
        config.stash[SETTINGS_KEY] = settings
        session = cls(
            settings=settings,
            rootdir=config.rootpath,
            model_flag_taken=model_flag_taken,
            config=config,
        )
        _LIVE_SESSIONS.add(id(session))
        return session

    @property
    def model_specs(self) -> list[str]:
        return list(self.settings.model)

    @property
    def model_keys(self) -> list[str]:
        return list(self.models)

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def report_path(self) -> Path | None:
        path = self.settings.report
        return None if path is None else Path(path)

    def start(self, workerinput: dict[str, Any] | None = None) -> None:
        """Load every named model; a problem with one is a usage error that names the fix."""
        check_output_paths(self.settings)
        if not self.model_specs:
            return
        if workerinput is None and self.report_path is not None:
            started = self.health_report(
                status="incomplete",
                status_reason=STARTED_REASON.format(started=_utc_now()),
            )
            self.report_paths = started.write(self.report_path)
        from pytest_modeltiers.threads import (
            choose_wait_policy,
            one_thread_for_small_models,
            share_cpus_between_workers,
            user_thread_settings,
        )

        # A torch imported by a conftest.py, or the user's own settings: threads are theirs.
        threads_are_ours = "torch" not in sys.modules and not user_thread_settings()
        self.threads_note = choose_wait_policy()  # before torch loads OpenMP, which reads it once
        with startup.collector_paused() as froze_libraries:
            from pytest_modeltiers.hypothesis_profiles import load_profile
            from pytest_modeltiers.models.loader import LoadRequest, load_model

            self.previous_profile = load_profile(self.settings.profile)
        self.froze_gc = froze_libraries
        if workerinput is not None:
            share_cpus_between_workers(int(workerinput.get("workercount", 1)))
        parsed = self._parse_specs((workerinput or {}).get(GIST_PINS_INPUT, {}))
        if self.config is not None:
            self._prepare_plots(self.config, worker=workerinput is not None)
        self.sandbox = self._prepare_sandbox(parsed)
        for spec in self.model_specs:
            request = dataclasses.replace(
                LoadRequest.from_settings(spec, self.settings, self.rootdir),
                enter_sandbox=self.sandbox.enter if self.sandbox is not None else None,
                parsed=parsed[spec],
            )
            try:
                loaded = load_model(request)
            except ModelTiersError as exc:
                raise pytest.UsageError(f"--model {spec}: {exc}") from None
            self.models[self._unique_key(loaded.name)] = loaded
        if threads_are_ours:
            largest = max(loaded.num_parameters for loaded in self.models.values())
            one_thread = one_thread_for_small_models(largest)
            if one_thread is not None:
                self.threads_note = f"{self.threads_note}; {one_thread}"
        if workerinput is None and self.config is not None:
            self._register_github(self.config)
        markexpr = self.config.option.markexpr if self.config is not None else ""
        if workerinput is None and "tier5" in selected_tiers(markexpr or ""):
            # Tier 5's data, profile and database options: usage errors, before collection.
            # Once, in the controller (it refuses the run before any worker starts), and only
            # when tier 5 can run: a tier 1 run never reads the data files an ini file names.
            from pytest_modeltiers.checks.tier5_inputs import (
                check_tier5_inputs,
                resolve_baseline_run,
            )

            try:
                check_tier5_inputs(self.settings, {k: m.task for k, m in self.models.items()})
                resolved = resolve_baseline_run(self.settings)
            except ModelTiersError as exc:
                raise pytest.UsageError(str(exc)) from None
            if resolved is not None:
                self.use_baseline_run(*resolved)
        elif workerinput is not None and BASELINE_RUN_INPUT in workerinput:
            self.use_baseline_run(str(workerinput[BASELINE_RUN_INPUT]), "")
        # torch, Hypothesis and the models stay loaded for the whole session: out of the
        # collector's sight until ``thaw_heap``, after pytest's final collection.
        if startup.freeze_heap():
            self.froze_gc = True

    def use_baseline_run(self, run_id: str, note: str) -> None:
        """``--baseline-run`` as the run id it was resolved to, in this process's settings."""
        self.settings = dataclasses.replace(self.settings, baseline_run=run_id)
        self.baseline_note = note or None
        if self.config is not None:
            self.config.stash[SETTINGS_KEY] = self.settings

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: each worker compares with the run the controller resolved."""
        if self.settings.baseline_run is not None and self.settings.baseline_run.isdigit():
            node.workerinput[BASELINE_RUN_INPUT] = self.settings.baseline_run
        if self.gist_pins:  # and each worker runs the gist revision the controller resolved
            node.workerinput[GIST_PINS_INPUT] = dict(self.gist_pins)

    def _prepare_plots(self, config: pytest.Config, *, worker: bool) -> None:
        """With ``--modeltiers-html`` or pytest-html's ``--html``: load Matplotlib before the
        sandbox closes the home folder (its font cache), and feed pytest-html our checks.

        The page is drawn by the process that writes the report (not an xdist worker), so only
        that process loads Matplotlib for it; pytest-html's rows are made where each test runs,
        so with ``--html`` every process does."""
        from pytest_modeltiers.report.pytest_html_bridge import (
            PytestHtmlBridge,
            pytest_html_active,
        )

        feeds_pytest_html = pytest_html_active(config)
        if feeds_pytest_html:
            config.pluginmanager.register(
                PytestHtmlBridge(self.health_report), "modeltiers-pytest-html"
            )
        if (self.settings.html and not worker) or feeds_pytest_html:
            from pytest_modeltiers.report.plots import preload

            started = time.perf_counter()
            preload()
            self.html_seconds += time.perf_counter() - started

    def _register_github(self, config: pytest.Config) -> None:
        """Under GitHub Actions: the job summary and one annotation per failed check."""
        from pytest_modeltiers.report.github import GitHubActions, github_actions_active

        if self.settings.github == "off" or not github_actions_active():
            return
        reporter = GitHubActions(
            checks=lambda: self.checks,
            markdown=lambda s: self.health_report(**_final_status(s.exitstatus)).to_markdown(),
            model_files=[m.source_file for m in self.models.values() if m.source_file],
            base=config.invocation_params.dir,
            rootdir=self.rootdir,
        )
        config.pluginmanager.register(reporter, "modeltiers-github")

    def _parse_specs(self, pins: dict[str, list[str]]) -> dict[str, ModelSpec]:
        """Each spec parsed once, a gist fetched once (before the process is confined); an
        xdist worker takes the revision its controller resolved (``pins``) from its cache."""
        from pytest_modeltiers.models.spec import parse_model_spec

        cache = Path(self.settings.cache_dir) if self.settings.cache_dir else None
        parsed = {}
        for spec in self.model_specs:
            pinned, pin_cache = pins.get(spec, (spec, cache))
            try:
                found = parse_model_spec(
                    pinned, self.rootdir, cache_dir=Path(pin_cache) if pin_cache else None
                )
            except ModelTiersError as exc:
                raise pytest.UsageError(f"--model {spec}: {exc}") from None
            if spec in pins:  # named as the user named it, as in the controller
                found = dataclasses.replace(found, raw=spec.strip())
            parsed[spec] = found
            if found.gist is not None:
                self.gist_pins[spec] = [found.gist.spec, str(found.gist.cache_dir.absolute())]
        return parsed

    def _unconfined_gists(self, parsed: dict[str, ModelSpec], why: str, fix: str) -> str | None:
        """Gist code is untrusted by definition and runs only confined: a usage error saying
        why it would not be, unless ``--trust-model``; then the header's warning (or None)."""
        gists = ", ".join(spec for spec, p in parsed.items() if p.gist is not None)
        if not gists:
            return None
        if not self.settings.trust_model:
            raise pytest.UsageError(
                f"--model {gists}: a gist model is untrusted code and runs only inside the "
                f"sandbox, but {why}; {fix}, or pass --trust-model as well to run it "
                "unconfined (and unscanned)"
            )
        return (
            f"WARNING: {why}, and --trust-model: gist model {gists} runs unconfined and "
            "unscanned, with all of your rights (your files, the network, any program)"
        )

    def _prepare_sandbox(self, parsed: dict[str, ModelSpec]) -> Sandbox | None:
        """The sandbox of ``--modeltiers-sandbox``, or None (off, or unavailable under auto).

        Its writable places are created now: a Landlock rule needs an existing folder. A gist
        model without a sandbox is refused unless ``--trust-model`` (``_unconfined_gists``).
        """
        mode = self.settings.sandbox or "auto"
        if mode != "off" and _live_sessions() > 1:
            # Landlock confines the whole process, irreversibly: a session nested in another
            # one (pytester's in-process runpytest) would confine the outer session too.
            nested = (
                "this session runs inside another pytest session's process (an in-process "
                "pytester run), which confining would confine too; run it in a subprocess "
                "(runpytest_subprocess) to have it confined"
            )
            if mode == "on":
                raise pytest.UsageError(f"--modeltiers-sandbox on: {nested}")
            self.sandbox_note = (
                self._unconfined_gists(
                    parsed,
                    "this session runs inside another pytest session's process, which it must "
                    "not confine",
                    "run it in a subprocess (runpytest_subprocess)",
                )
                or f"sandbox not entered: {nested}"
            )
            return None
        if mode == "off":
            self.sandbox_note = self._unconfined_gists(
                parsed, "--modeltiers-sandbox off", "drop --modeltiers-sandbox off"
            ) or (
                "WARNING: --modeltiers-sandbox off: the model's code runs with all of your "
                "rights (your files, the network, any program)"
            )
            return None
        from pytest_modeltiers.models.sandbox import Sandbox, landlock_abi
        from pytest_modeltiers.models.sandbox_plan import Allowance, sandbox_policy

        abi, reason = landlock_abi()
        if abi is None:
            if mode == "on":
                raise pytest.UsageError(
                    f"--modeltiers-sandbox on: {reason}; pass --modeltiers-sandbox auto to run "
                    "with only the static safety scan where the sandbox is unavailable"
                )
            self.sandbox_note = self._unconfined_gists(
                parsed,
                f"the sandbox is unavailable here ({reason})",
                "run it where Landlock is (Linux 5.13 or later)",
            ) or (
                f"sandbox unavailable ({reason}): only the static scan stands between the model "
                "and this machine"
            )
            return None
        assert self.config is not None, "a sandboxed session is built from its pytest config"
        writable = sandbox_outputs(self.config, self.settings)
        readable = [self.rootdir, self.config.invocation_params.dir]
        gists = []
        for spec in parsed.values():
            if spec.gist is not None:  # its cache folder holds its files only, even under ~
                folder = spec.gist.path.parent  # its files and their recorded hash
                gists.append(Allowance(f"reading gist {spec.gist.id}", (folder,)))
            elif spec.source_file is not None:
                readable.append(spec.source_file.resolve().parent)
        policy = sandbox_policy(writable, readable, gists)
        return Sandbox(policy, scratch=writable[0] / f"modeltiers-tmp-{os.getpid()}")

    def stop(self) -> None:
        """Give back the Hypothesis profile ``start`` replaced."""
        _LIVE_SESSIONS.discard(id(self))
        if self.sandbox is not None and self.sandbox.scratch.is_dir():
            # The confined session's temp dir: what the model left there is of no further use.
            shutil.rmtree(self.sandbox.scratch, ignore_errors=True)
        if self.previous_profile is not None:
            from pytest_modeltiers.hypothesis_profiles import restore_profile

            restore_profile(self.previous_profile)
            self.previous_profile = None

    def thaw_heap(self) -> None:
        """Undo ``start``'s ``gc.freeze`` (the plugin calls it after pytest's last collection)."""
        if self.froze_gc:
            startup.thaw_heap()
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
                f"modeltiers: profile {self.settings.profile}, "
                f"timeout {self.timeout:g} s, CI={os.environ.get('CI', 'unset')}"
            )
        if self.models and self.threads_note is not None:
            lines.append(f"modeltiers: {self.threads_note}")
        if self.sandbox is not None:
            lines.append(f"modeltiers: {self.sandbox.describe()}")
        elif self.sandbox_note is not None and self.models:
            lines.append(f"modeltiers: {self.sandbox_note}")
        if self.baseline_note is not None:
            lines.append(f"modeltiers: {self.baseline_note}")
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
        """Each built-in check runs under ``--modeltiers-timeout``; a hang fails only that test,
        and a check that ignores the timeout is ended by the watchdog (``abort_stuck_check``)."""
        if not is_suite_nodeid(item.nodeid):
            return (yield)
        on_stuck = functools.partial(self.abort_stuck_check, item)
        try:
            with check_deadline(self.timeout, item.name, on_stuck=on_stuck):
                return (yield)
        except CheckTimeout as exc:
            pytest.fail(str(exc), pytrace=False)

    def abort_stuck_check(self, item: pytest.Item, grace: float) -> None:
        """End a session whose check ignored its timeout (runs on the watchdog thread).

        The check neither returned nor raised ``grace`` seconds after its timeout signal: the
        model swallowed the ``CheckTimeout`` (``except BaseException``), ignored ``SIGALRM``,
        or is stuck where no signal reaches. Nothing in the process can stop it, so this prints
        the model's stack, records the check as an error (terminal, JUnit XML and the health
        report, marked incomplete with the tests that never ran), and ends the process with
        ``ABORTED_EXIT_CODE``. An xdist worker only prints and exits: the controller reports
        its crash as this check's error and writes the report.
        """
        # If recording the failure blocks on something the stuck thread holds, exit anyway.
        backstop = threading.Timer(10.0, end_process, (ABORTED_EXIT_CODE,))
        backstop.daemon = True
        backstop.start()
        config = item.config
        capture = config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # what the test printed goes to the terminal, not a dead file
            capture.suspend_global_capture(in_=True)
            out, err = capture.read_global_capture()
            sys.stdout.write(out)
            sys.stderr.write(err)
        message = (
            f"{item.name} timed out after {self.timeout:g} s and was still running "
            f"{grace:g} s later: the model ignored or swallowed the timeout (SIGALRM, or the "
            "CheckTimeout it raises, caught by an except BaseException), so the session was "
            "aborted; find the model's frames in the stack printed with this message"
        )
        sys.stderr.write(
            f"\nmodeltiers: ABORTED: {message}\n"
            f"modeltiers: stack of the check's thread:\n{main_thread_stack()}"
        )
        if not hasattr(config, "workerinput"):
            self._record_abort(item, message, grace)
        end_process(ABORTED_EXIT_CODE)

    def _record_abort(self, item: pytest.Item, message: str, grace: float) -> None:
        """The stuck check as an error in every report the session writes (JUnit XML, ours)."""
        from pytest_modeltiers.report import CheckStatus

        report = pytest.TestReport(
            item.nodeid,
            item.location,
            dict.fromkeys(item.keywords, 1),
            "failed",
            message,
            "call",
            user_properties=item.user_properties,
            duration=self.timeout + grace,
        )
        base = self._reconcile(None, report)
        if base is not None:
            result = dataclasses.replace(
                base,
                status=CheckStatus.ERROR,
                message=message,
                details={
                    "timed_out": True,
                    "timeout_seconds": self.timeout,
                    "grace_seconds": grace,
                },
            )
            report.modeltiers_check = result.to_dict()  # type: ignore[attr-defined]
        item.config.hook.pytest_runtest_logreport(report=report)
        _flush_junit_xml(item.config)
        if self.report_path is not None:
            not_run = [
                other.nodeid
                for other in self.items
                if other.nodeid not in self.finished and other.nodeid != item.nodeid
            ]
            aborted = self.health_report(
                status="incomplete",
                status_reason=(
                    f"aborted: {item.nodeid} timed out and did not stop; "
                    f"{len(not_run)} collected test(s) did not run"
                ),
                not_run=not_run,
            )
            paths = aborted.write(self.report_path)
            sys.stderr.write(
                f"modeltiers: incomplete report written to {paths[0]} and {paths[1]}\n"
            )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """The test's verdict rides on its report as ``modeltiers_check`` (a JSON-able dict)."""
        setup = self.setup_seconds.get(item.nodeid, 0.0)
        if call.when == "call" and setup >= SHOWN_SETUP_SECONDS and is_suite_nodeid(item.nodeid):
            item.user_properties.append(("modeltiers_setup_seconds", round(setup, 3)))
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

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.finished.add(report.nodeid)
        elif report.when == "setup":
            self.setup_seconds[report.nodeid] = max(report.duration, 0.0)
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
        if report.skipped and final is not None and final.status is CheckStatus.SKIPPED:
            result = final  # the check's own skip keeps its details (``no_data``, ...)
        elif report.skipped:
            result = CheckResult.skipped(name, tier, reason or "skipped")
        elif report.failed and (final is None or final.ok):
            status = CheckStatus.FAILED if report.when == "call" else CheckStatus.ERROR
            result = CheckResult(name, tier, status, reason or f"{report.when} failed")
        elif final is None:
            result = CheckResult.passed(name, tier, "passed")
        else:
            result = final
        return dataclasses.replace(
            result,
            model=model,
            nodeid=report.nodeid,
            duration_seconds=max(report.duration, 0.0)
            + (self.setup_seconds.get(report.nodeid, 0.0) if report.when == "call" else 0.0),
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

    def health_report(self, **status: Any) -> HealthReport:
        """The report of the checks so far; ``status`` takes ``HealthReport``'s status keywords."""
        from pytest_modeltiers.report import HealthReport

        return HealthReport(
            self.checks, models=[m.identity(k) for k, m in self.models.items()], **status
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self.models:
            return
        path = self.report_path
        threshold = self.settings.fail_under
        html = self.settings.html
        if path is None and threshold is None and html is None:
            return
        report = self.health_report(**_final_status(session.exitstatus))
        if path is not None:
            self.report_paths = report.write(path)
        if html is not None:  # after the JSON: a page that cannot be drawn leaves the JSON
            from pytest_modeltiers.report.html import write_html

            started = time.perf_counter()
            self.html_paths = write_html(report, html)
            self.html_seconds += time.perf_counter() - started
        if threshold is not None and report.fail_under(threshold):
            self.score_failed = True
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.summary_lines():
            terminalreporter.write_line(line)

    def summary_lines(self) -> list[str]:
        """The terminal summary: a shared root cause first, then the score and its counts."""
        if not self.checks:
            return []
        from pytest_modeltiers.report.health_report import is_not_judged

        report = self.health_report()
        lines = [
            f"modeltiers: {cause['count']} checks failed on one root cause: {cause['exception']}"
            + (f" at {cause['location']}" if cause["location"] else "")
            for cause in report.root_causes
        ]
        summary = report.summary
        score = report.health_score
        shown = "n/a" if score is None else f"{score:.1f}"
        counts = {k: summary[k] for k in ("passed", "warning", "failed", "error", "skipped")}
        counts["skipped"] -= summary["not_judged"]
        shown_counts = [f"{count} {k}" for k, count in counts.items() if count]
        if summary["not_judged"]:
            shown_counts.append(f"{summary['not_judged']} not judged: no data")
        lines.append(f"modeltiers: health score {shown} ({', '.join(shown_counts)})")
        not_judged = [check for check in report.checks if is_not_judged(check)]
        if not_judged:
            lines.append(
                "modeltiers: not judged for lack of data: "
                + ", ".join(
                    f"{check.check_name} ({', '.join(map(str, check.details['no_data']))})"
                    for check in not_judged
                )
            )
        if self.report_paths is not None:
            lines.append(
                f"modeltiers: report written to {self.report_paths[0]} and {self.report_paths[1]}"
            )
        if self.html_paths is not None:
            page, plots = self.html_paths
            where = f", {len(plots)} plot(s) in {plots[0].parent}" if plots else ""
            lines.append(
                f"modeltiers: HTML report written to {page}{where} "
                f"({self.html_seconds:.2f} s with Matplotlib's import)"
            )
        if self.score_failed:
            lines.append(
                f"modeltiers: FAILED: health score {shown} is below "
                f"--modeltiers-fail-under {self.settings.fail_under:g}"
            )
        return lines


#: The sessions alive in this process: more than one only when a session runs inside another
#: (pytester's in-process runs), which must not confine the process they share.
_LIVE_SESSIONS: set[int] = set()


def _live_sessions() -> int:
    return len(_LIVE_SESSIONS)


def _final_status(exitstatus: int | pytest.ExitCode) -> dict[str, Any]:
    """The report's status at the end: complete unless pytest itself was cut short."""
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return {
            "status": "incomplete",
            "status_reason": "the session was interrupted (Ctrl-C, a collection error, or a "
            "plugin stopped it): checks may be missing; fix the cause and run it again",
        }
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return {
            "status": "incomplete",
            "status_reason": "the session ended with an INTERNALERROR: checks may be missing; "
            "read the traceback pytest printed",
        }
    return {}


def _utc_now() -> str:
    from pytest_modeltiers.report.health_report import utc_now

    return utc_now()


def _flush_junit_xml(config: pytest.Config) -> None:
    """Write ``--junitxml`` now, with what was reported so far (the process ends next).

    pytest offers no public handle on its JUnit writer; this is the stash key its own fixtures
    use. A pytest that moved it still ends the session; the file is then not written, and the
    message says so.
    """
    try:
        from _pytest.junitxml import xml_key
    except ImportError as exc:
        sys.stderr.write(f"modeltiers: --junitxml not written: {exc}\n")
        return
    xml = config.stash.get(xml_key, None)
    if xml is not None:
        xml.pytest_sessionfinish()


def check_output_paths(settings: Settings) -> None:
    """Refuse, before anything runs or is written, output paths the session cannot write."""
    report = settings.report
    if report is not None:
        flag = f"--modeltiers-report {report}"
        target = Path(report)
        twin = target.with_suffix(".md")
        if twin == target:
            raise pytest.UsageError(
                f"{flag}: the path ends in .md, where the report's Markdown twin goes; give the "
                "JSON report another suffix, such as health.json"
            )
        if target.is_dir():
            raise pytest.UsageError(
                f"{flag}: {target} is a directory; name a file in it, such as "
                f"{target / 'health.json'}"
            )
        if twin.is_dir():
            raise pytest.UsageError(
                f"{flag}: its Markdown twin {twin} is a directory; remove it or give the report "
                "another name"
            )
        _check_writable_parent(flag, target.parent)
    if settings.html is not None:
        _check_html_path(settings)
    export_dir = settings.export_dir
    if export_dir is not None:
        flag = f"--export-dir {export_dir}"
        directory = Path(export_dir)
        if directory.exists() and not directory.is_dir():
            raise pytest.UsageError(
                f"{flag}: {directory} is a file, not a directory; name a directory (it is "
                "created when missing)"
            )
        _check_writable_parent(flag, directory)


def _check_html_path(settings: Settings) -> None:
    """``--modeltiers-html``: Matplotlib installed, a file path that no other report takes."""
    from pytest_modeltiers.extras import REPORT_EXTRA, feature_missing_error

    flag = f"--modeltiers-html {settings.html}"
    missing = feature_missing_error(REPORT_EXTRA, flag)
    if missing is not None:
        raise pytest.UsageError(missing)
    target = Path(str(settings.html))
    if target.is_dir():
        raise pytest.UsageError(
            f"{flag}: {target} is a directory; name a file in it, such as {target / 'health.html'}"
        )
    if settings.report is not None:
        json_path = Path(settings.report).absolute()
        if target.absolute() in (json_path, json_path.with_suffix(".md")):
            raise pytest.UsageError(
                f"{flag}: --modeltiers-report writes that file; give the HTML page its own "
                "name, such as health.html"
            )
    _check_writable_parent(flag, target.parent)


def sandbox_outputs(config: pytest.Config, settings: Settings) -> tuple[Path, ...]:
    """Where a sandboxed session writes, each folder created now, pytest's temp root first.

    pytest's temp root (``pytest-of-USER``, or the parent of ``--basetemp``, which pytest
    deletes and creates again), the failing-batch folder, Hypothesis's database, pytest's cache
    dir, the folders of the health report and its HTML page (written atomically, by renaming
    in its folder; the page's plots go to a folder inside),
    ``--export-dir`` and ``--experiment-db`` (SQLite's journal files), and the files of
    ``--junitxml`` and ``--report-log`` themselves (created empty now), not their folders.
    """
    from hypothesis.configuration import storage_directory

    from pytest_modeltiers.report.github import step_summary_path
    from pytest_modeltiers.suites.support import FAILURES_DIR

    basetemp = config.option.basetemp
    if basetemp:
        temp_root = Path(basetemp).resolve().parent
    else:
        temp_root = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
        temp_root = temp_root.resolve() / f"pytest-of-{_user_name()}"
    hypothesis = storage_directory(intent_to_write=False)
    hypothesis.create_if_missing()
    places = [temp_root, config.rootpath / FAILURES_DIR, hypothesis.home_directory]
    places.extend(
        Path(file).absolute().parent
        for file in (settings.report, settings.html, settings.experiment_db)
        if file
    )
    if settings.export_dir:
        places.append(Path(settings.export_dir))
    temp_root.mkdir(parents=True, exist_ok=True, mode=0o700)  # private, as pytest makes it
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
    for option in ("xmlpath", "report_log"):
        file = getattr(config.option, option, None)
        if file:
            target = Path(file).absolute()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            places.append(target)
    summary = step_summary_path(settings.github)
    if summary is not None:  # GitHub's job summary, appended to at the end of the session
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.touch()
        places.append(summary)
    if config.pluginmanager.has_plugin("cacheprovider"):
        # Created as pytest creates it (with its .gitignore); pytest writes it at the end.
        pytest.Cache.for_config(config, _ispytest=True).mkdir("modeltiers")
        places.append(pytest.Cache.cache_dir_from_config(config, _ispytest=True))
    return tuple(dict.fromkeys(place.resolve() for place in places))


def _user_name() -> str:
    """The user name in pytest's temp root (``pytest-of-USER``), as pytest finds it."""
    try:
        return getpass.getuser()
    except (ImportError, OSError, KeyError):
        return "unknown"


def _check_writable_parent(flag: str, directory: Path) -> None:
    """``directory`` can be created (where missing) and written in."""
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise pytest.UsageError(
            f"{flag}: {existing} is a file, so nothing can be written under it; choose a path "
            "in a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"{flag}: {existing} is not writable by this user; choose a writable path"
        )


TIER_MARKERS = tuple(f"tier{tier}" for tier in range(1, 6))
_MARK_WORD = re.compile(r"[\w:+\-.\[\]\\/]+")
_MARK_KWARGS = re.compile(r"\([^()]*\)")


def misspelt_tier_marker(expression: str, registered: set[str]) -> str | None:
    """The usage error for a ``-m`` word that is no registered marker but nearly a tier's.

    Only words close to ``tier1``..``tier5`` are judged, so a project's own markers, used
    with or without registration, are left to pytest; a word close to a tier marker that the
    project did register (``tier6``) is left alone too.
    """
    for word in _MARK_WORD.findall(_MARK_KWARGS.sub(" ", expression)):
        if word in {"and", "or", "not"} or word in registered:
            continue
        close = difflib.get_close_matches(word.lower(), TIER_MARKERS, n=1, cutoff=0.75)
        if close:
            return (
                f"-m {expression}: {word!r} is not a registered marker; did you mean "
                f"{close[0]}? (pytest-modeltiers selects tiers with tier1 ... tier5; register "
                "your own markers in the ini option markers)"
            )
    return None


def registered_markers(config: pytest.Config) -> set[str]:
    """The names of the markers registered in the ini file and by plugins."""
    return {re.split(r"[(:]", line, maxsplit=1)[0].strip() for line in config.getini("markers")}


def _report_reason(report: pytest.TestReport) -> str:
    """The first meaningful line of a report's failure or skip text."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = report.longreprtext.strip()
    for line in text.splitlines():
        if line.startswith("E "):
            return line[2:].strip()
    return text.splitlines()[-1] if text else ""
