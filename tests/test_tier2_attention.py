"""Tier 2 attention: reading maps from any model, and the checks on them, both ways.

The bug fixtures of ``fixtures/tier2`` each fail exactly one attention check; correct models
(the examples, nanoGPT on SDPA, ``nn.MultiheadAttention``, Hugging Face models on eager and
SDPA attention) fail none. The plugin-level runs are in test_tier2_suite.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_modeltiers.analysis.attention_maps import (
    INPUT,
    TARGET,
    AttentionReader,
    NoAttentionMaps,
    implied_attention_weights,
)
from pytest_modeltiers.checks.tier2_attention import (
    check_attention_causality,
    check_attention_health,
    check_attention_normalization,
    check_attention_padding,
    sum_tolerance,
    zero_tolerance,
)
from pytest_modeltiers.config.task_spec import TaskSpec, resolve_task
from pytest_modeltiers.models.adapters import LMAdapter, TaskAdapter, get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadRequest, load_model
from pytest_modeltiers.report import CheckResult, CheckStatus

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "tier2"
EXAMPLES = ROOT / "example_models"
THIRD_PARTY = ROOT / "fixtures" / "third_party"
LM_TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 16, "max_seq_len": 16}}


def _load(path: Path) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    with pytest.MonkeyPatch.context() as offline:
        offline.setenv("HF_HUB_OFFLINE", "1")
        offline.setenv("TRANSFORMERS_OFFLINE", "1")
        loaded = load_model(LoadRequest(spec=str(path), rootdir=ROOT))
        return loaded.new_model().eval(), loaded.adapter, loaded.task


def _batch(task: TaskSpec, *, padded: bool = False, size: int = 2, seed: int = 0) -> dict:
    if task.family == "vision":
        return make_batch(task, size, seed=seed)
    if padded:
        return make_batch(task, size, 8, pad_to=12, target_len=9, seed=seed)
    return make_batch(task, size, 12, target_len=9, seed=seed)


def _all_checks(model: nn.Module, adapter: TaskAdapter, task: TaskSpec) -> list[CheckResult]:
    reader = AttentionReader(model, adapter)
    padded = _batch(task, padded=True)
    return [
        check_attention_normalization(reader, padded),
        check_attention_causality(reader, _batch(task)),
        check_attention_causality(reader, padded),
        check_attention_padding(reader, padded),
        check_attention_health(reader, [_batch(task, size=4)]),
    ]


# --------------------------------------------------------------------------- implied weights


@pytest.mark.parametrize(
    "case",
    ["plain", "causal", "causal-rectangular", "bool-mask", "float-mask", "scale", "gqa"],
)
def test_implied_weights_reproduce_the_sdpa_output(case: str) -> None:
    """weights @ value equals scaled_dot_product_attention's own output for every argument."""
    g = torch.Generator().manual_seed(0)
    kv_heads = 2 if case == "gqa" else 4
    keys = 7 if case in ("causal-rectangular", "bool-mask", "float-mask") else 5
    q = torch.randn(2, 4, 5, 8, generator=g)
    k = torch.randn(2, kv_heads, keys, 8, generator=g)
    v = torch.randn(2, kv_heads, keys, 8, generator=g)
    kwargs: dict[str, Any] = {
        "plain": {},
        "causal": {"is_causal": True},
        "causal-rectangular": {"is_causal": True},
        "bool-mask": {"attn_mask": torch.rand(2, 1, 5, keys, generator=g) > 0.3},
        "float-mask": {"attn_mask": torch.randn(2, 1, 1, keys, generator=g)},
        "scale": {"scale": 0.05},
        "gqa": {"enable_gqa": True},
    }[case]
    if case == "bool-mask":
        kwargs["attn_mask"][..., 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    weights = implied_attention_weights(q, k, **kwargs)
    assert weights.shape == (2, 4, 5, keys)
    values = v.repeat_interleave(4 // kv_heads, dim=1)
    torch.testing.assert_close(weights @ values, expected, atol=1e-5, rtol=1e-5)


def test_a_row_with_every_key_masked_gets_zero_weights_not_nan() -> None:
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    mask[..., 1, :] = False
    weights = implied_attention_weights(q, k, attn_mask=mask)
    assert torch.equal(weights[0, 0, 1], torch.zeros(3))
    torch.testing.assert_close(weights[0, 0, [0, 2]].sum(-1), torch.ones(2))


def test_tolerances_follow_the_dtype() -> None:
    assert zero_tolerance(torch.float32) == torch.finfo(torch.float32).eps
    assert sum_tolerance(torch.float32) == 1e-5
    assert sum_tolerance(torch.bfloat16) == 2 * torch.finfo(torch.bfloat16).eps


# --------------------------------------------------------------------------- reading maps


class RecordingLMAdapter(LMAdapter):
    """Keeps every output it returns, to compare a read with a plain forward."""

    def __init__(self, task: TaskSpec) -> None:
        super().__init__(task)
        self.outputs: list[Any] = []

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        outputs = super().forward(model, batch)
        self.outputs.append(outputs)
        return outputs


def test_intercepted_maps_name_their_module_and_leave_the_output_unchanged() -> None:
    model, _, task = _load(EXAMPLES / "tiny_gpt.py")
    adapter = RecordingLMAdapter(task)
    batch = _batch(task, padded=True)
    capture = AttentionReader(model, adapter).read(batch)
    assert capture.route == "intercepted"
    assert [m.name for m in capture.maps] == [
        "layer 0 (blocks.0.attn)",
        "layer 1 (blocks.1.attn)",
    ]
    assert all(m.weights.shape == (2, 4, 12, 12) for m in capture.maps)
    assert all(m.queries == m.keys == INPUT for m in capture.maps)
    with torch.no_grad():
        plain = adapter.forward(model, batch)
    assert torch.equal(adapter.outputs[0], plain)


def test_seq2seq_maps_are_told_apart_by_their_sides() -> None:
    model, adapter, task = _load(EXAMPLES / "tiny_seq2seq.py")
    capture = AttentionReader(model, adapter).read(_batch(task))
    sides = {(m.queries, m.keys) for m in capture.maps}
    assert sides == {(INPUT, INPUT), (TARGET, TARGET), (TARGET, INPUT)}


class AveragedWeightsModel(nn.Module):
    """Asks its ``nn.MultiheadAttention`` for the default: weights averaged over heads."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 16)

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.emb(input_ids)
        y, averaged = self.attn(x, x, x)
        return {"logits": self.head(y), "averaged": averaged}


def test_multihead_attention_gives_per_head_maps_and_its_caller_what_it_asked_for() -> None:
    task = resolve_task(LM_TASK)
    adapter = RecordingLMAdapter(task)
    model = AveragedWeightsModel().eval()
    capture = AttentionReader(model, adapter).read(make_batch(task, 2, 6))
    assert capture.route == "intercepted"
    (amap,) = capture.maps
    assert amap.name == "layer 0 (attn)" and amap.weights.shape == (2, 2, 6, 6)
    averaged = adapter.outputs[0]["averaged"]
    torch.testing.assert_close(averaged, amap.weights.mean(dim=1))


def test_transformer_encoder_layers_are_read_despite_their_fast_path() -> None:
    model, adapter, task = _load(THIRD_PARTY / "torch_transformer_lm.py")
    with torch.no_grad():  # where PyTorch would take its fused path
        capture = AttentionReader(model, adapter).read(_batch(task, padded=True))
    assert [m.name for m in capture.maps] == [
        "layer 0 (encoder.layers.0.self_attn)",
        "layer 1 (encoder.layers.1.self_attn)",
    ]


class MapsAdapter(LMAdapter):
    """A custom adapter that provides the maps itself."""

    def __init__(self, task: TaskSpec, maps: list[torch.Tensor]) -> None:
        super().__init__(task)
        self.maps = maps

    def attention_maps(self, model: Any, batch: dict[str, Any]) -> list[torch.Tensor] | None:
        return self.maps


class Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 16)

    def forward(self, input_ids: torch.Tensor) -> Any:
        return self.emb(input_ids)


def _adapter_maps(maps: list[torch.Tensor]) -> tuple[AttentionReader, TaskSpec]:
    task = resolve_task(LM_TASK)
    adapter = MapsAdapter(task, maps)
    return AttentionReader(Embedder().eval(), adapter), task


def test_the_adapter_route_comes_first() -> None:
    causal = torch.ones(4, 4).tril()
    reader, task = _adapter_maps([(causal / causal.sum(-1, keepdim=True)).expand(1, 1, 4, 4)])
    capture = reader.read(make_batch(task, 1, 4))
    assert capture.route == "adapter" and capture.maps[0].name == "layer 0"


class ReturnsAttentions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 16)

    def forward(self, input_ids: torch.Tensor) -> dict[str, Any]:
        t = input_ids.shape[1]
        weights = torch.ones(t, t).tril()
        weights = (weights / weights.sum(-1, keepdim=True)).expand(input_ids.shape[0], 1, t, t)
        return {"logits": self.emb(input_ids), "attentions": (weights,)}


def test_maps_in_the_output_are_used() -> None:
    task = resolve_task(LM_TASK)
    reader = AttentionReader(ReturnsAttentions().eval(), get_adapter(task))
    capture = reader.read(make_batch(task, 2, 5))
    assert capture.route == "outputs"
    assert check_attention_causality(reader, make_batch(task, 2, 5)).status is CheckStatus.PASSED


class _Config:
    def __init__(self) -> None:
        self._attn_implementation = "sdpa"


class DriftingEagerModel(nn.Module):
    """Hugging Face-like: its eager attention computes something else than its SDPA path."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.emb = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16)

    def set_attn_implementation(self, name: str) -> None:
        self.config._attn_implementation = name

    def forward(
        self, input_ids: torch.Tensor, attention_mask: Any = None, output_attentions: bool = False
    ) -> dict[str, Any]:
        x = self.emb(input_ids)[:, None]
        y = F.scaled_dot_product_attention(x, x, x, is_causal=True)[:, 0]
        if self.config._attn_implementation == "eager":
            y = y + 1.0
        weights = implied_attention_weights(x, x, is_causal=True)
        return {"logits": self.head(y), "attentions": (weights,) if output_attentions else None}


def test_an_eager_copy_that_disagrees_with_the_model_is_not_used() -> None:
    task = resolve_task(LM_TASK)
    model = DriftingEagerModel().eval()
    capture = AttentionReader(model, get_adapter(task)).read(make_batch(task, 2, 5))
    assert capture.route == "intercepted"
    assert "gives other logits" in capture.notes[0]
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_a_hugging_face_sdpa_model_is_read_through_a_checked_eager_copy() -> None:
    pytest.importorskip("transformers")
    model, adapter, task = _load(THIRD_PARTY / "hf_gpt2.py")
    assert model.config._attn_implementation == "sdpa"
    capture = AttentionReader(model, adapter).read(_batch(task))
    assert capture.route == "eager copy"
    assert capture.notes == ("maps of an eager-attention copy of this sdpa model",)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    "path",
    [EXAMPLES / "simple_cnn.py", ROOT / "fixtures" / "tier2_attribution" / "lstm_lm.py"],
    ids=["cnn", "lstm"],
)
def test_a_model_without_attention_skips_naming_the_routes(path: Path) -> None:
    model, adapter, task = _load(path)
    reader = AttentionReader(model, adapter)
    with pytest.raises(NoAttentionMaps, match="computed no attention"):
        reader.read(_batch(task))
    for result in _all_checks(model, adapter, task):
        assert result.status is CheckStatus.SKIPPED, result
    result = check_attention_normalization(reader, _batch(task))
    for route in ("output_attentions=True", "scaled_dot_product_attention", "MultiheadAttention"):
        assert route in result.message
    assert "attention_maps(model, batch)" in result.message


# --------------------------------------------------------------------------- both ways


@pytest.mark.parametrize(
    "path",
    [
        EXAMPLES / "tiny_gpt.py",
        EXAMPLES / "tiny_encoder_cls.py",
        EXAMPLES / "tiny_seq2seq.py",
        FIXTURES / "nanogpt_sdpa.py",
        FIXTURES / "multihead_lm.py",
        THIRD_PARTY / "torch_transformer_lm.py",
    ],
    ids=lambda path: path.stem,
)
def test_correct_models_fail_no_attention_check(path: Path) -> None:
    results = _all_checks(*_load(path))
    assert not [r for r in results if not r.ok and r.status is not CheckStatus.SKIPPED], results
    assert results[0].status is CheckStatus.PASSED


@pytest.mark.parametrize(
    ("fixture", "failing", "where"),
    [
        ("attention_off_by_one", "test_attention_causality", {"query": 0, "key": 1}),
        ("attention_hidden_leak", "test_attention_causality", {"layer": "layer 1 (blocks.1)"}),
        (
            "attention_padding_leak",
            "test_attention_padding",
            {"layer": "layer 0 (PaddingLeakClassifier)"},
        ),
    ],
)
def test_each_bug_fails_exactly_its_check(fixture: str, failing: str, where: dict) -> None:
    results = _all_checks(*_load(FIXTURES / f"{fixture}.py"))
    failed = {r.check_name for r in results if r.status is CheckStatus.FAILED}
    assert failed == {failing}, results
    result = next(r for r in results if r.check_name == failing)
    assert where.items() <= result.details.items(), result.details


def test_a_leak_hidden_from_the_outputs_is_named_where_it_sits() -> None:
    model, adapter, task = _load(FIXTURES / "attention_hidden_leak.py")
    with torch.no_grad():
        before = adapter.forward(model, make_batch(task, 1, 6, seed=1))[0, :3]
        changed = make_batch(task, 1, 6, seed=1)
        changed["input_ids"][0, 3:] = (changed["input_ids"][0, 3:] + 1) % 64
        after = adapter.forward(model, changed)[0, :3]
    assert torch.equal(before, after)  # the outputs show nothing
    result = check_attention_causality(AttentionReader(model, adapter), _batch(task))
    assert result.status is CheckStatus.FAILED
    assert result.message.startswith("layer 1 (blocks.1), head ")
    assert result.details["leaking_maps"] == ["layer 1 (blocks.1)"]


# --------------------------------------------------------------------------- normalization


def _row_normalized(t: int) -> torch.Tensor:
    causal = torch.ones(t, t).tril()
    return (causal / causal.sum(-1, keepdim=True)).expand(2, 1, t, t).clone()


@pytest.mark.parametrize(
    ("broken", "words"),
    [
        (lambda w: w.softmax(dim=-2), "sums to"),
        (
            lambda w: w.index_put_(
                (torch.tensor(1), torch.tensor(0), torch.tensor(3)), torch.tensor(math.nan)
            ),
            "NaN or Inf",
        ),
        (
            lambda w: w.index_put_(
                (torch.tensor(0), torch.tensor(0), torch.tensor(1)),
                torch.tensor([1.5, -0.5, 0, 0, 0, 0]),
            ),
            "negative weight",
        ),
    ],
    ids=["wrong-dim", "nan", "negative"],
)
def test_a_broken_softmax_fails_normalization(broken: Any, words: str) -> None:
    reader, task = _adapter_maps([broken(_row_normalized(6))])
    result = check_attention_normalization(reader, make_batch(task, 2, 6))
    assert result.status is CheckStatus.FAILED and words in result.message, result.message
    assert result.message.startswith("layer 0, head 0, row of query ")


def test_rows_of_padded_queries_are_not_judged() -> None:
    weights = _row_normalized(6)
    weights[:, :, 4:] = 0.0  # padded queries: nothing to attend to, zeros
    reader, task = _adapter_maps([weights])
    batch = make_batch(task, 2, 4, pad_to=6)
    assert check_attention_normalization(reader, batch).status is CheckStatus.PASSED


# --------------------------------------------------------------------------- health


def test_health_counts_dead_and_one_key_heads_outside_forced_rows() -> None:
    t = 6
    uniform = _row_normalized(t)[:, 0]
    one_key = torch.eye(t).expand(2, t, t)  # each query on itself: forced only in row 0
    mixed = torch.softmax(
        torch.randn(2, t, t).masked_fill(torch.ones(t, t).triu(1).bool(), -math.inf), -1
    )
    reader, task = _adapter_maps([torch.stack([uniform, one_key, mixed], dim=1)])
    batches = [make_batch(task, 2, t)]
    result = check_attention_health(reader, batches)
    assert result.status is CheckStatus.PASSED and result.details["judged"] is False
    assert result.details["dead_heads"] == ["layer 0 head 0"]
    assert result.details["one_key_heads"] == ["layer 0 head 1"]
    heads = result.details["layers"][0]["heads"]
    assert [h["free_rows"] for h in heads] == [2 * (t - 1)] * 3  # row 0 is forced
    assert "--tier2-max-dead-heads" in result.message
    failing = check_attention_health(reader, batches, max_dead_share=0.5)
    assert failing.status is CheckStatus.FAILED and "0.667 exceeds" in failing.message
    passing = check_attention_health(reader, batches, max_dead_share=0.7)
    assert passing.status is CheckStatus.PASSED and passing.details["judged"] is True


# --------------------------------------------------------------------------- Hugging Face

HF_MODELS = {
    "gpt2": THIRD_PARTY / "hf_gpt2.py",
    "llama": FIXTURES / "hf_llama.py",
    "bert": THIRD_PARTY / "hf_bert_cls.py",
    "distilbert": FIXTURES / "hf_distilbert.py",
    "bart": FIXTURES / "hf_bart.py",
    "t5": THIRD_PARTY / "hf_t5.py",
    "vit": THIRD_PARTY / "hf_vit.py",
}
DECODERS = {"gpt2", "llama", "bart", "t5"}


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_hugging_face_models_raise_no_false_alarm(implementation: str) -> None:
    pytest.importorskip("transformers")
    for name, path in HF_MODELS.items():
        model, adapter, task = _load(path)
        model.set_attn_implementation(implementation)
        results = _all_checks(model, adapter, task)
        statuses = {r.check_name: r.status for r in results}
        assert not [r for r in results if r.status in (CheckStatus.FAILED, CheckStatus.ERROR)], (
            name,
            results,
        )
        causal = CheckStatus.PASSED if name in DECODERS else CheckStatus.SKIPPED
        assert statuses["test_attention_causality"] is causal, (name, results)
        padding = CheckStatus.SKIPPED if name == "vit" else CheckStatus.PASSED
        assert statuses["test_attention_padding"] is padding, (name, results)


class NoOutputAttentions(nn.Module):
    """Has a Hugging Face-like config, but its forward takes no ``output_attentions``."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.config._attn_implementation = "eager"
        self.emb = nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(input_ids)[:, None]
        return F.scaled_dot_product_attention(x, x, x, is_causal=True)[:, 0]


def test_a_forward_that_refuses_output_attentions_is_intercepted_instead() -> None:
    task = resolve_task(LM_TASK)
    capture = AttentionReader(NoOutputAttentions().eval(), get_adapter(task)).read(
        make_batch(task, 2, 5)
    )
    assert capture.route == "intercepted"
    assert capture.notes[0].startswith("output_attentions=True was refused")
