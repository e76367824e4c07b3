"""Performance figures of the fleet (a benchmark, not a test): part of ``make bench``.

Every target is a lab target (each kernel starts its own lab, as ``make run`` does), so the
figures measure the fleet and the machine, not a network. Measured in one run:

1. **Wall ratio**: ``carts-runbook fleet`` with 16 targets on 2 workers (the whole command:
   cluster start, the runs, the summary notebook) against the same 16 run one after another
   (16 ``carts-runbook run`` processes, as a facilitator would without the fleet).
   Goal on 2 cores: at most 0.6.
2. **Engine overhead per target** against a single ``carts-runbook run``: a fleet of N targets
   on one worker (so the targets do not share the cores), (a) each target's own time in the engine
   (the record's ``fleet.seconds``: the same path as ``carts-runbook run``, in a warm worker) and
   (b) the whole command divided by N (cluster start and summary notebook included); against the
   median of single runs measured beside it. Goal: at most 10 %.
3. **Peak memory** of the whole fleet: the resident memory of the command and every process
   under it (the Dask workers, their kernels, the summary notebook's kernel), sampled every
   0.2 s during the 16-target fleet.
4. **Growth**: the wall time of 4, 8 and 16 targets on 2 workers, and the time per target.

Run: ``.venv/bin/python benchmarks/bench_fleet.py [--targets 16] [--singles 3] [--json FILE]``.
The tables are Markdown, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "carts-runbook")


def targets_file(folder: Path, n: int) -> Path:
    """``n`` lab targets, each its own account (the workshop's broken state)."""
    lines = ["defaults:", "  backend: lab", "  timeout_s: 120", "targets:"]
    for i in range(1, n + 1):
        lines += [f"  - name: team-{i:02d}", f'    account_id: "5555555555{i:02d}"']
    path = folder / f"targets-{n}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process this one has waited for, with theirs:
    the delta around a command is the work of its whole process tree, whatever else the machine
    runs (wall times depend on that; CPU times much less)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNBOOK_"))}


class PeakMemory:
    """The largest sum of resident memory of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self.peak = 0
        self.processes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            if total > self.peak:
                self.peak, self.processes = total, len(procs)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_fleet(folder: Path, n: int, workers: int, memory: bool = False) -> dict[str, Any]:
    out = folder / f"out-{n}-{workers}-{time.monotonic_ns()}"
    argv = [CLI, "fleet", "--targets", str(targets_file(folder, n)), "--out", str(out)]
    argv += ["--workers", str(workers), "--no-progress"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakMemory(process.pid) if memory else None
    stdout, stderr = process.communicate(timeout=3600)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if sampler is not None:
        sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"fleet of {n} failed ({process.returncode}):\n{stdout}\n{stderr[-3000:]}")
    data = json.loads((out / "fleet-summary.json").read_text())
    seconds = [r["seconds"] for r in data["targets"]]
    return {
        "targets": n,
        "workers": workers,
        "wall_s": wall,
        "cpu_s": cpu,
        "target_s": seconds,
        "peak_rss": sampler.peak if sampler else None,
        "peak_processes": sampler.processes if sampler else None,
    }


def run_single(folder: Path, i: int) -> tuple[float, float]:
    out = folder / f"single-{i}-{time.monotonic_ns()}"
    argv = [CLI, "run", "--params", "params/lab.yaml", "--out", str(out)]
    argv += ["-p", f"account_id='5555555555{i % 100:02d}'"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"carts-runbook run failed:\n{done.stderr[-3000:]}")
    return wall, cpu


def spread(values: list[float], unit: str = "s") -> str:
    return f"{min(values):.2f} to {max(values):.2f} {unit}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=16, help="targets of the big fleet")
    parser.add_argument("--singles", type=int, default=3, help="single runs for the overhead")
    parser.add_argument("--json", help="write every raw figure to this file")
    args = parser.parse_args()
    n = args.targets
    load = os.getloadavg()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; load average at start "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n"
    )
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        folder = Path(tmp)
        run_single(folder, 99)  # warm the file cache: the first process of a series pays it
        sequential_t0 = time.perf_counter()
        sequential_runs = [run_single(folder, i) for i in range(1, n + 1)]
        sequential_wall = time.perf_counter() - sequential_t0
        big = run_fleet(folder, n, 2, memory=True)
        single_runs = [run_single(folder, 90 + i) for i in range(args.singles)]
        one_worker = run_fleet(folder, n, 1)
        growth = [run_fleet(folder, k, 2) for k in (4, 8) if k < n] + [big]

    sequential = [w for w, _ in sequential_runs]
    sequential_cpu = sum(c for _, c in sequential_runs)
    singles = [w for w, _ in single_runs]
    ratio = big["wall_s"] / sequential_wall
    single = statistics.median(singles)
    in_engine = statistics.median(one_worker["target_s"])
    per_target = one_worker["wall_s"] / n
    figures.update(
        sequential=sequential_runs,
        sequential_wall_s=sequential_wall,
        fleet=big,
        singles=single_runs,
        one_worker=one_worker,
        growth=growth,
    )

    print(f"### 1. Wall ratio: {n} lab targets, fleet on 2 workers against one after another\n")
    print("| figure | value | goal |\n|---|---|---|")
    print(
        f"| {n} `carts-runbook run`, one after another | {sequential_wall:.1f} s "
        f"(each {spread(sequential)}) |  |"
    )
    print(f"| `carts-runbook fleet`, 2 workers (whole command) | {big['wall_s']:.1f} s |  |")
    print(f"| ratio | {ratio:.2f} | <= 0.6 |")
    print(f"| CPU time, one after another (all processes) | {sequential_cpu:.1f} s |  |")
    print(
        f"| CPU time, fleet (all processes) | {big['cpu_s']:.1f} s "
        f"({big['cpu_s'] / sequential_cpu:.2f}x) |  |\n"
    )

    print(f"### 2. Engine overhead per target (fleet of {n} on 1 worker)\n")
    print("| figure | value | against a single run | goal |\n|---|---|---|---|")
    print(
        f"| single `carts-runbook run` (median of {len(singles)}) | {single:.2f} s "
        f"({spread(singles)}) |  |  |"
    )
    print(
        f"| a target's time in the engine (median) | {in_engine:.2f} s "
        f"({spread(one_worker['target_s'])}) | {100 * (in_engine / single - 1):+.0f} % | <= +10 % |"
    )
    print(
        f"| whole command / {n} (cluster start, summary included) | {per_target:.2f} s | "
        f"{100 * (per_target / single - 1):+.0f} % |  |\n"
    )

    print("### 3. Peak memory\n")
    print("| figure | value |\n|---|---|")
    print(
        f"| peak resident memory, the fleet command and every process under it | "
        f"{big['peak_rss'] / 2**20:.0f} MiB ({big['peak_processes']} processes) |\n"
    )

    print("### 4. Growth (2 workers)\n")
    print("| targets | wall | per target | target time (median) |\n|---|---|---|---|")
    for g in growth:
        print(
            f"| {g['targets']} | {g['wall_s']:.1f} s | {g['wall_s'] / g['targets']:.2f} s | "
            f"{statistics.median(g['target_s']):.2f} s |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
