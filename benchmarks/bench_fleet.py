"""Performance figures of the fleet (a benchmark, not a test): part of ``make bench``.

Every target is a lab target, each its own account of the one lab the fleet starts (an
organization, ``runbook_lib/fleet/lab.py``), so the figures measure the fleet and the machine,
not a network. Measured in one run:

1. **Wall ratio**: ``carts-runbook fleet`` with 16 targets on 2 workers (the whole command:
   the lab and the cluster starting, the runs, the summary notebook) against the same 16 run one
   after another, two ways: (a) 16 ``carts-runbook run`` processes, each starting its own lab in
   its kernel (a single run's default, as a facilitator would without the fleet); (b) 16
   ``carts-runbook run`` processes against one lab organization of 16 accounts started here at
   the fleet's pace, each assuming its account's role (the fleet's own work, without Dask).
   Goal on 2 cores: at most 0.6.
2. **Engine overhead per target** against a single ``carts-runbook run``: a fleet of N targets
   on one worker (so the targets do not share the cores), (a) each target's own time in the engine
   (the record's ``fleet.seconds``: the same path as ``carts-runbook run``, in a warm worker) and
   (b) the whole command divided by N (lab and cluster start, summary notebook included); against
   the median of single runs measured beside it, with their own lab and against the organization.
   Goal: at most 10 %.
3. **Peak memory** of the whole fleet: the resident memory of the command (with the lab) and every
   process under it (the Dask workers, their kernels, the summary notebook's kernel), sampled every
   0.2 s during the 16-target fleet.
4. **Growth**: the wall time of 4, 8 and 16 targets on 2 workers, and the time per target.

CPU times are those of every process each measure waited for (``getrusage`` of the children),
plus this process's own for the lab it starts for (1b): the work done, whatever else the machine
runs. Wall times depend on that load, which is printed at the start and the end.

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


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def served_runs(folder: Path, n: int, first: int) -> tuple[list[tuple[float, float]], float, float]:
    """``n`` ``carts-runbook run`` one after another against one lab organization of ``n``
    workshop accounts started here at the fleet's pace (each run assuming its account's role);
    returns each run's (wall, CPU), the whole wall, and the lab's CPU (start included)."""
    from runbook_lib.fleet.lab import FLEET_TIME_SCALE
    from runbook_lib.lab import Lab, LabConfig
    from runbook_lib.params import Params

    accounts = [f"6666666{first:03d}{i:02d}" for i in range(1, n + 1)]
    cpu0, t0 = self_cpu(), time.perf_counter()
    members = [(Params(account_id=a), "workshop") for a in accounts]
    lab = Lab.start_organization(
        members, LabConfig(time_scale=FLEET_TIME_SCALE), management="999999999999"
    )
    runs = []
    try:
        for account in accounts:
            out = folder / f"served-{account}"
            argv = [CLI, "run", "--out", str(out), "-p", f"endpoint_url={lab.endpoint_url}"]
            argv += ["-p", f"assume_role_arn={lab.role_arn(account)}"]
            c0, w0 = children_cpu(), time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True)
            runs.append((time.perf_counter() - w0, children_cpu() - c0))
            if done.returncode != 0:
                raise SystemExit(f"carts-runbook run failed:\n{done.stderr[-3000:]}")
    finally:
        lab.stop()
    return runs, time.perf_counter() - t0, self_cpu() - cpu0


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
        served, served_wall, served_lab_cpu = served_runs(folder, n, 1)
        big = run_fleet(folder, n, 2, memory=True)
        single_runs = [run_single(folder, 90 + i) for i in range(args.singles)]
        single_served, _, _ = served_runs(folder, args.singles, 2)
        one_worker = run_fleet(folder, n, 1)
        growth = [run_fleet(folder, k, 2) for k in (4, 8) if k < n] + [big]
    end_load = os.getloadavg()

    sequential = [w for w, _ in sequential_runs]
    sequential_cpu = sum(c for _, c in sequential_runs)
    served_cpu = sum(c for _, c in served) + served_lab_cpu
    singles = [w for w, _ in single_runs]
    singles_served = [w for w, _ in single_served]
    ratio = big["wall_s"] / sequential_wall
    ratio_served = big["wall_s"] / served_wall
    single = statistics.median(singles)
    single_s = statistics.median(singles_served)
    in_engine = statistics.median(one_worker["target_s"])
    per_target = one_worker["wall_s"] / n
    figures.update(
        sequential=sequential_runs,
        sequential_wall_s=sequential_wall,
        served=served,
        served_wall_s=served_wall,
        served_lab_cpu_s=served_lab_cpu,
        fleet=big,
        singles=single_runs,
        singles_served=single_served,
        one_worker=one_worker,
        growth=growth,
        load_start=load,
        load_end=end_load,
    )

    print(f"### 1. Wall ratio: {n} lab targets, fleet on 2 workers against one after another\n")
    print("| figure | wall | CPU (all processes) | fleet's wall ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| (a) {n} `carts-runbook run`, one after another, each with its own lab | "
        f"{sequential_wall:.1f} s (each {spread(sequential)}) | {sequential_cpu:.1f} s | "
        f"{ratio:.2f} | <= 0.6 |"
    )
    print(
        f"| (b) {n} `carts-runbook run`, one after another, against one lab of {n} accounts | "
        f"{served_wall:.1f} s (each {spread([w for w, _ in served])}) | {served_cpu:.1f} s "
        f"(the lab {served_lab_cpu:.1f} s) | {ratio_served:.2f} | <= 0.6 |"
    )
    print(
        f"| `carts-runbook fleet`, 2 workers (whole command) | {big['wall_s']:.1f} s | "
        f"{big['cpu_s']:.1f} s |  |  |\n"
    )

    print(f"### 2. Engine overhead per target (fleet of {n} on 1 worker)\n")
    print("| figure | value | against (a) | against (b) | goal |\n|---|---|---|---|---|")
    print(
        f"| (a) single `carts-runbook run`, its own lab (median of {len(singles)}) | "
        f"{single:.2f} s ({spread(singles)}) |  |  |  |"
    )
    print(
        f"| (b) single `carts-runbook run` against a lab organization (median of "
        f"{len(singles_served)}) | {single_s:.2f} s ({spread(singles_served)}) |  |  |  |"
    )
    print(
        f"| a target's time in the engine (median) | {in_engine:.2f} s "
        f"({spread(one_worker['target_s'])}) | {100 * (in_engine / single - 1):+.0f} % | "
        f"{100 * (in_engine / single_s - 1):+.0f} % | <= +10 % |"
    )
    print(
        f"| whole command / {n} (lab and cluster start, summary included) | {per_target:.2f} s | "
        f"{100 * (per_target / single - 1):+.0f} % | {100 * (per_target / single_s - 1):+.0f} % "
        "|  |\n"
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
    print(f"\nload average at the end {end_load[0]:.2f}, {end_load[1]:.2f}, {end_load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
