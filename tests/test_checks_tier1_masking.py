"""Causal masking and padding invariance checks, both ways.

Correct models (the four examples, tiny Hugging Face GPT-2 / BERT / T5 / ViT built from configs,
and a ``torch.nn.TransformerEncoder`` LM with a causal mask) must pass or be skipped with a
reason; the fixtures in ``fixtures/tier1/masking_*.py`` each carry exactly one masking bug and
must fail with a message that names it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from third_party_models import hf_model
from torch import nn

from pytest_modeltiers.checks.tier1_masking import (
    check_causal_masking,
    check_padding_invariance,
    perturb_after,
)
from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_models"
FIXTURES = ROOT / "fixtures" / "tier1"
VOCAB = 100


def _text_task(name: str) -> TaskSpec:
    return (
        get_builtin_task(name).with_vocab_size(VOCAB).merged({"input_schema": {"max_seq_len": 32}})
    )


@cache
def _loaded(path: str) -> LoadedModel:
    return load_model(LoadRequest(spec=path, rootdir=ROOT))


def load(path: Path) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    loaded = _loaded(str(path))
    return loaded.new_model(), loaded.adapter, loaded.task


def example(name: str) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    return load(EXAMPLES / f"{name}.py")


def fixture(name: str) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    return load(FIXTURES / f"{name}.py")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the Hugging Face Hub: models are built from configs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------- third-party models


class TransformerEncoderLM(nn.Module):
    """A decoder LM built from ``nn.TransformerEncoder`` with a square subsequent mask."""

    def __init__(self, vocab: int = VOCAB, d: int = 32, max_len: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=input_ids.device)
        padding = None
        if attention_mask is not None:
            padding = torch.zeros(attention_mask.shape, device=x.device).masked_fill(
                attention_mask == 0, float("-inf")
            )
        y = self.encoder(x, mask=causal, is_causal=True, src_key_padding_mask=padding)
        return self.head(y)


def transformer_encoder_lm() -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    torch.manual_seed(0)
    task = _text_task("lm_tiny")
    return TransformerEncoderLM(), get_adapter(task), task


# --------------------------------------------------------------------------- causal: passes


@pytest.mark.parametrize("name", ["tiny_gpt", "tiny_seq2seq"])
@pytest.mark.parametrize("position", [0, 5, 10])
def test_causal_examples_pass(name: str, position: int) -> None:
    model, adapter, task = example(name)
    batch = make_batch(task, 3, 12, target_len=12, seed=1)
    result = check_causal_masking(model, adapter, batch, position=position)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_causal_masking" and result.tier == 1
    assert result.details["max_abs_diff"] <= 1e-4
    assert result.details["compared_positions"] == position + 1


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize("position", [0, 4, 8])
def test_causal_hugging_face_decoders_pass(kind: str, position: int) -> None:
    model, adapter, task = hf_model(kind)
    batch = make_batch(task, 2, 10, target_len=10, seed=2)
    result = check_causal_masking(model, adapter, batch, position=position)
    assert result.status is CheckStatus.PASSED, result.message


def test_causal_transformer_encoder_lm_passes_and_keeps_train_mode() -> None:
    model, adapter, task = transformer_encoder_lm()
    model.train()  # dropout is active in train mode: the check must use eval mode
    batch = make_batch(task, 2, 10, seed=0)
    for position in (0, 4, 8):
        result = check_causal_masking(model, adapter, batch, position=position)
        assert result.status is CheckStatus.PASSED, result.message
    assert all(module.training for module in model.modules())


def test_causal_with_padding_in_the_batch_compares_real_positions() -> None:
    model, adapter, task = example("tiny_gpt")
    batch = make_batch(task, 2, 8, seed=3, pad_to=12)
    result = check_causal_masking(model, adapter, batch, position=9)
    assert result.status is CheckStatus.PASSED, result.message


def test_causal_seq2seq_batch_with_decoder_input_ids() -> None:
    model, adapter, task = example("tiny_seq2seq")
    batch = make_batch(task, 2, 6, target_len=9, seed=4)
    batch["decoder_input_ids"] = adapter.prepare_inputs(batch)["decoder_input_ids"]
    result = check_causal_masking(model, adapter, batch, position=3)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["perturbed"] == "decoder_input_ids[:, 4:]"


def test_causal_restores_mixed_modes() -> None:
    model, adapter, task = example("tiny_gpt")
    model.train()
    model.blocks[0].eval()
    before = {name: m.training for name, m in model.named_modules()}
    check_causal_masking(model, adapter, make_batch(task, 1, 6), position=2)
    assert {name: m.training for name, m in model.named_modules()} == before


# --------------------------------------------------------------------------- causal: skips


@pytest.mark.parametrize(
    ("name", "family"), [("tiny_encoder_cls", "classification"), ("simple_cnn", "vision")]
)
def test_causal_skipped_for_other_families(name: str, family: str) -> None:
    model, adapter, task = example(name)
    result = check_causal_masking(model, adapter, make_batch(task, 2, 8), position=3)
    assert result.status is CheckStatus.SKIPPED
    assert f"this task is {family}" in result.message


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_causal_skipped_for_hugging_face_encoders(kind: str) -> None:
    model, adapter, task = hf_model(kind)
    result = check_causal_masking(model, adapter, make_batch(task, 2, 8), position=3)
    assert result.status is CheckStatus.SKIPPED


def test_causal_last_position_is_skipped_and_out_of_range_is_an_error() -> None:
    model, adapter, task = example("tiny_gpt")
    batch = make_batch(task, 1, 6)
    result = check_causal_masking(model, adapter, batch, position=5)
    assert result.status is CheckStatus.SKIPPED
    assert "no later tokens" in result.message
    with pytest.raises(ValueError, match="position=6"):
        check_causal_masking(model, adapter, batch, position=6)


def test_perturb_after_changes_every_later_token_and_nothing_before() -> None:
    ids = torch.tensor([[0, 1, 2, 3, 4, 5], [5, 4, -100, 2, 1, 0]])
    out = perturb_after(ids, 2, vocab=6)
    assert torch.equal(out[:, :2], ids[:, :2])
    assert bool((out[0, 2:] != ids[0, 2:]).all())
    assert int(out[1, 2]) == -100  # ignored labels stay ignored
    assert bool((out[1, 3:] != ids[1, 3:]).all())
    assert bool(((out >= 0) & (out < 6) | (out == -100)).all())
    assert torch.equal(out, perturb_after(ids, 2, vocab=6))  # deterministic


# --------------------------------------------------------------------------- causal: failures


@pytest.mark.parametrize("position", [0, 4, 9])
def test_causal_leak_fails_naming_position_zero(position: int) -> None:
    model, adapter, task = fixture("masking_causal_leak")
    batch = make_batch(task, 2, 12, seed=0)
    result = check_causal_masking(model, adapter, batch, position=position)
    assert result.status is CheckStatus.FAILED
    assert result.details["first_leaking_position"] == 0
    assert result.details["leaking_positions"] == list(range(position + 1))
    assert "causal leak: the output at position 0" in result.message
    assert "input_ids[2,12]" in result.message
    assert "is_causal=True" in result.message
    assert result.details["max_abs_diff"] > 1e-2


@pytest.mark.parametrize("position", [1, 5, 10])
def test_off_by_one_mask_reports_exactly_the_first_leaking_position(position: int) -> None:
    model, adapter, task = fixture("masking_off_by_one")
    batch = make_batch(task, 2, 12, seed=0)
    result = check_causal_masking(model, adapter, batch, position=position)
    assert result.status is CheckStatus.FAILED
    assert result.details["first_leaking_position"] == position
    assert result.details["leaking_positions"] == [position]
    assert f"the output at position {position} " in result.message
    assert "off by one" in result.message


def test_causal_tolerance_is_configurable() -> None:
    model, adapter, task = fixture("masking_off_by_one")
    batch = make_batch(task, 1, 8, seed=0)
    result = check_causal_masking(model, adapter, batch, position=3, atol=1e3)
    assert result.status is CheckStatus.PASSED
    assert result.details["atol"] == 1e3


class _LeakyDecoderSeq2Seq(nn.Module):
    """Encoder-decoder whose decoder self-attention has no causal mask."""

    def __init__(self, vocab: int = 128, d: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.head = nn.Linear(d, vocab)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert decoder_input_ids is not None
        memory = self.tok(input_ids).mean(dim=1, keepdim=True)
        y = self.tok(decoder_input_ids) + memory
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        return self.head(y + F.scaled_dot_product_attention(q, k, v))


def test_causal_seq2seq_decoder_leak_fails_on_decoder_positions() -> None:
    task = get_builtin_task("seq2seq_tiny").with_vocab_size(128)
    torch.manual_seed(0)
    model, adapter = _LeakyDecoderSeq2Seq().eval(), get_adapter(task)
    batch = make_batch(task, 2, 6, target_len=8, seed=0)
    result = check_causal_masking(model, adapter, batch, position=3)
    assert result.status is CheckStatus.FAILED
    assert result.details["first_leaking_position"] == 0
    assert "decoder position 0" in result.message
    assert result.details["perturbed"] == "labels[:, 3:]"


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > 3:
            raise RuntimeError("sequence too long for the rotary cache")
        return self.emb(input_ids)


def test_forward_exception_is_a_failure_with_type_and_shape() -> None:
    task = _text_task("lm_tiny")
    result = check_causal_masking(_Raises(), get_adapter(task), make_batch(task, 2, 7), position=2)
    assert result.status is CheckStatus.FAILED
    assert "RuntimeError: sequence too long for the rotary cache" in result.message
    assert "input_ids[2,7]" in result.message


class _NoisyLM(nn.Module):
    """Causal by construction, but adds fresh noise in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.emb(input_ids)
        return out + torch.randn_like(out)


def test_nondeterministic_model_is_not_reported_as_a_leak() -> None:
    task = _text_task("lm_tiny")
    result = check_causal_masking(_NoisyLM(), get_adapter(task), make_batch(task, 1, 6), position=2)
    assert result.status is CheckStatus.FAILED
    assert result.message.startswith("outputs are not deterministic (see test_output_stability)")
    assert "causal leak" not in result.message


# --------------------------------------------------------------------------- padding: passes


@pytest.mark.parametrize("name", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq"])
@pytest.mark.parametrize("pad_to", [None, 14])
def test_padding_examples_pass(name: str, pad_to: int | None) -> None:
    model, adapter, task = example(name)
    batch = make_batch(task, 3, 10, target_len=7, seed=5, pad_to=pad_to)
    result = check_padding_invariance(model, adapter, batch)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_padding_invariance" and result.tier == 1
    assert result.details["pad"] == 3
    assert result.details["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_padding_hugging_face_models_pass(kind: str) -> None:
    model, adapter, task = hf_model(kind)
    batch = make_batch(task, 2, 9, target_len=6, seed=6)
    result = check_padding_invariance(model, adapter, batch, pad=4)
    assert result.status is CheckStatus.PASSED, result.message


def test_padding_transformer_encoder_lm_passes() -> None:
    model, adapter, task = transformer_encoder_lm()
    result = check_padding_invariance(model, adapter, make_batch(task, 2, 9, seed=0))
    assert result.status is CheckStatus.PASSED, result.message


def test_padding_cuts_the_input_to_fit_max_seq_len() -> None:
    model, adapter, task = example("tiny_gpt")
    assert task.max_seq_len == 64
    batch = make_batch(task, 1, 64, seed=0)
    result = check_padding_invariance(model, adapter, batch, pad=3)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["truncated_to"] == 61


# --------------------------------------------------------------------------- padding: skips


@pytest.mark.parametrize("build", ["simple_cnn", "vit"])
def test_padding_skipped_for_vision(build: str) -> None:
    model, adapter, task = example(build) if build == "simple_cnn" else hf_model(build)
    result = check_padding_invariance(model, adapter, make_batch(task, 2))
    assert result.status is CheckStatus.SKIPPED
    assert "this task is vision" in result.message


def test_padding_skipped_without_attention_mask_parameter() -> None:
    task = _text_task("lm_tiny")
    model = nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB))
    result = check_padding_invariance(model, get_adapter(task), make_batch(task, 2, 5))
    assert result.status is CheckStatus.SKIPPED
    assert "does not take attention_mask" in result.message


# --------------------------------------------------------------------------- padding: failures


def test_classifier_pooling_over_padding_fails() -> None:
    model, adapter, task = fixture("masking_padding_leak")
    batch = make_batch(task, 2, 10, seed=0)
    result = check_padding_invariance(model, adapter, batch)
    assert result.status is CheckStatus.FAILED
    message = result.message
    assert "padding leak: pooled logits changed" in message
    assert "input_ids[2,10]" in message and "input_ids[2,13]" in message
    assert "pool over real tokens only" in message
    assert result.details["changed_rows"] == [0, 1]
    assert result.details["max_abs_diff"] > 1e-3


def test_lm_global_mean_over_padding_fails_at_real_positions() -> None:
    model, adapter, task = fixture("masking_lm_padding_leak")
    batch = make_batch(task, 2, 8, seed=0)
    result = check_padding_invariance(model, adapter, batch)
    assert result.status is CheckStatus.FAILED
    assert "padding leak: outputs at real positions changed at positions [0," in result.message
    assert "ignores attention_mask" in result.message
    assert result.details["changed_positions"] == list(range(8))


def test_padding_check_restores_modes_and_never_changes_the_batch() -> None:
    model, adapter, task = example("tiny_encoder_cls")
    model.train()
    batch = make_batch(task, 2, 6, seed=0)
    copy: dict[str, Any] = {k: v.clone() for k, v in batch.items()}
    check_padding_invariance(model, adapter, batch)
    assert all(module.training for module in model.modules())
    assert batch.keys() == copy.keys()
    assert all(torch.equal(batch[k], copy[k]) for k in batch)
