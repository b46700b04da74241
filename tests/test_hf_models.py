"""Hugging Face models run through the built-in adapters unwrapped (tiny configs, no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.models.adapters import (
    ClassificationAdapter,
    LMAdapter,
    Seq2SeqAdapter,
    VisionAdapter,
    check_forward_compatible,
    get_adapter,
)
from pytest_modeltiers.models.batches import make_batch

transformers = pytest.importorskip("transformers")

VOCAB = 100


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the Hub: every model is built from a config."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=1,
    )
    return transformers.GPT2LMHeadModel(config)


def bert() -> nn.Module:
    config = transformers.BertConfig(
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def t5() -> nn.Module:
    config = transformers.T5Config(
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_heads=2,
        vocab_size=VOCAB,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return transformers.T5ForConditionalGeneration(config)


def vit() -> nn.Module:
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=4,
    )
    return transformers.ViTForImageClassification(config)


def text_task(name: str) -> TaskSpec:
    return (
        get_builtin_task(name).with_vocab_size(VOCAB).merged({"input_schema": {"max_seq_len": 32}})
    )


CASES: list[tuple[Callable[[], nn.Module], Callable[[], TaskSpec], type, tuple[int, ...]]] = [
    (gpt2, lambda: text_task("lm_tiny"), LMAdapter, (2, 12, VOCAB)),
    (bert, lambda: text_task("cls_tiny"), ClassificationAdapter, (2, 2)),
    (t5, lambda: text_task("seq2seq_tiny"), Seq2SeqAdapter, (2, 7, VOCAB)),
    (vit, lambda: get_builtin_task("vision_tiny"), VisionAdapter, (2, 4)),
]


@pytest.mark.parametrize(
    ("build", "make_task", "adapter_cls", "logits_shape"),
    CASES,
    ids=["gpt2", "bert", "t5", "vit"],
)
def test_hf_model_through_adapter(
    build: Callable[[], nn.Module],
    make_task: Callable[[], TaskSpec],
    adapter_cls: type,
    logits_shape: tuple[int, ...],
) -> None:
    torch.manual_seed(0)
    model = build().eval()
    task = make_task()
    adapter = get_adapter(task)
    assert type(adapter) is adapter_cls
    check_forward_compatible(model, adapter)
    batch = make_batch(task, 2, 9, target_len=7, seed=0, pad_to=12)
    outputs = adapter.forward(model, batch)
    logits = adapter.get_logits(outputs, task, batch=batch)
    assert tuple(logits.shape) == logits_shape
    assert adapter.predict(outputs, task, batch=batch).shape == logits_shape[:-1]
    loss = adapter.loss(outputs, batch, task)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_hf_labels_are_not_passed_so_the_model_computes_no_loss() -> None:
    model = gpt2().eval()
    task = text_task("lm_tiny")
    outputs: Any = LMAdapter(task).forward(model, make_batch(task, 1, 5))
    assert outputs.get("loss") is None


def test_t5_loss_matches_transformers_own_loss() -> None:
    """Our decoder inputs and loss reproduce what T5 computes itself from the same labels."""
    torch.manual_seed(0)
    model = t5().eval()
    task = text_task("seq2seq_tiny")
    batch = make_batch(task, 2, 6, target_len=5, seed=3)
    adapter = Seq2SeqAdapter(task)
    ours = adapter.loss(adapter.forward(model, batch), batch)
    theirs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
    ).loss
    torch.testing.assert_close(ours, theirs)


def test_gpt2_attention_maps_are_exposed() -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=1,
        output_attentions=True,
        attn_implementation="eager",
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    task = text_task("lm_tiny")
    adapter = LMAdapter(task)
    maps = adapter.get_attention_maps(adapter.forward(model, make_batch(task, 1, 6)))
    assert maps is not None and len(maps) == 2
    assert maps[0].shape == (1, 2, 6, 6)
