"""``modeltiers baseline export|import``: move a tier 5 baseline between machines.

PYTEST_DONT_REWRITE

``export --db DB --run RUN --to DIR`` writes one run (an id, a run name or ``latest``) with its
checkpoint and reference profile, hashed, to a new folder; ``import DIR --db DB`` checks the
hashes and adds the run to another database, printing its new id. A CI job keeps the folder as
an artifact and imports it in the next job (see the docs' CI page).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(commands: Any) -> None:
    """Register ``baseline`` and its two subcommands on the ``modeltiers`` subparsers."""
    parser = commands.add_parser(
        "baseline", help="export a tier 5 baseline run to a folder, or import one"
    )
    actions = parser.add_subparsers(dest="baseline_command", required=True)
    export = actions.add_parser(
        "export", help="write a run, its checkpoint and reference profile to a new folder"
    )
    export.add_argument("--db", required=True, type=Path, metavar="DB", help="experiment database")
    export.add_argument(
        "--run",
        default="latest",
        metavar="RUN",
        help="run id, run name, or latest (the newest completed run with a checkpoint; default)",
    )
    export.add_argument("--to", required=True, type=Path, metavar="DIR", help="new folder")
    imported = actions.add_parser(
        "import", help="check a baseline folder's hashes and add its run to a database"
    )
    imported.add_argument("folder", type=Path, metavar="DIR", help="a folder written by export")
    imported.add_argument(
        "--db",
        required=True,
        type=Path,
        metavar="DB",
        help="experiment database (created if missing)",
    )


def run(args: argparse.Namespace) -> int:
    from pytest_modeltiers.store.baseline_transfer import export_baseline, import_baseline
    from pytest_modeltiers.store.sqlite_base import StoreError

    try:
        if args.baseline_command == "export":
            run_id, manifest = export_baseline(args.db, args.run, args.to)
            print(f"modeltiers baseline: run {run_id} of {args.db} exported to {manifest.parent}")
        else:
            run_id = import_baseline(args.folder, args.db)
            print(
                f"modeltiers baseline: {args.folder} imported into {args.db} as run {run_id} "
                f"(use --baseline-run {run_id} or --baseline-run latest)"
            )
    except StoreError as exc:
        print(f"modeltiers baseline {args.baseline_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(
            f"modeltiers baseline {args.baseline_command}: {exc.strerror or exc}: "
            f"{exc.filename}; check that the path exists and is writable",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
