"""The tasks' shipped datasets: small, deterministic, learnable, generated from code.

PYTEST_DONT_REWRITE

Tier 3 trains on them, tier 5 evaluates and profiles them, and users get them with no download.
They are generated rather than stored because the vocabulary, number of classes and image size
come from the user's model: a fixed file could not fit every model. Generation is seeded, so the
same task, split, size, shift and seed always give the same tensors, on any machine.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.models.batches import pixel_range, require_num_classes, require_vocab_size

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec

__all__ = [
    "DEFAULT_SIZES",
    "MAX_TEXT_LEN",
    "SPLITS",
    "DatasetError",
    "TensorDictDataset",
    "load_dataset_file",
    "make_dataloader",
    "task_dataset",
]

SPLITS = ("train", "validation", "test")
#: Examples per split when ``size`` is not given: small enough to train on CPU in seconds.
DEFAULT_SIZES = {"train": 256, "validation": 64, "test": 64}
#: Longest generated text (capped further by the task's ``max_seq_len``).
MAX_TEXT_LEN = 32
#: Seed of the "world" (successor permutation, keywords, templates), shared by every split so
#: that what the model learns on ``train`` holds on ``validation`` and ``test``.
_WORLD_SEED = 20_261_126
_FOLLOW_PROBABILITY = 0.8
_KEYWORD_PROBABILITY = 0.3
_REQUIRED_KEYS = {
    "lm": ("input_ids",),
    "classification": ("input_ids", "labels"),
    "seq2seq": ("input_ids", "labels"),
    "vision": ("pixel_values", "labels"),
}


class DatasetError(ModelTiersError, ValueError):
    """A dataset cannot be built or read; the message names the problem and the fix."""


class TensorDictDataset(Dataset[dict[str, torch.Tensor]]):
    """Examples stored as a dict of tensors stacked on dim 0; item ``i`` is the dict of rows ``i``.

    Every tensor has the same first dimension. The default ``DataLoader`` collation stacks items
    back into a raw batch, so no custom ``collate_fn`` is needed.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            raise DatasetError("a dataset needs at least one tensor")
        sizes = {key: int(value.shape[0]) for key, value in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise DatasetError(f"tensors disagree on the number of examples: {sizes}")
        self.tensors = dict(tensors)
        self._length = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def task_dataset(
    task: TaskSpec,
    split: str = "train",
    *,
    size: int | None = None,
    shift: float = 0.0,
    seed: int = 0,
) -> TensorDictDataset:
    """The task's shipped dataset for ``split`` (docs/tasks-and-adapters.md says what it holds)."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    count = DEFAULT_SIZES[split] if size is None else size
    if not isinstance(count, int) or count < 1:
        raise DatasetError(f"size must be a positive integer, got {size!r}")
    if not 0.0 <= float(shift) <= 1.0:
        raise DatasetError(f"shift must be between 0 and 1, got {shift!r}")
    g = torch.Generator().manual_seed(seed * 1000 + SPLITS.index(split) + 1)
    family = task.family
    if family == "vision":
        return TensorDictDataset(_vision(task, count, float(shift), g))
    if family not in ("lm", "classification", "seq2seq"):
        raise DatasetError(
            f"task {task.name!r} has family {family!r}; shipped datasets exist for lm, "
            "classification, seq2seq and vision. Pass your own data (a Dataset, a DataLoader or "
            "--eval-data PATH) instead."
        )
    return TensorDictDataset(_text(task, family, count, float(shift), g))


# -- text -------------------------------------------------------------------------------------


def _usable_tokens(task: TaskSpec) -> torch.Tensor:
    """Token ids allowed at real positions: the vocabulary minus pad and special tokens."""
    vocab = require_vocab_size(task)
    reserved = {int(v) for v in task.special_tokens.values() if isinstance(v, int)}
    if task.pad_token_id is not None:
        reserved.add(int(task.pad_token_id))
    usable = [t for t in range(vocab) if t not in reserved]
    if len(usable) < 2:
        raise DatasetError(
            f"task {task.name!r} leaves {len(usable)} usable token id(s) once special tokens are "
            "removed; the shipped datasets need a vocabulary of at least 2 ordinary tokens."
        )
    return torch.tensor(usable, dtype=torch.long)


def _zipf(n: int, shift: float) -> torch.Tensor:
    """Token probabilities by rank: Zipf, tilted towards the reversed ranking by ``shift``."""
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    zipf = 1.0 / ranks
    zipf /= zipf.sum()
    return (1.0 - shift) * zipf + shift * zipf.flip(0)


def _lengths(count: int, max_len: int, shift: float, g: torch.Generator) -> torch.Tensor:
    low = max(1, min(max_len, math.ceil(max_len * (0.5 + 0.5 * shift))))
    return torch.randint(low, max_len + 1, (count,), generator=g)


def _pad_rows(
    rows: torch.Tensor, lengths: torch.Tensor, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(rows.shape[1]).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    return torch.where(mask.bool(), rows, torch.full_like(rows, pad)), mask


def _text(
    task: TaskSpec, family: str, count: int, shift: float, g: torch.Generator
) -> dict[str, torch.Tensor]:
    usable = _usable_tokens(task)
    n = len(usable)
    world = torch.Generator().manual_seed(_WORLD_SEED)
    order = torch.randperm(n, generator=world)  # rank -> index into usable
    successor = torch.randperm(n, generator=world)
    max_len = min(MAX_TEXT_LEN, task.max_seq_len or MAX_TEXT_LEN)
    pad = 0 if task.pad_token_id is None else int(task.pad_token_id)
    lengths = _lengths(count, max_len, shift, g)
    unigram = order[torch.multinomial(_zipf(n, shift), count * max_len, True, generator=g)]
    draws = unigram.view(count, max_len)
    if family == "classification":
        labels, rows = _keyword_rows(task, draws, order, shift, g)
    else:
        rows = draws.clone()
        follow = torch.rand((count, max_len), generator=g) < _FOLLOW_PROBABILITY
        for t in range(1, max_len):
            rows[:, t] = torch.where(follow[:, t], successor[rows[:, t - 1]], draws[:, t])
    input_ids, mask = _pad_rows(usable[rows], lengths, pad)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if family == "lm":
        batch["labels"] = input_ids.clone()
    elif family == "classification":
        batch["labels"] = labels
    else:
        translation = torch.randperm(n, generator=world)
        target_max = min(max_len, task.max_target_len or max_len)
        targets, decoder_mask = _pad_rows(
            usable[translation[rows[:, :target_max]]], lengths.clamp(max=target_max), pad
        )
        batch["labels"] = targets
        batch["decoder_attention_mask"] = decoder_mask
    return batch


def _keyword_rows(
    task: TaskSpec, draws: torch.Tensor, order: torch.Tensor, shift: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels, and rows where some positions hold a keyword of the example's class."""
    classes = require_num_classes(task)
    n = len(order)
    per_class = max(1, n // (2 * classes))
    keywords = torch.stack(
        [order[(c * per_class + torch.arange(per_class)) % n] for c in range(classes)]
    )
    balance = torch.full((classes,), (1.0 - shift / 2) / classes, dtype=torch.float64)
    balance[0] += shift / 2
    count, length = draws.shape
    labels = torch.multinomial(balance, count, True, generator=g)
    picks = torch.randint(0, per_class, (count, length), generator=g)
    chosen = keywords[labels.unsqueeze(1).expand(-1, length), picks]
    is_keyword = torch.rand((count, length), generator=g) < _KEYWORD_PROBABILITY
    is_keyword[:, 0] = True  # every example shows its class at least once
    return labels, torch.where(is_keyword, chosen, draws)


# -- vision -----------------------------------------------------------------------------------


def _vision(
    task: TaskSpec, count: int, shift: float, g: torch.Generator
) -> dict[str, torch.Tensor]:
    if task.image_size is None:
        raise DatasetError(
            f"vision task {task.name!r} has no image_size; set it with "
            'TASK = {"input_schema": {"image_size": [3, 32, 32]}}.'
        )
    channels, height, width = (int(v) for v in task.image_size)
    classes = require_num_classes(task)
    world = torch.Generator().manual_seed(_WORLD_SEED)
    coarse = torch.rand((classes, channels, 4, 4), generator=world) * 2 - 1
    templates = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bilinear", align_corners=False
    )
    labels = torch.randint(0, classes, (count,), generator=g)
    noise = torch.randn((count, channels, height, width), generator=g)
    unit = (0.5 + 0.3 * templates[labels] + 0.1 * noise + 0.2 * shift).clamp(0.0, 1.0)
    low, high = pixel_range(task)
    pixels = low + (high - low) * unit
    if not task.channels_first:
        pixels = pixels.permute(0, 2, 3, 1).contiguous()
    return {"pixel_values": pixels, "labels": labels}


# -- users' files -----------------------------------------------------------------------------


def load_dataset_file(path: str | os.PathLike[str], task: TaskSpec) -> TensorDictDataset:
    """A user's dataset: a ``.pt`` dict of tensors or a ``.jsonl`` file, in the raw batch layout.

    ``.pt`` files are read with ``weights_only=True`` (no code runs). In ``.jsonl`` each line is
    one example; text fields of different lengths are right-padded with the task's pad id and
    get an ``attention_mask`` when the line has none. Missing ``labels`` of an LM are the
    ``input_ids``.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset file {file} does not exist (check the path)")
    suffix = file.suffix.lower()
    if suffix == ".pt":
        tensors = _read_pt(file)
    elif suffix == ".jsonl":
        tensors = _read_jsonl(file, task)
    else:
        raise DatasetError(
            f"dataset file {file} has suffix {file.suffix!r}; use .pt (a dict of tensors saved "
            "with torch.save) or .jsonl (one JSON object per example)"
        )
    return _validated(tensors, task, file)


def _read_pt(file: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise DatasetError(
            f"cannot read dataset file {file}: {type(exc).__name__}: {exc}. It must be a dict of "
            "tensors saved with torch.save (loaded with weights_only=True)."
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise DatasetError(
            f"dataset file {file} holds {type(data).__name__}; it must be a dict mapping names "
            "(input_ids, attention_mask, labels, pixel_values, ...) to tensors"
        )
    return data


def _read_jsonl(file: Path, task: TaskSpec) -> dict[str, torch.Tensor]:
    rows: list[dict[str, Any]] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{file}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{file}:{number}: expected a JSON object per line")
            rows.append(row)
    if not rows:
        raise DatasetError(f"dataset file {file} has no examples")
    keys = set(rows[0])
    for number, row in enumerate(rows, start=1):
        if set(row) != keys:
            raise DatasetError(
                f"{file}: example {number} has keys {sorted(row)}, the first has {sorted(keys)}"
            )
    pad = 0 if task.pad_token_id is None else int(task.pad_token_id)
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        values = [row[key] for row in rows]
        try:
            if key == "pixel_values":
                tensors[key] = torch.tensor(values, dtype=torch.float32)
            elif all(isinstance(v, list) for v in values):
                width = max(len(v) for v in values)
                fill = 0 if key.endswith("attention_mask") else pad
                tensors[key] = torch.tensor(
                    [v + [fill] * (width - len(v)) for v in values], dtype=torch.long
                )
                if key == "input_ids" and "attention_mask" not in keys:
                    tensors["attention_mask"] = torch.tensor(
                        [[1] * len(v) + [0] * (width - len(v)) for v in values], dtype=torch.long
                    )
            else:
                tensors[key] = torch.tensor(values, dtype=torch.long)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"{file}: field {key!r} is not numeric or not rectangular: {exc}"
            ) from None
    return tensors


def _validated(tensors: dict[str, torch.Tensor], task: TaskSpec, file: Path) -> TensorDictDataset:
    family = task.family
    missing = [k for k in _REQUIRED_KEYS.get(family, ()) if k not in tensors]
    if missing:
        raise DatasetError(
            f"dataset file {file} lacks {', '.join(missing)} needed by a {family} task "
            f"(it has {', '.join(sorted(tensors)) or 'nothing'})"
        )
    if family == "lm" and "labels" not in tensors:
        tensors["labels"] = tensors["input_ids"].clone()
    if "input_ids" in tensors and "attention_mask" not in tensors:
        tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    vocab = task.vocab_size
    ids = tensors.get("input_ids")
    if ids is not None and vocab is not None and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            raise DatasetError(
                f"dataset file {file} has token ids in [{low}, {high}] but the model's vocabulary "
                f"is [0, {vocab}); re-tokenise the data for this model"
            )
    try:
        return TensorDictDataset(tensors)
    except DatasetError as exc:
        raise DatasetError(f"dataset file {file}: {exc}") from None


def make_dataloader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader[Any]:
    """A single-process ``DataLoader`` whose shuffling depends on ``seed`` only."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
    )
