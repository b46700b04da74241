"""Loading a user's model: safety scan, import, candidate choice, task and adapter.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.config.task_spec import TaskSpec, get_builtin_task, resolve_task
from pytest_modeltiers.errors import AdapterError, ModelSpecError, TaskSpecError, UnsafeModelError
from pytest_modeltiers.models.adapters import (
    TaskAdapter,
    check_forward_compatible,
    get_adapter,
    load_adapter,
)
from pytest_modeltiers.models.gist import GistModel
from pytest_modeltiers.models.installed import unmodified_distribution
from pytest_modeltiers.models.safety import scan_model_file
from pytest_modeltiers.models.sandbox import blocked_message
from pytest_modeltiers.models.spec import ModelSpec, parse_model_spec
from pytest_modeltiers.models.task_options import apply_task_options
from pytest_modeltiers.models.vocab import infer_vocab_size
from pytest_modeltiers.timeouts import call_with_timeout

if TYPE_CHECKING:
    from pytest_modeltiers.settings import Settings

FACTORY_NAME = "build_model"
INSTANCE_NAMES = ("model", "MODEL")
CONSTRUCTION_SEED = 0


@dataclass(frozen=True)
class LoadRequest:
    """Everything the options say about one model."""

    spec: str
    rootdir: Path
    task: str | None = None
    task_options: tuple[str, ...] = ()
    adapter: str | None = None
    trust: bool = False
    sha256: str | None = None
    timeout: float = 300.0
    #: Called with a ``MetaProbe`` once the task and adapter are known, before the model is
    #: built for real; it raises to refuse the model (``modeltiers train``'s memory estimate).
    preflight: Callable[[MetaProbe], None] | None = None
    #: Called right before the model's code first runs (the file is executed, the module
    #: imported), after torch and this package are loaded: the session confines itself there.
    enter_sandbox: Callable[[], None] | None = None
    #: Where gists are cached (None: ``gist.default_cache_dir()``).
    cache_dir: Path | None = None
    #: ``spec`` already parsed (a gist already fetched): the session parses once, to confine
    #: the process around the files it names before loading.
    parsed: ModelSpec | None = None

    @classmethod
    def from_settings(cls, spec: str, settings: Settings, rootdir: Path) -> LoadRequest:
        """The request for ``spec`` from the session's (or the command's) settings."""
        return cls(
            spec=spec,
            rootdir=rootdir,
            task=settings.task,
            task_options=settings.task_options,
            adapter=settings.adapter,
            trust=settings.trust_model,
            sha256=settings.model_sha256,
            timeout=settings.timeout,
            cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
        )


@dataclass(frozen=True)
class MetaProbe:
    """What is known about a model before it is built for real."""

    #: The model built on PyTorch's meta device (shapes, no storage), or None when it failed.
    meta_model: nn.Module | None
    #: Why the meta build failed, when it did.
    meta_error: str | None
    task: TaskSpec
    adapter: TaskAdapter


@dataclass
class LoadedModel:
    """A resolved model: how to build it, its task and adapter, and why each was chosen."""

    spec: ModelSpec
    name: str
    how: str
    build: Callable[[], nn.Module] = field(repr=False)
    class_name: str
    num_parameters: int
    task: TaskSpec
    task_reason: str
    adapter: TaskAdapter
    adapter_reason: str
    source_file: Path | None
    sha256: str | None
    safety: str
    timeout: float

    @property
    def gist(self) -> GistModel | None:
        """The gist the model came from, if it did."""
        return self.spec.gist

    def run_fields(self) -> dict[str, str]:
        """Experiment-database columns of a run of this model (the gist's id, revision, hash)."""
        return self.spec.gist.run_fields() if self.spec.gist is not None else {}

    def new_model(self) -> nn.Module:
        """A fresh instance, independent of every other, with the same initial weights."""
        return call_with_timeout(
            lambda: _seeded(self.build), self.timeout, f"building the model ({self.how})"
        )

    def identity(self, key: str) -> dict[str, Any]:
        """Who was tested, for the health report."""
        return {
            "key": key,
            "spec": self.spec.raw,
            "class_name": self.class_name,
            "num_parameters": self.num_parameters,
            "file": str(self.source_file) if self.source_file else None,
            "sha256": self.sha256,
            "task": self.task.name,
            "adapter": self.adapter.name,
        }

    def describe(self, key: str) -> list[str]:
        """Header lines: which model, task and adapter were chosen, and why."""
        task = self.task
        shape = [f"vocab_size {task.vocab_size}"] if task.vocab_size else []
        if task.max_seq_len:
            shape.append(f"max_seq_len {task.max_seq_len}")
        if task.image_size:
            shape.append("image " + "x".join(str(d) for d in task.image_size))
        if task.num_classes:
            shape.append(f"{task.num_classes} classes")
        gist = [f"  {self.spec.gist.describe()}"] if self.spec.gist is not None else []
        return [
            f"model {key}: {self.how} -> {self.class_name}, {self.num_parameters:,} parameters; "
            f"{self.safety}",
            *gist,
            f"  task {task.name} ({self.task_reason}; {', '.join(shape)}); "
            f"adapter {self.adapter.name} ({self.adapter_reason})",
        ]


def load_model(request: LoadRequest) -> LoadedModel:
    """Resolve ``request.spec`` to a ``LoadedModel``; raise ``ModelSpecError`` with the fix."""
    spec = request.parsed or parse_model_spec(
        request.spec, request.rootdir, cache_dir=request.cache_dir
    )
    source = spec.source_file
    content = source.read_bytes() if source is not None else None
    gist = spec.gist
    if gist is not None:
        digest: str | None = _check_gist_sha256(gist, request.sha256)
        safety = call_with_timeout(  # a file built to stall the scan meets the load's bound
            lambda: _check_gist_safety(gist, trust=request.trust),
            request.timeout,
            f"scanning gist {gist.id}",
        )
    else:
        digest = _check_sha256(source, content, request.sha256)
        safety = call_with_timeout(
            lambda: _check_safety(source, trust=request.trust),
            request.timeout,
            f"scanning {source}",
        )
    if source is not None and source.read_bytes() != content:
        raise UnsafeModelError(f"{source} changed while it was being scanned; run again")
    module = call_with_timeout(
        lambda: _import(spec, source, content, request.enter_sandbox),
        request.timeout,
        f"importing {spec.raw}",
    )
    where = source.name if source else spec.module
    if gist is not None:  # "choose one with gist:ID::NAME"
        where = f"gist:{gist.id}"
    candidate, how = _pick_candidate(module, spec, where or spec.raw)
    task, task_reason = _explicit_task(request, module, where or spec.raw)
    if task is not None:
        task = apply_task_options(task, request.task_options)
    build = _factory(candidate, how, task)
    probe, probe_error = None, None
    if request.preflight is not None:
        probe, probe_error = _build_on_meta(build, request.timeout, how)
    first = None if probe is not None else _build(build, request.timeout, how)
    reference = probe if probe is not None else first
    assert reference is not None
    if task is None:
        task, task_reason = _infer_task(reference)
        task = apply_task_options(task, request.task_options)
        build = _factory(candidate, how, task)
    if task.family != "vision" and task.vocab_size is None:
        vocab, vocab_source = infer_vocab_size(reference, task_reason)
        task = task.with_vocab_size(vocab)
        task_reason += f", vocab_size from {vocab_source}"
        build = _factory(candidate, how, task)
    adapter, adapter_reason = _adapter_for(request.adapter, task)
    try:
        check_forward_compatible(reference, adapter)
    except AdapterError as exc:
        raise ModelSpecError(str(exc)) from None
    if request.preflight is not None:
        request.preflight(MetaProbe(probe, probe_error, task, adapter))
    if first is None:
        first = _build(build, request.timeout, how)
    name = (spec.attr or spec.raw) if spec.module else (source.stem if source else spec.raw)
    if gist is not None:
        name = f"gist-{gist.id[:8]}"
    return LoadedModel(
        spec=spec,
        name=name,
        how=how,
        build=build,
        class_name=type(first).__name__,
        num_parameters=sum(p.numel() for p in first.parameters()),
        task=task,
        task_reason=task_reason,
        adapter=adapter,
        adapter_reason=adapter_reason,
        source_file=source,
        sha256=digest,
        safety=safety,
        timeout=request.timeout,
    )


def _build(build: Callable[[], nn.Module], timeout: float, how: str) -> nn.Module:
    return call_with_timeout(lambda: _seeded(build), timeout, f"building {how}")


def _build_on_meta(
    build: Callable[[], nn.Module], timeout: float, how: str
) -> tuple[nn.Module | None, str | None]:
    """The model built on PyTorch's meta device (no storage), or None and why it failed.

    A model that cannot be built there (it loads weights from a file, reads a tensor's
    values) is built for real afterwards, and a real error is reported then.
    """
    try:
        with torch.device("meta"):
            return _build(build, timeout, f"{how} on the meta device"), None
    except ModelSpecError as exc:
        return None, str(exc)


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONSTRUCTION_SEED)
        return build()


def _check_sha256(source: Path | None, content: bytes | None, expected: str | None) -> str | None:
    if source is None or content is None:
        if expected:
            raise ModelSpecError("--model-sha256 needs a model given as a file, not a module")
        return None
    digest = hashlib.sha256(content).hexdigest()
    if expected and digest != expected:
        raise UnsafeModelError(
            f"{source} has SHA-256 {digest}, but --model-sha256 expects {expected}; "
            "the file changed since it was pinned: review it, then update the pin"
        )
    return digest


def _check_gist_sha256(gist: GistModel, expected: str | None) -> str:
    if expected and gist.sha256 != expected:
        raise UnsafeModelError(
            f"gist {gist.id} at revision {gist.revision} has SHA-256 {gist.sha256} (the names "
            f"and bytes of its files), but --model-sha256 expects {expected}; the gist is not "
            f"the one pinned: review it, then update the pin (and pin the revision too: "
            f"--model {gist.spec})"
        )
    return gist.sha256


def _check_gist_safety(gist: GistModel, *, trust: bool) -> str:
    """Scan every Python file of the gist, not only the model file and what it imports."""
    if trust:
        return "safety scan SKIPPED (--trust-model)"
    findings: dict[str, object] = {}
    for path in gist.python_files:
        try:
            for finding in scan_model_file(path):
                findings.setdefault(str(finding), finding)
        except SyntaxError as exc:
            raise ModelSpecError(_syntax_message(exc)) from None
    if findings:
        listing = "\n".join(f"  {finding}" for finding in findings)
        raise UnsafeModelError(
            f"refused to run gist {gist.id} (revision {gist.revision}): the safety scan found "
            f"capabilities a model should not need:\n{listing}\n"
            "Review the gist; if you trust it, pass --trust-model to run it anyway."
        )
    return f"safety scan clean (all {len(gist.python_files)} Python files of the gist)"


def _check_safety(source: Path | None, *, trust: bool) -> str:
    if source is None:
        return "safety scan: not applicable (installed module)"
    if trust:
        return "safety scan SKIPPED (--trust-model)"
    if (distribution := unmodified_distribution(source)) is not None:
        return (
            f"safety scan: not applicable (installed package {distribution}, its files match "
            "its RECORD)"
        )
    try:
        findings = scan_model_file(source)
    except SyntaxError as exc:
        raise ModelSpecError(_syntax_message(exc)) from None
    if findings:
        listing = "\n".join(f"  {finding}" for finding in findings)
        raise UnsafeModelError(
            f"refused to run {source.name}: the safety scan found capabilities a model file "
            f"should not need:\n{listing}\n"
            "Review the code; if you trust it, pass --trust-model to run it anyway."
        )
    return "safety scan clean (the file and its local imports)"


def _syntax_message(exc: SyntaxError) -> str:
    return f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}"


def _import(
    spec: ModelSpec,
    source: Path | None,
    content: bytes | None,
    enter_sandbox: Callable[[], None] | None,
) -> ModuleType:
    if enter_sandbox is not None:
        enter_sandbox()
    if spec.module is not None:
        try:
            return importlib.import_module(spec.module)
        except ModuleNotFoundError as exc:
            if exc.name and spec.module.startswith(exc.name):
                raise ModelSpecError(
                    f"cannot import {spec.module}: no module named {exc.name!r}; "
                    "install the package or use path/to/file.py"
                ) from None
            raise ModelSpecError(_import_failure(spec.module, exc, source)) from None
        except (Exception, SystemExit) as exc:
            raise ModelSpecError(_import_failure(spec.module, exc, source)) from None
    assert source is not None and content is not None
    return _import_file(source, content)


def _import_file(path: Path, content: bytes) -> ModuleType:
    """Execute ``content`` (the bytes of ``path`` that were hashed and scanned) as a fresh module.

    The model file is compiled from those bytes, and its local imports load with
    ``sys.pycache_prefix`` pointing at an empty temporary folder, so no stale or planted
    ``__pycache__/*.pyc`` can run code the safety scan did not read.
    """
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"_modeltiers_model_{path.stem}_{digest}"
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    previous_prefix = sys.pycache_prefix
    fresh_cache = tempfile.TemporaryDirectory(prefix="modeltiers-pycache-")
    sys.pycache_prefix = fresh_cache.name
    try:
        # dont_inherit: the file gets its own __future__ features, not this module's.
        code = compile(content, str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ModelSpecError(_syntax_message(exc)) from None
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise ModelSpecError(_import_failure(path.name, exc, path)) from None
    finally:
        sys.pycache_prefix = previous_prefix
        fresh_cache.cleanup()
        if str(path.parent) in sys.path:
            sys.path.remove(str(path.parent))
    return module


def _import_failure(what: str, exc: BaseException, source: Path | None) -> str:
    location = _user_location(exc, source)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (
            f"{what} imports {exc.name!r}, which is not installed{location}; "
            f"install it (pip install {exc.name.split('.')[0]}) or remove the import"
        )
    if isinstance(exc, SystemExit):
        return f"{what} called sys.exit({exc.code!r}) while being imported{location}"
    blocked = blocked_message(exc)
    if blocked is not None:
        return f"importing {what}: {blocked}{location}"
    return f"importing {what} raised {type(exc).__name__}: {exc}{location}"


def _user_location(exc: BaseException, source: Path | None) -> str:
    """`` (file.py:LINE)`` for the innermost frame of the user's own code, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    folder = str(source.parent) if source else None
    for frame in reversed(frames):
        if folder and frame.filename.startswith(folder):
            return f" (at {Path(frame.filename).name}:{frame.lineno})"
    return ""


def _pick_candidate(module: ModuleType, spec: ModelSpec, where: str) -> tuple[Any, str]:
    """The object that is the model (factory, instance or class) and a label saying which."""
    if spec.attr is not None:
        if not hasattr(module, spec.attr):
            names = ", ".join(_model_like_names(module)) or "none"
            raise ModelSpecError(
                f"{where} has no attribute {spec.attr!r}; model-like names in it: {names}"
            )
        return getattr(module, spec.attr), f"{spec.raw}"
    factory = getattr(module, FACTORY_NAME, None)
    if callable(factory):
        return factory, f"{where}::{FACTORY_NAME}"
    for name in INSTANCE_NAMES:
        if isinstance(getattr(module, name, None), nn.Module):
            return getattr(module, name), f"{where}::{name}"
    classes = _module_classes(module)
    buildable = [cls for cls in classes if _needs_no_arguments(cls)]
    if len(buildable) == 1:
        return buildable[0], f"{where}::{buildable[0].__name__}"
    if not buildable:
        found = ", ".join(f"{c.__name__} (constructor needs arguments)" for c in classes)
        raise ModelSpecError(
            f"no model found in {where}: searched for a callable {FACTORY_NAME}, a module-level "
            f"nn.Module named {' or '.join(INSTANCE_NAMES)}, and nn.Module subclasses defined in "
            f"the file whose constructor needs no arguments (found: {found or 'none'}). "
            f"Add `def {FACTORY_NAME}(): return MyModel(...)` or name one with {where}::NAME"
        )
    choices = ", ".join(f"{where}::{cls.__name__}" for cls in buildable)
    raise ModelSpecError(
        f"several models in {where}: {choices}; choose one with --model {where}::NAME, or add "
        f"a {FACTORY_NAME}() function"
    )


def _module_classes(module: ModuleType) -> list[type[nn.Module]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    ]


def _needs_no_arguments(cls: type) -> bool:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _model_like_names(module: ModuleType) -> list[str]:
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (
            isinstance(obj, nn.Module)
            or (inspect.isclass(obj) and issubclass(obj, nn.Module))
            or (inspect.isfunction(obj) and obj.__module__ == module.__name__)
        )
    )


def _factory(candidate: Any, how: str, task: TaskSpec | None) -> Callable[[], nn.Module]:
    """A zero-argument callable returning a fresh ``nn.Module`` each call."""
    if isinstance(candidate, nn.Module):
        return lambda: copy.deepcopy(candidate)
    if inspect.isclass(candidate):
        if not issubclass(candidate, nn.Module):
            raise ModelSpecError(f"{how} is a class but not an nn.Module subclass")
        if not _needs_no_arguments(candidate):
            raise ModelSpecError(
                f"{how}: {candidate.__name__}{inspect.signature(candidate)} needs arguments; add "
                f"`def {FACTORY_NAME}(): return {candidate.__name__}(...)` to the file"
            )
        return lambda: _call_factory(candidate, {}, how)
    if not callable(candidate):
        raise ModelSpecError(
            f"{how} is a {type(candidate).__name__}, not an nn.Module, a class or a factory"
        )
    kwargs = _factory_kwargs(candidate, how, task)
    return lambda: _call_factory(candidate, kwargs, how)


def _factory_kwargs(factory: Callable[..., Any], how: str, task: TaskSpec | None) -> dict[str, Any]:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if "task_spec" in parameters:
        if task is None and parameters["task_spec"].default is inspect.Parameter.empty:
            raise ModelSpecError(
                f"{how} needs task_spec, but no task is known before the model is built: "
                "define TASK in the file or pass --task"
            )
        return {"task_spec": task}
    required = [
        name
        for name, p in parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ModelSpecError(
            f"{how} needs arguments ({', '.join(required)}); a model factory takes no arguments "
            "or only task_spec"
        )
    return {}


def _call_factory(factory: Callable[..., Any], kwargs: dict[str, Any], how: str) -> nn.Module:
    """Build the model; any exception of the model's code, ``SystemExit`` included, is an error
    of the model; ``KeyboardInterrupt`` still stops the caller."""
    try:
        built = factory(**kwargs)
    except ModelSpecError:
        raise
    except (Exception, SystemExit) as exc:
        location = _user_location(exc, _defining_file(factory))
        if isinstance(exc, SystemExit):
            raise ModelSpecError(
                f"{how}() called sys.exit({exc.code!r}){location}; building a model must return "
                "it: raise an exception to report a problem instead"
            ) from None
        blocked = blocked_message(exc)
        if blocked is not None:
            raise ModelSpecError(f"{how}(): {blocked}{location}") from None
        raise ModelSpecError(f"{how}() raised {type(exc).__name__}: {exc}{location}") from None
    return _checked_module(built, how)


def _defining_file(obj: Any) -> Path | None:
    try:
        return Path(inspect.getfile(obj))
    except TypeError:
        return None


def _checked_module(built: Any, how: str) -> nn.Module:
    if not isinstance(built, nn.Module):
        raise ModelSpecError(
            f"{how} returned {type(built).__name__}, not a torch.nn.Module; return the model "
            "itself (not a tuple, a state dict or a config)"
        )
    return built


def _explicit_task(
    request: LoadRequest, module: ModuleType, where: str
) -> tuple[TaskSpec | None, str]:
    try:
        if request.task:
            return resolve_task(request.task), f"--task {request.task}"
        declared = getattr(module, "TASK", None)
        if declared is None:
            return None, ""
        if isinstance(declared, TaskSpec):
            return declared, f"TASK in {where}"
        if isinstance(declared, str | dict):
            return resolve_task(declared), f"TASK in {where}"
    except (TaskSpecError, OSError, json.JSONDecodeError) as exc:
        source = f"--task {request.task}" if request.task else f"TASK in {where}"
        raise ModelSpecError(f"{source}: {exc}") from None
    raise ModelSpecError(
        f"TASK in {where} is a {type(declared).__name__}; expected a built-in task name, a dict "
        "like {'name': 'lm_tiny', 'input_schema': {'vocab_size': 1000}} or a TaskSpec"
    )


def _infer_task(model: nn.Module) -> tuple[TaskSpec, str]:
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        names = []
    shown = f"forward({', '.join(names)})"
    if "pixel_values" in names:
        return get_builtin_task("vision_tiny"), f"inferred from {shown}"
    if "decoder_input_ids" in names:
        return get_builtin_task("seq2seq_tiny"), f"inferred from {shown}"
    return get_builtin_task("lm_tiny"), f"inferred from {shown}; set TASK or --task if not an LM"


def _adapter_for(name: str | None, task: TaskSpec) -> tuple[TaskAdapter, str]:
    try:
        if name:
            return load_adapter(name, task), f"--adapter {name}"
        return get_adapter(task), f"task family {task.family}"
    except AdapterError as exc:
        raise ModelSpecError(str(exc)) from None
