"""Attention maps of any model, taken from the forward the model really runs.

PYTEST_DONT_REWRITE

Routes, tried in this order for each batch (``AttentionReader.read``):

1. ``adapter``: the adapter's ``attention_maps(model, batch)``, for a model that none of the
   other routes can read (override it in a ``TaskAdapter`` subclass passed with ``--adapter``).
2. ``outputs``: the maps the model's own output carries (``attentions``, and for seq2seq
   ``encoder_attentions``, ``decoder_attentions``, ``cross_attentions``), read by the adapter's
   ``get_attention_maps``.
3. ``eager copy``: a Hugging Face model called with ``output_attentions=True``. A model that
   runs SDPA or flash attention returns no weights, so a deep copy switched to eager attention
   is called instead, and its logits must match the model's within tier 1's tolerance (else
   the copy is not the model, and the next route is used).
4. ``intercepted``: every call of ``torch.nn.functional.scaled_dot_product_attention`` during a
   plain forward is intercepted (a ``TorchFunctionMode``); the weights the call implies (scale,
   boolean or additive mask, ``is_causal``, grouped-query heads) are computed on the side and
   the call's own output is returned unchanged. Each ``nn.MultiheadAttention`` is asked for its
   per-head weights (``need_weights=True, average_attn_weights=False``) and hands its caller
   what the caller asked for. The mode also turns off PyTorch's fused transformer fast paths,
   which would bypass both.

When no route yields a map, ``NoAttentionMaps`` says which routes were tried and how to add
one. Every map is ``[batch, heads, queries, keys]`` in float32 on the CPU, named after the
module that computed it, with the side (source input or decoder target) of its queries and
keys so that the checks know which mask and which causal rule apply.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.outputs import extract_attentions, extract_logits

__all__ = [
    "EAGER_ATOL",
    "EAGER_RTOL",
    "INPUT",
    "OTHER",
    "ROUTES_HELP",
    "TARGET",
    "AttentionCapture",
    "AttentionMap",
    "AttentionReader",
    "NoAttentionMaps",
    "implied_attention_weights",
]

Batch = dict[str, Any]

#: The tolerance of tier 1's masking checks: an eager copy whose logits differ by more is not
#: the model that was tested.
EAGER_ATOL = 1e-4
EAGER_RTOL = 1e-4
INPUT, TARGET, OTHER = "input", "target", "other"
_SDPA_ARGS = (
    "query",
    "key",
    "value",
    "attn_mask",
    "dropout_p",
    "is_causal",
    "scale",
    "enable_gqa",
)
_MHA_ARGS = (
    "query",
    "key",
    "value",
    "key_padding_mask",
    "need_weights",
    "attn_mask",
    "average_attn_weights",
    "is_causal",
)
_FAST_IMPLEMENTATIONS = ("sdpa", "flash", "flex")
ROUTES_HELP = (
    "tier 2 reads attention from (1) a Hugging Face model's output_attentions=True, (2) "
    "calls of torch.nn.functional.scaled_dot_product_attention, (3) nn.MultiheadAttention "
    "modules, (4) 'attentions' in the model's output mapping, or (5) a custom adapter's "
    "attention_maps(model, batch) returning one [batch, heads, queries, keys] tensor per layer "
    "(pass it with --adapter package.module:Class)"
)


class NoAttentionMaps(Exception):
    """No route gave attention maps for this model; the message says which were tried."""


@dataclass(frozen=True)
class AttentionMap:
    """One attention computation: ``weights[b, h, i, j]`` is query i's weight on key j."""

    name: str
    weights: torch.Tensor
    #: ``input`` (the source tokens), ``target`` (seq2seq decoder tokens) or ``other``.
    queries: str = OTHER
    keys: str = OTHER
    #: The dtype the model computed the weights in (``weights`` itself is float32).
    dtype: torch.dtype = torch.float32

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def is_self_attention(self) -> bool:
        return self.queries == self.keys and self.queries != OTHER


@dataclass(frozen=True)
class AttentionCapture:
    """The maps of one forward and the route that produced them."""

    maps: list[AttentionMap]
    route: str
    notes: tuple[str, ...] = ()


def implied_attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """The softmax weights ``scaled_dot_product_attention`` applies for these arguments.

    Follows PyTorch's reference implementation: top-left causal mask, boolean masks keep
    ``True``, float masks are added to the scores, key heads repeated for grouped-query
    attention. A row whose every key is masked gets zero weights (PyTorch's output for it is
    zero), not NaN. Computed in float32 at least, without gradients.
    """
    with torch.no_grad():
        dtype = torch.promote_types(query.dtype, torch.float32)
        q, k = query.detach().to(dtype), key.detach().to(dtype)
        if q.shape[-3:-2] != k.shape[-3:-2] and q.dim() >= 3 and k.dim() >= 3:
            groups = q.shape[-3] // max(1, k.shape[-3])
            if enable_gqa or groups * k.shape[-3] == q.shape[-3]:
                k = k.repeat_interleave(groups, dim=-3)
        length, keys = q.shape[-2], k.shape[-2]
        factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        scores = torch.matmul(q, k.transpose(-2, -1)) * factor
        if is_causal:
            allowed = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        if attn_mask is not None:
            mask = attn_mask.detach().to(q.device)
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask.to(dtype)
        weights = torch.softmax(scores, dim=-1)
        empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
        return weights.masked_fill(empty, 0.0)


def _as_bhqk(weights: torch.Tensor) -> torch.Tensor:
    """``[batch, heads, queries, keys]``: a map without heads gets one, extra dims fold in."""
    weights = weights.detach()
    if weights.dim() == 3:
        return weights.unsqueeze(1)
    if weights.dim() > 4:
        return weights.reshape(weights.shape[0], -1, *weights.shape[-2:])
    return weights


class _Capture(TorchFunctionMode):
    """Records the weights of every SDPA call and every ``nn.MultiheadAttention`` forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.found: list[tuple[str, torch.Tensor]] = []
        self.stack: list[str] = []
        self.asked: dict[int, list[tuple[bool, bool]]] = {}

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            output = func(*args, **kwargs)
            bound = dict(zip(_SDPA_ARGS, args, strict=False)) | kwargs
            weights = implied_attention_weights(
                bound["query"],
                bound["key"],
                bound.get("attn_mask"),
                bool(bound.get("is_causal", False)),
                bound.get("scale"),
                bool(bound.get("enable_gqa", False)),
            )
            self.found.append((self._where(), _as_bhqk(weights)))
            return output
        return func(*args, **kwargs)

    def _where(self) -> str:
        return self.stack[-1] if self.stack else type(self.model).__name__

    @contextmanager
    def hooks(self) -> Iterator[None]:
        """Module-name tracking for every submodule, per-head weights for each MHA."""
        handles = []
        for name, module in self.model.named_modules():
            label = name or type(self.model).__name__
            handles.append(module.register_forward_pre_hook(self._enter(label)))
            handles.append(module.register_forward_hook(self._leave, always_call=True))
            if isinstance(module, nn.MultiheadAttention):
                handles.append(
                    module.register_forward_pre_hook(self._ask_weights, with_kwargs=True)
                )
                handles.append(
                    module.register_forward_hook(self._take_weights(label), with_kwargs=True)
                )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _enter(self, label: str) -> Any:
        def enter(module: nn.Module, args: Any) -> None:
            self.stack.append(label)

        return enter

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def _ask_weights(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        bound = dict(zip(_MHA_ARGS, args, strict=False)) | kwargs
        asked = (
            bool(bound.get("need_weights", True)),
            bool(bound.get("average_attn_weights", True)),
        )
        self.asked.setdefault(id(module), []).append(asked)
        bound["need_weights"], bound["average_attn_weights"] = True, False
        return (), bound

    def _take_weights(self, label: str) -> Any:
        def take(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
            need, average = self.asked[id(module)].pop()
            attended, weights = output
            if weights is None:
                return output
            batched = weights.dim() == 4
            self.found.append((label, _as_bhqk(weights if batched else weights.unsqueeze(0))))
            if not need:
                return attended, None
            return attended, weights.mean(dim=-3) if average else weights

        return take


def _is_hugging_face(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "_attn_implementation")


def _implementation(model: nn.Module) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def _eager_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that computes attention in eager mode (weights returned)."""
    twin = copy.deepcopy(model)
    switch = getattr(twin, "set_attn_implementation", None)
    if callable(switch):
        switch("eager")
    else:  # transformers releases before set_attn_implementation
        config: Any = twin.config
        config._attn_implementation = "eager"
    return twin


@dataclass
class AttentionReader:
    """Reads attention maps of ``model`` for any batch; the route is chosen per batch, and an
    eager copy (for Hugging Face models on SDPA/flash) is made once."""

    model: nn.Module
    adapter: TaskAdapter
    _eager: nn.Module | None = field(default=None, init=False, repr=False)

    def read(self, batch: Batch) -> AttentionCapture:
        """The maps of one forward of ``batch`` (no gradients); raises ``NoAttentionMaps``."""
        prepared = self.adapter.prepare_inputs(dict(batch))
        lengths = _lengths(self.adapter, prepared)
        notes: list[str] = []
        with torch.no_grad():
            own = self.adapter.attention_maps(self.model, dict(batch))
            if own is not None:
                return self._capture(list(own), "adapter", lengths, notes)
            if _is_hugging_face(self.model):
                capture = self._hugging_face(batch, lengths, notes)
                if capture is not None:
                    return capture
            return self._intercepted(batch, lengths, notes)

    def _capture(
        self,
        tensors: list[torch.Tensor],
        route: str,
        lengths: tuple[int | None, int | None],
        notes: list[str],
        names: list[str] | None = None,
        sides: list[tuple[str, str]] | None = None,
    ) -> AttentionCapture:
        maps = []
        for index, tensor in enumerate(tensors):
            if not isinstance(tensor, torch.Tensor) or tensor.dim() < 3:
                raise NoAttentionMaps(
                    f"the {route} attention map {index} is not a [batch, heads, queries, keys] "
                    f"tensor (got {_describe(tensor)}); {ROUTES_HELP}"
                )
            weights = _as_bhqk(tensor).detach().float().cpu()
            name = names[index] if names else f"layer {index}"
            side = sides[index] if sides else _sides(weights, lengths)
            maps.append(AttentionMap(name, weights, *side, dtype=tensor.dtype))
        return AttentionCapture(maps, route, tuple(notes))

    def _hugging_face(
        self, batch: Batch, lengths: tuple[int | None, int | None], notes: list[str]
    ) -> AttentionCapture | None:
        implementation = _implementation(self.model)
        runner = self.model
        if implementation.startswith(_FAST_IMPLEMENTATIONS):
            if self._eager is None:
                self._eager = _eager_copy(self.model).eval()
            runner = self._eager
        args, kwargs = self.adapter.call_arguments(runner, dict(batch))
        try:
            outputs = runner(*args, **kwargs, output_attentions=True)
        except TypeError as exc:  # a forward without the parameter; the plain one still runs
            notes.append(f"output_attentions=True was refused ({exc})")
            return None
        if runner is not self.model:
            reference = extract_logits(self.adapter.forward(self.model, dict(batch)))
            copied = extract_logits(outputs)
            if copied.shape != reference.shape or not torch.allclose(
                copied.float(), reference.float(), atol=EAGER_ATOL, rtol=EAGER_RTOL
            ):
                difference = (copied.float() - reference.float()).abs().max().item()
                notes.append(
                    f"the eager-attention copy of this {implementation} model gives other logits "
                    f"(max |diff| {difference:.3g} > {EAGER_ATOL:g} + {EAGER_RTOL:g}*|ref|), so "
                    "its maps were not used"
                )
                return None
            notes.append(f"maps of an eager-attention copy of this {implementation} model")
        found = _hugging_face_maps(outputs, lengths)
        if found is None:
            notes.append("output_attentions=True returned no attention maps")
            return None
        names, tensors, sides = found
        return self._capture(tensors, "eager copy", lengths, notes, names, sides)

    def _intercepted(
        self, batch: Batch, lengths: tuple[int | None, int | None], notes: list[str]
    ) -> AttentionCapture:
        mode = _Capture(self.model)
        with ExitStack() as stack:
            stack.enter_context(mode.hooks())
            stack.enter_context(mode)
            outputs = self.adapter.forward(self.model, dict(batch))
        carried = self.adapter.get_attention_maps(outputs)
        if carried:
            return self._capture(list(carried), "outputs", lengths, notes)
        if not mode.found:
            reason = "; ".join([*notes, ROUTES_HELP])
            raise NoAttentionMaps(
                f"{type(self.model).__name__} computed no attention that tier 2 can read: {reason}"
            )
        names = _numbered([where for where, _ in mode.found])
        return self._capture([w for _, w in mode.found], "intercepted", lengths, notes, names)


def _numbered(places: list[str]) -> list[str]:
    """``"layer 3 (blocks.1.attn)"``: the call's position and the module that made it."""
    return [f"layer {index} ({place})" for index, place in enumerate(places)]


def _lengths(adapter: TaskAdapter, prepared: Batch) -> tuple[int | None, int | None]:
    """The source and decoder-target lengths of a prepared batch (None where absent)."""
    source = prepared.get("input_ids")
    target = prepared.get("decoder_input_ids")
    return (
        int(source.shape[1]) if isinstance(source, torch.Tensor) and source.dim() >= 2 else None,
        int(target.shape[1]) if isinstance(target, torch.Tensor) and target.dim() >= 2 else None,
    )


def _side(length: int, lengths: tuple[int | None, int | None]) -> str:
    source, target = lengths
    if length == source and length != target:
        return INPUT
    if length == target and length != source:
        return TARGET
    return OTHER


def _sides(weights: torch.Tensor, lengths: tuple[int | None, int | None]) -> tuple[str, str]:
    return _side(int(weights.shape[-2]), lengths), _side(int(weights.shape[-1]), lengths)


def _hugging_face_maps(
    outputs: Any, lengths: tuple[int | None, int | None]
) -> tuple[list[str], list[torch.Tensor], list[tuple[str, str]]] | None:
    """Named maps of a Hugging Face output: encoder, decoder and cross attention apart."""
    groups = (
        ("attentions", "layer", None),
        ("encoder_attentions", "encoder layer", (INPUT, INPUT)),
        ("decoder_attentions", "decoder layer", (TARGET, TARGET)),
        ("cross_attentions", "cross-attention layer", (TARGET, INPUT)),
    )
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    sides: list[tuple[str, str]] = []
    for key, label, side in groups:
        found = extract_attentions(outputs, key) or []
        for index, tensor in enumerate(found):
            names.append(f"{label} {index}")
            tensors.append(tensor)
            sides.append(side or _sides(_as_bhqk(tensor), lengths))
    return (names, tensors, sides) if tensors else None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return type(value).__name__
