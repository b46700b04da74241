"""Task adapters: the one way the package calls a model, scores it and reads its outputs.

PYTEST_DONT_REWRITE

Every check, the training loop and the exporters go through a ``TaskAdapter``, so a model only
has to be understood in one place. There is one adapter per task family (``lm``,
``classification``, ``seq2seq``, ``vision``), all with the same methods.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from pytest_modeltiers.errors import AdapterError
from pytest_modeltiers.models.batches import shift_right
from pytest_modeltiers.models.outputs import extract_attentions, extract_logits

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec

__all__ = [
    "ADAPTERS",
    "CallPlan",
    "ClassificationAdapter",
    "LMAdapter",
    "Seq2SeqAdapter",
    "TaskAdapter",
    "VisionAdapter",
    "check_forward_compatible",
    "describe_call",
    "get_adapter",
    "load_adapter",
    "plan_call",
]

Batch = dict[str, Any]
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- calling convention


@dataclass(frozen=True)
class CallPlan:
    """How to call one forward: the key passed positionally, and the keys passed by keyword."""

    positional: str | None
    keywords: tuple[str, ...]


def forward_signature(model: Any) -> inspect.Signature:
    """``forward``'s signature without ``self``; TorchScript methods are read from their schema."""
    __tracebackhide__ = True
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: read the real forward
    forward = getattr(model, "forward", model)
    try:
        return inspect.signature(forward)
    except (TypeError, ValueError) as exc:
        schema = getattr(forward, "schema", None)
        if schema is None:
            raise AdapterError(
                f"cannot read the signature of {type(model).__name__}.forward ({exc}); the "
                "adapter needs parameter names to call the model. Wrap it in an nn.Module whose "
                "forward has named parameters."
            ) from exc
    params = [
        inspect.Parameter(
            arg.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None if arg.has_default_value() else inspect.Parameter.empty,
        )
        for arg in list(schema.arguments)[1:]  # the first argument is self
    ]
    return inspect.Signature(params)


def plan_call(
    signature: inspect.Signature,
    batch_keys: frozenset[str],
    primary: str,
    model_input_keys: tuple[str, ...],
) -> CallPlan | str:
    """Match ``signature`` against the batch's keys; return the plan, or the unmet parameter.

    Pure and cheap, so the calling convention can be tested without models and cached per
    (model class, batch keys).
    """
    passable = batch_keys - {"labels"}
    params = list(signature.parameters.values())
    positional: str | None = None
    keywords: list[str] = []
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for index, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            keywords.extend(
                key for key in model_input_keys if key in passable and key not in keywords
            )
            continue
        if param.name in passable and param.kind is not inspect.Parameter.VAR_POSITIONAL:
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                if index == 0 and param.name == primary:
                    positional = param.name
                    continue
                return param.name
            keywords.append(param.name)
            continue
        first = index == 0 and (
            param.kind in by_position or param.kind is inspect.Parameter.VAR_POSITIONAL
        )
        if first and primary in passable:
            positional = primary
            continue
        required = param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required:
            return param.name
    if positional is not None and positional in keywords:
        keywords.remove(positional)
    return CallPlan(positional, tuple(keywords))


_SIGNATURES: weakref.WeakKeyDictionary[type, inspect.Signature] = weakref.WeakKeyDictionary()


def _cached_signature(model: Any) -> inspect.Signature:
    """The forward signature, cached per class where the class alone decides it.

    Not cached: an instance with its own ``forward``, a ``torch.compile`` wrapper, and classes
    whose ``forward`` is not a plain function (TorchScript's ``RecursiveScriptModule`` is one
    class for every scripted model, each with its own signature).
    """
    cls = type(model)
    cacheable = (
        inspect.isfunction(inspect.getattr_static(cls, "forward", None))
        and "forward" not in getattr(model, "__dict__", {})
        and not hasattr(model, "_orig_mod")
    )
    if cacheable and cls in _SIGNATURES:
        return _SIGNATURES[cls]
    signature = forward_signature(model)
    if cacheable:
        # A class that cannot be weakly referenced is simply not cached.
        with contextlib.suppress(TypeError):
            _SIGNATURES[cls] = signature
    return signature


# --------------------------------------------------------------------------- base class


class TaskAdapter:
    """Base class: subclass it and override what differs (``--adapter package.module:Class``).

    ``primary_input`` is the batch key given to a nameless first ``forward`` parameter;
    ``model_input_keys`` are the batch keys a model may receive (through ``**kwargs`` too).
    The ``task`` argument of each method defaults to ``self.task``.
    """

    name: ClassVar[str] = "base"
    primary_input: ClassVar[str] = "input_ids"
    model_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    #: Keys of a raw batch for this family, used to check a model's forward at load time.
    batch_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "labels")

    def __init__(self, task: TaskSpec) -> None:
        self.task = task

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task.name!r})"

    # -- inputs ---------------------------------------------------------------------------
    def input_keys(self, task: TaskSpec | None = None) -> tuple[str, ...]:
        """The adapter's model-input keys plus the task's ``input_fields`` (never ``labels``)."""
        task = task or self.task
        extra = tuple(getattr(task, "input_fields", ()) or ())
        keys = [*self.model_input_keys]
        keys.extend(k for k in extra if k not in keys and k != "labels")
        return tuple(keys)

    def prepare_inputs(self, batch: Batch, task: TaskSpec | None = None) -> Batch:
        """A new dict ready for ``forward``; idempotent, never mutates ``batch``."""
        __tracebackhide__ = True
        if self.primary_input not in batch:
            raise AdapterError(
                f"the {self.name} adapter needs {self.primary_input!r} in the batch; it has "
                f"{sorted(batch)}."
            )
        return dict(batch)

    def call_plan(self, model: Any, batch: Batch, task: TaskSpec | None = None) -> CallPlan:
        """How ``forward`` will call ``model`` with ``batch``; ``AdapterError`` if it cannot."""
        __tracebackhide__ = True
        signature = _cached_signature(model)
        plan = plan_call(signature, frozenset(batch), self.primary_input, self.input_keys(task))
        if isinstance(plan, str):
            raise self._unsupported_parameter(model, signature, plan, task)
        return plan

    def _unsupported_parameter(
        self, model: Any, signature: inspect.Signature, param: str, task: TaskSpec | None
    ) -> AdapterError:
        supported = ", ".join(self.input_keys(task))
        return AdapterError(
            f"{type(model).__name__}.forward{signature} requires the parameter {param!r}, which "
            f"the {self.name!r} adapter cannot supply. It supplies {supported} by name, and "
            f"{self.primary_input} to a first parameter of any other name. Give {param!r} a "
            "default, rename it, or pass a custom adapter with --adapter package.module:Class."
        )

    def call_arguments(self, model: Any, batch: Batch) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The ``(args, kwargs)`` that ``forward`` passes to ``model`` for ``batch``.

        Exporters trace the model with exactly these, so the exported program is called the
        same way (``torch.export`` keeps the positional/keyword structure it was given).
        """
        __tracebackhide__ = True
        prepared = self.prepare_inputs(batch)
        plan = self.call_plan(model, prepared)
        args = () if plan.positional is None else (prepared[plan.positional],)
        return args, {key: prepared[key] for key in plan.keywords}

    def forward(self, model: Any, batch: Batch) -> Any:
        """Prepare ``batch`` and call ``model`` with the arguments its ``forward`` accepts."""
        __tracebackhide__ = True
        args, kwargs = self.call_arguments(model, batch)
        return model(*args, **kwargs)

    # -- outputs --------------------------------------------------------------------------
    def get_logits(
        self, outputs: Any, task: TaskSpec | None = None, *, batch: Batch | None = None
    ) -> torch.Tensor:
        """The logits tensor of ``outputs`` (see ``outputs.extract_logits``)."""
        __tracebackhide__ = True
        return extract_logits(outputs)

    def predict(
        self, outputs: Any, task: TaskSpec | None = None, *, batch: Batch | None = None
    ) -> torch.Tensor:
        """Predicted ids or classes: argmax over the last dimension of the logits."""
        __tracebackhide__ = True
        return self.get_logits(outputs, task, batch=batch).argmax(dim=-1)

    def loss(self, outputs: Any, batch: Batch, task: TaskSpec | None = None) -> torch.Tensor:
        """Scalar training loss of ``outputs`` against ``batch["labels"]``."""
        raise NotImplementedError(f"{type(self).__name__} does not define loss()")

    def get_attention_maps(
        self, outputs: Any, task: TaskSpec | None = None
    ) -> list[torch.Tensor] | None:
        """Per-layer attention maps from a mapping output's ``attentions``, else ``None``."""
        __tracebackhide__ = True
        return extract_attentions(outputs)

    def attention_maps(self, model: Any, batch: Batch) -> list[torch.Tensor] | None:
        """Tier 2's extension point: the model's attention for ``batch``, one
        ``[batch, heads, queries, keys]`` tensor per attention computation, or ``None``.

        ``None`` (the default) lets tier 2 find the maps itself (Hugging Face
        ``output_attentions``, ``scaled_dot_product_attention`` calls, ``nn.MultiheadAttention``,
        ``attentions`` in the output). Override it for a model whose attention none of those
        reach, for example by calling the model with its own flag that returns the weights.
        """
        return None

    # -- helpers for subclasses -------------------------------------------------------------
    def _labels(self, batch: Batch) -> torch.Tensor:
        __tracebackhide__ = True
        if "labels" not in batch:
            raise AdapterError(
                f"the {self.name} adapter needs 'labels' in the batch to compute a loss; it has "
                f"{sorted(batch)}."
            )
        labels = batch["labels"]
        if not isinstance(labels, torch.Tensor):
            raise AdapterError(f"batch['labels'] must be a tensor, got {type(labels).__name__}.")
        return labels.long()

    def _cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean CE over non-ignored targets, with range checks that name the problem."""
        __tracebackhide__ = True
        classes = logits.shape[-1]
        scored = targets != IGNORE_INDEX
        if not bool(scored.any()):
            raise AdapterError(
                f"the {self.name} loss has no position to score: every target is padding or "
                f"ignored (targets shape {list(targets.shape)}). Use longer sequences or fewer "
                "padded positions."
            )
        bad = targets[scored]
        if bool(((bad < 0) | (bad >= classes)).any()):
            raise AdapterError(
                f"a target id in [{int(bad.min())}, {int(bad.max())}] lies outside the model's "
                f"{classes} output logits. The task's vocab_size / num_classes "
                f"({self.task.vocab_size} / {self.task.num_classes}) disagrees with the model; "
                "set it to the model's size with --task-option."
            )
        return F.cross_entropy(
            logits.reshape(-1, classes).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )


def _ignore_padding(
    targets: torch.Tensor, mask: torch.Tensor | None, pad_token_id: int | None
) -> torch.Tensor:
    """``targets`` with padded positions set to -100: by ``mask`` if given, else by the pad id."""
    if mask is not None:
        return targets.masked_fill(mask.to(targets.device) == 0, IGNORE_INDEX)
    if pad_token_id is not None:
        return targets.masked_fill(targets == pad_token_id, IGNORE_INDEX)
    return targets


def _check_rank(logits: torch.Tensor, rank: int, layout: str, adapter: str) -> None:
    __tracebackhide__ = True
    if logits.dim() != rank:
        raise AdapterError(
            f"the {adapter} adapter expects logits shaped {layout}, got {list(logits.shape)}."
        )


# --------------------------------------------------------------------------- adapters


class LMAdapter(TaskAdapter):
    """Decoder-only language model: next-token cross-entropy over logits [B,T,V].

    The loss compares ``logits[:, :-1]`` with ``labels[:, 1:]`` (disable the shift with
    ``additional_config["shift_labels"] = False`` for models that shift themselves). Positions
    with ``attention_mask == 0`` are ignored; without a mask, labels equal to the task's
    ``pad_token_id`` are. Ids set to -100 are always ignored.
    """

    name = "lm"

    def _shift(self, task: TaskSpec) -> bool:
        config = task.additional_config or {}
        return bool(config.get("shift_labels", True))

    def loss(self, outputs: Any, batch: Batch, task: TaskSpec | None = None) -> torch.Tensor:
        __tracebackhide__ = True
        task = task or self.task
        logits = self.get_logits(outputs, task)
        _check_rank(logits, 3, "[B,T,V]", self.name)
        labels = self._labels(batch)
        if logits.shape[:2] != labels.shape:
            raise AdapterError(
                f"LM logits {list(logits.shape)} do not cover labels {list(labels.shape)}: the "
                "model must return logits for every position (a nanoGPT-style model that "
                "returns only the last position when targets is None needs a custom adapter)."
            )
        mask = batch.get("attention_mask")
        targets = _ignore_padding(labels, mask, task.pad_token_id)
        if self._shift(task):
            logits, targets = logits[:, :-1], targets[:, 1:]
        return self._cross_entropy(logits, targets.to(logits.device))


class ClassificationAdapter(TaskAdapter):
    """Sequence classification: logits [B,C], or per-token [B,T,C] mean-pooled over real tokens.

    Pooling a per-token output needs the batch's ``attention_mask``, so ``get_logits`` and
    ``predict`` take ``batch=``; without it a per-token output is an error rather than a mean
    that silently includes padding.
    """

    name = "classification"
    model_input_keys = ("input_ids", "attention_mask", "token_type_ids")

    def get_logits(
        self, outputs: Any, task: TaskSpec | None = None, *, batch: Batch | None = None
    ) -> torch.Tensor:
        __tracebackhide__ = True
        logits = extract_logits(outputs)
        if logits.dim() == 2:
            return logits
        if logits.dim() != 3:
            raise AdapterError(
                "the classification adapter expects logits shaped [B,C] or per-token [B,T,C], "
                f"got {list(logits.shape)}."
            )
        if batch is None:
            raise AdapterError(
                f"the model returned per-token logits {list(logits.shape)}; pooling them needs "
                "the batch's attention_mask: call get_logits(outputs, task, batch=batch)."
            )
        mask = batch.get("attention_mask")
        if mask is None:
            return logits.mean(dim=1)
        weights = mask.to(device=logits.device, dtype=logits.dtype).unsqueeze(-1)
        if weights.shape[:2] != logits.shape[:2]:
            raise AdapterError(
                f"attention_mask {list(mask.shape)} does not match per-token logits "
                f"{list(logits.shape)}."
            )
        return (logits * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def loss(self, outputs: Any, batch: Batch, task: TaskSpec | None = None) -> torch.Tensor:
        __tracebackhide__ = True
        logits = self.get_logits(outputs, task, batch=batch)
        labels = self._labels(batch)
        if labels.shape != logits.shape[:1]:
            raise AdapterError(
                f"classification labels must be Long[B] matching logits {list(logits.shape)}, "
                f"got {list(labels.shape)}."
            )
        return self._cross_entropy(logits, labels.to(logits.device))


class Seq2SeqAdapter(TaskAdapter):
    """Encoder-decoder: teacher forcing with ``decoder_input_ids = shift_right(labels)``.

    Labels never reach the decoder unshifted. The loss ignores target positions with
    ``decoder_attention_mask == 0`` (or, without that mask, labels equal to ``pad_token_id``),
    so padding is never scored.
    """

    name = "seq2seq"
    model_input_keys = (
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
    )
    batch_keys = ("input_ids", "attention_mask", "labels", "decoder_attention_mask")

    def prepare_inputs(self, batch: Batch, task: TaskSpec | None = None) -> Batch:
        __tracebackhide__ = True
        task = task or self.task
        prepared = super().prepare_inputs(batch, task)
        if "decoder_input_ids" in prepared:
            return prepared
        if "labels" not in prepared:
            raise AdapterError(
                "a seq2seq batch needs 'labels' (the target tokens) or 'decoder_input_ids'; it "
                f"has {sorted(batch)}."
            )
        start = task.decoder_start_token_id
        if start is None:
            raise AdapterError(
                f"task {task.name!r} has no decoder_start_token_id, so decoder inputs cannot be "
                "derived from the labels; set --task-option decoder_start_token_id=N (the "
                "model's config.decoder_start_token_id for Hugging Face models)."
            )
        prepared["decoder_input_ids"] = shift_right(
            prepared["labels"].long(), int(start), task.pad_token_id
        )
        return prepared

    def call_plan(self, model: Any, batch: Batch, task: TaskSpec | None = None) -> CallPlan:
        if "decoder_input_ids" not in batch:  # load-time check: prepare_inputs adds it
            batch = {**batch, "decoder_input_ids": None}
        return super().call_plan(model, batch, task)

    def loss(self, outputs: Any, batch: Batch, task: TaskSpec | None = None) -> torch.Tensor:
        __tracebackhide__ = True
        task = task or self.task
        logits = self.get_logits(outputs, task)
        _check_rank(logits, 3, "[B,T_dec,V]", self.name)
        labels = self._labels(batch)
        if logits.shape[:2] != labels.shape:
            raise AdapterError(
                f"seq2seq logits {list(logits.shape)} do not match labels {list(labels.shape)}; "
                "the decoder must return one row of logits per target position."
            )
        targets = _ignore_padding(labels, batch.get("decoder_attention_mask"), task.pad_token_id)
        return self._cross_entropy(logits, targets.to(logits.device))

    def get_attention_maps(
        self, outputs: Any, task: TaskSpec | None = None
    ) -> list[torch.Tensor] | None:
        """``attentions`` if present, else encoder then decoder self-attention maps.

        Cross-attention is left out: it is not square, and the attention checks analyse
        self-attention.
        """
        __tracebackhide__ = True
        maps = extract_attentions(outputs)
        if maps is not None:
            return maps
        encoder = extract_attentions(outputs, "encoder_attentions") or []
        decoder = extract_attentions(outputs, "decoder_attentions") or []
        return [*encoder, *decoder] or None


class VisionAdapter(TaskAdapter):
    """Image classification: ``model(pixel_values)`` -> logits [B,C], cross-entropy."""

    name = "vision"
    primary_input = "pixel_values"
    model_input_keys = ("pixel_values",)
    batch_keys = ("pixel_values", "labels")

    def get_logits(
        self, outputs: Any, task: TaskSpec | None = None, *, batch: Batch | None = None
    ) -> torch.Tensor:
        __tracebackhide__ = True
        logits = extract_logits(outputs)
        _check_rank(logits, 2, "[B,C]", self.name)
        return logits

    def loss(self, outputs: Any, batch: Batch, task: TaskSpec | None = None) -> torch.Tensor:
        __tracebackhide__ = True
        logits = self.get_logits(outputs, task)
        labels = self._labels(batch)
        if labels.shape != logits.shape[:1]:
            raise AdapterError(
                f"vision labels must be Long[B] matching logits {list(logits.shape)}, got "
                f"{list(labels.shape)}."
            )
        return self._cross_entropy(logits, labels.to(logits.device))


# --------------------------------------------------------------------------- lookup

ADAPTERS: dict[str, type[TaskAdapter]] = {
    LMAdapter.name: LMAdapter,
    ClassificationAdapter.name: ClassificationAdapter,
    Seq2SeqAdapter.name: Seq2SeqAdapter,
    VisionAdapter.name: VisionAdapter,
}

_FORMS = (
    f"a built-in adapter name ({', '.join(ADAPTERS)}) or 'package.module:Class' naming a "
    "TaskAdapter subclass"
)


def get_adapter(task: TaskSpec) -> TaskAdapter:
    """The built-in adapter for ``task.family``."""
    __tracebackhide__ = True
    cls = ADAPTERS.get(task.family)
    if cls is None:
        raise AdapterError(
            f"no built-in adapter for task {task.name!r} of family {task.family!r}; families "
            f"with one: {', '.join(ADAPTERS)}. Pass --adapter package.module:Class."
        )
    return cls(task)


def load_adapter(name_or_path: str, task: TaskSpec) -> TaskAdapter:
    """An adapter from a built-in name or an importable ``package.module:Class``."""
    __tracebackhide__ = True
    spec = name_or_path.strip()
    if spec in ADAPTERS:
        return ADAPTERS[spec](task)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AdapterError(f"unknown adapter {name_or_path!r}; expected {_FORMS}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterError(
            f"adapter {name_or_path!r}: cannot import module {module_name!r} ({exc}). Check "
            f"that it is importable from the test run (on sys.path); expected {_FORMS}."
        ) from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AdapterError(
                f"adapter {name_or_path!r}: module {module_name!r} has no attribute {attr!r}; "
                f"expected {_FORMS}."
            )
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, TaskAdapter)):
        raise AdapterError(
            f"adapter {name_or_path!r} is {obj!r}, not a subclass of "
            "pytest_modeltiers.models.adapters.TaskAdapter; subclass it (or one of LMAdapter, "
            "ClassificationAdapter, Seq2SeqAdapter, VisionAdapter) and override what differs."
        )
    return obj(task)


def check_forward_compatible(model: Any, adapter: TaskAdapter) -> None:
    """Raise ``AdapterError`` now if ``adapter.forward`` could not call ``model``.

    The loader calls it right after loading, so an incompatible forward is one clear error at
    session start rather than the same failure in every check.
    """
    __tracebackhide__ = True
    keys = dict.fromkeys(adapter.batch_keys)
    adapter.call_plan(model, keys)


def describe_call(model: Any, adapter: TaskAdapter) -> str:
    """``"GPT(input_ids, attention_mask=...)"``: how ``adapter`` calls ``model``, for headers."""
    __tracebackhide__ = True
    plan = adapter.call_plan(model, dict.fromkeys(adapter.batch_keys))
    parts = [] if plan.positional is None else [plan.positional]
    parts.extend(f"{key}=..." for key in plan.keywords)
    return f"{type(model).__name__}({', '.join(parts)})"
