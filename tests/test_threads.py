"""torch's OpenMP threads sleep instead of spinning, unless the user decided otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_modeltiers.threads import (
    OUR_MARK,
    SMALL_MODEL_PARAMETERS,
    choose_wait_policy,
    one_thread_for_small_models,
    user_thread_settings,
)

MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "lm_factory.py"

# Reports, at the end of the session, what the environment said and whether torch was loaded
# before the plugin could choose.
PROBE = """
import os, sys

def pytest_unconfigure(config):
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"probe: OMP_WAIT_POLICY={policy}", file=sys.stderr)
    if "torch" in sys.modules:
        print(f"probe: threads={sys.modules['torch'].get_num_threads()}", file=sys.stderr)
"""


def run_model(pytester: pytest.Pytester, *extra: str) -> pytest.RunResult:
    pytester.makeconftest(PROBE + "\n".join(extra))
    return pytester.runpytest_subprocess(f"--model={MODEL}", "--co", "-p", "no:cacheprovider")


def test_waiting_threads_sleep_when_nothing_is_set(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    result = run_model(pytester)
    assert result.ret == 0
    note = "; 1 intra-op thread (models under*" if (os.cpu_count() or 1) > 1 else ""
    result.stdout.fnmatch_lines([f"modeltiers: threads: OMP_WAIT_POLICY=PASSIVE (waiting*{note}"])
    result.stderr.fnmatch_lines(["probe: OMP_WAIT_POLICY=PASSIVE", "probe: threads=1"])


def test_the_users_setting_wins_and_the_header_shows_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_model(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["modeltiers: threads: OMP_NUM_THREADS=1 (set in the environment*"])
    result.stderr.fnmatch_lines(["probe: OMP_WAIT_POLICY=unset"])


def test_torch_imported_before_the_plugin_is_left_alone_and_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    result = run_model(pytester, "import torch")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["modeltiers: threads: torch was imported before the plugin*"])
    result.stderr.fnmatch_lines(["probe: OMP_WAIT_POLICY=unset"])


def test_choose_wait_policy_only_writes_an_unset_environment() -> None:
    env: dict[str, str] = {"GOMP_SPINCOUNT": "1000"}
    assert "GOMP_SPINCOUNT=1000" in choose_wait_policy(env)
    assert env == {"GOMP_SPINCOUNT": "1000"}


def test_a_large_model_keeps_torchs_thread_count() -> None:
    assert one_thread_for_small_models(SMALL_MODEL_PARAMETERS) is None


def test_the_policy_the_plugin_set_in_a_parent_process_is_not_the_users() -> None:
    inherited = {"OMP_WAIT_POLICY": "PASSIVE", OUR_MARK: "1"}
    assert user_thread_settings(inherited) == []
    assert user_thread_settings({"OMP_WAIT_POLICY": "PASSIVE"}) == ["OMP_WAIT_POLICY=PASSIVE"]
