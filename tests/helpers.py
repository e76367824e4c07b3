"""What the tests share besides fixtures (those are in conftest.py): the workshop's names, policy
builders, boto3 clients on a lab that wait the lab's way, and the CLI with its outputs."""

from __future__ import annotations

import functools
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
    """Where the newest run into ``out`` left its notebook, HTML and record (``out/latest``)."""
    from runbook_lib.history import latest_run

    return latest_run(out) or out


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
    # RUNBOOK_LAB_VALIDATE stays: a lab served from this environment reports its answers too.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RUNBOOK_")) or k == "RUNBOOK_LAB_VALIDATE"
    }
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


# --- AWS's own examples and stubbed clients (no lab, no network) --------------------------------


def aws_example(service: str, command: str, index: int = 0) -> dict[str, Any]:
    """The output of example ``index`` in the aws CLI's documented examples
    (``awscli/examples/<service>/<command>.rst``), parsed as botocore parses that operation's
    answer: timestamps become datetimes, as every client sees them. A fresh copy each call."""
    import copy

    return copy.deepcopy(_aws_example(service, command, index))


@functools.cache
def _aws_example(service: str, command: str, index: int) -> dict[str, Any]:
    import re

    import awscli

    path = Path(awscli.__file__).parent / "examples" / service / f"{command}.rst"
    blocks = re.findall(r"Output::\s*\n\n((?:[ \t]+.*\n|\s*\n)+)", path.read_text())
    text = blocks[index]
    start = text.index("{")
    document: dict[str, Any] = json.JSONDecoder().raw_decode(text[start:])[0]
    model = _service_model(service)
    operation = "".join(part.capitalize() for part in command.split("-"))
    return shaped(document, model.operation_model(operation).output_shape)


@functools.cache
def _service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def shaped(value: Any, shape: Any) -> Any:
    """``value`` (JSON as the CLI prints it) with every timestamp member of ``shape`` parsed."""
    from botocore.utils import parse_timestamp

    if shape is None:
        return value
    if shape.type_name == "structure" and isinstance(value, dict):
        return {
            k: shaped(v, shape.members[k]) if k in shape.members else v for k, v in value.items()
        }
    if shape.type_name == "list" and isinstance(value, list):
        return [shaped(v, shape.member) for v in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: shaped(v, shape.value) for k, v in value.items()}
    if shape.type_name == "timestamp" and value is not None:
        return parse_timestamp(value)
    return value


class StubbedAWS:
    """botocore clients answered by botocore's ``Stubber``: no lab, no network, and every answer
    checked against its operation's output shape (a response AWS could not send is refused).

    :meth:`add` queues an answer per service, in the order the calls will come; ``expected``
    (the request's parameters, exactly) is checked too when given. :meth:`session` stands for
    the boto3 session a runbook's connection makes its clients from.
    """

    def __init__(self, region: str = REGION) -> None:
        import boto3

        self.region = region
        self._boto = boto3.Session(
            aws_access_key_id="stubbed", aws_secret_access_key="stubbed", region_name=region
        )
        self.clients: dict[str, Any] = {}
        self.stubbers: dict[str, Any] = {}

    def client(self, service: str, **_: Any) -> Any:
        if service not in self.clients:
            from botocore.stub import Stubber

            from runbook_lib.session import client_config

            made = self._boto.client(service, config=client_config())  # type: ignore[call-overload]
            stubber = Stubber(made)
            stubber.activate()
            self.clients[service], self.stubbers[service] = made, stubber
        return self.clients[service]

    def add(
        self,
        service: str,
        method: str,
        response: dict[str, Any],
        expected: dict[str, Any] | None = None,
    ) -> None:
        self.client(service)
        self.stubbers[service].add_response(method, response, expected)

    def error(
        self,
        service: str,
        method: str,
        code: str,
        message: str = "",
        status: int = 400,
        expected: dict[str, Any] | None = None,
    ) -> None:
        self.client(service)
        self.stubbers[service].add_client_error(
            method, code, message, status, expected_params=expected
        )

    def pending(self) -> dict[str, int]:
        """Answers queued and not asked for, by service (empty when every one was used)."""
        left = {s: len(st._queue) for s, st in self.stubbers.items()}
        return {s: n for s, n in left.items() if n}

    def session(self, *_: Any, **__: Any) -> StubbedAWS:
        """Stands for ``boto3.Session(...)``: its ``client`` is :meth:`client`."""
        return self


# --- the workshop's account as AWS answers for it (built from the aws CLI's examples) ----------

EXEC_ROLE = PARAMS.execution_role
TD_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/retail-store-ecs-carts:1"
SCALE_IN = "Scaling activity initiated by (deployment ecs-svc/1234567890123456789)"


def carts_container(name: str = "application", **extra: Any) -> dict[str, Any]:
    """The carts container definition (WORKSHOP.md 3.1), with a health check and awslogs."""
    return {
        "name": name,
        "image": "public.ecr.aws/aws-containers/retail-store-sample-cart:1.0.0",
        "essential": True,
        "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost:8080/actuator/health"]},
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": LOG_GROUP,
                "awslogs-region": REGION,
                "awslogs-stream-prefix": "carts-service",
            },
        },
        **extra,
    }


def carts_task_definition(arn: str = TD_ARN, *containers: dict[str, Any]) -> dict[str, Any]:
    """describe-task-definition's example, turned into the workshop's carts task definition."""
    td: dict[str, Any] = aws_example("ecs", "describe-task-definition")["taskDefinition"]
    td.update(
        taskDefinitionArn=arn,
        family="retail-store-ecs-carts",
        taskRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
        executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{EXEC_ROLE}",
        containerDefinitions=list(containers) or [carts_container()],
    )
    return td


def carts_service(
    running: int = 0, rollout: str = "IN_PROGRESS", events: list[str] | None = None
) -> dict[str, Any]:
    """describe-services' example, turned into carts (desired 1)."""
    from datetime import timedelta

    svc: dict[str, Any] = aws_example("ecs", "describe-services")["services"][0]
    svc.update(serviceName=SERVICE, taskDefinition=TD_ARN, desiredCount=1, runningCount=running)
    svc["deployments"][0].update(
        taskDefinition=TD_ARN, rolloutState=rollout, desiredCount=1, runningCount=running
    )
    at = svc["events"][0]["createdAt"]
    svc["events"] = [
        {"id": f"e{i}", "createdAt": at - timedelta(seconds=i), "message": m}
        for i, m in enumerate(events or [])
    ]
    return svc


def carts_task(
    n: int,
    status: str = "STOPPED",
    health: str = "UNKNOWN",
    *,
    stop_code: str = "EssentialContainerExited",
    reason: str = "Essential container in task exited",
    exit_code: int | None = 1,
    td: str = TD_ARN,
    container_reason: str | None = None,
) -> dict[str, Any]:
    """describe-tasks' Fargate example as carts task ``n`` (its id is ``n`` in hex), RUNNING
    with ``health`` or STOPPED the way a case needs."""
    from datetime import timedelta

    task: dict[str, Any] = aws_example("ecs", "describe-tasks", 1)["tasks"][0]
    tid = f"{n:032x}"
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{tid}"
    app = task["containers"][0]
    app.update(name="application", taskArn=arn, lastStatus=status, runtimeId=f"{tid}-1")
    app["healthStatus"] = health
    created = task["createdAt"] + timedelta(minutes=n)
    task.update(
        taskArn=arn,
        taskDefinitionArn=td,
        group=f"service:{SERVICE}",
        lastStatus=status,
        desiredStatus="STOPPED" if status == "STOPPED" else "RUNNING",
        healthStatus=health,
        createdAt=created,
        startedAt=created + timedelta(seconds=20),
        containers=[app],
    )
    if status != "RUNNING":
        del task["startedAt"]
    if status == "STOPPED":
        task.update(stopCode=stop_code, stoppedReason=reason)
        task["stoppedAt"] = created + timedelta(seconds=30)
        if exit_code is not None:
            app["exitCode"] = exit_code
        if container_reason:
            app["reason"] = container_reason
    return task


def carts_denial(
    n: int, kind: str = "implicit_deny", policy_type: str = "identity-based policy"
) -> str:
    """The AccessDenied sentence carts task ``n`` logs for its start-up Query."""
    from runbook_lib.access_denied import assumed_role_arn, format_access_denied

    principal = assumed_role_arn(ACCOUNT, ROLE, f"{n:032x}")
    return format_access_denied(
        principal, "dynamodb:Query", INDEX_ARN, kind, policy_type=policy_type
    )


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
    run.connection.clock = clock if clock is not None else lab.client_clock()
    return run


def through_checks(run: Any) -> Any:
    """Run the steps after connect and before the plan."""
    for step in CHECKS[1:]:
        getattr(run, step)()
    return run


def policy_states(record: dict[str, Any]) -> list[dict[str, Any] | None]:
    """Every state of the policy a run record keeps (what writes replaced, wrote, found; what an
    earlier run replaced), each a document or None for no such policy."""
    found: list[dict[str, Any] | None] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "exists" in value and "document" in value:
                found.append(value["document"] if value["exists"] else None)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(record)
    return found
