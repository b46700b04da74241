"""Hugging Face models run through the built-in adapters unwrapped (tiny configs, no downloads)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from third_party_models import hf_model

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.models.adapters import (
    ClassificationAdapter,
    LMAdapter,
    Seq2SeqAdapter,
    VisionAdapter,
    check_forward_compatible,
)
from pytest_modeltiers.models.batches import make_batch

transformers = pytest.importorskip("transformers")

VOCAB = 100


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the Hub: every model is built from a config."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def text_task(name: str) -> TaskSpec:
    return (
        get_builtin_task(name).with_vocab_size(VOCAB).merged({"input_schema": {"max_seq_len": 32}})
    )


# kind -> adapter class and logits shape for a batch of 2 (V: the model's vocabulary)
CASES: list[tuple[str, type, tuple[int | str, ...]]] = [
    ("gpt2", LMAdapter, (2, 12, "V")),
    ("bert", ClassificationAdapter, (2, 2)),
    ("t5", Seq2SeqAdapter, (2, 7, "V")),
    ("vit", VisionAdapter, (2, 4)),
]


@pytest.mark.parametrize(("kind", "adapter_cls", "logits_shape"), CASES, ids=[c[0] for c in CASES])
def test_hf_model_through_adapter(
    kind: str, adapter_cls: type, logits_shape: tuple[int | str, ...]
) -> None:
    model, adapter, task = hf_model(kind)
    expected = tuple(task.vocab_size if d == "V" else d for d in logits_shape)
    assert type(adapter) is adapter_cls
    check_forward_compatible(model, adapter)
    batch = make_batch(task, 2, 9, target_len=7, seed=0, pad_to=12)
    outputs = adapter.forward(model, batch)
    logits = adapter.get_logits(outputs, task, batch=batch)
    assert tuple(logits.shape) == expected
    assert adapter.predict(outputs, task, batch=batch).shape == expected[:-1]
    loss = adapter.loss(outputs, batch, task)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_hf_labels_are_not_passed_so_the_model_computes_no_loss() -> None:
    model, _, task = hf_model("gpt2")
    outputs: Any = LMAdapter(task).forward(model, make_batch(task, 1, 5))
    assert outputs.get("loss") is None


def test_t5_loss_matches_transformers_own_loss() -> None:
    """Our decoder inputs and loss reproduce what T5 computes itself from the same labels."""
    model, _, task = hf_model("t5")
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
