"""``create_export_bundle``: a self-contained folder to ship, built all or nothing.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from pytest_modeltiers.atomic import atomic_write_text
from pytest_modeltiers.checks.export_health import ExportHealthChecker
from pytest_modeltiers.export.exporters import (
    combined_error,
    export_all,
    metadata_dict,
    write_metadata,
)
from pytest_modeltiers.export.formats import ARTIFACTS_DIR, DEFAULT_FORMATS
from pytest_modeltiers.jsonio import jsonable
from pytest_modeltiers.models.adapters import get_adapter

if TYPE_CHECKING:
    from pytest_modeltiers.checks.export_health import ExportHealthReport
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.config.training import TrainingConfig
    from pytest_modeltiers.models.adapters import TaskAdapter

__all__ = ["INFERENCE_SCRIPT", "create_export_bundle"]


def _bundle_name(base: Path) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    name, n = f"model_{stamp}", 2
    while (base / name).exists():
        name, n = f"model_{stamp}_{n}", n + 1
    return name


def create_export_bundle(
    model: nn.Module,
    config: Any = None,
    task_spec: TaskSpec | None = None,
    training_config: TrainingConfig | None = None,
    *,
    adapter: TaskAdapter | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
    export_base_dir: str | os.PathLike[str] | None = None,
    formats: Sequence[str] | None = None,
    quantization: str | None = None,
    run_health_checks: bool = True,
    onnx_exporter: str = "dynamo",
    timeout: float | None = None,
) -> Path:
    """Export ``model`` and write a bundle; return its path.

    Formats are ``formats``, else ``training_config.export_formats``, else
    onnx, torch_export, pytorch; the place is ``export_base_dir``, else
    ``training_config.export_dir``, else ``exports``. ``config`` (the model's own config object) is
    recorded in the metadata when it is JSON-serialisable.
    """
    if task_spec is None:
        raise ValueError(
            "create_export_bundle needs task_spec= (a TaskSpec): it decides the inputs, the "
            "output contract and what inference.py feeds the model"
        )
    adapter = adapter or get_adapter(task_spec)
    chosen = list(
        formats
        if formats is not None
        else (training_config.export_formats if training_config is not None else DEFAULT_FORMATS)
    )
    if not chosen:
        raise ValueError("no export format given: name at least one (e.g. formats=['onnx'])")
    base = Path(
        export_base_dir
        if export_base_dir is not None
        else (training_config.export_dir if training_config is not None else "exports")
    )
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", suffix=".partial", dir=base))
    try:
        _build(
            stage,
            model,
            config,
            task_spec,
            training_config,
            adapter,
            model_factory,
            chosen,
            quantization,
            run_health_checks,
            onnx_exporter,
            timeout,
        )
        final = base / _bundle_name(base)
        os.rename(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return final


def _build(
    stage: Path,
    model: nn.Module,
    config: Any,
    task: TaskSpec,
    training_config: TrainingConfig | None,
    adapter: TaskAdapter,
    model_factory: Callable[[], nn.Module] | None,
    formats: list[str],
    quantization: str | None,
    run_health_checks: bool,
    onnx_exporter: str,
    timeout: float | None,
) -> None:
    artifacts = stage / ARTIFACTS_DIR
    run = export_all(
        model,
        adapter,
        task,
        artifacts,
        formats,
        quantization,
        onnx_exporter=onnx_exporter,
        timeout=timeout,
    )
    if run.failures:
        raise combined_error(run.failures)
    (stage / "configs").mkdir()
    atomic_write_text(stage / "configs" / "task_spec.json", task.to_json() + "\n")
    if training_config is not None:
        atomic_write_text(
            stage / "configs" / "training_config.json", training_config.to_json() + "\n"
        )
    extra: dict[str, Any] = {"bundle_layout": "1.0"}
    if config is not None:
        try:
            extra["model_config"] = jsonable(_as_plain(config), where="model_config")
        except TypeError:  # a value with no JSON form (a dtype, a function): its description
            extra["model_config"] = repr(config)[:2000]
    metadata = metadata_dict(
        stage,
        run.signature,
        run.artifacts,
        task=task,
        model=model,
        quantized=run.quantized,
        quantization=quantization,
        extra=extra,
    )
    report: ExportHealthReport | None = None
    if run_health_checks:
        write_metadata(stage, metadata)  # the checker reads the signature from it
        checked = [*formats, *(["quantized"] if run.quantized is not None else [])]
        checker = ExportHealthChecker(
            model,
            config,
            task,
            adapter=adapter,
            model_factory=model_factory,
        )
        report = checker.run_all_checks(stage, checked)
        report.save_json(artifacts / "health_report.json")
        report.save_markdown(stage / "health_report.md")
        metadata["health"] = {
            "health_score": report.health_score,
            "all_passed": report.all_passed,
            "report": f"{ARTIFACTS_DIR}/health_report.json",
        }
    write_metadata(stage, metadata)
    atomic_write_text(stage / "inference.py", INFERENCE_SCRIPT)
    atomic_write_text(stage / "requirements.txt", _requirements(metadata))
    atomic_write_text(stage / "README.md", _readme(metadata, report, training_config is not None))


def _as_plain(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if hasattr(config, "__dict__") and not isinstance(config, dict):
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    return config


def _requirements(metadata: dict[str, Any]) -> str:
    versions = metadata["framework_versions"]
    lines = []
    for package, key in (
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("safetensors", "safetensors"),
    ):
        if versions.get(key):
            lines.append(f"{package}=={versions[key]}")
    return "\n".join(lines) + "\n"


def _dims(spec: dict[str, Any]) -> list[Any]:
    return [spec["dynamic_axes"].get(str(d), size) for d, size in enumerate(spec["shape"])]


def _readme(metadata: dict[str, Any], report: ExportHealthReport | None, has_training: bool) -> str:
    task = metadata["task"]
    signature = metadata["signature"]
    inputs = ", ".join(f"`{i['name']}` {i['dtype']} {_dims(i)}" for i in signature["inputs"])
    lines = [
        f"# Exported {metadata['model']['class_name']} ({task['name']})",
        "",
        f"Exported {metadata['exported_at']} by pytest-modeltiers "
        f"{metadata['framework_versions'].get('pytest-modeltiers')} with torch "
        f"{metadata['framework_versions'].get('torch')}.",
        "",
        f"- Inputs: {inputs} (named dimensions are dynamic)",
        f"- Output: `{signature['output']['name']}` {signature['output']['dtype']}, the model's "
        f"logits ({task['family']} task)",
        "",
        "## Files",
        "",
        "| file | format | bytes | sha256 |",
        "|---|---|---|---|",
    ]
    entries = dict(metadata["formats"])
    if metadata.get("quantization"):
        entries["quantized (" + str(metadata["quantization"]["mode"]) + " int8)"] = metadata[
            "quantization"
        ]
    for fmt, entry in entries.items():
        for name, info in entry["files"].items():
            lines.append(f"| `{name}` | {fmt} | {info['bytes']} | `{info['sha256'][:16]}...` |")
    lines += [
        "",
        "Also: `metadata.json` (signature, versions, every SHA-256), `configs/task_spec.json`"
        + (", `configs/training_config.json`" if has_training else "")
        + ", `requirements.txt`.",
        "",
        "## Run it",
        "",
        "```bash",
        "pip install -r requirements.txt",
        "python inference.py            # ONNX if present, else the .pt2 program",
        "python inference.py --runtime torch_export --batch-size 4",
        "```",
        "",
        "From Python, with pytest-modeltiers installed:",
        "",
        "```python",
        "from pytest_modeltiers import load_exported_model",
        'model = load_exported_model("path/to/this/folder", runtime="onnx")',
        f"logits = model({', '.join(i['name'] + '=...' for i in signature['inputs'])})",
        "```",
        "",
    ]
    if report is not None:
        score = report.health_score
        lines += [
            "## Health",
            "",
            f"Health score {'n/a' if score is None else f'{score:.1f}/100'}; all checks passed: "
            f"{'yes' if report.all_passed else 'no'}. Details: `health_report.md` and "
            "`artifacts/health_report.json`.",
            "",
        ]
    return "\n".join(lines)


#: A standalone script (numpy, onnxruntime or torch only) that runs the bundle's artifact.
INFERENCE_SCRIPT = '''"""Run this bundle's exported model on one example input.

Generated by pytest-modeltiers.

Usage: python inference.py [--runtime onnx|torch_export] [--batch-size N] [--seq-len T]

The artifact's SHA-256 is checked against metadata.json before it is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def example_inputs(metadata, batch_size, seq_len, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    task = metadata["task"]
    signature = metadata["signature"]
    ranges = signature.get("ranges", {})
    inputs = {}
    for spec in signature["inputs"]:
        shape = list(spec["shape"])
        for dim, axis in spec["dynamic_axes"].items():
            if axis == "batch":
                shape[int(dim)] = batch_size
            elif axis in ("sequence", "target") and seq_len is not None:
                high = ranges.get(axis, {}).get("max")
                shape[int(dim)] = min(seq_len, high) if high else seq_len
        if spec["name"].endswith("attention_mask"):
            inputs[spec["name"]] = np.ones(shape, dtype=spec["dtype"])
        elif spec["dtype"].startswith("int"):
            vocab = task.get("vocab_size") or 2
            inputs[spec["name"]] = rng.integers(0, vocab, size=shape).astype(spec["dtype"])
        else:
            inputs[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    return inputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["onnx", "torch_export"], default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=None)
    args = parser.parse_args(argv)
    metadata = json.loads((HERE / "metadata.json").read_text(encoding="utf-8"))
    formats = metadata["formats"]
    runtime = args.runtime or ("onnx" if "onnx" in formats else "torch_export")
    if runtime not in formats:
        sys.exit(f"this bundle has no {runtime} artifact; it has {', '.join(formats)}")
    entry = formats[runtime]
    for name, info in entry["files"].items():
        if sha256(HERE / name) != info["sha256"]:
            sys.exit(f"{name} does not match metadata.json (changed or damaged); re-export it")
    inputs = example_inputs(metadata, args.batch_size, args.seq_len)
    names = [spec["name"] for spec in metadata["signature"]["inputs"]]
    if runtime == "onnx":
        import onnxruntime as ort

        path = str(HERE / entry["file"])
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        logits = session.run(None, {k: v for k, v in inputs.items() if k in wanted})[0]
    else:
        import torch

        program = torch.export.load(str(HERE / entry["file"]))
        tensors = [torch.from_numpy(inputs[name]) for name in names]
        logits = program.module()(*tensors).detach().numpy()
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
    print(f"runtime: {runtime}")
    print(f"inputs: {shapes}")
    print(f"logits: shape {list(logits.shape)}, dtype {logits.dtype}")
    print(f"predictions (argmax of the first example): {logits[0].argmax(-1).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''
