"""How torch's CPU threads behave in a test session: no spinning, and no threads that cannot pay.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"
USER_THREAD_SETTINGS = ("OMP_NUM_THREADS", WAIT_POLICY, "GOMP_SPINCOUNT")
#: Marks an ``OMP_WAIT_POLICY`` the plugin set, which its xdist workers inherit as not the user's.
OUR_MARK = "PYTEST_MODELTIERS_WAIT_POLICY"
#: Below this many parameters a model's checks run on one intra-op thread.
SMALL_MODEL_PARAMETERS = 20_000_000


def user_thread_settings(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The OpenMP settings the environment already holds, as ``NAME=VALUE``."""
    env = os.environ if environ is None else environ
    ours = env.get(OUR_MARK) == "1"  # set by the plugin of a parent process (the xdist controller)
    return [
        f"{name}={env[name]}"
        for name in USER_THREAD_SETTINGS
        if env.get(name) and not (ours and name == WAIT_POLICY)
    ]


def choose_wait_policy(environ: MutableMapping[str, str] | None = None) -> str:
    """Make waiting OpenMP threads sleep, unless the user or an earlier import decided already.

    Returns the session header's description of the thread settings in force.
    """
    env = os.environ if environ is None else environ
    chosen = user_thread_settings(env)
    if chosen:
        return f"threads: {', '.join(chosen)} (set in the environment; left as it is)"
    if "torch" in sys.modules:
        return (
            "threads: torch was imported before the plugin started (by a conftest.py or another "
            "plugin), so its OpenMP threads keep spinning while they wait; set "
            f"{WAIT_POLICY}=PASSIVE in the environment to stop them on busy machines"
        )
    env[WAIT_POLICY] = "PASSIVE"
    env[OUR_MARK] = "1"
    return f"threads: {WAIT_POLICY}=PASSIVE (waiting threads sleep instead of spinning)"


def one_thread_for_small_models(parameters: int) -> str | None:
    """Use one intra-op thread when the largest model is small (see docs/performance.md).

    Called only when the user set no thread setting (``user_thread_settings``) and torch was
    not imported before the plugin. Returns the header's note, or None when nothing changed.
    """
    if parameters >= SMALL_MODEL_PARAMETERS:
        return None
    import torch

    if torch.get_num_threads() == 1:
        return None
    torch.set_num_threads(1)
    return (
        f"1 intra-op thread (models under {SMALL_MODEL_PARAMETERS:,} parameters: the checks' "
        "small batches gain nothing from more)"
    )


def share_cpus_between_workers(workers: int) -> int | None:
    """Give this worker its share of the cores; return the thread count set, or None."""
    if os.environ.get("OMP_NUM_THREADS") or workers < 1:
        return None
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
        return threads
    return None
