"""Model code that exits, and model code the loader must compile as the user wrote it.

A ``sys.exit()`` in the user's model file (at import, in ``build_model`` or in a constructor) is
an error of the model: a usage error naming the file and line, never pytest's INTERNALERROR
"mainloop: caught unexpected SystemExit". A Ctrl-C is not the model's fault: it still stops
the run. A model file is compiled with its own ``__future__`` imports, not the loader's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_modeltiers.cli import main
from pytest_modeltiers.errors import ModelSpecError
from pytest_modeltiers.models.loader import LoadRequest, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_input"


@pytest.fixture
def bad_input(pytester: pytest.Pytester) -> Path:
    pytester.copy_example("bad_input")
    return pytester.path


def collect(pytester: pytest.Pytester, model: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--co", "-p", "no:cacheprovider", "--model", model)


@pytest.mark.usefixtures("bad_input")
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "exit_in_build.py",
            "exit_in_build.py::build_model() called sys.exit(0) (at exit_in_build.py:9)",
        ),
        (
            "exit_in_init.py",
            "exit_in_init.py::ExitingLM() called sys.exit(2) (at exit_in_init.py:15)",
        ),
        (
            "exit_at_import.py",
            "exit_at_import.py called sys.exit('no GPU found, giving up') while being imported "
            "(at exit_at_import.py:7)",
        ),
    ],
)
def test_sys_exit_in_model_code_is_a_usage_error_not_an_internal_error(
    pytester: pytest.Pytester, model: str, message: str
) -> None:
    result = collect(pytester, model)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "SystemExit" not in output
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert message in result.stderr.str()


@pytest.mark.usefixtures("bad_input")
def test_sys_exit_in_build_model_is_exit_2_in_modeltiers_inspect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", "--model", "exit_in_build.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modeltiers: --model exit_in_build.py: ")
    assert "build_model() called sys.exit(0)" in err


def test_a_keyboard_interrupt_in_build_model_still_interrupts() -> None:
    request = LoadRequest(spec=str(FIXTURES / "interrupt_in_build.py"), rootdir=FIXTURES)
    with pytest.raises(KeyboardInterrupt):
        load_model(request)


@pytest.mark.usefixtures("bad_input")
def test_a_keyboard_interrupt_in_build_model_stops_the_session(
    pytester: pytest.Pytester,
) -> None:
    result = collect(pytester, "interrupt_in_build.py")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_model_that_resolves_local_type_hints_loads() -> None:
    # The loader module has ``from __future__ import annotations``; the model file must not
    # inherit it, or the hints become strings that name a class local to a function.
    loaded = load_model(LoadRequest(spec=str(FIXTURES / "local_type_hints.py"), rootdir=FIXTURES))
    assert loaded.class_name == "HintedLM"
    assert loaded.task.vocab_size == 40


@pytest.mark.usefixtures("bad_input")
def test_a_model_that_resolves_local_type_hints_runs_tier1_collection(
    pytester: pytest.Pytester,
) -> None:
    result = collect(pytester, "local_type_hints.py")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*local_type_hints.py::build_model -> HintedLM*"])


def test_sys_exit_in_build_model_is_a_model_spec_error() -> None:
    request = LoadRequest(spec=str(FIXTURES / "exit_in_build.py"), rootdir=FIXTURES)
    with pytest.raises(ModelSpecError, match=r"called sys\.exit\(0\)"):
        load_model(request)
