"""Sharing the CPU between pytest-xdist workers.

PYTEST_DONT_REWRITE

PyTorch gives every process one intra-op thread per core. With ``pytest -n N`` that is N times
too many: on 2 cores with ``-n 2``, a tiny model's forward pass went from under 1 ms to about
36 ms, because the threads of one worker spin while the other worker holds the cores. Each
worker therefore gets ``cores // N`` threads (at least one). Runs without xdist keep torch's
default. A user who has set ``torch.set_num_threads`` (or ``OMP_NUM_THREADS``) explicitly is
not overridden.
"""

from __future__ import annotations

import os


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
