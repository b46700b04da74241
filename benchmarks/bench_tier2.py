"""What the built-in tier 2 suite costs against bare Captum plus bare attention extraction.

Times ``python -m pytest --model=MODEL -m tier2 -p no:cacheprovider -q`` (in a temporary folder,
so nothing else is collected) against a bare script (``torch``, ``captum`` and the model file,
nothing of this package) that does the work the suite reports it did, and prints the medians
and their ratio. Targets: a ratio within 1.5x, and the whole suite under 10 s on tiny_gpt.

"The work the suite did" is read from the health report of an untimed suite run: each test's
``inputs_checked`` (how many batches its check saw) and the attribution checks' step counts
(every refinement of the quadrature). The bare script then does, on random batches of the
suite's shapes:

- attention: per checked input, one forward under a ``TorchFunctionMode`` that computes the
  weights of every ``scaled_dot_product_attention`` call (softmax of the scaled scores with the
  call's mask and causal flag) and checks each row's sum;
- attribution: per checked input and per step count, Captum's ``LayerIntegratedGradients`` on the
  token embedding (Gauss-Legendre, the same steps, 256 rows per forward) of the predicted
  token's logit at one position per row, plus ``f(x)`` and ``f(baseline)``;
- robustness: one more model build, a clean forward, 4 noise levels x 4 draws of embedding
  noise, one FGSM gradient, one forward over the 25-epsilon grid and 4 bisection forwards, on
  16 rows of 32 tokens.

Wall and CPU time (user + system) of each child are reported, with the load average: on a
shared machine the wall clock measures the neighbours too, while at one thread the CPU time is
about what an idle machine's wall clock would show. The last result of a test carries its
details, so a test whose calls differ (two completeness batches, one padded) is counted as that
many calls like its last. Every child runs with ``OMP_NUM_THREADS=1`` unless the variable is
set; runs are interleaved (the order rotates each round) after one untimed warm-up of each.

Usage:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tier2.py [--runs 5] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.5
TARGET_SECONDS = 10.0
REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "example_models" / "tiny_gpt.py"

BARE = r"""
import importlib.util, json, math, sys, time
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from captum.attr import LayerIntegratedGradients

spec = importlib.util.spec_from_file_location("bench_model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
work = json.loads(open(sys.argv[2]).read())
vocab = module.TASK["input_schema"]["vocab_size"]
model = module.build_model().eval()
embedding = model.tok_emb

def batch(rows, length, real, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    mask = torch.zeros(rows, length, dtype=torch.long)
    mask[:, :real] = 1
    return ids, mask

class Weights(TorchFunctionMode):
    def __init__(self):
        super().__init__(); self.maps = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            t, s = scores.shape[-2:]
            if kwargs.get("is_causal"):
                causal = torch.ones(t, s, dtype=torch.bool).tril()
                scores = scores.masked_fill(~causal, float("-inf"))
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if mask is not None:
                if mask.dtype == torch.bool:
                    scores = scores.masked_fill(~mask, float("-inf"))
                else:
                    scores = scores + mask
            self.maps.append(scores.softmax(-1))
        return func(*args, **kwargs)

def attention(rows):
    ids, mask = batch(rows, 12, 8, 0)
    with torch.no_grad(), Weights() as mode:
        model(ids, mask)
    for w in mode.maps:
        assert torch.isfinite(w).all() and ((w.sum(-1) - 1).abs() < 1e-3).all()

def target_forward(ids, mask, positions, tokens):
    logits = model(ids, mask)
    return logits[torch.arange(ids.shape[0]), positions, tokens]

def attribution(steps):
    ids, mask = batch(2, 12, 9, 0)
    with torch.no_grad():
        logits = model(ids, mask)
    positions = torch.tensor([4, 7])
    tokens = logits[torch.arange(2), positions].argmax(-1)
    baseline = torch.zeros_like(ids)
    with torch.no_grad():
        target_forward(ids, mask, positions, tokens)
        target_forward(baseline, mask, positions, tokens)
    for n in steps:
        LayerIntegratedGradients(target_forward, embedding).attribute(
            ids, baselines=baseline, additional_forward_args=(mask, positions, tokens),
            n_steps=n, method="gausslegendre", internal_batch_size=256)

def robustness():
    module.build_model()
    ids, mask = batch(16, 32, 24, 1)
    clean = model(ids, mask).argmax(-1)
    captured = {}
    hook = embedding.register_forward_hook(lambda m, a, o: captured.setdefault("e", o.detach()))
    with torch.no_grad():
        model(ids, mask)
    hook.remove()
    e = captured["e"]
    scale = e.norm(dim=-1, keepdim=True) / math.sqrt(e.shape[-1]) * mask.unsqueeze(-1)
    def run(values, copies):
        h = embedding.register_forward_hook(lambda m, a, o: values)
        try:
            return model(ids.repeat(copies, 1), mask.repeat(copies, 1))
        finally:
            h.remove()
    with torch.no_grad():
        for level in (0.01, 0.03, 0.1, 0.3):
            noise = torch.randn(64, *e.shape[1:])
            noisy = e.repeat(4, 1, 1) + level * scale.repeat(4, 1, 1) * noise
            (run(noisy, 4).argmax(-1) == clean.repeat(4, 1)).float().mean()
    leaf = e.clone().requires_grad_(True)
    last = mask.sum(1) - 1
    logits = run(leaf, 1)[torch.arange(16), last]
    grad, = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(-1), reduction="sum"), leaf)
    step = grad.sign() * scale
    grid = torch.tensor([10 ** (-3 + 3 * k / 24) for k in range(25)])
    with torch.no_grad():
        eps = grid.repeat_interleave(16).view(-1, 1, 1)
        moved = e.repeat(25, 1, 1) + eps * step.repeat(25, 1, 1)
        run(moved, 25)
        for _ in range(4):
            run(e + 0.1 * step, 1)

start = time.perf_counter()
for rows, count in work["attention"]:
    for _ in range(count):
        attention(rows)
for steps, count in work["attribution"]:
    for _ in range(count):
        attribution(steps)
for _ in range(work["robustness"]):
    robustness()
print("WORK", time.perf_counter() - start)
"""


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the child's) and stdout of one child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, done.stdout


def work_from_report(report: dict) -> dict:  # type: ignore[type-arg]
    """What each tier 2 test did, from its check's details."""
    attention: list[list[int]] = []
    attribution: list[list[object]] = []
    robustness = 0
    for check in report["checks"]:
        name, details = check["check_name"], check["details"]
        count = int(details.get("inputs_checked", 1))
        if name.startswith("test_attention"):
            attention.append([4 if name == "test_attention_health" else 2, count])
        elif name == "test_attribution_completeness":
            steps = [entry["n_steps"] for entry in details.get("history", [])]
            attribution.append([steps, count])
        elif name == "test_attribution_locality":
            attribution.append([[details.get("n_steps", 8)], count])
        elif name == "test_robustness":
            robustness += 1
    return {"attention": attention, "attribution": attribution, "robustness": robustness}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite = [
            sys.executable,
            "-m",
            "pytest",
            f"--model={args.model.resolve()}",
            "-m",
            "tier2",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--modeltiers-report={folder / 'health.json'}",
        ]
        run(suite, folder, env)  # warm-up, and the report that says what the suite did
        report = json.loads((folder / "health.json").read_text())
        work = work_from_report(report)
        (folder / "work.json").write_text(json.dumps(work))
        (folder / "bare.py").write_text(BARE)
        bare = [
            sys.executable,
            str(folder / "bare.py"),
            str(args.model.resolve()),
            str(folder / "work.json"),
        ]
        run(bare, folder, env)  # warm-up
        times: dict[str, list[float]] = {"suite": [], "bare": []}
        cpu: dict[str, list[float]] = {"suite": [], "bare": []}
        work_seconds: list[float] = []
        pytest_seconds: list[float] = []
        variants = [("suite", suite), ("bare", bare)]
        for round_index in range(args.runs):
            order = variants[round_index % 2 :] + variants[: round_index % 2]
            for label, command in order:
                seconds, used, out = run(command, folder, env)
                times[label].append(seconds)
                cpu[label].append(used)
                if label == "bare":
                    work_seconds.append(float(out.split("WORK")[1].split()[0]))
                else:
                    pytest_seconds.append(float(re.findall(r" in ([0-9.]+)s", out)[-1]))
    suite_median = statistics.median(times["suite"])
    bare_median = statistics.median(times["bare"])
    ratio = suite_median / bare_median
    durations = {c["check_name"]: round(c["duration_seconds"], 3) for c in report["checks"]}
    print(f"model: {args.model}; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; runs: {args.runs}")
    print(f"work replayed by the bare script: {json.dumps(work)}")
    print(f"per-test check time in the suite (s): {json.dumps(durations)}")
    print(
        f"suite (pytest -m tier2, whole process): median {suite_median:.2f} s "
        f"{[round(t, 2) for t in times['suite']]}"
    )
    work_median = statistics.median(work_seconds)
    print(
        f"bare Captum + attention extraction (whole process): median {bare_median:.2f} s "
        f"{[round(t, 2) for t in times['bare']]}; its work alone {work_median:.2f} s"
    )
    in_pytest = statistics.median(pytest_seconds)
    print(f"suite as pytest reports it (collection and tests, no start-up): {in_pytest:.2f} s")
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"ratio suite/bare: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    suite_cpu, bare_cpu = statistics.median(cpu["suite"]), statistics.median(cpu["bare"])
    print(
        f"CPU time (user + system; about the wall time of an idle machine at one thread): "
        f"suite {suite_cpu:.2f} s, bare {bare_cpu:.2f} s, ratio {suite_cpu / bare_cpu:.2f}x"
    )
    under = "under" if suite_median <= TARGET_SECONDS else "OVER"
    print(
        f"whole tier 2: {suite_median:.2f} s wall, {suite_cpu:.2f} s CPU ({under} the "
        f"{TARGET_SECONDS:g} s target on the wall clock; os.getloadavg() {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
