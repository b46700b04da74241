"""What every built-in suite test does with a check's result: record it, and assert on it.

A failing result fails the test with ``CheckFailed``, whose text is all the user needs and
nothing of ours: where the model raised (when an exception of the model caused the failure, its
innermost location first, then the model's own frames with their source lines), the check's
message, the input that showed it, the file the failing batch was saved to, and the command
that reruns the test. pytest shows that text instead of a traceback through this package's
frames with the fixtures' reprs. ``CheckFailed`` is pytest's ``fail`` exception, which
Hypothesis treats as a failure: inside a property it still shrinks, and the notes Hypothesis
adds (the falsifying example, the blob that reproduces it) are shown after the text. The batch
file is rewritten for every failing example, so after shrinking it holds the minimal one.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modeltiers.models.batches import batch_signature
from pytest_modeltiers.options import OPTIONS, Option, default_profile
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.settings import SETTINGS_KEY

FAILURES_DIR = "modeltiers-failures"
#: Options that say where the session writes its outputs or how it gates, not what a check
#: sees: a rerun of one test must not overwrite the session's report or fail on its score.
NOT_REPRODUCING = frozenset({"modeltiers_report", "modeltiers_fail_under"})
_TIER_MARKER = re.compile(r"tier\d+")
#: One of ``exception_details``'s ``user_frames``: ``"path:LINE in function: source"``.
_FRAME = re.compile(r"^(?P<place>.+:\d+) in (?P<function>[^:\s]+)(?:: (?P<source>.*))?$")
#: What ``-k`` accepts as one name (pytest's keyword-expression identifier).
_KEYWORD_NAME = re.compile(r"^[\w:+\-.\[\]\\/]+$")


class CheckFailed(pytest.fail.Exception):  # type: ignore[name-defined]
    """A built-in check failed; its text replaces the traceback (``pytrace=False``).

    pytest shows ``str()`` of a ``pytrace=False`` failure and nothing else, so the notes that
    Hypothesis attaches to the exception it re-raises are appended here.
    """

    __module__ = "builtins"  # shown as ``CheckFailed: ...`` in pytest's summary, like ``Failed``

    def __init__(self, text: str) -> None:
        super().__init__(text, pytrace=False)

    def __str__(self) -> str:
        return "\n".join([str(self.msg), *getattr(self, "__notes__", ())])


def expect(
    request: pytest.FixtureRequest,
    recorder: CheckRecorder,
    result: CheckResult,
    batch: dict[str, Any] | None = None,
) -> None:
    """Record ``result``; skip the test when it does not apply, fail it when it is not ok."""
    __tracebackhide__ = True
    recorder.record(result)
    if result.status.value == "skipped":
        pytest.skip(result.message)
    if result.ok:
        return
    lines = [*model_frames(result.details), result.message]
    if batch is not None:
        lines.append(f"input: {batch_signature(batch)}")
        saved = save_batch(request, batch)
        lines.append(f"failing batch saved to {saved} (torch.load(path, weights_only=True))")
    lines.append(f"rerun: {rerun_command(request)}")
    if _in_hypothesis_example():
        lines.append(
            "(a Hypothesis example: a rerun from this folder draws it again; the "
            "@reproduce_failure or --hypothesis-seed shown below, if any, pins it)"
        )
    raise CheckFailed("\n".join(lines))


def model_frames(details: dict[str, Any]) -> list[str]:
    """``model.py:12: NameError: ...`` and the model's frames, pytest's short style, or none.

    ``details`` are a check's (see ``models.exceptions.exception_details``); a failure that no
    exception of the model caused has no ``location`` and gets no lines.
    """
    location, frames = details.get("location"), details.get("user_frames")
    if not location or not frames:
        return []
    lines = [f"{location}: {details.get('exception', 'exception')}"]
    lines.append("raised in (most recent call last):")
    for frame in frames:
        match = _FRAME.match(str(frame))
        if match is None:
            lines.append(f"  {frame}")
            continue
        lines.append(f"  {match['place']}: in {match['function']}")
        if match["source"]:
            lines.append(f"      {match['source']}")
    return lines


def _in_hypothesis_example() -> bool:
    if "hypothesis" not in sys.modules:
        return False
    from hypothesis.control import currently_in_test_context

    return currently_in_test_context()


def save_batch(request: pytest.FixtureRequest, batch: dict[str, Any]) -> Path:
    """Write the batch's tensors (nothing else, so it loads with ``weights_only=True``)."""
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    target = request.config.rootpath / FAILURES_DIR / f"{name}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    torch.save(tensors, target)
    return target.relative_to(request.config.rootpath)


def rerun_command(request: pytest.FixtureRequest) -> str:
    """The command that runs just this test again, with every option that shaped it.

    It is ``python -m pytest`` (which puts the current folder on ``sys.path``, where a local
    ``--adapter`` or model factory module lives), every model, every option of ``OPTIONS``
    whose effective value (command line, ini file or environment) is not its default, written
    ``--flag=value`` so that pytest never takes a value for a path that picks the rootdir, then
    ``-m`` with the test's tier and a ``-k`` that selects this test alone.
    """
    settings = request.config.stash[SETTINGS_KEY]
    args = [*_python(), "-m", "pytest"]
    for option in OPTIONS:
        if option.dest not in NOT_REPRODUCING:
            args += _option_args(option, getattr(settings, option.attribute))
    args += ["-p", "no:randomly", *_selection(request)]
    return shlex.join(args)


def _python() -> list[str]:
    """``python`` when that is this interpreter on ``PATH``, else this interpreter's path."""
    found = shutil.which("python")
    if found and Path(found).absolute() == Path(sys.executable):
        return ["python"]
    return [sys.executable]


def _option_args(option: Option, value: Any) -> list[str]:
    """``["--flag=value", ...]`` for an option's effective value; none when it is the default."""
    if value is None or value == _default_value(option):
        return []
    flag = option.flags[0]
    if option.flag:
        return [flag] if value else []
    if option.multiple:
        return [f"{flag}={_option_text(item)}" for item in value]
    return [f"{flag}={_option_text(value)}"]


def _default_value(option: Option) -> Any:
    """The value a run without this option has: its default; for the Hypothesis profile, the
    one a run outside CI picks (a CI run's ``ci`` profile is written out, since a local rerun
    would otherwise draw other examples)."""
    if option.dest == "modeltiers_profile":
        return default_profile({})
    if option.multiple:
        return tuple(option.default or ())
    return option.default


def _option_text(value: Any) -> str:
    """A parsed value written back as text (``("onnx", "pytorch")`` -> ``onnx,pytorch``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(_option_text(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _selection(request: pytest.FixtureRequest) -> list[str]:
    """``-m tierN -k NAME`` selecting this test and no other collected test.

    ``-k`` matches substrings, so tests whose names contain this one's (``test_export`` in
    ``test_export_health``) are excluded by name.
    """
    node = request.node
    args = []
    tiers = sorted({m.name for m in node.iter_markers() if _TIER_MARKER.fullmatch(m.name)})
    if tiers:
        args += ["-m", " or ".join(tiers)]
    if not _KEYWORD_NAME.match(node.name):
        return args
    expression = [node.name]
    for other in _clashing_names(request):
        if _KEYWORD_NAME.match(other):
            expression.append(f"not {other}")
    return [*args, "-k", " and ".join(expression)]


def _clashing_names(request: pytest.FixtureRequest) -> Iterator[str]:
    """Names of the other collected tests that contain this test's name."""
    name = request.node.name.lower()
    seen = {request.node.name}
    for item in getattr(request.session, "items", []):
        if item.name not in seen and name in item.name.lower():
            seen.add(item.name)
            yield item.name
