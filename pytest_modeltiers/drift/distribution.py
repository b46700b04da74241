"""Reference profiles: a dataset summarised as the model sees it, and drift against it.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pytest_modeltiers.drift import statistics as ds
from pytest_modeltiers.drift.profile import (
    INPUT,
    OUTPUT,
    PROFILE_FORMAT,
    CategoricalSignal,
    NumericSignal,
    Profile,
    ProfileError,
    Signal,
    check_group,
    profile_from_dict,
)
from pytest_modeltiers.drift.verdicts import (
    DEFAULT_ALPHA,
    DEFAULT_DRIFT_SHARE,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_THRESHOLDS,
    LARGE_SAMPLE_SIZE,
    Correction,
    DriftReport,
    compare_signals,
)
from pytest_modeltiers.store.sqlite_base import utc_now
from pytest_modeltiers.version import __version__

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "DEFAULT_MAX_EXACT_VALUES",
    "INPUT",
    "OUTPUT",
    "PROFILE_FORMAT",
    "CategoricalSignal",
    "NumericSignal",
    "Profile",
    "ProfileError",
    "categorical_signal",
    "compare_profiles",
    "compute_dataset_profile",
    "compute_profile",
    "numeric_signal",
    "profile_signals",
]

#: Distinct values a numeric signal keeps exactly before it is summarised by equal-mass atoms.
DEFAULT_MAX_EXACT_VALUES = 100_000
#: Categorical distance signals are pooled so that the null JS distance is at most this share
#: of the threshold, so identical distributions do not drift.
_NOISE_SHARE = 0.5
_DEFAULT_BATCH_SIZE = 64

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def numeric_signal(
    values: npt.ArrayLike,
    group: str = INPUT,
    *,
    max_exact_values: int | None = DEFAULT_MAX_EXACT_VALUES,
) -> NumericSignal:
    """Summarise a numeric sample exactly (or by equal-mass atoms above the cap)."""
    check_group(group)
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind not in "iufb":
        raise ProfileError(f"a numeric signal needs numbers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        finite_mask = np.isfinite(arr)
        nonfinite = int(arr.size - int(finite_mask.sum()))
        if nonfinite:
            arr = arr[finite_mask]
    else:
        nonfinite = 0
    # Sorting in the data's own dtype (float32 sorts twice as fast) and widening afterwards is
    # exact: every float32 and every int below 2**53 is a float64.
    ordered = np.sort(arr).astype(np.float64, copy=False)
    if ordered.size == 0:
        return NumericSignal(group, ordered, None, nonfinite)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if starts.size == ordered.size:
        distinct, counts = ordered, None
    else:
        distinct = ordered[starts]
        counts = np.diff(np.append(starts, ordered.size)).astype(np.int64)
    if max_exact_values is not None and distinct.size > max_exact_values:
        return _atoms(ordered, group, nonfinite, max_exact_values)
    return NumericSignal(group, distinct, counts, nonfinite)


def _atoms(ordered: FloatArray, group: str, nonfinite: int, k: int) -> NumericSignal:
    """``k`` equal-mass blocks of the sorted sample, each kept as its median and its size."""
    n = ordered.size
    bounds = np.round(np.linspace(0, n, k + 1)).astype(np.int64)
    sizes = np.diff(bounds)
    keep = sizes > 0
    middles = ordered[(bounds[:-1] + (sizes - 1) // 2)[keep]]
    values, inverse = np.unique(middles, return_inverse=True)
    counts = np.bincount(inverse, weights=sizes[keep]).astype(np.int64)
    return NumericSignal(group, values, counts, nonfinite, exact=False)


def categorical_signal(values: Any, group: str = INPUT) -> CategoricalSignal:
    """Count a categorical sample: raw labels (an array of ints or strings) or a count mapping."""
    check_group(group)
    if isinstance(values, Mapping):
        counts = {_label(k): int(v) for k, v in values.items() if int(v) > 0}
        if any(int(v) < 0 for v in values.values()):
            raise ProfileError("category counts must be non-negative")
        return CategoricalSignal(group, counts)
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind in "iub" and arr.size:
        low = int(arr.min())
        high = int(arr.max())
        if low >= 0 and high < 10 * arr.size + 1_000_000:  # dense ids: bincount, no sort
            tally = np.bincount(arr.astype(np.int64, copy=False))
            present = np.flatnonzero(tally)
            return CategoricalSignal(
                group, dict(zip(present.tolist(), tally[present].tolist(), strict=True))
            )
    raw = ds.count_labels(arr)
    return CategoricalSignal(group, {_label(k): int(v) for k, v in raw.items()})


def _label(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, (int, str, float)):
        raise ProfileError(
            f"category labels must be ints or strings (JSON keys), got {type(value).__name__}"
        )
    return value


def _task_identity(task: TaskSpec) -> dict[str, Any]:
    return {
        "name": task.name,
        "family": task.family,
        "vocab_size": task.vocab_size,
        "num_classes": task.num_classes,
        "image_size": list(task.image_size) if task.image_size else None,
    }


def _versions() -> dict[str, str]:
    return {"pytest_modeltiers": __version__, "numpy": np.__version__}


def _utc_now() -> str:
    return utc_now()


def profile_signals(
    signals: Mapping[str, Any],
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    task: Mapping[str, Any] | None = None,
    n_examples: int | None = None,
    source: str = "arrays",
    max_exact_values: int | None = DEFAULT_MAX_EXACT_VALUES,
) -> Profile:
    """A profile of raw signals: ``{name: array}`` (numeric or labels) or ``{name: {label: n}}``.

    ``kinds`` says ``"numeric"`` or ``"categorical"`` per name; without it a mapping, strings,
    booleans or integers are categorical and floats numeric. ``groups`` defaults to ``"input"``.
    """
    kinds = kinds or {}
    groups = groups or {}
    built: dict[str, Signal] = {}
    for name, values in signals.items():
        group = groups.get(name, INPUT)
        kind = kinds.get(name) or _guess_kind(values)
        if kind == "numeric":
            built[name] = numeric_signal(values, group, max_exact_values=max_exact_values)
        elif kind == "categorical":
            built[name] = categorical_signal(values, group)
        else:
            raise ProfileError(f"signal {name!r}: kind must be 'numeric' or 'categorical'")
    sizes = [sig.n for sig in built.values()]
    return Profile(
        signals=built,
        task=dict(task or {}),
        n_examples=n_examples if n_examples is not None else (max(sizes) if sizes else 0),
        source=source,
        created_at=_utc_now(),
        versions=_versions(),
    )


def _guess_kind(values: Any) -> str:
    if isinstance(values, Mapping):
        return "categorical"
    arr = np.asarray(values)
    return "numeric" if arr.dtype.kind == "f" else "categorical"


# --------------------------------------------------------------------------- from data


class _Collector:
    """Per-signal chunks gathered batch by batch, concatenated once at the end."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[npt.NDArray[Any]]] = {}
        self.kinds: dict[str, str] = {}
        self.groups: dict[str, str] = {}

    def add(self, name: str, kind: str, group: str, values: torch.Tensor) -> None:
        self.kinds[name] = kind
        self.groups[name] = group
        self.chunks.setdefault(name, []).append(values.detach().cpu().numpy().reshape(-1))

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {name: np.concatenate(parts) for name, parts in self.chunks.items()}


def _input_signals(batch: Mapping[str, Any], task: TaskSpec, out: _Collector) -> int:
    """Add the batch's input signals; return its number of examples."""
    import torch

    family = task.family
    if family == "vision":
        pixels = batch.get("pixel_values")
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
            raise ProfileError(
                "a vision profile needs 'pixel_values' shaped [B,C,H,W] (or [B,H,W,C] for a "
                f"channels-last task) in every batch; got keys {sorted(batch)}"
            )
        images = pixels.float() if task.channels_first else pixels.float().permute(0, 3, 1, 2)
        flat = images.reshape(images.shape[0], images.shape[1], -1)
        for c in range(flat.shape[1]):
            out.add(f"pixel_mean_c{c}", "numeric", INPUT, flat[:, c].mean(dim=1))
            out.add(f"pixel_std_c{c}", "numeric", INPUT, flat[:, c].std(dim=1, unbiased=False))
        return int(flat.shape[0])
    ids = batch.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ProfileError(
            f"a {family} profile needs 'input_ids' shaped [B,T] in every batch; got keys "
            f"{sorted(batch)}"
        )
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        real = mask.to(ids.device) != 0
    elif task.pad_token_id is not None:
        real = ids != task.pad_token_id
    else:
        real = torch.ones_like(ids, dtype=torch.bool)
    out.add("input_tokens", "categorical", INPUT, ids[real])
    out.add("input_length", "numeric", INPUT, real.sum(dim=1))
    return int(ids.shape[0])


def _output_signals(
    model: nn.Module,
    adapter: TaskAdapter,
    task: TaskSpec,
    batch: dict[str, Any],
    out: _Collector,
) -> None:
    import torch

    outputs = adapter.forward(model, batch)
    logits = adapter.get_logits(outputs, task, batch=batch).float()
    family = task.family
    if family in ("lm", "seq2seq"):
        key = "attention_mask" if family == "lm" else "decoder_attention_mask"
        mask = batch.get(key)
        if logits.dim() != 3:
            raise ProfileError(
                f"a {family} model's logits must be [B,T,V] for its output profile, got "
                f"{list(logits.shape)}"
            )
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(logits.shape[:2]):
            logits = logits[mask.to(logits.device) != 0]
        else:
            logits = logits.reshape(-1, logits.shape[-1])
    elif logits.dim() != 2:
        raise ProfileError(
            f"a {family} model's logits must be [B,C] for its output profile, got "
            f"{list(logits.shape)}"
        )
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    max_prob, pred = probs.max(dim=-1)
    entropy = -(probs * log_probs).nan_to_num(0.0).sum(dim=-1)
    out.add("predicted_class", "categorical", OUTPUT, pred)
    out.add("max_probability", "numeric", OUTPUT, max_prob)
    out.add("entropy", "numeric", OUTPUT, entropy)


def _iter_batches(data: Any, batch_size: int) -> Iterable[dict[str, Any]]:
    from torch.utils.data import DataLoader, Dataset

    from pytest_modeltiers.datasets import make_dataloader  # torch: only for a dataset

    if isinstance(data, Mapping):
        yield dict(data)
        return
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = make_dataloader(data, batch_size)
    for number, batch in enumerate(data, start=1):
        if not isinstance(batch, Mapping):
            raise ProfileError(
                f"batch {number} is a {type(batch).__name__}; profiles need batches that are "
                "dicts of tensors in the raw batch layout"
            )
        yield dict(batch)


def compute_profile(
    model: nn.Module | None,
    adapter: TaskAdapter | None,
    task_spec: TaskSpec,
    data: Any,
    *,
    batch_size: int = _DEFAULT_BATCH_SIZE,
    source: str = "",
    max_exact_values: int | None = DEFAULT_MAX_EXACT_VALUES,
) -> Profile:
    """Profile ``data`` for ``task_spec``: input signals, plus output signals when a model is
    given.

    ``data`` is a ``Dataset`` (batched here, in order), a ``DataLoader`` or any iterable of raw
    batches, or one batch (a dict of tensors). The model runs in eval mode without gradients;
    its mode, buffers and the RNG state are restored afterwards.
    """
    import torch

    # torch: only for a model's outputs; comparing profiles needs numpy and scipy alone
    from pytest_modeltiers.models.running import model_device, preserved_model, to_device

    if model is not None and adapter is None:
        raise ProfileError("compute_profile needs the adapter that calls the model (adapter=)")
    collector = _Collector()
    n_examples = 0
    device = model_device(model) if model is not None else None
    with (
        preserved_model(model, training=False) if model is not None else _nothing(),
        torch.no_grad(),
    ):
        for raw in _iter_batches(data, batch_size):
            n_examples += _input_signals(raw, task_spec, collector)
            if model is not None and adapter is not None:
                _output_signals(model, adapter, task_spec, to_device(raw, device), collector)
    if n_examples == 0:
        raise ProfileError("the data to profile is empty: no batch, no example")
    arrays = collector.arrays()
    signals: dict[str, Signal] = {}
    for name, values in arrays.items():
        group = collector.groups[name]
        if collector.kinds[name] == "numeric":
            signals[name] = numeric_signal(values, group, max_exact_values=max_exact_values)
        else:
            signals[name] = categorical_signal(values, group)
    identity = None
    if model is not None:
        identity = {
            "class": type(model).__name__,
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
    return Profile(
        signals=signals,
        task=_task_identity(task_spec),
        n_examples=n_examples,
        source=source or type(data).__name__,
        model=identity,
        created_at=_utc_now(),
        versions=_versions(),
    )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------- comparison


def _as_profile(value: Profile | Mapping[str, Any], role: str) -> Profile:
    if isinstance(value, Profile):
        return value
    if isinstance(value, Mapping):
        return profile_from_dict(value, where=f"the {role} profile")
    raise ProfileError(
        f"the {role} profile must be a Profile or its dict form, got {type(value).__name__}"
    )


def _check_compatible(reference: Profile, current: Profile) -> None:
    ref_task, cur_task = reference.task, current.task
    for key in ("family", "num_classes", "image_size"):
        a, b = ref_task.get(key), cur_task.get(key)
        if a is not None and b is not None and a != b:
            raise ProfileError(
                f"the profiles describe different data: reference {key} {a!r}, current {b!r} "
                f"(reference task {ref_task.get('name')!r}, current {cur_task.get('name')!r}). "
                "Compare profiles of the same task, or build a new reference profile."
            )


def _pooled_categories(n_ref: int, n_cur: int, threshold: float) -> int:
    """Categories to keep so the null JS distance stays under ``_NOISE_SHARE * threshold``."""
    floor = (_NOISE_SHARE * threshold) ** 2 * 8.0 * math.log(2.0)
    return max(2, int(floor / (1.0 / n_ref + 1.0 / n_cur)) + 1)


def _comparable(sig: Signal) -> tuple[Any, str | None]:
    """The sample (or counts) handed to ``compare_signals`` and its kind."""
    if isinstance(sig, CategoricalSignal):
        return dict(sig.counts), None  # binary vs categorical inferred from the levels
    return sig.sample(), "numeric"


def compute_dataset_profile(
    dataset: Any, task_spec: TaskSpec, sample_size: int | None = 1000, *, seed: int = 0
) -> Profile:
    """The input profile of ``dataset`` (the usage guide's call): :func:`compute_profile`
    without a model, on at most ``sample_size`` examples.

    A dataset of examples (``len`` and ``[i]``) is sampled at random without replacement
    (``seed`` fixes the draw, so the reference and each later profile are reproducible), not cut
    to its first examples, which would profile whatever order the data happens to be stored in.
    A ``DataLoader``, any other iterable of batches, or one batch is profiled whole.
    ``sample_size=None`` profiles every example.
    """
    if sample_size is not None and (
        isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1
    ):
        raise ProfileError(f"sample_size must be a positive integer or None, got {sample_size!r}")
    data = dataset
    if (
        not isinstance(dataset, Mapping)
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    ):
        from torch.utils.data import Subset  # torch: only to sample a dataset

        count = len(dataset)
        if sample_size is None or count <= sample_size:
            indices = list(range(count))
        else:
            picked = np.random.default_rng(seed).choice(count, sample_size, replace=False)
            indices = sorted(int(i) for i in picked)
        data = Subset(dataset, indices)
    return compute_profile(None, None, task_spec, data, source="compute_dataset_profile")


def compare_profiles(
    reference: Profile | Mapping[str, Any],
    current: Profile | Mapping[str, Any],
    *,
    group: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    min_samples: int = DEFAULT_MIN_SAMPLES,
    drift_share: float = DEFAULT_DRIFT_SHARE,
    thresholds: Mapping[str, float] | None = None,
    large_sample_size: int = LARGE_SAMPLE_SIZE,
) -> DriftReport:
    """Compare every signal the two profiles share (one group with ``group=``).

    Signals present on one side only are skipped with the reason. Numeric signals whose
    reference has at most 5 distinct values are compared as categories (Evidently's rule).
    Categorical distance signals are pooled to their most frequent categories, so identical
    distributions do not drift. Profiles of different task families, class counts or image
    sizes are refused (``ProfileError``).
    """
    ref = _as_profile(reference, "reference")
    cur = _as_profile(current, "current")
    _check_compatible(ref, cur)
    ref_signals = ref.signals if group is None else ref.group(group)
    cur_signals = cur.signals if group is None else cur.group(group)
    ref_data: dict[str, Any] = {}
    cur_data: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    caps: dict[str, int | None] = {}
    js_threshold = dict(thresholds or {}).get(
        "jensen_shannon", DEFAULT_THRESHOLDS["jensen_shannon"]
    )
    approximate: list[str] = []
    for name in dict.fromkeys([*ref_signals, *cur_signals]):
        r, c = ref_signals.get(name), cur_signals.get(name)
        if r is not None and c is not None and r.kind != c.kind:
            raise ProfileError(
                f"signal {name!r} is {r.kind} in the reference profile but {c.kind} in the "
                "current one; rebuild the reference with this version"
            )
        few_levels = isinstance(r, NumericSignal) and 0 < r.values.size <= 5
        for sig, into in ((r, ref_data), (c, cur_data)):
            if sig is None:
                continue
            if not sig.exact:
                approximate.append(name)
            if few_levels and isinstance(sig, NumericSignal):
                counts = np.ones(sig.values.size, np.int64) if sig.counts is None else sig.counts
                into[name] = dict(zip(sig.values.tolist(), counts.tolist(), strict=True))
            else:
                into[name], kind = _comparable(sig)
                if kind is not None:
                    kinds[name] = kind
        pooled = few_levels or isinstance(r, CategoricalSignal)
        if r is not None and c is not None and pooled and r.n > large_sample_size and c.n > 0:
            caps[name] = _pooled_categories(r.n, c.n, js_threshold)
    report = compare_signals(
        ref_data,
        cur_data,
        kinds=kinds,
        thresholds=thresholds,
        alpha=alpha,
        correction=correction,
        min_samples=min_samples,
        drift_share=drift_share,
        large_sample_size=large_sample_size,
        max_categories=caps,
    )
    if approximate:
        for verdict in (*report.signals, *report.skipped):
            if verdict.name in approximate:
                verdict.details["approximate_profile"] = True
    return report
