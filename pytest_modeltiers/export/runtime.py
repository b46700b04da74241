"""Loading artifacts back and running them: the other half of every parity check.

PYTEST_DONT_REWRITE

``load_artifact(fmt, path, signature, ...)`` returns a runner: call it with the model inputs by
name (``{"input_ids": ..., "attention_mask": ...}``) and it returns the logits as a CPU tensor.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.export.diagnose import quiet_exporter
from pytest_modeltiers.export.exporters import METADATA_FILE, file_sha256
from pytest_modeltiers.export.formats import (
    FORMATS,
    QUANTIZED_FILE,
    ArtifactError,
    find_artifact,
    format_info,
)
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper

if TYPE_CHECKING:
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["ArtifactRunner", "ExportedModel", "load_artifact", "load_exported_model"]

Inputs = Mapping[str, torch.Tensor]


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _unloadable(fmt: str, path: Path, exc: BaseException) -> ArtifactError:
    size = path.stat().st_size if path.is_file() else 0
    return ArtifactError(
        f"the {fmt} artifact {path} ({size} bytes) cannot be loaded: it is truncated, corrupt "
        f"or not a {fmt} file ({_short(exc)}). Export it again (pytest --model MODEL -m tier4 "
        "--export-dir DIR, or export_model / create_export_bundle) or restore it from a copy "
        "whose SHA-256 matches metadata.json."
    )


class ArtifactRunner:
    """A loaded artifact: ``runner(inputs) -> logits`` (a CPU tensor), eval mode, no grad."""

    def __init__(self, fmt: str, path: Path, signature: ExportSignature) -> None:
        self.format = fmt
        self.path = path
        self.signature = signature

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path}>"

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        tensors = self.signature.select(inputs)
        with torch.no_grad():
            return self._run(tensors).detach().cpu()

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError


class OnnxRunner(ArtifactRunner):
    def __init__(self, path: Path, signature: ExportSignature) -> None:
        super().__init__("onnx", path, signature)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # the runner reports errors itself
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise _unloadable("onnx", path, exc) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        # An exporter may drop an input the graph does not use (the legacy one does); an input
        # the signature does not provide means the file belongs to another model.
        unknown = [n for n in self.input_names if n not in signature.names]
        if unknown:
            raise ArtifactError(
                f"the onnx artifact {path} takes {', '.join(self.input_names)}, not "
                f"{', '.join(signature.names)}: it was exported from another model or "
                "another version of this one. Export it again."
            )

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        feeds = {
            name: tensor.detach().cpu().contiguous().numpy()
            for name, tensor in zip(self.signature.names, tensors, strict=True)
            if name in self.input_names
        }
        outputs = self.session.run(None, feeds)
        return torch.from_numpy(outputs[0])


class ProgramRunner(ArtifactRunner):
    def __init__(self, path: Path, signature: ExportSignature) -> None:
        super().__init__("torch_export", path, signature)

        try:
            with quiet_exporter():
                self.module = torch.export.load(str(path)).module()
        except Exception as exc:
            raise _unloadable("torch_export", path, exc) from exc

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.module(*tensors)


class TorchScriptRunner(ArtifactRunner):
    def __init__(
        self,
        path: Path,
        signature: ExportSignature,
        *,
        mode: str = "trace",
        adapter: TaskAdapter | None = None,
        fmt: str = "torchscript",
    ) -> None:
        super().__init__(fmt, path, signature)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is legacy
                self.module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise _unloadable(fmt, path, exc) from exc
        self.module.eval()
        # A traced module takes the artifact's tensors and returns the logits; a scripted one
        # is the model itself, called the way the adapter calls it.
        scripted = mode != "trace"
        self._call = ExportWrapper(self.module, adapter, signature) if scripted else self.module

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        result: torch.Tensor = self._call(*tensors)
        return result


def _poison(model: nn.Module) -> nn.Module:
    """``model`` with every floating tensor of its state dict set to NaN, in place.

    The factory builds every instance with the same seeded weights, so a fresh instance would
    equal the live model whatever the file held; poisoned first, the rebuilt model can only
    match if the file really supplies every weight. Non-persistent buffers (not in the state
    dict, never saved) keep their constructed values.
    """
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                tensor.fill_(math.nan)
    return model


class StateDictRunner(ArtifactRunner):
    """The model rebuilt from ``model_factory`` (or a copy of ``template``), its weights set to
    NaN, then loaded from the safetensors file strictly, run through the adapter."""

    def __init__(
        self,
        path: Path,
        signature: ExportSignature,
        *,
        adapter: TaskAdapter,
        model_factory: Callable[[], nn.Module] | None = None,
        template: nn.Module | None = None,
    ) -> None:
        super().__init__("pytorch", path, signature)
        from safetensors.torch import load_model

        if model_factory is not None:
            model = _poison(model_factory())
        elif template is not None:
            model = _poison(copy.deepcopy(template))
        else:
            raise ArtifactError(
                "the pytorch format holds weights only: pass model_factory= (a function that "
                "builds the model) to load it"
            )
        try:
            found_missing, found_unexpected = load_model(model, str(path), strict=False)
        except Exception as exc:
            raise _unloadable("pytorch", path, exc) from exc
        missing, unexpected = sorted(found_missing), sorted(found_unexpected)
        if missing or unexpected:
            raise ArtifactError(
                f"the weights in {path} do not match the model: missing "
                f"{', '.join(missing[:8]) or 'none'}; unexpected "
                f"{', '.join(unexpected[:8]) or 'none'}. The file was saved from another "
                "model (or version); export it again from this one."
            )
        self.model = model.eval()
        self.wrapper = ExportWrapper(self.model, adapter, signature)

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.wrapper(*tensors)


def load_artifact(
    fmt: str,
    path: str | Path,
    signature: ExportSignature,
    *,
    adapter: TaskAdapter | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
    template: nn.Module | None = None,
    torchscript_mode: str = "trace",
) -> ArtifactRunner:
    """Load one artifact; ``ArtifactError`` if it is missing or cannot be loaded.

    ``adapter`` is needed by ``pytorch`` (and a scripted TorchScript model) to call the model;
    ``pytorch`` also needs ``model_factory`` or a ``template`` model of the same architecture.
    """
    path = Path(path)
    if fmt != "quantized":
        format_info(fmt)
    if not path.is_file():
        raise ArtifactError(f"the {fmt} artifact {path} does not exist; export it first")
    if path.stat().st_size == 0:
        raise ArtifactError(
            f"the {fmt} artifact {path} is empty (0 bytes): an export was interrupted; export "
            "it again"
        )
    if fmt == "onnx":
        return OnnxRunner(path, signature)
    if fmt == "torch_export":
        return ProgramRunner(path, signature)
    if fmt in ("torchscript", "quantized"):
        return TorchScriptRunner(path, signature, mode=torchscript_mode, adapter=adapter, fmt=fmt)
    if adapter is None:
        raise ArtifactError("loading the pytorch format needs the adapter that calls the model")
    return StateDictRunner(
        path, signature, adapter=adapter, model_factory=model_factory, template=template
    )


class ExportedModel:
    """An exported model loaded from a directory: call it with the inputs, get the logits.

    ``model({"input_ids": ids, "attention_mask": mask})``, ``model(ids, mask)`` (inputs in
    ``input_names`` order) or ``model(input_ids=ids, attention_mask=mask)``.
    """

    def __init__(self, runner: ArtifactRunner, metadata: Mapping[str, Any]) -> None:
        self.runner = runner
        self.metadata = dict(metadata)

    @property
    def format(self) -> str:
        return self.runner.format

    @property
    def path(self) -> Path:
        return self.runner.path

    @property
    def signature(self) -> ExportSignature:
        return self.runner.signature

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.runner.signature.names

    def __repr__(self) -> str:
        return f"<ExportedModel {self.format} {self.path} inputs={list(self.input_names)}>"

    def __call__(self, *args: Any, **kwargs: torch.Tensor) -> torch.Tensor:
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            inputs = dict(args[0])
        else:
            if len(args) > len(self.input_names):
                raise TypeError(
                    f"the exported model takes {len(self.input_names)} inputs "
                    f"({', '.join(self.input_names)}), got {len(args)}"
                )
            inputs = dict(zip(self.input_names, args, strict=False))
            inputs.update(kwargs)
        return self.runner(inputs)


def read_metadata(directory: Path) -> dict[str, Any]:
    """``metadata.json`` of an export directory or bundle; ``ArtifactError`` if unusable."""
    path = directory / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{directory} has no {METADATA_FILE}: it is not an export directory (export_model) "
            "or bundle (create_export_bundle)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} cannot be read as JSON ({_short(exc)}); export again") from exc
    if not isinstance(data, dict) or "signature" not in data or "formats" not in data:
        raise ArtifactError(f"{path} lacks 'signature' or 'formats'; export again")
    return data


def _entry(directory: Path, metadata: Mapping[str, Any], runtime: str) -> tuple[Path, dict]:
    if runtime == "quantized":
        entry = metadata.get("quantization")
        filename = QUANTIZED_FILE
    else:
        entry = metadata["formats"].get(runtime)
        filename = FORMATS[runtime].filename
    if not entry:
        available = sorted(metadata["formats"]) + (
            ["quantized"] if metadata.get("quantization") else []
        )
        raise ArtifactError(
            f"{directory} has no {runtime} artifact; it has {', '.join(available) or 'none'}"
        )
    path = directory / entry["file"] if entry.get("file") else find_artifact(directory, filename)
    if path is None or not path.is_file():
        raise ArtifactError(
            f"{directory / entry.get('file', filename)} is listed in {METADATA_FILE} but missing"
        )
    return path, entry


def load_exported_model(
    export_dir: str | Path,
    runtime: str = "onnx",
    *,
    model_factory: Callable[[], nn.Module] | None = None,
    adapter: TaskAdapter | None = None,
    verify_sha256: bool = True,
) -> ExportedModel:
    """Load the ``runtime`` artifact (a format name, or ``quantized``) of an export directory.

    The artifact's SHA-256 is checked against ``metadata.json`` first, so a file changed or
    damaged after export is reported as such. ``pytorch`` needs ``model_factory`` and
    ``adapter`` (the weights alone cannot run).
    """
    directory = Path(export_dir)
    if runtime != "quantized":
        try:
            format_info(runtime)
        except ValueError as exc:
            raise ArtifactError(f"{exc} (or 'quantized')") from None
    metadata = read_metadata(directory)
    signature = ExportSignature.from_dict(metadata["signature"])
    path, entry = _entry(directory, metadata, runtime)
    if verify_sha256:
        for name, info in entry.get("files", {}).items():
            file = directory / name
            if not file.is_file():
                raise ArtifactError(f"{file} (listed in {METADATA_FILE}) is missing")
            digest = file_sha256(file)
            if digest != info.get("sha256"):
                raise ArtifactError(
                    f"{file} does not match {METADATA_FILE}: SHA-256 {digest[:12]}... instead of "
                    f"{str(info.get('sha256'))[:12]}... ({file.stat().st_size} bytes instead of "
                    f"{info.get('bytes')}). The file was changed or damaged after export; "
                    "export again or restore the original."
                )
    mode = str(entry.get("details", {}).get("mode", "trace"))
    if runtime == "pytorch" and adapter is None:
        raise ArtifactError(
            "the pytorch format holds weights only: pass model_factory= and adapter= to run it"
        )
    runner = load_artifact(
        runtime,
        path,
        signature,
        adapter=adapter,
        model_factory=model_factory,
        torchscript_mode=mode,
    )
    return ExportedModel(runner, metadata)
