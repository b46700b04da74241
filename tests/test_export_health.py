"""ExportHealthReport (score derived from the checks) and ExportHealthChecker's three stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from export_support import ALL_FORMATS, EXAMPLES, FIXTURES, exported, loaded, model_and_task
from torch import nn

from pytest_modeltiers.checks.export_health import ExportHealthChecker, ExportHealthReport
from pytest_modeltiers.config.task_spec import get_builtin_task
from pytest_modeltiers.report import CheckResult

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")
GPT = EXAMPLES / "tiny_gpt.py"
PRE_EXPORT = [
    "architecture_validation",
    "parameter_validation",
    "shape_validation",
    "memory_requirements",
    "forward_pass_validation",
]


# --------------------------------------------------------------------------- the report


def test_score_is_computed_from_the_checks_whenever_it_is_read() -> None:
    """The upstream report computed its summary before any check was added and said 100."""
    report = ExportHealthReport(model_name="m")
    assert report.health_score is None and report.all_passed
    for status in ("passed", "passed", "warning", "failed"):
        report.add_check(CheckResult(f"c_{status}", 4, status, "" if status == "passed" else "x"))
    report.add_check(CheckResult.skipped("not_applicable", 4, "does not apply"))
    assert report.summary == {
        "total": 5,
        "passed": 2,
        "warnings": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert report.health_score == pytest.approx((2 + 0.5) / 4 * 100, abs=0.05)
    assert not report.all_passed
    assert [c.check_name for c in report.get_failed_checks()] == ["c_failed"]
    data = json.loads(report.to_json())
    data["health_score"] = 100.0  # a stored score is never trusted
    assert ExportHealthReport.from_dict(data).health_score == report.health_score


def test_users_add_their_own_checks_and_get_both_files(tmp_path: Path) -> None:
    report = ExportHealthReport(model_name="m")
    report.add_check(CheckResult.passed("custom_validation", 4, "ok", {"metric": 0.95}))
    report.add_check(CheckResult.failed("latency_slo", 4, "p90 over 20 ms", {"p90_ms": 31.0}))
    with pytest.raises(TypeError, match="add_check takes a CheckResult"):
        report.add_check({"check_name": "x"})  # type: ignore[arg-type]
    report.save_json(tmp_path / "r.json")
    report.save_markdown(tmp_path / "r.md")
    assert json.loads((tmp_path / "r.json").read_text())["health_score"] == 50.0
    text = (tmp_path / "r.md").read_text()
    assert "Health score: **50.0/100**" in text and "## Failed checks" in text
    assert "### latency_slo" in text and '"p90_ms": 31.0' in text
    assert "Fix latency_slo" in text


# --------------------------------------------------------------------------- stage 1


def test_a_good_model_passes_the_pre_export_checks() -> None:
    model, adapter, task = model_and_task(GPT)
    report = ExportHealthChecker(model, task_spec=task, adapter=adapter).run_all_checks()
    assert [c.check_name for c in report.checks] == PRE_EXPORT
    assert report.all_passed and report.health_score == 100.0
    memory = next(c for c in report.checks if c.check_name == "memory_requirements")
    assert memory.details["method"] == "torch_dispatch_live_storages"  # measured, not param x 2
    assert memory.details["peak_activation_bytes"] > 0


class _Classifier(nn.Module):
    def __init__(self, classes: int = 2, dropout: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.drop = nn.Dropout(0.1) if dropout else nn.Identity()
        self.head = nn.Linear(8, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.emb(input_ids).mean(1)))


def _cls_task() -> object:
    return get_builtin_task("cls_tiny").with_vocab_size(16)


def _statuses(model: nn.Module) -> dict[str, str]:
    report = ExportHealthChecker(model, task_spec=_cls_task()).run_all_checks()  # type: ignore[arg-type]
    return {c.check_name: c.status.value for c in report.checks}


def test_each_pre_export_problem_fails_its_own_check() -> None:
    nan = _Classifier()
    with torch.no_grad():
        nan.head.weight[0, 0] = float("nan")
    assert _statuses(nan)["parameter_validation"] == "failed"
    assert _statuses(_Classifier(classes=3))["shape_validation"] == "failed"
    train_mode = _Classifier(dropout=True).train()
    assert _statuses(train_mode)["architecture_validation"] == "warning"
    assert _statuses(_Classifier(dropout=True).eval())["architecture_validation"] == "passed"


def test_task_spec_is_required() -> None:
    with pytest.raises(ValueError, match="needs task_spec="):
        ExportHealthChecker(_Classifier())


# --------------------------------------------------------------------------- stages 2 and 3


def test_all_three_stages_pass_on_good_artifacts() -> None:
    model = loaded(GPT)
    checker = ExportHealthChecker(
        model.new_model(),
        task_spec=model.task,
        adapter=model.adapter,
        model_factory=model.new_model,
    )
    report = checker.run_all_checks(exported(GPT), formats=[*ALL_FORMATS, "quantized"])
    names = [c.check_name for c in report.checks]
    for fmt in [*ALL_FORMATS, "quantized"]:
        assert f"{fmt}_validation" in names and f"{fmt}_numerical_consistency" in names
    assert names[-1] == "performance_benchmark"
    assert report.all_passed, [c.message for c in report.get_failed_checks()]
    onnx = next(c for c in report.checks if c.check_name == "onnx_validation")
    assert onnx.details["opset_version"] >= 18 and onnx.details["fixed_dims"] == []
    state = next(c for c in report.checks if c.check_name == "pytorch_validation")
    assert state.details["missing_keys"] == [] and state.details["unexpected_keys"] == []
    bench = next(c for c in report.checks if c.check_name == "performance_benchmark")
    assert bench.details["onnx_ms"] > 0 and "onnx_speedup" in bench.details


def test_damaged_artifacts_fail_their_validation(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    shutil.copytree(exported(GPT), folder)
    onnx_file = folder / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:200])
    (folder / "model.pt2").unlink()
    model, adapter, task = model_and_task(GPT)
    report = ExportHealthChecker(model, task_spec=task, adapter=adapter).run_all_checks(
        folder, formats=list(ALL_FORMATS)
    )
    failed = {c.check_name: c.message for c in report.get_failed_checks()}
    assert sorted(failed) == ["onnx_validation", "torch_export_validation"]
    assert "onnx.checker rejects model.onnx" in failed["onnx_validation"]
    assert "no model.pt2 in" in failed["torch_export_validation"]
    assert report.health_score is not None and report.health_score < 100


def test_committed_corrupt_export_and_missing_metadata(tmp_path: Path) -> None:
    model, adapter, task = model_and_task(GPT)
    checker = ExportHealthChecker(model, task_spec=task, adapter=adapter)
    report = checker.run_all_checks(FIXTURES / "corrupt_export", formats=["onnx", "torch_export"])
    failed = {c.check_name: c.message for c in report.get_failed_checks()}
    assert "onnx.checker rejects model.onnx" in failed["onnx_validation"]
    assert "cannot be loaded: it is truncated, corrupt" in failed["torch_export_validation"]
    empty = checker.run_all_checks(tmp_path, formats=["onnx"])
    assert "has no metadata.json" in empty.get_failed_checks()[0].message
