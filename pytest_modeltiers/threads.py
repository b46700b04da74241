"""How torch's CPU threads behave in a test session: no spinning, and no threads that cannot pay.

PYTEST_DONT_REWRITE

CI runners are rarely idle, and OpenMP threads that spin while they wait hold a core that the
sibling they wait for needs: tier 1 on a tiny GPT next to two CPU-bound processes took up to
21 s instead of 1.9 s (``benchmarks/bench_busy.py``). Three settings, each left alone when the
user made it (``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment,
or a torch imported before the plugin could act, by a ``conftest.py`` or another plugin); the
session header says which case applies:

- ``OMP_WAIT_POLICY=PASSIVE``, set before torch is imported (OpenMP reads it once, when torch
  loads it): a thread waiting for work sleeps instead of spinning.
- One intra-op thread for models under ``SMALL_MODEL_PARAMETERS``: the checks' batches (at most
  8 x 64 tokens) are too small for a second thread to pay, and a single thread never waits on a
  descheduled sibling. Measured on a 2-core machine: as fast as torch's default on a quiet
  machine, and every run within 1.6x of that next to two CPU-bound processes. Larger models
  keep torch's default thread count, with passive waits.
- With pytest-xdist, each worker gets at most ``cores // workers`` threads: torch's default of
  one thread per core is N times too many with ``-n N``.
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
    """Use one intra-op thread when the largest model is small (see the module docstring).

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
