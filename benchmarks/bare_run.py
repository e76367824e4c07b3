"""The runbook's library steps in one plain Python process: no kernel, no notebook, no papermill.

This is the floor ``make bench`` compares ``carts-runbook run`` against: the same
:class:`runbook_lib.runbook.Runbook` methods the notebook's cells call, in the same order, against
the same kind of lab (started by ``connect`` when ``endpoint_url`` is empty), each result rendered
as the text a headless log shows (and printed, unless ``--quiet``).

It also measures what only a process that holds the lab can see: when the lab marked the task
the watch reports RUNNING and HEALTHY, when ``put_role_policy`` was sent, when the watch step
reported, and the time of every AWS call (hence the polling intervals)::

    .venv/bin/python benchmarks/bare_run.py --params params/lab.yaml --out /tmp/bare
    .venv/bin/python benchmarks/bare_run.py --time-scale 1.0 --json figures.json   # a long watch

``--time-scale`` or ``--propagation-delay-s`` start a lab with that configuration here and give
the runbook its address (``endpoint_url``), as a learner with a standalone lab would.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

T_START = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
#: What the watch loop calls (the rest of the run calls other operations, or these once).
STEPS = (
    "parameters",
    "connect",
    "diagnose",
    "render_policy",
    "lint",
    "preflight",
    "check_trust",
    "plan",
    "apply",
    "watch",
    "verify",
    "rollback",
    "summary",
)


class CallLog:
    """Every AWS call the runbook's connection makes, with its time (monotonic seconds)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def install(self) -> None:
        from runbook_lib.session import Connection

        counted = Connection._count
        log = self

        def count(conn: Any, model: Any, **kw: Any) -> None:
            log.calls.append((time.monotonic(), f"{model.service_model.service_name}:{model.name}"))
            counted(conn, model, **kw)

        Connection._count = count  # type: ignore[method-assign]

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        return [(t, op) for t, op in self.calls if start <= t <= end]


class LabMarks:
    """When the lab's scheduler heard that a task went RUNNING and HEALTHY (monotonic)."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.healthy: dict[str, float] = {}

    def install(self, lab: Any) -> None:
        scheduler = lab.scheduler
        on_running, on_healthy = scheduler.task_running, scheduler.task_healthy

        def task_running(task: Any) -> None:
            self.running.setdefault(task.arn, time.monotonic())
            on_running(task)

        def task_healthy(task: Any) -> None:
            self.healthy.setdefault(task.arn, time.monotonic())
            on_healthy(task)

        # The task runner calls its listener through the instance: these wrap this lab only.
        scheduler.task_running = task_running
        scheduler.task_healthy = task_healthy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params" / "lab.yaml"))
    ap.add_argument("--out", default=None, help="folder for the record (default: a temp folder)")
    ap.add_argument("--json", default=None, help="write the measured figures to this file")
    ap.add_argument("--time-scale", type=float, default=None)
    ap.add_argument("--propagation-delay-s", type=float, default=None)
    ap.add_argument("--quiet", action="store_true", help="render the results, do not print them")
    args = ap.parse_args(argv)

    import tempfile

    from runbook_lib.params import Params, load_params_file
    from runbook_lib.record import RunRecord
    from runbook_lib.runbook import Runbook

    t_imported = time.monotonic()
    calls = CallLog()
    calls.install()
    values = load_params_file(args.params)
    own_lab = None
    if args.time_scale is not None or args.propagation_delay_s is not None:
        from runbook_lib.lab import Lab, LabConfig

        config = LabConfig(
            time_scale=args.time_scale if args.time_scale is not None else LabConfig.time_scale,
            propagation_delay_s=args.propagation_delay_s or 0.0,
        )
        own_lab = Lab.start(Params.from_mapping(values), config)
        values["endpoint_url"] = own_lab.endpoint_url
    params = Params.from_mapping(values, source=args.params)
    out = Path(args.out or tempfile.mkdtemp(prefix="bare-run-"))
    run = Runbook(params, RunRecord.create(out / "fix-iam-permissions.record.json"))
    marks = LabMarks()
    times: dict[str, tuple[float, float]] = {}
    try:
        for step in STEPS:
            t0 = time.monotonic()
            result = getattr(run, step)()
            times[step] = (t0, time.monotonic())
            if step == "connect":
                lab = own_lab or run.connection.lab
                if lab is not None:
                    marks.install(lab)
            # What a headless log shows of each result (the notebook also renders its HTML).
            text = str(result)
            if not args.quiet:
                print(f"--- {step}\n{text}", flush=True)
    finally:
        run.close()
        if own_lab is not None:
            own_lab.stop()
    t_end = time.monotonic()

    watch = run.watch_result
    figures: dict[str, Any] = {
        "process_to_imported_s": t_imported - T_START,
        "process_to_first_call_s": calls.calls[0][0] - T_START if calls.calls else None,
        "process_s": t_end - T_START,
        "steps_s": {k: b - a for k, (a, b) in times.items()},
        "aws_calls": dict(sorted(run.connection.calls.items())) if run.connected else {},
    }
    if watch is not None and watch.task is not None and "watch" in times:
        w0, w1 = times["watch"]
        arn = watch.task["taskArn"]
        puts = [t for t, op in calls.calls if op == "iam:PutRolePolicy"]
        inside = calls.between(w0, w1)
        polls = [t for t, op in inside if op in ("ecs:DescribeTasks", "ecs:ListTasks")]
        # A poll is one pass of the loop: its first call; the next pass starts one interval later.
        starts = [polls[0]] if polls else []
        for t in polls[1:]:
            if t - starts[-1] > 0.1:
                starts.append(t)
        by_op: dict[str, int] = {}
        for _, op in inside:
            by_op[op] = by_op.get(op, 0) + 1
        figures.update(
            watch_s=w1 - w0,
            watch_polls=watch.polls,
            healthy_to_report_s=w1 - marks.healthy[arn] if arn in marks.healthy else None,
            running_to_report_s=w1 - marks.running[arn] if arn in marks.running else None,
            put_to_report_s=w1 - puts[-1] if puts else None,
            put_to_healthy_s=marks.healthy[arn] - puts[-1]
            if puts and arn in marks.healthy
            else None,
            watch_calls=by_op,
            watch_call_count=len(inside),
            outside_call_count=len(calls.calls) - len(inside),
            poll_intervals_s=[round(b - a, 3) for a, b in itertools.pairwise(starts)],
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"bare run: {figures['process_s']:.2f} s, outcome {run.record.data.get('outcome')}",
        file=sys.stderr,
    )
    return 0 if run.record.data.get("outcome", "").startswith("fixed") else 1


if __name__ == "__main__":
    sys.exit(main())
