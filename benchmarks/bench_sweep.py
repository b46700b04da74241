"""What ``run_grid_sweep`` costs against bare Optuna running the same trials.

One 16-trial grid (4 learning rates x 4 batch sizes) of the lean training loop: each trial
builds the tiny GPT fresh, takes 8 AdamW steps through its adapter on a fixed batch and returns
the last loss. Both variants run the identical trial function in the same process:

- **ours**: ``run_grid_sweep(base, grid, run_fn, db=...)``: the grid queued in a journal file
  next to a new experiment database, every trial a database run (sweep id, params, config,
  metric, status);
- **bare Optuna**: ``optuna.create_study(sampler=GridSampler(grid), storage=<journal file>)``
  and ``study.optimize(objective, n_trials=16)``: the same storage kind, no database.

After one untimed warm-up of each, the variants alternate (the order swaps every round); the
medians and their ratio are printed. Target: ratio within 1.2x. Threads: ``OMP_NUM_THREADS=1``
and ``torch.set_num_threads(1)`` unless ``--threads`` says otherwise (printed).

Usage:

    .venv/bin/python benchmarks/bench_sweep.py [--runs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.2
REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "example_models" / "tiny_gpt.py"
GRID = {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "batch_size": [2, 4, 6, 8]}
STEPS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed sweeps of each variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import optuna
    import torch

    from pytest_modeltiers import LoadRequest, load_model, make_batch, run_grid_sweep
    from pytest_modeltiers.training.lean_loop import LeanLoop, build_optimizer

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_model(LoadRequest(spec=str(MODEL), rootdir=REPO))
    batches = {size: make_batch(loaded.task, size, 16) for size in GRID["batch_size"]}

    def lean_trial(learning_rate: float, batch_size: int) -> float:
        model = loaded.new_model()
        optimizer = build_optimizer(model, "adamw", lr=learning_rate)
        loop = LeanLoop(model, loaded.adapter, optimizer)
        loss = float("nan")
        for _ in range(STEPS):
            loss = loop.step(batches[batch_size])
        return loss

    def ours(folder: Path, tag: str) -> float:
        start = time.perf_counter()
        result = run_grid_sweep(
            {"learning_rate": 0.0, "batch_size": 0},
            GRID,
            run_fn=lambda c: {"train/loss": lean_trial(c["learning_rate"], c["batch_size"])},
            db=folder / f"{tag}.db",
            sweep_name=tag,
            metric="train/loss",
        )
        elapsed = time.perf_counter() - start
        assert len(result.completed) == 16, [t.error for t in result.trials]
        return elapsed

    def bare(folder: Path, tag: str) -> float:
        start = time.perf_counter()
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / f"{tag}.journal"))
        )
        study = optuna.create_study(
            study_name=tag, storage=storage, sampler=optuna.samplers.GridSampler(GRID)
        )

        def objective(trial: Any) -> float:
            rate = trial.suggest_categorical("learning_rate", GRID["learning_rate"])
            size = trial.suggest_categorical("batch_size", GRID["batch_size"])
            return lean_trial(rate, size)

        study.optimize(objective, n_trials=16)
        elapsed = time.perf_counter() - start
        assert len(study.trials) == 16
        return elapsed

    times: dict[str, list[float]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        folder = Path(scratch)
        ours(folder, "warm-ours")
        bare(folder, "warm-bare")
        for round_ in range(args.runs):
            order = (("ours", ours), ("bare", bare))
            for name, variant in order if round_ % 2 == 0 else order[::-1]:
                times[name].append(variant(folder, f"{name}-{round_}"))
    ours_median = statistics.median(times["ours"])
    bare_median = statistics.median(times["bare"])
    ratio = ours_median / bare_median
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, optuna {optuna.__version__}"
    )
    print(
        f"threads: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"torch.get_num_threads()={torch.get_num_threads()}"
    )
    print(f"16-trial grid, {STEPS} lean-loop steps per trial, {args.runs} rounds (medians):")
    print(f"  run_grid_sweep (journal + experiment DB): {ours_median:.3f} s  {times['ours']}")
    print(f"  bare Optuna (journal, GridSampler):       {bare_median:.3f} s  {times['bare']}")
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"  ratio {ratio:.3f}x ({verdict} the {TARGET_RATIO}x target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
