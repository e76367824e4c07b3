"""The whole runbook with ``backend: aws``, every answer from botocore's Stubber: no lab, no
network. Each step runs as the notebook runs it (``Runbook`` methods), against answers shaped
from the aws CLI's documented examples and botocore's output shapes, several of them over more
than one page. The Stubber refuses any call the script did not expect, any parameter that
differs from the one expected, and any answer AWS could not send; at the end every queued answer
must have been asked for.

Cases: the workshop (the task role lacks DynamoDB; written, watched, verified), a permissions
boundary that allows no DynamoDB (stops in preflight, nothing written), and an account fixed
elsewhere (carts already healthy; written, and no wait for a task that will not come).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import (
    ACCOUNT,
    CLUSTER,
    EXEC_ROLE,
    INDEX_ARN,
    LOG_GROUP,
    PARAMS,
    REGION,
    ROLE,
    SERVICE,
    TABLE_ARN,
    TD_ARN,
    StubbedAWS,
    aws_example,
    carts_denial,
    carts_service,
    carts_task,
    carts_task_definition,
)

from runbook_lib.carts import carts_requests
from runbook_lib.errors import Blocked
from runbook_lib.params import Params
from runbook_lib.policy import render_policy
from runbook_lib.record import RunRecord
from runbook_lib.runbook import Runbook

CALLER = f"arn:aws:sts::{ACCOUNT}:assumed-role/WSParticipantRole/Participant"
BOUNDARY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/WorkshopBoundary"
DEFAULT_POLICY_NAME = "BasicRetailStoreEcsTaskRoleDefaultPolicy9759E157"
XRAY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "*"}],
}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
NO_DYNAMODB = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["xray:*", "logs:*"], "Resource": "*"}],
}
ALLOW_DYNAMODB = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": TABLE_ARN + "*"}],
}
#: The run's clock: 2026-03-02 09:30 UTC, moved only by the watch's sleeps.
EPOCH = datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp()
STREAM_PREFIX = "carts-service/application/"


class StillClock:
    """AWS's time and the watch's, moved only when the runbook sleeps: no wall-clock waits."""

    def __init__(self) -> None:
        self.t = 0.0

    def time(self) -> float:
        return EPOCH + self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Account:
    """The answers a real account gives each step, queued in the order the runbook asks."""

    def __init__(self, aws: StubbedAWS, params: Params) -> None:
        self.aws = aws
        self.params = params
        self.policy = render_policy(params, ACCOUNT)

    # --- section 1 ------------------------------------------------------------------------

    def connect(self, service: dict[str, Any]) -> None:
        a = self.aws
        a.add(
            "sts",
            "get_caller_identity",
            {"UserId": "AROAEXAMPLE:Participant", "Account": ACCOUNT, "Arn": CALLER},
        )
        for name in (ROLE, EXEC_ROLE):
            a.add("iam", "get_role", self.role_answer(name, None), {"RoleName": name})
        a.add("ecs", "describe_services", {"services": [service], "failures": []})
        # describe-table's documented example says NumberOfDecreasesToday 0, which the Stubber's
        # check refuses (the model's min is 1, a constraint written for requests): written here.
        table = {
            "Table": {
                "TableName": PARAMS.table,
                "TableArn": TABLE_ARN,
                "TableStatus": "ACTIVE",
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": PARAMS.index,
                        "KeySchema": [{"AttributeName": "customerId", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                        "IndexStatus": "ACTIVE",
                    }
                ],
            }
        }
        a.add("dynamodb", "describe_table", table, {"TableName": PARAMS.table})

    def role_answer(self, name: str, boundary: str | None) -> dict[str, Any]:
        got = aws_example("iam", "get-role")
        got["Role"].update(
            RoleName=name,
            Arn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
            AssumeRolePolicyDocument=quote(json.dumps(TRUST)),
        )
        if boundary is not None:
            got["Role"]["PermissionsBoundary"] = {
                "PermissionsBoundaryType": "Policy",
                "PermissionsBoundaryArn": boundary,
            }
        return got

    # --- section 2: diagnose --------------------------------------------------------------

    def diagnose_failing(self) -> None:
        """Two failed tasks and a scale-in; the stopped list over two pages; the denial found on
        the search's second page, then the lines around it over two pages."""
        a = self.aws
        a.add("ecs", "describe_services", {"services": [carts_service()], "failures": []})
        td = {"taskDefinition": carts_task_definition()}
        a.add("ecs", "describe_task_definition", td, {"taskDefinition": TD_ARN})
        stopped = [
            carts_task(1),
            carts_task(2),
            carts_task(3, stop_code="ServiceSchedulerInitiated", exit_code=143),
        ]
        arns = [t["taskArn"] for t in stopped]
        ask = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"}
        a.add("ecs", "list_tasks", {"taskArns": arns[:2], "nextToken": "t2"}, ask)
        a.add("ecs", "list_tasks", {"taskArns": arns[2:]}, {**ask, "nextToken": "t2"})
        a.add(
            "ecs",
            "describe_tasks",
            {"tasks": stopped, "failures": []},
            {"cluster": CLUSTER, "tasks": arns},
        )
        stream = f"{STREAM_PREFIX}{2:032x}"
        search = {
            "logGroupName": LOG_GROUP,
            "logStreamNames": [stream],
            "filterPattern": '"is not authorized to perform"',
        }
        a.add("logs", "filter_log_events", {"events": [], "nextToken": "n1"}, search)
        at = int(EPOCH * 1000) - 600_000
        hit = {"logStreamName": stream, "timestamp": at, "message": carts_denial(2), "eventId": "1"}
        a.add("logs", "filter_log_events", {"events": [hit]}, {**search, "nextToken": "n1"})
        window = {
            "logGroupName": LOG_GROUP,
            "logStreamName": stream,
            "startFromHead": True,
            "startTime": at - 1000,
            "endTime": at + 1000,
        }
        report = [
            "***************************",
            "APPLICATION FAILED TO START",
            "***************************",
            "Description:",
            carts_denial(2),
        ]
        events = [{"timestamp": at, "message": m} for m in report]
        a.add(
            "logs",
            "get_log_events",
            {"events": events[:2], "nextForwardToken": "f/1", "nextBackwardToken": "b/1"},
            window,
        )
        a.add(
            "logs",
            "get_log_events",
            {"events": events[2:], "nextForwardToken": "f/2", "nextBackwardToken": "b/2"},
            {**window, "nextToken": "f/1"},
        )
        a.add(
            "logs",
            "get_log_events",
            {"events": [], "nextForwardToken": "f/2", "nextBackwardToken": "b/3"},
            {**window, "nextToken": "f/2"},
        )

    def diagnose_healthy(self) -> None:
        a = self.aws
        a.add(
            "ecs",
            "describe_services",
            {"services": [carts_service(1, "COMPLETED")], "failures": []},
        )
        a.add(
            "ecs",
            "describe_task_definition",
            {"taskDefinition": carts_task_definition()},
            {"taskDefinition": TD_ARN},
        )
        a.add(
            "ecs",
            "list_tasks",
            {"taskArns": []},
            {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"},
        )

    # --- section 3: the role, the simulator -----------------------------------------------

    def read_role(
        self, inline: dict[str, dict[str, Any]], boundary: dict[str, Any] | None = None
    ) -> None:
        """get_role, the inline policies over two pages, one attached policy, the boundary."""
        a = self.aws
        a.add(
            "iam",
            "get_role",
            self.role_answer(ROLE, BOUNDARY_ARN if boundary else None),
            {"RoleName": ROLE},
        )
        names = list(inline)
        a.add(
            "iam",
            "list_role_policies",
            {"PolicyNames": names[:1], "IsTruncated": True, "Marker": "m1"},
            {"RoleName": ROLE},
        )
        self._inline(names[:1], inline)
        a.add(
            "iam",
            "list_role_policies",
            {"PolicyNames": names[1:], "IsTruncated": False},
            {"RoleName": ROLE, "Marker": "m1"},
        )
        self._inline(names[1:], inline)
        a.add(
            "iam",
            "list_attached_role_policies",
            {"AttachedPolicies": [], "IsTruncated": False},
            {"RoleName": ROLE},
        )
        if boundary is not None:
            policy = {
                "Policy": {
                    "PolicyName": "WorkshopBoundary",
                    "Arn": BOUNDARY_ARN,
                    "DefaultVersionId": "v2",
                }
            }
            a.add("iam", "get_policy", policy, {"PolicyArn": BOUNDARY_ARN})
            version = aws_example("iam", "get-policy-version")
            version["PolicyVersion"].update(Document=quote(json.dumps(boundary)), VersionId="v2")
            a.add(
                "iam", "get_policy_version", version, {"PolicyArn": BOUNDARY_ARN, "VersionId": "v2"}
            )

    def _inline(self, names: list[str], inline: dict[str, dict[str, Any]]) -> None:
        for name in names:
            doc = quote(json.dumps(inline[name]))
            answer = {"RoleName": ROLE, "PolicyName": name, "PolicyDocument": doc}
            self.aws.add("iam", "get_role_policy", answer, {"RoleName": ROLE, "PolicyName": name})

    def simulate(self, boundary_allows: bool = True) -> None:
        """SimulateCustomPolicy per resource; the table's answer over two pages."""
        requests = carts_requests(REGION, ACCOUNT, PARAMS.table, PARAMS.index)
        detail = {
            "PermissionsBoundaryDecisionDetail": {"AllowedByPermissionsBoundary": boundary_allows}
        }
        decision = "allowed" if boundary_allows else "implicitDeny"

        def result(action: str, resource: str) -> dict[str, Any]:
            return {
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": decision,
                "MatchedStatements": [],
                "MissingContextValues": [],
                "ResourceSpecificResults": [
                    {"EvalResourceName": resource, "EvalResourceDecision": decision, **detail}
                ],
                **detail,
            }

        index = [a for a, r in requests if r == INDEX_ARN]
        table = [a for a, r in requests if r == TABLE_ARN]
        self.aws.add(
            "iam",
            "simulate_custom_policy",
            {"EvaluationResults": [result(a, INDEX_ARN) for a in index], "IsTruncated": False},
        )
        self.aws.add(
            "iam",
            "simulate_custom_policy",
            {
                "EvaluationResults": [result(a, TABLE_ARN) for a in table[:3]],
                "IsTruncated": True,
                "Marker": "s2",
            },
        )
        self.aws.add(
            "iam",
            "simulate_custom_policy",
            {"EvaluationResults": [result(a, TABLE_ARN) for a in table[3:]], "IsTruncated": False},
        )

    # --- section 5-7: apply, watch, verify ------------------------------------------------

    def baseline(self, running: list[dict[str, Any]]) -> None:
        ask = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"}
        arns = [t["taskArn"] for t in running]
        self.aws.add("ecs", "list_tasks", {"taskArns": arns}, ask)
        if arns:
            self.aws.add(
                "ecs",
                "describe_tasks",
                {"tasks": running, "failures": []},
                {"cluster": CLUSTER, "tasks": arns},
            )

    def put_policy(self) -> None:
        """The check just before the write (no such policy yet: IAM's NoSuchEntity), the write,
        and the read back."""
        name = PARAMS.policy_name
        ask = {"RoleName": ROLE, "PolicyName": name}
        self.aws.error(
            "iam",
            "get_role_policy",
            "NoSuchEntity",
            f"The role policy with name {name} cannot be found.",
            404,
            ask,
        )
        self.aws.add("iam", "put_role_policy", {}, {**ask, "PolicyDocument": self.policy.text})
        self.policy_now()

    def policy_now(self) -> None:
        """get_role_policy answering the runbook's policy (a read back, the summary's read)."""
        name = PARAMS.policy_name
        answer = {"RoleName": ROLE, "PolicyName": name, "PolicyDocument": quote(self.policy.text)}
        self.aws.add("iam", "get_role_policy", answer, {"RoleName": ROLE, "PolicyName": name})

    def watch_new_task(self) -> None:
        """The next task: RUNNING, then HEALTHY; the service at 1 of 1; the search of the logs
        since the change over two pages (the second empty, no token: the end)."""
        a = self.aws
        ask = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"}
        up = carts_task(4, "RUNNING")
        a.add("ecs", "list_tasks", {"taskArns": [up["taskArn"]]}, ask)
        a.add(
            "ecs",
            "describe_tasks",
            {"tasks": [up], "failures": []},
            {"cluster": CLUSTER, "tasks": [up["taskArn"]]},
        )
        healthy = carts_task(4, "RUNNING", "HEALTHY")
        a.add(
            "ecs",
            "describe_tasks",
            {"tasks": [healthy], "failures": []},
            {"cluster": CLUSTER, "tasks": [up["taskArn"]]},
        )
        a.add(
            "ecs",
            "describe_services",
            {"services": [carts_service(1, "COMPLETED")], "failures": []},
        )
        search = {
            "logGroupName": LOG_GROUP,
            "logStreamNamePrefix": STREAM_PREFIX,
            "filterPattern": '"is not authorized to perform"',
        }
        # The change is when the write landed: the stubbed clock's EPOCH, in milliseconds.
        since = {**search, "startTime": int(EPOCH * 1000)}
        a.add("logs", "filter_log_events", {"events": [], "nextToken": "w1"}, since)
        a.add("logs", "filter_log_events", {"events": []}, {**since, "nextToken": "w1"})

    def scan(self) -> None:
        item = {
            "id": {"S": "c1:i1"},
            "customerId": {"S": "c1"},
            "itemId": {"S": "i1"},
            "quantity": {"N": "2"},
            "unitPrice": {"N": "45"},
        }
        self.aws.add(
            "dynamodb",
            "scan",
            {"Items": [item], "Count": 1, "ScannedCount": 1},
            {"TableName": PARAMS.table, "Limit": 100},
        )


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StubbedAWS]:
    """boto3 sessions made by the runbook are the Stubber's (no credentials chain, no network)."""
    import boto3

    aws = StubbedAWS()
    monkeypatch.setattr(boto3, "Session", aws.session)
    monkeypatch.setenv("RUNBOOK_HEADLESS", "1")
    yield aws


def runbook(tmp_path: Path, **params: Any) -> Runbook:
    values = {"backend": "aws", "account_id": ACCOUNT, "region": REGION, "apply": True, **params}
    return Runbook(Params.from_mapping(values, "test"), RunRecord.create(tmp_path / "record.json"))


def connect(run: Runbook) -> StillClock:
    run.connect()
    clock = StillClock()
    run.connection.clock = clock
    return clock


def test_the_workshop_on_a_real_account(stubbed: StubbedAWS, tmp_path: Path) -> None:
    run = runbook(tmp_path)
    account = Account(stubbed, run.params)
    account.connect(carts_service())
    account.diagnose_failing()
    inline = {DEFAULT_POLICY_NAME: XRAY, "Other": XRAY}
    account.read_role(inline)  # lint
    account.simulate()  # preflight
    account.read_role(inline)  # plan reads the role again
    account.baseline([])
    account.put_policy()
    account.watch_new_task()
    account.scan()
    account.policy_now()  # the summary's read

    connect(run)
    d = run.diagnose()
    assert d.cause == "task-role" and d.failed_task is not None
    assert d.failed_task["taskArn"].endswith(f"{2:032x}")  # the scale-in (task 3) is skipped
    assert d.log_lines[:2] == ["***************************", "APPLICATION FAILED TO START"]
    run.render_policy()
    run.lint()
    pre = run.preflight()
    assert pre.ok and pre.simulator is not None and len(pre.simulator) == 5
    run.check_trust()
    assert run.plan().action == "create"
    run.apply()
    result = run.watch()
    assert getattr(result, "outcome", None) == "running"
    assert run.verify().ok
    run.rollback()
    summary = run.summary()
    assert stubbed.pending() == {}
    assert summary.data["outcome"] == "fixed: carts is RUNNING"
    assert summary.data["steps"]["plan"]["written"] is True


def test_a_boundary_without_dynamodb_stops_before_any_write(
    stubbed: StubbedAWS, tmp_path: Path
) -> None:
    """The task role's boundary allows no DynamoDB: the denial still names the identity-based
    policies (none allows), but the preflight sees the boundary, locally and in the simulator,
    and the run stops with one sentence before anything is written."""
    run = runbook(tmp_path)
    account = Account(stubbed, run.params)
    account.connect(carts_service())
    account.diagnose_failing()
    inline = {DEFAULT_POLICY_NAME: XRAY, "Other": XRAY}
    account.read_role(inline, NO_DYNAMODB)
    account.simulate(boundary_allows=False)

    connect(run)
    run.diagnose()
    run.render_policy()
    run.lint()
    with pytest.raises(Blocked) as err:
        run.preflight()
    assert str(err.value).startswith(
        f"Blocked before writing: the permissions boundary {BOUNDARY_ARN}"
    )
    assert "put-role-permissions-boundary" in str(err.value)
    assert stubbed.pending() == {}
    record = run.record.data
    assert record["failed_step"] == "preflight" and record["undo"] is None
    assert record["steps"]["preflight"]["blocked_by"] == "permissions boundary"
    # No put_role_policy was queued: had the run sent one, the Stubber would have refused it.
    assert "plan" not in record["steps"] and "apply" not in record["steps"]


def test_an_account_fixed_elsewhere_is_reported_without_waiting(
    stubbed: StubbedAWS, tmp_path: Path
) -> None:
    """carts RUNNING and HEALTHY thanks to another inline policy; a least-privilege run writes
    its policy, and ECS starts no task for an IAM change: the watch says so on its first poll."""
    run = runbook(tmp_path, policy_scope="least-privilege")
    account = Account(stubbed, run.params)
    account.connect(carts_service(1, "COMPLETED"))
    account.diagnose_healthy()
    inline = {DEFAULT_POLICY_NAME: XRAY, "DynamoAccess": ALLOW_DYNAMODB}
    account.read_role(inline)
    account.simulate()
    account.read_role(inline)
    healthy = carts_task(1, "RUNNING", "HEALTHY")
    account.baseline([healthy])
    account.put_policy()
    # The watch: the only running task was healthy at the change; the service is steady.
    ask = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"}
    stubbed.add("ecs", "list_tasks", {"taskArns": [healthy["taskArn"]]}, ask)
    stubbed.add(
        "ecs", "describe_services", {"services": [carts_service(1, "COMPLETED")], "failures": []}
    )
    account.scan()
    account.policy_now()  # the summary's read

    clock = connect(run)
    assert run.diagnose().cause == "healthy"
    run.render_policy()
    run.lint()
    assert run.preflight().ok
    run.check_trust()
    run.plan()
    run.apply()
    result = run.watch()
    assert getattr(result, "outcome", None) == "already-running" and clock.t == 0.0
    run.verify()
    summary = run.summary()
    assert stubbed.pending() == {}
    assert summary.data["outcome"].startswith("checked: carts was already RUNNING")
