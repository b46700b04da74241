"""Upper bounds of every size in a config, so that a typo cannot ask for a terabyte.

PYTEST_DONT_REWRITE

A size beyond its bound is refused with the bound in the message; within the bounds,
``modeltiers train`` still estimates the run's memory against the machine's before it builds
anything (``models.memory_estimate``). The bounds are generous: each is well above the
largest value a real model or run uses today (Gemma's 256k vocabulary, million-token
contexts), so only mistakes reach them. Standard library only.
"""

from __future__ import annotations

__all__ = ["LIMITS"]

#: Largest accepted value of each size, by the name used in messages and configs.
LIMITS: dict[str, int] = {
    # vocabularies, lengths and images
    "vocab_size": 2**24,  # 16,777,216 tokens
    "max_seq_len": 2**20,  # 1,048,576 positions
    "max_target_len": 2**20,
    "max_seq_length": 2**20,
    "image_side": 2**15,  # 32,768 pixels per side
    "channels": 4096,
    "num_classes": 2**24,
    # model shape
    "d_model": 2**16,
    "d_ff": 2**20,
    "num_layers": 1024,
    "num_heads": 1024,
    # batches, steps and counts
    "batch_size": 2**16,  # 65,536 rows
    "epochs": 100_000,
    "gradient_accumulation_steps": 2**16,
    "accumulate_grad_batches": 2**16,
    "warmup_steps": 10**9,
    "early_stopping_patience": 100_000,
    "save_every_n_epochs": 100_000,
    "max_train_samples": 10**9,
    "max_val_samples": 10**9,
    "max_eval_examples": 10**9,
    "eval_interval_steps": 10**9,
    "num_workers": 1024,
    "num_nodes": 2**16,
    "devices": 2**16,
}
