"""``make scenarios``: the runbook against each situation of a real account the lab plays.

For every scenario of :data:`runbook_lib.lab.scenarios.SCENARIOS` a lab is served on loopback in
that scenario (wall clock, answers held to botocore's shapes), a real ``carts-runbook run`` is
pointed at it (``-p endpoint_url=...``, plus the scenario's own parameters), and one row says:
the account, what the runbook must do (issue "Real accounts", "The runbook handles each"), what
it did (exit, outcome or failed step, cause), and the IAM and ECS writes the lab saw. A row is
handled when the run did what the issue asks and the lab answered nothing AWS could not send.
The last line is ``N scenarios, M handled``.

    .venv/bin/python benchmarks/scenarios.py [--only NAME ...] [--time-scale X]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEM = "fix-iam-permissions"
#: Real seconds per simulated second: a carts task fails and is replaced about every 0.5 s.
TIME_SCALE = 0.02
#: The runbook's watch waits at most this long (real seconds) in a row.
WATCH_TIMEOUT_S = 90


@dataclass
class Run:
    """One ``carts-runbook run`` against a lab in a scenario, and what the lab saw."""

    exit: int
    stdout: str
    stderr: str
    record: dict[str, Any]
    iam_writes: list[str]
    ecs_writes: list[str]
    shape_errors: list[str]
    seconds: float
    policies: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return str(self.record.get("outcome") or "")

    @property
    def failed_step(self) -> str | None:
        step = self.record.get("failed_step")
        return str(step) if step else None

    @property
    def cause(self) -> str:
        return str((self.record.get("steps", {}).get("diagnose") or {}).get("cause") or "-")

    @property
    def fixed(self) -> bool:
        return self.exit == 0 and self.failed_step is None and self.outcome.startswith("fixed")

    def said(self) -> str:
        """What the run said, in one line."""
        if self.failed_step:
            line = next(
                (ln for ln in self.stderr.splitlines() if "FAILED at step" in ln),
                (self.record.get("error") or "").splitlines()[0:1] or [""],
            )
            text = line if isinstance(line, str) else line[0]
            return f"exit {self.exit}, {self.failed_step}: {text.removeprefix('carts-runbook: ')}"
        return f"exit {self.exit}, {self.outcome or '-'} (cause {self.cause})"


@dataclass(frozen=True)
class Expect:
    """What the issue asks of the runbook in one scenario: extra parameters for the run, and a
    check of the run."""

    overrides: tuple[str, ...]
    check: Callable[[Run], bool]
    #: Run with ``backend: aws`` (and ``apply: true``), the lab reached through
    #: ``AWS_ENDPOINT_URL`` as boto3 reaches any endpoint: how a run in a region the lab
    #: backend's parameters do not accept (aws-cn) still meets the lab.
    aws_backend: bool = False


def written_policy_in_partition(run: Run, partition: str) -> bool:
    doc = json.dumps(run.policies.get("CartsDynamoPolicy", {}))
    return f"arn:{partition}:" in doc and "arn:aws:" not in doc


EXPECTATIONS: dict[str, Expect] = {
    # write the policy; carts RUNNING and HEALTHY
    "workshop": Expect((), lambda r: r.fixed and r.iam_writes == ["PutRolePolicy"]),
    # write the policy; RUNNING with healthStatus UNKNOWN counts as settled (no watch timeout)
    "no-health-check": Expect((), lambda r: r.fixed and r.iam_writes == ["PutRolePolicy"]),
    # a healthy service that the change keeps allowed is reported as such, with no wait
    "already-fixed": Expect(
        ("policy_scope=least-privilege",),
        lambda r: (
            r.exit == 0
            and r.failed_step is None
            and r.record.get("timings_s", {}).get("watch", 0) < 30
            and r.iam_writes in ([], ["PutRolePolicy"])
            and r.ecs_writes == []
        ),
    ),
    # a boundary that blocks the fix stops the run before writing, naming it
    "permissions-boundary": Expect(
        (),
        lambda r: (
            r.exit != 0
            and r.iam_writes == []
            and r.failed_step not in (None, "watch", "verify")
            and "boundary" in (r.stderr + json.dumps(r.record)).lower()
        ),
    ),
    # the policy, then the gated second write: update-service --force-new-deployment
    "circuit-breaker": Expect(
        (),
        lambda r: (
            r.fixed and r.iam_writes == ["PutRolePolicy"] and r.ecs_writes == ["UpdateService"]
        ),
    ),
    # every ARN built and written says arn:aws-cn:
    "aws-cn": Expect(
        ("apply=true",),
        lambda r: (
            r.fixed
            and r.iam_writes == ["PutRolePolicy"]
            and written_policy_in_partition(r, "aws-cn")
        ),
        aws_backend=True,
    ),
    # the denial found in the stream named after the container's runtime id
    "no-stream-prefix": Expect(
        (), lambda r: r.fixed and r.cause == "task-role" and r.iam_writes == ["PutRolePolicy"]
    ),
    # the tokens followed, the denial found
    "log-pages": Expect(
        (), lambda r: r.fixed and r.cause == "task-role" and r.iam_writes == ["PutRolePolicy"]
    ),
    # reads retried for a bounded time: the rollback verifies against a stale IAM
    "stale-reads": Expect(
        ("rollback=true",),
        lambda r: (
            r.exit == 0
            and r.failed_step is None
            and r.iam_writes == ["PutRolePolicy", "DeleteRolePolicy"]
        ),
    ),
    # the essential container named in the task definition read, not the first one
    "sidecar": Expect(
        (),
        lambda r: (
            r.fixed
            and r.cause == "task-role"
            and (r.record.get("steps", {}).get("diagnose") or {}).get("exit_code", 1) == 1
            and r.iam_writes == ["PutRolePolicy"]
        ),
    ),
}


def run_scenario(name: str, workdir: Path, time_scale: float) -> Run:
    from runbook_lib.lab import Lab, LabConfig
    from runbook_lib.params import Params

    config = LabConfig(time_scale=time_scale, scenario=name, validate_responses=True)
    lab = Lab.start(Params(), config)
    try:
        out = workdir / name
        expect = EXPECTATIONS[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNBOOK_"))}
        env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        if expect.aws_backend:
            env.update(lab.env())
            reach: tuple[str, ...] = ("backend=aws", f"account_id='{lab.account_id}'")
        else:
            reach = (f"endpoint_url={lab.endpoint_url}",)
        cmd = [sys.executable, "-m", "runbook_lib", "run", "--out", str(out)]
        overrides = (
            *reach,
            f"region={lab.region}",
            f"timeout_s={WATCH_TIMEOUT_S}",
            *expect.overrides,
        )
        for item in overrides:
            cmd += ["-p", item]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - started
        state = lab.state()
        return Run(
            exit=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            record=_record(out),
            iam_writes=list(state["iam_writes"]),
            ecs_writes=list(state["ecs_writes"]),
            shape_errors=list(state["shape_errors"]),
            seconds=seconds,
            policies=_inline(lab),
        )
    finally:
        lab.stop()


def _record(out: Path) -> dict[str, Any]:
    from runbook_lib.history import latest_run

    path = (latest_run(out) or out) / f"{STEM}.record.json"
    try:
        found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        found = {}
    return found


def _inline(lab: Any) -> dict[str, Any]:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=lab.endpoint_url,
        region_name=lab.region,
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
    )
    role = lab.params.task_role
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def main(argv: list[str] | None = None) -> int:
    from runbook_lib.lab.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=tuple(SCENARIOS), default=None)
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE)
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scenarios-") as tmp:
        for name in names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            run = run_scenario(name, Path(tmp), args.time_scale)
            handled = EXPECTATIONS[name].check(run) and not run.shape_errors
            did = run.said()
            if run.shape_errors:
                did += f"; the lab answered off-shape: {run.shape_errors[0]}"
            rows.append((name, handled, did, run))
    print("| scenario | the account | the runbook must | it did | IAM writes | ECS writes | s |")
    print("|---|---|---|---|---|---|---|")
    for name, handled, did, run in rows:
        s = SCENARIOS[name]
        mark = "handled" if handled else "NOT HANDLED"
        print(
            f"| {name} | {s.account} | {s.must} | {mark}: {did} | "
            f"{', '.join(run.iam_writes) or '-'} | {', '.join(run.ecs_writes) or '-'} | "
            f"{run.seconds:.1f} |"
        )
    print(f"{len(rows)} scenarios, {sum(1 for _, h, _, _ in rows if h)} handled")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
