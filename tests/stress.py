"""``make test-stress``: the suite the way a loaded 2-core CI machine runs it, several times in a row.

Each round runs the tests in a new random order (pytest-randomly, the seed printed), two at a time
(pytest-xdist, one module per worker at a time), while busy-loop processes keep the CPUs loaded.
It stops at the first failing round and prints the command that replays that order. A test that
passes only on a quiet machine fails here.

    .venv/bin/python tests/stress.py [--rounds 3] [--workers 2] [--hogs 1] [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Everything but the browser test (it has its own job in `make test`; under a CPU hog its
#: JupyterLab start-up dominates a round without testing anything the others do not).
DEFAULT_SELECTION = ["tests", "-m", "not browser"]


def hog() -> subprocess.Popen[bytes]:
    """One process that keeps a CPU busy until it is killed."""
    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds that must pass in a row")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--hogs", type=int, default=1, help="busy-loop processes beside them")
    parser.add_argument("pytest_args", nargs="*", help="tests and options (after --)")
    args = parser.parse_args(argv)
    selection = args.pytest_args or DEFAULT_SELECTION
    hogs = [hog() for _ in range(args.hogs)]
    print(
        f"test-stress: {args.rounds} rounds, {args.workers} workers, {args.hogs} CPU hog(s), "
        f"{os.cpu_count()} CPUs: {' '.join(selection)}",
        flush=True,
    )
    try:
        for n in range(1, args.rounds + 1):
            seed = random.randrange(1, 2**31)
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "randomly",
                f"--randomly-seed={seed}",
                "-n",
                str(args.workers),
                "--dist",
                "loadscope",
                # Modules in the seed's order (xdist would hand out those with most tests first).
                "--no-loadscope-reorder",
                *selection,
            ]
            t0 = time.monotonic()
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            took = time.monotonic() - t0
            last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"round {n}/{args.rounds}: seed {seed}: {last} ({took:.0f} s)", flush=True)
            if done.returncode != 0:
                print(done.stdout[-20000:], file=sys.stderr)
                print(done.stderr[-5000:], file=sys.stderr)
                print(f"test-stress: FAILED in round {n}; replay: {' '.join(cmd)}", file=sys.stderr)
                return 1
    finally:
        for h in hogs:
            os.killpg(h.pid, signal.SIGKILL)
            h.wait()
    print(f"test-stress: {args.rounds} rounds passed in a row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
