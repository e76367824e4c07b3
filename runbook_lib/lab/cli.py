"""``python -m runbook_lib.lab``: serve a workshop lab in a terminal, or reset one.

``serve`` prints five ``export`` lines first (endpoint, dummy keys, region, the lab's token) and
flushes them, so a shell can take them with ``eval "$(head -5 lab.env)"``; then it serves until
SIGINT or SIGTERM. ``reset`` and ``state`` send the token (``$RUNBOOK_LAB_TOKEN``) with a JSON
content type, as the lab's control routes require.
Every error is one line on stderr starting with ``lab:``, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from runbook_lib.lab.config import SERVE_TIME_SCALE
from runbook_lib.lab.errors import LabError
from runbook_lib.lab.guard import TOKEN_ENV, TOKEN_HEADER
from runbook_lib.lab.scenarios import DEFAULT, SCENARIOS
from runbook_lib.params import ParameterError

EXIT_ERROR = 2
EXPORT_ORDER = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    TOKEN_ENV,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line too."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --help)")


def _fail(message: str) -> NoReturn:
    print(f"lab: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m runbook_lib.lab",
        description="The embedded ECS Immersion Day lab (step 3.2) on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="serve a fresh workshop lab until Ctrl-C",
        description="Serve the broken workshop account on 127.0.0.1. Prints five export lines "
        "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, "
        f"{TOKEN_ENV}) first, then serves until SIGINT or SIGTERM. It answers only requests "
        "for its own loopback address, from no other web origin.",
    )
    serve.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)"
    )
    serve.add_argument(
        "--params", metavar="FILE", help="a params/*.yaml file (names, region, account)"
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        default=SERVE_TIME_SCALE,
        metavar="X",
        help=f"real seconds per simulated second (default {SERVE_TIME_SCALE}: a carts task fails "
        "and is replaced every 3 s or so; 1.0 is AWS's pace)",
    )
    serve.add_argument(
        "--propagation-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="simulated seconds before an IAM policy change reaches the carts app (default 0)",
    )
    serve.add_argument("--seed", type=int, default=0, help="seed of every made-up id (default 0)")
    serve.add_argument(
        "--throttle-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of API calls answered with a throttling error (default 0)",
    )
    serve.add_argument(
        "--execution-role-fault",
        choices=("pull", "logs"),
        default=None,
        help="make tasks fail to start: image pull or log stream creation",
    )
    serve.add_argument(
        "--scenario",
        choices=tuple(SCENARIOS),
        default=DEFAULT,
        help=f"the situation of a real account to play (default {DEFAULT}): "
        + "; ".join(f"{s.name}: {s.account}" for s in SCENARIOS.values() if s.name != DEFAULT),
    )
    serve.add_argument(
        "--stale-reads",
        type=float,
        default=0.0,
        metavar="S",
        help="simulated seconds during which IAM reads may answer the state before a write "
        "(default 0)",
    )
    serve.add_argument(
        "--log-pages",
        action="store_true",
        help="CloudWatch Logs answers partial and empty pages before the end",
    )
    serve.add_argument(
        "--validate-responses",
        action="store_true",
        help="hold every answer to botocore's output shape; problems show in 'state'",
    )
    for name, text in (
        ("reset", "put a serving lab back to the broken state"),
        ("state", "print a serving lab's state as JSON"),
    ):
        sub = commands.add_parser(name, help=text, description=text + ".")
        sub.add_argument(
            "--endpoint",
            metavar="URL",
            default=None,
            help="the lab's endpoint (default: $AWS_ENDPOINT_URL)",
        )
        sub.add_argument(
            "--token",
            metavar="TOKEN",
            default=None,
            help=f"the lab's token, printed by serve (default: ${TOKEN_ENV})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return control(args.command, args.endpoint, args.token)


def serve(args: argparse.Namespace) -> int:
    from runbook_lib.lab import Lab, LabConfig
    from runbook_lib.params import Params, params_from_file

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # Installed before the lab starts: Ctrl-C during start-up stops cleanly, not with a traceback.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        params = params_from_file(args.params) if args.params else Params()
        config = LabConfig(
            time_scale=args.time_scale,
            seed=args.seed,
            propagation_delay_s=args.propagation_delay,
            throttle_rate=args.throttle_rate,
            execution_role_fault=args.execution_role_fault,
            stale_reads_s=args.stale_reads,
            log_pages=args.log_pages,
            scenario=args.scenario,
            validate_responses=args.validate_responses,
        )
        if not 0 <= args.port <= 65535:
            raise LabError(f"--port must be from 0 to 65535; got {args.port}")
        lab = Lab.start(params, config, port=args.port)
    except (ParameterError, LabError) as exc:
        _fail(str(exc).rstrip("."))
    try:
        env = lab.env()
        for key in EXPORT_ORDER:
            print(f"export {key}={shlex.quote(env[key])}")
        sys.stdout.flush()
        print(
            f"lab: serving account {lab.account_id} ({lab.region}) at {lab.endpoint_url}, "
            f"scenario {args.scenario}, time scale {args.time_scale:g}; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.2):
            pass
    except BrokenPipeError:
        pass  # whoever read the export lines has gone; stop cleanly all the same
    finally:
        lab.stop()
    return 0


def control(command: str, endpoint: str | None, token: str | None = None) -> int:
    url = (endpoint or os.environ.get("AWS_ENDPOINT_URL", "")).rstrip("/")
    if not url:
        _fail("no lab endpoint: pass --endpoint URL or set AWS_ENDPOINT_URL")
    token = token or os.environ.get(TOKEN_ENV, "")
    if not token:
        _fail(f"no lab token: pass --token or set {TOKEN_ENV} (serve prints it with the exports)")
    method = "POST" if command == "reset" else "GET"
    request = urllib.request.Request(
        f"{url}/_lab/{command}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={TOKEN_HEADER: token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            state = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        _fail(f"{url} answered HTTP {exc.code} for /_lab/{command}: {_refusal(exc)}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(f"cannot reach the lab at {url}: {reason}")
    if command == "reset":
        print(f"lab: reset {url} to the broken workshop state", file=sys.stderr)
    else:
        print(json.dumps(state, indent=2))
    return 0


def _refusal(exc: urllib.error.HTTPError) -> str:
    """The lab's own sentence from an error answer, or a guess when it is not a lab."""
    try:
        said = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        said = None
    return str(said) if said else "is it a lab?"
