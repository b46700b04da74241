"""Tests of the static safety scan that runs before any model file executes.

The corpus in ``fixtures/safety`` is the contract: every malicious file must be refused at the
line marked ``# PAYLOAD`` with the rule its docstring names (and its payload must really work
when run, so the refusal tests can fail), and every benign file must pass untouched. The
focused tests below pin each rule and each way of hiding a name.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import textwrap
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from payloads import run_payloads

from pytest_modeltiers.models.safety import RULES, SafetyFinding, scan_model_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "safety"
MALICIOUS = FIXTURES / "malicious"
BENIGN = FIXTURES / "benign"


def _model_files(folder: Path) -> list[Path]:
    """One model file per case: ``case.py``, or ``case/model.py`` for multi-file cases."""
    cases = [p / "model.py" if p.is_dir() else p for p in sorted(folder.iterdir())]
    return [p for p in cases if p.suffix == ".py" and p.name != "__init__.py"]


def _case_id(model_file: Path) -> str:
    return model_file.parent.name if model_file.name == "model.py" else model_file.stem


MALICIOUS_CASES = _model_files(MALICIOUS)
BENIGN_CASES = _model_files(BENIGN)


def _declared_rule(model_file: Path) -> str:
    match = re.search(r"Caught by: ([a-z-]+)", model_file.read_text())
    assert match, f"{model_file} has no 'Caught by: <rule>' line in its docstring"
    return match.group(1)


def _payload_lines(model_file: Path) -> set[tuple[Path, int]]:
    """``(file, line)`` of every line marked ``# PAYLOAD`` in the case's files."""
    files = (
        sorted(model_file.parent.rglob("*.py")) if model_file.name == "model.py" else [model_file]
    )
    return {
        (path.resolve(), number)
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "# PAYLOAD" in line
    }


def _scan(tmp_path: Path, source: str, name: str = "model.py") -> list[SafetyFinding]:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return scan_model_file(path)


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def _rules_at(findings: list[SafetyFinding]) -> set[tuple[str, int]]:
    return {(f.rule, f.line) for f in findings}


# ---------------------------------------------------------------------------------------------
# The corpus.


def test_corpus_is_large_enough() -> None:
    assert len(MALICIOUS_CASES) >= 20
    assert len(BENIGN_CASES) >= 12
    assert {_declared_rule(p) for p in MALICIOUS_CASES} == set(RULES)


@pytest.mark.parametrize("model_file", MALICIOUS_CASES, ids=_case_id)
def test_malicious_file_is_refused_at_its_payload(model_file: Path) -> None:
    rule = _declared_rule(model_file)
    assert rule in RULES
    expected = _payload_lines(model_file)
    assert expected, f"{model_file}: no line is marked # PAYLOAD"
    findings = scan_model_file(model_file)
    hits = {(f.path.resolve(), f.line) for f in findings if f.rule == rule}
    assert hits & expected, "\n".join(map(str, findings)) or "no findings"


@pytest.mark.parametrize("model_file", BENIGN_CASES, ids=_case_id)
def test_benign_file_has_no_finding(model_file: Path) -> None:
    assert scan_model_file(model_file) == []


# Imports each malicious model file the way the loader does (its folder on sys.path) and calls
# build_model(), once per file, in one interpreter so torch is imported only once.


@pytest.fixture(scope="module")
def payload_results() -> Iterator[dict[str, dict[str, object]]]:
    # A short directory: socket_unix binds its marker path, and AF_UNIX paths are short.
    with tempfile.TemporaryDirectory(prefix="mt-") as markers:
        cases = [(str(p), os.path.join(markers, _case_id(p))) for p in MALICIOUS_CASES]
        yield run_payloads(cases)


@pytest.mark.parametrize("model_file", MALICIOUS_CASES, ids=_case_id)
def test_malicious_payload_really_runs(
    model_file: Path, payload_results: dict[str, dict[str, object]]
) -> None:
    """Run unscanned, each payload creates its marker: the refusal above is what stops it."""
    result = payload_results[str(model_file)]
    assert result["marker"], f"payload did not create the marker: {result['error']}"


# ---------------------------------------------------------------------------------------------
# Each rule, and each way of spelling or hiding a name.

#: Per rule: (id, source, line of the finding). Sources are whole model files.
FLAGGED: dict[str, list[tuple[str, str, int]]] = {
    "process-execution": [
        ("os.system", "import os\nos.system('x')\n", 2),
        # The caller that passes the module may be out of sight (a framework, map, a callback).
        (
            "parameter-named-like-a-module",
            "import os\nclass M:\n    def f(self, os):\n        return os.system('x')\n",
            4,
        ),
        ("os.popen", "import os\nos.popen('x')\n", 2),
        ("execv", "import os\nos.execv('/bin/x', ['x'])\n", 2),
        ("spawnlp", "import os\nos.spawnlp(0, 'x', 'x')\n", 2),
        ("spawn", "import os\nos.posix_spawn('x', [], {})\n", 2),
        ("fork", "import os\npid = os.fork()\n", 2),
        ("posix", "import posix\nposix.system('x')\n", 2),
        ("import-subprocess", "import subprocess\n", 1),
        ("subprocess.Popen", "import subprocess\nsubprocess.Popen(['x'])\n", 2),
        ("pty", "import pty\npty.spawn('x')\n", 2),
        ("webbrowser", "import antigravity\n", 1),
        ("spawnv_passfds", "import multiprocessing.util as u\nu.spawnv_passfds('x', [], ())\n", 2),
        ("asyncio-shell", "import asyncio\nasyncio.create_subprocess_shell('x')\n", 2),
        ("import-as", "import os as o\no.system('x')\n", 2),
        ("from-import-as-call", "from os import system as s\ns('x')\n", 2),
        ("from-import-as-import", "from os import system as s\n", 1),
        ("star-subprocess", "from subprocess import *\nrun(['x'])\n", 2),
        ("star-os", "from os import *\nsystem('x')\n", 2),
        ("dotted-import", "import os.path\nos.system('x')\n", 2),
        ("dunder-import", "__import__('os').system('x')\n", 1),
        (
            "import-module-literal",
            "import importlib\nimportlib.import_module('os').system('x')\n",
            2,
        ),
        (
            "import-module-subprocess",
            "import importlib\nimportlib.import_module('subprocess')\n",
            2,
        ),
        ("sys-modules-literal", "import sys\nsys.modules['os'].system('x')\n", 2),
        ("getattr-literal", "import os\ngetattr(os, 'system')('x')\n", 2),
        ("globals-literal", "import os\nglobals()['os'].system('x')\n", 2),
        ("vars-module-literal", "import os\nvars(os)['system']('x')\n", 2),
        ("module-dict-literal", "import os\nos.__dict__['system']('x')\n", 2),
        ("alias-assignment", "import os\nrun = os.system\n", 2),
        ("module-alias", "import os\nm = os\nm.system('x')\n", 3),
        ("walrus", "if (o := __import__('os')):\n    o.system('x')\n", 2),
        (
            "import-in-method",
            "class M:\n    def f(self):\n        import subprocess as sp\n        sp.call(['x'])\n",
            4,
        ),
        (
            "nested-function",
            "import os\ndef outer():\n    def inner():\n        os.system('x')\n",
            4,
        ),
        ("class-body", "import os\nclass M:\n    hook = os.system\n", 3),
        ("lambda", "import os\nf = lambda: os.system('x')\n", 2),
        ("passed-as-callback", "import os, atexit\natexit.register(os.system, 'x')\n", 2),
        ("reexported-by-torch", "import torch\ntorch.os.system('x')\n", 2),
    ],
    "network": [
        ("socket", "import socket\n", 1),
        ("urllib.request", "import urllib.request\n", 1),
        ("urlopen", "from urllib.request import urlopen\n", 1),
        ("urlopen-alias", "import urllib.request as ur\nur.urlopen('http://x')\n", 2),
        ("http.client", "from http import client\n", 1),
        ("requests", "import requests\n", 1),
        ("httpx", "import httpx\n", 1),
        ("aiohttp", "import aiohttp\n", 1),
        ("ftplib", "import ftplib\n", 1),
        ("smtplib", "import smtplib\n", 1),
        ("telnetlib", "import telnetlib\n", 1),
        ("paramiko", "import paramiko\n", 1),
        ("websocket", "import websocket\n", 1),
        ("torch.hub", "import torch\ntorch.hub.load_state_dict_from_url('http://x')\n", 2),
        ("asyncio-connection", "import asyncio\nasyncio.open_connection('h', 1)\n", 2),
        ("loop-connection", "async def f(loop):\n    await loop.create_connection(p, 'h', 1)\n", 2),
        ("managers", "from multiprocessing.managers import BaseManager\n", 1),
        ("torch.distributed", "import torch.distributed as dist\ndist.TCPStore('h', 1)\n", 2),
    ],
    "native-code": [
        ("ctypes", "import ctypes\n", 1),
        ("CDLL", "from ctypes import CDLL\nCDLL(None)\n", 2),
        ("cffi", "import cffi\n", 1),
        ("load_library", "import torch\ntorch.ops.load_library('x.so')\n", 2),
        (
            "load_inline",
            "import torch.utils.cpp_extension as ext\next.load_inline('m', 'src')\n",
            2,
        ),
        ("cpp_extension.load", "from torch.utils.cpp_extension import load\n", 1),
    ],
    "dynamic-code": [
        ("eval", "eval('1')\n", 1),
        ("exec", "exec('x = 1')\n", 1),
        ("compile", "code = compile('1', 'f', 'eval')\n", 1),
        ("builtins.exec", "import builtins\nbuiltins.exec('x')\n", 2),
        ("from-builtins", "from builtins import eval as e\n", 1),
        ("exec-alias", "run = exec\n", 1),
        ("dunder-import-computed", "def f(name):\n    return __import__(name)\n", 2),
        (
            "import-module-computed",
            "import importlib\ndef f(n):\n    return importlib.import_module(n)\n",
            3,
        ),
        (
            "spec_from_file_location",
            "import importlib.util\nimportlib.util.spec_from_file_location('m', 'x.py')\n",
            2,
        ),
        ("runpy", "import runpy\n", 1),
        ("getattr-module-computed", "import os\ndef f(n):\n    return getattr(os, n)\n", 3),
        (
            "getattr-builtins-computed",
            "import builtins\ndef f(n):\n    return getattr(builtins, n)\n",
            3,
        ),
        ("getattr-torch-computed", "import torch\ndef f(n):\n    return getattr(torch, n)\n", 3),
        (
            "getattr-of-computed-getattr",
            "import torch.nn.functional as F\ndef f(a, b):\n    return getattr(getattr(F, a), b)\n",
            3,
        ),
        (
            "attribute-of-computed-getattr",
            "import torch.nn.functional as F\ndef f(a):\n    return getattr(F, a).load\n",
            3,
        ),
        ("globals-computed", "def f(n):\n    return globals()[n]\n", 2),
        ("globals-builtins", "b = globals()['__builtins__']\n", 1),
        ("globals-alias-computed", "def f(n):\n    table = globals()\n    return table[n]\n", 3),
        ("globals-passed", "print(globals())\n", 1),
        ("globals-get-builtins", "b = globals().get('__builtins__')\n", 1),
        (
            "this-module-computed",
            "import sys\ndef f(n):\n    return getattr(sys.modules[__name__], n)\n",
            3,
        ),
        ("locals-computed", "def f(n):\n    return locals()[n]\n", 2),
        ("module-getattribute", "import os\nf = os.__getattribute__('sys' + 'tem')\n", 2),
        ("private-helper", "import pickle\npickle._loads(b'')\n", 2),
        ("breakpoint", "breakpoint('x')\n", 1),
        ("timeit", "import timeit\ntimeit.timeit('x = 1')\n", 2),
        ("cProfile", "import cProfile\ncProfile.run('x = 1')\n", 2),
        ("pdb", "import pdb\n", 1),
        ("doctest", "import doctest\n", 1),
        ("logging.config", "import logging.config\nlogging.config.dictConfig({})\n", 2),
        ("pydoc.locate", "import pydoc\npydoc.locate('os.system')\n", 2),
        ("hydra", "from hydra.utils import instantiate\ninstantiate(cfg)\n", 2),
        ("help", "help('modules')\n", 1),
        ("site", "import site\nsite.addsitedir('x')\n", 2),
        ("__spec__", "loader = __spec__.loader\n", 1),
        ("vars-computed-attribute", "import torch.nn.functional as F\nvars(F)[n].load\n", 2),
        ("module-as-class-attribute", "class C:\n    o = __import__('os')\n", 2),
        ("vars-passed", "print(vars())\n", 1),
        ("__builtins__", "e = __builtins__\n", 1),
        ("sys-modules-computed", "import sys\ndef f(n):\n    return sys.modules[n]\n", 3),
        ("sys-modules-iterated", "import sys\nmods = list(sys.modules.values())\n", 2),
        ("FunctionType", "import types\ntypes.FunctionType(None, {})\n", 2),
        ("CodeType", "import types\ntypes.CodeType\n", 2),
        ("marshal", "import marshal\nmarshal.loads(b'')\n", 2),
        ("rot13", "import codecs\ncodecs.decode('flfgrz', 'rot13')\n", 2),
        ("subclasses", "x = ().__class__.__base__.__subclasses__()\n", 1),
        ("__globals__", "def f(g):\n    return g.__globals__\n", 2),
        ("getattr-__globals__", "def f(g):\n    return getattr(g, '__globals__')\n", 2),
        ("frames", "import sys\nsys._getframe().f_globals\n", 2),
        ("code-replaced", "def f(g, h):\n    g.__code__ = h.__code__\n", 2),
        ("module-in-dict", "import os\nBACKENDS = {'posix': os}\n", 2),
        ("module-as-default", "import os\ndef f(backend=os):\n    pass\n", 2),
        ("module-returned", "import os\ndef f():\n    return os\n", 3),
        (
            "getattr-as-value",
            "import functools, os\nfunctools.reduce(getattr, ['system'], os)\n",
            2,
        ),
        ("torch.hub.load", "import torch\ntorch.hub.load('owner/repo', 'model')\n", 2),
        (
            "trust_remote_code",
            "from transformers import AutoModel\n"
            "AutoModel.from_pretrained('x', trust_remote_code=True)\n",
            2,
        ),
    ],
    "unpickling": [
        ("pickle.load", "import pickle\npickle.load(f)\n", 2),
        ("pickle.loads", "import pickle\npickle.loads(b'')\n", 2),
        ("pickle-alias", "from pickle import loads as l\nl(b'')\n", 2),
        ("Unpickler", "import pickle\npickle.Unpickler(f).load()\n", 2),
        ("_pickle", "import _pickle\n_pickle.loads(b'')\n", 2),
        ("dill", "import dill\ndill.loads(b'')\n", 2),
        ("joblib", "import joblib\njoblib.load('x')\n", 2),
        ("shelve", "import shelve\nshelve.open('x')\n", 2),
        ("pandas", "import pandas as pd\npd.read_pickle('x')\n", 2),
        ("torch.load-default", "import torch\ntorch.load('x')\n", 2),
        ("torch.load-False", "import torch\ntorch.load('x', weights_only=False)\n", 2),
        (
            "torch.load-computed",
            "import torch\ndef f(w):\n    torch.load('x', weights_only=w)\n",
            3,
        ),
        ("torch.load-alias", "from torch import load\nload('x')\n", 2),
        ("torch.load-uncalled", "import torch\nloader = torch.load\n", 2),
        ("numpy-allow_pickle", "import numpy as np\nnp.load('x', allow_pickle=True)\n", 2),
        ("yaml.load", "import yaml\nyaml.load(s, Loader=yaml.Loader)\n", 2),
        ("yaml.unsafe_load", "import yaml\nyaml.unsafe_load(s)\n", 2),
    ],
    "recursive-delete": [
        ("rmtree", "import shutil\nshutil.rmtree('x')\n", 2),
        ("rmtree-alias", "from shutil import rmtree as r\nr('x')\n", 2),
        ("removedirs", "import os\nos.removedirs('x')\n", 2),
    ],
    "file-write": [
        ("open-w", "open('x', 'w')\n", 1),
        ("open-a", "open('x', 'a')\n", 1),
        ("open-xb", "open('x', 'xb')\n", 1),
        ("open-r+", "open('x', 'r+')\n", 1),
        ("open-mode-kw", "open('x', mode='wb')\n", 1),
        ("open-computed-mode", "def f(m):\n    open('x', m)\n", 2),
        ("open-uncalled", "opener = open\n", 1),
        ("io.open", "import io\nio.open('x', 'w')\n", 2),
        ("io.open-alias", "from io import open as o\no('x', 'w')\n", 2),
        ("gzip", "import gzip\ngzip.open('x.gz', 'wb')\n", 2),
        ("tarfile", "import tarfile\ntarfile.open('x.tgz', 'w:gz')\n", 2),
        ("write_text", "from pathlib import Path\nPath('x').write_text('y')\n", 2),
        ("write_bytes", "from pathlib import Path\nPath('x').write_bytes(b'')\n", 2),
        ("Path.open-w", "from pathlib import Path\nPath('x').open('w')\n", 2),
        ("touch", "from pathlib import Path\nPath('x').touch()\n", 2),
        ("unlink", "def f(p):\n    p.unlink()\n", 2),
        ("Path.rename", "def f(p):\n    p.rename('y')\n", 2),
        ("method-uncalled", "def f(p):\n    w = p.write_text\n", 2),
        ("method-by-getattr", "def f(p):\n    getattr(p, 'touch')()\n", 2),
        ("os.remove", "import os\nos.remove('x')\n", 2),
        ("os.unlink", "import os\nos.unlink('x')\n", 2),
        ("os.rename", "import os\nos.rename('x', 'y')\n", 2),
        ("os.replace", "import os\nos.replace('x', 'y')\n", 2),
        ("os.makedirs", "import os\nos.makedirs('x')\n", 2),
        ("os.open-create", "import os\nos.open('x', os.O_WRONLY | os.O_CREAT)\n", 2),
        ("shutil.copy", "import shutil\nshutil.copy('x', 'y')\n", 2),
        ("shutil.move", "import shutil\nshutil.move('x', 'y')\n", 2),
        ("torch.save", "import torch\ntorch.save({}, 'x')\n", 2),
        ("numpy.save", "import numpy as np\nnp.save('x', 1)\n", 2),
        ("FileHandler", "import logging\nlogging.FileHandler('x')\n", 2),
        ("basicConfig-filename", "import logging\nlogging.basicConfig(filename='x')\n", 2),
        ("tempfile-dir", "import tempfile\ntempfile.mkstemp(dir='.')\n", 2),
        ("dbm", "import dbm\ndbm.open('x', 'c')\n", 2),
    ],
}


@pytest.mark.parametrize(
    ("source", "rule", "line"),
    [
        pytest.param(source, rule, line, id=f"{rule}:{name}")
        for rule, rows in FLAGGED.items()
        for name, source, line in rows
    ],
)
def test_flagged(tmp_path: Path, source: str, rule: str, line: int) -> None:
    findings = _scan(tmp_path, source)
    assert (rule, line) in _rules_at(findings), "\n".join(map(str, findings)) or "no findings"


#: Ordinary model code that must pass: (id, source).
NOT_FLAGGED: list[tuple[str, str]] = [
    (
        "open-read",
        "open('x'); open('x', 'r'); open('x', 'rb'); open('x', mode='rt', encoding='u8')",
    ),
    (
        "pathlib-read",
        """
        from pathlib import Path
        Path('x').read_text(); Path('x').read_bytes(); Path('x').open(); Path('x').open('rb')
        """,
    ),
    ("torch.load-weights_only", "import torch\ntorch.load('x', weights_only=True)\n"),
    ("numpy.load", "import numpy as np\nnp.load('x')\nnp.load('x', allow_pickle=False)\n"),
    ("yaml-safe", "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)\nyaml.safe_load(s)\n"),
    (
        "os-reads",
        """
        import os
        os.environ.get('A'); os.environ['B']; os.getenv('C'); os.cpu_count()
        os.path.join('a', 'b'); os.path.exists('a'); os.listdir('.')
        os.open('x', os.O_RDONLY)
        """,
    ),
    (
        "ordinary-getattr",
        """
        import torch
        import torch.nn.functional as F
        from torch import nn
        def f(self, name, i):
            a = getattr(self, f'layer_{i}')
            b = getattr(F, name)
            c = getattr(nn, name)()
            d = getattr(torch, 'float16')
            e = hasattr(torch, name)
            g = getattr(nn.init, name)
        """,
    ),
    (
        "getattr-on-instance",
        """
        from torch import nn
        class M(nn.Module):
            def f(self, layer, name):
                return getattr(layer, name)
            def __getattr__(self, name):
                return super().__getattr__(name)
        """,
    ),
    (
        "multiprocessing",
        """
        import multiprocessing
        import torch.multiprocessing as mp
        from torch.utils.data import DataLoader
        """,
    ),
    ("compile-attrs", "import re, torch\nre.compile('x')\ntorch.compile(None)\n"),
    (
        "eval-method-str-replace",
        "def f(model):\n    model.eval()\n    return 'ab'.replace('a', 'b')",
    ),
    ("dataclasses.replace", "import dataclasses\ndef f(c):\n    return dataclasses.replace(c)\n"),
    ("tensor.rename", "def f(t):\n    return t.rename(None)\n"),
    ("platform.system", "import platform\nplatform.system()\n"),
    ("timm", "try:\n    import timm\nexcept ImportError:\n    timm = None\n"),
    (
        "parameters-named-builtins",
        """
        def build_model(compile=False, eval=None):
            if compile:
                return compile
            return eval
        """,
    ),
    (
        "methods-named-builtins",
        """
        class R:
            compile = False
            def exec(self):
                return 1
        R().exec()
        """,
    ),
    ("type-checking", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"),
    ("vars-of-objects", "def f(args, self):\n    d = vars(args)\n    self.__dict__.update(d)\n"),
    (
        "sys.modules-membership",
        "import sys\nif 'timm' in sys.modules:\n    pass\nm = sys.modules.get('timm')\n",
    ),
    (
        "importlib-benign",
        """
        import importlib, importlib.util
        importlib.util.find_spec('timm')
        importlib.import_module('torch.nn')
        """,
    ),
    (
        "safetensors",
        """
        from safetensors.torch import load_file, load
        import safetensors.torch
        load_file('x'); load(b''); safetensors.torch.load(b'')
        """,
    ),
    (
        "logging-warnings",
        """
        import logging, warnings
        logging.getLogger(__name__).info('x')
        warnings.warn('x', stacklevel=2)
        """,
    ),
    ("base64-data", "import io, base64\nio.BytesIO(base64.b64decode('eA=='))\n"),
    (
        "partial",
        "from functools import partial\nfrom torch import nn\nN = partial(nn.LayerNorm, eps=1e-6)",
    ),
    ("print", "import sys, json\nprint(json.dumps({}), file=sys.stderr)\n"),
    ("module-alias", "import numpy as np\nxp = np\nxp.zeros(3)\n"),
    ("tempfile-default-dir", "import tempfile\ntempfile.mkstemp()\ntempfile.mkdtemp()\n"),
    ("ast.literal_eval", "import ast\nast.literal_eval('1')\n"),
    (
        "annotations",
        """
        import os, types
        from pathlib import Path
        def f(p: Path, m: types.ModuleType, o: os.PathLike) -> Path:
            x: types.ModuleType = m
            return p
        """,
    ),
    (
        "this-module",
        "import sys\nthis = sys.modules[__name__]\nBlock = 1\nb = getattr(this, 'Block')\n",
    ),
    (
        "getattr-computed-on-harmless-imports",
        """
        import transformers
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        def f(name):
            return getattr(transformers, name), getattr(ALL_ATTENTION_FUNCTIONS, name)
        """,
    ),
]


@pytest.mark.parametrize("source", [pytest.param(s, id=name) for name, s in NOT_FLAGGED])
def test_not_flagged(tmp_path: Path, source: str) -> None:
    assert _scan(tmp_path, source) == []


def test_every_hit_is_listed_sorted_by_line(tmp_path: Path) -> None:
    findings = _scan(tmp_path, "import os\nimport pickle\npickle.loads(b'')\nos.system('x')\n")
    assert [(f.line, f.rule) for f in findings] == [(3, "unpickling"), (4, "process-execution")]


def test_one_finding_per_rule_and_line(tmp_path: Path) -> None:
    """``subprocess.run(...)`` is one finding, not three (the call, the attribute, the name)."""
    findings = _scan(tmp_path, "import subprocess\nsubprocess.run(['x'])\n")
    assert [(f.line, f.detail) for f in findings] == [
        (1, "import subprocess: subprocess starts other programs"),
        (2, "subprocess.run(...) starts other programs"),
    ]


def test_detail_names_the_aliased_target(tmp_path: Path) -> None:
    (finding,) = _scan(tmp_path, "import os as o\no.system('x')\n")
    assert finding.detail == "o.system(...) runs a shell command (o.system is os.system)"


def test_decoded_payload_is_named(tmp_path: Path) -> None:
    findings = _scan(tmp_path, "import base64, zlib\nexec(zlib.decompress(base64.b64decode(s)))\n")
    assert "on data decoded by" in findings[0].detail


def test_the_scan_never_runs_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    findings = _scan(
        tmp_path,
        f"import does_not_exist_anywhere\nopen({str(marker)!r}, 'w').close()\nraise SystemExit\n",
    )
    assert not marker.exists()
    assert _rules_at(findings) == {("file-write", 2)}


# ---------------------------------------------------------------------------------------------
# Following local imports.


@pytest.mark.parametrize(
    "import_line",
    [
        "import helper",
        "from helper import build",
        "from . import helper",
        "import importlib\nimportlib.import_module('helper')",
        "__import__('helper')",
    ],
)
def test_local_import_forms_are_followed(tmp_path: Path, import_line: str) -> None:
    _write(tmp_path, {"helper.py": "import os\ndef build():\n    os.system('x')\n"})
    findings = _scan(tmp_path, import_line + "\n")
    assert [(f.path, f.line, f.rule) for f in findings] == [
        (tmp_path / "helper.py", 3, "process-execution")
    ]


def test_packages_run_their_inits_and_relative_submodules(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub.mod import thing\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/mod.py": "import shutil\nthing = 1\nshutil.rmtree('x')\n",
            "pkg/other.py": "eval('1')\n",
        },
    )
    findings = _scan(tmp_path, "import pkg\nfrom pkg import other\n")
    assert {(f.path, f.rule) for f in findings} == {
        (tmp_path / "pkg" / "sub" / "mod.py", "recursive-delete"),
        (tmp_path / "pkg" / "other.py", "dynamic-code"),
    }


def test_namespace_package_submodule_is_followed(tmp_path: Path) -> None:
    _write(tmp_path, {"ns/inner.py": "import socket\n"})
    findings = _scan(tmp_path, "from ns.inner import x\n")
    assert [(f.path, f.rule) for f in findings] == [(tmp_path / "ns" / "inner.py", "network")]


def test_payload_two_imports_deep(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"layers.py": "from util import warm\n", "util.py": "import os\nwarm = os.popen\n"},
    )
    findings = _scan(tmp_path, "from layers import *\n")
    assert [(f.path.name, f.line, f.rule) for f in findings] == [
        ("util.py", 2, "process-execution")
    ]


def test_import_cycles_terminate_and_scan_each_file_once(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "a.py": "import b\nimport model\neval('a')\n",
            "b.py": "import a\nfrom . import a\nimport model\neval('b')\n",
        },
    )
    findings = _scan(tmp_path, "import a\nimport b\n")
    assert sorted((f.path.name, f.line) for f in findings) == [("a.py", 3), ("b.py", 4)]


def test_reexport_through_a_local_module(tmp_path: Path) -> None:
    _write(tmp_path, {"tools.py": "import os\n"})
    findings = _scan(tmp_path, "import tools\ntools.os.system('x')\nfrom tools import os\n")
    assert _rules_at(findings) == {("process-execution", 2)}


@pytest.mark.parametrize(
    ("helper", "model"),
    [
        ("import os as _platform\n", "from helper import _platform\n_platform.system('x')\n"),
        ("import os\no = os\n", "import helper\nhelper.o.system('x')\n"),
        ("import os as o\n", "from helper import *\no.system('x')\n"),
        ("from os import *\n", "from helper import system\nsystem('x')\n"),
    ],
    ids=["import-as", "alias-assignment", "star", "star-in-helper"],
)
def test_names_resolve_through_a_local_modules_bindings(
    tmp_path: Path, helper: str, model: str
) -> None:
    _write(tmp_path, {"helper.py": helper})
    findings = _scan(tmp_path, model)
    assert [(f.path.name, f.line, f.rule) for f in findings] == [
        ("model.py", 2, "process-execution")
    ]


def test_helper_finds_its_own_siblings(tmp_path: Path) -> None:
    _write(tmp_path, {"sub/helper.py": "import sibling\n", "sub/sibling.py": "import ctypes\n"})
    findings = _scan(tmp_path, "from sub import helper\n")
    assert [(f.path, f.rule) for f in findings] == [
        (tmp_path / "sub" / "sibling.py", "native-code")
    ]


def test_installed_modules_and_files_outside_the_tree_are_not_followed(tmp_path: Path) -> None:
    _write(tmp_path, {"outside.py": "import os\nos.system('x')\n"})
    findings = _scan(tmp_path, "import json\nfrom .. import outside\n", name="inner/model.py")
    assert findings == []


@pytest.mark.parametrize("suffix", [EXTENSION_SUFFIXES[0], ".pyc"])
def test_compiled_local_module_is_reported(tmp_path: Path, suffix: str) -> None:
    _write(tmp_path, {"helper.py": "X = 1\n"})
    (tmp_path / f"helper{suffix}").write_bytes(b"\0")
    findings = _scan(tmp_path, "import helper\n")
    assert [(f.line, f.rule) for f in findings] == [(1, "native-code")]
    assert f"helper{suffix}" in findings[0].detail


def test_relative_paths_stay_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(
        tmp_path,
        {"m/model.py": "import helper\n", "m/helper.py": "import pickle\npickle.loads(b'')\n"},
    )
    monkeypatch.chdir(tmp_path)
    (finding,) = scan_model_file(Path("m/model.py"))
    assert finding.path == Path("m/helper.py")
    assert str(finding).startswith(f"{Path('m/helper.py')}:2: [unpickling] ")


# ---------------------------------------------------------------------------------------------
# Errors and the finding type.


def test_syntax_error_in_the_model_file_is_raised(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text("def broken(:\n")
    with pytest.raises(SyntaxError) as excinfo:
        scan_model_file(path)
    assert excinfo.value.filename == str(path)


def test_syntax_error_in_a_local_import_names_that_file(tmp_path: Path) -> None:
    _write(tmp_path, {"helper.py": "x = (\n"})
    with pytest.raises(SyntaxError) as excinfo:
        _scan(tmp_path, "import helper\n")
    assert excinfo.value.filename == str(tmp_path / "helper.py")


def test_null_bytes_are_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_bytes(b"x = 1\0\n")
    with pytest.raises(SyntaxError) as excinfo:
        scan_model_file(path)
    assert excinfo.value.filename == str(path)


def test_nesting_too_deep_to_walk_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    source = "x = " + "-" * 2000 + "1\n"  # parses, but deeper than a recursive visitor goes
    assert _rules_at(_scan(tmp_path, source)) == {("dynamic-code", 1)}


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_nesting_too_deep_to_parse_is_a_syntax_error(tmp_path: Path, depth: int) -> None:
    with pytest.raises(SyntaxError, match="nested too deeply"):
        _scan(tmp_path, "x = " + "-" * depth + "1\n")


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_model_file(tmp_path / "absent.py")


def test_finding_string_format() -> None:
    finding = SafetyFinding(
        Path("path/to/file.py"), 12, "process-execution", "os.system(...) runs a shell command"
    )
    assert str(finding) == (
        f"{Path('path/to/file.py')}:12: [process-execution] os.system(...) runs a shell command"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.line = 3  # type: ignore[misc]


def test_rule_ids_are_stable() -> None:
    assert set(RULES) == {
        "process-execution",
        "network",
        "native-code",
        "dynamic-code",
        "unpickling",
        "recursive-delete",
        "file-write",
    }
