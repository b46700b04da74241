"""Tier 1 on a busy machine: next to two CPU-bound processes, against the same run on a quiet one.

CI runners are rarely idle. OpenMP threads that spin while they wait hold a core that the
sibling they wait for needs, so a run can slow down tenfold next to other work. The plugin
makes waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``, see ``pytest_modeltiers.threads``);
this script measures what that buys.

Each round times, in fresh interpreters, ``python -m pytest --model=MODEL -m tier1`` in three
thread settings and the bare-PyTorch script of the same passes (generated as in
``bench_tier1.py``), first on the machine as it is ("quiet"), then next to two processes that
spin on the CPU ("busy", one per core of a 2-core runner; ``--burners`` changes the count):

- ``tier1``: the plugin's own choice (nothing set in the environment);
- ``tier1 spinning``: ``GOMP_SPINCOUNT=300000``, libgomp's default spin count, which the plugin
  leaves alone because the user set it: the behaviour before the plugin chose a wait policy;
- ``tier1 1 thread``: ``OMP_NUM_THREADS=1``;
- ``bare PyTorch``: the same forward and backward passes without pytest or the plugin, with
  torch's defaults.

The order of the variants rotates each round. Reported per variant: the median and the worst
run in each condition, and the worst busy run over the quiet median. Target: the plugin's own
setting keeps every busy run within 2x its quiet median. Run it on an otherwise idle machine:
the "quiet" condition is only as quiet as the machine.

Usage:

    .venv/bin/python benchmarks/bench_busy.py [--runs 3] [--burners 2] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_tier1  # a sibling script, importable once its folder is on the path

TARGET = 2.0
OWN = "tier1"
THREAD_VARIANTS = {
    OWN: {},
    "tier1 spinning": {"GOMP_SPINCOUNT": "300000"},
    "tier1 1 thread": {"OMP_NUM_THREADS": "1"},
}
BARE = "bare PyTorch"
BURNER = "while True: pass"


@contextmanager
def burning(count: int) -> Iterator[None]:
    """``count`` processes that keep one core each busy while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def clean_env(root: Path) -> dict[str, str]:
    """The environment without any OpenMP setting, bytecode cached in a temporary prefix."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.pop("GOMP_SPINCOUNT", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def record_bare_script(model: Path, suite: list[str], root: Path, env: dict[str, str]) -> Path:
    """The bare-PyTorch script of the passes one recorded suite run makes (``bench_tier1``)."""
    plugin_dir, record_dir = root / "plugin", root / "record"
    plugin_dir.mkdir()
    record_dir.mkdir()
    (plugin_dir / f"{bench_tier1.RECORDER}.py").write_text(bench_tier1.RECORDING_PLUGIN)
    record_file = root / "events.json"
    path = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
    record_env = {**env, bench_tier1.RECORD_ENV: str(record_file), "PYTHONPATH": path}
    bench_tier1.run([*suite, "-p", bench_tier1.RECORDER], record_dir, record_env)
    events: list[dict[str, Any]] = json.loads(record_file.read_text())
    print(f"recorded suite run: {bench_tier1.summarize(events)}")
    bare = root / "bare_tier1.py"
    bare.write_text(bench_tier1.bare_script(model, events))
    return bare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds in each condition (3)")
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound neighbours (2)")
    parser.add_argument("--model", type=Path, default=bench_tier1.DEFAULT_MODEL)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="another thread setting of the suite to time, e.g. 'spin 10k:GOMP_SPINCOUNT=10000'",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.burners < 1:
        parser.error("--runs and --burners must be at least 1")
    model = args.model.resolve()
    thread_variants = dict(THREAD_VARIANTS)
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        pairs = [item.partition("=") for item in settings.split(",") if item]
        if not name or not pairs or any(not key or not sep for key, sep, _ in pairs):
            parser.error(f"--variant {spec!r}: expected NAME:VAR=VALUE[,VAR=VALUE]")
        thread_variants[name] = {key: value for key, _, value in pairs}
    python = sys.executable
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as folder:
        root = Path(folder)
        run_dir = root / "run"
        run_dir.mkdir()
        env = clean_env(root)
        suite = [python, "-m", "pytest", f"--model={model}", "-m", "tier1"]
        suite += ["-p", "no:cacheprovider", "-q"]
        bare = record_bare_script(model, suite, root, env)
        variants = {
            **{name: (suite, {**env, **extra}) for name, extra in thread_variants.items()},
            BARE: ([python, str(bare)], env),
        }
        for command, variant_env in variants.values():  # warm the file system cache
            bench_tier1.time_run(command, run_dir, variant_env)
        names = list(variants)
        for round_ in range(args.runs):
            shift = round_ % len(names)
            order = names[shift:] + names[:shift]
            for condition in ("quiet", "busy"):
                with burning(args.burners if condition == "busy" else 0):
                    for name in order:
                        command, variant_env = variants[name]
                        seconds = bench_tier1.time_run(command, run_dir, variant_env)[0]
                        times.setdefault((name, condition), []).append(seconds)

    print(
        f"model: {model}; {args.runs} rounds, variants interleaved; busy = next to "
        f"{args.burners} CPU-bound processes on {os.cpu_count()} cores; seconds wall-clock"
    )
    for name in variants:
        quiet, busy = times[(name, "quiet")], times[(name, "busy")]
        worst_ratio = max(busy) / statistics.median(quiet)
        print(
            f"{name:>16}: quiet median {statistics.median(quiet):6.2f} worst {max(quiet):6.2f}"
            f" | busy median {statistics.median(busy):6.2f} worst {max(busy):6.2f}"
            f" | worst busy / quiet median {worst_ratio:5.2f}"
            f"  [{' '.join(f'{t:.1f}' for t in quiet)} | {' '.join(f'{t:.1f}' for t in busy)}]"
        )
    own_quiet = statistics.median(times[(OWN, "quiet")])
    own_worst = max(times[(OWN, "busy")]) / own_quiet
    verdict = "within" if own_worst <= TARGET else "OVER"
    print(
        f"plugin's setting: worst busy run {own_worst:.2f}x its quiet median ({verdict} {TARGET}x)"
    )
    bare_quiet = statistics.median(times[(BARE, "quiet")])
    print(f"plugin's setting over bare PyTorch, quiet medians: {own_quiet / bare_quiet:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
