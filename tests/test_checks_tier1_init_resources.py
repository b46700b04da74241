"""Parameter initialisation, memory footprint and inference speed checks, both ways.

Correct models (the four examples, tiny Hugging Face GPT-2 / BERT / T5 / ViT, default
``torch.nn`` layers) must pass; ``fixtures/tier1/init_*.py`` each carry one initialisation
problem: NaN and a huge spread fail, a zero-initialised projection warns. The resource checks
must report real measurements and fail only over a budget.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from third_party_models import hf_model
from torch import nn

from pytest_modeltiers.checks.tier1_init import check_parameter_initialization
from pytest_modeltiers.checks.tier1_resources import (
    LiveTensorMemory,
    check_inference_speed,
    check_memory_footprint,
)
from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task
from pytest_modeltiers.models.adapters import TaskAdapter, get_adapter
from pytest_modeltiers.models.batches import make_batch
from pytest_modeltiers.models.loader import LoadedModel, LoadRequest, load_model
from pytest_modeltiers.report import CheckStatus

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"]
VOCAB = 100


def _text_task(name: str) -> TaskSpec:
    return (
        get_builtin_task(name).with_vocab_size(VOCAB).merged({"input_schema": {"max_seq_len": 32}})
    )


@cache
def _loaded(path: str) -> LoadedModel:
    return load_model(LoadRequest(spec=path, rootdir=ROOT))


def example(name: str) -> tuple[nn.Module, TaskAdapter, TaskSpec]:
    loaded = _loaded(str(ROOT / "example_models" / f"{name}.py"))
    return loaded.new_model(), loaded.adapter, loaded.task


def fixture_model(name: str) -> nn.Module:
    return _loaded(str(ROOT / "fixtures" / "tier1" / f"{name}.py")).new_model()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the Hugging Face Hub: models are built from configs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


HF_KINDS = ["gpt2", "bert", "t5", "vit"]


# --------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("name", EXAMPLES)
def test_init_examples_pass_without_warnings(name: str) -> None:
    model, _, _ = example(name)
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.check_name == "test_parameter_initialization" and result.tier == 1
    assert result.details["warnings"] == [] and result.details["extreme_spread"] == []


@pytest.mark.parametrize("kind", HF_KINDS)
def test_init_hugging_face_models_pass_without_warnings(kind: str) -> None:
    model, _, _ = hf_model(kind)
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.PASSED, result.message


@pytest.mark.parametrize(
    "build",
    [
        lambda: nn.Linear(4096, 3),
        lambda: nn.Linear(1, 1),
        lambda: nn.Embedding(50, 512),
        lambda: nn.EmbeddingBag(50, 16),
        lambda: nn.Conv2d(3, 64, 7),
        lambda: nn.ConvTranspose2d(64, 3, 4),
        lambda: nn.Conv1d(1, 1, 1),
        lambda: nn.MultiheadAttention(64, 4),
        lambda: nn.TransformerEncoderLayer(64, 4, batch_first=True),
        lambda: nn.LSTM(1000, 8),
        lambda: nn.GRU(4, 4),
        lambda: nn.Bilinear(300, 300, 4),
        lambda: nn.Sequential(nn.BatchNorm2d(4), nn.LayerNorm(8), nn.GroupNorm(2, 4)),
        lambda: nn.RMSNorm(8),
    ],
    ids=[
        "linear_wide", "linear_1x1", "embedding", "embedding_bag", "conv2d", "conv_transpose",
        "conv1d_1x1", "mha", "encoder_layer", "lstm_wide_input", "gru", "bilinear", "norms",
        "rmsnorm",
    ],
)  # fmt: skip
def test_init_default_torch_layers_pass(build: object) -> None:
    torch.manual_seed(0)
    assert callable(build)
    result = check_parameter_initialization(build())
    assert result.status is CheckStatus.PASSED, result.message


def test_init_norm_weights_zero_biases_and_scalars_are_exempt() -> None:
    model = nn.Module()
    model.norm = nn.LayerNorm(16)  # weights all ones (std 0), bias all zero
    model.fc = nn.Linear(16, 16)
    nn.init.zeros_(model.fc.bias)
    model.scale = nn.Parameter(torch.tensor(0.5))
    model.gate = nn.Parameter(torch.zeros(1))
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["exempt_parameters"] == 5


def test_init_one_element_matrix_has_no_nan_statistics() -> None:
    model = nn.Module()
    model.w = nn.Parameter(torch.full((1, 1), 0.3))
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.PASSED, result.message
    assert "nan" not in json.dumps(result.details).lower()


def test_init_nan_fails_naming_the_parameter() -> None:
    result = check_parameter_initialization(fixture_model("init_nan"))
    assert result.status is CheckStatus.FAILED
    assert "head.weight [2, 32] (64 NaN, 0 Inf of 64)" in result.message
    assert "divides by zero" in result.message
    assert [item["name"] for item in result.details["nonfinite"]] == ["head.weight"]


def test_init_nan_in_a_buffer_fails() -> None:
    model = nn.BatchNorm1d(4)
    model.running_var[1] = float("inf")
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.FAILED
    assert "buffer running_var [4] (0 NaN, 1 Inf of 4)" in result.message


def test_init_huge_spread_fails_naming_the_parameter() -> None:
    result = check_parameter_initialization(fixture_model("init_huge_spread"))
    assert result.status is CheckStatus.FAILED
    assert "proj.weight [32, 32]" in result.message
    assert "> max_std 2" in result.message and "> max_gain 100" in result.message
    assert [item["name"] for item in result.details["extreme_spread"]] == ["proj.weight"]


def test_init_gain_rule_catches_unscaled_wide_layers() -> None:
    layer = nn.Linear(16384, 4)
    nn.init.normal_(layer.weight, std=1.0)  # torch.randn weights, no 1/sqrt(fan_in)
    result = check_parameter_initialization(layer)
    assert result.status is CheckStatus.FAILED
    assert "gain std*sqrt(fan_in=16384)" in result.message
    assert "max_std" not in result.details["extreme_spread"][0]["reasons"][0]


def test_init_hugging_face_conv1d_fan_in_is_read_transposed() -> None:
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(nf=8, nx=16384)  # weight [16384, 8]
    nn.init.normal_(conv.weight, std=1.0)
    result = check_parameter_initialization(conv)
    assert result.status is CheckStatus.FAILED
    assert result.details["extreme_spread"][0]["fan_in"] == 16384


def test_init_zero_matrix_warns_and_can_be_exempted() -> None:
    model = fixture_model("init_zero_matrix")
    result = check_parameter_initialization(model)
    assert result.status is CheckStatus.WARNING
    assert result.ok
    assert "out_proj.weight [32, 64]: all zero" in result.message
    assert [w["name"] for w in result.details["warnings"]] == ["out_proj.weight"]
    exempted = check_parameter_initialization(model, exempt=["*out_proj.weight"])
    assert exempted.status is CheckStatus.PASSED


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        (lambda w: nn.init.uniform_(w, 0.0, 1.0), "share a sign"),
        (lambda w: nn.init.constant_(w, 0.1), "constant 0.1"),
        (lambda w: nn.init.normal_(w, std=1e-5), "shrinks activations"),
        (lambda w: nn.init.normal_(w, std=0.5), "amplifies activations"),
    ],
    ids=["rand_not_randn", "constant", "tiny_gain", "large_gain"],
)
def test_init_suspicious_statistics_warn(init: object, expected: str) -> None:
    layer = nn.Linear(768, 32)
    assert callable(init)
    with torch.no_grad():
        init(layer.weight)
    result = check_parameter_initialization(layer)
    assert result.status is CheckStatus.WARNING, result.message
    assert expected in result.message


def test_init_tiny_embedding_std_warns() -> None:
    emb = nn.Embedding(32, 32)
    nn.init.normal_(emb.weight, std=1e-5)
    result = check_parameter_initialization(emb)
    assert result.status is CheckStatus.WARNING
    assert "nearly constant" in result.message


def test_init_never_changes_the_model() -> None:
    model = fixture_model("init_huge_spread").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_parameter_initialization(model)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- memory


def test_live_tensor_memory_counts_new_storages_once_and_frees_them() -> None:
    x = torch.ones(1000)  # exists before: never counted
    with LiveTensorMemory() as tracker:
        a = x * 2  # 4000 bytes
        view = a.view(10, 100)  # a view: no new storage
        b = a + 1  # 4000 more: peak 8000
        del a, view
        c = b * 3  # a is freed, so live is 8000 again, not 12000
        x.add_(1)  # in place on an outside tensor: not an allocation
    assert tracker.peak_bytes == 8000
    assert tracker.allocated_bytes == 12000
    assert tracker.live_bytes == 8000
    del b, c
    assert tracker.live_bytes == 0


@pytest.mark.parametrize("name", EXAMPLES)
def test_memory_examples_pass_with_real_numbers(name: str) -> None:
    model, adapter, task = example(name)
    result = check_memory_footprint(model, adapter, make_batch(task, 2, 8, target_len=6))
    assert result.status is CheckStatus.PASSED, result.message
    details = result.details
    assert result.check_name == "test_memory_footprint" and result.tier == 1
    assert details["param_bytes"] == sum(p.numel() * 4 for p in model.parameters())
    assert details["buffer_bytes"] == 0
    assert details["peak_activation_bytes"] > 0
    assert details["method"] == "torch_dispatch_live_storages"
    assert "peak activations" in result.message and "MiB" in result.message


@pytest.mark.parametrize("kind", HF_KINDS)
def test_memory_hugging_face_models_pass(kind: str) -> None:
    model, adapter, task = hf_model(kind)
    result = check_memory_footprint(model, adapter, make_batch(task, 2, 8, target_len=6))
    assert result.status is CheckStatus.PASSED, result.message
    assert result.details["peak_activation_bytes"] > 0


@pytest.mark.parametrize("name", ["tiny_gpt", "simple_cnn"])
def test_memory_peak_grows_with_batch_size(name: str) -> None:
    model, adapter, task = example(name)
    peaks = [
        check_memory_footprint(model, adapter, make_batch(task, size, 16)).details[
            "peak_activation_bytes"
        ]
        for size in (1, 4, 16)
    ]
    assert peaks[0] < peaks[1] < peaks[2]
    assert peaks[2] >= 3 * peaks[1]  # activations scale with the batch, not a constant


def test_memory_cnn_peak_is_exact() -> None:
    model, adapter, task = example("simple_cnn")
    result = check_memory_footprint(model, adapter, make_batch(task, 16))
    # conv1 output [16,16,32,32] float32 = 1 MiB, and ReLU's output alongside it: 2 MiB.
    assert result.details["peak_activation_bytes"] == 2 * 2**20


def test_memory_tied_weights_are_counted_once() -> None:
    model = nn.Sequential(nn.Embedding(VOCAB, 16), nn.Linear(16, VOCAB, bias=False))
    model[1].weight = model[0].weight
    task = _text_task("lm_tiny")
    result = check_memory_footprint(model, get_adapter(task), make_batch(task, 1, 4))
    assert result.details["param_bytes"] == VOCAB * 16 * 4


def test_memory_over_budget_fails_with_numbers() -> None:
    model, adapter, task = example("tiny_gpt")
    batch = make_batch(task, 2, 8)
    result = check_memory_footprint(model, adapter, batch, budget_mb=1e-6)
    assert result.status is CheckStatus.FAILED
    assert "memory over budget" in result.message
    assert "budget_mb=1e-06 MiB" in result.message
    assert "input_ids[2,8]" in result.message
    assert result.details["budget_mb"] == 1e-6
    roomy = check_memory_footprint(model, adapter, batch, budget_mb=1024)
    assert roomy.status is CheckStatus.PASSED


def test_memory_forward_exception_is_a_failure() -> None:
    model, adapter, task = example("tiny_gpt")
    result = check_memory_footprint(model, adapter, make_batch(task, 1, 65))
    assert result.status is CheckStatus.FAILED
    assert "ValueError: sequence length 65 exceeds max_seq_len 64" in result.message


def test_memory_restores_mode_and_rejects_bad_budget() -> None:
    model, adapter, task = example("tiny_gpt")
    model.train()
    check_memory_footprint(model, adapter, make_batch(task, 1, 4))
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="budget_mb"):
        check_memory_footprint(model, adapter, make_batch(task, 1, 4), budget_mb=0)


# --------------------------------------------------------------------------- speed


@pytest.mark.parametrize("name", EXAMPLES)
def test_speed_examples_pass_with_statistics(name: str) -> None:
    model, adapter, task = example(name)
    result = check_inference_speed(
        model, adapter, make_batch(task, 2, 8, target_len=6), warmup=1, iterations=5
    )
    assert result.status is CheckStatus.PASSED, result.message
    d = result.details
    assert result.check_name == "test_inference_speed" and result.tier == 1
    assert 0 < d["min_ms"] <= d["median_ms"] <= d["p95_ms"] <= d["max_ms"]
    assert d["throughput_samples_per_s"] == pytest.approx(2 / (d["median_ms"] / 1000))
    assert d["iterations"] == 5 and d["batch_size"] == 2
    assert "median" in result.message and "samples/s" in result.message


def test_speed_hugging_face_model_passes() -> None:
    model, adapter, task = hf_model("gpt2")
    result = check_inference_speed(model, adapter, make_batch(task, 2, 8), iterations=3)
    assert result.status is CheckStatus.PASSED, result.message


def test_speed_over_budget_fails_and_restores_mode() -> None:
    model, adapter, task = example("tiny_encoder_cls")
    model.train()
    result = check_inference_speed(
        model, adapter, make_batch(task, 2, 8), warmup=0, iterations=3, budget_ms=1e-6
    )
    assert result.status is CheckStatus.FAILED
    assert "inference too slow" in result.message
    assert "budget_ms=1e-06 ms" in result.message
    assert all(m.training for m in model.modules())


def test_speed_forward_exception_is_a_failure_and_arguments_are_validated() -> None:
    model, adapter, task = example("tiny_gpt")
    result = check_inference_speed(model, adapter, make_batch(task, 1, 65), iterations=2)
    assert result.status is CheckStatus.FAILED
    assert "ValueError" in result.message and "input_ids[1,65]" in result.message
    batch = make_batch(task, 1, 4)
    with pytest.raises(ValueError, match="iterations"):
        check_inference_speed(model, adapter, batch, iterations=0)
    with pytest.raises(ValueError, match="warmup"):
        check_inference_speed(model, adapter, batch, warmup=-1)
