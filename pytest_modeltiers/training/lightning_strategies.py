"""Where and how a training run executes: accelerator, strategy, devices, precision.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.errors import ConfigError, ModelTiersWarning, stacklevel_outside_package

if TYPE_CHECKING:
    from pytest_modeltiers.config.training import TrainingConfig

__all__ = [
    "ACCELERATORS",
    "Distribution",
    "external_launcher",
    "in_notebook",
    "relaunch_blocker",
    "resolve_distribution",
    "show_progress_bar",
]

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
_TORCHRUN_VARS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_MULTI_PROCESS = ("ddp", "fsdp")


@dataclass(frozen=True)
class Distribution:
    """The resolved execution settings, and the guardrail messages that changed the request."""

    accelerator: str
    strategy: str
    devices: int | list[int]
    num_nodes: int
    precision: str
    requested_strategy: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def processes(self) -> int:
        """Processes in the whole run (devices per node times nodes)."""
        per_node = len(self.devices) if isinstance(self.devices, list) else self.devices
        return per_node * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "strategy": self.strategy,
            "requested_strategy": self.requested_strategy,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "precision": self.precision,
            "processes": self.processes,
        }


def in_notebook() -> bool:
    """True inside Jupyter (a ZMQ kernel) or Google Colab."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show_progress_bar() -> bool:
    """A progress bar only where someone watches a terminal (not in notebooks, CI logs, pipes)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not in_notebook()


def external_launcher() -> dict[str, int] | None:
    """``torchrun``'s world (rank, local rank, local and global world size), else None."""
    if not all(name in os.environ for name in _TORCHRUN_VARS):
        return None
    try:
        return {
            "rank": int(os.environ["RANK"]),
            "local_rank": int(os.environ["LOCAL_RANK"]),
            "local_world_size": int(os.environ["LOCAL_WORLD_SIZE"]),
            "world_size": int(os.environ.get("WORLD_SIZE", os.environ["LOCAL_WORLD_SIZE"])),
        }
    except ValueError:
        return None


def relaunch_blocker() -> str | None:
    """Why Lightning could not re-run this process's command line, or None when it can."""
    if in_notebook():
        return "this is a notebook"
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    spec_name = getattr(spec, "name", "") or ""
    main_file = getattr(main, "__file__", None)
    if spec_name.split(".")[0] in ("pytest", "_pytest", "xdist"):
        return "the main program is pytest (re-running it would re-run the test session)"
    if main_file is None and not spec_name:
        return "the main program is an interactive session or `python -c`"
    if main_file is not None and Path(main_file).name in ("pytest", "py.test"):
        return "the main program is pytest (re-running it would re-run the test session)"
    return None


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _accelerator(requested: str) -> str:
    if requested not in ACCELERATORS:
        raise ConfigError(
            f"accelerator must be one of {', '.join(ACCELERATORS)}, got {requested!r}"
        )
    if requested == "auto":
        return "gpu" if _cuda_count() > 0 else "cpu"
    return "gpu" if requested == "cuda" else requested


def _devices(value: Any, accelerator: str, launcher: dict[str, int] | None) -> int | list[int]:
    """Devices per node as Lightning takes them: an int, or a list of GPU indices."""
    if accelerator == "cpu":
        if value == "auto":
            return launcher["local_world_size"] if launcher else 1
        if isinstance(value, list) or value == -1:
            raise ConfigError(
                f"devices={value!r} selects GPUs, but this run is on CPU, where devices is the "
                "number of processes: set devices to a positive integer (2 trains in two "
                "CPU processes with ddp), or run on a machine with CUDA"
            )
        return int(value)
    visible = _cuda_count()
    if value == "auto":
        return launcher["local_world_size"] if launcher else max(1, visible)
    if value == -1:
        return max(1, visible)
    wanted = len(value) if isinstance(value, list) else int(value)
    if launcher is None and wanted > visible:
        raise ConfigError(
            f"devices={value!r} asks for {wanted} GPUs but {visible} are visible "
            "(CUDA_VISIBLE_DEVICES and torch.cuda.device_count()); lower devices or use 'auto'"
        )
    if isinstance(value, list):
        missing = [d for d in value if d >= visible]
        if missing and launcher is None:
            raise ConfigError(f"devices lists GPU indices {missing} but {visible} are visible")
        return list(value)
    return wanted


def _precision(config: TrainingConfig) -> str:
    precision = str(config.precision)
    if not config.use_amp and precision.endswith("-mixed"):
        return "32-true"
    return precision


def resolve_distribution(config: TrainingConfig, accelerator: str = "auto") -> Distribution:
    """The execution settings for ``config``; warns (``ModelTiersWarning``) on every guardrail."""
    launcher = external_launcher()
    acc = _accelerator(accelerator)
    devices = _devices(config.devices, acc, launcher)
    requested = str(config.strategy)
    strategy = requested
    notes: list[str] = []
    num_nodes = int(config.num_nodes)
    per_node = len(devices) if isinstance(devices, list) else devices
    processes = per_node * num_nodes

    if strategy == "fsdp" and acc != "gpu":
        notes.append(
            "strategy 'fsdp' shards the model across GPUs, but this run has no CUDA device; "
            "training with strategy 'auto' instead. Use 'ddp' for several CPU processes."
        )
        strategy = "auto"
    elif strategy == "fsdp" and processes < 2:
        notes.append(
            "strategy 'fsdp' on a single GPU shards nothing: it runs, with FSDP's overhead and "
            "none of its memory savings. Use 'auto' on one GPU, 'fsdp' on several."
        )
    if strategy == "ddp" and processes < 2:
        notes.append(
            f"strategy 'ddp' with {_describe(devices, acc)} and num_nodes="
            f"{num_nodes} is one process: falling back to strategy 'auto'. Set "
            "devices to 2 or more (GPUs, or CPU processes) for data parallelism."
        )
        strategy = "auto"
    if processes > 1 and launcher is None and strategy in (*_MULTI_PROCESS, "auto"):
        blocker = relaunch_blocker()
        if blocker is not None:
            notes.append(
                f"{processes} processes were requested, but {blocker}, and Lightning starts "
                "the extra processes by re-running the command line: training in one process "
                "with strategy 'auto' instead. For several processes run `torchrun "
                "--nproc_per_node=N -m pytest_modeltiers.cli train --config FILE` or a script."
            )
            strategy, num_nodes = "auto", 1
            devices = devices[:1] if isinstance(devices, list) else 1
    for note in notes:  # pointed at the user's line (a notebook cell, a script), not ours
        warnings.warn(note, ModelTiersWarning, stacklevel=stacklevel_outside_package())
    return Distribution(
        accelerator=acc,
        strategy=strategy,
        devices=devices,
        num_nodes=num_nodes,
        precision=_precision(config),
        requested_strategy=requested,
        notes=tuple(notes),
    )


def _describe(devices: int | list[int], accelerator: str) -> str:
    unit = "GPU" if accelerator == "gpu" else "CPU process"
    count = len(devices) if isinstance(devices, list) else devices
    return f"{count} {unit}{'' if count == 1 else 'es' if unit.endswith('s') else 's'}"
