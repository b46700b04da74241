"""What every built-in suite test does with a check's result: record it, and assert on it.

A failing result becomes an assertion whose message is the check's own message plus the input
that showed it, the file the failing batch was saved to, and the command that reruns the test.
Inside a Hypothesis property the assertion is what Hypothesis shrinks on; the file is rewritten
for every failing example, so after shrinking it holds the minimal one.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.session import SESSION_KEY

FAILURES_DIR = "modeltiers-failures"


def expect(
    request: pytest.FixtureRequest,
    recorder: CheckRecorder,
    result: CheckResult,
    batch: dict[str, Any] | None = None,
) -> None:
    """Record ``result``; skip the test when it does not apply, fail it when it is not ok."""
    __tracebackhide__ = True
    recorder.record(result)
    if result.status.value == "skipped":
        pytest.skip(result.message)
    if result.ok:
        return
    lines = [result.message]
    if batch is not None:
        lines.append(f"input: {batch_signature(batch)}")
        saved = save_batch(request, batch)
        lines.append(f"failing batch saved to {saved} (torch.load(path, weights_only=True))")
    lines.append(f"rerun: {rerun_command(request)}")
    raise AssertionError("\n".join(lines))


def save_batch(request: pytest.FixtureRequest, batch: dict[str, Any]) -> Path:
    """Write the batch's tensors (nothing else, so it loads with ``weights_only=True``)."""
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    target = request.config.rootpath / FAILURES_DIR / f"{name}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    torch.save(tensors, target)
    return target.relative_to(request.config.rootpath)


def rerun_command(request: pytest.FixtureRequest) -> str:
    """The command that runs just this test on just this model again."""
    config = request.config
    state_values = config.stash[SESSION_KEY].values
    args = ["pytest"]
    for spec in state_values["modeltiers_model"]:
        args += ["--modeltiers-model", spec]
    for flag, dest in (("--task", "modeltiers_task"), ("--adapter", "modeltiers_adapter")):
        if state_values[dest]:
            args += [flag, state_values[dest]]
    for option in state_values["modeltiers_task_options"]:
        args += ["--task-option", option]
    args += ["-p", "no:randomly", "-k", request.node.name]
    return shlex.join(args) + "  (add --hypothesis-seed=N from the output below, if shown)"
