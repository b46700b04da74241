"""``run_training``: a real training run on Lightning, through the model's adapter.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pytest_modeltiers.config.eval_config import build_eval_config
from pytest_modeltiers.config.training import TrainingConfig
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.evaluation.held_out import run_evaluation
from pytest_modeltiers.repro.provenance import run_provenance
from pytest_modeltiers.training.checkpoints import model_state_dict, read_checkpoint
from pytest_modeltiers.training.data import RunData, resolve_data
from pytest_modeltiers.training.lightning_strategies import resolve_distribution, show_progress_bar
from pytest_modeltiers.training.loggers import check_trackers, open_loggers
from pytest_modeltiers.training.results import TrainingResults

if TYPE_CHECKING:
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.models.adapters import TaskAdapter
    from pytest_modeltiers.store.experiment_db import ExperimentDB

__all__ = ["new_run_dir", "run_training"]

CHECKPOINT_SUBDIR = "checkpoints"


def new_run_dir(base: str | Path, run_name: str) -> Path:
    """``base/<run_name>-<UTC YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... if that exists)."""
    safe = re.sub(r"[^\w.-]+", "_", run_name).strip("._") or "run"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(base).absolute()
    candidate = folder / f"{safe}-{stamp}"
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = folder / f"{safe}-{stamp}-{counter}"
    return candidate


def _eval_batches(data: RunData, eval_cfg: EvalConfig) -> tuple[Any, str]:
    """Batches for the before/after evaluations (validation data, else training data)."""
    source = data.validation if data.validation is not None else data.train
    split = "validation" if data.validation is not None else "train"
    if isinstance(source, DataLoader):
        return source, split
    dataset: Dataset[Any] = source
    try:
        length = len(source)  # type: ignore[arg-type]
    except TypeError:
        length = None
    if length is not None and length > eval_cfg.max_eval_examples:
        dataset = Subset(source, range(eval_cfg.max_eval_examples))
    return DataLoader(dataset, batch_size=eval_cfg.batch_size, shuffle=False), split


def _evaluate(
    model: nn.Module, adapter: TaskAdapter, task: TaskSpec, eval_cfg: EvalConfig, batches: Any
) -> dict[str, Any]:
    """The task's metrics (``evaluation.held_out``, shared with tier 5) and the data size."""
    result = run_evaluation(model, adapter, task, eval_cfg, batches)
    return {**result.metrics, "examples": result.n_examples}


def _check_inputs(model: Any, config: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"run_training needs an nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainingConfig):
        raise ConfigError(
            f"training_cfg must be a TrainingConfig, got {type(config).__name__} (build one "
            "with TrainingConfig(...), TrainingConfig.from_dict or TrainingConfigBuilder)"
        )
    config.validate()


def run_training(
    model: nn.Module,
    adapter: TaskAdapter,
    training_cfg: TrainingConfig,
    task_spec: TaskSpec,
    eval_cfg: EvalConfig | None = None,
    *,
    db: ExperimentDB | None = None,
    dataset: Any = None,
    run_dir: str | Path | None = None,
    accelerator: str = "auto",
    progress_bar: bool | None = None,
    run_fields: Mapping[str, Any] | None = None,
    copy_checkpoints: bool | None = None,
    extra_callbacks: Sequence[Any] = (),
    run_params: Mapping[str, Any] | None = None,
) -> TrainingResults:
    """Train ``model`` with Lightning as ``training_cfg`` says.

    ``dataset``: None (the task's shipped dataset), a Dataset, a DataLoader, or
    ``{"train": ..., "validation": ...}`` (see ``training.data``). ``accelerator``: ``auto``,
    ``cpu`` or ``gpu``. ``progress_bar``: None shows it on a terminal only. ``run_fields``:
    more columns of the DB run (``sweep_id``, ``sweep_params``, ``gist_id``, ...; see
    ``ExperimentDB.register_run``). ``copy_checkpoints``: copy the checkpoints recorded in
    ``db`` next to it (True), record them where they are (False: refused if that is a
    temporary folder the database is not in), or copy only in that case (None).
    ``extra_callbacks``: more Lightning callbacks for the trainer (a sweep's pruning callback).
    With a ``db``, the run's params also hold its provenance for ``create_repro_bundle``
    (``repro.provenance``); ``run_params`` adds params or replaces those (``modeltiers train``
    records its config and the model file it loaded).
    """
    start = time.perf_counter()
    _check_inputs(model, training_cfg)
    check_trackers(training_cfg)  # a requested tracker without its package: before anything
    config = training_cfg
    if eval_cfg is None:
        eval_cfg = build_eval_config(config)
    distribution = resolve_distribution(config, accelerator)
    data = resolve_data(dataset, task_spec, config, eval_cfg)
    resume = config.resume_from_checkpoint
    checkpoint = read_checkpoint(resume) if resume else None
    run_name = config.run_name or f"{task_spec.name}-{type(model).__name__}"
    directory = (
        Path(run_dir) if run_dir is not None else new_run_dir(config.checkpoint_dir, run_name)
    )
    copying = bool(
        db is not None
        and (copy_checkpoints if copy_checkpoints is not None else db.must_copy(directory))
    )

    # Lightning is imported here and only here: it costs seconds of start-up.
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from pytest_modeltiers.training import lightning_module as lm

    with (
        lm.preserved_torch_globals(),
        lm.quiet_lightning(),
        open_loggers(config, directory, run_name) as loggers,
    ):
        pl.seed_everything(config.random_seed, workers=True, verbose=False)
        if checkpoint is not None:
            try:
                model.load_state_dict(model_state_dict(checkpoint))
            except RuntimeError as exc:
                raise ConfigError(
                    f"resume_from_checkpoint {resume} does not fit this model: {exc}"
                ) from None
        eval_batches, eval_split = _eval_batches(data, eval_cfg)
        initial = (
            _evaluate(model, adapter, task_spec, eval_cfg, eval_batches)
            if eval_cfg.eval_on_start
            else None
        )
        model.train()
        compiled: Any = None
        if config.compile_mode is not None:
            compiled = torch.compile(
                model,
                mode=config.compile_mode,
                fullgraph=config.compile_fullgraph,
                dynamic=config.compile_dynamic,
            )
        module = lm.AdapterModule(model, adapter, config, data, compiled=compiled)
        num_params = sum(p.numel() for p in model.parameters())
        run_info = {
            "run_name": run_name,
            "config": config.to_dict(),
            "notes": config.notes + (f" (resumed from {resume})" if resume else ""),
            "task_name": task_spec.name,
            "modality": task_spec.modality,
            "strategy": distribution.strategy,
            "devices": distribution.devices,
            **dict(run_fields or {}),
        }
        params = {
            "model_class": type(model).__name__,
            "num_parameters": num_params,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "data": data.source,
            # A run directory whose checkpoints are copied to the database is not recorded.
            **({} if copying else {"run_dir": str(directory)}),
            "resumed_from": resume,
            "initial_eval": initial,
            **{f"distribution.{k}": v for k, v in distribution.to_dict().items()},
            **(
                run_provenance(
                    model, task_spec, eval_cfg, data.train, data.validation, data.source, config
                )
                if db is not None
                else {}
            ),
            **dict(run_params or {}),
        }
        recorder = lm.RunRecorder(db, run_info, params, str(directory), loggers)
        has_val = data.validation is not None
        every = max(1, min(config.save_every_n_epochs, config.epochs))
        checkpointing = ModelCheckpoint(
            dirpath=str(directory / CHECKPOINT_SUBDIR),
            filename="epoch={epoch:03d}",
            auto_insert_metric_name=False,
            monitor=lm.VAL_LOSS if has_val else None,
            mode="min",
            save_top_k=1 if config.keep_best_only else -1,
            save_last=not config.keep_best_only,
            every_n_epochs=every,
            save_on_train_epoch_end=True,
        )
        callbacks: list[Any] = [recorder, checkpointing, *extra_callbacks]
        early: Any = None
        if has_val and config.early_stopping_patience > 0:
            early = EarlyStopping(
                monitor=lm.VAL_LOSS, patience=config.early_stopping_patience, mode="min"
            )
            callbacks.append(early)
        trainer = pl.Trainer(
            accelerator=distribution.accelerator,
            strategy=distribution.strategy,
            devices=distribution.devices,
            num_nodes=distribution.num_nodes,
            precision=distribution.precision,  # type: ignore[arg-type]
            max_epochs=config.epochs,
            accumulate_grad_batches=config.accumulate_grad_batches,
            gradient_clip_val=config.max_grad_norm,
            gradient_clip_algorithm="norm",
            deterministic=config.deterministic,
            callbacks=callbacks,
            logger=loggers,
            enable_checkpointing=True,
            enable_model_summary=False,
            enable_progress_bar=show_progress_bar() if progress_bar is None else progress_bar,
            default_root_dir=str(directory),
            num_sanity_val_steps=0,
            limit_val_batches=None if has_val else 0,
            use_distributed_sampler=data.user_loaders,
        )
        trainer.fit(module, ckpt_path=resume, weights_only=True if resume else None)
        best = checkpointing.best_model_path or checkpointing.last_model_path or None
        last = checkpointing.last_model_path or best
        try:
            final = _evaluate(model, adapter, task_spec, eval_cfg, eval_batches)
            if trainer.is_global_zero and db is not None and recorder.run_id is not None:
                if best:
                    db.log_artifact(
                        recorder.run_id,
                        "checkpoint",
                        best,
                        {
                            "best": True,
                            "monitor": checkpointing.monitor,
                            "score": _score(checkpointing),
                        },
                        copy=copying,
                    )
                if last and last != best:
                    db.log_artifact(
                        recorder.run_id,
                        "checkpoint",
                        last,
                        {"best": False, "last": True},
                        copy=copying,
                    )
                db.update_run_status(recorder.run_id, "completed")
        except BaseException as exc:  # after fit, Lightning's on_exception no longer runs
            if trainer.is_global_zero:
                recorder.record_failure(exc)
            raise
    folder = Path(checkpointing.dirpath or directory / CHECKPOINT_SUBDIR)
    paths = sorted(str(p) for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    return TrainingResults(
        run_id=recorder.run_id,
        run_name=run_name,
        run_dir=recorder.run_dir,
        eval_summary={**final, "split": eval_split},
        initial_eval=None if initial is None else {**initial, "split": eval_split},
        history=list(recorder.history),
        best_checkpoint_path=best,
        last_checkpoint_path=last,
        checkpoint_paths=paths,
        epochs_completed=int(trainer.current_epoch),
        global_step=int(trainer.global_step),
        stopped_early=bool(early is not None and early.stopped_epoch > 0),
        resumed_from=resume,
        data=data.source,
        distribution=distribution.to_dict(),
        rank=int(trainer.global_rank),
        world_size=int(trainer.world_size),
        duration_seconds=time.perf_counter() - start,
        guardrails=list(distribution.notes),
        alerts=list(recorder.alerts),
        db_path=None if db is None else str(db.path),
        model=model,
    )


def _score(checkpointing: Any) -> float | None:
    score = checkpointing.best_model_score
    return None if score is None else float(score)
