"""What the tests share besides fixtures (those are in conftest.py): the workshop's names, policy
builders, boto3 clients on a lab that wait the lab's way, and the CLI with its outputs."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runbook_lib.params import Params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "fix-iam-permissions.ipynb"
STEM = "fix-iam-permissions"
CLI = [sys.executable, "-m", "runbook_lib", "run"]
BIN = Path(sys.executable).parent

T = TypeVar("T")

PARAMS = Params()
CLUSTER = PARAMS.cluster
SERVICE = PARAMS.service
ROLE = PARAMS.task_role
ACCOUNT = PARAMS.lab_account_id
REGION = PARAMS.region
LOG_GROUP = "retail-store-ecs-tasks"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{PARAMS.table}"
INDEX_ARN = f"{TABLE_ARN}/index/{PARAMS.index}"
ITEM_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
]


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


#: The seed's policy (WORKSHOP.md step 3.2).
WORKSHOP_POLICY = policy(allow("dynamodb:*", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/*"))
#: The least-privilege policy for carts.
LEAST_PRIVILEGE_POLICY = policy(allow(ITEM_ACTIONS, TABLE_ARN), allow("dynamodb:Query", INDEX_ARN))


#: How long a test waits for something that happens in a lab on the wall clock, or in another
#: process. Generous: a loaded 2-core machine must not fail a test by being slow.
WALL_TIMEOUT_S = 60.0
#: How far a test lets a stepped lab run before it gives up (simulated seconds: a carts task
#: fails and is replaced about every 23 s, and is HEALTHY about 75 s after its start).
STEPPED_LIMIT_S = 900.0


def wait_for(what: str, check: Callable[[], T | None], timeout: float = WALL_TIMEOUT_S) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``
    wall-clock seconds (for labs on the wall clock and other processes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Clients:
    """boto3 clients on one lab endpoint, as a user would make them.

    With ``lab`` (a lab in this process), :meth:`wait` and :meth:`now` keep the lab's time: on a
    stepped clock the world stands still between two calls of a test, and moves only in
    :meth:`wait`.
    """

    endpoint_url: str
    region: str = REGION
    lab: Any = None

    def __post_init__(self) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.Session(
            aws_access_key_id="lab", aws_secret_access_key="lab", region_name=self.region
        )
        config = Config(retries={"mode": "standard", "max_attempts": 10})
        make = lambda name: session.client(name, endpoint_url=self.endpoint_url, config=config)  # noqa: E731
        self.ecs = make("ecs")
        self.iam = make("iam")
        self.logs = make("logs")
        self.dynamodb = make("dynamodb")
        self.sts = make("sts")

    # --- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """The lab's time (epoch seconds): what AWS would stamp on a change made now."""
        if self.lab is not None:
            return float(self.lab.now().timestamp())
        return time.time()

    def wait(self, what: str, check: Callable[[], T | None], limit_s: float = STEPPED_LIMIT_S) -> T:
        """Until ``check()`` is truthy: a stepped lab is advanced a simulated second at a time
        (``limit_s`` at most); any other is polled on the wall clock."""
        if self.lab is None or not self.lab.stepped:
            return wait_for(what, check)
        from runbook_lib.lab import LabError

        try:
            found: T = self.lab.advance_until(check, limit_s)
        except LabError:
            pytest.fail(f"nothing after {limit_s:g} simulated seconds: waiting for {what}")
        return found

    def let_pass(self, seconds: float) -> None:
        """Let ``seconds`` simulated seconds pass in a stepped lab."""
        self.lab.advance(seconds)

    # --- ECS --------------------------------------------------------------------------------

    def task_arns(self, desired: str = "RUNNING") -> list[str]:
        arns: list[str] = self.ecs.list_tasks(
            cluster=CLUSTER, serviceName=SERVICE, desiredStatus=desired
        )["taskArns"]
        return arns

    def describe(self, arns: list[str]) -> list[dict[str, Any]]:
        if not arns:
            return []
        tasks: list[dict[str, Any]] = self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
        return sorted(tasks, key=lambda t: t["createdAt"])

    def tasks(self) -> list[dict[str, Any]]:
        """Every listed task of the service (running and stopped), oldest first."""
        return self.describe(self.task_arns("RUNNING") + self.task_arns("STOPPED"))

    def stopped(self) -> list[dict[str, Any]]:
        return [t for t in self.describe(self.task_arns("STOPPED")) if t["lastStatus"] == "STOPPED"]

    def service(self) -> dict[str, Any]:
        found: dict[str, Any] = self.ecs.describe_services(cluster=CLUSTER, services=[SERVICE])[
            "services"
        ][0]
        return found

    def healthy_task(self, after: float = 0.0) -> dict[str, Any] | None:
        """A RUNNING, HEALTHY task created after ``after`` (epoch seconds), if any. In the broken
        account no task is ever HEALTHY, so any is one the fix let through."""
        for task in self.describe(self.task_arns("RUNNING")):
            if (
                task["lastStatus"] == "RUNNING"
                and task["healthStatus"] == "HEALTHY"
                and task["createdAt"].timestamp() >= after
            ):
                return task
        return None

    def stopped_after(self, after: float, code: str | None = None) -> list[dict[str, Any]]:
        """STOPPED tasks created after ``after`` (epoch seconds), optionally with a stop code."""
        return [
            t
            for t in self.stopped()
            if t["createdAt"].timestamp() >= after and (code is None or t.get("stopCode") == code)
        ]

    # --- Logs -------------------------------------------------------------------------------

    def log_messages(self, task_id: str) -> list[str]:
        stream = f"carts-service/application/{task_id}"
        events = self.logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True
        )["events"]
        return [e["message"] for e in events]

    def streams(self, task_id: str) -> list[str]:
        found = self.logs.describe_log_streams(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"carts-service/application/{task_id}"
        )["logStreams"]
        return [s["logStreamName"] for s in found]


def task_id(task: dict[str, Any]) -> str:
    return str(task["taskArn"]).rsplit("/", 1)[1]


def iter_events(service: dict[str, Any]) -> Iterator[str]:
    for event in service["events"]:
        yield str(event["message"])


# --- the CLI and what it writes ------------------------------------------------------------------


def run_cli(
    out: Path,
    *overrides: str,
    params: str | None = None,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``carts-runbook run --out OUT [--params P] -p NAME=VALUE...``; returns the process and the
    record it left (empty when none)."""
    cmd = [*CLI, "--out", str(out)]
    if params:
        cmd += ["--params", params]
    for item in overrides:
        cmd += ["-p", item]
    cmd += list(extra)
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env or cli_env()
    )
    return proc, read_record(out)


def cli_env(**changes: str) -> dict[str, str]:
    """The environment for a CLI run: this one, without a record path or lab clock of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUNBOOK_RECORD", "RUNBOOK_LAB_CLOCK")}
    env.update(changes)
    return env


def output_dir(out: Path) -> Path:
    """Where a run into ``out`` left its notebook, HTML and record."""
    return out


def read_record(out: Path) -> dict[str, Any]:
    path = output_dir(out) / f"{STEM}.record.json"
    found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return found


def notebook_cells(out: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads((output_dir(out) / f"{STEM}.ipynb").read_text())[
        "cells"
    ]
    return cells


def error_outputs(out: Path) -> list[dict[str, Any]]:
    return [
        o
        for c in notebook_cells(out)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def cell_text(out: Path, step: str) -> str:
    """Everything the cell tagged ``step:<step>`` showed as text."""
    for cell in notebook_cells(out):
        if f"step:{step}" in cell.get("metadata", {}).get("tags", []):
            return "".join(
                "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                for o in cell.get("outputs", [])
            )
    raise AssertionError(f"no cell tagged step:{step}")


def inline_policies(aws: Clients, role: str = ROLE) -> dict[str, Any]:
    """The role's inline policies, name -> document, as IAM answers now."""
    names = aws.iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {
        n: aws.iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names
    }


# --- a lab served in its own process ----------------------------------------------------------


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment without any AWS setting of the machine (no profile, no real keys)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNBOOK_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@dataclass
class Served:
    process: subprocess.Popen[str]
    exports: list[str]

    @property
    def endpoint(self) -> str:
        return self.exports[0].split("=", 1)[1]

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])


# --- runs in this process ----------------------------------------------------------------------

#: The steps before the plan, as the notebook runs them (connect first).
CHECKS = ("connect", "diagnose", "render_policy", "lint", "preflight", "check_trust")

_run_ids = itertools.count(1)


def record_in(out: Path) -> Any:
    """A record in a new run folder under ``out`` (``OUT/<run id>/…``, as the CLI makes them)."""
    from runbook_lib.record import RunRecord

    folder = out / f"20260302T090000Z-{next(_run_ids):04x}"
    folder.mkdir(parents=True)
    return RunRecord.create(folder / f"{STEM}.record.json")


def in_process_run(lab: Any, out: Path, clock: Any = None, **values: Any) -> Any:
    """A ``Runbook`` on ``lab`` (connected), recorded under ``out``; its waits are the lab's
    stepped time (or ``clock``)."""
    from runbook_lib.runbook import Runbook

    params = Params.from_mapping({"endpoint_url": lab.endpoint_url, **values})
    run = Runbook(params, record_in(out))
    run.connect()
    run.conn.clock = clock if clock is not None else lab.client_clock()
    return run


def through_checks(run: Any) -> Any:
    """Run the steps after connect and before the plan."""
    for step in CHECKS[1:]:
        getattr(run, step)()
    return run
