"""The typed ``Settings``: one attribute per option, built once, served by a fixture.

A misspelt option name must be an error, never a silent ``None``; the option table and the
attributes must not drift apart; users' tests read the same values the built-in suites read.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from pytest_modeltiers.options import OPTIONS, OptionValueError
from pytest_modeltiers.settings import Settings

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "pytest_modeltiers"


def test_every_option_has_an_attribute_and_every_attribute_an_option() -> None:
    attributes = [field.name for field in dataclasses.fields(Settings)]
    from_options = [option.attribute for option in OPTIONS]
    assert sorted(set(from_options) - set(attributes)) == [], "options without an attribute"
    assert sorted(set(attributes) - set(from_options)) == [], "attributes without an option"
    assert len(attributes) == len(from_options) == len(set(from_options))


def test_attribute_types_follow_the_option_kinds() -> None:
    hints = typing.get_type_hints(Settings)
    for option in OPTIONS:
        hint = hints[option.attribute]
        if option.multiple:
            assert hint == tuple[str, ...], option.dest
        elif option.flag:
            assert hint is bool, option.dest
        elif option.default is None and option.dest != "modeltiers_profile":
            assert type(None) in typing.get_args(hint), f"{option.dest} can be unset"
        else:
            assert type(None) not in typing.get_args(hint), f"{option.dest} always has a value"


def test_without_options_every_attribute_is_the_option_default() -> None:
    settings = Settings.from_values({})
    for option in OPTIONS:
        value = getattr(settings, option.attribute)
        if option.dest == "modeltiers_profile":
            assert value in ("fast", "ci")
        elif option.multiple:
            assert value == tuple(option.default or ()), option.dest
        else:
            assert value == option.default, option.dest


def test_a_misspelt_attribute_is_an_error_not_none() -> None:
    settings = Settings.from_values({})
    with pytest.raises(AttributeError, match="max_batch_sise"):
        settings.max_batch_sise  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_batch_size = 2  # type: ignore[misc]


def test_values_are_parsed_by_the_option_parsers() -> None:
    settings = Settings.from_values(
        {
            "modeltiers_max_batch_size": "3",
            "modeltiers_expect_no_grad": ["pooler.*", "head.bias"],
            "modeltiers_export_formats": "onnx,pytorch",
            "modeltiers_trust_model": True,
        }
    )
    assert settings.max_batch_size == 3
    assert settings.expect_no_grad == ("pooler.*", "head.bias")
    assert settings.export_formats == ("onnx", "pytorch")
    assert settings.trust_model is True


def test_a_bad_value_names_the_option_and_the_accepted_form() -> None:
    with pytest.raises(OptionValueError, match=r"--modeltiers-max-batch-size: expected at least 1"):
        Settings.from_values({"modeltiers_max_batch_size": "0"})


def test_the_options_dict_is_derived_from_the_settings() -> None:
    settings = Settings.from_values({"modeltiers_task_options": ["vocab_size=10"]})
    options = settings.as_options()
    assert options == {
        option.dest: (
            list(getattr(settings, option.attribute))
            if option.multiple
            else getattr(settings, option.attribute)
        )
        for option in OPTIONS
    }
    assert options["modeltiers_task_options"] == ["vocab_size=10"]


def _option_reads_by_string(path: Path) -> list[str]:
    """``x["modeltiers_..."]`` and ``x.get("modeltiers_...")`` in one module: reads of an
    option by its string key, where a misspelling is silently ``None`` or a late KeyError."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            key = node.args[0].value
        if isinstance(key, str) and key.startswith("modeltiers_"):
            found.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno}: {key}")
    return found


def test_the_package_reads_options_as_attributes_never_by_string_key() -> None:
    reads = [
        hit for path in sorted(PACKAGE_DIR.rglob("*.py")) for hit in _option_reads_by_string(path)
    ]
    assert reads == [], "read these through Settings attributes:\n" + "\n".join(reads)


def test_users_tests_read_the_settings_command_line_over_ini_over_default(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        """
        [pytest]
        modeltiers_max_batch_size = 4
        modeltiers_drift_alpha = 0.01
        modeltiers_expect_no_grad =
            pooler.*
        """
    )
    pytester.makepyfile(
        """
        def test_settings(modeltiers_settings, modeltiers_options):
            assert modeltiers_settings.max_batch_size == 3  # command line over ini
            assert modeltiers_settings.drift_alpha == 0.01  # ini over default
            assert modeltiers_settings.regression_tolerance == 0.1  # default
            assert modeltiers_settings.expect_no_grad == ("pooler.*",)
            assert modeltiers_options["modeltiers_max_batch_size"] == 3
            assert modeltiers_options["modeltiers_expect_no_grad"] == ["pooler.*"]

        def test_misspelt(modeltiers_settings):
            modeltiers_settings.max_batch_sise
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--modeltiers-max-batch-size=3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AttributeError*max_batch_sise*"])


def test_a_bad_ini_value_is_a_usage_error_naming_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmodeltiers_drift_alpha = 2\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini option modeltiers_drift_alpha: expected a significance level between 0 and 1*"]
    )
