"""The scan, repaired: linear time on alias chains, dangerous names on bases it cannot resolve,
and the rule-table gaps, each a file in ``fixtures/safety_corpus`` built like ``fixtures/safety``
(``Caught by: <rule>`` in the docstring, ``# PAYLOAD`` on the line that must be reported).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from payloads import run_payloads

from pytest_modeltiers.models.safety import RULES, _Scan, scan_model_file

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "safety_corpus"
MALICIOUS = sorted((CORPUS / "malicious").glob("*.py"))
BENIGN = sorted((CORPUS / "benign").glob("*.py"))
EXISTING_CLEAN = [
    *sorted((CORPUS.parent / "safety" / "benign").glob("*.py")),
    *sorted((CORPUS.parent.parent / "example_models").glob("*.py")),
    *(
        p
        for p in sorted((CORPUS.parent / "models").glob("*.py"))
        if p.stem not in ("syntax_error", "hangs")
    ),
]


def _declared_rule(model_file: Path) -> str:
    for line in model_file.read_text().splitlines():
        if line.startswith("Caught by: "):
            return line.removeprefix("Caught by: ").split()[0].rstrip(".")
    raise AssertionError(f"{model_file} has no 'Caught by: <rule>' line in its docstring")


def _payload_lines(model_file: Path) -> set[int]:
    lines = model_file.read_text().splitlines()
    return {number for number, line in enumerate(lines, start=1) if "# PAYLOAD" in line}


@pytest.mark.parametrize("model_file", MALICIOUS, ids=lambda p: p.stem)
def test_corpus_file_is_refused_at_its_payload_naming_the_rule(model_file: Path) -> None:
    rule = _declared_rule(model_file)
    assert rule in RULES
    expected = _payload_lines(model_file)
    assert expected, f"{model_file}: no line is marked # PAYLOAD"
    findings = scan_model_file(model_file)
    hits = [f for f in findings if f.rule == rule and f.line in expected]
    assert hits, "\n".join(map(str, findings)) or "no findings"
    assert str(hits[0]).startswith(f"{model_file}:{hits[0].line}: [{rule}] ")


@pytest.mark.parametrize("model_file", BENIGN + EXISTING_CLEAN, ids=lambda p: p.stem)
def test_benign_file_stays_clean(model_file: Path) -> None:
    assert scan_model_file(model_file) == []


# ---------------------------------------------------------------------------------------------
# Linear time. Resolution steps are counted (no timed assertion); the seconds are measured by
# benchmarks, not here.


def _alias_chain(links: int, *, reverse: bool = False, tail: str = "system('true')") -> str:
    """``a0 = os; a1 = a0; ...; aN.system(...)``; reversed, inside a function, where later
    lines may name earlier ones."""
    names = [f"a{i}" for i in range(links)]
    body = [f"{names[i]} = {names[i - 1]}" for i in range(1, links)]
    if reverse:
        body.reverse()
        indented = "\n".join(f"    {line}" for line in body)
        return f"import os\n\ndef f():\n    a0 = os\n{indented}\n    {names[-1]}.{tail}\n"
    return "\n".join(["import os", "a0 = os", *body, f"{names[-1]}.{tail}"]) + "\n"


def _steps(path: Path) -> tuple[int, list[str]]:
    scan = _Scan(path)
    findings = scan.run()
    return scan.steps, [f"{f.rule}:{f.line}" for f in findings]


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed-in-function"])
def test_a_thousand_link_alias_chain_is_resolved_in_linear_steps(
    tmp_path: Path, reverse: bool
) -> None:
    counts = {}
    for links in (1_000, 2_000):
        path = tmp_path / f"chain_{links}.py"
        path.write_text(_alias_chain(links, reverse=reverse))
        steps, findings = _steps(path)
        last_line = len(path.read_text().splitlines())
        assert findings == [f"process-execution:{last_line}"]
        counts[links] = steps
    assert counts[1_000] <= 12 * 1_000
    assert counts[2_000] <= 2.2 * counts[1_000]


def test_a_long_benign_alias_chain_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "chain.py"
    path.write_text(_alias_chain(1_000, tail="path.join('a', 'b')"))
    assert scan_model_file(path) == []


def test_an_alias_chain_across_local_modules_is_resolved_in_linear_steps(
    tmp_path: Path,
) -> None:
    """Each module re-binds the last one's name: the old resolver took time 2**links."""
    counts = {}
    for links in (40, 80):
        folder = tmp_path / str(links)
        folder.mkdir()
        (folder / "m0.py").write_text("import os as o\n")
        for i in range(1, links + 1):
            (folder / f"m{i}.py").write_text(f"import m{i - 1}\no = m{i - 1}.o\n")
        (folder / "model.py").write_text(f"import m{links}\nm{links}.o.system('x')\n")
        steps, findings = _steps(folder / "model.py")
        assert "process-execution:2" in findings
        counts[links] = steps
    assert counts[80] <= 2.5 * counts[40]


# ---------------------------------------------------------------------------------------------
# Representative payloads really fire when run unprotected (into a marker file in tmp_path), so
# that the refusals above are what stops them.

REPRESENTATIVE = [
    "conditional_base",
    "boolean_base",
    "inspect_getmodule",
    "attrgetter_concat",
    "returned_module",
    "tarfile_write",
    "bz2_write",
    "numpy_memmap",
    "path_rename_unbound",
    "annotation_get_type_hints",
    "singledispatch_register",
    "mock_patch_original",
]


def test_representative_payloads_fire_when_run_unprotected(tmp_path: Path) -> None:
    """Run unscanned (one interpreter, torch imported once), each payload creates its marker."""
    cases = [
        (str(CORPUS / "malicious" / f"{name}.py"), str(tmp_path / name)) for name in REPRESENTATIVE
    ]
    results = run_payloads(cases)
    assert all(r["marker"] for r in results.values()), json.dumps(results, indent=1)


ALIAS_CYCLES = {
    # Missed by the resolver that memoised what it knew when it cut a cycle.
    "cut-early": "v3 = v0\nv2 = v4\nv3 = v0\nv3 = v2\nv1 = v4\nv4 = v2\nv1 = v2\nv4 = v0\n"
    "v4 = v4\nv0 = v3\nv3 = os\nv4.system('x')\n",
    # Missed while a provisional answer kept the depth of a node that had finished.
    "stale-depth": "v7 = v2\nv5 = v3\nv8 = v8\nv0 = v0\nv5 = v5\nv7 = v6\nv0 = v1\nv7 = v8\n"
    "v1 = v1\nv6 = v1\nv2 = v0\nv5 = v6\nv6 = v8\nv1 = v7\nv8 = v6\nv6 = v4\nv8 = v6\n"
    "v0 = os\nv2 = v3\nv8 = v3\nv2 = v1\nv5.system('x')\n",
}


@pytest.mark.parametrize("body", ALIAS_CYCLES.values(), ids=ALIAS_CYCLES.keys())
def test_alias_cycles_keep_every_binding(tmp_path: Path, body: str) -> None:
    """Names bound to each other in cycles all may hold ``os``: cutting a cycle while
    resolving must not memoise a partial answer."""
    path = tmp_path / "model.py"
    path.write_text("import os\n" + body)
    last = len(path.read_text().splitlines())
    assert ("process-execution", last) in {(f.rule, f.line) for f in scan_model_file(path)}


def test_random_alias_graphs_find_every_name_that_can_hold_os(tmp_path: Path) -> None:
    """Random alias graphs (with cycles, in any order): ``name.system(...)`` is reported exactly
    when some chain of bindings leads from ``os`` to ``name`` (every name may also be ``math``,
    so that none is unknown: an unknown base is reported by the dangerous-name rule)."""
    rng = random.Random(20261207)
    for trial in range(300):
        names = [f"v{i}" for i in range(rng.randint(2, 9))]
        edges = [(rng.choice(names), rng.choice(names)) for _ in range(rng.randint(2, 20))]
        source_name, target = rng.choice(names), rng.choice(names)
        statements = [f"{a} = {b}" for a, b in edges] + [f"{source_name} = os"]
        rng.shuffle(statements)
        holds_os, grew = {source_name}, True
        while grew:
            grew = False
            for a, b in edges:
                if b in holds_os and a not in holds_os:
                    holds_os.add(a)
                    grew = True
        harmless = [f"{name} = math" for name in names]  # every name resolves to something
        lines = ["import math, os", *harmless, *statements, f"{target}.system('x')"]
        path = tmp_path / f"case_{trial}.py"
        path.write_text("\n".join(lines) + "\n")
        found = any(f.line == len(lines) for f in scan_model_file(path))
        assert found == (target in holds_os), "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Each new rule both ways: (id, source, rule at the last line, or None for clean).

CASES = [
    (
        "self-attribute-system",
        "class M:\n    def f(self):\n        self.backend.system('x')\n",
        "process-execution",
    ),
    (
        "call-result-rmtree",
        "import tempfile\ntempfile.TemporaryDirectory()._rmtree('/x')\n",
        "recursive-delete",
    ),
    (
        "attrgetter-literal-system",
        "import operator\noperator.attrgetter('os.system')\n",
        "process-execution",
    ),
    ("attrgetter-literal-harmless", "import operator\noperator.attrgetter('weight.shape')\n", None),
    (
        "patch-computed",
        "from unittest import mock\nname = input()\nmock.patch(name)\n",
        "dynamic-code",
    ),
    (
        "patch-subprocess",
        "from unittest import mock\nmock.patch('subprocess.run')\n",
        "process-execution",
    ),
    ("patch-own-module", "from unittest import mock\nmock.patch('torch.nn.init.zeros_')\n", None),
    ("memmap-default-mode", "import numpy as np\nnp.memmap('x', dtype='uint8')\n", "file-write"),
    ("memmap-read-only", "import numpy as np\nnp.memmap('x', dtype='uint8', mode='r')\n", None),
    ("from-file-private", "import torch\ntorch.from_file('x', size=4)\n", None),
    ("tarfile-open-write", "import tarfile\ntarfile.open('x.tar', 'w:gz')\n", "file-write"),
    ("tarfile-open-read", "import tarfile\ntarfile.open('x.tar')\n", None),
    ("path-open-unbound-read", "from pathlib import Path\nPath.open(Path('x'), 'r')\n", None),
    (
        "path-open-unbound-computed",
        "from pathlib import Path\nm = 'w'\nPath.open(Path('x'), m)\n",
        "file-write",
    ),
    ("subprocess-stdlib-assignment", "import shutil\nshutil.rmtree = print\n", "dynamic-code"),
    ("string-annotation", "import os\ndef f(x: 'os.system(\"x\")'): ...\n", "process-execution"),
    ("nested-string-annotation", "import os\nx: 'list[\"os.popen(1)\"]'\n", "process-execution"),
    ("forward-ref", "import os, typing\ntyping.ForwardRef('os.system(1)')\n", "process-execution"),
    (
        "literal-eval-clean",
        "from typing import Literal\ndef f(m: Literal['eval', 'system']): ...\n",
        None,
    ),
    ("parameter-named-os", "def f(os):\n    return os.system\n", "process-execution"),
]


@pytest.mark.parametrize(("source", "rule"), [pytest.param(s, r, id=i) for i, s, r in CASES])
def test_new_rule(tmp_path: Path, source: str, rule: str | None) -> None:
    path = tmp_path / "model.py"
    path.write_text(source)
    findings = scan_model_file(path)
    last = len(source.splitlines())
    if rule is None:
        assert findings == []
    else:
        assert (rule, last) in {(f.rule, f.line) for f in findings}, findings


def test_the_scan_runs_inside_the_load_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file built to stall the scan meets ``--modeltiers-timeout`` like a model that hangs."""
    import time

    from pytest_modeltiers.models import loader
    from pytest_modeltiers.timeouts import ModelTimeoutError

    monkeypatch.setattr(loader, "_check_safety", lambda source, *, trust: time.sleep(5) or "")
    model = Path(__file__).resolve().parents[1] / "example_models" / "tiny_gpt.py"
    request = loader.LoadRequest(spec=str(model), rootdir=model.parent, timeout=0.3)
    with pytest.raises(ModelTimeoutError, match=r"scanning .*tiny_gpt.py timed out after 0.3 s"):
        loader.load_model(request)
