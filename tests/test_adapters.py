"""Adapters, output normalisation and batch construction, on the example models and on stubs."""

from __future__ import annotations

import importlib.util
import inspect
import io
import re
import sys
from collections import OrderedDict, namedtuple
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task, resolve_task
from pytest_modeltiers.errors import AdapterError, ModelTiersError
from pytest_modeltiers.models.adapters import (
    ADAPTERS,
    CallPlan,
    ClassificationAdapter,
    LMAdapter,
    Seq2SeqAdapter,
    TaskAdapter,
    VisionAdapter,
    check_forward_compatible,
    describe_call,
    get_adapter,
    load_adapter,
    plan_call,
)
from pytest_modeltiers.models.batches import (
    DEFAULT_SEQ_LEN,
    batch_signature,
    make_batch,
    pixel_range,
    shift_right,
)
from pytest_modeltiers.models.outputs import extract_attentions, extract_logits

EXAMPLES = Path(__file__).resolve().parents[1] / "example_models"


def load_example(stem: str) -> ModuleType:
    """Import ``example_models/<stem>.py`` under a private name (they are not a package)."""
    name = f"_modeltiers_example_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def example(stem: str) -> tuple[nn.Module, TaskSpec]:
    module = load_example(stem)
    model = module.build_model() if hasattr(module, "build_model") else module.SimpleCNN().eval()
    return model, resolve_task(module.TASK)


def lm_task(vocab: int = 50, **schema: Any) -> TaskSpec:
    return get_builtin_task("lm_tiny").with_vocab_size(vocab).merged({"input_schema": schema})


def cls_task(vocab: int = 50) -> TaskSpec:
    return get_builtin_task("cls_tiny").with_vocab_size(vocab)


def s2s_task(vocab: int = 50) -> TaskSpec:
    return get_builtin_task("seq2seq_tiny").with_vocab_size(vocab)


# --------------------------------------------------------------------------- example models

EXAMPLE_STEMS = ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"]


@pytest.mark.parametrize("stem", EXAMPLE_STEMS)
def test_example_model_through_its_adapter(stem: str) -> None:
    model, task = example(stem)
    adapter = get_adapter(task)
    check_forward_compatible(model, adapter)
    batch = make_batch(task, 3, seed=1)
    outputs = adapter.forward(model, batch)
    logits = adapter.get_logits(outputs, task, batch=batch)
    expected = {
        "lm": (3, DEFAULT_SEQ_LEN, task.vocab_size),
        "classification": (3, task.num_classes),
        "seq2seq": (3, DEFAULT_SEQ_LEN, task.vocab_size),
        "vision": (3, task.num_classes),
    }[task.family]
    assert tuple(logits.shape) == expected
    assert adapter.predict(outputs, task, batch=batch).shape == expected[:-1]
    loss = adapter.loss(outputs, batch, task)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("stem", EXAMPLE_STEMS)
def test_example_models_are_small_and_deterministic(stem: str) -> None:
    model, task = example(stem)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    adapter = get_adapter(task)
    batch = make_batch(task, 2, seed=3)
    with torch.no_grad():
        first = adapter.get_logits(adapter.forward(model, batch), batch=batch)
        second = adapter.get_logits(adapter.forward(model, batch), batch=batch)
    assert torch.equal(first, second)


def test_tiny_gpt_is_causal_and_batch_independent() -> None:
    model, task = example("tiny_gpt")
    batch = make_batch(task, 2, 12, seed=0)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][:, 8:] = (changed["input_ids"][:, 8:] + 1) % (task.vocab_size or 1)
    adapter = get_adapter(task)
    with torch.no_grad():
        base = adapter.get_logits(adapter.forward(model, batch))
        after = adapter.get_logits(adapter.forward(model, changed))
        alone = adapter.get_logits(adapter.forward(model, {k: v[:1] for k, v in batch.items()}))
    torch.testing.assert_close(base[:, :8], after[:, :8])
    assert not torch.allclose(base[:, 8:], after[:, 8:])
    torch.testing.assert_close(base[:1], alone)


@pytest.mark.parametrize("stem", ["tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq"])
def test_text_examples_ignore_padding(stem: str) -> None:
    model, task = example(stem)
    adapter = get_adapter(task)
    plain = make_batch(task, 2, 10, seed=5)
    padded = make_batch(task, 2, 10, seed=5, pad_to=16)
    padded["input_ids"][:, 10:] = 7  # a pad token that is not the pad id: only the mask says so
    if task.family == "seq2seq":
        padded["labels"], padded["decoder_attention_mask"] = (
            plain["labels"],
            plain["decoder_attention_mask"],
        )
    with torch.no_grad():
        a = adapter.get_logits(adapter.forward(model, plain), batch=plain)
        b = adapter.get_logits(adapter.forward(model, padded), batch=padded)
    if task.family == "lm":
        b = b[:, :10]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- output normalisation


class FakeModelOutput(OrderedDict[str, Any]):
    """Stands in for transformers' ModelOutput, an OrderedDict subclass."""


LogitsTuple = namedtuple("LogitsTuple", ["loss", "logits"])


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: t, id="tensor"),
        pytest.param(lambda t: (t, torch.zeros(())), id="tuple"),
        pytest.param(lambda t: [None, "text", t], id="list-first-tensor"),
        pytest.param(lambda t: {"logits": t, "hidden": torch.ones(1)}, id="dict"),
        pytest.param(lambda t: FakeModelOutput(logits=t, cache=object()), id="model-output"),
        pytest.param(lambda t: LogitsTuple(torch.zeros(()), t), id="namedtuple-logits-field"),
    ],
)
def test_extract_logits_forms(wrap: Any) -> None:
    logits = torch.randn(2, 3)
    assert extract_logits(wrap(logits)) is logits


def test_extract_logits_mapping_without_logits_lists_keys() -> None:
    with pytest.raises(
        AdapterError, match=r"without a 'logits' tensor; keys present: \['a', 'b'\]"
    ):
        extract_logits({"b": torch.ones(1), "a": torch.ones(1)})


def test_extract_logits_unknown_type_names_it() -> None:
    with pytest.raises(AdapterError, match="of type int"):
        extract_logits(3)
    with pytest.raises(AdapterError, match="with no tensor in it"):
        extract_logits(("a", None))


def test_adapter_error_is_a_modeltiers_error() -> None:
    assert issubclass(AdapterError, ModelTiersError)


def test_attention_maps() -> None:
    adapter = LMAdapter(lm_task())
    maps = (torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4))
    assert adapter.get_attention_maps(FakeModelOutput(logits=1, attentions=maps)) == list(maps)
    assert adapter.get_attention_maps(torch.ones(1)) is None
    assert adapter.get_attention_maps({"logits": torch.ones(1)}) is None
    with pytest.raises(AdapterError, match="'attentions' must be a tensor or a sequence"):
        extract_attentions({"attentions": "nope"})
    s2s = Seq2SeqAdapter(s2s_task())
    enc, dec = torch.rand(1, 2, 5, 5), torch.rand(1, 2, 3, 3)
    out = {"encoder_attentions": (enc,), "decoder_attentions": (dec,), "cross_attentions": (enc,)}
    got = s2s.get_attention_maps(out)
    assert got is not None and [m.shape for m in got] == [enc.shape, dec.shape]


# --------------------------------------------------------------------------- classification pooling


class PerTokenClassifier(nn.Module):
    """Returns per-token class logits [B,T,C] and leaves pooling to the adapter."""

    def __init__(self, vocab: int = 50, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.emb(input_ids)


def test_per_token_logits_are_mean_pooled_over_real_tokens_only() -> None:
    torch.manual_seed(0)
    task = cls_task()
    adapter = ClassificationAdapter(task)
    model = PerTokenClassifier()
    batch = make_batch(task, 2, 5, seed=0, pad_to=9)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][:, 5:] = 13
    pooled = adapter.get_logits(adapter.forward(model, batch), batch=batch)
    pooled_other = adapter.get_logits(adapter.forward(model, other), batch=other)
    torch.testing.assert_close(pooled, pooled_other)
    expected = model(batch["input_ids"][:, :5]).mean(dim=1)
    torch.testing.assert_close(pooled, expected)
    assert adapter.predict(adapter.forward(model, batch), batch=batch).shape == (2,)
    assert torch.isfinite(adapter.loss(adapter.forward(model, batch), batch))


def test_per_token_logits_without_batch_is_an_error() -> None:
    adapter = ClassificationAdapter(cls_task())
    with pytest.raises(AdapterError, match=r"call get_logits\(outputs, task, batch=batch\)"):
        adapter.get_logits(torch.zeros(2, 4, 2))


def test_classification_logit_rank_and_label_range_are_checked() -> None:
    adapter = ClassificationAdapter(cls_task())
    with pytest.raises(AdapterError, match=r"\[B,C\] or per-token \[B,T,C\]"):
        adapter.get_logits(torch.zeros(2))
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor([0, 5])}
    with pytest.raises(AdapterError, match=r"outside the model's 2 output logits"):
        adapter.loss(torch.zeros(2, 2), batch)


# --------------------------------------------------------------------------- LM loss


def test_lm_loss_is_shifted_cross_entropy() -> None:
    task = lm_task(vocab=11)
    logits = torch.randn(2, 6, 11)
    batch = make_batch(task, 2, 6, seed=2)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), batch["labels"][:, 1:].reshape(-1))
    torch.testing.assert_close(LMAdapter(task).loss(logits, batch), expected)
    unshifted = task.merged({"additional_config": {"shift_labels": False}})
    expected = F.cross_entropy(logits.reshape(-1, 11), batch["labels"].reshape(-1))
    torch.testing.assert_close(LMAdapter(unshifted).loss(logits, batch), expected)


def test_lm_loss_ignores_padded_positions() -> None:
    task = lm_task(vocab=11)
    adapter = LMAdapter(task)
    logits = torch.randn(2, 8, 11)
    batch = make_batch(task, 2, 5, seed=2, pad_to=8)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["labels"][:, 5:] = 9
    torch.testing.assert_close(adapter.loss(logits, batch), adapter.loss(logits, changed))
    changed["labels"][:, 3] = (changed["labels"][:, 3] + 1) % 11  # a real position counts
    assert not torch.allclose(adapter.loss(logits, batch), adapter.loss(logits, changed))


def test_lm_loss_without_mask_ignores_pad_id() -> None:
    task = lm_task(vocab=11)  # lm_tiny has pad_token_id 0
    logits = torch.randn(1, 4, 11)
    labels = torch.tensor([[3, 4, 0, 0]])
    got = LMAdapter(task).loss(logits, {"input_ids": labels, "labels": labels})
    expected = F.cross_entropy(logits[0, :1], labels[0, 1:2])
    torch.testing.assert_close(got, expected)


def test_lm_loss_errors_are_explained() -> None:
    task = lm_task(vocab=11)
    adapter = LMAdapter(task)
    batch = make_batch(task, 1, 1)
    with pytest.raises(AdapterError, match="no position to score"):
        adapter.loss(torch.randn(1, 1, 11), batch)
    batch = make_batch(task, 1, 4)
    with pytest.raises(AdapterError, match=r"do not cover labels \[1, 4\]"):
        adapter.loss(torch.randn(1, 1, 11), batch)
    with pytest.raises(AdapterError, match=r"expects logits shaped \[B,T,V\]"):
        adapter.loss(torch.randn(1, 11), batch)
    with pytest.raises(AdapterError, match="outside the model's 5 output logits"):
        adapter.loss(torch.randn(1, 4, 5), {**batch, "labels": torch.tensor([[1, 2, 3, 9]])})
    with pytest.raises(AdapterError, match="needs 'labels'"):
        adapter.loss(torch.randn(1, 4, 11), {"input_ids": batch["input_ids"]})


# --------------------------------------------------------------------------- seq2seq


def test_seq2seq_decoder_inputs_are_labels_shifted_right() -> None:
    task = s2s_task().merged({"special_tokens": {"decoder_start_token_id": 3}})
    adapter = Seq2SeqAdapter(task)
    batch = make_batch(task, 2, 6, target_len=5, seed=4)
    snapshot = {k: v.clone() for k, v in batch.items()}
    prepared = adapter.prepare_inputs(batch)
    assert "decoder_input_ids" not in batch  # the raw batch is not mutated
    assert all(torch.equal(batch[k], snapshot[k]) for k in batch)
    dec, labels = prepared["decoder_input_ids"], batch["labels"]
    assert torch.equal(dec, shift_right(labels, 3, task.pad_token_id))
    assert (dec[:, 0] == 3).all()
    assert torch.equal(dec[:, 1:], labels[:, :-1])
    assert torch.equal(adapter.prepare_inputs(prepared)["decoder_input_ids"], dec)  # idempotent


def test_seq2seq_labels_never_leak_into_decoder_inputs() -> None:
    task = s2s_task()
    adapter = Seq2SeqAdapter(task)
    batch = make_batch(task, 2, 6, target_len=5, seed=4)
    for t in range(5):
        changed = {k: v.clone() for k, v in batch.items()}
        changed["labels"][:, t:] = (changed["labels"][:, t:] + 1) % (task.vocab_size or 1)
        before = adapter.prepare_inputs(batch)["decoder_input_ids"]
        after = adapter.prepare_inputs(changed)["decoder_input_ids"]
        assert torch.equal(before[:, : t + 1], after[:, : t + 1]), t


def test_seq2seq_loss_ignores_padded_targets() -> None:
    task = s2s_task(vocab=11)
    adapter = Seq2SeqAdapter(task)
    batch = make_batch(task, 2, 4, target_len=3, target_pad_to=6, seed=1)
    logits = torch.randn(2, 6, 11)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["labels"][:, 3:] = 5
    torch.testing.assert_close(adapter.loss(logits, batch), adapter.loss(logits, changed))
    expected = F.cross_entropy(logits[:, :3].reshape(-1, 11), batch["labels"][:, :3].reshape(-1))
    torch.testing.assert_close(adapter.loss(logits, batch), expected)


def test_shift_right_maps_ignore_index_to_pad() -> None:
    labels = torch.tensor([[5, -100, -100]])
    assert shift_right(labels, 1, 0).tolist() == [[1, 5, 0]]
    with pytest.raises(AdapterError, match="no pad_token_id"):
        shift_right(labels, 1, None)


def test_seq2seq_needs_labels_or_decoder_inputs() -> None:
    adapter = Seq2SeqAdapter(s2s_task())
    with pytest.raises(AdapterError, match="needs 'labels'"):
        adapter.prepare_inputs({"input_ids": torch.zeros(1, 2, dtype=torch.long)})


# --------------------------------------------------------------------------- calling convention


class Recorder(nn.Module):
    """Records how it was called; its forward is replaced per test through subclasses."""

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]

    def __init__(self) -> None:
        super().__init__()
        self.calls = []
        self.out = nn.Linear(1, 1)


class NanoGPTStyle(Recorder):
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(((idx,), {"targets": targets}))
        return torch.zeros(*idx.shape, 50)


class KwargsModel(Recorder):
    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.calls.append(((), {"input_ids": input_ids, **kwargs}))
        return torch.zeros(*input_ids.shape, 50)


class LabelsModel(Recorder):
    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        self.calls.append(((), {"input_ids": input_ids, "labels": labels, "mask": attention_mask}))
        return torch.zeros(*input_ids.shape, 50)


class NeedsMemory(Recorder):
    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return input_ids


def test_first_parameter_with_another_name_gets_the_primary_input() -> None:
    task = lm_task()
    model = NanoGPTStyle()
    batch = make_batch(task, 2, 4)
    LMAdapter(task).forward(model, batch)
    (args, kwargs) = model.calls[0]
    assert torch.equal(args[0], batch["input_ids"])
    assert kwargs == {"targets": None}  # optional and unknown: left out


def test_var_kwargs_receive_the_model_inputs_but_not_labels() -> None:
    task = lm_task()
    model = KwargsModel()
    batch = make_batch(task, 2, 4)
    LMAdapter(task).forward(model, batch)
    assert sorted(model.calls[0][1]) == ["attention_mask", "input_ids"]


def test_labels_are_never_passed() -> None:
    task = lm_task()
    model = LabelsModel()
    batch = make_batch(task, 2, 4)
    LMAdapter(task).forward(model, batch)
    kwargs = model.calls[0][1]
    assert kwargs["labels"] is None
    assert torch.equal(kwargs["mask"], batch["attention_mask"])


def test_missing_required_parameter_is_explained() -> None:
    adapter = LMAdapter(lm_task())
    message = re.escape(
        "NeedsMemory.forward(input_ids: 'torch.Tensor', memory: 'torch.Tensor') -> "
        "'torch.Tensor' requires the parameter 'memory', which the 'lm' adapter cannot supply. "
        "It supplies input_ids, attention_mask by name"
    )
    with pytest.raises(AdapterError, match=message):
        check_forward_compatible(NeedsMemory(), adapter)
    with pytest.raises(AdapterError, match="'memory'"):
        adapter.forward(NeedsMemory(), make_batch(lm_task(), 1, 2))


def test_vision_model_gets_pixels_positionally() -> None:
    model, task = example("simple_cnn")
    adapter = VisionAdapter(task)
    assert adapter.call_plan(model, make_batch(task, 1)) == CallPlan("pixel_values", ())
    assert describe_call(model, adapter) == "SimpleCNN(pixel_values)"


def _sig(fn: Any) -> inspect.Signature:
    return inspect.signature(fn)


KEYS = frozenset({"input_ids", "attention_mask", "labels"})
MODEL_KEYS = ("input_ids", "attention_mask")


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda input_ids, attention_mask=None: 0, CallPlan(None, ("input_ids", "attention_mask"))),
        (lambda x: 0, CallPlan("input_ids", ())),
        (lambda x, attention_mask=None: 0, CallPlan("input_ids", ("attention_mask",))),
        (lambda *args: 0, CallPlan("input_ids", ())),
        (lambda **kw: 0, CallPlan(None, ("input_ids", "attention_mask"))),
        (lambda *args, **kw: 0, CallPlan("input_ids", ("attention_mask",))),
        (lambda input_ids, *, attention_mask: 0, CallPlan(None, ("input_ids", "attention_mask"))),
        (lambda input_ids, /: 0, CallPlan("input_ids", ())),
        (lambda input_ids, labels=None, token_type_ids=None: 0, CallPlan(None, ("input_ids",))),
        (lambda input_ids, extra: 0, "extra"),
        (lambda *, x: 0, "x"),
        (lambda x, y: 0, "y"),
    ],
)
def test_plan_call(fn: Any, expected: CallPlan | str) -> None:
    assert plan_call(_sig(fn), KEYS, "input_ids", MODEL_KEYS) == expected


class StrictSeq2Seq(Recorder):
    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*decoder_input_ids.shape, 50)


def test_seq2seq_load_time_check_counts_on_derived_decoder_inputs() -> None:
    task = s2s_task()
    check_forward_compatible(StrictSeq2Seq(), Seq2SeqAdapter(task))
    with pytest.raises(AdapterError, match="requires the parameter 'decoder_input_ids'"):
        check_forward_compatible(StrictSeq2Seq(), LMAdapter(task))


def test_custom_adapter_supplies_extra_keys() -> None:
    class MemoryAdapter(LMAdapter):
        model_input_keys = ("input_ids", "attention_mask", "memory")

        def prepare_inputs(self, batch: dict[str, Any], task: Any = None) -> dict[str, Any]:
            return {**super().prepare_inputs(batch, task), "memory": torch.zeros(1)}

    adapter = MemoryAdapter(lm_task())
    assert adapter.forward(NeedsMemory(), make_batch(lm_task(), 1, 2)).shape == (1, 2)


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = x.float().unsqueeze(-1).expand(-1, -1, 50)
        return out if attention_mask is None else out * attention_mask.unsqueeze(-1)


def test_call_arguments_are_what_forward_passes() -> None:
    task = lm_task()
    batch = make_batch(task, 2, 3)
    args, kwargs = LMAdapter(task).call_arguments(TwoInputs(), batch)
    assert len(args) == 1 and torch.equal(args[0], batch["input_ids"])
    assert list(kwargs) == ["attention_mask"]


def test_exported_program_is_called_like_the_model() -> None:
    model, task = example("tiny_gpt")
    adapter = get_adapter(task)
    batch = make_batch(task, 2, 6)
    args, kwargs = adapter.call_arguments(model, batch)
    exported = torch.export.export(model, args, kwargs).module()
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.get_logits(adapter.forward(exported, batch)),
            adapter.get_logits(adapter.forward(model, batch)),
        )


class CompiledStandIn(nn.Module):
    """Shaped like torch.compile's OptimizedModule (importing inductor is slow and noisy)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._orig_mod(*args, **kwargs)


def test_compiled_model_is_called_through_its_original_signature() -> None:
    wrapped = CompiledStandIn(TwoInputs())
    adapter = LMAdapter(lm_task())
    assert describe_call(wrapped, adapter) == "CompiledStandIn(input_ids, attention_mask=...)"


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_loaded_torchscript_is_called_through_its_schema() -> None:
    task = lm_task()
    batch = make_batch(task, 2, 3)
    traced = torch.jit.trace(TwoInputs(), (batch["input_ids"], batch["attention_mask"]))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with pytest.raises(ValueError, match="no signature found"):
        inspect.signature(loaded.forward)
    adapter = LMAdapter(task)
    assert describe_call(loaded, adapter) == "RecursiveScriptModule(input_ids, attention_mask=...)"
    # Every loaded TorchScript model has the same class: signatures must not be cached by it.
    other = torch.jit.trace(PerTokenClassifier(), (batch["input_ids"],))
    assert describe_call(other, adapter) == "TopLevelTracedModule(input_ids=...)"
    buffer = io.BytesIO()
    torch.jit.save(other, buffer)
    buffer.seek(0)
    assert describe_call(torch.jit.load(buffer), adapter) == "RecursiveScriptModule(input_ids=...)"
    torch.testing.assert_close(
        adapter.forward(loaded, batch),
        TwoInputs()(**{"x": batch["input_ids"], "attention_mask": batch["attention_mask"]}),
    )


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(
    ("task_name", "cls"),
    [
        ("lm_tiny", LMAdapter),
        ("cls_tiny", ClassificationAdapter),
        ("seq2seq_tiny", Seq2SeqAdapter),
        ("vision_tiny", VisionAdapter),
    ],
)
def test_get_adapter_by_family(task_name: str, cls: type[TaskAdapter]) -> None:
    task = get_builtin_task(task_name)
    adapter = get_adapter(task)
    assert type(adapter) is cls and adapter.task is task
    assert ADAPTERS[cls.name] is cls
    assert type(load_adapter(cls.name, task)) is cls


CUSTOM_ADAPTER = """
from pytest_modeltiers.models.adapters import LMAdapter

class MyAdapter(LMAdapter):
    name = "mine"

class NotAnAdapter:
    pass
"""


def test_load_adapter_from_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_adapters.py").write_text(CUSTOM_ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = lm_task()
    adapter = load_adapter("my_adapters:MyAdapter", task)
    assert type(adapter).__name__ == "MyAdapter" and adapter.task is task
    assert isinstance(adapter, TaskAdapter)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lmm", r"unknown adapter 'lmm'; expected a built-in adapter name \(lm, classification"),
        ("my_adapters:", "unknown adapter"),
        ("no_such_module_xyz:A", "cannot import module 'no_such_module_xyz'"),
        ("my_adapters:Missing", "has no attribute 'Missing'"),
        ("my_adapters:NotAnAdapter", "not a subclass of pytest_modeltiers.models.adapters"),
    ],
)
def test_load_adapter_errors(
    spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_adapters.py").write_text(CUSTOM_ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AdapterError, match=message):
        load_adapter(spec, lm_task())


# --------------------------------------------------------------------------- batches


def test_make_batch_layouts() -> None:
    lm = make_batch(lm_task(vocab=7), 2, 4)
    assert batch_signature(lm) == "input_ids[2,4] attention_mask[2,4] labels[2,4]"
    assert torch.equal(lm["labels"], lm["input_ids"])
    assert lm["input_ids"].dtype == torch.long and lm["attention_mask"].all()
    cls = make_batch(cls_task(), 3, 4)
    assert batch_signature(cls) == "input_ids[3,4] attention_mask[3,4] labels[3]"
    assert ((cls["labels"] >= 0) & (cls["labels"] < 2)).all()
    s2s = make_batch(s2s_task(), 2, 4, target_len=3)
    assert batch_signature(s2s) == (
        "input_ids[2,4] attention_mask[2,4] labels[2,3] decoder_attention_mask[2,3]"
    )
    vision = make_batch(get_builtin_task("vision_tiny"), 2, image_hw=(8, 6))
    assert batch_signature(vision) == "pixel_values[2,3,8,6] labels[2]"
    assert vision["pixel_values"].dtype == torch.float32


def test_make_batch_is_deterministic_and_seeded() -> None:
    task = lm_task()
    a, b, c = make_batch(task, 2, 8, seed=1), make_batch(task, 2, 8, seed=1), make_batch(task, 2, 8)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_make_batch_uses_the_whole_vocabulary() -> None:
    ids = make_batch(lm_task(vocab=5), 8, 64)["input_ids"]
    assert sorted(ids.unique().tolist()) == [0, 1, 2, 3, 4]


def test_make_batch_right_padding() -> None:
    task = lm_task().merged({"special_tokens": {"pad_token_id": 3}})
    batch = make_batch(task, 2, 4, pad_to=7)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0]] * 2
    assert (batch["input_ids"][:, 4:] == 3).all()
    with pytest.raises(AdapterError, match="pad_to=3 is shorter than the sequence length 4"):
        make_batch(task, 2, 4, pad_to=3)


def test_make_batch_without_vocab_explains_the_fix() -> None:
    with pytest.raises(AdapterError, match=r"--task-option vocab_size=N or TASK = \{\"input_sch"):
        make_batch(get_builtin_task("lm_tiny"), 1)


def test_make_batch_defaults_cap_lengths_at_the_task_maximum() -> None:
    assert make_batch(lm_task(max_seq_len=6), 1)["input_ids"].shape == (1, 6)
    assert make_batch(lm_task(), 1)["input_ids"].shape == (1, DEFAULT_SEQ_LEN)
    with pytest.raises(AdapterError, match="batch_size=0"):
        make_batch(lm_task(), 0)


def test_vision_pixels_follow_the_task_normalisation() -> None:
    task = get_builtin_task("vision_tiny")  # mean 0.5, std 0.5: pixels in [-1, 1]
    assert pixel_range(task) == (-1.0, 1.0)
    pixels = make_batch(task, 4)["pixel_values"]
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0 and pixels.min() < -0.9
    raw = task.merged({"preprocessing_config": {"normalize": False}})
    assert pixel_range(raw) == (0.0, 1.0)
    assert pixel_range(task.merged({"preprocessing_config": {"mean": [0.0, 0.5, 0.5]}})) == (
        -1.0,
        2.0,
    )
