"""``modeltiers sweep --config FILE``: a hyperparameter sweep of a training job, on Optuna.

PYTEST_DONT_REWRITE

The config names the job (``base``: ``modeltiers train``'s keys), what to vary (``params``)
and how (``sampler``, ``n_trials``, ``metric``, ``direction``, ``pruner``). Several processes
given the same config and ``--storage`` share the study, each taking the next trial. The exit
status is 0 when every trial this study ran succeeded (pruned ones too), 1 when a trial failed
or none completed, 2 for a config that cannot run. The package's modules are imported inside
the functions, so ``--help`` never imports torch or Optuna.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.config._util import did_you_mean, read_json_object
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.jsonio import dumps

if TYPE_CHECKING:
    from pytest_modeltiers.sweeps.runner import SweepResult

__all__ = ["CONFIG_KEYS", "add_parser", "load_sweep_config", "main_sweep", "render_table", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The sweep config's keys and their types; ``base`` and ``params`` are required.
CONFIG_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "base": (dict,),
    "params": (dict,),
    "sampler": (str,),
    "n_trials": (int,),
    "metric": (str,),
    "direction": (str,),
    "pruner": (str,),
    "seed": (int,),
    "db_path": (str,),
    "storage": (str,),
}


def add_parser(commands: Any) -> None:
    """Register ``sweep`` on the ``modeltiers`` command's subparsers."""
    parser = commands.add_parser(
        "sweep", help="run a hyperparameter sweep of a training job (Optuna) from a JSON config"
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the trials as JSON")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="the Optuna storage the study lives in, shared by every worker: a journal file "
        "path, or a URL such as sqlite:///sweeps.db or postgresql://... (default: the config's "
        "storage, else a journal file next to the experiment database)",
    )


def load_sweep_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config with its defaults; ``ConfigError`` naming the file and the bad key."""
    data = read_json_object(path, ConfigError)
    unknown = [key for key in data if key not in CONFIG_KEYS]
    if unknown:
        details = ", ".join(f"{key!r}{did_you_mean(str(key), CONFIG_KEYS)}" for key in unknown)
        raise ConfigError(f"{path}: unknown key(s): {details}")
    for key in ("base", "params"):
        if key not in data:
            raise ConfigError(
                f"{path}: missing {key!r} (base: the training job, as for modeltiers train; "
                "params: config key -> list of values or a range)"
            )
    for key, types in CONFIG_KEYS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise ConfigError(
                f"{path}: {key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
            )
    return {
        "name": data.get("name") or Path(path).stem,
        "sampler": data.get("sampler", "grid"),
        "metric": data.get("metric", "val/loss"),
        "direction": data.get("direction", "minimize"),
        "pruner": data.get("pruner", "median"),
        "db_path": data.get("db_path", "experiments.db"),
        **{k: data.get(k) for k in ("base", "params", "n_trials", "seed", "storage")},
    }


def run(args: argparse.Namespace) -> int:
    return main_sweep(args.config, as_json=args.json, storage=args.storage)


def main_sweep(
    config_path: str | os.PathLike[str], *, as_json: bool = False, storage: str | None = None
) -> int:
    """Run ``modeltiers sweep``; the exit status."""
    try:
        config = load_sweep_config(config_path)
    except ModelTiersError as exc:
        print(f"modeltiers sweep: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from pytest_modeltiers.sweeps.runner import run_sweep

    storage = storage if storage is not None else config["storage"]
    try:
        result = run_sweep(
            config["base"],
            config["params"],
            config["n_trials"],
            config["sampler"],
            config["direction"],
            config["metric"],
            db=config["db_path"],
            storage=storage,
            sweep_name=config["name"],
            pruner=config["pruner"],
            seed=config["seed"],
        )
    except ModelTiersError as exc:
        print(f"modeltiers sweep: {config_path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        print(dumps(result.to_dict(), indent=2))
    else:
        print(render_table(result))
    for trial in result.failed:
        print(f"modeltiers sweep: trial {trial.number} failed: {trial.error}", file=sys.stderr)
    if result.failed or not result.completed:
        return EXIT_FAILED
    return EXIT_OK


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def render_table(result: SweepResult) -> str:
    """The trials (params, metric, status, time, run) and the best one, as aligned text."""
    names = list(dict.fromkeys(name for trial in result.trials for name in trial.params))
    header = ["trial", *names, result.metric, "status", "time", "run"]
    rows = [
        [
            str(trial.number),
            *(_cell(trial.params.get(name)) for name in names),
            _cell(trial.value),
            trial.status,
            "-" if trial.duration_seconds is None else f"{trial.duration_seconds:.2f}s",
            _cell(trial.run_id),
        ]
        for trial in result.trials
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"sweep {result.sweep_id}: {len(result.trials)} trials, {result.sampler} sampler, "
        f"{result.direction} {result.metric}; study in {result.storage}, runs in "
        f"{result.db_path}",
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)),
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    lines.append(", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    best = result.best
    if best is None:
        lines.append("best: none (no trial completed)")
    else:
        shown = ", ".join(f"{key}={value!r}" for key, value in best.params.items())
        lines.append(
            f"best: trial {best.number} (run {best.run_id}) {result.metric}={best.value:.6g} "
            f"with {shown}"
        )
    return "\n".join(line.rstrip() for line in lines)
