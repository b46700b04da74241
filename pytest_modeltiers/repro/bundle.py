"""``create_repro_bundle``: one zip that holds everything needed to rerun a training run.

PYTEST_DONT_REWRITE

The bundle of run N of an experiment database holds its configs, the model's source files,
the environment (where it trained, and where it was packed), its metrics as CSV, the data's
fingerprint (and the data files of a ``modeltiers train`` run), the seed and determinism
settings, the final weights as safetensors, SVG plots of its curves, ``reproduce.sh`` (which
retrains it with ``modeltiers train --config configs/train.json``) and ``MANIFEST.json`` with
the sha256 of every other member. Whatever a run did not record is listed under ``missing``
in the manifest with the reason, never left out silently. The zip is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.atomic import atomic_write
from pytest_modeltiers.digest import file_sha256
from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.jsonio import dumps
from pytest_modeltiers.repro.environment import capture_environment
from pytest_modeltiers.version import __version__

if TYPE_CHECKING:
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.config.training import TrainingConfig
    from pytest_modeltiers.report.health_report import HealthReport
    from pytest_modeltiers.store.experiment_db import ExperimentDB

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "REPRODUCE",
    "ReproBundleError",
    "bundle_name",
    "create_repro_bundle",
]

BUNDLE_FORMAT = 1
MANIFEST = "MANIFEST.json"
REPRODUCE = "reproduce.sh"
#: The folder of the session's health report, when one is bundled.
HEALTH_DIR = "health"
TRAIN_CONFIG = "configs/train.json"
#: Where ``reproduce.sh`` writes the retrained run, inside the unzipped bundle.
REPRODUCED_DIR = "reproduced"
#: Keys of a ``modeltiers train`` config that name the model (replaced by the bundled file).
_MODEL_KEYS = ("model_file", "model_path", "gist_id", "gist_revision")
_DATA_KEYS = ("train_file", "validation_file")
#: TrainingConfig fields a rebuilt ``modeltiers train`` config leaves out: meta, the output
#: folder (replaced), and sizes the command would turn into task options (the task file has
#: the run's own).
_NOT_RETRAINED = ("created_at", "checkpoint_dir", "max_seq_len", "vocab_size")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ReproBundleError(ModelTiersError):
    """A bundle cannot be written (the run's files changed or vanished), or read."""


def bundle_name(run_id: int) -> str:
    return f"repro_run{run_id}.zip"


def create_repro_bundle(
    run_id: int,
    db: ExperimentDB | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    training_config: TrainingConfig | None = None,
    task_spec: TaskSpec | None = None,
    eval_config: EvalConfig | None = None,
    include_checkpoint: bool = True,
    include_plots: bool = True,
    health_report: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``output_dir/repro_run<ID>.zip`` for run ``run_id`` of ``db`` and return its path.

    ``db`` is an ``ExperimentDB`` or its path. ``training_config``, ``task_spec`` and
    ``eval_config`` default to what the run recorded; given, they must agree with it
    (``ReproBundleError`` names the differences), and they stand in for a run that did not
    record them. ``include_plots`` needs matplotlib (``pip install 'pytest-modeltiers[report]'``).
    ``health_report`` (the JSON health report of a session that tested the run's model) puts
    that report under ``health/``: its JSON, its Markdown, its HTML page and, with plots, the
    SVG of every plot the page draws (``health/plots/``); a report that cannot be read is a
    ``ReproBundleError`` before anything is written.
    """
    from pytest_modeltiers.store.experiment_db import ExperimentDB

    if include_plots:
        _require_matplotlib()
    health = None if health_report is None else _read_health_report(Path(health_report))
    if isinstance(db, ExperimentDB):
        given: contextlib.AbstractContextManager[ExperimentDB] = contextlib.nullcontext(db)
    else:
        path = Path(db)
        if not path.is_file():
            raise ReproBundleError(f"experiment database {path} does not exist")
        given = ExperimentDB(path)  # opened here, so closed here
    with given as opened:
        return _Bundle(opened, run_id).write(
            Path(output_dir),
            training_config,
            task_spec,
            eval_config,
            include_checkpoint,
            include_plots,
            health,
        )


def _read_health_report(path: Path) -> HealthReport:
    from pytest_modeltiers.report.gate import GateVerdict, load_report

    loaded = load_report(path)
    if isinstance(loaded, GateVerdict):
        raise ReproBundleError(
            f"the health report cannot go in the bundle: {'; '.join(loaded.lines)}"
        )
    return loaded


def _require_matplotlib() -> None:
    from pytest_modeltiers.extras import REPORT_EXTRA, install_command

    if REPORT_EXTRA.missing():
        raise ReproBundleError(
            "the bundle's plots need matplotlib, which is not installed; install it with "
            f"{install_command([REPORT_EXTRA.name])}, or pass include_plots=False "
            "(modeltiers repro --no-plots)"
        )


def _json(value: Any) -> bytes:
    return (dumps(value, indent=2) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Bundle:
    """The members of one run's bundle, gathered before anything is written."""

    def __init__(self, db: ExperimentDB, run_id: int) -> None:
        self.db = db
        self.run = db.get_run(run_id)  # RunNotFoundError names the id and the database
        self.run_id = int(self.run["run_id"])
        self.params = db.get_params(self.run_id)
        self.members: dict[str, bytes] = {}
        self.missing: dict[str, str] = {}
        self.what = f"run {self.run_id} ({self.run['run_name']!r}) of {db.path}"

    # -- the members -------------------------------------------------------------------------

    def write(
        self,
        output_dir: Path,
        training_config: TrainingConfig | None,
        task_spec: TaskSpec | None,
        eval_config: EvalConfig | None,
        include_checkpoint: bool,
        include_plots: bool,
        health: HealthReport | None = None,
    ) -> Path:
        training = self._config("training_config", training_config, self.run.get("config"))
        task = self._config("task_spec", task_spec, self.params.get("task_spec"))
        evaluation = self._config("eval_config", eval_config, self.params.get("eval_config"))
        source = self._model_source()
        data_files = self._data()
        self._environment(source)
        rows = self._metrics()
        self._seed(training)
        if include_checkpoint:
            self._checkpoint()
        else:
            self.missing["checkpoint"] = "include_checkpoint=False"
        if include_plots:
            from pytest_modeltiers.repro.plots import curve_plots

            self.members.update(curve_plots(rows, f"run {self.run_id}"))
            if not rows:
                self.missing["plots"] = "the run logged no metrics"
        else:
            self.missing["plots"] = "include_plots=False"
        if health is not None:
            self._health(health, include_plots)
        self.members["run.json"] = _json(
            {
                "run": self.run,
                "params": {k: v for k, v in self.params.items() if k != "environment"},
            }
        )
        reason = self._train_config(training, task, evaluation, source, data_files)
        self.members[REPRODUCE] = _reproduce_script(self.what, reason).encode("utf-8")
        if reason is not None:
            self.missing["reproduce"] = reason
        self.members["README.md"] = _readme(self.what, reason, self.missing).encode("utf-8")
        self.members[MANIFEST] = _json(self._manifest())
        target = output_dir / bundle_name(self.run_id)
        return atomic_write(target, self._zip)

    def _health(self, report: HealthReport, include_plots: bool) -> None:
        """The session's health report beside the run: the same page and plots as
        ``--modeltiers-html`` (without plots, the page and no SVG files)."""
        from pytest_modeltiers.report.html import PLOTS_DIR, render_html
        from pytest_modeltiers.report.markdown import render_markdown

        data = report.to_dict()
        self.members[f"{HEALTH_DIR}/health.json"] = report.to_json().encode("utf-8")
        self.members[f"{HEALTH_DIR}/health.md"] = render_markdown(data).encode("utf-8")
        plots = []
        if include_plots:
            from pytest_modeltiers.report.plots import draw_checks

            plots = draw_checks(data["checks"])
        self.members[f"{HEALTH_DIR}/health.html"] = render_html(report, plots).encode("utf-8")
        for plot in plots:
            self.members[f"{HEALTH_DIR}/{PLOTS_DIR}/{plot.key}.svg"] = plot.svg.encode("utf-8")

    def _config(self, name: str, given: Any, recorded: Any) -> dict[str, Any] | None:
        member = f"configs/{name}.json"
        if given is None:
            if recorded is None:
                self.missing[member] = f"{self.what} did not record its {name}"
                return None
            self.members[member] = _json(recorded)
            return dict(recorded)
        value = given.to_dict()
        if recorded is not None:
            changed = sorted(
                key
                for key in set(value) | set(recorded)
                if key != "created_at" and value.get(key) != recorded.get(key)
            )
            if changed:
                shown = ", ".join(
                    f"{key}: recorded {recorded.get(key)!r}, given {value.get(key)!r}"
                    for key in changed[:5]
                )
                raise ReproBundleError(
                    f"the given {name} differs from the one {self.what} recorded ({shown}); "
                    f"leave {name} out to bundle what the run used"
                )
        self.members[member] = _json(value)
        return dict(value)

    def _model_source(self) -> dict[str, Any] | None:
        source = self.params.get("model_source")
        gist = {
            key: self.run.get(f"gist_{key}")
            for key in ("id", "revision", "sha256")
            if self.run.get(f"gist_{key}") is not None
        }
        if not isinstance(source, Mapping) or not source.get("entry"):
            reason = (
                source.get("reason")
                if isinstance(source, Mapping) and source.get("reason")
                else f"{self.what} did not record its model's source files"
            )
            self.missing["model"] = str(reason)
            return None
        root = Path(str(source["root"]))
        for relative, expected in dict(source["files"]).items():
            path = root / relative
            if not path.is_file():
                raise ReproBundleError(
                    f"model source {path} of {self.what} no longer exists; restore it (sha256 "
                    f"{expected}) to bundle the run"
                )
            data = path.read_bytes()
            if _sha256(data) != expected:
                raise ReproBundleError(
                    f"model source {path} changed since {self.what} used it (sha256 "
                    f"{_sha256(data)}, recorded {expected}): the bundle would not reproduce the "
                    "run. Restore the file as it was (git history?) to bundle it"
                )
            self.members[f"model/{relative}"] = data
        self.members["model/SOURCE.json"] = _json(
            {
                "entry": source["entry"],
                "files": source["files"],
                "class": source.get("class"),
                "original_folder": str(root),
                "gist": gist or None,
            }
        )
        return dict(source)

    def _data(self) -> dict[str, str]:
        """``data.json`` (the fingerprint) and the data files of a ``modeltiers train`` run;
        returns ``{config key: member name}`` for those files."""
        fingerprint = self.params.get("data_fingerprint")
        cli = self.params.get("cli_config") or {}
        files: dict[str, str] = {}
        listed: dict[str, Any] = {}
        for key in _DATA_KEYS:
            if not cli.get(key):
                continue
            path = Path(cli[key])
            if not path.is_file():
                raise ReproBundleError(
                    f"{key} {path} of {self.what} no longer exists; restore it to bundle the run"
                )
            member = f"data/{key}{path.suffix}"
            self.members[member] = path.read_bytes()
            files[key] = member
            listed[key] = {"original": str(path), "member": member, "sha256": file_sha256(path)}
        if fingerprint is None:
            self.missing["data.json"] = f"{self.what} did not record its data's fingerprint"
        self.members["data.json"] = _json(
            {"source": self.params.get("data"), "fingerprint": fingerprint, "files": listed}
        )
        return files

    def _environment(self, source: Mapping[str, Any] | None) -> None:
        recorded = self.params.get("environment")
        if recorded is None:
            self.missing["environment.json:run"] = f"{self.what} did not record its environment"
        folder = source.get("root") if source else None
        self.members["environment.json"] = _json(
            {"run": recorded, "bundle": capture_environment(folder)}
        )

    def _metrics(self) -> list[dict[str, Any]]:
        frame = self.db.get_metrics(self.run_id)
        columns = ["epoch", "step", "split", "metric_name", "value", "timestamp"]
        rows = [{c: _plain(row.get(c)) for c in columns} for row in frame.to_dict(orient="records")]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.members["metrics.csv"] = buffer.getvalue().encode("utf-8")
        return rows

    def _seed(self, training: Mapping[str, Any] | None) -> None:
        recorded = self.params.get("seed")
        if recorded is None and training is not None:
            from pytest_modeltiers.config.training import TrainingConfig
            from pytest_modeltiers.repro.provenance import seed_settings  # imports torch

            try:
                recorded = seed_settings(TrainingConfig.from_dict(training))
            except ModelTiersError as exc:
                self.missing["seed.json"] = (
                    f"{self.what} recorded a config that is not valid: {exc}"
                )
                return
        if recorded is None:
            self.missing["seed.json"] = f"{self.what} recorded no config to read the seed from"
            return
        self.members["seed.json"] = _json(recorded)

    def _checkpoint(self) -> None:
        frame = self.db.get_artifacts(self.run_id, "checkpoint")
        records = frame.to_dict(orient="records")
        if not records:
            self.missing["checkpoint"] = f"{self.what} recorded no checkpoint"
            return

        def rank(record: Mapping[str, Any]) -> int:
            meta = record.get("metadata") or {}
            return 0 if meta.get("last") else 1 if meta.get("best") else 2

        chosen = min(records, key=rank)  # newest first already: ties keep the newest
        path = self.db.artifact_file(int(chosen["artifact_id"]))  # checks its sha256
        from safetensors.torch import save

        from pytest_modeltiers.training.checkpoints import load_model_weights

        state = load_model_weights(path)
        import torch

        tensors = {
            key: value.detach().cpu().clone().contiguous()
            for key, value in state.items()
            if isinstance(value, torch.Tensor)
        }
        skipped = sorted(key for key in state if key not in tensors)
        self.members["checkpoint/model.safetensors"] = save(
            tensors, metadata={"run_id": str(self.run_id), "checkpoint": path.name}
        )
        self.members["checkpoint/checkpoint.json"] = _json(
            {
                "from": str(chosen["filepath"]),
                "sha256": file_sha256(path),
                "metadata": chosen.get("metadata"),
                "weights": "the model's state_dict (without Lightning's prefix)",
                "not_tensors": skipped,
                "load": "model.load_state_dict(safetensors.torch.load_file(PATH))",
            }
        )

    def _train_config(
        self,
        training: Mapping[str, Any] | None,
        task: Mapping[str, Any] | None,
        evaluation: Mapping[str, Any] | None,
        source: Mapping[str, Any] | None,
        data_files: Mapping[str, str],
    ) -> str | None:
        """Write ``configs/train.json`` for ``reproduce.sh``; return why the run cannot be
        retrained from the bundle, or None."""
        if source is None:
            return f"{self.what} did not record its model's source files"
        cli = self.params.get("cli_config")
        if isinstance(cli, Mapping):
            config = {k: v for k, v in cli.items() if k not in (*_MODEL_KEYS, *_DATA_KEYS)}
            config.update(data_files)
        else:
            if training is None:
                return f"{self.what} did not record its training config"
            data = str(self.params.get("data") or "")
            if not data.startswith("the shipped"):
                return (
                    f"{self.what} trained on {data or 'data it did not record'}, passed in "
                    "Python: a bundle cannot hold it"
                )
            config = {k: v for k, v in training.items() if k not in _NOT_RETRAINED}
            if task is not None:
                config["task_name"] = "configs/task_spec.json"
            if evaluation is not None:
                config["eval"] = dict(evaluation)
        if config.get("resume_from_checkpoint"):
            return (
                f"{self.what} resumed from {config['resume_from_checkpoint']}, which is not in "
                "the bundle: retrain the run it resumed from"
            )
        config.update(
            model_file=f"model/{source['entry']}",
            output_dir=f"{REPRODUCED_DIR}/training_output",
            log_to_db=True,
            db_path=f"{REPRODUCED_DIR}/experiments.db",
        )
        self.members[TRAIN_CONFIG] = _json(config)
        return None

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_by": f"pytest-modeltiers {__version__}",
            "run": {
                "run_id": self.run_id,
                "run_name": self.run["run_name"],
                "status": self.run.get("status"),
                "database": str(self.db.path),
            },
            "reproduce": f"sh {REPRODUCE}",
            "missing": dict(sorted(self.missing.items())),
            "members": {
                name: {"sha256": _sha256(data), "size": len(data)}
                for name, data in sorted(self.members.items())
                if name != MANIFEST
            },
        }

    def _zip(self, handle: Any) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(self.members.items()):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                mode = 0o755 if name == REPRODUCE else 0o644
                info.external_attr = (0o100000 | mode) << 16
                archive.writestr(info, data)


def _plain(value: Any) -> Any:
    """A CSV cell: None for missing values (NaN in pandas' frames), numbers as Python's."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _reproduce_script(what: str, reason: str | None) -> str:
    head = (
        "#!/bin/sh\n"
        f"# Retrains {what} from this bundle.\n"
        "# Run it from anywhere (it works in the folder the bundle was unzipped into) with\n"
        "# pytest-modeltiers[train] installed; environment.json lists the packages the run used.\n"
        f"# The new run is recorded in {REPRODUCED_DIR}/experiments.db; compare its final metrics\n"
        "# with metrics.csv.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
    )
    if reason is not None:
        quoted = reason.replace("'", "'\\''")
        return head + f"echo 'reproduce.sh: cannot retrain: {quoted}' >&2\nexit 2\n"
    return head + f"exec modeltiers train --config {TRAIN_CONFIG}\n"


def _readme(what: str, reason: str | None, missing: Mapping[str, str]) -> str:
    lines = [
        f"# Reproducibility bundle of {what}",
        "",
        "| member | what |",
        "|---|---|",
        "| `configs/` | the training, task and evaluation configs; `train.json` for reproduce.sh |",
        "| `model/` | the model's source files (`SOURCE.json`: their sha256, gist id) |",
        "| `environment.json` | Python, platform, packages, torch/CUDA/cuDNN, devices, git |",
        "| `metrics.csv` | every metric the run logged |",
        "| `data.json`, `data/` | the data's fingerprint, and the data files of the run |",
        "| `seed.json` | the seed and determinism settings |",
        "| `checkpoint/` | the final weights (safetensors) |",
        "| `plots/` | the run's curves (SVG) |",
        "| `health/` | when given: the session's health report (JSON, Markdown, HTML, plots) |",
        "| `MANIFEST.json` | the sha256 of every member: `modeltiers repro --verify THIS.zip` |",
        "",
    ]
    if reason is None:
        lines.append("Retrain with `sh reproduce.sh` (it runs `modeltiers train`).")
    else:
        lines.append(f"This run cannot be retrained from the bundle: {reason}.")
    if missing:
        lines += ["", "Not in this bundle:", ""]
        lines += [f"- `{name}`: {why}" for name, why in sorted(missing.items())]
    return "\n".join(lines) + "\n"


def manifest_of(archive: zipfile.ZipFile) -> dict[str, Any]:
    """The parsed ``MANIFEST.json`` of an open bundle (``ReproBundleError`` when unreadable)."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ReproBundleError(f"it has no {MANIFEST}: not a repro bundle") from None
    except (ValueError, zipfile.BadZipFile) as exc:
        raise ReproBundleError(f"its {MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("members"), dict):
        raise ReproBundleError(f"its {MANIFEST} has no members table: not a repro bundle")
    return manifest
