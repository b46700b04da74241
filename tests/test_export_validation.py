"""Tier 4 as a library call and its CLI summary; the cache behind the exported_model fixture."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from export_support import EXAMPLES, FIXTURES, model_and_task
from torch import nn

from pytest_modeltiers.checks import tier4
from pytest_modeltiers.checks.export_validation import run_export_validation, tier4_summary
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.export.cache import ExportCache
from pytest_modeltiers.models.adapters import get_adapter
from pytest_modeltiers.report import CheckResult

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")


def test_library_run_reports_status_error_latency_and_paths(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(EXAMPLES / "simple_cnn.py")
    summary = run_export_validation(
        model, adapter, task, tmp_path, ["onnx", "pytorch"], quantization="dynamic"
    )
    assert summary["tier4"]["status"] == "ok", summary["tier4"]
    assert summary["export"]["onnx"] == str(tmp_path / "model.onnx")
    assert summary["export"]["metadata"] == str(tmp_path / "metadata.json")
    onnx = summary["tier4"]["formats"]["onnx"]
    assert onnx["status"] == "ok" and onnx["max_abs_diff"] < 1e-4
    assert onnx["latency_ms"] > 0 and onnx["speedup_vs_eager"] > 0
    assert summary["tier4"]["checks"]["test_quantized_parity"]["status"] == "ok"
    json.dumps(summary, allow_nan=False)  # the CLI prints it as JSON


def test_library_run_fails_the_format_with_the_cause(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(FIXTURES / "branch_on_values.py")
    summary = run_export_validation(model, adapter, task, tmp_path, ["onnx", "torchscript"])
    formats = summary["tier4"]["formats"]
    assert summary["tier4"]["status"] == "fail"
    assert formats["onnx"]["status"] == "fail" and formats["onnx"]["artifact"] is None
    assert "data-dependent control flow" in formats["onnx"]["message"]
    assert formats["torchscript"]["status"] == "fail"
    assert "differs from eager PyTorch" in formats["torchscript"]["message"]


def test_summary_from_a_sessions_check_dicts() -> None:
    checks = [
        CheckResult.passed("test_export", 4, "ok", {"artifact": "/x/model.onnx"}).to_dict(),
        CheckResult.passed(
            "test_export_parity", 4, "ok", {"worst_max_abs_diff": 1e-6, "worst_max_rel_error": 1e-5}
        ),
        CheckResult.passed(
            "test_export_latency",
            4,
            "fast",
            {"shapes": {"batch 1": {"onnx": {"median_ms": 0.5, "speedup_vs_eager": 2.0}}}},
        ),
        CheckResult.passed("test_shape_robustness", 1, "tier 1 is ignored"),
    ]
    checks[0]["check_name"] = "test_export[onnx]"
    checks[1] = CheckResult("test_export_parity[onnx]", 4, "passed", "ok", checks[1].details)  # type: ignore[union-attr]
    summary = tier4_summary(checks)
    assert summary["export"] == {"onnx": "/x/model.onnx"}
    assert summary["tier4"]["formats"]["onnx"] == {
        "status": "ok",
        "max_abs_diff": 1e-6,
        "max_rel_error": 1e-5,
        "latency_ms": 0.5,
        "speedup_vs_eager": 2.0,
        "artifact": "/x/model.onnx",
        "message": "",
    }
    assert summary["tier4"]["status"] == "ok"
    assert tier4_summary([])["tier4"]["status"] == "fail"  # nothing validated is not a pass


class _Slow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 4)
        self.emb = nn.Embedding(8, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(0.5)
        return self.head(self.emb(input_ids))


def test_a_hanging_model_fails_test_export_with_the_timeout(tmp_path: Path) -> None:
    task = get_builtin_task("lm_tiny").with_vocab_size(8)
    cache = ExportCache(_Slow, get_adapter(task), task, tmp_path, timeout=0.2)
    result = tier4.check_export(cache.outcome("onnx"))
    assert result.status.value == "failed"
    assert "timed out after 0.2 s" in result.message
