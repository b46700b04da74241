"""The usage guide's examples run as written, with only their imports changed.

A reader of the old notebooks' usage guide (this project's feature inventory; its headings and
code blocks, without the prose, are ``fixtures/usage_guide/usage-guide.md``) copies its blocks
and changes ``from utils.<...> import X`` into ``from pytest_modeltiers import X``; nothing
else. Each block runs here that way, in a fresh
interpreter in a fresh directory, under a timeout.

Where a block continues an earlier one (a notebook's later cell uses the manager an earlier cell
built), ``CONTINUES`` names the blocks run first, in the same process. Where a block uses a name
the guide assumes but never defines (``trained_model``, ``task_spec``, a checkpoint file),
``GIVEN`` provides it, in plain sight, before the block. A block that cannot run as written is in
``NOT_RUN`` with the reason, and every block that is not Python is in ``NOT_PYTHON`` with what it
is: ``test_every_block_is_run_or_listed`` fails on a block in neither, so none is skipped
silently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "fixtures" / "usage_guide" / "usage-guide.md"
#: Seconds one block (with the blocks it continues) may take.
BLOCK_TIMEOUT = 300

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.S | re.M,
)
_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*$", re.M)
_GUIDE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from utils(?:\.\w+)+ import\b", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: ``<section slug>-<n>`` (the n-th block under that heading)."""

    block_id: str
    lang: str
    line: int
    code: str


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def guide_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, dedented, in order (headings inside fences ignored)."""
    fences = list(_FENCE.finditer(text))
    spans = [(m.start(), m.end()) for m in fences]
    headings = [h for h in _HEADING.finditer(text) if not any(a <= h.start() < b for a, b in spans)]
    blocks, counts = [], {}
    for match in fences:
        above = [h for h in headings if h.start() < match.start()]
        section = _slug(above[-1]["title"]) if above else "top"
        counts[section] = counts.get(section, 0) + 1
        blocks.append(
            Block(
                f"{section}-{counts[section]}",
                match["lang"],
                text.count("\n", 0, match.start()) + 1,
                textwrap.dedent(match["body"]),
            )
        )
    return blocks


def with_our_imports(code: str) -> str:
    """The one change a reader makes: ``from utils.X import`` becomes ``from pytest_modeltiers
    import``."""
    return _GUIDE_IMPORT.sub(r"\g<indent>from pytest_modeltiers import", code)


BLOCKS = {block.block_id: block for block in guide_blocks(GUIDE.read_text(encoding="utf-8"))}

_JSON = "a JSON config, not Python (the CLI's configs are tested with the CLI)"
_OLD_CLI = (
    "a shell command of the old `cli` package; this package's command is `modeltiers` "
    "(tests/test_cli*.py run it)"
)
_WORKFLOW = "a GitHub Actions workflow (YAML), not Python"

#: Every block that is not Python, and what it is.
NOT_PYTHON: dict[str, str] = {
    "cli-1": "the CLI's config shape, JSON with a `//` comment (not even valid JSON)",
    "example-ddp-config-1": _JSON,
    "example-ddp-config-2": _OLD_CLI,
    "example-ddp-config-3": _OLD_CLI + " under torchrun, several processes",
    "resuming-from-a-checkpoint-1": _JSON,
    "export-tier-tier-4-1": _JSON,
    "export-tier-tier-4-2": _OLD_CLI,
    "export-tier-tier-4-3": _OLD_CLI,
    "how-to-run-vision-tasks-tier-1-1": _OLD_CLI,
    "cli-tier-5-monitoring-1": _JSON,
    "cli-tier-5-monitoring-2": _OLD_CLI,
    "ci-cd-example-github-actions-1": _WORKFLOW,
    "json-report-structure-1": "an example health report (JSON with `...` elisions)",
    "ci-cd-integration-1": _WORKFLOW + " (its Python heredoc uses an undefined trained_model)",
    "report-generation-2": "an example retraining report (Markdown output)",
}

#: Python blocks that cannot run as written, and why.
NOT_RUN: dict[str, str] = {
    "examples-2": (
        "calls test_fine_tuning(model, config, n_epochs=...), a function of the old notebooks "
        "that the guide never defines or imports; this package trains with run_training "
        "(the notebook's adapter-first cell)"
    ),
}

_BUILDER = (
    "from pytest_modeltiers import TrainingConfigBuilder  # imported by the guide's first block"
)

_TINY_MODEL = '''
import torch
from torch import nn

from pytest_modeltiers import get_adapter, resolve_task


class TinyLM(nn.Module):
    """A small language model standing in for the guide's trained model."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(101, 16)
        self.head = nn.Linear(16, 101)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.embed(input_ids))


task_spec = resolve_task(
    {"name": "lm_tiny", "input_schema": {"vocab_size": 101, "max_seq_len": 16}}
)
trained_model = model = TinyLM()
model_config = config = {"vocab_size": 101, "d_model": 16}
adapter = get_adapter(task_spec)
'''

#: What the guide assumes but never defines, given before the block.
GIVEN: dict[str, str] = {
    "customize-presets-1": _BUILDER,
    "build-from-scratch-1": _BUILDER,
    "progressive-validation-1": _BUILDER,
    "migration-from-direct-construction-1": "from pytest_modeltiers import TrainingConfig",
    "migration-from-direct-construction-2": _BUILDER,
    "examples-1": _BUILDER,
    "examples-3": _BUILDER,
    "examples-4": _BUILDER,
    "basic-usage-1": _TINY_MODEL,
    "run-health-checks-separately-1": _TINY_MODEL
    + """
from pathlib import Path  # the block uses Path without importing it

from pytest_modeltiers import export_model

# the export the block checks, which the guide assumes was made before
export_model(model, adapter, task_spec, "exports/model_001", formats=["onnx", "torchscript"])
""",
    "disable-health-checks-1": _TINY_MODEL
    + """
from pytest_modeltiers import TrainingConfig
from pytest_modeltiers import create_export_bundle  # imported by the guide's Basic Usage block

training_config = TrainingConfig(export_formats=["torchscript", "pytorch"])
""",
    "custom-health-check-logic-1": _TINY_MODEL
    + """
from datetime import datetime  # the block uses datetime without importing it

some_condition = True
""",
    "failed-checks-remediation-3": _TINY_MODEL,
    "integration-with-metricsengine-1": """
import logging

import torch

from pytest_modeltiers import resolve_task
from pytest_modeltiers.datasets import task_dataset

task_spec = resolve_task(
    {"name": "lm_tiny", "input_schema": {"vocab_size": 101, "max_seq_len": 16}}
)
train_dataset = task_dataset(task_spec, "train", size=64)
val_dataset = task_dataset(task_spec, "validation", size=64, shift=0.5)
n_epochs = 2
train_metrics = {"loss": 2.1, "accuracy": 0.31}
val_metrics = {"loss": 2.3, "accuracy": 0.29}
scheduler = torch.optim.lr_scheduler.ConstantLR(
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
)
grad_norm = 0.8
epoch_time = 12.5
logger = logging.getLogger("guide")
""",
    "integration-with-modelregistry-1": """
from pathlib import Path

from pytest_modeltiers import TrainingConfig

config = TrainingConfig()
Path("checkpoints").mkdir()
Path("checkpoints/epoch_10.pt").write_bytes(b"weights")  # the checkpoint the guide registers
""",
    "best-practices-4": 'domain = "healthcare"',
}

#: Blocks that continue earlier ones (run first, in the same process, as notebook cells).
CONTINUES: dict[str, tuple[str, ...]] = {
    "composite-triggers-1": ("1-drift-trigger-1", "2-performance-trigger-1", "3-time-trigger-1"),
    "configuration-presets-1": ("quick-start-1",),
    "report-generation-1": ("quick-start-1",),
    "best-practices-1": ("quick-start-1", "configuration-presets-1"),
    "best-practices-2": ("quick-start-1",),
    "best-practices-3": (
        "1-drift-trigger-1",
        "2-performance-trigger-1",
        "3-time-trigger-1",
        "composite-triggers-1",
    ),
    "best-practices-5": ("quick-start-1",),
}

#: What a block prints, where the guide says (in a comment) what it should print.
EXPECTED_OUTPUT: dict[str, tuple[str, ...]] = {
    "progressive-validation-1": (
        "Error: d_model (768) must be divisible by num_heads (5)",
        "Error: learning_rate must be positive",
    ),
    "1-drift-trigger-1": ("Triggered: True",),
    "2-performance-trigger-1": ("Triggered: True",),
    "3-time-trigger-1": ("Triggered: True",),
    "4-data-volume-trigger-1": ("Triggered: True",),
    "report-generation-1": ("Triggered: True", "Severity: warning", "drift_trigger:"),
    "logging-to-experimentdb-1": ("Trigger events logged: 1",),
    "best-practices-2": ("Triggers fired: 0/1",),
    "integration-with-metricsengine-1": ("Retraining trigger fired: warning",),
}

#: Blocks that export a model (ONNX among the formats) or start W&B: seconds each.
SLOW = {
    "integration-with-metricsengine-1",
    "basic-usage-1",
    "run-health-checks-separately-1",
    "failed-checks-remediation-3",
}

_DRIVER = """\
import json
import sys

namespace = {"__name__": "__main__"}
for label, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile(code, label, "exec"), namespace)
"""


def _runnable() -> list[object]:
    ids = [
        b.block_id
        for b in BLOCKS.values()
        if b.block_id not in NOT_PYTHON and b.block_id not in NOT_RUN
    ]
    return [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in ids]


def run_block(block_id: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``block_id`` as a reader would, after the blocks it continues and what it is given."""
    pieces = [
        (f"<guide {dep}>", with_our_imports(BLOCKS[dep].code))
        for dep in CONTINUES.get(block_id, ())
    ]
    if block_id in GIVEN:
        pieces.append((f"<given for {block_id}>", textwrap.dedent(GIVEN[block_id])))
    pieces.append((f"<guide {block_id}>", with_our_imports(BLOCKS[block_id].code)))
    (directory / "blocks.json").write_text(json.dumps(pieces), encoding="utf-8")
    (directory / "driver.py").write_text(_DRIVER, encoding="utf-8")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(directory),
        "WANDB_CONFIG_DIR": str(directory / ".wandb-config"),
        "WANDB_CACHE_DIR": str(directory / ".wandb-cache"),
        "WANDB_DATA_DIR": str(directory / ".wandb-data"),
    }
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "driver.py", "blocks.json"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("block_id", _runnable())
def test_guide_block_runs_as_written(block_id: str, tmp_path: Path) -> None:
    block = BLOCKS[block_id]
    done = run_block(block_id, tmp_path)
    assert done.returncode == 0, (
        f"usage-guide.md line {block.line} ({block_id}) failed with exit code "
        f"{done.returncode}:\n{done.stderr[-4000:]}\n--- stdout ---\n{done.stdout[-2000:]}"
    )
    printed = done.stdout + done.stderr  # the guide's logger.warning goes to stderr
    for expected in EXPECTED_OUTPUT.get(block_id, ()):
        assert expected in printed, f"{block_id} printed:\n{printed}"


def test_every_block_is_run_or_listed() -> None:
    python = {i for i, b in BLOCKS.items() if b.lang == "python"}
    assert set(NOT_PYTHON) == set(BLOCKS) - python, "a non-Python block must say what it is"
    assert set(NOT_RUN) <= python
    listed = set(GIVEN) | set(CONTINUES) | set(EXPECTED_OUTPUT) | SLOW
    listed |= {dep for deps in CONTINUES.values() for dep in deps}
    assert listed <= python - set(NOT_RUN), sorted(listed - (python - set(NOT_RUN)))
    assert len(python) - len(NOT_RUN) >= 31  # nearly every Python block runs


def test_only_the_imports_change() -> None:
    code = "from utils.training.retraining_triggers import (\n    DriftTrigger,\n)\n  x = 1\n"
    assert (
        with_our_imports(code) == "from pytest_modeltiers import (\n    DriftTrigger,\n)\n  x = 1\n"
    )
    assert (
        with_our_imports("    from utils.ui.presets import a")
        == "    from pytest_modeltiers import a"
    )
    blocks = guide_blocks("# A\n```python\nx = 1\n```\n## B b\n   ```bash\n   ls\n   ```\n")
    assert [(b.block_id, b.lang, b.line, b.code) for b in blocks] == [
        ("a-1", "python", 2, "x = 1\n"),
        ("b-b-1", "bash", 6, "ls\n"),
    ]
