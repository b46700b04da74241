"""The ``modeltiers`` command.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_modeltiers.cli import baseline as cli_baseline
from pytest_modeltiers.cli import report as cli_report
from pytest_modeltiers.cli import repro as cli_repro
from pytest_modeltiers.cli import run_tiers as cli_run_tiers
from pytest_modeltiers.cli import sweep as cli_sweep
from pytest_modeltiers.options import OPTIONS, OptionValueError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeltiers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect_cmd = commands.add_parser("inspect", help="resolve a model as the plugin would")
    for option in OPTIONS:
        flags = option.flags + (("--model",) if option.dest == "modeltiers_model" else ())
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help}
        if option.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = option.metavar
            if option.multiple:
                kwargs["action"] = "append"
        inspect_cmd.add_argument(*flags, **kwargs)
    scan_cmd = commands.add_parser("scan", help="safety-scan a model file and its local imports")
    scan_cmd.add_argument("files", nargs="+", type=Path, metavar="FILE")
    train_cmd = commands.add_parser("train", help="train a model from a JSON config")
    train_cmd.add_argument("--config", required=True, type=Path, metavar="FILE")
    train_cmd.add_argument(
        "--sandbox",
        choices=("auto", "on", "off"),
        help="confine the model's code (default: the config's sandbox key, else auto: on "
        "wherever the kernel supports it)",
    )
    cli_run_tiers.add_parser(commands)
    cli_sweep.add_parser(commands)
    cli_baseline.add_parser(commands)
    cli_report.add_parser(commands)
    cli_repro.add_parser(commands)
    gate_cmd = commands.add_parser(
        "check-report",
        help="exit non-zero unless a health report is complete, judged something, and passes",
    )
    gate_cmd.add_argument("report", type=Path, metavar="PATH", help="the --modeltiers-report file")
    gate_cmd.add_argument(
        "--min-score",
        type=_min_score,
        metavar="N",
        help="also fail when the health score is below N (0-100)",
    )
    return parser


def _min_score(value: str) -> float:
    """``--min-score``: a health score from 0 to 100 (argparse reports the error)."""
    try:
        score = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to 100, got {value!r}"
        ) from None
    if not 0 <= score <= 100:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, got {value!r}")
    return score


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "scan":
        return _scan(args.files)
    if args.command == "train":
        from pytest_modeltiers.cli.train import main_train

        return main_train(args.config, args.sandbox)
    if args.command == "run-tiers":
        return cli_run_tiers.run(args)
    if args.command == "sweep":
        return cli_sweep.run(args)
    if args.command == "baseline":
        return cli_baseline.run(args)
    if args.command == "report":
        return cli_report.run(args)
    if args.command == "repro":
        return cli_repro.run(args)
    if args.command == "check-report":
        return _check_report(args.report, args.min_score)
    return _inspect(args)


def _check_report(path: Path, min_score: float | None) -> int:
    from pytest_modeltiers.report.gate import EXIT_OK, check_report

    verdict = check_report(path, min_score)
    stream = sys.stdout if verdict.exit_code == EXIT_OK else sys.stderr
    for line in verdict.lines:
        print(f"modeltiers check-report: {line}", file=stream)
    return verdict.exit_code


def _scan(files: list[Path]) -> int:
    from pytest_modeltiers.models.safety import scan_model_file

    status = EXIT_OK
    for path in files:
        if not path.is_file():
            print(f"modeltiers: {path}: no such file", file=sys.stderr)
            return EXIT_USAGE
        try:
            findings = scan_model_file(path)
        except SyntaxError as exc:
            print(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}", file=sys.stderr)
            return EXIT_USAGE
        for finding in findings:
            print(finding)
        if findings:
            status = EXIT_FINDINGS
        else:
            print(f"{path}: clean")
    return status


def _inspect(args: argparse.Namespace) -> int:
    from pytest_modeltiers.errors import ModelTiersError
    from pytest_modeltiers.models.gist import parse_gist_ref
    from pytest_modeltiers.models.loader import LoadRequest, load_model
    from pytest_modeltiers.settings import Settings  # imports pytest: only for this command

    try:
        settings = Settings.from_values(vars(args))
    except OptionValueError as exc:
        print(f"modeltiers: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not settings.model:
        print("modeltiers: name a model with --model path/to/model.py", file=sys.stderr)
        return EXIT_USAGE
    if settings.sandbox in ("on", "auto"):
        print(
            f"modeltiers inspect: --modeltiers-sandbox {settings.sandbox} is not supported here: "
            "inspect loads the model after the static scan only; to load it inside the sandbox, "
            f"run pytest --model=SPEC --modeltiers-sandbox={settings.sandbox} --co",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for spec in settings.model:
        request = LoadRequest.from_settings(spec, settings, Path.cwd())
        try:
            if parse_gist_ref(spec) is not None and not settings.trust_model:
                raise ModelTiersError(
                    "a gist model is untrusted code and runs only inside the sandbox, which "
                    f"inspect does not enter; run pytest --model={spec} --co (confined), or "
                    "pass --trust-model to load it here unconfined and unscanned"
                )
            loaded = load_model(request)
        except ModelTiersError as exc:
            print(f"modeltiers: --model {spec}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print("\n".join(loaded.describe(loaded.name)))
    return EXIT_OK
