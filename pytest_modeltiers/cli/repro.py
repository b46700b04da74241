"""``modeltiers repro``: write a run's reproducibility bundle, or verify one.

PYTEST_DONT_REWRITE

``modeltiers repro RUN_ID --db experiments.db [--output DIR]`` writes
``DIR/repro_run<RUN_ID>.zip`` (``--health-report PATH`` adds a session's health report, its
page and plots) and prints its path and what it could not hold;
``modeltiers repro --verify PATH`` checks every member against the manifest. Exit 0: written or
intact; 1: a member is bad (the first one is named); 2: bad input (no such run, a missing or
unreadable zip, a run whose files changed). The package is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2


def add_parser(commands: Any) -> None:
    """Register ``repro`` on the ``modeltiers`` command's subparsers."""
    parser = commands.add_parser(
        "repro", help="bundle a training run to reproduce it, or verify a bundle"
    )
    parser.add_argument("run_id", nargs="?", type=int, metavar="RUN_ID")
    parser.add_argument("--db", type=Path, metavar="PATH", help="the experiment database")
    parser.add_argument(
        "--output", type=Path, default=Path("."), metavar="DIR", help="where to write the zip"
    )
    parser.add_argument("--verify", type=Path, metavar="PATH", help="check a bundle's hashes")
    parser.add_argument("--no-checkpoint", action="store_true", help="leave the weights out")
    parser.add_argument("--no-plots", action="store_true", help="leave the plots out")
    parser.add_argument(
        "--health-report",
        type=Path,
        metavar="PATH",
        help="a session's JSON health report to carry under health/ (with its page and plots)",
    )


def _say(message: str, *, error: bool = False) -> None:
    print(f"modeltiers repro: {message}", file=sys.stderr if error else sys.stdout)


def run(args: argparse.Namespace) -> int:
    from pytest_modeltiers.errors import ModelTiersError

    if args.verify is not None:
        if args.run_id is not None:
            _say("give either RUN_ID (to write a bundle) or --verify PATH, not both", error=True)
            return EXIT_USAGE
        return _verify(args.verify)
    if args.run_id is None or args.db is None:
        _say("name a run: modeltiers repro RUN_ID --db experiments.db", error=True)
        return EXIT_USAGE
    from pytest_modeltiers.repro.bundle import MANIFEST, create_repro_bundle, manifest_of

    try:
        path = create_repro_bundle(
            args.run_id,
            args.db,
            args.output,
            include_checkpoint=not args.no_checkpoint,
            include_plots=not args.no_plots,
            health_report=args.health_report,
        )
    except ModelTiersError as exc:
        _say(str(exc), error=True)
        return EXIT_USAGE
    import zipfile

    with zipfile.ZipFile(path) as archive:
        manifest = manifest_of(archive)
    _say(f"wrote {path} ({len(manifest['members'])} members, hashes in {MANIFEST})")
    for name, reason in manifest["missing"].items():
        _say(f"not in the bundle: {name}: {reason}")
    return EXIT_OK


def _verify(path: Path) -> int:
    from pytest_modeltiers.repro.bundle import ReproBundleError
    from pytest_modeltiers.repro.verify import verify_repro_bundle

    try:
        verdict = verify_repro_bundle(path)
    except ReproBundleError as exc:
        _say(str(exc), error=True)
        return EXIT_USAGE
    if verdict.ok:
        _say(f"{path}: all {verdict.checked} members match {verdict.path.name}'s manifest")
        return EXIT_OK
    name, problem = verdict.problems[0]
    more = len(verdict.problems) - 1
    _say(
        f"{path}: member {name} is bad: {problem}"
        + (f" (and {more} more bad member{'s' if more > 1 else ''})" if more else ""),
        error=True,
    )
    return EXIT_BAD
