"""The Lightning side of ``run_training``: the module around the adapter, and the run recorder.

PYTEST_DONT_REWRITE

Lightning is imported at module level here, so only ``run_training`` imports this module,
inside the function: the package, the plugin and the tier 3 suite never pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from pytest_modeltiers.evaluation.metrics_engine import MetricsEngine
from pytest_modeltiers.models.adapters import TaskAdapter
from pytest_modeltiers.training.checkpoints import CHECKPOINT_FORMAT, MODEL_PREFIX, SECTION
from pytest_modeltiers.training.data import RunData, make_loader
from pytest_modeltiers.training.lean_loop import (
    NoGradientPathError,
    capture_rng_state,
    restore_rng_state,
)
from pytest_modeltiers.training.results import NonFiniteTrainingError
from pytest_modeltiers.training.schedule import schedule_for
from pytest_modeltiers.training.scoring import score_batch

if TYPE_CHECKING:
    from pytest_modeltiers.config.training import TrainingConfig
    from pytest_modeltiers.store.experiment_db import ExperimentDB

__all__ = ["AdapterModule", "RunRecorder", "preserved_torch_globals", "quiet_lightning"]

#: Metric names the module logs (the experiment DB's "split/name" scheme).
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
LEARNING_RATE = "learning_rate"

_LIGHTNING_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)
#: (message regex, category) of warnings that say nothing useful about a small training run.
_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    (r".*does not have many workers.*", Warning),
    (r".*is smaller than the logging interval.*", Warning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated.*", FutureWarning),
    # A resumed run writes to its own directory by design (see ``training.run``).
    (r"The dirpath has changed from .*", UserWarning),
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO logging and its small-run warnings off for the block."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message, category in _NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def preserved_torch_globals() -> Iterator[None]:
    """Undo the process-wide settings a run changes: deterministic mode and cuDNN flags (which
    ``Trainer(deterministic=True)`` turns on for good) and the seed variables Lightning exports."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    names = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")
    env = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class AdapterModule(pl.LightningModule):
    """The user's model trained through its adapter."""

    def __init__(
        self,
        model: nn.Module,
        adapter: TaskAdapter,
        config: TrainingConfig,
        data: RunData,
        *,
        compiled: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # The compiled wrapper shares the model's parameters; registering it as a submodule
        # would list every weight twice in state_dict().
        self.__dict__["_forward_model"] = compiled if compiled is not None else model
        self.adapter = adapter
        self.config = config
        self.data = data
        self._last_step: tuple[torch.Tensor, int] | None = None

    def _score(self, batch: Mapping[str, Any]) -> Any:
        return score_batch(self.__dict__["_forward_model"], self.adapter, batch)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        score = self._score(batch)
        if not score.loss.requires_grad:
            raise NoGradientPathError(
                f"the loss ({float(score.loss.detach())}) does not depend on any trainable "
                "parameter, so no optimizer step can change it"
            )
        self.log(
            TRAIN_LOSS,
            score.loss.detach(),
            on_step=False,
            on_epoch=True,
            batch_size=score.count,
            sync_dist=True,
            logger=False,  # the loggers get each epoch's row from RunRecorder's MetricsEngine
        )
        self._last_step = (score.loss.detach(), batch_idx)
        return score.loss

    def on_after_backward(self) -> None:
        """Stop at the first non-finite loss or gradient, before the optimizer applies it."""
        if self._last_step is None:
            return
        loss, batch_idx = self._last_step
        finite = torch.isfinite(loss)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads and not self._gradients_scaled():
            # The max-norm is finite exactly when every gradient is (it cannot overflow).
            largest = torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)
            finite = finite & torch.isfinite(largest)
        if not bool(finite):
            raise non_finite_error(
                self.model,
                float(loss),
                int(self.trainer.global_step),
                self.current_epoch,
                batch_idx,
            )

    def _gradients_scaled(self) -> bool:
        """fp16 mixed precision: gradients are scaled, and inf ones make the scaler skip."""
        plugin = getattr(self.trainer, "precision_plugin", None)
        return getattr(plugin, "scaler", None) is not None

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        score = self._score(batch)
        count = score.count
        self.log(
            VAL_LOSS, score.loss, on_epoch=True, batch_size=count, sync_dist=True, logger=False
        )
        if score.correct is not None:
            accuracy = torch.tensor(score.correct / count, device=score.loss.device)
            self.log(
                VAL_ACCURACY,
                accuracy,
                on_epoch=True,
                batch_size=count,
                sync_dist=True,
                logger=False,
            )

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{type(self.model).__name__} has no parameter with requires_grad=True, so "
                "there is nothing to train. Unfreeze the parameters that should learn."
            )
        optimizer = torch.optim.AdamW(
            params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        schedule = schedule_for(self.config, int(self.trainer.estimated_stepping_batches))
        if schedule is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def train_dataloader(self) -> Any:
        return make_loader(
            self.data.train,
            self.config.batch_size,
            shuffle=True,
            seed=self.config.random_seed,
            world_size=self.trainer.world_size,
            rank=self.trainer.global_rank,
        )

    def val_dataloader(self) -> Any:
        source = self.data.validation if self.data.validation is not None else self.data.train
        return make_loader(
            source,
            self.config.batch_size,
            shuffle=False,
            seed=self.config.random_seed,
            world_size=self.trainer.world_size,
            rank=self.trainer.global_rank,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SECTION] = {
            "format": CHECKPOINT_FORMAT,
            "model_class": type(self.model).__name__,
            "task": self.adapter.task.name,
            "model_prefix": MODEL_PREFIX,
            "rng": capture_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        section = checkpoint.get(SECTION)
        if isinstance(section, Mapping) and section.get("rng") is not None:
            restore_rng_state(section["rng"])


def non_finite_error(
    model: nn.Module, loss: float, step: int, epoch: int, batch: int
) -> NonFiniteTrainingError:
    """Where training stopped being finite: the error with its message and diagnosis."""
    with_grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    bad = [name for name, grad in with_grads if not bool(torch.isfinite(grad).all())]
    bad_weight = next(
        (name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None
    )
    diagnosis = {
        "step": step,
        "epoch": epoch,
        "batch": batch,
        "loss": loss,
        "parameter": bad[0] if bad else None,
        "non_finite_gradients": len(bad),
        "parameters_with_gradients": len(with_grads),
        "non_finite_weights": bad_weight,
    }
    where = f"after {step} optimizer steps (epoch {epoch}, batch {batch})"
    if bad:
        first = (
            f"first parameter with a non-finite gradient: {bad[0]} "
            f"({len(bad)} of {len(with_grads)} parameters)"
        )
    else:
        first = "no gradient is non-finite"
    if math.isfinite(loss):
        head = (
            f"backward produced a non-finite gradient {where}, at a finite training loss "
            f"of {loss:.4g}"
        )
        causes = (
            "an operation differentiated where its derivative is infinite: sqrt or x**p (p<1) "
            "at 0, log at 0, the norm of a zero vector, asin/acos at +-1"
        )
    else:
        head = f"the training loss is {loss} {where}"
        causes = (
            "a learning rate too high, a division by a value that reaches 0, log/sqrt of "
            "values <= 0, missing normalisation"
        )
    weights = f" The weights of {bad_weight} were already non-finite." if bad_weight else ""
    message = (
        f"{head}; {first}. Training stopped before this step changed the weights.{weights} "
        f"Likely causes: {causes}; torch.autograd.set_detect_anomaly(True) names the operation."
    )
    return NonFiniteTrainingError(message, diagnosis)


class RunRecorder(Callback):
    """Metric history for the results, and the experiment DB, written by global rank 0 only."""

    def __init__(
        self,
        db: ExperimentDB | None,
        run_info: Mapping[str, Any],
        params: Mapping[str, Any],
        run_dir: str,
        loggers: Sequence[Any] = (),
    ) -> None:
        self.db = db
        self.loggers = tuple(loggers)
        self.run_info = dict(run_info)
        self.params = dict(params)
        self.run_dir = run_dir
        self.run_id: int | None = None
        self.rank = 0
        self.history: list[dict[str, Any]] = []
        self.engine: MetricsEngine | None = None
        self.alerts: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return "ModelTiersRunRecorder"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.rank = trainer.global_rank
        run_id = None
        if trainer.is_global_zero:
            if self.db is not None:
                run_id = self.db.register_run(self.run_info)
                self.db.log_params(run_id, {**self.params, "world_size": trainer.world_size})
            self.engine = MetricsEngine(self.db, run_id, loggers=self.loggers)
        self.run_id = trainer.strategy.broadcast(run_id, src=0)
        self.run_dir = trainer.strategy.broadcast(self.run_dir, src=0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics: dict[str, float] = {}
        for name, value in trainer.callback_metrics.items():
            if name.startswith(("train/", "val/")):
                metrics[name] = float(value)
        if trainer.optimizers:
            metrics[LEARNING_RATE] = float(trainer.optimizers[0].param_groups[0]["lr"])
        entry: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            **metrics,
        }
        self.history.append(entry)
        if self.engine is not None:
            alerts = self.engine.log_epoch(trainer.current_epoch, metrics)
            self.alerts.extend(alert.to_dict() for alert in alerts)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.is_global_zero:
            self.record_failure(exception)

    def record_failure(self, exception: BaseException) -> None:
        """Mark the run failed (or interrupted) with the exception, and a non-finite step's
        diagnosis, in its ``failure`` param. Call on global rank 0 only. If the database
        cannot take it, the exception says so in a note rather than being replaced."""
        if self.db is None or self.run_id is None:
            return
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        failure: dict[str, Any] = {
            "error": type(exception).__name__,
            "message": str(exception)[:2000],
        }
        if isinstance(exception, NonFiniteTrainingError):
            failure.update(exception.diagnosis)
        try:
            self.db.log_params(self.run_id, {"failure": failure})
            self.db.update_run_status(self.run_id, status)
        except Exception as exc:
            exception.add_note(
                f"run {self.run_id} of {self.db.path} could not be marked {status}: {exc}"
            )
            return
        if isinstance(exception, NonFiniteTrainingError):
            exception.recorded_in = f"run {self.run_id} of {self.db.path}"

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(entry) for entry in state_dict.get("history", [])]
