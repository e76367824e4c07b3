"""Helpers for the lab tests: clients on the lab's endpoint, waiting, reading tasks and logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from runbook_lib.params import Params

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


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
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
    """boto3 clients on one lab endpoint, as a user would make them."""

    endpoint_url: str
    region: str = REGION

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
        """A RUNNING, HEALTHY task created after ``after`` (epoch seconds), if any."""
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


def shared_lab(seed: int) -> tuple[Any, Any, Any]:
    """Fixtures for a test module: one lab for the module (seeded with ``seed``, checked for
    scheduler errors at the end), its clients, and ``aws``: the clients on a freshly reset lab.

    Use as ``lab, clients, aws = shared_lab(seed=7)`` at module level.
    """
    from runbook_lib.lab import Lab, LabConfig

    @pytest.fixture(scope="module")
    def lab() -> Iterator[Lab]:
        with Lab.start(config=LabConfig(time_scale=0.005, seed=seed)) as running:
            yield running
            assert running.state()["process_errors"] == []

    @pytest.fixture(scope="module")
    def clients(lab: Lab) -> Clients:
        return Clients(lab.endpoint_url)

    @pytest.fixture
    def aws(lab: Lab, clients: Clients) -> Clients:
        lab.reset()
        return clients

    return lab, clients, aws
