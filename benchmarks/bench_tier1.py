"""What the built-in tier 1 suite costs against bare PyTorch doing the same passes.

Times ``python -m pytest --model=MODEL -m tier1 -p no:cacheprovider -q`` (in a temporary folder
outside the repository, so no other tests are collected) against a bare-PyTorch script that
does the same forward and backward passes, and reports the medians and their ratio. Target: a
ratio of at most 1.5.

"The same passes" is measured, not guessed. One extra suite run (untimed) loads a throwaway
recording plugin (``-p``, written to a temporary folder) that records, in order, each model the
suite builds, every ``forward`` call of those models (the shape, dtype and value range of each
tensor argument; train or eval; grad enabled or not) and every backward pass
(``torch.autograd.grad`` / ``torch.autograd.backward``).
The bare script is generated from that list: ``import torch``, build the model with the model
file's ``build_model()`` as many times as the suite did, and replay each forward with random
tensors of the recorded shapes and value ranges, in the same mode, and the same backward passes
(a cross-entropy loss on the last output). The default Hypothesis profile (``fast``) is not
derandomized, so the timed suite runs draw other examples than the recorded run (on tiny_gpt,
recordings differed by about 5 % in total input size); the medians absorb that.

All runs use fresh interpreters with torch's default thread count, interleaved (the order
rotates each round) so that drift on a shared machine hits every variant alike, after one
untimed warm-up run of each. Bytecode is cached as on a user's machine, in a temporary
``PYTHONPYCACHEPREFIX`` (so nothing is written into the repository) with
``PYTHONDONTWRITEBYTECODE`` lifted for the children; ``--no-bytecode-cache`` keeps the inherited
environment instead, where every run compiles the package and pytest rewrites its modules
again when ``PYTHONDONTWRITEBYTECODE`` is set.

With ``--peer-python``, the closest peer's zero-code run on the same model is timed side by
side too: ``pytest --torch-model=MODEL:build_model`` of pytest-torch 1.1.1, with the number of
checks each tool ran. pytest-torch registers a pytest plugin in every run of the environment it
is installed in, so it lives in a venv of its own, never the project's. The peer is measured as
a user installs it, in a venv holding only it and its dependencies; ``--user-python`` measures
this project the same way, from a venv where it is installed as a user installs it (``pip
install .``, not editable, without the test extras, whose pytest plugins load in every run of
the development venv). ``make bench-peer`` builds both venvs under ``.bench/`` with the pinned
constraints and runs, once as is and once with ``PYTHONDONTWRITEBYTECODE=1 ...
--no-bytecode-cache``:

    .venv/bin/python benchmarks/bench_tier1.py --runs 15 \
        --peer-python .bench/peer/bin/python --user-python .bench/user/bin/python

Each comparison with the peer is also given per round (the variants of a round run back to
back, so a slow stretch of a shared machine hits both): the median difference, the number of
rounds each side was faster, and a two-sided sign test on that count (the chance of a split at
least as uneven if neither tool were faster; under 0.05 is a difference the noise of a shared
machine is unlikely to produce).

Usage:

    .venv/bin/python benchmarks/bench_tier1.py [--runs 5] [--model PATH]
        [--peer-python PEER_PYTHON] [--user-python USER_PYTHON] [--write-bare PATH]
        [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.5
PEER = "pytest-torch 1.1.1"
USER_INSTALL = "user install -m tier1"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "example_models" / "tiny_gpt.py"
RECORD_ENV = "MODELTIERS_BENCH_RECORD"
RECORDER = "modeltiers_bench_recorder"

# The throwaway plugin of the recording run (a conftest would not do: its runtest hooks do not
# apply to the suite's items, which live inside the package). It hooks the model each test
# receives through the ``model`` fixture (a forward pre-hook, so ``forward``'s signature is
# untouched) and wraps torch's two backward entry points (``Tensor.backward`` goes through
# ``autograd.backward``).
RECORDING_PLUGIN = """
import functools
import json
import os

import pytest
import torch

EVENTS = []


def _tensor(value):
    entry = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if not value.is_floating_point() and value.dtype != torch.bool and value.numel():
        entry["low"] = int(value.min())
        entry["high"] = int(value.max()) + 1
    return entry


def _argument(value):
    if isinstance(value, torch.Tensor):
        return {"tensor": _tensor(value)}
    json.dumps(value)  # anything else must be a plain value the bare script can repeat
    return {"value": value}


def _on_forward(index, module, args, kwargs):
    EVENTS.append({
        "event": "forward",
        "model": index,
        "train": module.training,
        "grad": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "args": [_argument(a) for a in args],
        "kwargs": {k: _argument(v) for k, v in kwargs.items()},
    })


def _counted(kind, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        EVENTS.append({"event": "backward", "kind": kind})
        return function(*args, **kwargs)

    return wrapper


torch.autograd.grad = _counted("grad", torch.autograd.grad)
torch.autograd.backward = _counted("backward", torch.autograd.backward)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    model = getattr(item, "funcargs", {}).get("model")
    if not isinstance(model, torch.nn.Module):
        return (yield)
    index = sum(1 for e in EVENTS if e["event"] == "build")
    EVENTS.append({"event": "build", "model": index, "test": item.nodeid})
    hook = functools.partial(_on_forward, index)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        return (yield)
    finally:
        handle.remove()


def pytest_sessionfinish(session):
    with open(os.environ["MODELTIERS_BENCH_RECORD"], "w") as f:
        json.dump(EVENTS, f)
"""

# The bare-PyTorch script; PLAN is a list of (repeat, event) from the recording.
BARE_TEMPLATE = '''"""Bare PyTorch: the passes of one tier 1 suite run on {model_name}."""

import importlib.util

import torch
import torch.nn.functional as F

MODEL = {model!r}
PLAN = {plan}


def load(path):
    spec = importlib.util.spec_from_file_location("bench_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make(argument):
    if "value" in argument:
        return argument["value"]
    spec = argument["tensor"]
    dtype = getattr(torch, spec["dtype"])
    if dtype.is_floating_point:
        return torch.randn(spec["shape"], dtype=dtype)
    if dtype == torch.bool:
        return torch.ones(spec["shape"], dtype=dtype)
    return torch.randint(spec.get("low", 0), spec.get("high", 1), spec["shape"], dtype=dtype)


def logits_of(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    return outputs.logits


def loss_of(outputs):
    logits = logits_of(outputs)
    if logits.dim() >= 2:
        target = torch.randint(logits.shape[-1], logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2).float(), target.flatten())
    return logits.float().mean()


def main():
    torch.manual_seed(0)
    module = load(MODEL)
    models = {{}}
    last = None
    for repeat, event in PLAN:
        for _ in range(repeat):
            kind = event["event"]
            if kind == "build":
                models[event["model"]] = module.build_model()
            elif kind == "forward":
                model = models[event["model"]]
                model.train(event["train"])
                args = [make(a) for a in event["args"]]
                kwargs = {{k: make(v) for k, v in event["kwargs"].items()}}
                if event["inference_mode"]:
                    with torch.inference_mode():
                        last = model(*args, **kwargs)
                else:
                    with torch.set_grad_enabled(event["grad"]):
                        last = model(*args, **kwargs)
            elif event["kind"] == "grad":
                params = [p for p in model.parameters() if p.requires_grad]
                torch.autograd.grad(loss_of(last), params, allow_unused=True)
            else:
                loss_of(last).backward()


main()
'''


def run(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``args``; return stdout and stderr together, or exit with them on failure."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_run(args: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall-clock and CPU seconds (user + system, all threads) of one run, and its output."""
    cpu, start = child_cpu(), time.perf_counter()
    output = run(args, cwd, env)
    return time.perf_counter() - start, child_cpu() - cpu, output


def outcome_counts(output: str) -> dict[str, int]:
    """``{"passed": 11, ...}`` from pytest's final summary line."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        return {}
    found = re.findall(
        r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", lines[-1]
    )
    return {word: int(number) for number, word in found}


def describe_counts(counts: dict[str, int]) -> str:
    ran = sum(counts.get(k, 0) for k in ("passed", "failed", "error", "errors"))
    rest = ", ".join(f"{n} {word}" for word, n in counts.items())
    return f"{ran} checks ran ({rest})"


def compress(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Run-length encode consecutive identical events (warm-up and timing loops repeat)."""
    plan: list[tuple[int, dict[str, Any]]] = []
    for event in events:
        if plan and plan[-1][1] == event:
            plan[-1] = (plan[-1][0] + 1, event)
        else:
            plan.append((1, event))
    return plan


def summarize(events: list[dict[str, Any]]) -> str:
    forwards = [e for e in events if e["event"] == "forward"]
    builds = sum(1 for e in events if e["event"] == "build")
    backwards = sum(1 for e in events if e["event"] == "backward")
    train_grad = sum(1 for e in forwards if e["train"] and e["grad"])
    eval_nograd = sum(1 for e in forwards if not e["train"] and not e["grad"])
    other = len(forwards) - train_grad - eval_nograd
    tokens = 0
    for e in forwards:
        first = next((a["tensor"] for a in e["args"] if "tensor" in a), None)
        if first is None:
            first = next((a["tensor"] for a in e["kwargs"].values() if "tensor" in a), None)
        if first is not None:
            size = 1
            for dim in first["shape"]:
                size *= dim
            tokens += size
    return (
        f"{len(forwards)} forward passes ({eval_nograd} eval without grad, {train_grad} train "
        f"with grad, {other} other; {tokens} input elements in all), {backwards} backward "
        f"passes, {builds} models built"
    )


def bare_script(model: Path, events: list[dict[str, Any]]) -> str:
    plan = "[\n" + "".join(f"    {item!r},\n" for item in compress(events)) + "]"
    return BARE_TEMPLATE.format(model_name=model.name, model=str(model), plan=plan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each variant (default 5)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model file")
    parser.add_argument(
        "--peer-python",
        help="python of a separate venv with pytest-torch 1.1.1 installed: time it side by side",
    )
    parser.add_argument(
        "--user-python",
        help="python of a venv where this project is installed as a user installs it "
        "(pip install ., no test extras): time the suite there too",
    )
    parser.add_argument("--write-bare", type=Path, help="also save the generated bare script")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the children in the inherited environment (no temporary pycache prefix)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    model = args.model.resolve()
    python = sys.executable
    # Absolute but not resolved: a venv's python is a symlink, and following it leaves the venv.
    for option in ("peer_python", "user_python"):
        if getattr(args, option):
            setattr(args, option, os.path.abspath(getattr(args, option)))

    with tempfile.TemporaryDirectory(prefix="bench-tier1-") as folder:
        root = Path(folder)
        plugin_dir, record_dir, run_dir = root / "plugin", root / "record", root / "run"
        for empty in (plugin_dir, record_dir, run_dir):
            empty.mkdir()
        env = dict(os.environ)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        # --model=PATH, one argument: a separate path argument would make pytest look for its
        # configuration around the model file instead of the (empty) folder the runs are in.
        suite = [python, "-m", "pytest", f"--model={model}", "-m", "tier1"]
        suite += ["-p", "no:cacheprovider", "-q"]

        # 1. One instrumented run records the passes the suite makes.
        (plugin_dir / f"{RECORDER}.py").write_text(RECORDING_PLUGIN)
        record_file = root / "events.json"
        path = os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
        record_env = {**env, RECORD_ENV: str(record_file), "PYTHONPATH": path}
        run([*suite, "-p", RECORDER], record_dir, record_env)
        events: list[dict[str, Any]] = json.loads(record_file.read_text())
        bare_path = root / "bare_tier1.py"
        bare_path.write_text(bare_script(model, events))
        if args.write_bare:
            args.write_bare.write_text(bare_path.read_text())
        print(f"model: {model}")
        print(f"recorded suite run: {summarize(events)}")

        # 2. Interleaved timed runs in fresh interpreters.
        variants: dict[str, list[str]] = {
            "pytest -m tier1": suite,
            "bare PyTorch": [python, str(bare_path)],
        }
        if args.user_python:
            variants[USER_INSTALL] = [args.user_python, *suite[1:]]
        if args.peer_python:
            variants[PEER] = [
                args.peer_python,
                *("-m", "pytest", f"--torch-model={model}:build_model"),
                *("-p", "no:cacheprovider", "-q"),
            ]
        outputs: dict[str, str] = {}
        for name, command in variants.items():  # warm the file system cache
            outputs[name] = time_run(command, run_dir, env)[2]
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu_times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(args.runs):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, cpu, outputs[name] = time_run(variants[name], run_dir, env)
                times[name].append(seconds)
                cpu_times[name].append(cpu)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"runs: {args.runs} of each, interleaved; torch's default threads; seconds wall-clock")
    for name, values in times.items():
        listed = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:>20}: median {medians[name]:6.2f} s, min {min(values):6.2f} s  [{listed}]")
    suite_times, bare_times = times["pytest -m tier1"], times["bare PyTorch"]
    ratio = medians["pytest -m tier1"] / medians["bare PyTorch"]
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"{'ratio':>20}: {ratio:.2f} ({verdict} the {TARGET_RATIO} target; ratio of medians)")
    paired = statistics.median(s / b for s, b in zip(suite_times, bare_times, strict=True))
    best = min(suite_times) / min(bare_times)
    print(f"{'':>20}  median of per-round ratios {paired:.2f}, ratio of minimums {best:.2f}")
    cpu_medians = {name: statistics.median(values) for name, values in cpu_times.items()}
    print(
        "CPU seconds (user + system, all threads; less sensitive to a busy neighbour): "
        + ", ".join(f"{name} {value:.2f}" for name, value in cpu_medians.items())
        + f"; ratio {cpu_medians['pytest -m tier1'] / cpu_medians['bare PyTorch']:.2f}"
    )
    ours = describe_counts(outcome_counts(outputs["pytest -m tier1"]))
    print(f"{'pytest-modeltiers':>20}: {medians['pytest -m tier1']:.2f} s per model, {ours}")
    if args.peer_python:
        peer = describe_counts(outcome_counts(outputs[PEER]))
        print(f"{PEER:>20}: {medians[PEER]:.2f} s per model, {peer}")
        for name in ("pytest -m tier1", USER_INSTALL):
            if name in times:
                print(compare_with_peer(name, times[name], times[PEER]))
    return 0


def compare_with_peer(name: str, ours: list[float], peer: list[float]) -> str:
    """Per-round comparison: the median of (ours - peer), who was faster how often, and how
    likely that split would be if neither tool were faster (a two-sided sign test)."""
    differences = [a - b for a, b in zip(ours, peer, strict=True)]
    faster = sum(d < 0 for d in differences)
    slower = sum(d > 0 for d in differences)
    median = statistics.median(differences)
    verdict = "faster" if median < 0 else "slower"
    return (
        f"{name} vs {PEER}: {abs(median):.2f} s {verdict} per round (median of "
        f"{len(differences)} paired rounds; faster in {faster} of {len(differences)}, "
        f"sign test p = {sign_test(faster, slower):.3f})"
    )


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven between ``wins``
    and ``losses`` if each round were a fair coin (ties left out)."""
    rounds = wins + losses
    if rounds == 0:
        return 1.0
    extreme = min(wins, losses)
    tail = sum(math.comb(rounds, k) for k in range(extreme + 1)) / 2**rounds
    return min(1.0, 2 * tail)


if __name__ == "__main__":
    sys.exit(main())
