"""Held-out evaluation: the task's metrics, with the per-example values a paired test needs.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from pytest_modeltiers.datasets import SPLITS, load_dataset_file, make_dataloader, task_dataset
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.jsonio import json_float
from pytest_modeltiers.models.adapters import IGNORE_INDEX, TaskAdapter
from pytest_modeltiers.models.running import model_device, preserved_model, to_device

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TOP_K",
    "LOWER_IS_BETTER",
    "EvalResult",
    "EvaluationError",
    "compute_metrics",
    "eval_dataloader",
    "higher_is_better",
    "primary_metric",
    "resolve_eval_dataset",
    "run_evaluation",
]

Batch = dict[str, Any]
FloatArray = npt.NDArray[np.float64]

#: Batch size when neither a DataLoader nor an EvalConfig says otherwise.
DEFAULT_BATCH_SIZE = 32
#: The top-k accuracies reported for vision (each only when k < number of classes).
DEFAULT_TOP_K: tuple[int, ...] = (3, 5)
#: Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
#: The metric a regression gate decides on, per family: accuracy where defined, else loss.
PRIMARY_METRICS = {
    "lm": "loss",
    "seq2seq": "loss",
    "classification": "accuracy",
    "vision": "accuracy",
}
_TOKEN_FAMILIES = ("lm", "seq2seq")
_EXAMPLE_FAMILIES = ("classification", "vision")


class EvaluationError(ModelTiersError, ValueError):
    """The evaluation cannot run on this model or data; the message names the problem and fix."""


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: False for loss and perplexity, True for accuracies and F1."""
    return metric not in LOWER_IS_BETTER


def primary_metric(family: str) -> str:
    """The metric a regression gate decides on for a task family."""
    try:
        return PRIMARY_METRICS[family]
    except KeyError:
        raise EvaluationError(
            f"no evaluation metrics for task family {family!r}; families: "
            f"{', '.join(PRIMARY_METRICS)}"
        ) from None


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, and the per-example values they were computed from.

    ``per_example`` maps a field to one value per example, in data order:

    - text generation (lm, seq2seq): ``nll`` (summed cross-entropy of the example's scored
      tokens), ``tokens`` (how many were scored), ``correct`` (how many were predicted right);
    - classification and vision: ``nll``, ``correct`` (0/1), ``label``, ``pred`` and, for
      vision, ``top{k}_correct`` (0/1).

    ``n_tokens`` is the number of scored tokens (None for example-level tasks).
    """

    task: str
    family: str
    metrics: dict[str, float]
    n_examples: int
    n_tokens: int | None
    num_classes: int | None
    top_k: tuple[int, ...]
    per_example: dict[str, npt.NDArray[Any]] = field(repr=False)
    data: str = ""
    duration_seconds: float = 0.0

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.family)

    def to_dict(self) -> dict[str, Any]:
        """Metrics and counts as plain JSON values (the per-example arrays are left out)."""
        return {
            "task": self.task,
            "family": self.family,
            "metrics": {k: json_float(v) for k, v in self.metrics.items()},
            "primary_metric": self.primary_metric,
            "n_examples": self.n_examples,
            "n_tokens": self.n_tokens,
            "data": self.data,
            "duration_seconds": round(self.duration_seconds, 6),
        }


# --------------------------------------------------------------------------- metrics


def _sums(column: npt.NDArray[Any], weights: FloatArray | None) -> FloatArray:
    """``sum_i w_i * column_i`` for each row of ``weights`` (one row of ones when None)."""
    col = np.asarray(column, dtype=np.float64)
    if weights is None:
        return np.atleast_1d(col.sum(axis=0))
    return np.asarray(weights @ col, dtype=np.float64)


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _macro_f1(
    label: npt.NDArray[Any], pred: npt.NDArray[Any], classes: int, weights: FloatArray | None
) -> FloatArray:
    eye = np.eye(classes, dtype=np.float64)
    is_label = eye[label]  # (n, C)
    is_pred = eye[pred]
    tp = _sums(is_label * is_pred, weights)
    fp = _sums(is_pred * (1.0 - is_label), weights)
    fn = _sums(is_label * (1.0 - is_pred), weights)
    tp, fp, fn = (np.atleast_2d(a) for a in (tp, fp, fn))
    denominator = 2.0 * tp + fp + fn
    present = denominator > 0
    f1 = np.where(present, 2.0 * tp / np.where(present, denominator, 1.0), 0.0)
    count = present.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, f1.sum(axis=1) / np.maximum(count, 1), np.nan)


def compute_metrics(
    family: str,
    per_example: Mapping[str, npt.NDArray[Any]],
    weights: npt.ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    top_k: Sequence[int] = (),
) -> dict[str, FloatArray]:
    """The family's metrics from per-example values, one value per row of ``weights``.

    ``weights`` is ``(R, n)``: row ``r`` says how often each example counts in replicate ``r``
    (a bootstrap resample's counts). ``None`` means every example once (``R = 1``). Returns
    ``{metric: array of R values}``; a replicate with nothing to score gives NaN.
    """
    w = None if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if family in _TOKEN_FAMILIES:
        tokens = _sums(per_example["tokens"], w)
        loss = _ratio(_sums(per_example["nll"], w), tokens)
        with np.errstate(over="ignore"):
            perplexity = np.exp(loss)
        return {
            "loss": loss,
            "perplexity": perplexity,
            "accuracy": _ratio(_sums(per_example["correct"], w), tokens),
        }
    if family not in _EXAMPLE_FAMILIES:
        raise EvaluationError(
            f"no evaluation metrics for task family {family!r}; families: "
            f"{', '.join(PRIMARY_METRICS)}"
        )
    n = len(per_example["nll"])
    count = _sums(np.ones(n), w)
    label = np.asarray(per_example["label"], dtype=np.int64)
    pred = np.asarray(per_example["pred"], dtype=np.int64)
    classes = int(num_classes or 0)
    if n:
        classes = max(classes, int(label.max()) + 1, int(pred.max()) + 1)
    metrics = {
        "loss": _ratio(_sums(per_example["nll"], w), count),
        "accuracy": _ratio(_sums(per_example["correct"], w), count),
        "macro_f1": _macro_f1(label, pred, max(classes, 1), w),
    }
    for k in top_k:
        metrics[f"top{k}_accuracy"] = _ratio(_sums(per_example[f"top{k}_correct"], w), count)
    return metrics


# --------------------------------------------------------------------------- data


def resolve_eval_dataset(
    task: TaskSpec,
    eval_cfg: EvalConfig | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> tuple[Dataset[Any], str]:
    """The evaluation data and a one-line description of where it came from.

    In order: ``path`` (a ``.pt`` or ``.jsonl`` file, ``--eval-data``); an ``EvalConfig``
    whose ``dataset_id`` is such a file; the task's shipped data, split ``split`` (else the
    EvalConfig's split when one is given, else ``"test"``, the held-out split).
    """
    if path is not None:
        return load_dataset_file(path, task), f"file {os.fspath(path)}"
    if eval_cfg is not None and _is_data_file(eval_cfg.dataset_id):
        return load_dataset_file(eval_cfg.dataset_id, task), f"file {eval_cfg.dataset_id}"
    chosen = split or (eval_cfg.split if eval_cfg is not None else "test")
    if chosen not in SPLITS:
        raise EvaluationError(
            f"evaluation split {chosen!r} is not one of the task's shipped splits "
            f"({', '.join(SPLITS)}); set EvalConfig.split to one of them, or point "
            "EvalConfig.dataset_id / --eval-data at a .pt or .jsonl file"
        )
    return task_dataset(task, chosen), f"task {task.name} {chosen} split"


def _is_data_file(dataset_id: str) -> bool:
    return Path(dataset_id).suffix.lower() in (".pt", ".jsonl")


def eval_dataloader(dataset: Dataset[Any], eval_cfg: EvalConfig | None = None) -> DataLoader[Any]:
    """A deterministic, unshuffled loader: the first ``max_eval_examples`` examples."""
    from torch.utils.data import Subset

    batch_size = eval_cfg.batch_size if eval_cfg is not None else DEFAULT_BATCH_SIZE
    data: Dataset[Any] = dataset
    if eval_cfg is not None:
        size = len(dataset)  # type: ignore[arg-type]
        if eval_cfg.max_eval_examples < size:
            data = Subset(dataset, range(eval_cfg.max_eval_examples))
    return make_dataloader(data, batch_size)


# --------------------------------------------------------------------------- per batch


def _truncate(batch: Batch, family: str, max_len: int | None) -> Batch:
    if max_len is None or "input_ids" not in batch:
        return batch
    ids = batch["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() < 2 or ids.shape[1] <= max_len:
        return batch
    out = dict(batch)
    out["input_ids"] = ids[:, :max_len]
    if isinstance(out.get("attention_mask"), torch.Tensor):
        out["attention_mask"] = out["attention_mask"][:, :max_len]
    if family == "lm" and isinstance(out.get("labels"), torch.Tensor):
        out["labels"] = out["labels"][:, :max_len]
    return out


def _labels(batch: Batch, family: str) -> torch.Tensor:
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor):
        raise EvaluationError(
            f"evaluating a {family} model needs 'labels' in every batch; this batch has "
            f"{sorted(batch)}. Evaluation data must carry the targets (the shipped task data "
            "does; a .jsonl file needs a 'labels' field)."
        )
    return labels.long()


def _check_targets(targets: torch.Tensor, scored: torch.Tensor, classes: int, what: str) -> None:
    if not bool(scored.any()):
        return
    real = targets[scored]
    low, high = int(real.min()), int(real.max())
    if low < 0 or high >= classes:
        raise EvaluationError(
            f"a {what} in [{low}, {high}] lies outside the model's {classes} output logits; the "
            "data and the model disagree on the vocabulary / number of classes. Re-encode the "
            "data or set the task's vocab_size / num_classes to the model's."
        )


def _token_batch(
    logits: torch.Tensor, batch: Batch, task: TaskSpec, family: str
) -> dict[str, npt.NDArray[Any]]:
    """Per-example sums of a text-generation batch, scored exactly like the adapters' losses."""
    if logits.dim() != 3:
        raise EvaluationError(
            f"the {family} evaluation expects logits shaped [B,T,V], got {list(logits.shape)}"
        )
    labels = _labels(batch, family).to(logits.device)
    if tuple(logits.shape[:2]) != tuple(labels.shape):
        raise EvaluationError(
            f"{family} logits {list(logits.shape)} do not cover labels {list(labels.shape)}: "
            "the model must return one row of logits per position"
        )
    mask_key = "attention_mask" if family == "lm" else "decoder_attention_mask"
    mask = batch.get(mask_key)
    targets = labels
    if isinstance(mask, torch.Tensor):
        targets = targets.masked_fill(mask.to(targets.device) == 0, IGNORE_INDEX)
    elif task.pad_token_id is not None:
        targets = targets.masked_fill(targets == task.pad_token_id, IGNORE_INDEX)
    if family == "lm" and bool((task.additional_config or {}).get("shift_labels", True)):
        logits, targets = logits[:, :-1], targets[:, 1:]
    scored = targets != IGNORE_INDEX
    vocab = logits.shape[-1]
    _check_targets(targets, scored, vocab, "target token id")
    safe = targets.masked_fill(~scored, 0)
    flat = logits.reshape(-1, vocab).float()
    nll = F.cross_entropy(flat, safe.reshape(-1), reduction="none").view(safe.shape)
    nll = nll.masked_fill(~scored, 0.0)
    correct = (logits.argmax(dim=-1) == safe) & scored
    return {
        "nll": nll.double().sum(dim=1).cpu().numpy(),
        "tokens": scored.sum(dim=1).cpu().numpy().astype(np.int64),
        "correct": correct.sum(dim=1).cpu().numpy().astype(np.int64),
    }


def _example_batch(
    logits: torch.Tensor, batch: Batch, family: str, top_k: Sequence[int]
) -> dict[str, npt.NDArray[Any]]:
    if logits.dim() != 2:
        raise EvaluationError(
            f"the {family} evaluation expects logits shaped [B,C], got {list(logits.shape)}"
        )
    labels = _labels(batch, family).to(logits.device)
    if tuple(labels.shape) != tuple(logits.shape[:1]):
        raise EvaluationError(
            f"{family} labels must be one class id per example matching logits "
            f"{list(logits.shape)}, got shape {list(labels.shape)}"
        )
    classes = logits.shape[-1]
    _check_targets(labels, torch.ones_like(labels, dtype=torch.bool), classes, "class label")
    flat = logits.float()
    nll = F.cross_entropy(flat, labels, reduction="none")
    pred = flat.argmax(dim=-1)
    out: dict[str, npt.NDArray[Any]] = {
        "nll": nll.double().cpu().numpy(),
        "correct": (pred == labels).cpu().numpy().astype(np.int64),
        "label": labels.cpu().numpy().astype(np.int64),
        "pred": pred.cpu().numpy().astype(np.int64),
    }
    for k in top_k:
        hits = (flat.topk(k, dim=-1).indices == labels.unsqueeze(-1)).any(dim=-1)
        out[f"top{k}_correct"] = hits.cpu().numpy().astype(np.int64)
    return out


# --------------------------------------------------------------------------- the runner


def _batches(dataloader: Iterable[Any]) -> Iterable[Batch]:
    for number, batch in enumerate(dataloader, start=1):
        if not isinstance(batch, Mapping):
            raise EvaluationError(
                f"batch {number} of the evaluation data is a {type(batch).__name__}; batches must "
                "be dicts of tensors in the raw batch layout (input_ids, attention_mask, labels, "
                "pixel_values, ...), as datasets.make_dataloader produces"
            )
        yield dict(batch)


def run_evaluation(
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    eval_cfg: EvalConfig | None = None,
    dataloader: Iterable[Batch] | None = None,
    *,
    top_k: Sequence[int] = DEFAULT_TOP_K,
    data_description: str | None = None,
) -> EvalResult:
    """Evaluate ``model`` on held-out data and return its metrics, with the per-example values
    a paired comparison needs.

    ``dataloader`` may be any iterable of raw batches (a ``DataLoader``, a list of dicts); it
    is iterated once, in order. Without one the data comes from ``eval_cfg`` / the task's
    held-out split (:func:`resolve_eval_dataset`).
    """
    start = time.perf_counter()
    family = task_spec.family
    primary_metric(family)  # refuses an unknown family before any work
    description = data_description
    if dataloader is None:
        dataset, where = resolve_eval_dataset(task_spec, eval_cfg)
        dataloader = eval_dataloader(dataset, eval_cfg)
        description = description or where
    max_len = eval_cfg.max_seq_length if eval_cfg is not None else None
    parts: list[dict[str, npt.NDArray[Any]]] = []
    classes: int | None = task_spec.num_classes
    ks: tuple[int, ...] = ()
    device = model_device(model)
    with preserved_model(model, training=False), torch.no_grad():
        for raw in _batches(dataloader):
            batch = to_device(_truncate(raw, family, max_len), device)
            outputs = adapter.forward(model, batch)
            logits = adapter.get_logits(outputs, task_spec, batch=batch)
            if family in _TOKEN_FAMILIES:
                parts.append(_token_batch(logits, batch, task_spec, family))
                continue
            classes = int(logits.shape[-1])
            ks = tuple(sorted({int(k) for k in top_k if 0 < int(k) < classes}))
            parts.append(_example_batch(logits, batch, family, ks))
    if not parts:
        raise EvaluationError(
            "the evaluation data is empty: no batch to evaluate. Check the dataset path or "
            "EvalConfig.max_eval_examples."
        )
    per_example = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    n_examples = len(per_example["nll"])
    n_tokens: int | None = None
    if family in _TOKEN_FAMILIES:
        n_tokens = int(per_example["tokens"].sum())
        if n_tokens == 0:
            raise EvaluationError(
                f"no target position to score in {n_examples} examples: every target is padding "
                "or ignored (-100). Use evaluation data with real target tokens."
            )
    values = compute_metrics(family, per_example, num_classes=classes, top_k=ks)
    metrics = {name: float(v[0]) for name, v in values.items()}
    return EvalResult(
        task=task_spec.name,
        family=family,
        metrics=metrics,
        n_examples=n_examples,
        n_tokens=n_tokens,
        num_classes=classes if family in _EXAMPLE_FAMILIES else None,
        top_k=ks,
        per_example=per_example,
        data=description or "a DataLoader",
        duration_seconds=time.perf_counter() - start,
    )
