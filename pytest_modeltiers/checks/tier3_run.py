"""Tier 3 ``test_training_run``: one short real ``run_training`` on the task's shipped data.

PYTEST_DONT_REWRITE

The sanity checks show that the model can train on a few batches; this one shows that the
real training path (Lightning, the adapter, the schedule, the experiment database, the
checkpoints) works end to end. The run happens once per session (the ``training_run``
fixture) and never raises: the check reports the failure.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.models.exceptions import (
    describe_exception,
    describe_model_exception,
    exception_details,
)
from pytest_modeltiers.report import CheckResult, CheckStatus, jsonable
from pytest_modeltiers.training.results import TrainingResults

if TYPE_CHECKING:
    from torch import nn

    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.config.training import TrainingConfig
    from pytest_modeltiers.models.adapters import TaskAdapter
    from pytest_modeltiers.report.progress import Progress

__all__ = [
    "RUN_BATCH_SIZE",
    "RUN_EPOCHS",
    "RUN_LR",
    "RUN_TRAIN_SAMPLES",
    "RUN_VAL_SAMPLES",
    "TrainingOutcome",
    "check_training_run",
    "execute_training_run",
    "short_run_config",
]

NAME = "test_training_run"
TIER = 3
RUN_EPOCHS = 2
RUN_BATCH_SIZE = 16
RUN_LR = 3e-3
RUN_TRAIN_SAMPLES = 128
RUN_VAL_SAMPLES = 64


@dataclass(frozen=True)
class TrainingOutcome:
    """A finished run (``results``) or the exception that ended it (``error``)."""

    results: TrainingResults | None
    error: BaseException | None
    config: dict[str, Any]
    db_path: str | None
    duration_seconds: float

    @property
    def error_message(self) -> str:
        if self.error is None:
            return ""
        if isinstance(self.error, ModelTiersError):  # our own diagnosis: no line of the model
            return describe_exception(self.error)
        return describe_model_exception(self.error)


def short_run_config(config: TrainingConfig) -> TrainingConfig:
    """``config`` with the short run's settings: small enough for a test, long enough to learn."""
    return dataclasses.replace(
        config,
        epochs=RUN_EPOCHS,
        batch_size=RUN_BATCH_SIZE,
        learning_rate=RUN_LR,
        max_train_samples=RUN_TRAIN_SAMPLES,
        max_val_samples=RUN_VAL_SAMPLES,
        use_lr_schedule=True,
        lr_scheduler="constant_with_warmup",
        warmup_steps=None,
        warmup_ratio=0.1,
        early_stopping_patience=0,
        save_every_n_epochs=1,
        keep_best_only=False,
        strategy="auto",
        devices=1,
        num_nodes=1,
        precision="32-true",
        use_amp=False,
        compile_mode=None,
        resume_from_checkpoint=None,
        gradient_accumulation_steps=1,
        accumulate_grad_batches=1,
        run_name=config.run_name or "modeltiers-tier3",
    )


def execute_training_run(
    build_model: Callable[[], nn.Module],
    adapter: TaskAdapter,
    config: TrainingConfig,
    task: TaskSpec,
    eval_config: EvalConfig | None,
    *,
    db_path: str | Path | None,
    run_dir: str | Path,
    run_fields: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainingOutcome:
    """Build a fresh model and train it with ``run_training``; never raises (see the module).

    The global RNG states are restored afterwards, so the run does not shift the random
    stream of the tests that follow it. Checkpoints are copied next to the database unless
    ``run_dir`` is in the database's own folder (both are then kept, or deleted, together).
    """
    from pytest_modeltiers.training.lean_loop import preserved_rng

    start = time.perf_counter()
    summary = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "max_train_samples": config.max_train_samples,
        "max_val_samples": config.max_val_samples,
        "seed": config.random_seed,
    }
    results: TrainingResults | None = None
    error: BaseException | None = None
    with preserved_rng():
        try:
            from pytest_modeltiers.store.experiment_db import ExperimentDB
            from pytest_modeltiers.training.run import run_training

            db = ExperimentDB(db_path) if db_path is not None else None
            copy = db is not None and not _is_within(Path(run_dir), db.path.parent)
            try:
                results = run_training(
                    build_model(),
                    adapter,
                    config,
                    task,
                    eval_config,
                    db=db,
                    run_dir=run_dir,
                    copy_checkpoints=copy,
                    run_fields=run_fields,
                    extra_callbacks=[_progress_callback(progress)] if progress else [],
                )
            finally:
                if db is not None:
                    db.close()
        except Exception as exc:
            error = exc
    return TrainingOutcome(
        results=results,
        error=error,
        config=summary,
        db_path=None if db_path is None else str(db_path),
        duration_seconds=time.perf_counter() - start,
    )


def _progress_callback(progress: Progress) -> Any:
    """A Lightning callback that shows the run's steps, loss and ETA (``report.progress``)."""
    from lightning.pytorch.callbacks import Callback  # only for a real training run

    class ReportProgress(Callback):
        def __init__(self) -> None:
            self.stage: Any = None
            self.context: Any = None

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            total = int(trainer.estimated_stepping_batches)
            self.context = progress.stage("tier 3 training run", total=total, unit="steps")
            self.stage = self.context.__enter__()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *_: Any) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            note = f"loss {float(loss):.4g}" if loss is not None else ""
            self.stage.update(int(trainer.global_step), note=note)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.close()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self.close()

        def close(self) -> None:
            if self.context is not None:
                self.context.__exit__(None, None, None)
                self.context = None

    return ReportProgress()


def _is_within(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _done(start: float, status: str, message: str, details: dict[str, Any]) -> CheckResult:
    return CheckResult(
        NAME,
        TIER,
        CheckStatus(status),
        message,
        jsonable(details, where="details"),
        max(0.0, time.perf_counter() - start),
    )


_NOT_LEARNING = (
    "Likely causes: the output is (partly) detached from the parameters or multiplied by zero, "
    "the parameters that matter are frozen, a bug in the loss path (softmax before "
    "cross-entropy, labels misaligned with the logits), or a learning rate unsuited to the "
    "model (override the training_run_config fixture to try another)."
)


def check_training_run(outcome: TrainingOutcome) -> CheckResult:
    """Judge one run; a ``CheckResult`` for ``test_training_run``."""
    start = time.perf_counter()
    details: dict[str, Any] = {"run": outcome.config, "db_path": outcome.db_path}
    if outcome.results is None:
        error = outcome.error
        if error is not None and not isinstance(error, ModelTiersError):
            details.update(exception_details(error))
        extra = ""
        if error is not None and "does not depend on any trainable parameter" in str(error):
            extra = f" {_NOT_LEARNING}"
        diagnosis = getattr(error, "diagnosis", None)
        if isinstance(diagnosis, dict):
            details["non_finite"] = diagnosis
            recorded_in = getattr(error, "recorded_in", None)
            if recorded_in:
                extra += f" The run is stored as failed, with this diagnosis, as {recorded_in}."
        message = (
            f"the training run failed: {outcome.error_message.rstrip('.')}.{extra} Reproduce with "
            "run_training(model, adapter, training_cfg, task_spec, eval_cfg) from "
            "pytest_modeltiers (or `modeltiers train --config FILE`)."
        )
        return _done(start, "failed", message, details)
    results = outcome.results
    details.update(
        {
            "run_id": results.run_id,
            "run_dir": results.run_dir,
            "initial_eval": results.initial_eval,
            "eval_summary": results.eval_summary,
            "history": results.history,
            "epochs_completed": results.epochs_completed,
            "global_step": results.global_step,
            "best_checkpoint_path": results.best_checkpoint_path,
        }
    )
    problems: list[str] = []
    final = float(results.eval_summary.get("loss", math.nan))
    initial = math.nan if results.initial_eval is None else float(results.initial_eval["loss"])
    split = results.eval_summary.get("split", "validation")
    where = (
        f"{results.epochs_completed} epochs ({results.global_step} optimizer steps, "
        f"lr={outcome.config.get('learning_rate')}) on {results.data}"
    )
    if not math.isfinite(final):
        problems.append(
            f"the {split} loss after training is {final} ({where}): training diverged. Likely "
            "causes: a learning rate too high for the model, missing normalisation, or "
            "log/sqrt/division of values that reach 0."
        )
    elif not math.isfinite(initial):
        problems.append(
            f"the {split} loss before training is {initial}, so training cannot be judged: the "
            "untrained model already produces non-finite losses (run tier 1)."
        )
    elif not final < initial:
        problems.append(
            f"the {split} loss did not decrease: {initial:.4g} before training, {final:.4g} "
            f"after {where}. {_NOT_LEARNING}"
        )
    problems.extend(_db_problems(results))
    problems.extend(_checkpoint_problems(results))
    if problems:
        return _done(start, "failed", " ".join(problems), details)
    message = (
        f"{split} loss fell from {initial:.4g} to {final:.4g} in {where}; metrics of run "
        f"{results.run_id} are in {outcome.db_path}; {Path(results.best_checkpoint_path or '')}"
        " loads with weights_only=True"
    )
    return _done(start, "passed", message, details)


def _db_problems(results: TrainingResults) -> list[str]:
    if results.db_path is None or results.run_id is None:
        return ["the run logged nothing: it had no experiment database (pass db=ExperimentDB)."]
    from pytest_modeltiers.store.experiment_db import ExperimentDB

    try:
        with ExperimentDB(results.db_path) as db:
            run = db.get_run(results.run_id)
            metrics = db.get_metrics(results.run_id)
    except Exception as exc:
        return [f"the experiment database {results.db_path} cannot be read: {exc}."]
    name = "val/loss" if results.eval_summary.get("split") == "validation" else "train/loss"
    logged = sorted(int(e) for e in metrics.loc[metrics["metric_name"] == name, "epoch"])
    expected = [int(entry["epoch"]) for entry in results.history]
    problems = []
    if logged != sorted(expected):
        problems.append(
            f"the experiment database has {name} for epochs {logged} of run {results.run_id}, "
            f"expected {sorted(expected)}."
        )
    if run.get("status") != "completed":
        problems.append(f"run {results.run_id} has status {run.get('status')!r}, not 'completed'.")
    return problems


def _checkpoint_problems(results: TrainingResults) -> list[str]:
    path = results.best_checkpoint_path
    if not path:
        return ["the run wrote no checkpoint."]
    from pytest_modeltiers.training.checkpoints import CheckpointError, load_model_weights

    try:
        weights = load_model_weights(path)
    except CheckpointError as exc:
        return [str(exc)]
    if results.model is None:
        return []
    expected = set(results.model.state_dict())
    if set(weights) != expected:
        missing = sorted(expected - set(weights))[:5]
        extra = sorted(set(weights) - expected)[:5]
        return [
            f"checkpoint {path} does not hold the model's weights (missing {missing}, "
            f"unexpected {extra})."
        ]
    return []
