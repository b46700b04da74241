"""How torch's CPU threads behave in a test session: no spinning, and a fair share per worker.

PYTEST_DONT_REWRITE

Two settings, both chosen before torch is imported, because OpenMP reads them only once, when
torch loads it:

- ``OMP_WAIT_POLICY=PASSIVE``: an OpenMP thread that finishes its part of an operation sleeps
  instead of spinning while it waits for the next one. Spinning is free on an idle machine and
  ruinous on a busy one (a CI runner with other jobs, or pytest-xdist workers): a spinning
  thread holds a core the descheduled sibling it waits for needs. Tier 1 on a tiny GPT next to
  another tier run took 36.8 s with spinning threads and 4.0 s with passive ones.
- With pytest-xdist, each worker gets ``cores // workers`` intra-op threads (at least one):
  torch's default of one thread per core is N times too many with ``-n N``.

A user's own setting always wins: ``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS`` or ``GOMP_SPINCOUNT``
in the environment are left alone, and a torch imported before the plugin could act (by a
``conftest.py`` or another plugin) keeps whatever it started with. The session header says
which case applies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"
USER_THREAD_SETTINGS = ("OMP_NUM_THREADS", WAIT_POLICY, "GOMP_SPINCOUNT")


def choose_wait_policy(environ: MutableMapping[str, str] | None = None) -> str:
    """Make waiting OpenMP threads sleep, unless the user or an earlier import decided already.

    Returns the session header's description of the thread settings in force.
    """
    env = os.environ if environ is None else environ
    chosen = [f"{name}={env[name]}" for name in USER_THREAD_SETTINGS if env.get(name)]
    if chosen:
        return f"threads: {', '.join(chosen)} (set in the environment; left as it is)"
    if "torch" in sys.modules:
        return (
            "threads: torch was imported before the plugin started (by a conftest.py or another "
            "plugin), so its OpenMP threads keep spinning while they wait; set "
            f"{WAIT_POLICY}=PASSIVE in the environment to stop them on busy machines"
        )
    env[WAIT_POLICY] = "PASSIVE"
    return f"threads: {WAIT_POLICY}=PASSIVE (waiting threads sleep instead of spinning)"


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
