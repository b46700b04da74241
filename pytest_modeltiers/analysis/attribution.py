"""Integrated gradients on the forward the model really runs, and where a gradient path breaks.

PYTEST_DONT_REWRITE

Text models are attributed on the output of their token embedding: every call of an
``nn.Embedding`` whose input is the batch's ``input_ids`` (or a seq2seq batch's
``decoder_input_ids``) gets, through a forward hook, the interpolated embeddings in place of its
own output, and the model is called as usual by the adapter. That is what Captum's
``LayerIntegratedGradients`` does for one layer; doing it per call also covers an embedding
shared by an encoder and a decoder (called twice, with two lengths), which one layer hook
cannot. Captum's ``IntegratedGradients`` integrates. Images are attributed on their pixels.

The baseline is zero (zero embeddings, zero pixels), so every real and padded token differs from
it and a zero attribution means something; or, for text, the padding token's embedding at every
position, the usual reference when only the sum matters. The target is one logit per example:
the predicted class, or at a drawn position the logit of the predicted next token.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.extras import install_command
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.models.running import (
    forward_logits,
    model_device,
    preserved_model,
    to_device,
)

__all__ = [
    "TOKEN_KEYS",
    "Attribution",
    "AttributionSource",
    "AttributionUnavailable",
    "EmbeddingPatch",
    "GradientBreak",
    "NoGradientPath",
    "Targets",
    "attribution_sources",
    "embedding_values",
    "integrated_gradients",
    "integrated_gradients_class",
    "locate_gradient_break",
    "pick_targets",
    "relative_errors",
    "select_targets",
]

Batch = dict[str, Any]
#: Batch keys holding token ids whose embeddings are attributed, encoder side first.
TOKEN_KEYS = ("input_ids", "decoder_input_ids")
#: Rows of interpolated inputs per forward (Captum's ``internal_batch_size``).
ROWS_PER_FORWARD = 256


class AttributionUnavailable(ModelTiersError):
    """Attribution does not apply to this model; the message says why and what would make it."""


@dataclass(frozen=True)
class AttributionSource:
    """One tensor that is attributed: a call of a token embedding, or the batch's pixels."""

    key: str
    #: The embedding module and which of its calls in one forward (None for pixels).
    module: nn.Module | None = field(default=None, compare=False)
    call: int = 0
    name: str = ""

    def describe(self) -> str:
        if self.module is None:
            return self.key
        return f"{self.key} through `{self.name or 'embedding'}` (call {self.call + 1})"


@dataclass(frozen=True)
class Targets:
    """One logit per example: ``logits[b, positions[b], indices[b]]`` (no position for [B,C])."""

    indices: torch.Tensor
    positions: torch.Tensor | None = None
    #: The sequence the positions index: ``input_ids`` (LM) or ``decoder_input_ids`` (seq2seq).
    key: str | None = None

    def describe(self, row: int) -> str:
        index = int(self.indices[row])
        if self.positions is None:
            return f"class {index}"
        return f"the logit of token {index} at position {int(self.positions[row])}"


@dataclass
class Attribution:
    """Integrated gradients for a batch: per source ``[B, ...]`` attributions and the ends."""

    sources: list[AttributionSource]
    values: list[torch.Tensor]
    at_input: torch.Tensor
    at_baseline: torch.Tensor
    n_steps: int

    @property
    def totals(self) -> torch.Tensor:
        """Each example's sum of attributions (float64)."""
        total = torch.zeros(self.at_input.shape[0], dtype=torch.float64)
        for value in self.values:
            total += value.detach().double().flatten(1).sum(1).cpu()
        return total

    @property
    def difference(self) -> torch.Tensor:
        """``f(input) - f(baseline)`` per example (float64)."""
        return (self.at_input.double() - self.at_baseline.double()).cpu()

    def per_token(self, key: str) -> torch.Tensor | None:
        """``[B, T]``: the largest absolute attribution over the embedding dimensions of each
        token of ``key``, summed over the embedding's calls; None when ``key`` is not attributed."""
        found = None
        for source, value in zip(self.sources, self.values, strict=True):
            if source.key != key or source.module is None:
                continue
            magnitude = value.detach().abs().amax(dim=-1).double().cpu()
            found = magnitude if found is None else found + magnitude
        return found


def integrated_gradients_class() -> Any:
    """Captum's ``IntegratedGradients``, imported only when tier 2 runs."""
    try:
        from captum.attr import IntegratedGradients
    except ImportError as exc:
        raise ModelTiersError(
            f"tier 2's attribution tests need Captum, which is not installed ({exc}); install "
            f"the [analysis] extra with {install_command(['analysis'])}"
        ) from exc
    return IntegratedGradients


# --------------------------------------------------------------------------- finding the inputs


def _embedding_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Every ``nn.Embedding`` of the model, and ``get_input_embeddings()`` when it has one."""
    found: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            found.setdefault(module, name)
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        with contextlib.suppress(Exception):  # not every model implements it
            module = getter()
            if isinstance(module, nn.Module):
                names = {id(m): n for n, m in model.named_modules()}
                found.setdefault(module, names.get(id(module), "input embeddings"))
    return found


def attribution_sources(
    model: nn.Module, adapter: TaskAdapter, batch: Batch
) -> list[AttributionSource]:
    """What integrated gradients attribute for this model: its pixels, or every call of an
    embedding module whose input is the batch's token ids.

    Raises ``AttributionUnavailable`` for a text model whose token ids reach no embedding
    module as they are (an embedding done by hand, a remapped id).
    """
    if adapter.task.family == "vision":
        return [AttributionSource("pixel_values")]
    prepared = adapter.prepare_inputs(dict(batch))
    tokens = {k: prepared[k] for k in TOKEN_KEYS if isinstance(prepared.get(k), torch.Tensor)}
    modules = _embedding_modules(model)
    calls: list[tuple[nn.Module, int, torch.Tensor]] = []
    counts: dict[int, int] = {}

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        index = counts.get(id(module), 0)
        counts[id(module)] = index + 1
        if args and isinstance(args[0], torch.Tensor):
            calls.append((module, index, args[0]))

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        with preserved_model(model, training=False), torch.no_grad():
            adapter.forward(model, prepared)
    finally:
        for handle in handles:
            handle.remove()
    sources = []
    for module, index, ids in calls:
        for key, expected in tokens.items():
            if ids.shape == expected.shape and torch.equal(ids.to(expected.device), expected):
                sources.append(AttributionSource(key, module, index, modules.get(module, "")))
                break
    if not any(source.key == "input_ids" for source in sources):
        raise AttributionUnavailable(
            f"no nn.Embedding of {type(model).__name__} is called with the batch's input_ids as "
            f"they are ({len(modules)} embedding module(s) found), so there is no input "
            "embedding to attribute. Embed the token ids with an nn.Embedding module (or expose "
            "it with get_input_embeddings())."
        )
    return sources


# --------------------------------------------------------------------------- targets


def select_targets(
    adapter: TaskAdapter,
    logits: torch.Tensor,
    batch: Batch,
    generator: torch.Generator,
    *,
    need_later: bool = False,
) -> Targets:
    """The predicted class per example, or for sequence logits the predicted token's logit at a
    real position drawn with ``generator`` (one with a later position when ``need_later``)."""
    detached = logits.detach()
    if detached.dim() == 2:
        return Targets(detached.argmax(dim=-1).cpu())
    key = "decoder_input_ids" if adapter.task.family == "seq2seq" else "input_ids"
    mask_key = "decoder_attention_mask" if key == "decoder_input_ids" else "attention_mask"
    rows, length = int(detached.shape[0]), int(detached.shape[1])
    mask = batch.get(mask_key)
    real = (
        mask.detach().cpu().bool()
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) == (rows, length)
        else torch.ones(rows, length, dtype=torch.bool)
    )
    positions = []
    for row in range(rows):
        allowed = real[row].nonzero().flatten()
        if need_later:
            allowed = allowed[allowed < length - 1]
        if allowed.numel() == 0:
            allowed = torch.zeros(1, dtype=torch.long)
        draw = int(torch.randint(0, int(allowed.numel()), (1,), generator=generator))
        positions.append(int(allowed[draw]))
    at = torch.tensor(positions, dtype=torch.long)
    indices = detached.cpu()[torch.arange(rows), at].argmax(dim=-1)
    return Targets(indices, at, key)


def pick_targets(
    logits: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor | None, indices: torch.Tensor
) -> torch.Tensor:
    """``logits[rows, positions, indices]`` (or ``logits[rows, indices]``): one logit per row."""
    if positions is None:
        return logits[rows, indices]
    return logits[rows, positions, indices]


# --------------------------------------------------------------------------- patched forward


class EmbeddingPatch:
    """Forward hooks that hand chosen calls of embedding modules a given tensor as their output.

    ``values`` maps a source to the tensor its call returns in the next forward; the call
    counters restart with ``reset()`` before each forward.
    """

    def __init__(self, sources: Sequence[AttributionSource]) -> None:
        self.sources = [s for s in sources if s.module is not None]
        self.values: dict[tuple[int, int], torch.Tensor] = {}
        self._counts: dict[int, int] = {}

    def set(self, tensors: Sequence[torch.Tensor]) -> None:
        self._counts = {}
        self.values = {
            (id(s.module), s.call): t for s, t in zip(self.sources, tensors, strict=True)
        }

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        index = self._counts.get(id(module), 0)
        self._counts[id(module)] = index + 1
        replacement = self.values.get((id(module), index))
        if replacement is None:
            return None
        if not isinstance(output, torch.Tensor) or output.shape != replacement.shape:
            shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise AttributionUnavailable(
                f"embedding call {index + 1} of {type(module).__name__} returned {shape} where "
                f"{list(replacement.shape)} was expected: the model embeds a different number "
                "of tokens from one forward to the next, so its embeddings cannot be replaced."
            )
        return replacement

    @contextlib.contextmanager
    def installed(self) -> Iterator[EmbeddingPatch]:
        modules = {id(s.module): s.module for s in self.sources}
        handles = [m.register_forward_hook(self._hook) for m in modules.values() if m is not None]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def embedding_values(
    model: nn.Module, adapter: TaskAdapter, batch: Batch, sources: Sequence[AttributionSource]
) -> list[torch.Tensor]:
    """The outputs of the source calls in a plain forward (the input end of the path)."""
    captured: dict[tuple[int, int], torch.Tensor] = {}
    counts: dict[int, int] = {}
    wanted = {(id(s.module), s.call) for s in sources}

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        index = counts.get(id(module), 0)
        counts[id(module)] = index + 1
        if (id(module), index) in wanted and isinstance(output, torch.Tensor):
            captured[(id(module), index)] = output.detach().clone()

    modules = {id(s.module): s.module for s in sources if s.module is not None}
    handles = [m.register_forward_hook(record) for m in modules.values() if m is not None]
    try:
        with torch.no_grad():
            adapter.forward(model, dict(batch))
    finally:
        for handle in handles:
            handle.remove()
    return [captured[(id(s.module), s.call)] for s in sources]


@dataclass
class _Forward:
    """The function Captum integrates: inputs in, one target logit per row out."""

    model: nn.Module
    adapter: TaskAdapter
    sources: list[AttributionSource]
    keys: list[str]
    patch: EmbeddingPatch
    has_positions: bool

    def __call__(self, *args: Any) -> torch.Tensor:
        count = len(self.sources)
        attributed, rest = args[:count], args[count:]
        batch = dict(zip(self.keys, rest[: len(self.keys)], strict=True))
        positions, indices = rest[len(self.keys)], rest[len(self.keys) + 1]
        embedded = []
        for source, tensor in zip(self.sources, attributed, strict=True):
            if source.module is None:
                batch[source.key] = tensor
            else:
                embedded.append(tensor)
        self.patch.set(embedded)
        logits = forward_logits(self.model, self.adapter, batch)
        rows = torch.arange(logits.shape[0], device=logits.device)
        return pick_targets(
            logits, rows, positions if self.has_positions else None, indices
        ).float()


@contextlib.contextmanager
def _attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on, model state restored; cuDNN off (its RNN backward needs train
    mode)."""
    with (
        preserved_model(model, training=False),
        torch.enable_grad(),
        torch.backends.cudnn.flags(enabled=False),
    ):
        yield


class NoGradientPath(ModelTiersError):
    """The target logit gets no gradient from some attributed input (``sources``)."""

    def __init__(self, sources: Sequence[AttributionSource]) -> None:
        names = ", ".join(source.describe() for source in sources)
        super().__init__(f"no autograd path from {names} to the target logit")
        self.sources = list(sources)


def _probe_path(
    forward: _Forward,
    inputs: Sequence[torch.Tensor],
    extra: tuple[Any, ...],
    sources: Sequence[AttributionSource],
) -> torch.Tensor:
    """``f(input)``, after making sure every attributed input has an autograd path to it
    (Captum stops with an autograd error otherwise); ``NoGradientPath`` names those without."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    output = forward(*leaves, *extra)
    if not output.requires_grad:
        raise NoGradientPath(sources)
    grads = torch.autograd.grad(output.sum(), leaves, allow_unused=True)
    unreached = [s for s, g in zip(sources, grads, strict=True) if g is None]
    if unreached:
        raise NoGradientPath(unreached)
    return output.detach()


def integrated_gradients(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    targets: Targets,
    *,
    n_steps: int,
    sources: Sequence[AttributionSource] | None = None,
    baseline: str = "zero",
    rows_per_forward: int = ROWS_PER_FORWARD,
) -> Attribution:
    """Integrated gradients of each example's target logit from a baseline to the input
    (Gauss-Legendre, ``n_steps`` points), with ``f(input)`` and ``f(baseline)``.

    ``baseline="zero"``: zero embeddings (or pixels), which every token differs from.
    ``baseline="pad"``: for text, the embedding of the padding token (the task's
    ``pad_token_id``, else 0) at every position, the usual reference for text; it keeps the path
    away from a zero vector, where an RMS norm without a bias (T5) has a near-singular
    derivative that no quadrature resolves. Images always use zero pixels.
    """
    if baseline not in ("zero", "pad"):
        raise ValueError(f"baseline must be 'zero' or 'pad', got {baseline!r}")
    integrated_gradients_cls = integrated_gradients_class()
    device = model_device(model)
    prepared = to_device(adapter.prepare_inputs(dict(batch)), device)
    if sources is None:
        sources = attribution_sources(model, adapter, prepared)
    sources = list(sources)
    keys = [k for k, v in prepared.items() if isinstance(v, torch.Tensor)]
    positions = targets.positions if targets.positions is not None else targets.indices
    target_args = (positions.to(device), targets.indices.to(device))
    with _attribution_mode(model):
        embedded = embedding_values(model, adapter, prepared, [s for s in sources if s.module])
        inputs: list[torch.Tensor] = []
        for source in sources:
            if source.module is None:
                inputs.append(prepared[source.key].detach().float())
            else:
                inputs.append(embedded.pop(0))
        patch = EmbeddingPatch(sources)
        forward = _Forward(model, adapter, sources, keys, patch, targets.positions is not None)
        extra = (*(prepared[k] for k in keys), *target_args)
        if baseline == "pad" and any(s.module is not None for s in sources):
            pad = int(adapter.task.pad_token_id or 0)
            padded = {
                k: torch.full_like(v, pad) if k in TOKEN_KEYS else v for k, v in prepared.items()
            }
            embedded_pad = embedding_values(
                model, adapter, padded, [s for s in sources if s.module]
            )
            baselines = tuple(
                torch.zeros_like(t) if s.module is None else embedded_pad.pop(0)
                for s, t in zip(sources, inputs, strict=True)
            )
        else:
            baselines = tuple(torch.zeros_like(t) for t in inputs)
        with patch.installed():
            at_input = _probe_path(forward, inputs, extra, sources)
            at_baseline = forward(*baselines, *extra).detach()
            rows = int(inputs[0].shape[0])
            values = integrated_gradients_cls(forward).attribute(
                tuple(inputs),
                baselines=baselines,
                additional_forward_args=extra,
                n_steps=n_steps,
                method="gausslegendre",
                internal_batch_size=max(rows, rows_per_forward),
            )
    return Attribution(
        sources, [v.detach() for v in values], at_input.cpu(), at_baseline.cpu(), n_steps
    )


# --------------------------------------------------------------------------- broken paths


@dataclass(frozen=True)
class GradientBreak:
    """Where the gradient from the target stops on its way back to the attributed input."""

    #: The module inside whose forward the path breaks (``""`` is the model itself).
    layer: str
    layer_class: str
    #: The last module whose output still depends on the input but gets no usable gradient.
    after: str
    after_class: str
    #: ``"cut"``: nothing downstream of ``after`` reaches the target (``.detach()``,
    #: ``no_grad``, argmax, an integer cast); ``"zero"``: a gradient arrives, but it is zero
    #: (rounding, floor, sign, a step function).
    kind: str

    def describe(self, model_class: str) -> str:
        where = (
            f"in {model_class}.forward (the model's own forward)"
            if not self.layer
            else f"in `{self.layer}` ({self.layer_class}.forward)"
        )
        after = f"`{self.after}` ({self.after_class})" if self.after else "the input embedding"
        if self.kind == "zero":
            return (
                f"the gradient path breaks {where}, after {after}: the output of {after} gets "
                "a zero gradient, so something between it and the output has a zero derivative "
                "(torch.round, floor, sign, a comparison, a step function)"
            )
        return (
            f"the gradient path breaks {where}, after {after}: nothing computed from the output "
            "of that layer reaches the target through autograd (a .detach(), torch.no_grad(), "
            "argmax, or a cast to an integer dtype)"
        )


@dataclass
class _Call:
    name: str
    module: nn.Module
    outputs: list[torch.Tensor]
    inputs: list[torch.Tensor] = field(default_factory=list)
    fed: bool = False
    fed_input: bool = False
    reaches: bool = False
    gradient: str = "none"


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """Floating tensors in a module's output (a tensor, tuple, list, mapping, ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if depth > 3:
        return []
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item, depth + 1)]
    return []


class _Reachability:
    """Whether an autograd node's graph reaches one of the leaves (memoised, iterative)."""

    def __init__(self, leaves: Sequence[torch.Tensor]) -> None:
        self.leaves = {id(leaf) for leaf in leaves}
        self.memo: dict[Any, bool] = {}

    def tensor(self, tensor: torch.Tensor) -> bool:
        if id(tensor) in self.leaves:
            return True
        if tensor.grad_fn is None:
            return False
        return self.node(tensor.grad_fn)

    def node(self, root: Any) -> bool:
        stack = [root]
        while stack:
            node = stack[-1]
            if node in self.memo:
                stack.pop()
                continue
            variable = getattr(node, "variable", None)
            if variable is not None:
                self.memo[node] = id(variable) in self.leaves
                stack.pop()
                continue
            pending = [n for n, _ in node.next_functions if n is not None and n not in self.memo]
            if pending:
                stack.extend(pending)
                continue
            self.memo[node] = any(
                self.memo.get(n, False) for n, _ in node.next_functions if n is not None
            )
            stack.pop()
        return self.memo[root]


def locate_gradient_break(
    model: nn.Module,
    adapter: TaskAdapter,
    batch: Batch,
    targets: Targets,
    sources: Sequence[AttributionSource],
) -> GradientBreak | None:
    """The layer where the target's gradient stops on its way back to the input, or None.

    One forward at the input with the attributed tensors as leaves that require grad and every
    module's output recorded, then one backward. A module output is *fed* when its autograd
    graph reaches a leaf, and *reaches* the target when its gradient is non-zero. The break is
    after the last fed module that the target's gradient does not reach: inside the innermost
    module around it whose output is still fed and reached (a zero derivative), else in the
    first later module that takes a fed input and returns nothing fed (a cut), else in its
    parent's forward.
    """
    device = model_device(model)
    prepared = to_device(adapter.prepare_inputs(dict(batch)), device)
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[_Call] = []

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        calls.append(_Call(names.get(id(module), ""), module, _tensors(output), _tensors(args)))

    with _attribution_mode(model):
        embedded = embedding_values(model, adapter, prepared, [s for s in sources if s.module])
        leaves = [t.detach().clone().requires_grad_(True) for t in embedded]
        pixels = [s for s in sources if s.module is None]
        for source in pixels:
            leaf = prepared[source.key].detach().float().clone().requires_grad_(True)
            prepared[source.key] = leaf
            leaves.append(leaf)
        patch = EmbeddingPatch(sources)
        patch.set(leaves[: len(patch.sources)])
        with patch.installed():
            handles = [m.register_forward_hook(record) for _, m in model.named_modules()]
            try:
                logits = forward_logits(model, adapter, prepared)
            finally:
                for handle in handles:
                    handle.remove()
        rows = torch.arange(logits.shape[0], device=logits.device)
        positions = None if targets.positions is None else targets.positions.to(logits.device)
        target = pick_targets(logits, rows, positions, targets.indices.to(logits.device)).sum()
        if not target.requires_grad:
            watched: list[torch.Tensor] = []
            grads: Sequence[torch.Tensor | None] = []
        else:
            watched = [t for call in calls for t in call.outputs if t.requires_grad]
            grads = torch.autograd.grad(target, [*watched, *leaves], allow_unused=True)
    _classify(calls, watched, grads, leaves)
    return _find_break(type(model).__name__, calls)


def _classify(
    calls: list[_Call],
    watched: list[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    leaves: Sequence[torch.Tensor],
) -> None:
    """Mark each call fed (its output or input depends on a leaf) and reached (a non-zero
    gradient arrives at its output), or how its gradient is missing."""
    by_id = {id(t): g for t, g in zip(watched, grads, strict=False)}
    reach = _Reachability(leaves)
    for call in calls:
        call.fed = any(t.requires_grad and reach.tensor(t) for t in call.outputs)
        call.fed_input = any(t.requires_grad and reach.tensor(t) for t in call.inputs)
        states = []
        for t in call.outputs:
            g = by_id.get(id(t))
            if g is None:
                states.append("none")
            else:
                states.append("alive" if bool(g.ne(0).any()) else "zero")
        call.reaches = "alive" in states
        call.gradient = "alive" if call.reaches else ("zero" if "zero" in states else "none")


def _find_break(model_class: str, calls: list[_Call]) -> GradientBreak | None:
    """The break after the last fed call the gradient does not reach; None when every fed
    call is reached (the path is whole)."""
    top = calls[-1] if calls else None
    dead = [i for i, call in enumerate(calls) if call.fed and not call.reaches and call is not top]
    if not dead:
        return None
    last = calls[dead[-1]]
    layer: _Call | None = None
    for call in calls[dead[-1] + 1 :]:
        if call.fed and call.reaches and _contains(call.name, last.name):
            layer = call
            break
    kind = "zero" if layer is not None and last.gradient == "zero" else "cut"
    if layer is None:  # the module that takes a fed input and returns nothing fed cuts the path
        layer = next(
            (c for c in calls[dead[-1] + 1 :] if c.fed_input and not c.fed and c is not top), None
        )
    if layer is None:
        parent = last.name.rpartition(".")[0] if "." in last.name else ""
        called = {call.name: call for call in calls}
        while parent and parent not in called:
            parent = parent.rpartition(".")[0] if "." in parent else ""
        layer = called.get(parent, top)
    if layer is None:
        return None
    return GradientBreak(
        layer=layer.name,
        layer_class=type(layer.module).__name__ if layer.name else model_class,
        after=last.name,
        after_class=type(last.module).__name__,
        kind=kind,
    )


def _contains(outer: str, inner: str) -> bool:
    return outer == "" or inner.startswith(outer + ".")


def relative_errors(attribution: Attribution) -> torch.Tensor:
    """``|sum(attributions) - (f(x) - f(b))|`` over ``|f(x) - f(b)|`` per example."""
    difference = attribution.difference
    scale = difference.abs().clamp(min=_floor(attribution))
    return (attribution.totals - difference).abs() / scale


def _floor(attribution: Attribution) -> float:
    """The smallest scale a relative error is taken against: float32 rounding of the logits."""
    size = float(
        torch.cat([attribution.at_input.double(), attribution.at_baseline.double()]).abs().max()
    )
    return max(1e-6, 1e-5 * size) if math.isfinite(size) else 1e-6
