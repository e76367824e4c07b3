"""``carts-runbook fleet``: the command line of the fleet (the subcommand and what it prints).

    carts-runbook fleet --targets FILE --out DIR [--workers N] [--scheduler tcp://HOST:PORT]
                        [--resume] [--apply] [--per-account N] [--per-region N]

Exit codes: 0 every target ended well (fixed, already fixed, planned, nothing to change), 1 any
target failed, 2 bad input (the targets file, the folder, the cluster: nothing ran), 130 when
Ctrl-C stopped the fleet (the summary says which targets did not finish).

Importing this module imports only :mod:`argparse`: ``carts-runbook --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2

HELP = "run the runbook for every target of a targets file, on Dask, with one summary"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``fleet`` subcommand to ``carts-runbook``'s subparsers."""
    fleet: argparse.ArgumentParser = sub.add_parser(
        "fleet", help=HELP, description=__doc__.split("\n\n")[0] if __doc__ else HELP
    )
    fleet.add_argument(
        "--targets",
        required=True,
        metavar="FILE",
        help="the targets file (YAML: defaults, targets)",
    )
    fleet.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for each target's run (DIR/<name>/) and the summary (DIR/fleet-summary.*)",
    )
    fleet.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="worker processes of the embedded Dask cluster (default: the cores, as memory allows)",
    )
    fleet.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="an existing Dask cluster (tcp://HOST:PORT) whose workers have the project installed "
        "and see DIR at the same path",
    )
    fleet.add_argument(
        "--resume",
        action="store_true",
        help="go on with a fleet run in DIR: skip targets whose record shows a finished run with "
        "the same parameters",
    )
    fleet.add_argument(
        "--apply",
        action="store_true",
        help="allow targets with backend aws and apply: true to write (without it such a "
        "targets file is refused)",
    )
    fleet.add_argument(
        "--per-account",
        type=_positive,
        default=1,
        metavar="N",
        help="targets of one account that run at once (default 1)",
    )
    fleet.add_argument(
        "--per-region",
        type=_positive,
        default=0,
        metavar="N",
        help="targets of one region that run at once (default: no bound)",
    )
    fleet.add_argument("--no-progress", action="store_true", help="no progress bar")
    fleet.set_defaults(func=cmd_fleet)
    return fleet


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of 1 or more; got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more; got {text!r}")
    return value


def cmd_fleet(args: argparse.Namespace) -> int:
    from runbook_lib.fleet.engine import FleetUsageError, Options, run_fleet
    from runbook_lib.fleet.report import render
    from runbook_lib.fleet.summary import SUMMARY_HTML, counts_line, text_table
    from runbook_lib.fleet.targets import TargetsError, load_targets

    if args.scheduler and args.workers:
        print(
            "carts-runbook fleet: --workers sizes the embedded cluster and --scheduler names "
            "another one; give one of them.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        targets = load_targets(args.targets, allow_aws_apply=args.apply)
    except TargetsError as exc:
        print(f"carts-runbook fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    where = args.scheduler or "an embedded Dask cluster"
    print(
        f"carts-runbook fleet: {len(targets)} targets from {args.targets} on {where}",
        file=sys.stderr,
    )
    options = Options(
        out=out,
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        per_account=args.per_account,
        per_region=args.per_region,
        progress=not args.no_progress,
    )
    try:
        result = run_fleet(targets, options)
    except FleetUsageError as exc:
        print(f"carts-runbook fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = render(out.resolve(), result.rows)
    print(file=sys.stderr)
    print(text_table(result.rows))
    print()
    print(f"{counts_line(result.rows)}; {result.seconds:.1f} s on {result.workers} workers")
    print(f"summary: {out / SUMMARY_HTML} (also .json, .csv)")
    if problem:
        print(
            f"carts-runbook fleet: the summary notebook failed ({problem}); "
            f"{SUMMARY_HTML} holds the plain table",
            file=sys.stderr,
        )
    if result.interrupted:
        print(
            "carts-runbook fleet: interrupted; each record says where its run stopped and how to "
            f"undo; `--resume` goes on: carts-runbook fleet --targets {args.targets} --out "
            f"{args.out} --resume",
            file=sys.stderr,
        )
    return result.exit_code
