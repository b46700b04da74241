"""The plugin as users meet it: options, markers, the header, fixtures, and xdist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from probes import TORCH_IMPORT_COLLECTIONS

from pytest_modeltiers.options import OPTIONS

EXAMPLES = Path(__file__).resolve().parents[1] / "example_models"
BUILT_IN = "modeltiers/"  # node id prefix of the built-in tier suites, left out where not tested


def test_help_shows_the_modeltiers_group_with_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    text = result.stdout.str()
    assert "pytest-modeltiers: validate PyTorch models in tiers:" in text
    for option in OPTIONS:
        assert option.flags[0] in text
        assert f"{option.ini_name} (" in text, f"ini twin of {option.flags[0]} missing"
    result.stdout.fnmatch_lines(["*--model=SPEC*alias of --modeltiers-model*"])


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tier1
        @pytest.mark.tier5
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest("--markers").stdout.str()
    for tier in range(1, 6):
        assert f"@pytest.mark.tier{tier}: tier {tier} (" in markers


def test_without_model_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "modeltiers:" not in result.stdout.str()


def test_model_fixtures_without_model_say_how_to_name_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_model(model):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no model to test: name one with --model path/to/model.py*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modeltiers-timeout", "soon"], "--modeltiers-timeout: expected a number of seconds"),
        (["--modeltiers-timeout", "-1"], "expected a positive number of seconds, got '-1'"),
        (["--modeltiers-profile", "quick"], "expected one of fast, ci, thorough, got 'quick'"),
        (["--model-sha256", "abc"], "--model-sha256: expected 64 hexadecimal digits"),
        (["--task-option", "vocab_size"], "--task-option: expected KEY=VALUE"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmodeltiers_timeout = forever\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini option modeltiers_timeout: expected a number of seconds" in result.stderr.str()


def test_ini_twins_configure_the_model(pytester: pytest.Pytester) -> None:
    pytester.copy_example("models")
    pytester.makeini(
        """
        [pytest]
        modeltiers_model = lm_class.py
        modeltiers_task = lm_tiny
        modeltiers_task_options =
            max_seq_len=9
        modeltiers_adapter = lm
        modeltiers_profile = thorough
        modeltiers_timeout = 42
        """
    )
    result = pytester.runpytest("--co")
    result.stdout.fnmatch_lines(
        [
            "modeltiers: model lm_class:*",
            "modeltiers:   task lm_tiny (--task lm_tiny*max_seq_len 9*adapter lm (--adapter lm)",
            "modeltiers: profile thorough, timeout 42 s*",
        ]
    )


def test_command_line_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.copy_example("models")
    pytester.makeini("[pytest]\nmodeltiers_model = lm_class.py\nmodeltiers_timeout = 42\n")
    result = pytester.runpytest("--co", "--model", "lm_factory.py", "--modeltiers-timeout", "7")
    text = result.stdout.str()
    assert "model lm_factory:" in text and "model lm_class:" not in text
    assert "timeout 7 s" in text


def test_project_that_defines_model_keeps_it(pytester: pytest.Pytester) -> None:
    pytester.copy_example("models")
    pytester.makeconftest(
        """
        def pytest_addoption(parser):
            parser.addoption("--model", action="store", default="resnet")

        def pytest_report_header(config):
            return f"project model: {config.getoption('--model')}"
        """
    )
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest(
        "--model", "vgg", "--modeltiers-model", "lm_factory.py", "--deselect", BUILT_IN
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["project model: vgg"])
    result.stdout.fnmatch_lines(
        [
            "modeltiers: --model is defined by conftest.py or another plugin; "
            "name models with --modeltiers-model",
            "modeltiers: model lm_factory:*",
        ]
    )


def test_trust_model_is_shown_in_the_header(pytester: pytest.Pytester) -> None:
    pytester.copy_example("models")
    result = pytester.runpytest("--co", "--model", "lm_factory.py", "--trust-model")
    result.stdout.fnmatch_lines(
        ["modeltiers: model lm_factory:*safety scan SKIPPED (--trust-model)"]
    )


def test_profile_defaults_to_ci_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.copy_example("models")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("--co", "--model", "lm_factory.py")
    result.stdout.fnmatch_lines(["modeltiers: profile ci, timeout 300 s, CI=true"])


USER_TESTS = """
    import pytest
    import torch
    from hypothesis import given, settings

    from pytest_modeltiers import get_builtin_task
    from pytest_modeltiers.strategies import batches

    KEY = pytest.StashKey()
    TASK_FOR_STRATEGY = get_builtin_task("lm_tiny").with_vocab_size(50)
    seen = []

    def test_model_is_fresh_and_trainable(model, model_factory):
        other = model_factory()
        assert other is not model
        for a, b in zip(model.parameters(), other.parameters()):
            assert torch.equal(a, b)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        seen.append(model)

    def test_next_model_is_untouched(model, model_factory):
        assert seen and model is not seen[0]
        assert torch.equal(next(model.parameters()), next(model_factory().parameters()))

    def test_shared_model_is_shared(shared_model, request):
        request.config.stash.setdefault(KEY, []).append(shared_model)
        assert len({id(m) for m in request.config.stash[KEY]}) == 1

    def test_shared_model_again(shared_model, request):
        request.config.stash.setdefault(KEY, []).append(shared_model)
        assert len({id(m) for m in request.config.stash[KEY]}) == 1

    def test_configs_agree_with_task(task_spec, training_config, eval_config):
        assert training_config.task_name == task_spec.name
        assert training_config.vocab_size == task_spec.vocab_size
        assert training_config.max_seq_len == task_spec.max_seq_len
        assert eval_config.max_seq_length == training_config.max_seq_len

    def test_sample_batch_runs_through_the_adapter(model, adapter, task_spec, sample_batch):
        logits = adapter.get_logits(adapter.forward(model.eval(), sample_batch), task_spec)
        assert logits.shape[0] == 2
        assert torch.isfinite(adapter.loss(adapter.forward(model, sample_batch), sample_batch))

    @settings(max_examples=3)
    @given(batch=batches(TASK_FOR_STRATEGY))
    def test_strategies_draw_valid_batches(batch):
        assert batch["input_ids"].max() < TASK_FOR_STRATEGY.vocab_size
"""


def _user_tests(pytester: pytest.Pytester) -> None:
    pytester.copy_example("models")
    pytester.makepyfile(test_user=USER_TESTS)


def test_user_fixtures(pytester: pytest.Pytester) -> None:
    _user_tests(pytester)
    result = pytester.runpytest(
        "--model", "lm_factory.py", "-p", "no:cacheprovider", "--deselect", BUILT_IN
    )
    result.assert_outcomes(passed=7)


def test_several_models_parametrise_model_tests(pytester: pytest.Pytester) -> None:
    _user_tests(pytester)
    result = pytester.runpytest(
        "--model",
        "lm_factory.py",
        "--model",
        "lm_class.py",
        "-v",
        "-k",
        "configs_agree",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_configs_agree_with_task?lm_factory? PASSED*",
            "*test_configs_agree_with_task?lm_class? PASSED*",
        ]
    )


@pytest.mark.slow
def test_fixtures_under_xdist(pytester: pytest.Pytester) -> None:
    _user_tests(pytester)
    result = pytester.runpytest_subprocess(
        "--model",
        "lm_factory.py",
        "-n",
        "2",
        "-k",
        "not shared and not fresh and not untouched",
        "--deselect",
        BUILT_IN,
    )
    result.assert_outcomes(passed=3)


def test_example_models_load(pytester: pytest.Pytester) -> None:
    args = []
    for name in ("tiny_gpt", "tiny_encoder_cls", "tiny_seq2seq", "simple_cnn"):
        args.append(f"--model={EXAMPLES / (name + '.py')}")
    result = pytester.runpytest("--co", *args)
    assert result.ret == pytest.ExitCode.OK
    text = result.stdout.str()
    for name, task, adapter in [
        ("tiny_gpt", "lm_tiny", "lm"),
        ("tiny_encoder_cls", "cls_tiny", "classification"),
        ("tiny_seq2seq", "seq2seq_tiny", "seq2seq"),
        ("simple_cnn", "vision_tiny", "vision"),
    ]:
        assert f"model {name}:" in text
        assert f"task {task} (" in text and f"adapter {adapter} (" in text


_LOADER_PROBE = """
import sys


def test_loaders():
    import hypothesis.strategies

    for name in ("hypothesis", "hypothesis.strategies"):
        print(name, "loaded by", type(sys.modules[name].__loader__).__name__)
"""


@pytest.mark.parametrize("with_model", [True, False])
def test_hypothesis_is_not_assertion_rewritten_in_model_runs(
    pytester: pytest.Pytester, with_model: bool
) -> None:
    """With --model, Hypothesis imports as plain Python (its rewriting cost 1.2 s a run without a
    bytecode cache); without --model, pytest's rewriting is left exactly as it was."""
    pytester.makepyfile(test_probe=_LOADER_PROBE)
    args = ["-s", "-p", "no:cacheprovider", "test_probe.py"]
    if with_model:
        args += [f"--model={EXAMPLES / 'tiny_gpt.py'}", "--deselect", BUILT_IN]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    expected = "SourceFileLoader" if with_model else "AssertionRewritingHook"
    result.stdout.fnmatch_lines([f"*hypothesis loaded by {expected}"])


@pytest.mark.parametrize("exempt", [True, False])
def test_this_packages_modules_are_never_assertion_rewritten(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, exempt: bool
) -> None:
    """pytest marks a plugin's modules for rewriting; ours take themselves off the list, so no run
    recompiles them where bytecode is not cached. (An installed package is marked whole; the
    editable install of this checkout is not, so the plugin is named with -p, which marks it.)"""
    pytester.makepyfile(
        test_probe="""
        import sys

        def test_loader():
            loader = type(sys.modules["pytest_modeltiers.plugin"].__loader__).__name__
            print("plugin loaded by", loader)
        """
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if not exempt:  # imported before pytest's hook exists, the package cannot exempt itself
        pytester.makepyfile(sitecustomize="import pytest_modeltiers")
        monkeypatch.setenv("PYTHONPATH", str(pytester.path), prepend=os.pathsep)
    result = pytester.runpytest_subprocess("-s", "-p", "pytest_modeltiers.plugin", "test_probe.py")
    result.assert_outcomes(passed=1)
    expected = "SourceFileLoader" if exempt else "AssertionRewritingHook"
    result.stdout.fnmatch_lines([f"*plugin loaded by {expected}"])


def test_the_heap_frozen_for_the_session_is_thawed_after_pytests_last_collection(
    pytester: pytest.Pytester,
) -> None:
    """The session freezes the loaded heap (cheaper collections) and gives it back at the end."""
    import gc

    pytester.makeconftest(
        """
        import gc

        def pytest_configure(config):
            # Cleanups registered at configure time run after every unconfigure hook, like
            # pytest's own final garbage collection.
            config.add_cleanup(lambda: print("frozen at cleanup:", gc.get_freeze_count() > 0))
        """
    )
    before = gc.get_freeze_count()
    result = pytester.runpytest("-s", "--co", f"--model={EXAMPLES / 'tiny_gpt.py'}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*frozen at cleanup: True"])
    assert gc.get_freeze_count() == before


def test_a_model_that_fails_to_load_leaves_no_heap_frozen(pytester: pytest.Pytester) -> None:
    """The libraries are frozen before the model loads; a usage error still thaws them."""
    import gc

    pytester.makepyfile(broken_model="raise RuntimeError('no weights here')")
    before = gc.get_freeze_count()
    result = pytester.runpytest("--co", "--model=broken_model.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert gc.get_freeze_count() == before


_IMPORT_COLLECTIONS_PROBE = (
    TORCH_IMPORT_COLLECTIONS
    + """
def pytest_collection_finish(session):
    print("collections while torch imported:", len(collections))
"""
)


@pytest.mark.parametrize("imported_by", ["plugin", "conftest"])
def test_torch_is_imported_with_the_garbage_collector_paused(
    pytester: pytest.Pytester, imported_by: str
) -> None:
    """Importing torch with the collector on spends 0.1-0.2 s in some 370 collections; the plugin
    imports it with the collector paused. (When the project imports torch first, it does not.)"""
    probe = _IMPORT_COLLECTIONS_PROBE
    if imported_by == "conftest":
        probe += "\nimport torch\n"
    pytester.makeconftest(probe)
    result = pytester.runpytest_subprocess("-s", "--co", f"--model={EXAMPLES / 'tiny_gpt.py'}")
    assert result.ret == pytest.ExitCode.OK
    expected = "0" if imported_by == "plugin" else "[1-9]*"
    result.stdout.fnmatch_lines([f"collections while torch imported: {expected}"])


_EXIT_PROBE = """
import atexit
import gc
from pathlib import Path

# Registered before the plugin's configure hook, so it runs after the plugin's exit handler.
atexit.register(lambda: Path("frozen-at-exit.txt").write_text(str(gc.get_freeze_count() > 0)))
"""


@pytest.mark.parametrize("with_model", [True, False])
def test_a_model_run_freezes_the_heap_when_the_interpreter_exits(
    pytester: pytest.Pytester, with_model: bool
) -> None:
    """Shutdown's collections skip torch's heap (0.4 s a run) only in runs that loaded a model."""
    pytester.makeconftest(_EXIT_PROBE)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    args = ["-p", "no:cacheprovider", "test_nothing.py"]
    if with_model:
        args += [f"--model={EXAMPLES / 'tiny_gpt.py'}", "--deselect", BUILT_IN]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "frozen-at-exit.txt").read_text() == str(with_model)


@pytest.fixture
def model_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_gpt in a folder outside the project pytester runs in."""
    folder = tmp_path_factory.mktemp("elsewhere")
    target = folder / "tiny_gpt.py"
    target.write_text((EXAMPLES / "tiny_gpt.py").read_text())
    return target


def test_a_model_path_given_apart_cannot_replace_the_projects_configuration(
    pytester: pytest.Pytester, model_elsewhere: Path
) -> None:
    """pytest reads ``--model PATH``'s value as a test path before plugins load, so the project's
    pytest.ini would be silently ignored; that is a usage error naming the fix."""
    pytester.makeini("[pytest]\nmarkers =\n    mine: a marker of the project\n")
    result = pytester.runpytest("--co", "-q", "--model", str(model_elsewhere))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --model {model_elsewhere} changed pytest's configuration: it read no "
            f"configuration file (rootdir *) instead of {pytester.path / 'tox.ini'}*"
            f"Write --model={model_elsewhere} (one argument, with '=')*"
        ]
    )
    fixed = pytester.runpytest("--co", f"--model={model_elsewhere}", "--strict-markers")
    assert fixed.ret == pytest.ExitCode.OK
    fixed.stdout.fnmatch_lines([f"rootdir: {pytester.path}", "configfile: tox.ini"])


def test_a_model_path_that_moves_only_the_rootdir_is_pointed_out(
    pytester: pytest.Pytester, model_elsewhere: Path
) -> None:
    result = pytester.runpytest("--co", "--model", str(model_elsewhere))
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [f"modeltiers: rootdir is *, not {pytester.path}, because of --model {model_elsewhere}*"]
    )
    (pytester.path / "models").mkdir()
    (pytester.path / "models" / "tiny_gpt.py").write_text(model_elsewhere.read_text())
    inside = pytester.runpytest("--co", "--model", "models/tiny_gpt.py")
    assert inside.ret == pytest.ExitCode.OK
    assert "modeltiers: rootdir is" not in inside.stdout.str()
