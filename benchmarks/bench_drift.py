"""What profiling plus drift testing costs against bare numpy/scipy computing the same statistics.

Three signals of 1,000,000 rows each, reference and current: a numeric column (normal), token
ids over 5,000 categories (Zipf) and model scores (float32 probabilities). The current sample
is drawn from the same distributions with a small shift, so every statistic has real work.

``modeltiers``: ``profile_signals`` on the current data (exact profiles: ``max_exact_values=None``,
every distinct value kept) and ``compare_profiles`` against the reference profile, which is
built beforehand as CI would load it. Building the reference profile too is timed separately
(``modeltiers+ref``).

``bare``: numpy/scipy on the raw arrays computing the same statistics the comparison reports
for samples this large: per numeric signal the std-normalised Wasserstein distance
(``scipy.stats.wasserstein_distance``) and PSI over the reference's 10 quantile bins; for the
tokens the counts (``np.bincount``), the unseen mass, the Jensen-Shannon distance (base 2,
``scipy.spatial.distance.jensenshannon``) over the same top-K pooling and PSI over the categories.

Each variant runs ``--runs`` times, interleaved, after one warm-up; the medians and their ratio
are printed, with the extra peak memory of one run (``tracemalloc``, which numpy reports its
buffers to). Target on a 2-core machine: ``modeltiers`` under 0.5 s and 200 MB.

Usage:

    .venv/bin/python benchmarks/bench_drift.py [--runs 5] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from pytest_modeltiers.drift.distribution import (
    Profile,
    _pooled_categories,
    compare_profiles,
    profile_signals,
)

TARGET_SECONDS = 0.5
TARGET_MB = 200.0
CATEGORIES = 5000
KINDS = {"numeric": "numeric", "tokens": "categorical", "scores": "numeric"}


def make_data(rows: int, seed: int, shift: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, CATEGORIES + 1)
    zipf /= zipf.sum()
    tilted = (1 - shift) * zipf + shift * zipf[::-1]
    logits = rng.normal(loc=shift, size=rows)
    return {
        "numeric": rng.normal(loc=shift, size=rows),
        "tokens": rng.choice(CATEGORIES, size=rows, p=tilted),
        "scores": (1.0 / (1.0 + np.exp(-logits))).astype(np.float32),
    }


def ours(reference: Profile, current: dict[str, np.ndarray]) -> dict[str, float]:
    profile = profile_signals(current, kinds=KINDS, max_exact_values=None)
    report = compare_profiles(reference, profile)
    return {s.name: float(s.statistic or 0.0) for s in report.signals}


def ours_with_reference(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> Any:
    reference = profile_signals(ref, kinds=KINDS, max_exact_values=None)
    return ours(reference, cur)


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    return float(np.sum((q - p) * np.log(q / p)))


def bare(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("numeric", "scores"):
        r = ref[name].astype(np.float64)
        c = cur[name].astype(np.float64)
        out[name] = stats.wasserstein_distance(r, c) / r.std()
        edges = np.unique(np.quantile(r, np.linspace(0, 1, 11)[1:-1]))
        rb = np.bincount(np.searchsorted(edges, r, side="right"), minlength=edges.size + 1)
        cb = np.bincount(np.searchsorted(edges, c, side="right"), minlength=edges.size + 1)
        out[name + "_psi"] = _psi(rb / r.size, cb / c.size)
    rc = np.bincount(ref["tokens"], minlength=CATEGORIES).astype(np.float64)
    cc = np.bincount(cur["tokens"], minlength=CATEGORIES).astype(np.float64)
    unseen = cc[rc == 0].sum()
    k = _pooled_categories(int(rc.sum()), int(cc.sum()), 0.1)
    order = np.argsort(-rc, kind="stable")
    keep, tail = order[: k - 1], order[k - 1 :]
    rp = np.append(rc[keep], rc[tail].sum())
    cp = np.append(cc[keep], cc[tail].sum())
    out["tokens"] = float(jensenshannon(rp / rp.sum(), cp / cp.sum(), base=2))
    out["tokens_psi"] = _psi(rc / rc.sum(), cc / cc.sum())
    out["tokens_unseen"] = float(unseen)
    return out


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_mb(fn: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    ref = make_data(args.rows, seed=1, shift=0.0)
    cur = make_data(args.rows, seed=2, shift=0.05)
    reference = profile_signals(ref, kinds=KINDS, max_exact_values=None)

    variants: dict[str, Callable[[], Any]] = {
        "modeltiers": lambda: ours(reference, cur),
        "modeltiers+ref": lambda: ours_with_reference(ref, cur),
        "bare numpy/scipy": lambda: bare(ref, cur),
    }
    ours_stats, bare_stats = ours(reference, cur), bare(ref, cur)
    for name in ("numeric", "scores", "tokens"):
        assert abs(ours_stats[name] - bare_stats[name]) < 1e-9, (name, ours_stats, bare_stats)
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for run in range(args.runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            times[name].append(timed(variants[name]))
    memory = {name: peak_mb(fn) for name, fn in variants.items()}
    base = statistics.median(times["bare numpy/scipy"])
    print(f"3 signals x {args.rows:,} rows (numeric, {CATEGORIES} token ids, scores), exact")
    print(f"{'variant':<18} {'median s':>9} {'min s':>7} {'ratio':>6} {'extra peak MB':>14}")
    for name in names:
        median = statistics.median(times[name])
        print(
            f"{name:<18} {median:>9.3f} {min(times[name]):>7.3f} {median / base:>6.2f} "
            f"{memory[name]:>14.1f}"
        )
    median = statistics.median(times["modeltiers"])
    ok = median < TARGET_SECONDS and memory["modeltiers"] < TARGET_MB
    print(
        f"statistics agree with bare scipy (Wasserstein, JS); target < {TARGET_SECONDS} s and "
        f"< {TARGET_MB:.0f} MB extra: {'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
