"""The shipped datasets: deterministic, learnable, shiftable; and users' own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.datasets import (
    DEFAULT_SIZES,
    DatasetError,
    TensorDictDataset,
    load_dataset_file,
    make_dataloader,
    task_dataset,
)

VOCAB = 50


def _task(name: str) -> TaskSpec:
    task = get_builtin_task(name)
    return task if task.family == "vision" else task.with_vocab_size(VOCAB)


TASKS = ["lm_tiny", "cls_tiny", "seq2seq_tiny", "vision_tiny"]


@pytest.mark.parametrize("name", TASKS)
def test_same_arguments_give_the_same_tensors(name: str) -> None:
    first = task_dataset(_task(name), "train")
    second = task_dataset(_task(name), "train")
    assert first.tensors.keys() == second.tensors.keys()
    for key, value in first.tensors.items():
        assert torch.equal(value, second.tensors[key]), key


@pytest.mark.parametrize("name", TASKS)
def test_splits_differ_and_have_their_default_sizes(name: str) -> None:
    task = _task(name)
    splits = {split: task_dataset(task, split) for split in DEFAULT_SIZES}
    for split, dataset in splits.items():
        assert len(dataset) == DEFAULT_SIZES[split]
    key = "pixel_values" if task.family == "vision" else "input_ids"
    assert not torch.equal(splits["validation"].tensors[key], splits["test"].tensors[key])


def test_text_has_right_padding_real_lengths_and_no_special_tokens_at_real_positions() -> None:
    data = task_dataset(_task("seq2seq_tiny"), "train").tensors
    ids, mask = data["input_ids"], data["attention_mask"]
    lengths = mask.sum(1)
    assert lengths.min() < lengths.max(), "lengths vary"
    assert torch.equal(mask, (torch.arange(ids.shape[1]) < lengths[:, None]).long())
    assert (ids[mask == 0] == 0).all(), "padding holds the pad id"
    assert (ids[mask == 1] != 0).all(), "the pad / decoder start id never appears as a real token"
    assert ids.max() < VOCAB
    assert data["labels"].shape == data["decoder_attention_mask"].shape


def test_lm_labels_are_the_inputs_and_classification_labels_are_in_range() -> None:
    lm = task_dataset(_task("lm_tiny"), "validation").tensors
    assert torch.equal(lm["labels"], lm["input_ids"])
    cls = task_dataset(_task("cls_tiny"), "validation").tensors
    assert set(cls["labels"].tolist()) == {0, 1}


def test_vision_pixels_stay_in_the_tasks_range_and_honour_the_layout() -> None:
    task = _task("vision_tiny")
    pixels = task_dataset(task, "test").tensors["pixel_values"]
    assert pixels.shape == (64, 3, 32, 32)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0  # vision_tiny normalises with 0.5/0.5
    last = task.merged({"input_schema": {"channels_first": False}})
    assert task_dataset(last, "test").tensors["pixel_values"].shape == (64, 32, 32, 3)


def test_shift_moves_token_frequencies_lengths_balance_and_brightness() -> None:
    lm = _task("lm_tiny")
    ref, cur = (task_dataset(lm, "test", size=512, shift=s).tensors for s in (0.0, 1.0))
    ref_hist = torch.bincount(ref["input_ids"][ref["attention_mask"] == 1], minlength=VOCAB)
    cur_hist = torch.bincount(cur["input_ids"][cur["attention_mask"] == 1], minlength=VOCAB)
    assert ref_hist.argmax() != cur_hist.argmax()
    assert cur["attention_mask"].sum(1).float().mean() > ref["attention_mask"].sum(1).float().mean()
    cls = [task_dataset(_task("cls_tiny"), "test", size=512, shift=s) for s in (0.0, 1.0)]
    assert (cls[1].tensors["labels"] == 0).float().mean() > 0.7
    assert 0.35 < (cls[0].tensors["labels"] == 0).float().mean() < 0.65
    vision = [task_dataset(_task("vision_tiny"), "test", shift=s) for s in (0.0, 1.0)]
    assert vision[1].tensors["pixel_values"].mean() > vision[0].tensors["pixel_values"].mean()


def test_a_model_learns_the_lm_data() -> None:
    """The bigram structure is learnable: a bigram table beats the unigram entropy by far."""
    data = task_dataset(_task("lm_tiny"), "train", size=512).tensors
    ids, mask = data["input_ids"], data["attention_mask"]
    pairs = (mask[:, 1:] == 1).flatten()
    prev, nxt = ids[:, :-1].flatten()[pairs], ids[:, 1:].flatten()[pairs]
    table = torch.zeros(VOCAB, VOCAB)
    table.index_put_((prev, nxt), torch.ones(len(prev)), accumulate=True)
    predicted = table.argmax(1)[prev]
    assert (predicted == nxt).float().mean() > 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "dev"}, "split must be one of train, validation, test"),
        ({"size": 0}, "size must be a positive integer"),
        ({"shift": 1.5}, "shift must be between 0 and 1"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        task_dataset(_task("lm_tiny"), **kwargs)  # type: ignore[arg-type]


def test_a_task_without_a_vocabulary_is_refused_with_the_fix() -> None:
    with pytest.raises(Exception, match="vocab_size"):
        task_dataset(get_builtin_task("lm_tiny"))


def test_dataloader_collates_raw_batches_and_shuffles_by_seed() -> None:
    dataset = task_dataset(_task("cls_tiny"), "train", size=40)
    batches = list(make_dataloader(dataset, 16))
    assert [b["input_ids"].shape[0] for b in batches] == [16, 16, 8]
    order = [make_dataloader(dataset, 40, shuffle=True, seed=s) for s in (1, 1, 2)]
    firsts = [next(iter(loader))["labels"] for loader in order]
    assert torch.equal(firsts[0], firsts[1])
    with pytest.raises(DatasetError, match="batch_size"):
        make_dataloader(dataset, 0)


def test_pt_files_round_trip_and_lm_labels_default_to_inputs(tmp_path: Path) -> None:
    path = tmp_path / "data.pt"
    ids = torch.randint(1, VOCAB, (6, 5))
    torch.save({"input_ids": ids}, path)
    loaded = load_dataset_file(path, _task("lm_tiny"))
    assert torch.equal(loaded.tensors["labels"], ids)
    assert loaded.tensors["attention_mask"].sum() == ids.numel()


def test_jsonl_rows_are_padded_with_a_mask(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset_file(path, _task("cls_tiny")).tensors
    assert data["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert data["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert data["labels"].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pt", None, "does not exist"),
        ("data.csv", "a,b\n", "use .pt"),
        ("broken.pt", "not a zip", "cannot read dataset file"),
        ("bad.jsonl", '{"input_ids": [1]}\n{oops\n', r"bad.jsonl:2: invalid JSON"),
        ("ragged.jsonl", '{"input_ids": [1], "labels": 0}\n{"input_ids": [1]}\n', "has keys"),
        ("nolabels.jsonl", '{"input_ids": [1]}\n', "lacks labels"),
        ("range.jsonl", '{"input_ids": [1, 99], "labels": 0}\n', "re-tokenise"),
        ("empty.jsonl", "\n", "has no examples"),
    ],
)
def test_bad_files_are_clear_errors(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset_file(path, _task("cls_tiny"))


def test_a_pt_file_that_is_not_a_dict_of_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(DatasetError, match="must be a dict mapping names"):
        load_dataset_file(path, _task("cls_tiny"))
    torch.save({"input_ids": torch.zeros(3, 2, dtype=torch.long), "labels": torch.zeros(2)}, path)
    with pytest.raises(DatasetError, match="disagree on the number of examples"):
        load_dataset_file(path, _task("cls_tiny"))


def test_dataset_needs_tensors() -> None:
    with pytest.raises(DatasetError, match="at least one tensor"):
        TensorDictDataset({})
