"""``modeltiers run-tiers --config FILE [--json]``: one tier through pytest, summarised for CI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.cli import run_tiers as cli_run_tiers

REPO = Path(__file__).resolve().parents[1]


def _config(workdir: Path, data: dict[str, Any]) -> str:
    path = workdir / "run.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_tier1_from_the_shipped_config_prints_each_check(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run-tiers", "--config", "configs/example_tiers.json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tier 1: ok  (model_file example_models/tiny_gpt.py)")
    assert "[passed] test_causal_masking:" in out


@pytest.mark.parametrize("tier", [5, "5"])
def test_tier5_json_has_the_guides_keys_and_tier_may_be_a_number_or_a_string(
    workdir: Path, capsys: pytest.CaptureFixture[str], tier: int | str
) -> None:
    data = json.loads((workdir / "configs" / "example_tiers_monitoring.json").read_text())
    data["tier"] = tier
    assert main(["run-tiers", "--config", _config(workdir, data), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"eval_metrics", "comparison", "drift", "retraining", "status"} <= set(summary)
    assert summary["status"] == "ok" and summary["tier"] == 5
    assert set(summary["eval_metrics"]) == {"loss", "perplexity", "accuracy"}
    assert summary["comparison"]["status"] == "skipped"  # no baseline_run_id
    assert summary["retraining"]["status"] == "skipped"  # no trigger had its data
    assert summary["retraining"]["reason"].startswith("could not decide: no data for")
    assert summary["retraining"]["no_data"], "the skipped check's details are kept"
    assert (workdir / "experiments.db").is_file(), "db_path is relative to the working directory"


#: Learned positions initialised to zero: legitimate, so tier 1 only warns about the matrix.
ZERO_POSITIONS = """
import torch
from torch import nn

TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 32, "max_seq_len": 16}}


class ZeroPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(32, 8)
        self.pos = nn.Parameter(torch.zeros(16, 8))
        self.head = nn.Linear(8, 32)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.tok(input_ids) + self.pos[: input_ids.shape[1]])
"""


def test_a_failing_model_exits_1_and_a_warning_only_with_fail_on_warn(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(REPO / "fixtures" / "tier1" / "outputs_nan.py", workdir)
    config = _config(workdir, {"tier": 1, "model_file": "outputs_nan.py"})
    assert main(["run-tiers", "--config", config]) == 1
    assert "tier 1: fail" in capsys.readouterr().out
    (workdir / "zero_positions.py").write_text(ZERO_POSITIONS)
    config = _config(workdir, {"tier": 1, "model_file": "zero_positions.py"})
    assert main(["run-tiers", "--config", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "warn"
    assert main(["run-tiers", "--config", config, "--json", "--fail-on", "warn"]) == 1


def test_without_model_file_the_tasks_example_is_used_and_said(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(workdir, {"task_name": "vision_tiny", "tier": "1", "num_classes": 4})
    assert main(["run-tiers", "--config", config, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == (
        "model_file not set: using the example model of task 'vision_tiny', "
        "example_models/simple_cnn.py"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"tier": 1, "modle_file": "x.py"},
            "unknown key 'modle_file' (did you mean 'model_file'?)",
        ),
        ({"tier": "six"}, "tier must be 1, 2, 3, 4 or 5"),
        ({"tier": 4, "export": {"formats": ["onx"]}}, "unknown format 'onx'"),
        ({"tier": 5, "eval": {"batch_size": 0}}, "eval.batch_size must be an integer >= 1"),
        ({"model_file": "missing.py"}, "model_file 'missing.py' does not exist"),
        ({"task_name": "mine"}, "task 'mine' has no example model"),
    ],
)
def test_bad_configs_exit_2_naming_the_problem(
    workdir: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], message: str
) -> None:
    assert main(["run-tiers", "--config", _config(workdir, data)]) == 2
    assert message in capsys.readouterr().err


def test_invalid_json_and_a_model_that_cannot_load_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "bad.json").write_text("{oops")
    assert main(["run-tiers", "--config", "bad.json"]) == 2
    assert "invalid JSON" in capsys.readouterr().err
    (workdir / "broken.py").write_text("import torch\nraise RuntimeError('no model here')\n")
    assert main(["run-tiers", "--config", _config(workdir, {"model_file": "broken.py"})]) == 2
    err = capsys.readouterr().err
    assert "pytest could not run tier 1 (exit code 4)" in err and "no model here" in err


@pytest.mark.slow
def test_tier4_from_the_guides_export_config(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide's config: torchscript, onnx and pytorch, no quantization, exports/lm_tiny."""
    assert main(["run-tiers", "--config", "configs/example_tiers_export.json", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    formats = summary["tier4"]["formats"]
    assert set(formats) == {"torchscript", "onnx", "pytorch"}
    assert formats["onnx"]["status"] == "ok" and formats["onnx"]["max_abs_diff"] < 1e-3
    # tiny_gpt's length guard is frozen by the legacy trace: an honest warning, not a pass.
    assert formats["torchscript"]["status"] == "warn" and summary["status"] == "warn"
    assert Path(summary["export"]["onnx"]).is_relative_to(workdir / "exports" / "lm_tiny")
    assert summary["checks"]["test_quantized_parity"]["status"] == "skipped"


def test_a_model_that_ends_the_process_is_a_failure_not_a_pass(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "fixtures" / "gate" / "exits_in_forward.py", workdir)
    config = _config(workdir, {"tier": 1, "model_file": "exits_in_forward.py"})
    real_run = subprocess.run

    def run_trusting(command: list[str], **kwargs: Any) -> Any:
        # The safety scan refuses os._exit; a config has no --trust-model, so the test adds it.
        return real_run([*command, "--trust-model"], **kwargs)

    monkeypatch.setattr(cli_run_tiers.subprocess, "run", run_trusting)
    assert main(["run-tiers", "--config", config]) == 1
    captured = capsys.readouterr()
    assert "the tier 1 session did not finish" in captured.err
    assert "tier 1: ok" not in captured.out
