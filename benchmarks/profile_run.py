"""Where the CPU of a headless run goes, part by part (a profile, not a test).

``make bench`` compares ``carts-runbook run`` with ``benchmarks/bare_run.py`` as wholes; this
splits the headless run's CPU into its parts, each measured in processes of its own, with the
start-up speed-ups on and off (``RUNBOOK_SPEEDUPS``), so that a change can be put against the part
it should cut. CPU is user + system seconds; each figure is the median of ``--rounds``.

- the whole runs: ``bare_run.py``; ``carts-runbook run`` split into the command's own process
  and its kernel (the kernel is the command's child: ``RUSAGE_CHILDREN`` once it has exited);
- the command's imports: jupyter_client, papermill (and nbformat, nbclient, jsonschema), nbconvert;
- the kernel's start: launch until it answers ``kernel_info`` (from ``/proc/<pid>/stat``);
- the HTML: nbconvert's exporter and its first rendering (the warm-up), then the rendering of an
  executed notebook.

    .venv/bin/python benchmarks/profile_run.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WHOLE_CLI = """
import resource, sys, json
from runbook_lib.cli import main
code = main(["run", "--out", sys.argv[1], "--params", sys.argv[2]])
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"command": me.ru_utime + me.ru_stime, "kernel": kids.ru_utime + kids.ru_stime,
                  "code": code}))
"""

IMPORTS = """
import json, time
from runbook_lib import speedups
t = time.process_time()
import jupyter_client.asynchronous.client, jupyter_client.manager
t1 = time.process_time()
speedups.import_papermill()
t2 = time.process_time()
import nbconvert
t3 = time.process_time()
print(json.dumps({"jupyter_client": t1 - t, "papermill": t2 - t1, "nbconvert": t3 - t2}))
"""

KERNEL_START = """
import json, os, sys, tempfile
from pathlib import Path
from jupyter_core.utils import run_sync
from runbook_lib.kernel import Kernel
kernel = Kernel(Path(tempfile.mkdtemp()))
client = kernel.manager.client()
client.start_channels()
run_sync(client.wait_for_ready)(timeout=120)
fields = Path(f"/proc/{kernel.pid}/stat").read_text().rsplit(")", 1)[1].split()
ticks = os.sysconf("SC_CLK_TCK")
cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
kernel.shut_down()
print(json.dumps({"kernel_start": cpu}))
"""

HTML = """
import json, sys, time
import nbformat
t = time.process_time()
from runbook_lib.cli import _html_exporter, _warm_up_notebook
exporter = _html_exporter()
exporter.from_notebook_node(_warm_up_notebook())
t1 = time.process_time()
exporter.from_notebook_node(nbformat.read(sys.argv[1], as_version=4))
t2 = time.process_time()
print(json.dumps({"html_warm_up": t1 - t, "html_render": t2 - t1}))
"""


def run(args: list[str], speedups: bool) -> dict[str, float]:
    env = {**os.environ, "RUNBOOK_SPEEDUPS": "1" if speedups else "0"}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def bare(tmp: Path) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "benchmarks/bare_run.py", "--quiet", "--out", str(tmp / "bare")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    params = str(ROOT / "params" / "lab.yaml")
    figures: dict[tuple[str, bool], list[float]] = {}

    def add(values: dict[str, float], on: bool) -> None:
        for key, value in values.items():
            figures.setdefault((key, on), []).append(float(value))

    with tempfile.TemporaryDirectory(prefix="carts-profile-") as tmp_name:
        tmp = Path(tmp_name)
        for i in range(args.rounds):
            for on in (True, False):
                out = tmp / f"run-{i}-{on}"
                whole = run(["-c", WHOLE_CLI, str(out), params], on)
                add({"command": whole["command"], "kernel": whole["kernel"]}, on)
                add(run(["-c", IMPORTS], on), on)
                add(run(["-c", KERNEL_START], on), on)
                executed = next(out.glob("*/fix-iam-permissions.ipynb"))
                add(run(["-c", HTML, str(executed)], on), on)
            figures.setdefault(("bare", True), []).append(bare(tmp))
            print(f"round {i + 1}/{args.rounds}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    def med(key: str, on: bool) -> str:
        values = figures.get((key, on))
        return f"{statistics.median(values):.2f}" if values else "-"

    rows = [
        ("`bare_run.py`, whole process (lab, steps, text)", "bare"),
        ("`carts-runbook run`: the command's own process", "command"),
        ("`carts-runbook run`: its kernel (lab, steps, text and HTML of each result)", "kernel"),
        ("  command: import jupyter_client", "jupyter_client"),
        ("  command: import papermill (nbformat, nbclient, jsonschema)", "papermill"),
        ("  command: import nbconvert", "nbconvert"),
        ("  command: HTML exporter and its first rendering (warm-up)", "html_warm_up"),
        ("  command: HTML of the executed notebook", "html_render"),
        ("  kernel: start, until it answers kernel_info", "kernel_start"),
    ]
    print(f"CPU seconds (user + system), median of {args.rounds} rounds\n")
    print("| part | speed-ups on | speed-ups off |")
    print("|---|---:|---:|")
    for label, key in rows:
        print(f"| {label} | {med(key, True)} | {med(key, False) if key != 'bare' else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
