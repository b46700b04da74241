"""The start-up tricks apply in a model run, and PYTEST_MODELTIERS_NO_STARTUP_TRICKS=1 turns every
one of them off (each is also tested alone, tricks on, in test_plugin.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from probes import TORCH_IMPORT_COLLECTIONS

from pytest_modeltiers import startup
from pytest_modeltiers.startup import OPT_OUT_VARIABLE

TINY_GPT = Path(__file__).resolve().parents[1] / "example_models" / "tiny_gpt.py"

_PROBE = (
    TORCH_IMPORT_COLLECTIONS
    + """
import atexit
import json
from pathlib import Path
# Registered before the plugin's configure hook, so it runs after the plugin's exit handler.
atexit.register(lambda: Path("frozen-at-exit.txt").write_text(str(gc.get_freeze_count() > 0)))


def pytest_collection_finish(session):
    Path("probe.json").write_text(json.dumps({
        "collections_in_torch_import": len(collections),
        "frozen_in_session": gc.get_freeze_count() > 0,
        "hypothesis_loader": type(sys.modules["hypothesis"].__loader__).__name__,
        "suites": sorted(
            name.rsplit(".", 1)[1] for name in sys.modules
            if name.startswith("pytest_modeltiers.suites.tier")
        ),
    }))
"""
)


@pytest.mark.parametrize("tricks_off", [False, True], ids=["tricks", "opted-out"])
def test_one_switch_turns_every_trick_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tricks_off: bool
) -> None:
    if tricks_off:
        monkeypatch.setenv(OPT_OUT_VARIABLE, "1")
    pytester.makeconftest(_PROBE)
    result = pytester.runpytest_subprocess(
        "--co", "-p", "no:cacheprovider", f"--model={TINY_GPT}", "-m", "tier1"
    )
    assert result.ret == pytest.ExitCode.OK
    probe = json.loads((pytester.path / "probe.json").read_text())
    frozen_at_exit = (pytester.path / "frozen-at-exit.txt").read_text()
    if tricks_off:
        assert probe["collections_in_torch_import"] > 0
        assert probe["frozen_in_session"] is False
        assert frozen_at_exit == "False"
        assert probe["hypothesis_loader"] == "AssertionRewritingHook"
        assert probe["suites"] == ["tier1", "tier2", "tier3", "tier4", "tier5"]
    else:
        assert probe["collections_in_torch_import"] == 0
        assert probe["frozen_in_session"] is True
        assert frozen_at_exit == "True"
        assert probe["hypothesis_loader"] == "SourceFileLoader"
        assert probe["suites"] == ["tier1"]
    # The same tests either way: the tricks change how fast a run is, never what it runs.
    result.stdout.fnmatch_lines(["*<Module tier1.py>*"])
    assert "tier3.py" not in result.stdout.str()


@pytest.mark.parametrize("tricks_off", [False, True], ids=["tricks", "opted-out"])
def test_the_package_leaves_the_rewrite_list_unless_opted_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tricks_off: bool
) -> None:
    """pytest marks a plugin's modules for rewriting; the package takes itself off the list. (An
    installed package is marked whole; the editable install of this checkout is not, so the
    plugin is named with -p, which marks it.)"""
    pytester.makepyfile(
        test_probe="""
        import sys

        def test_loader():
            loader = type(sys.modules["pytest_modeltiers.plugin"].__loader__).__name__
            print("plugin loaded by", loader)
        """
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if tricks_off:
        monkeypatch.setenv(OPT_OUT_VARIABLE, "1")
    result = pytester.runpytest_subprocess("-s", "-p", "pytest_modeltiers.plugin", "test_probe.py")
    result.assert_outcomes(passed=1)
    expected = "AssertionRewritingHook" if tricks_off else "SourceFileLoader"
    result.stdout.fnmatch_lines([f"*plugin loaded by {expected}"])


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("", True), ("0", True), ("1", False), ("yes", False)]
)
def test_the_switch_reads_any_value_but_0_as_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool
) -> None:
    if value is None:
        monkeypatch.delenv(OPT_OUT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(OPT_OUT_VARIABLE, value)
    assert startup.enabled() is on


def test_opted_out_the_collector_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    monkeypatch.setenv(OPT_OUT_VARIABLE, "1")
    before = gc.get_freeze_count()
    with startup.collector_paused() as froze:
        assert gc.isenabled()
    assert froze is False
    assert startup.freeze_heap() is False
    assert gc.get_freeze_count() == before


@pytest.mark.parametrize(
    ("markexpr", "selected"),
    [
        ("", ["tier1", "tier3", "tier4", "tier5"]),
        ("tier1", ["tier1"]),
        ("not tier4", ["tier1", "tier3", "tier5"]),
        ("tier1 or tier5", ["tier1", "tier5"]),
        ("slow and tier3", ["tier3"]),
        ("slow", ["tier1", "tier3", "tier4", "tier5"]),
        ("tier1 and tier3", []),
        ("tier1 and (", ["tier1", "tier3", "tier4", "tier5"]),  # pytest reports the error
    ],
)
def test_marker_expression_rules_out_only_tiers_it_cannot_select(
    markexpr: str, selected: list[str]
) -> None:
    tiers = ["tier1", "tier3", "tier4", "tier5"]
    assert [tier for tier in tiers if startup.may_select(markexpr, tier)] == selected
