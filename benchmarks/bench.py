"""Performance figures of the runbook (a benchmark, not a test): ``make bench``.

Measured in one run, side by side, alternating (headless first in even rounds, bare first in odd
ones), ``--rounds`` times; each figure is reported as median and spread (min to max):

1. headless overhead: the README's main command (``carts-runbook run --params params/lab.yaml
   --out <tmp>``, whole process) against ``benchmarks/bare_run.py`` (the same Runbook methods in
   one plain process, same kind of lab); their ratio.
2. reaction: from the moment the lab marks the task the watch reports RUNNING, and HEALTHY, to
   the watch step's report (bare run: the lab is in its process); from ``put_role_policy`` to that
   report (both).
3. API cost: AWS calls per run by operation, outside the watch loop and inside it; then, once, a
   watch that lasts about a minute (a lab at AWS's pace) and one where IAM's propagation delay
   makes tasks fail meanwhile: calls per minute of waiting and the polling intervals.
4. start-up: importing ``runbook_lib`` for the aws backend (moto, Flask, werkzeug must not be
   imported), importing the lab and starting it, and how long the headless command takes to
   reach the notebook's first cell and its first AWS calls.
5. suite (``--with-suite``): wall time of ``make test``, once.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench.py [--rounds 5] [--with-suite]``.
The tables are Markdown, ready for BENCHMARKS.md; ``--json FILE`` keeps every raw figure.
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
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.history import latest_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARAMS = ROOT / "params" / "lab.yaml"
#: The long watches: a lab at AWS's pace (the carts health check's 60 s start period), and one
#: where IAM takes 60 simulated seconds to propagate (tasks keep failing meanwhile).
LONG_WATCHES = {
    "AWS pace (time scale 1.0)": ["--time-scale", "1.0"],
    "slow IAM propagation (time scale 0.5, delay 60 s)": [
        "--time-scale",
        "0.5",
        "--propagation-delay-s",
        "60",
    ],
}
LAB_MODULES = ("moto", "flask", "werkzeug")

IMPORT_AWS = """
import json, sys, time
t = time.perf_counter()
import runbook_lib, runbook_lib.runbook, runbook_lib.session
from runbook_lib.params import Params
Params(backend="aws")
took = time.perf_counter() - t
print(json.dumps({"import_s": took, **{m: m in sys.modules for m in LAB_MODULES}}))
""".replace("LAB_MODULES", repr(LAB_MODULES))

START_LAB = """
import json, time
t = time.perf_counter()
from runbook_lib.lab import Lab
imported = time.perf_counter() - t
lab = Lab.start()
started = time.perf_counter() - t
import boto3
sts = boto3.client("sts", endpoint_url=lab.endpoint_url, region_name="us-west-2",
                   aws_access_key_id="lab", aws_secret_access_key="lab")
sts.get_caller_identity()
answered = time.perf_counter() - t
lab.stop()
print(json.dumps({"import_s": imported, "start_s": started - imported, "first_answer_s": answered}))
"""


# --- running things ---------------------------------------------------------------------------


def timed(cmd: list[str], **kw: Any) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall-clock start, seconds, result) of a subprocess; :data:`LAST_CPU` holds the CPU
    seconds (user and system) it and every process it waited for used."""
    global LAST_CPU
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, **kw)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return started, wall, done


LAST_CPU = 0.0


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def headless_run(tmp: Path) -> dict[str, Any]:
    out = tmp / "headless"
    cmd = [str(BIN / "carts-runbook"), "run", "--params", str(PARAMS), "--out", str(out)]
    started, wall, done = timed(cmd)
    if done.returncode != 0:
        raise RuntimeError(f"carts-runbook run failed:\n{done.stderr[-2000:]}")
    run = latest_run(out) or out
    record = json.loads((run / "fix-iam-permissions.record.json").read_text())
    nb = json.loads((run / "fix-iam-permissions.ipynb").read_text())
    cells = {
        tag[5:]: c["metadata"]["papermill"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for tag in c["metadata"].get("tags", [])
        if tag.startswith("step:")
    }
    first_cell = min(iso(c["metadata"]["papermill"]["start_time"]) for c in nb["cells"])
    watch = record["steps"]["watch"]
    written_at = record["steps"]["apply"]["written_at"]
    return {
        "wall_s": wall,
        "cpu_s": LAST_CPU,
        "to_first_cell_s": first_cell - started,
        "to_connected_s": iso(cells["connect"]["end_time"]) - started,
        "connect_cell_s": cells["connect"]["duration"],
        "put_to_report_s": iso(cells["watch"]["end_time"]) - written_at,
        "watch_s": watch["elapsed_s"],
        "watch_polls": watch["polls"],
        "aws_calls": record["aws_calls"],
        "aws_call_count": record["aws_call_count"],
    }


def bare_run(tmp: Path, *extra: str) -> dict[str, Any]:
    figures = tmp / "bare.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bare_run.py"),
        "--params",
        str(PARAMS),
        "--out",
        str(tmp / "bare"),
        "--json",
        str(figures),
        "--quiet",
        *extra,
    ]
    _, wall, done = timed(cmd)
    if done.returncode != 0:
        raise RuntimeError(f"bare_run.py failed:\n{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(figures.read_text())
    data["wall_s"] = wall
    data["cpu_s"] = LAST_CPU
    return data


def snippet(code: str) -> tuple[float, dict[str, Any]]:
    _, wall, done = timed([sys.executable, "-c", code])
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, data


# --- figures ----------------------------------------------------------------------------------


def spread(values: list[float], unit: str = "s", digits: int = 2) -> tuple[str, str]:
    med = statistics.median(values)
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(med)} {unit}", f"{fmt.format(min(values))} to {fmt.format(max(values))}"


def table(title: str, rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores (nproc), CPU {model}; "
        f"Python {platform.python_version()}; load average at start {load}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--with-suite", action="store_true", help="also time `make test` (~2 min)")
    ap.add_argument("--no-long-watch", action="store_true", help="skip the ~70 s long watches")
    ap.add_argument("--json", help="write every raw figure to this file")
    args = ap.parse_args()

    print(f"Machine: {machine()}\n", flush=True)
    raw: dict[str, Any] = {"headless": [], "bare": [], "import_aws": [], "lab": []}
    bench_t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="carts-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print("warm-up round (not counted) ...", file=sys.stderr, flush=True)
        for kind, measure in (("headless", headless_run), ("bare", bare_run)):
            (tmp / f"warm-{kind}").mkdir()
            measure(tmp / f"warm-{kind}")
        raw["load"] = []
        for i in range(args.rounds):
            raw["load"].append(os.getloadavg()[0])
            order = ("headless", "bare") if i % 2 == 0 else ("bare", "headless")
            for kind in order:
                run_dir = tmp / f"{kind}-{i}"
                run_dir.mkdir()
                raw[kind].append(headless_run(run_dir) if kind == "headless" else bare_run(run_dir))
            raw["import_aws"].append(snippet(IMPORT_AWS))
            raw["lab"].append(snippet(START_LAB))
            h, b = raw["headless"][-1], raw["bare"][-1]
            print(
                f"round {i + 1}/{args.rounds}: headless {h['wall_s']:.2f} s "
                f"({h['cpu_s']:.2f} s CPU), bare {b['wall_s']:.2f} s ({b['cpu_s']:.2f} s CPU), "
                f"load {raw['load'][-1]:.2f}",
                file=sys.stderr,
                flush=True,
            )
        long: dict[str, dict[str, Any]] = {}
        if not args.no_long_watch:
            print("long watches (about 70 s, side by side) ...", file=sys.stderr, flush=True)
            with ThreadPoolExecutor(len(LONG_WATCHES)) as pool:
                futures = {}
                for n, (name, extra) in enumerate(LONG_WATCHES.items()):
                    run_dir = tmp / f"long-{n}"
                    run_dir.mkdir()
                    futures[name] = pool.submit(bare_run, run_dir, *extra)
                long = {name: f.result() for name, f in futures.items()}
        raw["long"] = long
        suite: tuple[float, int] | None = None
        if args.with_suite:
            print("make test ...", file=sys.stderr, flush=True)
            _, wall, done = timed(["make", "test"])
            suite = (wall, done.returncode)
            raw["suite"] = {"wall_s": wall, "returncode": done.returncode}
    raw["bench_s"] = time.perf_counter() - bench_t0

    print(report(raw, suite))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2, default=str) + "\n")
    return 0


def report(raw: dict[str, Any], suite: tuple[float, int] | None) -> str:
    H, B = raw["headless"], raw["bare"]
    n = len(H)
    out: list[str] = []
    head = ("figure", "median", "spread (min to max)", "target")

    # 1. headless overhead
    ratios = [h["wall_s"] / b["wall_s"] for h, b in zip(H, B, strict=True)]
    med_ratio = statistics.median(h["wall_s"] for h in H) / statistics.median(
        b["wall_s"] for b in B
    )
    cpu_ratios = [h["cpu_s"] / b["cpu_s"] for h, b in zip(H, B, strict=True)]
    cpu_ratio = statistics.median(h["cpu_s"] for h in H) / statistics.median(b["cpu_s"] for b in B)
    rows = [
        ("`carts-runbook run` (whole process)", *spread([h["wall_s"] for h in H]), "< 10 s"),
        ("`bare_run.py` (same steps, one process)", *spread([b["wall_s"] for b in B]), ""),
        (
            "ratio of the medians (per-round ratios)",
            f"{med_ratio:.2f}x",
            f"{min(ratios):.2f}x to {max(ratios):.2f}x",
            "<= 1.4x",
        ),
        (
            "CPU, `carts-runbook run` (user + system, with its kernel)",
            *spread([h["cpu_s"] for h in H]),
            "",
        ),
        ("CPU, `bare_run.py`", *spread([b["cpu_s"] for b in B]), ""),
        (
            "CPU ratio of the medians (per-round ratios)",
            f"{cpu_ratio:.2f}x",
            f"{min(cpu_ratios):.2f}x to {max(cpu_ratios):.2f}x",
            "",
        ),
    ]
    load = raw.get("load") or [0.0]
    out.append(
        table(f"1. Headless overhead ({n} rounds, alternating, after a warm-up)", rows, head)
        + f"\nLoad average (1 min) at the start of each round: {min(load):.2f} to "
        f"{max(load):.2f}.\n"
    )

    # 2. reaction
    def bare(key: str) -> list[float]:
        return [b[key] for b in B if b.get(key) is not None]

    intervals = [x for b in B for x in b.get("poll_intervals_s", [])]
    rows = [
        (
            "lab marks the task HEALTHY -> watch reports (bare)",
            *spread(bare("healthy_to_report_s")),
        ),
        (
            "lab marks the task RUNNING -> watch reports (bare)",
            *spread(bare("running_to_report_s")),
        ),
        ("put_role_policy -> watch reports (bare)", *spread(bare("put_to_report_s"))),
        (
            "put_role_policy -> lab marks HEALTHY (the lab's own pace)",
            *spread(bare("put_to_healthy_s")),
        ),
        (
            "put_role_policy -> watch cell done (headless)",
            *spread([h["put_to_report_s"] for h in H]),
        ),
        ("watch polls per run (headless)", *spread([h["watch_polls"] for h in H], "", 0)),
    ]
    if intervals:
        rows.append(("polling interval in these runs", *spread(intervals)))
    out.append(
        table(
            "2. Reaction (embedded lab, time scale 0.005)",
            [(*r, "<= one interval (<= 2 s)" if "HEALTHY -> watch" in r[0] else "") for r in rows],
            head,
        )
    )

    # 3. API cost
    calls = B[0]["aws_calls"]
    totals = [sum(r["aws_calls"].values()) for r in [*H, *B]]
    same_ops = all(set(r["aws_calls"]) == set(calls) for r in [*H, *B])
    inside = B[0].get("watch_calls", {})
    rows3 = [
        (op, str(count), str(inside.get(op, 0)), str(count - inside.get(op, 0)))
        for op, count in sorted(calls.items())
    ]
    total_in = sum(inside.values())
    rows3.append(
        (
            "**total**",
            f"**{sum(calls.values())}**",
            f"**{total_in}**",
            f"**{sum(calls.values()) - total_in}**",
        )
    )
    text = table(
        "3. API cost per run (lab run; outside-the-watch target <= 30)",
        rows3,
        ("operation", "calls per run", "inside the watch loop", "outside it"),
    )
    text += (
        f"\nThe first bare run (its calls are timed, so split at the watch step). Calls per run "
        f"over all {len(totals)} runs, headless (the record's `aws_calls`) and bare: "
        f"{min(totals)} to {max(totals)}; the same operations in every run: "
        f"{'yes' if same_ops else 'no'}. (`describe_tasks` varies by one: the apply step "
        "describes the service's tasks only if one is starting at the write.)\n"
    )
    out.append(text)
    long = raw.get("long", {})
    if long:
        rows = []
        for name, d in long.items():
            minutes = d["watch_s"] / 60
            iv = d.get("poll_intervals_s", [])
            steady = iv[2:] or iv
            ops = ", ".join(f"{op.split(':')[1]} {c}" for op, c in sorted(d["watch_calls"].items()))
            rows.append(
                (
                    name,
                    f"{d['watch_s']:.1f} s",
                    f"{d['watch_call_count']} ({ops})",
                    f"{d['watch_call_count'] / minutes:.1f}",
                    f"{60 / statistics.median(steady):.1f}" if steady else "-",
                    f"{min(iv):.2f} / {statistics.median(iv):.2f} / {max(iv):.2f} s" if iv else "-",
                    f"{d['healthy_to_report_s']:.2f} s" if d.get("healthy_to_report_s") else "-",
                )
            )
        out.append(
            table(
                "3b. A watch that lasts (bare run, once each; target <= 30 calls per minute)",
                rows,
                (
                    "lab",
                    "watch",
                    "calls inside the loop",
                    "calls per minute (whole watch)",
                    "polls per minute (steady)",
                    "interval min / median / max",
                    "HEALTHY -> report",
                ),
            )
        )

    # 4. start-up
    aws = raw["import_aws"]
    leaked = sorted({m for _, d in aws for m in LAB_MODULES if d[m]})
    lab = raw["lab"]
    rows = [
        (
            "`import runbook_lib, runbook_lib.runbook, runbook_lib.session` (aws backend)",
            *spread([d["import_s"] * 1000 for _, d in aws], "ms", 0),
            "moto, Flask not imported: "
            + ("**FAILED: " + ", ".join(leaked) + "**" if leaked else "yes"),
        ),
        ("  the same, whole `python -c` process", *spread([w for w, _ in aws]), ""),
        ("`import runbook_lib.lab`", *spread([d["import_s"] * 1000 for _, d in lab], "ms", 0), ""),
        (
            "`Lab.start()` (seeded, scheduler running, history played)",
            *spread([d["start_s"] for _, d in lab]),
            "",
        ),
        (
            "  to the lab's first STS answer, from the import",
            *spread([d["first_answer_s"] for _, d in lab]),
            "",
        ),
        (
            "headless: command start -> the notebook's first cell runs",
            *spread([h["to_first_cell_s"] for h in H]),
            "",
        ),
        (
            "headless: command start -> connect done (lab up, first AWS calls)",
            *spread([h["to_connected_s"] for h in H]),
            "",
        ),
        ("bare: process start -> first AWS call", *spread(bare("process_to_first_call_s")), ""),
    ]
    out.append(table("4. Start-up", rows, head))

    if suite is not None:
        wall, code = suite
        out.append(
            table(
                "5. Suite",
                [("`make test` (lint, types, all tests)", f"{wall:.0f} s", f"exit {code}", "")],
                head,
            )
        )
    out.append(f"Benchmark wall time: {raw['bench_s']:.0f} s.\n")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
