"""Tier 1 resource checks: memory footprint, memory retention and inference speed.

PYTEST_DONT_REWRITE

The footprint and speed checks measure and report, and fail only over a budget the user
sets; memory that grows with every call fails whatever the budget.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.models.exceptions import describe_model_exception, exception_details
from pytest_modeltiers.models.running import model_device, preserved_model, to_device
from pytest_modeltiers.models.timing import elapsed, percentile
from pytest_modeltiers.report import CheckResult

__all__ = [
    "LiveTensorMemory",
    "check_inference_speed",
    "check_memory_footprint",
    "check_memory_retention",
]

Batch = dict[str, Any]

MEMORY = "test_memory_footprint"
RETENTION = "test_memory_retention"
#: Objects outside the frozen heap above which the retention check freezes them for its duration.
_LARGE_HEAP = 100_000
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


def _size(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit that keeps it at 1 or more: "3.5 KiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", MIB), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.3g} bytes"


def _failed_forward(
    check: str, exc: BaseException, batch: Batch, start: float, *, what: str = "forward"
) -> CheckResult:
    signature = batch_signature(batch)
    return CheckResult.failed(
        check,
        TIER,
        f"{what} raised {describe_model_exception(exc)} (input: {signature}); nothing could "
        "be measured. Fix the exception first (re-run this input to reproduce it).",
        {"exception_type": type(exc).__name__, **exception_details(exc), "input": signature},
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
    peak activations) exceeds it.
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


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class _Retained:
    """What is alive between calls: tensors, the bytes of their storages, CUDA's allocator."""

    tensors: int
    bytes: int
    cuda_bytes: int | None

    def minus(self, other: _Retained) -> dict[str, int]:
        growth = {"tensors": self.tensors - other.tensors, "bytes": self.bytes - other.bytes}
        if self.cuda_bytes is not None and other.cuda_bytes is not None:
            growth["cuda_allocated_bytes"] = self.cuda_bytes - other.cuda_bytes
        return growth


def _live_tensors() -> list[torch.Tensor]:
    """Every tensor with a Python object that the collector tracks outside the frozen heap.

    ``issubclass(type(obj), ...)`` rather than ``isinstance``: it never reads ``__class__``,
    which a proxy object may compute (and raise from).
    """
    return [obj for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor)]


def _storage_key(tensor: torch.Tensor) -> tuple[str, int, int] | None:
    """Identity and size of the storage behind ``tensor``; None when it has none to count."""
    try:
        storage = tensor.untyped_storage()
        return (str(storage.device), int(storage.data_ptr()), int(storage.nbytes()))
    except (RuntimeError, NotImplementedError, TypeError):
        return None  # sparse, meta or a subclass without storage


@contextlib.contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Keep a large heap that exists before the check out of its snapshots' scans.

    The plugin's session freezes the heap it loaded (``gc.freeze``), so a snapshot scans only
    what the tests made since: a few thousand objects, 0.1 ms. Called elsewhere (a script, a
    test run without the plugin's session) the heap may hold millions of objects (torch,
    Lightning, transformers: about 0.6 s per collection and scan); freezing it for the check's
    duration brings that down to the same 0.1 ms. ``gc.unfreeze`` also thaws what someone else
    froze, so a heap that is already small outside the frozen part is left alone: that test
    costs one listing of it (``gc.get_freeze_count`` would walk the frozen part instead, 60 ms
    on the plugin's frozen heap).
    """
    if len(gc.get_objects()) < _LARGE_HEAP:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _snapshot(
    cuda: torch.device | None,
) -> tuple[_Retained, dict[int, weakref.ref[torch.Tensor]]]:
    """The retained memory now, after a collection, and weak references to the live tensors.

    Keyed by ``id``; the weak reference tells a tensor alive since from a new one that reuses
    the address of a freed one (``self.history = torch.cat(...)`` often does).
    """
    gc.collect()
    tensors = _live_tensors()
    storages = {key for t in tensors if (key := _storage_key(t)) is not None and key[1]}
    cuda_bytes = None
    if cuda is not None:
        torch.cuda.synchronize(cuda)
        cuda_bytes = int(torch.cuda.memory_allocated(cuda))
    retained = _Retained(len(tensors), sum(key[2] for key in storages), cuda_bytes)
    return retained, {id(t): weakref.ref(t) for t in tensors}


def _holder(tensors: list[torch.Tensor], model: nn.Module) -> str | None:
    """The container that holds the most of ``tensors``, in words; None when none does.

    Candidates are the lists, tuples, sets, deques and dicts kept as attributes of the model
    and its submodules, or as globals of the modules that define their classes, and, ranked
    below any container, a new tensor kept there directly (one that grows, such as
    ``self.history = torch.cat([self.history, h])``). Searched from the containers down rather
    than with ``gc.get_referrers``, which does not see the frozen heap where module globals
    live. Only runs on the failure path.
    """
    wanted = {id(t) for t in tensors}

    def held(value: Any) -> float:
        if isinstance(value, dict):
            return sum(id(v) in wanted for v in value.values())
        if isinstance(value, (list, tuple, set, frozenset, deque)):
            return sum(id(v) in wanted for v in value)
        return 0.5 if id(value) in wanted else 0

    found: list[tuple[float, str]] = []
    for name, module in model.named_modules():
        for key, value in list(vars(module).items()):
            if count := held(value):
                owner = f"model.{name}" if name else "the model"
                found.append((count, f"the {type(value).__name__} attribute {key!r} of {owner}"))
    for source in dict.fromkeys(type(m).__module__ for m in model.modules()):
        globals_ = getattr(sys.modules.get(source), "__dict__", None)
        if not isinstance(globals_, dict):
            continue
        where = globals_.get("__file__") or source
        for key, value in list(globals_.items()):
            if count := held(value):
                found.append(
                    (count, f"the {type(value).__name__} {key!r} at module level in {where}")
                )
    return max(found, key=lambda item: item[0])[1] if found else None


def check_memory_retention(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    *,
    warmup: int = 2,
    calls: int = 2,
) -> CheckResult:
    """Memory kept alive after repeated train steps and eval forwards stays flat.

    One call is a train-mode forward, the adapter's loss and a backward (``autograd.grad``,
    so ``.grad`` is untouched), then an eval forward under ``no_grad``. After ``warmup`` calls
    the live tensors, their bytes and (on CUDA) the allocator's bytes are measured, then again
    after each half of ``calls`` more; growth in both halves fails, with the growth per call.
    The model's modes, buffers, gradients and the RNG state are as before.
    """
    start = time.perf_counter()
    if warmup < 1:
        raise ValueError(f"warmup={warmup}; it must be >= 1 (one-off allocations happen first).")
    if calls < 2:
        raise ValueError(f"calls={calls}; it must be >= 2 (growth is judged over two halves).")
    device = model_device(model)
    inputs = to_device(batch, device)
    signature = batch_signature(batch)
    cuda = device if device is not None and device.type == "cuda" else None
    params = [p for p in model.parameters() if p.requires_grad]

    def one_call() -> None:
        model.train(True)
        with torch.enable_grad():
            loss = adapter.loss(adapter.forward(model, inputs), inputs)
            if params and loss.requires_grad:
                torch.autograd.grad(loss.sum(), params, allow_unused=True)
        model.train(False)
        with torch.no_grad():
            adapter.forward(model, inputs)

    half = calls // 2
    try:
        # One block for every call: its saved buffers and RNG state are alive, unchanged, at
        # every snapshot, and the model's modes and buffers are restored once at the end.
        with _older_objects_frozen(), preserved_model(model):
            for _ in range(warmup):
                one_call()
            first, before = _snapshot(cuda)
            for _ in range(half):
                one_call()
            middle, _ = _snapshot(cuda)
            for _ in range(calls - half):
                one_call()
            last, _ = _snapshot(cuda)
            # Listed here, while the older heap is frozen out of the scan's sight.
            new = [
                t for t in _live_tensors() if (ref := before.get(id(t))) is None or ref() is not t
            ]
    except Exception as exc:
        return _failed_forward(RETENTION, exc, batch, start, what="a train step or eval forward")
    halves = (middle.minus(first), last.minus(middle))
    total = last.minus(first)
    per_call = {key: value / calls for key, value in total.items()}
    growing = [key for key in total if halves[0][key] > 0 and halves[1][key] > 0]
    details: dict[str, Any] = {
        "input": signature,
        "warmup": warmup,
        "calls": calls,
        "retained_after_warmup": {"tensors": first.tensors, "bytes": first.bytes},
        "growth_by_half": list(halves),
        "growth_per_call": {
            key: int(value) if value == int(value) else value for key, value in per_call.items()
        },
        "growing": growing,
        "device": str(device) if device is not None else "cpu",
    }
    if not growing:
        return CheckResult.passed(
            RETENTION,
            TIER,
            f"memory kept between calls is flat: {calls} train steps and eval forwards on "
            f"{signature} after {warmup} warm-up(s) leave {total['tensors']:+d} live tensors "
            f"({total['bytes']:+d} bytes).",
            details,
            duration_seconds=elapsed(start),
        )
    where = _holder(new, model)
    if where is not None:
        details["held_by"] = where
    growth = [
        f"{per_call['tensors']:.3g} tensors",
        f"{_size(per_call['bytes'])} of tensor storage",
    ]
    if "cuda_allocated_bytes" in per_call:
        growth.append(f"{_size(per_call['cuda_allocated_bytes'])} of CUDA allocator memory")
    held = f" The new tensors are kept in {where}." if where else ""
    return CheckResult.failed(
        RETENTION,
        TIER,
        f"memory grows with every call: {calls} train steps (forward, loss, backward) and eval "
        f"forwards on {signature}, after {warmup} warm-up(s), keep {', '.join(growth)} alive "
        f"per call, and it grew in both halves of the run, so it never levels off.{held} "
        "Something keeps each call's tensors: a list or dict that outputs, activations or "
        "losses are appended to (with their autograd graph), a cache keyed by something that "
        "changes every call, or a hook that stores tensors. Keep only what is needed, "
        "detached (.detach()), in a bounded container; a bounded cache still filling after "
        "the warm-up needs a larger warmup=.",
        details,
        duration_seconds=elapsed(start),
    )


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
