"""Tier 1 resource checks: memory footprint and inference speed (DESIGN §5).

PYTEST_DONT_REWRITE

Both checks measure and report; they fail only over a budget the user sets, because what is "too
big" or "too slow" depends on the deployment, not on the model.

``check_memory_footprint`` reports:

- ``param_bytes`` / ``buffer_bytes``: exact, ``numel * element_size`` of each distinct
  parameter and buffer (tied weights counted once);
- ``peak_activation_bytes``: the most memory held at once by tensors *created during* one eval
  forward pass under ``no_grad`` on the given batch (parameters, buffers and the input batch
  are not included). Measured, never estimated:

  * on CUDA, with the caching allocator's own counters: ``torch.cuda.max_memory_allocated``
    after ``reset_peak_memory_stats``, minus what was allocated before the pass (after one
    warm-up pass, so one-off workspaces such as cuBLAS handles are not counted);
  * elsewhere (CPU), by watching every operator call with a ``TorchDispatchMode``: each output
    whose storage is new (not the storage of one of the operator's inputs, so views and
    in-place results are not counted twice) adds its ``nbytes`` to the live total, and a weak
    reference on the storage subtracts them when the storage is freed. The peak of that total
    is the peak activation memory. Scratch buffers that a single fused kernel allocates and
    frees internally are invisible to it, so it is a tight lower bound of what the allocator
    sees; unlike RSS deltas (the upstream tool's method, noisy and often <= 0) it is exact
    for every tensor the model materialises and does not depend on the allocator's caching.

  ``budget_mb`` (mebibytes, 2**20 bytes) bounds the total: parameters + buffers + peak
  activations.

``check_inference_speed`` runs ``warmup`` untimed forwards, then ``iterations`` timed ones
(``time.perf_counter`` around each, with ``torch.cuda.synchronize`` on CUDA), in eval mode under
``no_grad``; it reports median, p95 (linear interpolation), mean, min and max latency in ms and
throughput (samples per second at the median latency). ``budget_ms`` bounds the median, which,
unlike the mean or the max, one scheduling hiccup on a shared CI runner does not move.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pytest_modeltiers.checks.common import elapsed, model_device, preserved_model, to_device
from pytest_modeltiers.export.latency import percentile
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.report import CheckResult

__all__ = ["LiveTensorMemory", "check_inference_speed", "check_memory_footprint"]

Batch = dict[str, Any]

MEMORY = "test_memory_footprint"
SPEED = "test_inference_speed"
TIER = 1
MIB = 2**20


# --------------------------------------------------------------------------- measurement


class LiveTensorMemory(TorchDispatchMode):
    """Track the bytes of tensor storages created while the mode is active, and their peak.

    Use as a context manager around the code to measure; ``peak_bytes`` is the largest total of
    storages allocated inside the block and still alive at the same moment; ``allocated_bytes``
    is the sum of every allocation. Storages that existed before (parameters, inputs) are never
    counted, including when an operator returns a view of them.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Keep ``__torch_dispatch__`` unwrapped by ``torch._dynamo.disable``.

        The wrapper's first call imports torch._dynamo, sympy and torch.fx (about 1 s, more
        than the rest of tier 1 on a small model) only to keep ``torch.compile`` from tracing
        this method, which never runs inside a compiled region here: the check calls the model
        eagerly.
        """
        return False

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocated_bytes = 0
        self.allocations = 0
        self._refs: dict[int, weakref.ref[Any]] = {}

    def _release(self, key: int, nbytes: int) -> None:
        self._refs.pop(key, None)
        self.live_bytes -= nbytes

    def _track(self, storage: Any) -> None:
        key = id(storage)
        if key in self._refs:
            return
        nbytes = int(storage.nbytes())
        self._refs[key] = weakref.ref(storage, lambda _ref: self._release(key, nbytes))
        self.live_bytes += nbytes
        self.allocated_bytes += nbytes
        self.allocations += 1
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(s) for s in _storages(tree_flatten((args, kwargs or {}))[0])}
        for storage in _storages(tree_flatten(out)[0]):
            if id(storage) not in inputs:
                self._track(storage)
        return out


def _storages(values: list[Any]) -> list[Any]:
    """The untyped storages of the dense tensors among ``values`` (sparse ones have none)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.layout == torch.strided:
            try:
                found.append(value.untyped_storage())
            except (RuntimeError, NotImplementedError):
                continue
    return found


def _tensor_bytes(tensors: Any) -> int:
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


def _mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.3g} MiB"


def _failed_forward(check: str, exc: BaseException, batch: Batch, start: float) -> CheckResult:
    signature = batch_signature(batch)
    return CheckResult.failed(
        check,
        TIER,
        f"forward raised {type(exc).__name__}: {exc} (input: {signature}); nothing could be "
        "measured. Fix the exception first (re-run this input to reproduce it).",
        {"exception_type": type(exc).__name__, "exception": str(exc), "input": signature},
        duration_seconds=elapsed(start),
    )


def _batch_size(adapter: TaskAdapter, batch: Batch) -> int:
    primary = batch.get(adapter.primary_input)
    if isinstance(primary, torch.Tensor) and primary.dim() > 0:
        return int(primary.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


# --------------------------------------------------------------------------- memory


def check_memory_footprint(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    budget_mb: float | None = None,
) -> CheckResult:
    """Parameter, buffer and measured peak activation memory of one forward on ``batch``.

    Passes with the numbers unless ``budget_mb`` is set and the total (parameters + buffers +
    peak activations) exceeds it. See the module docstring for how the peak is measured.
    """
    start = time.perf_counter()
    if budget_mb is not None and not budget_mb > 0:
        raise ValueError(f"budget_mb={budget_mb!r}; it must be a positive number of MiB.")
    param_bytes = _tensor_bytes(model.parameters())
    buffer_bytes = _tensor_bytes(model.buffers())
    device = model_device(model)
    inputs = to_device(batch, device)
    signature = batch_signature(batch)
    on_cuda = device is not None and device.type == "cuda"

    with preserved_model(model, training=False), torch.no_grad():
        try:
            if on_cuda:
                peak, method = _cuda_peak(model, adapter, inputs, device)
            else:
                tracker = LiveTensorMemory()
                with tracker:
                    outputs = adapter.forward(model, inputs)
                del outputs
                peak, method = tracker.peak_bytes, "torch_dispatch_live_storages"
        except Exception as exc:
            return _failed_forward(MEMORY, exc, batch, start)

    input_bytes = _tensor_bytes(v for v in inputs.values() if isinstance(v, torch.Tensor))
    total = param_bytes + buffer_bytes + peak
    details: dict[str, Any] = {
        "param_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "peak_activation_bytes": peak,
        "total_bytes": total,
        "input_bytes": input_bytes,
        "method": method,
        "device": str(device) if device is not None else "cpu",
        "input": signature,
        "budget_mb": budget_mb,
    }
    summary = (
        f"parameters {_mib(param_bytes)}, buffers {_mib(buffer_bytes)}, peak activations "
        f"{_mib(peak)} for one eval forward on {signature} (total {_mib(total)}; measured "
        f"with {method})"
    )
    if budget_mb is not None and total > budget_mb * MIB:
        largest = "activations" if peak > param_bytes + buffer_bytes else "parameters"
        return CheckResult.failed(
            MEMORY,
            TIER,
            f"memory over budget: {summary} exceeds budget_mb={budget_mb:g} MiB by "
            f"{_mib(total - budget_mb * MIB)}. Most of it is {largest}: "
            + (
                "use a smaller batch or sequence, or a cheaper attention/activation path."
                if largest == "activations"
                else "shrink the model, share weights, or store it in a lower precision."
            ),
            details,
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(MEMORY, TIER, summary + ".", details, duration_seconds=elapsed(start))


def _cuda_peak(
    model: nn.Module, adapter: TaskAdapter, inputs: Batch, device: torch.device | None
) -> tuple[int, str]:
    """Peak bytes allocated by one forward on CUDA, after a warm-up forward."""
    adapter.forward(model, inputs)  # warm-up: one-off workspaces are not the model's
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    outputs = adapter.forward(model, inputs)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del outputs
    return max(0, int(peak)), "cuda_max_memory_allocated"


# --------------------------------------------------------------------------- speed


def check_inference_speed(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    warmup: int = 3,
    iterations: int = 20,
    budget_ms: float | None = None,
) -> CheckResult:
    """Median and p95 latency and throughput of eval forwards on ``batch`` after a warm-up.

    Passes with the numbers unless ``budget_ms`` is set and the median latency exceeds it.
    """
    start = time.perf_counter()
    if warmup < 0:
        raise ValueError(f"warmup={warmup}; it must be >= 0.")
    if iterations < 1:
        raise ValueError(f"iterations={iterations}; it must be >= 1.")
    if budget_ms is not None and not budget_ms > 0:
        raise ValueError(f"budget_ms={budget_ms!r}; it must be a positive number of ms.")
    device = model_device(model)
    inputs = to_device(batch, device)
    signature = batch_signature(batch)
    cuda = device if device is not None and device.type == "cuda" else None

    def sync() -> None:
        if cuda is not None:
            torch.cuda.synchronize(cuda)

    times_ms: list[float] = []
    with preserved_model(model, training=False), torch.no_grad():
        try:
            for _ in range(warmup):
                adapter.forward(model, inputs)
            sync()
            for _ in range(iterations):
                t0 = time.perf_counter()
                adapter.forward(model, inputs)
                sync()
                times_ms.append((time.perf_counter() - t0) * 1000.0)
        except Exception as exc:
            return _failed_forward(SPEED, exc, batch, start)

    ordered = sorted(times_ms)
    median = percentile(ordered, 0.5)
    p95 = percentile(ordered, 0.95)
    size = _batch_size(adapter, batch)
    throughput = size / (median / 1000.0) if median > 0 else math.inf
    details: dict[str, Any] = {
        "median_ms": median,
        "p95_ms": p95,
        "mean_ms": sum(times_ms) / len(times_ms),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "throughput_samples_per_s": throughput,
        "batch_size": size,
        "warmup": warmup,
        "iterations": iterations,
        "device": str(device) if device is not None else "cpu",
        "input": signature,
        "budget_ms": budget_ms,
    }
    summary = (
        f"median {median:.3g} ms, p95 {p95:.3g} ms, {throughput:.4g} samples/s over "
        f"{iterations} forwards of {signature} after {warmup} warm-up(s)"
    )
    if budget_ms is not None and median > budget_ms:
        return CheckResult.failed(
            SPEED,
            TIER,
            f"inference too slow: {summary}; the median exceeds budget_ms={budget_ms:g} ms by "
            f"{median - budget_ms:.3g} ms. Profile the forward (torch.profiler) or reduce "
            "the batch, sequence length or model size.",
            details,
            duration_seconds=elapsed(start),
        )
    return CheckResult.passed(SPEED, TIER, summary + ".", details, duration_seconds=elapsed(start))
