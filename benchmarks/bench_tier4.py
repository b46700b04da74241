"""What the built-in tier 4 suite costs against a bare script doing the same exports and checks.

Times ``python -m pytest --model=MODEL -m tier4 -p no:cacheprovider -q`` (in a temporary folder
outside the repository, so no other tests are collected) against a bare script, written with
torch, onnx, onnxruntime and safetensors only, that does the same work as the suite's default
run:

- one ``torch.export`` trace with dynamic batch and sequence, saved as ``.pt2``; the ONNX file
  converted from that program; the state dict as safetensors; each loaded back (onnxruntime
  session, ``torch.export.load``, a fresh model with the weights);
- for each format, parity against eager PyTorch at the same number of shapes as the suite's
  sweep (7 fixed shapes plus the ``fast`` Hypothesis profile's 10 drawn ones);
- latency: 3 warm-up and 20 timed calls of eager and each artifact at two shapes;
- dynamic int8 quantization, traced, saved, loaded and compared at the 7 fixed shapes;
- the health checks' work: ``onnx.checker``, loading every artifact again, two comparisons
  and 20 timed calls per artifact, and a forward at batch sizes 1, 2 and 4.

Both run in fresh interpreters with torch's default thread count, interleaved (the order
rotates each round) after one untimed warm-up run of each; the report gives the medians and
their ratio. Target: at most 1.3. The bare script supports models whose ``forward`` takes
``input_ids`` and ``attention_mask`` (the default, ``example_models/tiny_gpt.py``).

Usage:

    .venv/bin/python benchmarks/bench_tier4.py [--runs 5] [--model PATH] [--write-bare PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

TARGET_RATIO = 1.3
REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "example_models" / "tiny_gpt.py"

BARE_SCRIPT = r"""
import contextlib, copy, importlib.util, io, math, sys, tempfile, time, warnings
from pathlib import Path

warnings.simplefilter("ignore")
import torch
import onnx
import onnxruntime as ort
from safetensors.torch import load_model, save_model

MODEL_FILE, VOCAB, MAX_LEN = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spec = importlib.util.spec_from_file_location("bench_model", MODEL_FILE)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
torch.manual_seed(0)
model = module.build_model().eval()
out = Path(tempfile.mkdtemp())


class Wrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask=attention_mask)


def batch(b, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (b, t), generator=g), torch.ones(b, t, dtype=torch.long)


wrapper = Wrapper(model).eval()
ids, mask = batch(2, min(8, MAX_LEN), 0)
dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("sequence", min=1, max=MAX_LEN)}
program = torch.export.export(wrapper, (ids, mask), dynamic_shapes=(dims, dims))
torch.export.save(program, out / "model.pt2")
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    torch.onnx.export(program, (ids, mask), str(out / "model.onnx"), dynamo=True,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      external_data=False, verbose=False)
save_model(model, str(out / "model.safetensors"))


def runners():
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    loaded = torch.export.load(str(out / "model.pt2")).module()
    fresh = module.build_model().eval()
    load_model(fresh, str(out / "model.safetensors"))
    def onnx_run(i, m):
        feeds = {"input_ids": i.numpy(), "attention_mask": m.numpy()}
        return torch.from_numpy(session.run(None, feeds)[0])

    return {
        "onnx": onnx_run,
        "torch_export": lambda i, m: loaded(i, m),
        "pytorch": lambda i, m: fresh(i, attention_mask=m),
    }


odd = min(MAX_LEN, (MAX_LEN // 2) | 1)
fixed = [(1, 1), (8, MAX_LEN), (1, MAX_LEN), (8, 1), (3, odd), (2, 8), (2, 9)]
rng = torch.Generator().manual_seed(1)


def draw(high):
    return int(torch.randint(1, high + 1, (1,), generator=rng))


drawn = [(draw(8), draw(MAX_LEN)) for _ in range(10)]
with torch.no_grad():
    for name, run in runners().items():
        for n, (b, t) in enumerate(fixed + drawn):
            i, m = batch(b, t, n)
            assert torch.allclose(run(i, m), wrapper(i, m), atol=1e-4, rtol=1e-3), (name, b, t)
    # latency
    calls = runners()
    for b, t in [(1, min(16, MAX_LEN)), (8, MAX_LEN)]:
        i, m = batch(b, t, 0)
        for _ in range(3):
            wrapper(i, m)
            for run in calls.values():
                run(i, m)
        for _ in range(20):
            t0 = time.perf_counter(); wrapper(i, m); time.perf_counter() - t0
            for run in calls.values():
                t0 = time.perf_counter(); run(i, m); time.perf_counter() - t0
    # int8
    from torch.ao.quantization import quantize_dynamic
    qmodel = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    traced = torch.jit.trace(Wrapper(qmodel), (ids, mask), check_trace=False)
    torch.jit.save(traced, str(out / "model.int8.pt"))
    qloaded = torch.jit.load(str(out / "model.int8.pt"))
    for n, (b, t) in enumerate(fixed):
        i, m = batch(b, t, n)
        (qloaded(i, m) - wrapper(i, m)).abs().max()
    # health checks
    onnx.checker.check_model(str(out / "model.onnx"))
    for b in (1, 2, 4):
        wrapper(*batch(b, 16, b))
    calls = runners()
    for run in calls.values():
        for b, t in [(2, 8), (1, MAX_LEN)]:
            i, m = batch(b, t, 3)
            (run(i, m) - wrapper(i, m)).abs().max()
    i, m = batch(2, 8, 0)
    for _ in range(23):
        wrapper(i, m)
        for run in calls.values():
            run(i, m)
print("bare tier 4 work done")
"""


def run(args: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def model_limits(model: Path) -> tuple[int, int]:
    """vocab_size and max_seq_len from the model file's TASK (the example models declare them)."""
    text = model.read_text()
    vocab = re.search(r'"vocab_size":\s*(\d+)', text)
    length = re.search(r'"max_seq_len":\s*(\d+)', text)
    if not vocab or not length:
        raise SystemExit(f"{model} declares no vocab_size and max_seq_len in TASK")
    return int(vocab[1]), int(length[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--write-bare", type=Path, help="also write the bare script here")
    options = parser.parse_args()
    model = options.model.resolve()
    vocab, length = model_limits(model)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        bare = folder / "bare_tier4.py"
        bare.write_text(BARE_SCRIPT)
        if options.write_bare:
            options.write_bare.write_text(BARE_SCRIPT)
        variants = {
            "pytest -m tier4": [
                sys.executable,
                "-m",
                "pytest",
                f"--model={model}",
                "-m",
                "tier4",
                "-p",
                "no:cacheprovider",
                "-q",
                "--export-dir",
                str(folder / "exports"),
            ],
            "bare script": [sys.executable, str(bare), str(model), str(vocab), str(length)],
        }
        print(f"model {model.name}; {options.runs} interleaved runs after one warm-up each")
        for name, args in variants.items():
            _, out = run(args, folder, env)
            if name.startswith("pytest"):
                print(f"{'suite outcome':>20}: {out.strip().splitlines()[-1]}")
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for index in range(options.runs):
            order = names[index % 2 :] + names[: index % 2]
            for name in order:
                seconds, _ = run(variants[name], folder, env)
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>20}: median {medians[name]:.2f} s  ({shown})")
    ratio = medians["pytest -m tier4"] / medians["bare script"]
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"{'ratio':>20}: {ratio:.2f} ({verdict} the {TARGET_RATIO} target; ratio of medians)")
    paired = statistics.median(
        a / b for a, b in zip(times["pytest -m tier4"], times["bare script"], strict=True)
    )
    best = min(times["pytest -m tier4"]) / min(times["bare script"])
    print(f"{'':>20}  median of per-round ratios {paired:.2f}, ratio of minimums {best:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
