"""The built-in tier 4 suite as users run it: exports, parity sweep, latency, int8, health."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

try:
    # Imported once here: the model files import them inside in-process runs (see conftest.py).
    from transformers import (  # noqa: F401
        BertForSequenceClassification,
        GPT2LMHeadModel,
        ViTForImageClassification,
    )
except ImportError:  # pragma: no cover - transformers is a test dependency
    HAVE_TRANSFORMERS = False
else:
    HAVE_TRANSFORMERS = True

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_models"
FIXTURES = REPO / "fixtures" / "tier4"
THIRD_PARTY = REPO / "fixtures" / "third_party"
DEFAULT_TESTS = [
    "test_export[onnx]",
    "test_export[torch_export]",
    "test_export[pytorch]",
    "test_export_parity[onnx]",
    "test_export_parity[torch_export]",
    "test_export_parity[pytorch]",
    "test_export_latency",
    "test_quantized_parity",
    "test_export_health",
]

pytestmark = pytest.mark.usefixtures("exporters_warmed_up")


def copy_model(pytester: pytest.Pytester, source: Path) -> str:
    """The model file copied into the test's directory, so that rootdir (where failing batches
    and the export directory go) is the pytester directory, not this repository."""
    shutil.copy(source, pytester.path)
    return source.name


def test_tier4_collects_the_design_names(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co", "-q", f"--model={EXAMPLES / 'tiny_gpt.py'}", "-m", "tier4", "--strict-markers"
    )
    result.stdout.fnmatch_lines_random([f"modeltiers/tier4.py::{name}" for name in DEFAULT_TESTS])
    assert "modeltiers/tier1.py" not in result.stdout.str()


def test_export_formats_option_picks_the_parametrisation(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--co",
        "-q",
        f"--model={EXAMPLES / 'tiny_gpt.py'}",
        "-m",
        "tier4",
        "--export-formats",
        "torchscript, onnx",
    )
    text = result.stdout.str()
    assert "test_export[torchscript]" in text
    assert "test_export_parity[onnx]" in text
    assert "test_export[pytorch]" not in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--export-formats", "onnx,tflite"], "*--export-formats: unknown format(s) tflite*"),
        (["--export-tolerance", "onnx=1e-4"], "*--export-tolerance: expected FORMAT*"),
        (["--export-quantization", "int4"], "*--export-quantization: expected one of dynamic*"),
        (["--export-onnx-exporter", "old"], "*expected one of dynamo, legacy*"),
    ],
)
def test_bad_tier4_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], expected: str
) -> None:
    result = pytester.runpytest(f"--model={EXAMPLES / 'tiny_gpt.py'}", "-m", "tier4", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_example_lm_passes_tier4_and_reports_it(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, EXAMPLES / "tiny_gpt.py")
    result = pytester.runpytest(
        f"--model={model}",
        "-m",
        "tier4",
        "--export-dir",
        "exports",
        "--modeltiers-report",
        "health.json",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=len(DEFAULT_TESTS))
    folder = pytester.path / "exports" / "tiny_gpt"
    for name in ("model.onnx", "model.pt2", "model.safetensors", "model.int8.torchscript.pt"):
        assert (folder / name).stat().st_size > 0, name
    metadata = json.loads((folder / "metadata.json").read_text())
    assert sorted(metadata["formats"]) == ["onnx", "pytorch", "torch_export"]
    assert metadata["quantization"]["mode"] == "dynamic"
    health = json.loads((folder / "health_report.json").read_text())
    assert health["all_passed"] is True and health["health_score"] == 100.0
    report = json.loads((pytester.path / "health.json").read_text())
    tier4 = {c["check_name"]: c for c in report["checks"] if c["tier"] == 4}
    assert sorted(tier4) == sorted(DEFAULT_TESTS)
    assert {c["model"] for c in tier4.values()} == {"tiny_gpt"}
    parity = tier4["test_export_parity[onnx]"]["details"]
    assert parity["shapes_checked"] >= 7  # the fixed sweep, then Hypothesis' shapes
    assert parity["worst_max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("example", ["simple_cnn", "tiny_encoder_cls", "tiny_seq2seq"])
def test_other_example_models_pass_tier4(pytester: pytest.Pytester, example: str) -> None:
    model = copy_model(pytester, EXAMPLES / f"{example}.py")
    result = pytester.runpytest(f"--model={model}", "-m", "tier4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(DEFAULT_TESTS))


def test_data_dependent_branch_fails_export_at_its_line(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, FIXTURES / "branch_on_values.py")
    result = pytester.runpytest(
        f"--model={model}",
        "-m",
        "tier4",
        "--export-formats",
        "onnx,torch_export,torchscript",
        "-k",
        "test_export[ or test_export_parity",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=3, passed=1, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "*onnx export failed: data-dependent control flow at *branch_on_values.py:27 in "
            "forward: `if input_ids[[]0, 0[]] >= 32:*",
            "*torch_export export failed: data-dependent control flow at *branch_on_values.py:27*",
            "*the torchscript artifact differs from eager PyTorch at input shape*",
            "*Minimum tolerance that would pass: atol >= *",
            "FAILED modeltiers/tier4.py::test_export[[]onnx[]]*",
            "FAILED modeltiers/tier4.py::test_export[[]torch_export[]]*",
            "FAILED modeltiers/tier4.py::test_export_parity[[]torchscript[]]*",
        ]
    )
    # The trace itself "worked": its TracerWarning is a warning of test_export[torchscript].
    assert "test_export[torchscript]" not in "\n".join(
        line for line in result.stdout.lines if line.startswith("FAILED")
    )


def test_positions_from_a_python_int_fail_where_the_length_was_fixed(
    pytester: pytest.Pytester,
) -> None:
    model = copy_model(pytester, FIXTURES / "positions_python_int.py")
    result = pytester.runpytest(
        f"--model={model}",
        "-m",
        "tier4",
        "--export-formats",
        "onnx,torch_export,torchscript",
        "-k",
        "test_export[ or test_export_parity",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=3, passed=1, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "*onnx export failed: the ONNX graph does not accept other sizes: the sequence "
            "dimension 1 of input_ids is the constant 8 (fixed at *positions_python_int.py:26*",
            "*torch_export export failed: the sequence dimension was fixed to the constant 8 at "
            "*positions_python_int.py:26 in forward: `length = int(input_ids.shape[[]1[]])*",
            "*the torchscript artifact returns logits [[]1, 8, 64[]] where eager PyTorch returns "
            "[[]1, 1, 64[]]*",
        ]
    )


def test_legacy_onnx_exporter_bakes_the_length_and_the_sweep_catches_it(
    pytester: pytest.Pytester,
) -> None:
    model = copy_model(pytester, FIXTURES / "mha_legacy.py")
    args = [f"--model={model}", "-m", "tier4", "--export-formats", "onnx", "-k", "onnx]"]
    passed = pytester.runpytest(*args, "-p", "no:cacheprovider")
    passed.assert_outcomes(passed=2)
    failed = pytester.runpytest(*args, "--export-onnx-exporter", "legacy", "-p", "no:cacheprovider")
    failed.assert_outcomes(passed=1, failed=1)
    failed.stdout.fnmatch_lines(
        [
            "*the onnx artifact raised at input shape input_ids[[]1,1[]]* (exported from "
            "input_ids[[]2,8[]]*Reshape*",
            "*The artifact does not accept this shape although the model does: a size was baked "
            "in at export*",
            "FAILED modeltiers/tier4.py::test_export_parity[[]onnx[]]*",
        ]
    )


def test_pyproject_tolerance_is_used_and_the_failure_names_the_minimum(
    pytester: pytest.Pytester,
) -> None:
    model = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    pytester.makepyprojecttoml("[tool.modeltiers.tolerance]\nonnx = { atol = 0.0, rtol = 0.0 }\n")
    result = pytester.runpytest(
        f"--model={model}", "-m", "tier4", "--export-formats", "onnx", "-k", "test_export_parity"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the onnx artifact differs from eager PyTorch at input shape pixel_values[[]*: "
            "max abs error *, max rel error *; *% of elements (*/*) exceed atol + rtol*|eager| "
            "with atol=0, rtol=0 (*pyproject.toml [[]tool.modeltiers.tolerance[]] onnx). Minimum "
            "tolerance that would pass: atol >= * at rtol 0, or rtol >= * at atol 0*",
        ]
    )
    # The option overrides the file.
    loose = pytester.runpytest(
        f"--model={model}",
        "-m",
        "tier4",
        "--export-formats",
        "onnx",
        "-k",
        "test_export_parity",
        "--export-tolerance",
        "onnx=1e-4,1e-3",
    )
    loose.assert_outcomes(passed=1)


def test_latency_budget_fails_only_when_set(pytester: pytest.Pytester) -> None:
    model = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    args = [f"--model={model}", "-m", "tier4", "--export-formats", "torch_export", "-k", "latency"]
    pytester.runpytest(*args).assert_outcomes(passed=1)
    result = pytester.runpytest(*args, "--export-latency-budget", "0.000001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*over the latency budget of 1e-06 ms: torch_export at batch 1*"])


def test_static_quantization_calibrates_or_says_why_not(pytester: pytest.Pytester) -> None:
    cnn = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    gpt = copy_model(pytester, EXAMPLES / "tiny_gpt.py")
    args = ["-m", "tier4", "-k", "quantized", "--export-quantization", "static", "-rs"]
    pytester.runpytest(f"--model={cnn}", *args).assert_outcomes(passed=1)
    skipped = pytester.runpytest(f"--model={gpt}", *args)
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(
        ["*static quantization: static quantization needs a model that torch.fx can trace*"]
    )
    none = pytester.runpytest(f"--model={gpt}", *args[:-3], "--export-quantization", "none", "-rs")
    none.assert_outcomes(skipped=1)
    none.stdout.fnmatch_lines(["*quantization is off (--export-quantization none)*"])


def test_several_models_keep_their_own_exports_and_report_keys(pytester: pytest.Pytester) -> None:
    cnn = copy_model(pytester, EXAMPLES / "simple_cnn.py")
    cls = copy_model(pytester, FIXTURES / "mha_legacy.py")
    result = pytester.runpytest(
        f"--model={cnn}",
        f"--model={cls}",
        "-m",
        "tier4",
        "--export-formats",
        "pytorch",
        "-k",
        "test_export[ or test_export_parity",
        "--export-dir",
        "out",
        "--modeltiers-report",
        "health.json",
    )
    result.assert_outcomes(passed=4)
    assert (pytester.path / "out" / "simple_cnn" / "model.safetensors").is_file()
    assert (pytester.path / "out" / "mha_legacy" / "model.safetensors").is_file()
    report = json.loads((pytester.path / "health.json").read_text())
    keys = {(c["check_name"], c["model"]) for c in report["checks"]}
    assert ("test_export[pytorch]", "simple_cnn") in keys
    assert ("test_export_parity[pytorch]", "mha_legacy") in keys


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hf_gpt2", "hf_bert_cls", "hf_vit"])
def test_small_hugging_face_models_pass_tier4(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if not HAVE_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    path = THIRD_PARTY / f"{kind}.py"
    result = pytester.runpytest(f"--model={path}", "-m", "tier4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(DEFAULT_TESTS))


@pytest.mark.slow
def test_hugging_face_t5_passes_through_the_legacy_onnx_fallback(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.13's dynamo exporter cannot convert T5's attention views; the TorchScript-based
    exporter can, and the shape sweep proves its graph kept the dynamic sizes. The fallback is a
    warning on test_export[onnx], never a silent pass."""
    if not HAVE_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    path = THIRD_PARTY / "hf_t5.py"
    result = pytester.runpytest(
        f"--model={path}", "-m", "tier4", "-p", "no:cacheprovider", "--export-formats", "onnx",
        "--modeltiers-report", "health.json",
    )  # fmt: skip
    result.assert_outcomes(passed=5)
    report = json.loads((pytester.path / "health.json").read_text())
    export = next(c for c in report["checks"] if c["check_name"] == "test_export[onnx]")
    assert export["status"] == "warning"
    assert "because the dynamo exporter failed" in export["message"]
    parity = next(c for c in report["checks"] if c["check_name"] == "test_export_parity[onnx]")
    assert parity["status"] == "passed"
