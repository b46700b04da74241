"""One exporter per format, each writing its artifact atomically, and ``export_model``.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.export.artifacts import ExportedArtifact, file_sha256, staged
from pytest_modeltiers.export.diagnose import (
    ExporterLog,
    describe_location,
    describe_site,
    explain_export_error,
    quiet_exporter,
)
from pytest_modeltiers.export.formats import (
    DEFAULT_FORMATS,
    FORMATS,
    ONNX_EXPORTERS,
    ExportError,
    format_info,
)
from pytest_modeltiers.export.quantization import (
    QuantizationUnavailable,
    export_quantized,
    quantize_model,
)
from pytest_modeltiers.export.signature import ExportSignature, ExportWrapper, build_signature
from pytest_modeltiers.jsonio import dumps, jsonable
from pytest_modeltiers.models.exceptions import is_user_file
from pytest_modeltiers.models.running import preserved_model
from pytest_modeltiers.report.environment import collect_environment, distribution_version
from pytest_modeltiers.timeouts import call_with_timeout
from pytest_modeltiers.version import __version__

if TYPE_CHECKING:
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = [
    "METADATA_FILE",
    "ExportedArtifact",
    "export_format",
    "export_model",
    "export_onnx",
    "export_state_dict",
    "export_torch_export",
    "export_torchscript",
    "file_sha256",
    "metadata_dict",
    "trace_program",
    "write_metadata",
]

METADATA_FILE = "metadata.json"
METADATA_VERSION = "1.0"
#: Above this many bytes of weights the ONNX file keeps them in ``model.onnx.data`` (protobuf
#: files cannot exceed 2 GiB).
ONNX_EXTERNAL_DATA_BYTES = 1_500_000_000


# --------------------------------------------------------------------------- torch.export


def _failure(fmt: str, exc: BaseException, log: ExporterLog | None) -> ExportError:
    failure = explain_export_error(exc, fmt, log)
    details: dict[str, Any] = failure.to_dict()
    if log is not None:
        details["exporter_log"] = log.messages()
    return ExportError(fmt, failure.cause, location=failure.location, details=details)


def trace_program(
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the wrapper with dynamic shapes; ``ExportError`` on failure."""
    wrapper = ExportWrapper(model, adapter, signature)
    with preserved_model(model, training=False), quiet_exporter() as log:
        try:
            return torch.export.export(
                wrapper, tuple(tensors), dynamic_shapes=signature.torch_dynamic_shapes()
            )
        except Exception as exc:
            raise _failure("torch_export", exc, log) from exc


def export_torch_export(
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
    *,
    program: torch.export.ExportedProgram | None = None,
) -> ExportedArtifact:
    """Write ``model.pt2``; ``program`` reuses a program already traced by ``trace_program``."""
    start = time.perf_counter()
    program = program or trace_program(model, adapter, signature, tensors)
    name = FORMATS["torch_export"].filename
    with staged(directory, "torch_export") as stage, quiet_exporter():
        torch.export.save(program, stage / name)
    nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    details = {
        "num_nodes": len(nodes),
        "op_types": sorted({str(n.target) for n in nodes}),
        "range_constraints": {str(k): str(v) for k, v in program.range_constraints.items()},
    }
    return ExportedArtifact(
        "torch_export", directory / name, signature, time.perf_counter() - start, details=details
    )


# --------------------------------------------------------------------------- ONNX


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_param if dim.dim_param else int(dim.dim_value))
    return dims


def inspect_onnx(path: Path, signature: ExportSignature | None = None) -> dict[str, Any]:
    """Structure of an ONNX file: opset, IR version, op types, input/output dims, fixed dims.

    ``fixed`` lists ``(input, dim, axis, size)`` for every dimension ``signature`` declares
    dynamic that the graph holds as a constant.
    """
    import onnx

    return _inspect_proto(onnx.load(str(path), load_external_data=False), signature)


def _inspect_proto(proto: Any, signature: ExportSignature | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    inputs = {value.name: _dims(value) for value in proto.graph.input}
    outputs = {value.name: _dims(value) for value in proto.graph.output}
    fixed: list[list[Any]] = []
    if signature is not None:
        for spec in signature.inputs:
            dims = inputs.get(spec.name)
            if dims is None:
                continue
            for dim, axis in spec.axes.items():
                low, high = signature.ranges.get(axis, (1, None))
                if high is not None and high <= low:
                    continue
                if dim < len(dims) and isinstance(dims[dim], int):
                    fixed.append([spec.name, dim, axis, dims[dim]])
    return {
        "ir_version": int(proto.ir_version),
        "opset": {imp.domain or "ai.onnx": int(imp.version) for imp in proto.opset_import},
        "num_nodes": len(proto.graph.node),
        "op_types": dict(sorted(counts.items())),
        "inputs": inputs,
        "outputs": outputs,
        "fixed_dims": fixed,
    }


def export_onnx(
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
    *,
    program: torch.export.ExportedProgram | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    optimize: bool = True,
) -> ExportedArtifact:
    """Write ``model.onnx``; ``ExportError`` naming the cause on failure.

    ``optimize`` is the dynamo exporter's graph optimisation and the legacy exporter's
    constant folding (both on by default, as in ``torch.onnx.export``)."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(ONNX_EXPORTERS)}, got {exporter!r}")
    start = time.perf_counter()
    name = FORMATS["onnx"].filename
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weights > ONNX_EXTERNAL_DATA_BYTES
    wrapper = ExportWrapper(model, adapter, signature)
    log: ExporterLog | None = None
    with staged(directory, "onnx") as stage:
        with preserved_model(model, training=False), quiet_exporter() as log:
            try:
                if exporter == "legacy":
                    torch.onnx.export(
                        wrapper,
                        tuple(tensors),
                        str(stage / name),
                        dynamo=False,
                        input_names=list(signature.names),
                        output_names=[signature.output_name],
                        dynamic_axes=signature.onnx_dynamic_axes(),
                        opset_version=opset,
                        do_constant_folding=optimize,
                    )
                else:
                    source: Any = program if program is not None else wrapper
                    shapes = None if program is not None else signature.torch_dynamic_shapes()
                    torch.onnx.export(
                        source,
                        tuple(tensors),
                        str(stage / name),
                        dynamo=True,
                        dynamic_shapes=shapes,
                        input_names=list(signature.names),
                        output_names=[signature.output_name],
                        opset_version=opset,
                        external_data=external,
                        optimize=optimize,
                        verbose=False,
                    )
            except Exception as exc:
                raise _failure("onnx", exc, log) from exc
        details = _name_axes_and_inspect(stage / name, signature)
        details["exporter"] = exporter
        details["from_torch_export_program"] = program is not None and exporter == "dynamo"
        if details["fixed_dims"]:
            raise _fixed_dims_error(details, log)
    files = tuple(sorted(directory.glob(name + "*"))) if external else (directory / name,)
    return ExportedArtifact(
        "onnx",
        directory / name,
        signature,
        time.perf_counter() - start,
        files=files,
        details=details,
    )


def _name_axes_and_inspect(path: Path, signature: ExportSignature) -> dict[str, Any]:
    """Name the file's symbolic dimensions after the signature's axes, then inspect it: one
    parse of the file (which holds the weights unless they are external) for both."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if _name_axes(proto, signature):
        onnx.save(proto, str(path))
    return _inspect_proto(proto, signature)


def _name_axes(proto: Any, signature: ExportSignature) -> bool:
    """Give the graph's symbolic dimensions the signature's axis names (``batch``,
    ``sequence``) instead of the shape environment's ``s21``, everywhere they appear; whether
    anything was renamed."""
    names: dict[str, str] = {}
    by_name = {value.name: value for value in proto.graph.input}
    for spec in signature.inputs:
        value = by_name.get(spec.name)
        if value is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, axis in spec.axes.items():
            if dim < len(dims) and dims[dim].dim_param:
                names.setdefault(dims[dim].dim_param, axis)
    if not names or all(symbol == axis for symbol, axis in names.items()):
        return False
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    return True


def _fixed_dims_error(details: Mapping[str, Any], log: ExporterLog | None) -> ExportError:
    parts = []
    location = None
    outside_user_code = True
    for input_name, dim, axis, size in details["fixed_dims"]:
        where = log.specialization(int(size)) if log is not None else None
        site = log.specialization_site(int(size)) if log is not None else None
        location = location or where
        if where:
            at = f" (fixed at {where})"
        elif site is not None and site.module:
            owner = "torch's" if site.origin == "torch" else "a library's"
            at = f" (fixed inside {describe_site(site)}: {owner} code, not yours)"
        else:
            at = ""
        outside_user_code = outside_user_code and not where and bool(at)
        parts.append(f"the {axis} dimension {dim} of {input_name} is the constant {size}{at}")
    advice = (
        "The exporter traced a module of torch or of a library for one size; export this model "
        "with the TorchScript-based exporter (--export-onnx-exporter legacy)."
        if outside_user_code
        else "The exporter could not keep the dimension symbolic and silently fixed it; code "
        "that turns a size into a Python number (int(x.shape[1]), .tolist(), torch.tensor of a "
        "list) does this. Keep sizes symbolic (torch.arange(x.shape[1])); torch_export names "
        "the exact cause."
    )
    cause = "the ONNX graph does not accept other sizes: " + "; ".join(parts) + ". " + advice
    return ExportError(
        "onnx",
        cause,
        location=location,
        details={"kind": "fixed_dimension", "cause": cause, "location": location, **details},
    )


# --------------------------------------------------------------------------- TorchScript


def _tracer_warnings(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    found = []
    for item in caught:
        if not issubclass(item.category, torch.jit.TracerWarning):
            continue
        text = str(item.message).splitlines()[0]
        where = (
            describe_location(item.filename, item.lineno)
            if is_user_file(item.filename)
            else f"{Path(item.filename).name}:{item.lineno}"
        )
        entry = f"{where}: {text}"
        if entry not in found:
            found.append(entry)
    return found


def export_torchscript(
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
) -> ExportedArtifact:
    """Write ``model.torchscript.pt`` by tracing the wrapper, else scripting the model."""
    start = time.perf_counter()
    name = FORMATS["torchscript"].filename
    wrapper = ExportWrapper(model, adapter, signature)
    with (
        staged(directory, "torchscript") as stage,
        preserved_model(model, training=False),
        quiet_exporter() as log,
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                module: Any = torch.jit.trace(
                    wrapper, tuple(tensors), check_trace=False, strict=False
                )
                mode = "trace"
            except Exception as trace_exc:
                try:
                    module = torch.jit.script(model)
                    mode = "script"
                except Exception as script_exc:
                    traced = explain_export_error(trace_exc, "torchscript", log)
                    scripted = explain_export_error(script_exc, "torchscript", log)
                    raise ExportError(
                        "torchscript",
                        f"tracing failed ({traced.cause}) and so did scripting ({scripted.cause})",
                        location=traced.location or scripted.location,
                        details={"trace": traced.to_dict(), "script": scripted.to_dict()},
                    ) from trace_exc
        found = _tracer_warnings(caught)
        torch.jit.save(module, str(stage / name))
    details = {"mode": mode, "tracer_warnings": found}
    return ExportedArtifact(
        "torchscript",
        directory / name,
        signature,
        time.perf_counter() - start,
        details=details,
        warnings=tuple(found),
    )


# --------------------------------------------------------------------------- state dict


def export_state_dict(
    model: nn.Module, signature: ExportSignature, directory: Path
) -> ExportedArtifact:
    """Write ``model.safetensors`` (weights and persistent buffers; tied weights once)."""
    from safetensors.torch import save_model

    start = time.perf_counter()
    name = FORMATS["pytorch"].filename
    state = model.state_dict()
    with staged(directory, "pytorch") as stage:
        try:
            save_model(model, str(stage / name), metadata={"format": "pt"})
        except Exception as exc:
            odd = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
            hint = (
                f" The state dict holds non-tensor entries ({', '.join(odd[:5])}), which "
                "safetensors cannot store."
                if odd
                else ""
            )
            raise ExportError(
                "pytorch",
                f"safetensors cannot save the state dict: {type(exc).__name__}: {exc}.{hint}",
                details={"kind": "exception", "exception": str(exc)[:500]},
            ) from exc
    details = {
        "num_tensors": len(state),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return ExportedArtifact(
        "pytorch", directory / name, signature, time.perf_counter() - start, details=details
    )


# --------------------------------------------------------------------------- dispatch


def export_format(
    fmt: str,
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
    *,
    program: torch.export.ExportedProgram | None = None,
    onnx_exporter: str = "dynamo",
    opset: int | None = None,
) -> ExportedArtifact:
    """Export ``model`` to ``fmt`` in ``directory``; ``ExportError`` with the cause."""
    format_info(fmt)
    if fmt == "onnx":
        try:
            return export_onnx(
                model,
                adapter,
                signature,
                tensors,
                directory,
                program=program,
                exporter=onnx_exporter,
                opset=opset,
            )
        except ExportError as dynamo_error:
            if onnx_exporter != "dynamo" or dynamo_error.location is not None:
                raise  # a cause in the user's own code (a value branch, a fixed size) stands
            return _legacy_onnx_fallback(
                model, adapter, signature, tensors, directory, opset, dynamo_error
            )
    if fmt == "torch_export":
        return export_torch_export(model, adapter, signature, tensors, directory, program=program)
    if fmt == "torchscript":
        return export_torchscript(model, adapter, signature, tensors, directory)
    return export_state_dict(model, signature, directory)


def _legacy_onnx_fallback(
    model: nn.Module,
    adapter: TaskAdapter,
    signature: ExportSignature,
    tensors: Sequence[torch.Tensor],
    directory: Path,
    opset: int | None,
    dynamo_error: ExportError,
) -> ExportedArtifact:
    """The TorchScript-based exporter, when the dynamo exporter failed on this model.

    Some models the dynamo exporter cannot convert yet (torch 2.13 fails on Hugging Face T5's
    attention views) export fine the older way. Only failures inside the exporter fall back: a
    cause the exporter located in the user's code (data-dependent control flow, a size fixed
    from a Python int) is a bug to fix, reported as is. The artifact records why
    (``details["fallback"]`` and the dynamo error), ``test_export[onnx]`` reports it as a
    warning, and the shape sweep of ``test_export_parity[onnx]`` catches a size the older
    exporter baked into the graph. When both fail, the dynamo exporter's cause is raised.
    """
    try:
        artifact = export_onnx(
            model, adapter, signature, tensors, directory, exporter="legacy", opset=opset
        )
    except ExportError:
        raise dynamo_error from None
    artifact.details["fallback"] = "legacy"
    artifact.details["dynamo_error"] = str(dynamo_error)
    return artifact


# --------------------------------------------------------------------------- metadata


@functools.cache
def _versions() -> dict[str, str | None]:
    """The versions ``metadata.json`` records (looked up once a process)."""
    versions = collect_environment()
    versions["safetensors"] = distribution_version("safetensors")
    versions["onnxscript"] = distribution_version("onnxscript")
    versions["pytest-modeltiers"] = __version__
    return versions


def metadata_dict(
    directory: Path,
    signature: ExportSignature,
    artifacts: Mapping[str, ExportedArtifact],
    *,
    task: TaskSpec,
    model: nn.Module,
    quantized: ExportedArtifact | None = None,
    quantization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metadata.json`` content: versions, shapes, formats and every artifact's SHA-256.

    Artifact paths are relative to ``directory`` (the file's own directory), so a bundle can be
    moved or unpacked anywhere.
    """

    def entry(artifact: ExportedArtifact) -> dict[str, Any]:
        files = {
            str(f.relative_to(directory)): {"sha256": digest, "bytes": size}
            for f, (digest, size) in artifact.file_digests.items()
        }
        return {
            "file": str(artifact.path.relative_to(directory)),
            "files": files,
            "export_seconds": round(artifact.seconds, 3),
            "details": _json_ready(artifact.details),
        }

    data: dict[str, Any] = {
        "metadata_version": METADATA_VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "class_name": type(model).__name__,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
        "task": {
            "name": task.name,
            "task_type": task.task_type,
            "family": task.family,
            "vocab_size": task.vocab_size,
            "max_seq_len": task.max_seq_len,
            "max_target_len": task.max_target_len,
            "num_classes": task.num_classes,
            "image_size": list(task.image_size) if task.image_size else None,
        },
        "framework_versions": dict(_versions()),
        "signature": signature.to_dict(),
        "formats": {fmt: entry(artifact) for fmt, artifact in artifacts.items()},
        "quantization": None,
    }
    if quantized is not None:
        data["quantization"] = {"mode": quantization, **entry(quantized)}
    if extra:
        data.update(extra)
    return data


def _json_ready(value: Any) -> Any:
    return jsonable(value, where="details")


def write_metadata(directory: Path, data: Mapping[str, Any]) -> Path:
    """Write ``metadata.json`` atomically (the text is complete before the file is touched)."""
    text = dumps(data, indent=2) + "\n"
    return atomic_write_text(directory / METADATA_FILE, text)


# --------------------------------------------------------------------------- export_model


def needs_program(fmt: str, onnx_exporter: str) -> bool:
    """Whether exporting ``fmt`` uses the ``torch.export`` program: ``torch_export`` saves it,
    and the dynamo ONNX exporter starts from it (and exports on its own when tracing fails)."""
    return fmt == "torch_export" or (fmt == "onnx" and onnx_exporter == "dynamo")


@dataclass
class ExportRun:
    """What ``export_all`` produced: the signature, each artifact, the int8 artifact, failures."""

    signature: ExportSignature
    tensors: tuple[torch.Tensor, ...]
    artifacts: dict[str, ExportedArtifact]
    failures: list[ExportError]
    quantized: ExportedArtifact | None = None


def export_all(
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    directory: Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    quantization: str | None = None,
    *,
    onnx_exporter: str = "dynamo",
    opset: int | None = None,
    timeout: float | None = None,
) -> ExportRun:
    """Export every format into ``directory`` (one ``torch.export`` trace shared with ONNX).

    Failures are collected, not raised; an unavailable or failing quantization is a failure of
    the ``quantized`` pseudo-format.
    """
    for fmt in formats:
        format_info(fmt)
    signature, tensors = build_signature(model, adapter, task_spec)
    run = ExportRun(signature, tensors, {}, [])
    program: torch.export.ExportedProgram | None = None

    def bounded(what: str, fn: Any) -> Any:
        return fn() if timeout is None else call_with_timeout(fn, timeout, what)

    if any(needs_program(fmt, onnx_exporter) for fmt in formats):
        try:
            program = bounded(
                "torch.export", lambda: trace_program(model, adapter, signature, tensors)
            )
        except Exception as exc:
            if "torch_export" in formats:
                failures = (
                    exc if isinstance(exc, ExportError) else _failure("torch_export", exc, None)
                )
                run.failures.append(failures)
    for fmt in formats:
        if fmt == "torch_export" and program is None:
            continue  # its failure is recorded above

        def one(fmt: str = fmt) -> ExportedArtifact:
            return export_format(
                fmt,
                model,
                adapter,
                signature,
                tensors,
                directory,
                program=program,
                onnx_exporter=onnx_exporter,
                opset=opset,
            )

        try:
            run.artifacts[fmt] = bounded(f"exporting {fmt}", one)
        except ExportError as exc:
            run.failures.append(exc)
        except Exception as exc:
            run.failures.append(_failure(fmt, exc, None))
    if quantization not in (None, "none"):
        try:
            quantized_model = bounded(
                f"{quantization} quantization",
                lambda: quantize_model(model, adapter, task_spec, str(quantization)),
            )
            run.quantized = export_quantized(
                quantized_model, adapter, signature, tensors, directory
            )
        except QuantizationUnavailable as exc:
            run.failures.append(ExportError("quantized", str(exc), details={"kind": "unavailable"}))
        except ExportError as exc:
            run.failures.append(exc)
        except Exception as exc:
            run.failures.append(_failure("quantized", exc, None))
    return run


def combined_error(failures: Sequence[ExportError]) -> ExportError:
    """One ``ExportError`` naming every failed format and its cause."""
    return ExportError(
        ", ".join(f.format for f in failures),
        "; ".join(str(f) for f in failures),
        location=next((f.location for f in failures if f.location), None),
        details={"failures": [{"format": f.format, **f.details} for f in failures]},
    )


def export_model(
    model: nn.Module,
    adapter: TaskAdapter,
    task_spec: TaskSpec,
    export_dir: str | os.PathLike[str],
    formats: Sequence[str] = DEFAULT_FORMATS,
    quantization: str | None = None,
    *,
    onnx_exporter: str = "dynamo",
    opset: int | None = None,
    timeout: float | None = None,
) -> dict[str, Path]:
    """Export ``model`` to each format in ``export_dir`` and write ``metadata.json``.

    Returns ``{format: artifact path, ..., "metadata": path}`` (plus ``"quantized"`` when
    ``quantization`` is ``"dynamic"`` or ``"static"``). Every format is attempted; if any
    failed, ``ExportError`` lists each failure's cause after the others were written (and
    recorded in ``metadata.json``). ``timeout`` bounds each export in seconds.
    """
    directory = Path(export_dir)
    run = export_all(
        model,
        adapter,
        task_spec,
        directory,
        formats,
        quantization,
        onnx_exporter=onnx_exporter,
        opset=opset,
        timeout=timeout,
    )
    metadata = write_metadata(
        directory,
        metadata_dict(
            directory,
            run.signature,
            run.artifacts,
            task=task_spec,
            model=model,
            quantized=run.quantized,
            quantization=quantization,
        ),
    )
    if run.failures:
        raise combined_error(run.failures)
    paths: dict[str, Path] = {fmt: artifact.path for fmt, artifact in run.artifacts.items()}
    if run.quantized is not None:
        paths["quantized"] = run.quantized.path
    paths["metadata"] = metadata
    return paths
