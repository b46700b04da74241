"""Helper of test_run_training_ddp.py (not a test): ``run_training`` with strategy="ddp" on
two CPU processes. Lightning starts rank 1 by re-running this script; each rank writes what it
saw to ``OUT/rank<N>.json``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from pytest_modeltiers import ExperimentDB, TrainingConfig, get_adapter, resolve_task, run_training

REPO = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "ddp_tiny_gpt", REPO / "example_models" / "tiny_gpt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = resolve_task(module.TASK)
    model = module.build_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainingConfig(
        task_name=task.name,
        strategy="ddp",
        devices=2,
        epochs=2,
        batch_size=8,
        learning_rate=3e-3,
        max_train_samples=64,
        max_val_samples=32,
        precision="32-true",
        save_every_n_epochs=1,
        random_seed=3,
    )
    results = run_training(
        model,
        get_adapter(task),
        config,
        task,
        db=ExperimentDB(out / "exp.db"),
        run_dir=out / "run",
        accelerator="cpu",
    )
    changed = sum(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    checksum = float(sum(v.double().sum() for v in model.state_dict().values()))
    report = {
        "rank": results.rank,
        "world_size": results.world_size,
        "global_step": results.global_step,
        "run_id": results.run_id,
        "changed_tensors": changed,
        "checksum": checksum,
        "history": results.history,
        "best": results.best_checkpoint_path,
        "strategy": results.distribution["strategy"],
    }
    (out / f"rank{results.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
