"""Parity tolerances: defaults per format and dtype, pyproject.toml, --export-tolerance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_modeltiers.export.formats import parse_formats
from pytest_modeltiers.export.tolerances import (
    DEFAULTS,
    Tolerance,
    ToleranceError,
    ToleranceTable,
    load_pyproject_tolerances,
    parse_tolerance,
)


def test_defaults_follow_the_documented_table() -> None:
    table = ToleranceTable()
    assert (table.get("onnx").atol, table.get("onnx").rtol) == (1e-4, 1e-3)
    assert (table.get("torch_export").atol, table.get("torch_export").rtol) == (1e-5, 1e-5)
    assert (table.get("pytorch").atol, table.get("pytorch").rtol) == (1e-5, 1.3e-6)
    quantized = table.get("quantized")
    assert quantized.min_top1_agreement == 0.9 and quantized.max_mismatch_fraction == 0.01
    assert table.get("onnx").source == "default"


def test_low_precision_outputs_get_at_least_torch_testing_defaults() -> None:
    table = ToleranceTable()
    assert table.get("torch_export", "float16").rtol == 1e-3
    assert table.get("torch_export", "bfloat16").rtol == 1.6e-2
    assert table.get("onnx", "bfloat16").atol == DEFAULTS["onnx"].atol  # already looser
    assert table.get("onnx", "float64") == table.get("onnx")


def test_option_syntax_and_its_errors() -> None:
    assert parse_tolerance("onnx=1e-3,1e-2") == ("onnx", {"atol": 1e-3, "rtol": 1e-2})
    key, override = parse_tolerance("quantized=0.2,0.2,0.05,0.8")
    assert key == "quantized" and override["min_top1_agreement"] == 0.8
    assert parse_tolerance("onnx.float16=1,2")[0] == "onnx.float16"
    for bad, message in [
        ("onnx", "expected FORMAT[.DTYPE]=ATOL,RTOL"),
        ("onnx=1", "expected FORMAT[.DTYPE]=ATOL,RTOL"),
        ("onnx=a,b", "expected numbers"),
        ("tflite=1,1", "unknown format 'tflite'"),
        ("onnx.int8=1,1", "unknown dtype 'int8'"),
        ("onnx=-1,0", "atol must be a finite number >= 0"),
        ("onnx=1,1,2", "max_mismatch_fraction must be a number from 0 to 1"),
    ]:
        with pytest.raises(ToleranceError, match=re.escape(message)):
            parse_tolerance(bad)


def _pyproject(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_pyproject_table_and_precedence(tmp_path: Path) -> None:
    root = _pyproject(
        tmp_path,
        "[tool.modeltiers.tolerance]\n"
        "onnx = { atol = 1e-3, rtol = 1e-2 }\n"
        '"onnx.float16" = { atol = 5e-2 }\n'
        "[tool.modeltiers.tolerance.torch_export]\n"
        "atol = 2e-5\n"
        "bfloat16 = { rtol = 0.05 }\n",
    )
    table = ToleranceTable.from_sources(root, ["onnx=7e-4,7e-3"])
    assert table.get("onnx") == Tolerance(7e-4, 7e-3, source="--export-tolerance onnx")
    # The command line wins over the file, even over its dtype-specific entry...
    assert table.get("onnx", "float16").atol == 7e-4
    # ... which wins over the file's format entry when no option is given.
    assert ToleranceTable.from_sources(root).get("onnx", "float16").atol == 5e-2
    assert ToleranceTable.from_sources(root).get("onnx", "float16").rtol == 1e-2
    assert table.get("torch_export").atol == 2e-5
    assert table.get("torch_export", "bfloat16").rtol == 0.05
    assert (
        "pyproject.toml [tool.modeltiers.tolerance] torch_export"
        in table.get("torch_export").source
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.modeltiers.tolerance]\nonnxx = { atol = 1 }\n", "unknown format 'onnxx'"),
        ("[tool.modeltiers.tolerance]\nonnx = 0.1\n", "onnx must be a table"),
        ("[tool.modeltiers.tolerance]\nonnx = { atl = 1 }\n", "unknown key(s) atl"),
        ("[tool.modeltiers.tolerance]\nonnx = { rtol = -1 }\n", "rtol must be a finite number"),
        ("[tool.modeltiers\n", "cannot read"),
    ],
)
def test_bad_pyproject_tables_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ToleranceError) as info:
        load_pyproject_tolerances(_pyproject(tmp_path, text))
    assert message in str(info.value)
    assert "pyproject.toml" in str(info.value)


def test_no_pyproject_or_no_table_means_defaults(tmp_path: Path) -> None:
    assert load_pyproject_tolerances(tmp_path) == {}
    assert load_pyproject_tolerances(_pyproject(tmp_path, "[tool.other]\nx = 1\n")) == {}


def test_format_lists() -> None:
    assert parse_formats(" onnx , TorchScript ") == ("onnx", "torchscript")
    for bad, message in [
        ("", "expected a comma-separated list"),
        ("onnx,tflite", "unknown format(s) tflite"),
        ("onnx,onnx", "listed twice"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_formats(bad)
