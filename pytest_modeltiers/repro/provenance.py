"""What a training run records so that its bundle can reproduce it.

PYTEST_DONT_REWRITE

``run_training`` logs these as params of the run: the model's source files and hashes, the
task and evaluation settings, the data's fingerprint, the seed and determinism settings, and
the environment it trained in. ``create_repro_bundle`` reads them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_modeltiers.repro.environment import capture_environment
from pytest_modeltiers.repro.fingerprint import data_fingerprint
from pytest_modeltiers.repro.source import model_class_source

if TYPE_CHECKING:
    from pytest_modeltiers.config.eval_config import EvalConfig
    from pytest_modeltiers.config.task_spec import TaskSpec
    from pytest_modeltiers.config.training import TrainingConfig

__all__ = ["PROVENANCE_PARAMS", "run_provenance", "seed_settings"]

#: The params ``run_provenance`` gives a run.
PROVENANCE_PARAMS = (
    "model_source",
    "task_spec",
    "eval_config",
    "data_fingerprint",
    "seed",
    "environment",
)


def seed_settings(config: TrainingConfig) -> dict[str, Any]:
    """The seed and what ``deterministic`` turns on (Lightning's ``Trainer(deterministic=)``)."""
    return {
        "random_seed": config.random_seed,
        "seed_everything": {"seed": config.random_seed, "workers": True},
        "deterministic": config.deterministic,
        "torch_use_deterministic_algorithms": config.deterministic,
        "cudnn_deterministic": config.deterministic,
        "cudnn_benchmark": False,
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8" if config.deterministic else None,
    }


def run_provenance(
    model: Any,
    task_spec: TaskSpec,
    eval_config: EvalConfig,
    train: Any,
    validation: Any,
    data_source: str,
    config: TrainingConfig,
) -> dict[str, Any]:
    """The provenance params of a run of ``model`` (see the module docstring)."""
    source = model_class_source(model)
    return {
        "model_source": source,
        "task_spec": task_spec.to_dict(),
        "eval_config": eval_config.to_dict(),
        "data_fingerprint": data_fingerprint(train, validation, data_source),
        "seed": seed_settings(config),
        "environment": capture_environment(source.get("root")),
    }
