"""Tests of ``CheckResult``, ``HealthReport``, its writers and its committed JSON Schema."""

from __future__ import annotations

import enum
import itertools
import json
import math
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pytest_modeltiers
from pytest_modeltiers.report import (
    ENVIRONMENT_KEYS,
    HINTS,
    CheckResult,
    CheckStatus,
    HealthReport,
    jsonable,
    load_schema,
)
from pytest_modeltiers.report import environment as environment_module
from pytest_modeltiers.report import health_report as health_report_module

CREATED = "2024-01-31T12:00:00Z"
ENV: dict[str, str | None] = dict.fromkeys(ENVIRONMENT_KEYS, "1.0")
SHA = "ab" * 32


def report(*checks: CheckResult, **context: Any) -> HealthReport:
    """A report with a fixed timestamp and environment, so two of them compare equal."""
    context.setdefault("environment", ENV)
    context.setdefault("created_at", CREATED)
    return HealthReport(checks, **context)


def model_identity(key: str = "tiny_gpt", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": key,
        "spec": f"example_models/{key}.py",
        "class_name": "TinyGPT",
        "num_parameters": 12_345,
        "file": f"/repo/example_models/{key}.py",
        "sha256": SHA,
        "task": "lm_tiny",
        "adapter": "lm",
    }
    data.update(overrides)
    return data


def validate(data: dict[str, Any]) -> None:
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)


def mixed_checks() -> list[CheckResult]:
    """Two models, two tiers, every status."""
    return [
        CheckResult.passed("test_shape_robustness", 1, model="a", nodeid="t.py::shape[a]"),
        CheckResult.warning(
            "test_parameter_initialization", 1, "head.weight is all zero", model="a"
        ),
        CheckResult.failed(
            "test_gradient_flow",
            1,
            "1 parameter gets no gradient: unused: head.bias",
            {"unused": ["head.bias"]},
            model="b",
            nodeid="t.py::grad[b]",
        ),
        CheckResult.error("test_output_finite", 1, "timed out after 300 s", model="b"),
        CheckResult.skipped("test_causal_masking", 1, "not a decoder LM", model="a"),
        CheckResult.passed("test_overfit_single_batch", 3, duration_seconds=2.5, model="a"),
    ]


# -- CheckStatus and CheckResult --------------------------------------------------------------


def test_status_values_markers_and_ok() -> None:
    assert [s.value for s in CheckStatus] == ["passed", "warning", "failed", "error", "skipped"]
    assert [s.marker for s in CheckStatus] == ["PASS", "WARN", "FAIL", "ERROR", "SKIP"]
    assert [s.ok for s in CheckStatus] == [True, True, False, False, True]
    assert CheckStatus.parse("failed") is CheckStatus.FAILED
    assert str(CheckStatus.WARNING) == "warning"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tier", 0, "tier must be an integer from 1 to 5; got 0"),
        ("tier", 6, "tier must be"),
        ("tier", True, "tier must be"),
        ("tier", "1", "tier must be"),
        ("status", "passing", "status must be one of passed, warning, failed, error, skipped"),
        ("status", None, "status must be one of"),
        ("check_name", "", "check_name must be a non-empty string"),
        ("duration_seconds", -1.0, "duration_seconds must be a finite number >= 0"),
        ("duration_seconds", math.nan, "duration_seconds must be"),
        ("message", None, "message must be a string"),
        ("details", [1], "details must be a dict"),
        ("model", "", "model must be a non-empty string or None"),
        ("nodeid", 3, "nodeid must be"),
    ],
)
def test_invalid_field_is_named(field: str, value: Any, expected: str) -> None:
    fields: dict[str, Any] = {"check_name": "test_x", "tier": 1, "status": "passed"}
    fields[field] = value
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        CheckResult(**fields)


@pytest.mark.parametrize("status", ["warning", "failed", "error", "skipped"])
def test_non_passing_status_needs_a_message(status: str) -> None:
    with pytest.raises(ValueError, match=f"message must say why test_x has status {status}"):
        CheckResult("test_x", 1, CheckStatus(status), "  ")


def test_status_string_is_normalised_to_the_enum() -> None:
    result = CheckResult("test_x", 2, "warning", "odd")  # type: ignore[arg-type]
    assert result.status is CheckStatus.WARNING
    assert result.ok


def test_primary_constructor_rejects_non_json_details_with_the_path() -> None:
    with pytest.raises(ValueError, match=r"details\['stats'\]\['mean'\] is nan"):
        CheckResult("test_x", 1, CheckStatus.PASSED, details={"stats": {"mean": math.nan}})
    with pytest.raises(ValueError, match=r"details\['shape'\] is a tuple"):
        CheckResult("test_x", 1, CheckStatus.PASSED, details={"shape": (2, 3)})
    with pytest.raises(ValueError, match="the key 1 of type int"):
        CheckResult("test_x", 1, CheckStatus.PASSED, details={1: "a"})  # type: ignore[dict-item]


def test_status_constructors_convert_details() -> None:
    result = CheckResult.failed(
        "test_output_finite", 1, "NaN in logits", {"shape": (2, 8, 50), "max": math.inf}
    )
    assert result.status is CheckStatus.FAILED
    assert not result.ok
    assert result.details == {"shape": [2, 8, 50], "max": "inf"}
    assert CheckResult.passed("test_x", 1).message == ""
    assert CheckResult.skipped("test_x", 1, "n/a").ok
    assert CheckResult.error("test_x", 1, "boom").status is CheckStatus.ERROR
    assert CheckResult.warning("test_x", 1, "hm").status is CheckStatus.WARNING


def test_result_is_frozen_and_owns_its_details() -> None:
    details: dict[str, Any] = {"offenders": ["a"]}
    result = CheckResult("test_x", 1, CheckStatus.PASSED, details=details)
    details["offenders"].append("b")
    assert result.details == {"offenders": ["a"]}
    result.to_dict()["details"]["offenders"].append("c")
    assert result.details == {"offenders": ["a"]}
    with pytest.raises(AttributeError):
        result.tier = 2  # type: ignore[misc]
    stamped = replace(result, nodeid="t.py::test_x", duration_seconds=1)
    assert stamped.nodeid == "t.py::test_x"
    assert stamped.duration_seconds == 1.0


def test_from_dict_names_missing_and_unknown_keys() -> None:
    data = CheckResult.passed("test_x", 1).to_dict()
    with pytest.raises(ValueError, match="unknown keys extra"):
        CheckResult.from_dict({**data, "extra": 1})
    del data["tier"]
    with pytest.raises(ValueError, match="missing tier"):
        CheckResult.from_dict(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def check_results(draw: st.DrawFn) -> CheckResult:
    status = draw(st.sampled_from(CheckStatus))
    min_size = 0 if status is CheckStatus.PASSED else 1
    message = draw(st.text(min_size=min_size).filter(lambda m: bool(m.strip()) or not min_size))
    names = st.text("abcdefghij_[]", min_size=1, max_size=12)
    return CheckResult(
        check_name=draw(names),
        tier=draw(st.integers(1, 5)),
        status=status,
        message=message,
        details=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
        duration_seconds=draw(st.floats(0, 1e6, allow_nan=False)),
        model=draw(st.none() | st.sampled_from(["a", "b"])),
        nodeid=draw(st.none() | names),
    )


@given(check_results())
def test_check_result_json_round_trip_is_exact(result: CheckResult) -> None:
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert CheckResult.from_dict(json.loads(text)) == result


@given(st.lists(check_results(), max_size=8))
def test_report_json_round_trip_and_schema(results: list[CheckResult]) -> None:
    original = report(*results, models=[model_identity("a"), model_identity("b")])
    data = json.loads(original.to_json())
    validate(data)
    assert HealthReport.from_dict(data).to_dict() == data


# -- jsonable -----------------------------------------------------------------------------------


class FakeScalar:
    """Duck-typed like a numpy or torch scalar."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


class FakeArray:
    """Duck-typed like an array: ``tolist`` wins over ``item``."""

    def tolist(self) -> list[Any]:
        return [[1.0, math.nan], [FakeScalar(2)]]

    def item(self) -> float:
        raise AssertionError("tolist must be preferred")


class Color(enum.Enum):
    RED = "red"


@dataclass
class Stats:
    mean: float
    shape: tuple[int, ...]


def test_jsonable_converts_the_common_check_values() -> None:
    value = {
        "nan": math.nan,
        "inf": math.inf,
        "-inf": -math.inf,
        "shape": (2, (3, 4)),
        "path": Path("/tmp/batch.pt"),
        "scalar": FakeScalar(math.nan),
        "int_scalar": FakeScalar(3),
        "array": FakeArray(),
        "set": {3, 1, 2},
        "enum": Color.RED,
        "status": CheckStatus.FAILED,
        "stats": Stats(0.5, (1, 2)),
        7: "int key",
    }
    converted = jsonable(value)
    assert converted == {
        "nan": "nan",
        "inf": "inf",
        "-inf": "-inf",
        "shape": [2, [3, 4]],
        "path": "/tmp/batch.pt",
        "scalar": "nan",
        "int_scalar": 3,
        "array": [[1.0, "nan"], [2]],
        "set": [1, 2, 3],
        "enum": "red",
        "status": "failed",
        "stats": {"mean": 0.5, "shape": [1, 2]},
        "7": "int key",
    }
    json.dumps(converted, allow_nan=False)
    assert CheckResult.jsonable((1, math.inf)) == [1, "inf"]


def test_jsonable_refuses_unknown_objects_naming_where() -> None:
    with pytest.raises(TypeError, match=r"details\['model'\] is a builtins.object"):
        jsonable({"model": object()}, where="details")


# -- score and summaries ------------------------------------------------------------------------


def _results(
    passed: int = 0, warning: int = 0, failed: int = 0, error: int = 0, skipped: int = 0
) -> list[CheckResult]:
    made: list[CheckResult] = []
    for status, count in (
        (CheckStatus.PASSED, passed),
        (CheckStatus.WARNING, warning),
        (CheckStatus.FAILED, failed),
        (CheckStatus.ERROR, error),
        (CheckStatus.SKIPPED, skipped),
    ):
        made += [CheckResult(f"test_{status.value}_{i}", 1, status, "why") for i in range(count)]
    return made


@pytest.mark.parametrize(
    ("counts", "score"),
    [
        ({"passed": 4}, 100.0),
        ({"passed": 3, "failed": 1}, 75.0),
        ({"passed": 2, "warning": 2}, 75.0),
        ({"warning": 1}, 50.0),
        ({"passed": 1, "warning": 1, "failed": 1, "error": 1}, 37.5),
        ({"passed": 1, "skipped": 5}, 100.0),
        ({"failed": 1, "skipped": 3}, 0.0),
        ({"skipped": 2}, None),
        ({}, None),
    ],
)
def test_health_score_arithmetic(counts: dict[str, int], score: float | None) -> None:
    built = report(*_results(**counts))
    assert built.health_score == score
    summary = built.to_dict()["summary"]
    assert summary["health_score"] == score
    assert summary["total"] == sum(counts.values())
    assert summary["scored"] == summary["total"] - counts.get("skipped", 0)


def test_score_is_recomputed_after_adding_checks() -> None:
    built = report(*_results(passed=1))
    assert built.health_score == 100.0
    built.add(CheckResult.failed("test_late", 2, "late failure"))
    assert built.health_score == 50.0
    built.extend(_results(warning=2))
    assert built.health_score == 50.0
    assert json.loads(built.to_json())["summary"]["health_score"] == 50.0
    assert "50.0 / 100" in built.to_markdown()


def test_loaded_report_recomputes_a_tampered_score() -> None:
    data = report(*_results(passed=1, failed=1)).to_dict()
    data["summary"]["health_score"] = 100.0
    assert HealthReport.from_dict(data).health_score == 50.0


def test_tier_summaries_list_only_tiers_with_checks() -> None:
    tiers = report(*mixed_checks()).to_dict()["tiers"]
    assert [t["tier"] for t in tiers] == [1, 3]
    assert tiers[0] | {} == {
        "tier": 1,
        "total": 5,
        "scored": 4,
        "passed": 1,
        "warning": 1,
        "failed": 1,
        "error": 1,
        "skipped": 1,
        "not_judged": 0,
        "health_score": 37.5,
    }
    assert tiers[1]["health_score"] == 100.0


@pytest.mark.parametrize(
    ("threshold", "fails"), [(0, False), (37.5, False), (37.6, True), (100, True)]
)
def test_fail_under(threshold: float, fails: bool) -> None:
    assert report(*mixed_checks()[:5]).fail_under(threshold) is fails


def test_fail_under_with_nothing_scored_does_not_fail_and_validates_threshold() -> None:
    assert report(*_results(skipped=2)).fail_under(100) is False
    with pytest.raises(ValueError, match="from 0 to 100; got 150"):
        report().fail_under(150)


# -- recommendations ----------------------------------------------------------------------------


def test_one_recommendation_per_flagged_check_errors_first() -> None:
    recs = report(*mixed_checks()).recommendations
    assert [(r["status"], r["check_name"]) for r in recs] == [
        ("error", "test_output_finite"),
        ("failed", "test_gradient_flow"),
        ("warning", "test_parameter_initialization"),
    ]
    assert "timed out" in recs[0]["message"]
    assert recs[0]["hint"].startswith("the check did not complete")
    assert "unused in forward or detached tensors" in recs[1]["hint"]
    assert recs[2]["hint"] == HINTS["test_parameter_initialization"]


def test_hints_cover_tier1_names_and_strip_parametrisation() -> None:
    tier1 = {
        "test_shape_robustness",
        "test_output_finite",
        "test_gradient_flow",
        "test_output_stability",
        "test_batch_independence",
        "test_causal_masking",
        "test_padding_invariance",
        "test_input_immutability",
        "test_parameter_initialization",
        "test_memory_footprint",
        "test_memory_retention",
        "test_inference_speed",
    }
    assert tier1 <= set(HINTS)
    recs = report(
        CheckResult.failed("test_gradient_flow[gpt]", 1, "no grad"),
        CheckResult.failed("test_my_own", 1, "bad"),
    ).recommendations
    assert recs[0]["hint"] == HINTS["test_gradient_flow"]
    assert "rerun the check" in recs[1]["hint"]


# -- schema -------------------------------------------------------------------------------------


def test_committed_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    "built",
    [
        pytest.param(lambda: report(), id="empty"),
        pytest.param(lambda: report(*_results(skipped=2)), id="all-skipped"),
        pytest.param(
            lambda: report(*mixed_checks(), models=[model_identity("a"), model_identity("b")]),
            id="mixed",
        ),
        pytest.param(lambda: HealthReport(mixed_checks()), id="real-environment"),
    ],
)
def test_generated_reports_validate(built: Any) -> None:
    validate(json.loads(built().to_json()))


def _mutations() -> list[Any]:
    def status(d: dict[str, Any]) -> None:
        d["checks"][0]["status"] = "ok"

    def score(d: dict[str, Any]) -> None:
        d["summary"]["health_score"] = 150

    def tier_score(d: dict[str, Any]) -> None:
        d["tiers"][0]["health_score"] = -1

    def tier(d: dict[str, Any]) -> None:
        d["checks"][0]["tier"] = 6

    def missing(d: dict[str, Any]) -> None:
        del d["checks"][0]["duration_seconds"]

    def extra(d: dict[str, Any]) -> None:
        d["summary"]["bonus"] = 1

    def empty_failure(d: dict[str, Any]) -> None:
        failed = next(c for c in d["checks"] if c["status"] == "failed")
        failed["message"] = ""

    def sha(d: dict[str, Any]) -> None:
        d["models"][0]["sha256"] = "not-a-digest"

    def version(d: dict[str, Any]) -> None:
        d["schema_version"] = "2.0"

    return [status, score, tier_score, tier, missing, extra, empty_failure, sha, version]


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda m: m.__name__)
def test_schema_rejects_a_broken_report(mutate: Any) -> None:
    data = report(*mixed_checks(), models=[model_identity("a")]).to_dict()
    validate(data)
    mutate(data)
    with pytest.raises(jsonschema.ValidationError):
        validate(data)


# -- Markdown -----------------------------------------------------------------------------------


def test_markdown_lists_every_check_score_models_and_recommendations() -> None:
    built = report(*mixed_checks(), models=[model_identity("a"), model_identity("b")])
    text = built.to_markdown()
    assert text.startswith("# Model health report\n")
    assert "**Health score: 50.0 / 100**" in text  # (2 passed + 0.5 x 1 warning) / 5 scored
    for check in built.checks:
        assert f"`{check.check_name}`" in text
    for marker in ("PASS", "WARN", "FAIL", "ERROR", "SKIP"):
        assert f"| {marker} |" in text
    assert "| a | TinyGPT | 12,345 | lm_tiny | lm |" in text
    assert "1 parameter gets no gradient: unused: head.bias" in text
    assert "## Recommendations" in text
    assert HINTS["test_gradient_flow"] in text


def test_markdown_table_cells_survive_pipes_and_newlines() -> None:
    message = "first | line\nsecond line with `code`"
    text = report(CheckResult.failed("test_x", 1, message)).to_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| FAIL |"))
    assert row == "| FAIL | 1 | `test_x` | 0.00 | first \\| line ... |"
    assert "```text\nfirst | line\nsecond line with `code`\n```" in text


def test_markdown_of_an_empty_report_says_so() -> None:
    text = report().to_markdown()
    assert "n/a (no scored checks)" in text
    assert "No checks ran." in text
    assert "No model identity was recorded." in text


# -- writing ------------------------------------------------------------------------------------


def test_write_creates_json_and_markdown_twin(tmp_path: Path) -> None:
    built = report(*mixed_checks())
    json_path, md_path = built.write(tmp_path / "out" / "health.json")
    assert json_path == tmp_path / "out" / "health.json"
    assert md_path == tmp_path / "out" / "health.md"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    validate(data)
    assert data == built.to_dict()
    assert md_path.read_text(encoding="utf-8") == built.to_markdown()
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o644
    assert HealthReport.read(json_path) == built


def test_write_refuses_a_markdown_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ends in \.md"):
        report().write(tmp_path / "health.md")


def _write_previous(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "health.json"
    report(*_results(passed=1)).write(path)
    return path, path.read_text(), path.with_suffix(".md").read_text()


def test_failed_replace_keeps_previous_files_and_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old_json, old_md = _write_previous(tmp_path)

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        report(*_results(failed=3)).write(path)
    assert path.read_text() == old_json
    assert path.with_suffix(".md").read_text() == old_md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.json", "health.md"]


def test_failed_serialisation_touches_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old_json, old_md = _write_previous(tmp_path)
    before = path.stat().st_mtime_ns

    def broken_render(data: Any) -> str:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(health_report_module, "render_markdown", broken_render)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        report(*_results(failed=3)).write(path)
    assert path.read_text() == old_json
    assert path.stat().st_mtime_ns == before
    assert path.with_suffix(".md").read_text() == old_md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.json", "health.md"]


def test_write_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    path.write_text("{}")
    path.chmod(0o600)
    report().write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- merge and loading --------------------------------------------------------------------------


def test_merge_is_deterministic_whatever_the_order_of_parts() -> None:
    checks = mixed_checks()
    worker_a: list[Any] = [c.to_dict() for c in checks[:3]]
    worker_b: list[Any] = [replace(c, duration_seconds=9.0) for c in checks[3:]]
    base = report(models=[model_identity("a"), model_identity("b")])
    serial = report(*reversed(checks), models=[model_identity("a"), model_identity("b")])
    merged = [base.merge(*parts) for parts in itertools.permutations([worker_a, worker_b])]
    assert merged[0].to_dict() == merged[1].to_dict()
    assert merged[0].content() == serial.content()
    assert merged[0].to_dict() != serial.to_dict()  # durations differ, content does not
    keys = [c.sort_key()[:6] for c in merged[0].checks]
    assert keys == sorted(keys)
    assert [c.model for c in merged[0].checks] == ["a", "a", "a", "a", "b", "b"]
    assert len(base.checks) == 0  # merge returns a new report


def test_merge_unites_models_by_key_and_refuses_conflicts() -> None:
    left = report(*_results(passed=1), models=[model_identity("a")])
    right = report(*_results(failed=1), models=[model_identity("a"), model_identity("b")])
    merged = left.merge(right)
    assert [m["key"] for m in merged.models] == ["a", "b"]
    assert merged.health_score == 50.0
    clash = report(models=[model_identity("a", class_name="Other")])
    with pytest.raises(ValueError, match="two different models are both named 'a'"):
        left.merge(clash)
    with pytest.raises(ValueError, match="cannot merge a int"):
        left.merge(3)  # type: ignore[arg-type]


def test_model_identity_is_validated_and_completed() -> None:
    built = report(models=[{"key": "m", "file": Path("/x/m.py")}])
    assert built.models == [
        {
            "key": "m",
            "spec": None,
            "class_name": None,
            "num_parameters": None,
            "file": "/x/m.py",
            "sha256": None,
            "task": None,
            "adapter": None,
        }
    ]
    with pytest.raises(ValueError, match=r"models\[0\] has unknown keys colour"):
        report(models=[{"key": "m", "colour": "red"}])
    with pytest.raises(ValueError, match=r"models\[0\].num_parameters"):
        report(models=[{"key": "m", "num_parameters": -1}])


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("schema_version", "9.9", "schema_version '9.9' is not supported"),
        ("created_at", "yesterday", "created_at must be an ISO 8601 UTC timestamp"),
        ("created_at", "2024-01-31T12:00:00+02:00", "created_at must be"),
        ("tool", {"name": "other"}, "tool must be"),
        ("environment", {"python": "3"}, "environment must have exactly the keys"),
    ],
)
def test_from_dict_rejects_bad_context(key: str, value: Any, expected: str) -> None:
    data = report().to_dict()
    data[key] = value
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        HealthReport.from_dict(data)


def test_report_context_defaults() -> None:
    built = HealthReport()
    data = built.to_dict()
    assert data["tool"] == {"name": "pytest-modeltiers", "version": pytest_modeltiers.__version__}
    assert list(data["environment"]) == list(ENVIRONMENT_KEYS)
    assert data["environment"]["pytest"] == pytest.__version__
    assert data["created_at"].endswith("Z")
    assert HealthReport.from_dict(data).created_at == data["created_at"]


def test_missing_package_version_is_null(monkeypatch: pytest.MonkeyPatch) -> None:
    real = environment_module.metadata.version

    def version(name: str) -> str:
        if name in ("onnxruntime", "onnxruntime-gpu"):
            raise environment_module.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(environment_module.metadata, "version", version)
    assert environment_module.collect_environment()["onnxruntime"] is None


def test_report_package_imports_no_heavy_module() -> None:
    code = (
        "import sys, json\n"
        "import pytest_modeltiers.report as r\n"
        "c = r.CheckResult.failed('test_gradient_flow', 1, 'x', {'a': (1, float('nan'))})\n"
        "rep = r.HealthReport([c])\n"
        "rep.to_json(); rep.to_markdown(); r.load_schema()\n"
        "heavy = {'torch', 'numpy', 'jsonschema', 'lightning', 'onnx', 'scipy', 'hypothesis'}\n"
        "print(json.dumps(sorted(heavy & set(sys.modules))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
