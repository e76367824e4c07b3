"""Rows of ``make reliability`` for safe writes in a shared account.

Each row runs the runbook's steps in this process (``Runbook``, as the notebook's cells call them)
against a lab on loopback whose clock stands still until the run waits, with another writer
staged where the row says, and counts the IAM writes the lab saw (``Lab.iam_writes``: every
mutating IAM call through its HTTP layer, the other writer's included).

- compare-and-swap: a put between plan and apply, another writer right after the write;
- rollback only what is still ours; cells run out of order; summary keeps a failure;
- a FAILED ECS deployment's second, gated write;
- the races of ``tests/races.py`` (seeded interleavings of real requests) and the width of the
  read-to-write window that IAM, having no conditional write, leaves open;
- the real CLI stopped (Ctrl-C, SIGKILL) as each step starts, then run again with rollback: true
  (a lab on the wall clock there: the CLI is another process).
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import (  # noqa: E402
    Clients,
    allow,
    cell_text,
    in_process_run,
    policy,
    run_cli,
    through_checks,
)
from interrupts import records, recovery_problems, stop_at  # noqa: E402
from races import race_direct, race_runbooks  # noqa: E402

from runbook_lib.errors import PlanOutOfDate, RunbookError, StepOrder  # noqa: E402
from runbook_lib.lab import Lab, LabConfig  # noqa: E402
from runbook_lib.params import Params  # noqa: E402
from runbook_lib.permissions import STEPS  # noqa: E402
from runbook_lib.runbook import Runbook  # noqa: E402
from runbook_lib.writes import read_policy, same_state  # noqa: E402

ROLE = Params().task_role
POLICY = Params().policy_name
THEIRS = policy(allow("s3:GetObject", "arn:aws:s3:::carts-assets/*"))
RACE_ROUNDS = 20
WINDOW_SAMPLES = 20


@dataclass
class Row:
    name: str
    expected: str
    observed: str
    writes: int
    handled: bool
    refused: bool  # the run had to stop before writing


class Cases:
    def __init__(self, lab: Lab, workdir: Path, add: Callable[[Row], None]) -> None:
        self.lab = lab
        self.workdir = workdir
        self.add = add
        self.aws = Clients(lab.endpoint_url, lab=lab)
        self.count = 0

    def run(self, **values: Any) -> Runbook:
        """A run on a freshly reset lab, in an output folder of its own."""
        self.lab.reset()
        self.count += 1
        run: Runbook = in_process_run(self.lab, self.workdir / f"case-{self.count}", **values)
        return run

    def theirs(self) -> None:
        self.aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)

    def holds_theirs(self) -> bool:
        return same_state(read_policy(self.aws.iam, ROLE, POLICY), json.loads(THEIRS))

    @contextmanager
    def after_call(self, run: Runbook, event: str, action: Callable[..., None]) -> Iterator[None]:
        iam = run.connection.client("iam")
        iam.meta.events.register_first(event, action)
        try:
            yield
        finally:
            iam.meta.events.unregister(event, action)

    # --- compare-and-swap -------------------------------------------------------------------

    def put_between_plan_and_apply(self) -> None:
        run = through_checks(self.run())
        run.plan()
        self.theirs()
        try:
            run.apply()
            observed, handled = "applied over it", False
        except PlanOutOfDate as exc:
            observed = str(exc)
            handled = self.holds_theirs() and self.lab.iam_writes == ["PutRolePolicy"]
        self.add(
            Row(
                "put-role-policy typed between plan and apply",
                "nothing written; new diff; re-plan",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def writer_right_after(self) -> None:
        run = through_checks(self.run())
        run.plan()
        with self.after_call(run, "after-call.iam.PutRolePolicy", lambda **_: self.theirs()):
            try:
                run.apply()
                observed, handled = "reported written", False
            except RunbookError as exc:
                observed = str(exc)
                w = run.record.data["writes"][0]
                handled = (
                    w["state"] == "superseded"
                    and same_state(w["found"]["document"], json.loads(THEIRS))
                    and w["after"]["exists"]
                )
        self.add(
            Row(
                "another writer's put right after the runbook's",
                "says another writer won; both documents on record",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    # --- rollback, order, summary -------------------------------------------------------------

    def foreign_rollback(self) -> None:
        run = through_checks(self.run(rollback=True))
        run.plan()
        run.apply()
        self.theirs()
        try:
            run.rollback()
            observed, handled = "rolled back", False
        except RunbookError as exc:
            observed = str(exc)
            found = run.record.data["steps"]["rollback"].get("found", {})
            handled = self.holds_theirs() and same_state(found.get("document"), json.loads(THEIRS))
        self.add(
            Row(
                "rollback: true after someone else's put",
                "refused in one sentence; IAM left alone; document on record",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def out_of_order(self, name: str, steps: list[str], call: str, phrase: str) -> None:
        run = self.run(rollback=True)
        for step in steps:
            getattr(run, step)()
        try:
            getattr(run, call)()
            observed, handled = "ran", False
        except StepOrder as exc:
            observed = str(exc)
            handled = phrase in observed and "\n" not in observed and self.lab.iam_writes == []
        self.add(
            Row(
                name,
                "one sentence naming the cell; nothing written",
                observed,
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    def rollback_twice(self) -> None:
        run = through_checks(self.run(rollback=True))
        run.plan()
        run.apply()
        run.rollback()
        before = len(self.lab.iam_writes)
        try:
            run.rollback()
            observed, handled = "rolled back again", False
        except StepOrder as exc:
            observed = str(exc)
            handled = len(self.lab.iam_writes) == before
        self.add(
            Row(
                "rollback run twice",
                "one sentence naming the cell; nothing written",
                observed,
                len(self.lab.iam_writes) - before,
                handled,
                True,
            )
        )

    def summary_after_failed_watch(self) -> None:
        run = through_checks(self.run(timeout_s=60))
        self.lab.set_faults(propagation_delay_s=900)
        run.plan()
        run.apply()
        with suppress(RunbookError):
            run.watch()
        data = run.summary().data
        self.lab.set_faults(propagation_delay_s=0.0)
        self.add(
            Row(
                "summary after a watch that failed after the write",
                "outcome stays failed (step watch, undo kept)",
                f"outcome {data['outcome']}, failed step {data['failed_step']}, undo {data['undo']}",
                len(self.lab.iam_writes),
                data["outcome"] == "failed"
                and data["failed_step"] == "watch"
                and bool(data["undo"]),
                False,
            )
        )

    # --- a FAILED deployment ------------------------------------------------------------------

    def failed_deployment(self, apply: bool) -> None:
        self.lab.reset()
        # The lab's circuit-breaker scenario, set up on this lab through ECS's API: the lab fails
        # the deployment after AWS's threshold of failed tasks (AWS-FACTS.md section 1).
        from runbook_lib.lab.scenarios import Api, circuit_breaker

        lab = self.lab
        circuit_breaker(Api(lab.endpoint_url, lab.region, lab.params, self.aws.wait))
        failed = str(self._primary()["id"])
        self.count += 1
        run: Runbook = in_process_run(self.lab, self.workdir / f"case-{self.count}", apply=apply)
        through_checks(run)
        planned = run.plan()
        run.apply()
        primary = self._primary()
        listed = [w.kind for w in planned.writes] == ["iam-policy", "ecs-deployment"]
        if apply:
            deploy = run.record.data["writes"][1]
            handled = listed and primary["id"] != failed and deploy["state"] == "written"
            observed = f"planned {', '.join(w.kind for w in planned.writes)}; {deploy['state']}: "
            observed += f"{primary['id']} {primary['rolloutState']}; undo: {deploy['undo_note']}"
        else:
            handled = listed and primary["id"] == failed and self.lab.iam_writes == []
            observed = f"planned {', '.join(w.kind for w in planned.writes)}; nothing sent"
        self.add(
            Row(
                f"deployment FAILED (circuit breaker), apply: {str(apply).lower()}",
                "update-service --force-new-deployment planned"
                + ("; sent after the policy" if apply else "; not sent"),
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def _primary(self) -> dict[str, Any]:
        found: dict[str, Any] = next(
            d for d in self.aws.service()["deployments"] if d["status"] == "PRIMARY"
        )
        return found

    def stale_reads(self) -> None:
        run = through_checks(self.run(rollback=True))
        self.lab.set_faults(stale_reads_s=10.0)
        run.plan()
        run.apply()
        result = run.rollback()
        data = run.summary().data
        self.add(
            Row(
                "IAM reads stale for 10 s after a write (apply, then rollback at once)",
                "read back, rollback's checks and summary wait it out; rolled back",
                f"write {data['writes'][0]['state']}; {str(result).rstrip('.')}; outcome {data['outcome']}",
                len(self.lab.iam_writes),
                data["outcome"] == "rolled back" and data["iam_now"]["as_expected"] is True,
                False,
            )
        )

    # --- races and the window -----------------------------------------------------------------

    def races(self) -> None:
        for name, race in (
            ("runbook vs a direct put-role-policy at a random point", race_direct),
            ("two runbooks, workshop and least-privilege scopes", race_runbooks),
        ):
            t0 = time.monotonic()
            tally = race(self.lab, self.aws, self.workdir, RACE_ROUNDS)
            self.add(
                Row(
                    f"races: {name} ({RACE_ROUNDS} seeded interleavings)",
                    "0 lost updates, 0 false successes",
                    f"{tally.line()}; {time.monotonic() - t0:.0f} s",
                    tally.writes,
                    tally.lost_updates == 0 and tally.false_successes == 0,
                    False,
                )
            )

    def window(self) -> None:
        """The width of the read-to-write window over several applies, as the lab saw it: from
        its answer to the check's GetRolePolicy to its applying the PutRolePolicy (each noted as
        the lab finishes the request, under the lock its backends share)."""
        seen: list[tuple[str, float]] = []
        after_request = self.lab.after_request

        def noting(service: str, operation: str) -> None:
            seen.append((operation, time.perf_counter()))
            after_request(service, operation)

        widths = []
        writes = 0
        for _ in range(WINDOW_SAMPLES):
            run = through_checks(self.run())
            run.plan()
            seen.clear()
            self.lab.after_request = noting  # type: ignore[method-assign]
            try:
                run.apply()
            finally:
                self.lab.after_request = after_request  # type: ignore[method-assign]
            writes += len(self.lab.iam_writes)
            put = next(i for i, (op, _) in enumerate(seen) if op == "PutRolePolicy")
            check = max(i for i, (op, _) in enumerate(seen[:put]) if op == "GetRolePolicy")
            widths.append((seen[put][1] - seen[check][1]) * 1000)
        self.window_ms = (statistics.median(widths), max(widths))
        self.add(
            Row(
                "read-to-write window (IAM has no conditional write)",
                "one request round trip, measured",
                f"median {self.window_ms[0]:.1f} ms, at most {self.window_ms[1]:.1f} ms from the "
                f"lab's answer to the check to its applying the put, over {WINDOW_SAMPLES} applies "
                "on loopback",
                writes,
                True,
                False,
            )
        )


def interruptions(add: Callable[[Row], None], workdir: Path) -> None:
    """For each signal, the CLI stopped as each step's cell starts, then a rerun."""
    import signal

    with Lab.start(Params(), LabConfig(time_scale=0.005)) as lab:
        aws = Clients(lab.endpoint_url)
        for sig in (signal.SIGINT, signal.SIGKILL):
            t0 = time.monotonic()
            good, problems, writes = 0, [], 0
            for step in STEPS:
                lab.reset()
                aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
                out = workdir / f"{sig.name}-{step}"
                stop_at(out, lab, step, sig)
                stopped = (records(out) or [{}])[0]
                proc, rerun = run_cli(out, f"endpoint_url={lab.endpoint_url}", "rollback=true")
                now = read_policy(aws.iam, ROLE, POLICY)
                found = recovery_problems(
                    out, THEIRS, stopped, rerun, cell_text(out, "connect"), now, proc.stdout
                )
                writes += len(lab.iam_writes) - 1  # not the staged original
                good += not found
                problems += [f"{step}: {p}" for p in found]
            add(
                Row(
                    f"the CLI stopped by {sig.name} as each of the {len(STEPS)} steps starts, "
                    "then run again with rollback: true",
                    "the original in a record under out/; the rerun names it; restored",
                    f"{good} of {len(STEPS)} as expected"
                    + (f"; {'; '.join(problems)}" if problems else "")
                    + f"; {time.monotonic() - t0:.0f} s",
                    writes,
                    good == len(STEPS),
                    False,
                )
            )


def safe_write_rows(add: Callable[[Row], None]) -> None:
    """Run every case; each adds its row through ``add``."""
    from runbook_lib.lab.moto_patches import shared_botocore_loader

    config = LabConfig(time_scale=0.005, clock="stepped", seed=12)
    with (
        tempfile.TemporaryDirectory(prefix="safe-writes-") as tmp,
        Lab.start(Params(), config) as lab,
        shared_botocore_loader(),
        redirect_stdout(io.StringIO()),  # what the steps show; the table goes to stdout
    ):
        c = Cases(lab, Path(tmp), add)
        c.put_between_plan_and_apply()
        c.writer_right_after()
        c.foreign_rollback()
        c.out_of_order("apply right after connect", ["connect"], "apply", "run the diagnose cell")
        c.out_of_order(
            "apply before preflight",
            ["connect", "diagnose", "render_policy", "lint"],
            "apply",
            "run the preflight cell",
        )
        c.out_of_order("rollback before plan", ["connect"], "rollback", "run the plan cell")
        c.rollback_twice()
        c.summary_after_failed_watch()
        c.stale_reads()
        c.failed_deployment(apply=False)
        c.failed_deployment(apply=True)
        c.window()
        c.races()
    with tempfile.TemporaryDirectory(prefix="stopped-") as tmp:
        interruptions(add, Path(tmp))


if __name__ == "__main__":
    safe_write_rows(
        lambda r: print(f"{r.name}: {'ok' if r.handled else 'NOT HANDLED'}: {r.observed}")
    )
