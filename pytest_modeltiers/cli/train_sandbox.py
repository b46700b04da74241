"""The sandbox of ``modeltiers train``: the same wall as a pytest session's, around a training run.

PYTEST_DONT_REWRITE

The run writes its output folder (checkpoints, Lightning's files), the experiment database's
folder, the tracking loggers' folders and a temp dir of its own, and reads the Python
installation, the model's folder, the config's folder and the data files. ``torch.compile``
and a multi-process run get their allowances (``models.sandbox_plan``), named in the header
line the command prints on stderr. The mode comes from ``--sandbox`` or the config's
``sandbox`` key (``auto``, ``on``, ``off``), as ``--modeltiers-sandbox`` does for pytest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.errors import ConfigError

if TYPE_CHECKING:
    from pytest_modeltiers.models.sandbox import Sandbox

__all__ = ["SANDBOX_MODES", "train_sandbox"]

SANDBOX_MODES = ("auto", "on", "off")


def train_sandbox(
    data: Mapping[str, Any], training: Any, config_path: Path, mode: str | None
) -> Sandbox | None:
    """The sandbox ``modeltiers train`` enters before the model file runs, or None (``off``;
    ``auto`` where the kernel has none, or in a process that is not the command itself);
    ``ConfigError`` for ``on`` where it cannot confine. Prints on stderr why nothing is
    confined, when that is the kernel's or the user's choice."""
    from pytest_modeltiers.models.sandbox import Sandbox, landlock_abi
    from pytest_modeltiers.models.sandbox_plan import sandbox_policy

    mode = mode or str(data.get("sandbox") or "auto")
    if mode not in SANDBOX_MODES:
        raise ConfigError(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {mode!r}")
    if mode != "off" and not _started_as_the_command():
        # Confinement is for the whole process, irreversibly: a test or a notebook that calls
        # the command's code in its own process is not confined with it (as calling
        # run_training is not), and ``on`` says why it cannot be.
        if mode == "on":
            raise ConfigError(
                "sandbox on: this process is not the modeltiers command (a test or a notebook "
                "calling it), which confining would confine too; run `modeltiers train` as a "
                "command to have it confined"
            )
        return None
    if mode == "off":
        _say(
            "WARNING: sandbox off: the model's code runs with all of your rights (your files, "
            "the network, any program)"
        )
        return None
    abi, reason = landlock_abi()
    if abi is None:
        if mode == "on":
            raise ConfigError(
                f"sandbox on: {reason}; use sandbox auto to train with only the static safety "
                "scan where the sandbox is unavailable"
            )
        _say(
            f"sandbox unavailable ({reason}): only the static scan stands between the model "
            "and this machine"
        )
        return None
    writable = _writable(data, training)
    readable = [Path.cwd(), config_path.resolve().parent]
    for key in ("model_file", "model_path", "train_file", "validation_file"):
        if data.get(key):
            readable.append(Path(str(data[key])).resolve().parent)
    if training.resume_from_checkpoint:
        readable.append(Path(training.resume_from_checkpoint).resolve().parent)
    policy = sandbox_policy(writable, readable, _allowances(training))
    return Sandbox(policy, scratch=writable[0] / f"modeltiers-tmp-{os.getpid()}")


def _started_as_the_command() -> bool:
    """Whether this process was started as ``modeltiers`` (the script, or ``python -m
    pytest_modeltiers.cli``), as DDP ranks that Lightning starts again are too."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.startswith(__name__.rpartition(".")[0]):  # the cli package
        return True
    return Path(sys.argv[0]).name == "modeltiers"


def _writable(data: Mapping[str, Any], training: Any) -> list[Path]:
    """The run's output places, created now (a Landlock rule needs an existing folder)."""
    places = [Path(training.checkpoint_dir)]
    if data.get("log_to_db"):
        places.append(Path(str(data.get("db_path") or "experiments.db")).absolute().parent)
    if training.tensorboard_dir:
        places.append(Path(training.tensorboard_dir))
    uri = training.mlflow_tracking_uri or ""
    if uri.startswith("file:") or (uri and "://" not in uri):
        places.append(Path(uri.removeprefix("file://").removeprefix("file:")))
    if training.use_wandb:
        places.append(Path(os.environ.get("WANDB_DIR") or "wandb"))
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
    return list(dict.fromkeys(place.resolve() for place in places))


def _allowances(training: Any) -> list[Any]:
    from pytest_modeltiers.models.sandbox import inside_private_network
    from pytest_modeltiers.models.sandbox_plan import compiler_allowance, ddp_allowance
    from pytest_modeltiers.training.lightning_strategies import (
        external_launcher,
        resolve_distribution,
    )

    allowances = []
    if training.compile_mode is not None and (compiler := compiler_allowance()) is not None:
        allowances.append(compiler)
    processes = resolve_distribution(training).processes
    if processes > 1:
        # Ranks started by torchrun share no namespace this process could make: each would
        # be alone in its own. Ranks Lightning starts from this one are inside its namespace.
        private = external_launcher() is None or inside_private_network()
        allowances.append(ddp_allowance(processes, private_network=private))
    return allowances


def _say(line: str) -> None:
    print(f"modeltiers train: {line}", file=sys.stderr)
