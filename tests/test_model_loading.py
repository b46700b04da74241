"""Naming a model with --model: every spec form, and every way it can go wrong.

Each error must be a usage error (exit code 4) with a message that names the problem and the
fix; never an INTERNALERROR and never a traceback wall.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

USAGE_ERROR = pytest.ExitCode.USAGE_ERROR


def header(result: pytest.RunResult) -> str:
    return "\n".join(line for line in result.outlines if line.startswith("modeltiers:"))


def usage_error(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest("--co", *args)
    assert result.ret == USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str()
    return result.stderr.str()


@pytest.mark.usefixtures("loader_models")
class TestSpecForms:
    def test_factory_with_task_spec(self, pytester: pytest.Pytester) -> None:
        result = pytester.runpytest("--co", "--model", "lm_factory.py")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(
            [
                "modeltiers: model lm_factory: lm_factory.py::build_model -> TinyLM, "
                "850 parameters; safety scan clean*",
                "modeltiers:   task lm_tiny (TASK in lm_factory.py; vocab_size 50, max_seq_len 16);"
                " adapter lm (task family lm)",
            ]
        )

    def test_module_level_instance_and_vocab_from_embedding(
        self, pytester: pytest.Pytester
    ) -> None:
        result = pytester.runpytest("--co", "--model", "lm_instance.py")
        text = header(result)
        assert "lm_instance.py::model -> TinyLM" in text
        assert "vocab_size from embedding tok_emb" in text
        assert "vocab_size 37" in text

    def test_single_class_defined_in_file(self, pytester: pytest.Pytester) -> None:
        text = header(pytester.runpytest("--co", "--model", "lm_class.py"))
        assert "lm_class.py::MyLM -> MyLM" in text
        assert "inferred from forward(input_ids, attention_mask)" in text
        assert "vocab_size 23" in text

    def test_file_and_name_picks_one_of_several(self, pytester: pytest.Pytester) -> None:
        text = header(pytester.runpytest("--co", "--model", "two_classes.py::OtherLM"))
        assert "two_classes.py::OtherLM -> OtherLM" in text

    def test_file_and_name_of_an_instance(self, pytester: pytest.Pytester) -> None:
        text = header(pytester.runpytest("--co", "--model", "lm_instance.py::model"))
        assert "-> TinyLM" in text

    def test_package_module_attr(self, pytester: pytest.Pytester) -> None:
        pytester.mkpydir("mypkg")
        pytester.path.joinpath("mypkg", "nets.py").write_text(
            "from tiny_layers import TinyLM\n\ndef make():\n    return TinyLM(vocab_size=11)\n"
        )
        pytester.syspathinsert()
        text = header(pytester.runpytest("--co", "--model", "mypkg.nets:make"))
        assert "model make: mypkg.nets:make -> TinyLM" in text
        assert "safety scan clean" in text

    def test_ini_option_names_the_model(self, pytester: pytest.Pytester) -> None:
        pytester.makeini("[pytest]\nmodeltiers_model = lm_factory.py\n")
        assert "model lm_factory" in header(pytester.runpytest("--co"))

    def test_several_models_each_get_a_header(self, pytester: pytest.Pytester) -> None:
        text = header(
            pytester.runpytest("--co", "--model", "lm_factory.py", "--model", "lm_class.py")
        )
        assert "model lm_factory:" in text
        assert "model lm_class:" in text


@pytest.mark.usefixtures("loader_models")
class TestSpecErrors:
    def test_missing_file(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "nowhere/model.py")
        assert "model file not found: nowhere/model.py" in err

    def test_directory(self, pytester: pytest.Pytester) -> None:
        pytester.mkdir("netdir")
        assert "is a directory; name the model file" in usage_error(pytester, "--model", "netdir/")

    def test_syntax_error_names_file_and_line(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "syntax_error.py")
        assert "syntax error in" in err
        assert "syntax_error.py:3" in err or "syntax_error.py:4" in err

    def test_import_error_names_missing_module(self, pytester: pytest.Pytester) -> None:
        lines = Path("import_error.py").read_text().splitlines()
        line = next(n for n, text in enumerate(lines, 1) if "not_a_real_package_xyz" in text)
        err = usage_error(pytester, "--model", "import_error.py")
        assert "imports 'not_a_real_package_xyz', which is not installed" in err
        assert f"(at import_error.py:{line})" in err
        assert "pip install not_a_real_package_xyz" in err

    def test_no_model_found_lists_what_was_searched(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "no_model.py")
        assert "no model found in no_model.py" in err
        assert "build_model" in err and "model or MODEL" in err
        assert "NeedsWidth (constructor needs arguments)" in err

    def test_several_candidates_list_the_choices(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "two_classes.py")
        assert "several models in two_classes.py" in err
        assert "two_classes.py::SmallLM" in err and "two_classes.py::OtherLM" in err

    def test_unknown_attribute(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "two_classes.py::Missing")
        assert "has no attribute 'Missing'" in err and "OtherLM" in err

    def test_factory_that_raises_shows_its_exception(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "factory_raises.py")
        assert "RuntimeError: checkpoint shape mismatch in layer 3" in err
        assert "factory_raises.py:5" in err

    def test_factory_returning_a_non_module(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "factory_not_module.py")
        assert "returned tuple, not a torch.nn.Module" in err

    def test_unknown_task_lists_builtins(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "unknown_task.py")
        assert "TASK in unknown_task.py" in err
        for name in ("lm_tiny", "cls_tiny", "seq2seq_tiny", "vision_tiny"):
            assert name in err

    def test_unknown_task_option(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "lm_factory.py", "--task", "lm_small")
        assert "--task lm_small" in err and "lm_tiny" in err

    def test_bad_task_dict_names_the_field(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "bad_task.py")
        assert "TASK in bad_task.py" in err and "max_seq_len" in err

    def test_forward_the_adapter_cannot_call(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "forward_mismatch.py")
        assert "style_vector" in err
        assert "input_ids" in err

    def test_ambiguous_vocabulary_says_how_to_set_it(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "ambiguous_embeddings.py")
        assert "table_a (40), table_b (16)" in err
        assert "--task-option vocab_size=N" in err

    def test_no_embedding_says_which_task_was_inferred(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "no_embedding.py")
        assert "Regressor has no nn.Embedding" in err
        assert "inferred from forward(x)" in err

    def test_factory_that_hangs_times_out(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "hangs.py", "--modeltiers-timeout", "0.5")
        assert "timed out after 0.5 s" in err

    def test_gist_that_cannot_be_fetched_is_a_usage_error(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # An API that is not there (tests/test_gist.py covers every other failure).
        monkeypatch.setenv("PYTEST_MODELTIERS_GIST_API", "http://127.0.0.1:9")
        err = usage_error(pytester, "--model", "gist:abc", "--modeltiers-cache-dir", "cache")
        assert "--model gist:abc: cannot reach http://127.0.0.1:9/gists/abc" in err
        assert "No revision of gist abc is cached" in err

    def test_bad_module_spec(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "no_such_pkg.mod:thing")
        assert "no module named 'no_such_pkg'" in err


@pytest.mark.usefixtures("loader_models")
class TestTaskChoice:
    def test_task_option_overrides_fields(self, pytester: pytest.Pytester) -> None:
        text = header(
            pytester.runpytest(
                "--co",
                "--model",
                "lm_factory.py",
                "--task-option",
                "max_seq_len=8",
                "--task-option",
                "special_tokens.pad_token_id=3",
            )
        )
        assert "max_seq_len 8" in text

    def test_task_option_vocab_size_resolves_ambiguity(self, pytester: pytest.Pytester) -> None:
        text = header(
            pytester.runpytest(
                "--co", "--model", "ambiguous_embeddings.py", "--task-option", "vocab_size=40"
            )
        )
        assert "vocab_size 40" in text

    def test_unknown_task_option_key_suggests_the_closest(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "lm_factory.py", "--task-option", "max_seq_length=8")
        assert "unknown task field 'max_seq_length'" in err and "max_seq_len" in err

    def test_task_from_json_file(self, pytester: pytest.Pytester) -> None:
        pytester.makefile(
            ".json", mytask='{"name": "lm_tiny", "input_schema": {"max_seq_len": 12}}'
        )
        text = header(pytester.runpytest("--co", "--model", "lm_class.py", "--task", "mytask.json"))
        assert "task lm_tiny (--task mytask.json" in text and "max_seq_len 12" in text

    def test_adapter_option(self, pytester: pytest.Pytester) -> None:
        text = header(pytester.runpytest("--co", "--model", "lm_factory.py", "--adapter", "lm"))
        assert "adapter lm (--adapter lm)" in text

    def test_custom_adapter_class(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(
            shouting_adapters=(
                "from pytest_modeltiers.models.adapters import LMAdapter\n\n"
                "class ShoutingLM(LMAdapter):\n    name = 'shouting-lm'\n"
            )
        )
        pytester.syspathinsert()
        result = pytester.runpytest(
            "--co", "--model", "lm_factory.py", "--adapter", "shouting_adapters:ShoutingLM"
        )
        assert "adapter shouting-lm (--adapter shouting_adapters:ShoutingLM)" in header(result)

    def test_unknown_adapter_lists_the_forms(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "lm_factory.py", "--adapter", "transformer")
        assert "transformer" in err and "lm" in err and "module:Class" in err


@pytest.mark.usefixtures("loader_models")
class TestPinning:
    def test_matching_sha256_is_accepted(self, pytester: pytest.Pytester) -> None:
        digest = hashlib.sha256(Path("lm_factory.py").read_bytes()).hexdigest()
        result = pytester.runpytest("--co", "--model", "lm_factory.py", "--model-sha256", digest)
        assert "model lm_factory" in header(result)

    def test_changed_file_is_refused(self, pytester: pytest.Pytester) -> None:
        err = usage_error(pytester, "--model", "lm_factory.py", "--model-sha256", "0" * 64)
        assert "but --model-sha256 expects 0000" in err and "review it" in err
