"""The README and the documentation stay true to the code.

The options page lists every option with its ini twin (its table is rendered from the option
table by the site's hook); the README's commands use only options that exist; its CI snippet
ends with the gate; its fixture example and the documented custom adapter run as shown.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pytest_modeltiers.options import OPTIONS, Option

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def _docs_hook() -> ModuleType:
    path = DOCS / "hooks" / "code_tables.py"
    spec = importlib.util.spec_from_file_location("modeltiers_docs_code_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered_options_page() -> str:
    hook = _docs_hook()
    return hook.render_page((DOCS / "options.md").read_text(encoding="utf-8"))


def _code_blocks(markdown: str, language: str | None = None) -> list[str]:
    """The fenced code blocks of ``markdown`` (only those tagged ``language`` when given)."""
    blocks = re.findall(r"^```([a-z]*)\n(.*?)^```", markdown, flags=re.M | re.S)
    return [body for tag, body in blocks if language is None or tag == language]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.dest)
def test_every_option_is_in_the_options_page(option: Option) -> None:
    rows = [
        line
        for line in _rendered_options_page().splitlines()
        if line.startswith("| `")
        and any(f"`{flag} " in line or f"`{flag}`" in line for flag in option.flags)
    ]
    assert rows, f"the options page's table has no row for {option.flags[-1]}"
    assert f"`{option.ini_name}`" in rows[0], f"the row of {option.flags[-1]} lacks its ini twin"


def test_options_page_without_its_marker_fails_the_docs_build() -> None:
    from mkdocs.exceptions import PluginError

    hook = _docs_hook()
    with pytest.raises(PluginError, match="options-table"):
        hook.render_page("# Options\n\nThe table went missing.\n")


def test_architecture_page_names_every_module_and_package() -> None:
    """A new top-level module or package of the library gets its line on the architecture page,
    whose layer table is rendered from the architecture test's LAYERS."""
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert "<!-- layers-table -->" in page
    package = ROOT / "pytest_modeltiers"
    names = sorted(
        f"{path.name}/" if path.is_dir() else path.name
        for path in package.iterdir()
        if ((path.is_dir() and (path / "__init__.py").exists()) or path.suffix == ".py")
        and path.name != "__init__.py"
    )
    listed = [name for name in names if re.search(rf"^  {re.escape(name)}\s", page, re.M)]
    assert listed == names, (
        f"docs/architecture.md does not describe {sorted(set(names) - set(listed))}"
    )
    assert _docs_hook().render_layers_table().count("\n| ") >= 5


def _commands(markdown: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The pytest command lines and the ``modeltiers SUBCOMMAND`` lines of the code blocks."""
    pytest_lines: list[str] = []
    cli_lines: list[tuple[str, str]] = []
    for block in _code_blocks(markdown):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0]
            match = re.search(r"(?:python -m )?\bpytest\s+(.*)", line)
            if match:
                pytest_lines.append(match.group(1))
            # a command with subcommands of its own: ``modeltiers baseline export ...``
            match = re.search(
                r"(?<![\w-])modeltiers\s+([a-z][a-z-]*(?: (?:export|import))?)(.*)", line
            )
            if match:
                cli_lines.append((match.group(1), match.group(2)))
    return pytest_lines, cli_lines


def _long_flags(command: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command))


def _documents(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def test_readme_commands_use_only_options_that_exist(pytester: pytest.Pytester) -> None:
    pytest_lines, cli_lines = _commands(README)
    selected_tiers = {tier for line in pytest_lines for tier in re.findall(r"tier\d", line)}
    assert {"tier1", "tier3", "tier4", "tier5"} <= selected_tiers, (
        f"the README's quick start should show a command per built tier; it selects "
        f"{sorted(selected_tiers)}"
    )

    # Every option string pytest accepts, aliases such as --junitxml included, with this
    # plugin and the installed ones loaded as in a user's run.
    known = set(pytester.parseconfig()._parser.optparser._option_string_actions)
    unknown = sorted(
        flag for line in pytest_lines for flag in _long_flags(line) if flag not in known
    )
    assert not unknown, f"the README's pytest commands use options pytest does not know: {unknown}"

    assert cli_lines, "the README shows no modeltiers command"
    for subcommand, arguments in cli_lines:
        result = pytester.run(
            sys.executable,
            "-m",
            "pytest_modeltiers.cli",
            *subcommand.split(),
            "--help",
            timeout=120,
        )
        assert result.ret == 0, f"modeltiers {subcommand} --help failed: {result.stderr.str()}"
        sub_help = result.stdout.str()
        missing = sorted(f for f in _long_flags(arguments) if not _documents(sub_help, f))
        assert not missing, f"modeltiers {subcommand} has no option {missing}"


def _ci_snippets() -> list[tuple[str, str]]:
    ci_page = (DOCS / "ci.md").read_text(encoding="utf-8")
    return [("README.md", s) for s in _code_blocks(README, "yaml")] + [
        ("docs/ci.md", s) for s in _code_blocks(ci_page, "yaml")
    ]


@pytest.mark.parametrize(
    ("where", "snippet"), _ci_snippets(), ids=lambda value: value.split("\n")[0][:30]
)
def test_ci_snippets_end_with_the_gate(where: str, snippet: str) -> None:
    runs = [line.strip() for line in snippet.splitlines() if line.strip().startswith("- run:")]
    assert runs, f"a CI snippet of {where} runs nothing"
    assert runs[-1].startswith("- run: modeltiers check-report reports/health.json"), (
        f"a CI snippet of {where} must end with the gate, not {runs[-1]!r}"
    )
    assert "--modeltiers-report reports/health.json" in snippet, (
        f"a CI snippet of {where} gates on a report it does not write"
    )


def test_readme_has_one_ci_snippet() -> None:
    assert len(_code_blocks(README, "yaml")) == 1


@pytest.mark.slow
def test_readme_fixture_example_runs(pytester: pytest.Pytester) -> None:
    (example,) = [b for b in _code_blocks(README, "python") if "def test_my_head" in b]
    pytester.makepyfile(test_readme_example=example)
    model = ROOT / "example_models" / "tiny_gpt.py"
    result = pytester.runpytest_subprocess(
        f"--model={model}", "-m", "tier1", "test_readme_example.py", "-k", "my_head or my_batch"
    )
    result.assert_outcomes(passed=2)


@pytest.mark.slow
def test_readme_workflow_example_runs(tmp_path: Path) -> None:
    """The sweep and repro bundle example, as written, in a fresh folder with the examples."""
    (example,) = [b for b in _code_blocks(README, "python") if "run_grid_sweep" in b]
    shutil.copytree(ROOT / "example_models", tmp_path / "example_models")
    done = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "learning_rate" in done.stdout
    assert list((tmp_path / "bundles").glob("*.zip"))


def _custom_adapter_source() -> str:
    page = (DOCS / "tasks-and-adapters.md").read_text(encoding="utf-8")
    (source,) = [b for b in _code_blocks(page, "python") if "class NanoGPTAdapter" in b]
    return source


@pytest.mark.slow
def test_documented_custom_adapter_checks_a_nanogpt_style_model(
    pytester: pytest.Pytester,
) -> None:
    pytester.copy_example("docs/nanogpt_last_logits.py")
    pytester.makepyfile(nanogpt_adapter=_custom_adapter_source())
    selection = ("-m", "tier1 or tier3", "-k", "not training_run", "-p", "no:cacheprovider")

    without = pytester.runpytest_subprocess("--model=nanogpt_last_logits.py", *selection)
    without.stdout.fnmatch_lines(["*FAILED modeltiers/tier1.py::test_shape_robustness*"])

    adapted = pytester.runpytest_subprocess(
        "--model=nanogpt_last_logits.py", "--adapter=nanogpt_adapter:NanoGPTAdapter", *selection
    )
    outcomes = adapted.parseoutcomes()
    assert adapted.ret == 0, adapted.stdout.str()
    assert outcomes.get("passed", 0) >= 14 and "failed" not in outcomes, outcomes


def test_readme_links_point_at_pages_that_exist() -> None:
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert targets, "the README links to no page"
    missing = sorted({target for target in targets if not (ROOT / target).exists()})
    assert not missing, f"the README links to files that do not exist: {missing}"
