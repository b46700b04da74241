"""What tier 3 costs against bare PyTorch doing the same training steps.

Two comparisons, each timed in fresh interpreters, interleaved (the order rotates each round)
after one untimed warm-up of each variant, medians reported with their ratio:

1. **The sanity checks.** ``python -m pytest --model MODEL -m tier3 -k "not test_training_run"
   -p no:cacheprovider -q`` (in a temporary folder, so nothing else is collected) against a bare
   script (``import torch`` and the model file only) that does the optimizer steps the four
   checks do on the same batch shapes: AdamW at 1e-2 on one 4x16 batch until the loss halves
   (at most 100 steps), one full-batch and one two-micro-batch SGD update, 4 AdamW steps
   straight then 2 + ``torch.save``/``torch.load(weights_only=True)`` into a fresh model + 2,
   and two seeded runs of 4 steps. Target: ratio within 2x.
2. **One run_training call.** ``run_training`` of the model on its task's shipped data
   (2 epochs, 128 training and 64 validation examples, batch 16: 16 AdamW steps, validation
   every epoch, evaluations before and after, 3 checkpoints) against a bare loop doing the same
   steps on the same tensors (same forward/backward/step count, the same validation and
   evaluation passes, 3 ``torch.save`` of model + optimizer). Reported three ways: the whole
   process (interpreter and imports included), the first call alone (timed inside the process
   after the package's imports; it includes Lightning's import, which ``run_training`` does on
   first use), and a second call in the same process (what each further run costs a notebook
   user once Lightning is loaded).

Every child runs with ``OMP_NUM_THREADS=1`` unless the variable is already set.

Usage:

    .venv/bin/python benchmarks/bench_tier3.py [--runs 5] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 2.0
REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "example_models" / "tiny_gpt.py"

BARE_CHECKS = r"""
import copy, importlib.util, io, sys, torch
import torch.nn.functional as F
spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
vocab = module.TASK["input_schema"]["vocab_size"]
def loss_of(model, x):
    logits = model(x, torch.ones_like(x))
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1))
def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (4, 16), generator=g)
def steps(model, batches, lr=1e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    out = []
    for x in batches:
        loss = loss_of(model, x); loss.backward(); opt.step(); opt.zero_grad()
        out.append(float(loss))
    return opt, out
base = module.build_model()
# overfit one batch: AdamW 1e-2 until the loss halves (at most 100 steps)
torch.manual_seed(0); model = copy.deepcopy(base).train(); x = batch(0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2); first = None
for _ in range(100):
    loss = loss_of(model, x); loss.backward(); opt.step(); opt.zero_grad()
    first = float(loss) if first is None else first
    if float(loss) <= 0.5 * first: break
# gradient accumulation: one full-batch and one 2-micro-batch SGD update
for parts in ([x], [x[:2], x[2:]]):
    model = copy.deepcopy(base).train(); opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for p in parts: (loss_of(model, p) * (p.shape[0] / 4)).backward()
    opt.step()
# resume: 4 straight, 2 + checkpoint + fresh model + 2
batches = [batch(s) for s in range(4)]
torch.manual_seed(0); steps(copy.deepcopy(base).train(), batches)
torch.manual_seed(0); model = copy.deepcopy(base).train(); opt, _ = steps(model, batches[:2])
buf = io.BytesIO()
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf); buf.seek(0)
state = torch.load(buf, weights_only=True)
fresh = module.build_model().train(); fresh.load_state_dict(state["model"])
opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3); opt2.load_state_dict(state["opt"])
for x in batches[2:]:
    loss = loss_of(fresh, x); loss.backward(); opt2.step(); opt2.zero_grad()
# seed reproducibility: two seeded runs of 4 steps
for _ in range(2):
    torch.manual_seed(0); steps(copy.deepcopy(base).train(), batches)
"""

RUN_TRAINING = r"""
import importlib.util, sys, tempfile, time
from pytest_modeltiers import TrainingConfig, get_adapter, resolve_task, run_training
spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
task = resolve_task(module.TASK)
cfg = TrainingConfig(task_name=task.name, epochs=2, batch_size=16, learning_rate=3e-3,
    max_train_samples=128, max_val_samples=64, precision="32-true", save_every_n_epochs=1,
    early_stopping_patience=0)
for label in ("CALL", "AGAIN"):  # the first call imports Lightning, the second does not
    model = module.build_model()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_training(model, get_adapter(task), cfg, task, run_dir=tmp)
        print(label, time.perf_counter() - start)
"""

BARE_RUN = r"""
import importlib.util, sys, tempfile, time, torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from pytest_modeltiers import resolve_task
from pytest_modeltiers.datasets import task_dataset
spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
task = resolve_task(module.TASK)
train = DataLoader(task_dataset(task, "train", size=128), batch_size=16, shuffle=True)
val = DataLoader(task_dataset(task, "validation", size=64), batch_size=16)
def loss_of(model, b):
    logits = model(b["input_ids"], b["attention_mask"])
    labels = b["labels"].masked_fill(b["attention_mask"] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
def evaluate(model):
    model.eval()
    with torch.no_grad():
        total = sum(float(loss_of(model, b)) for b in val)
    model.train()
    return total
def save(model, opt, path):
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
for label in ("CALL", "AGAIN"):
    model = module.build_model()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        torch.manual_seed(42)
        evaluate(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        for epoch in range(2):
            for b in train:
                loss = loss_of(model, b); loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step(); opt.zero_grad()
            evaluate(model)
            save(model, opt, f"{tmp}/epoch{epoch}.pt")
        save(model, opt, f"{tmp}/last.pt")
        evaluate(model)
        print(label, time.perf_counter() - start)
"""


def timed(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[float, float | None, float | None]:
    """Wall seconds of the process, and the in-process ``CALL``/``AGAIN`` seconds it printed."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode not in (0,):
        raise SystemExit(
            f"{args[:4]} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    found: dict[str, float] = {}
    for line in done.stdout.splitlines():
        label, _, value = line.partition(" ")
        if label in ("CALL", "AGAIN"):
            found[label] = float(value)
    return wall, found.get("CALL"), found.get("AGAIN")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each variant")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an lm model file")
    args = parser.parse_args()
    python = sys.executable
    # One thread per process for every variant: the comparison is about the work, and on a
    # shared machine more threads mostly measure the neighbours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-tier3-") as tmp:
        folder = Path(tmp)
        model = folder / args.model.name
        model.write_bytes(args.model.read_bytes())
        for name, text in (
            ("bare_checks.py", BARE_CHECKS),
            ("run.py", RUN_TRAINING),
            ("bare_run.py", BARE_RUN),
        ):
            (folder / name).write_text(text)
        variants = {
            "tier3 checks (pytest)": [
                python,
                "-m",
                "pytest",
                "--model",
                model.name,
                "-m",
                "tier3",
                "-k",
                "not test_training_run",
                "-p",
                "no:cacheprovider",
                "-q",
            ],
            "bare checks": [python, "bare_checks.py", model.name],
            "run_training": [python, "run.py", model.name],
            "bare training loop": [python, "bare_run.py", model.name],
        }
        for command in variants.values():  # warm-up (bytecode, page cache)
            timed(command, folder, env)
        walls: dict[str, list[float]] = {name: [] for name in variants}
        calls: dict[str, list[float]] = {name: [] for name in variants}
        again: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(args.runs):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                wall, call, second = timed(variants[name], folder, env)
                walls[name].append(wall)
                if call is not None:
                    calls[name].append(call)
                if second is not None:
                    again[name].append(second)
    med = {name: statistics.median(values) for name, values in walls.items()}
    med_call = {name: statistics.median(v) for name, v in calls.items() if v}
    med_again = {name: statistics.median(v) for name, v in again.items() if v}
    again_ratio = med_again["run_training"] / med_again["bare training loop"]
    checks_ratio = med["tier3 checks (pytest)"] / med["bare checks"]
    run_ratio = med["run_training"] / med["bare training loop"]
    call_ratio = med_call["run_training"] / med_call["bare training loop"]
    print(f"model: {args.model.name}; {args.runs} runs each; medians (seconds)")
    for name in variants:
        extra = (
            f"  (first call {med_call[name]:.3f}, second call {med_again[name]:.3f})"
            if name in med_call
            else ""
        )
        print(f"  {name:24s} {med[name]:7.3f}{extra}")
    print(f"tier 3 sanity checks / bare: {checks_ratio:.2f}x (target <= {TARGET_RATIO:g}x)")
    print(f"run_training process / bare loop process: {run_ratio:.2f}x")
    print(
        f"first run_training call / bare loop (Lightning's import included): {call_ratio:.2f}x "
        f"(+{med_call['run_training'] - med_call['bare training loop']:.3f} s)"
    )
    print(
        f"second run_training call / bare loop: {again_ratio:.2f}x "
        f"(+{med_again['run_training'] - med_again['bare training loop']:.3f} s)"
    )
    print(
        json.dumps(
            {
                "checks_ratio": checks_ratio,
                "run_ratio": run_ratio,
                "call_ratio": call_ratio,
                "again_ratio": again_ratio,
                "medians": med,
                "call_medians": med_call,
                "second_call_medians": med_again,
            }
        )
    )
    return 0 if checks_ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
