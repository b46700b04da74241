"""What the installed plugin costs a pytest run that does not use it.

Runs a trivial test suite in fresh interpreters, alternating ``pytest`` (plugin loaded, no
``--model``) with ``pytest -p no:modeltiers`` (plugin disabled), and reports the medians and
their ratio. Target: under 1.05 (the plugin adds less than 5 %).

    .venv/bin/python benchmarks/bench_plugin_overhead.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.05


def time_run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each variant (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "test_trivial.py").write_text("def test_trivial():\n    assert True\n")
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        variants = {"with plugin": base, "-p no:modeltiers": [*base, "-p", "no:modeltiers"]}
        for command in variants.values():
            time_run(command, cwd)  # warm the file system cache
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, command in variants.items():
                times[name].append(time_run(command, cwd))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["with plugin"] / medians["-p no:modeltiers"]
    for name, value in medians.items():
        print(f"{name:>18}: median {value * 1000:7.1f} ms over {args.runs} runs")
    verdict = "within" if ratio < TARGET_RATIO else "OVER"
    print(f"{'ratio':>18}: {ratio:.3f} ({verdict} the {TARGET_RATIO} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
