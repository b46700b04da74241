"""What entering the sandbox costs a session: building the policy and confining the process.

Each run is a fresh interpreter (confinement is irreversible) that has already imported torch and
the sandbox module, as a session has when the loader confines it; it times ``default_readable``,
``python_executables`` and ``confine`` with a ``SandboxPolicy`` like a session's. Reports the
median and the maximum. Target: under 50 ms.

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

TARGET_MS = 50.0

ENTER = """
import sys, time
from pathlib import Path
import torch
from pytest_modeltiers.models.sandbox import (
    SandboxPolicy, confine, default_readable, python_executables,
)
start = time.perf_counter()
policy = SandboxPolicy(
    writable=(Path(sys.argv[1]),), readable=default_readable(), executable=python_executables()
)
report = confine(policy)
elapsed = time.perf_counter() - start
assert report.confined, report.reason
print(elapsed * 1000)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as writable:
        times = [
            float(
                subprocess.run(
                    [sys.executable, "-c", ENTER, writable],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(args.runs)
        ]
    median = statistics.median(times)
    print(
        f"entering the sandbox: median {median:.1f} ms, max {max(times):.1f} ms, {args.runs} runs"
    )
    print(f"target under {TARGET_MS:g} ms: {'met' if median < TARGET_MS else 'MISSED'}")
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
