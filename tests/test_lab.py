"""The embedded lab reproduces the broken workshop account of step 3.2, seen through boto3.

One lab serves the whole module; each test starts from ``reset()`` (the broken state).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import (
    ACCOUNT,
    CLUSTER,
    INDEX_ARN,
    ITEM_ACTIONS,
    LEAST_PRIVILEGE_POLICY,
    LOG_GROUP,
    REGION,
    ROLE,
    SERVICE,
    TABLE_ARN,
    WORKSHOP_POLICY,
    Clients,
    allow,
    iter_events,
    policy,
    task_id,
)

from runbook_lib.access_denied import EXPLICIT_DENY, NO_ALLOW, AccessDenied, parse_access_denied
from runbook_lib.lab import Lab, LabConfig

pytestmark = pytest.mark.lab

TASK_ARN = re.compile(rf"^arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/(?P<id>[0-9a-f]{{32}})$")


LAB_SEED = 7


def put_task_policy(aws: Clients, document: str, name: str = "CartsDynamoPolicy") -> float:
    """Write an inline policy on the task role; returns the time it was written."""
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=name, PolicyDocument=document)
    return aws.now()


def first_failure_after(aws: Clients, since: float) -> dict[str, Any]:
    stopped = aws.wait(
        "a carts task started after the change to stop",
        lambda: aws.stopped_after(since, "EssentialContainerExited"),
    )
    return stopped[0]


def denial_in_log(aws: Clients, task: dict[str, Any]) -> AccessDenied:
    """The last AccessDenied sentence in the task's container log."""
    lines = aws.log_messages(task_id(task))
    found = [d for d in map(parse_access_denied, lines) if d is not None]
    assert found, lines
    return found[-1]


# --- the seed ---------------------------------------------------------------------------------


def test_the_account_is_seeded_like_the_workshop(aws: Clients) -> None:
    """WORKSHOP.md 2.2/3.1: the table and its index, the task definition, the service, the two
    roles (the task role trusting ecs-tasks.amazonaws.com, with one inline policy and nothing
    for DynamoDB), the log group; the learner is Workshop Studio's participant role."""
    who = aws.sts.get_caller_identity()
    assert who["Account"] == ACCOUNT
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/WSParticipantRole/Participant"
    assert re.fullmatch(r"AROA[A-Z0-9]+:Participant", who["UserId"])

    role = aws.iam.get_role(RoleName=ROLE)["Role"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == [
        "BasicRetailStoreEcsTaskRoleDefaultPolicy9759E157"
    ]
    base = aws.iam.get_role_policy(
        RoleName=ROLE, PolicyName="BasicRetailStoreEcsTaskRoleDefaultPolicy9759E157"
    )["PolicyDocument"]
    actions = {a for st in base["Statement"] for a in st["Action"]}
    assert {a.split(":")[0] for a in actions} == {"ssmmessages", "elasticfilesystem"}
    assert aws.iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []
    attached = aws.iam.list_attached_role_policies(RoleName="retailStoreEcsTaskExecutionRole")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AmazonECSTaskExecutionRolePolicy"
    ]

    table = aws.dynamodb.describe_table(TableName="retail-store-ecs-carts")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    [gsi] = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "idx_global_customerId"
    assert gsi["KeySchema"] == [{"AttributeName": "customerId", "KeyType": "HASH"}]
    assert gsi["Projection"] == {"ProjectionType": "ALL"}

    tdef = aws.ecs.describe_task_definition(taskDefinition="retail-store-ecs-carts")[
        "taskDefinition"
    ]
    assert (tdef["cpu"], tdef["memory"], tdef["networkMode"]) == ("1024", "2048", "awsvpc")
    assert tdef["requiresCompatibilities"] == ["FARGATE"]
    assert tdef["taskRoleArn"] == role["Arn"]
    assert tdef["executionRoleArn"].endswith(":role/retailStoreEcsTaskExecutionRole")
    [container] = tdef["containerDefinitions"]
    assert container["name"] == "application" and container["essential"] is True
    assert container["image"] == "public.ecr.aws/aws-containers/retail-store-sample-cart:0.8.0"
    assert container["portMappings"][0]["containerPort"] == 8080
    assert {e["name"]: e["value"] for e in container["environment"]} == {
        "CARTS_DYNAMODB_TABLENAME": "retail-store-ecs-carts",
        "SPRING_PROFILES_ACTIVE": "dynamodb",
    }
    health = container["healthCheck"]
    assert health["command"][1] == "curl -f http://localhost:8080/actuator/health || exit 1"
    assert (health["interval"], health["timeout"], health["retries"], health["startPeriod"]) == (
        10,
        5,
        3,
        60,
    )
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == LOG_GROUP
    assert logs["options"]["awslogs-stream-prefix"] == "carts-service"
    groups = aws.logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [LOG_GROUP]

    service = aws.service()
    assert (service["launchType"], service["desiredCount"]) == ("FARGATE", 1)
    assert service["taskDefinition"] == tdef["taskDefinitionArn"]
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert len(network["subnets"]) == 2 and len(network["securityGroups"]) == 1
    assert network["assignPublicIp"] == "DISABLED"


# --- before any fix ---------------------------------------------------------------------------


def test_stopped_carts_tasks_look_like_ecs(aws: Clients) -> None:
    """AWS: a task whose essential container exits shows stopCode EssentialContainerExited,
    stoppedReason 'Essential container in task exited', container exitCode 1, healthStatus
    UNKNOWN; it was started by the service (group service:carts, startedBy ecs-svc/<id>)."""

    def two_stopped() -> list[dict[str, Any]] | None:
        found = aws.stopped()
        return found[:2] if len(found) >= 2 else None

    stopped = aws.wait("two stopped carts tasks", two_stopped)
    deployment = aws.service()["deployments"][0]["id"]
    for task in stopped:
        assert TASK_ARN.match(task["taskArn"]), task["taskArn"]
        assert task["lastStatus"] == "STOPPED"
        assert task["desiredStatus"] == "STOPPED"
        assert task["stopCode"] == "EssentialContainerExited"
        assert task["stoppedReason"] == "Essential container in task exited"
        assert task["group"] == f"service:{SERVICE}"
        assert re.fullmatch(r"ecs-svc/\d{19}", task["startedBy"])
        assert task["startedBy"] == deployment
        assert task["launchType"] == "FARGATE"
        assert task["cpu"] == "1024" and task["memory"] == "2048"
        [container] = task["containers"]
        assert container["taskArn"] == task["taskArn"]
        assert container["name"] == "application"
        assert container["lastStatus"] == "STOPPED"
        assert container["exitCode"] == 1
        assert container["healthStatus"] == "UNKNOWN"
        times = [task[k] for k in ("createdAt", "pullStartedAt", "pullStoppedAt", "startedAt")]
        assert times == sorted(times)
        assert task["startedAt"] <= task["executionStoppedAt"] <= task["stoppedAt"]
        assert task["startedAt"] <= task["stoppingAt"] <= task["stoppedAt"]


def test_log_names_query_on_the_index(aws: Clients) -> None:
    """AWS: the carts container log (stream carts-service/application/<task-id>) holds Spring
    Boot's failure report with IAM's sentence for dynamodb:Query on the index ARN, the role
    session being the task id."""
    task = aws.wait("a stopped carts task", lambda: (aws.stopped() or [None])[0])
    tid = task_id(task)
    found = aws.logs.filter_log_events(
        logGroupName=LOG_GROUP,
        logStreamNames=[f"carts-service/application/{tid}"],
        filterPattern='"is not authorized to perform"',
    )["events"]
    assert found
    denied = parse_access_denied(found[-1]["message"])
    assert denied is not None
    assert denied.action == "dynamodb:Query"
    assert denied.resource == INDEX_ARN
    assert denied.kind == NO_ALLOW
    assert denied.role_name == ROLE and denied.session_name == tid
    text = "\n".join(aws.log_messages(tid))
    assert "APPLICATION FAILED TO START" in text
    assert re.search(r"\(Service: DynamoDb, Status Code: 400, Request ID: [0-9A-Z]{52}\)", text)
    assert "Check that the DynamoDB table has been created" in text
    stamps = [
        e["timestamp"]
        for e in aws.logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=f"carts-service/application/{tid}"
        )["events"]
    ]
    assert stamps == sorted(stamps) and stamps[-1] <= aws.now() * 1000


def test_service_events_and_deployment_stay_in_progress(aws: Clients) -> None:
    """AWS: each replacement adds '(service carts) has started 1 tasks: (task <id>).', newest
    first; with no task staying up the deployment's rolloutState stays IN_PROGRESS."""
    aws.wait("three stopped tasks", lambda: len(aws.stopped()) >= 3)
    service = aws.service()
    events = service["events"]
    started = [e for e in events if "has started 1 tasks" in e["message"]]
    assert len(started) >= 3
    assert all(
        re.fullmatch(
            r"\(service carts\) has started 1 tasks: \(task [0-9a-f]{32}\)\.", e["message"]
        )
        for e in started
    )
    assert [e["createdAt"] for e in events] == sorted(
        (e["createdAt"] for e in events), reverse=True
    )
    assert len({e["id"] for e in events}) == len(events)
    assert not any("steady state" in m for m in iter_events(service))
    [deployment] = service["deployments"]
    assert deployment["status"] == "PRIMARY"
    assert deployment["rolloutState"] == "IN_PROGRESS"
    assert service["desiredCount"] == 1
    assert service["runningCount"] + service["pendingCount"] <= 1


def test_list_tasks_filters_by_service_and_defaults_to_running(aws: Clients) -> None:
    """AWS: ListTasks without desiredStatus lists tasks ECS wants RUNNING; serviceName filters
    by the service (unknown service: ServiceNotFoundException); startedBy filters."""
    aws.wait("a stopped task", lambda: aws.stopped())
    # A task ECS wants STOPPED never wants RUNNING again: list the stopped ones first.
    stopped = aws.task_arns("STOPPED")
    default = aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"]
    assert len(default) <= 1
    assert not set(default) & set(stopped)
    with pytest.raises(ClientError) as err:
        aws.ecs.list_tasks(cluster=CLUSTER, serviceName="orders")
    assert err.value.response["Error"]["Code"] == "ServiceNotFoundException"
    deployment = aws.service()["deployments"][0]["id"]
    by_starter = aws.ecs.list_tasks(cluster=CLUSTER, startedBy=deployment, desiredStatus="STOPPED")
    assert set(by_starter["taskArns"]) == set(stopped)


# --- the fix and its variants -----------------------------------------------------------------


def test_workshop_fix_brings_carts_up_for_good(aws: Clients) -> None:
    """AWS: after put-role-policy CartsDynamoPolicy (dynamodb:* on table/*) the next task
    reaches RUNNING and stays; the service reaches a steady state, the deployment completes;
    the cart table fills with items {id, customerId, itemId, quantity, unitPrice}."""
    aws.wait("a stopped task", lambda: aws.stopped())
    put_task_policy(aws, WORKSHOP_POLICY)
    task = aws.wait("a healthy carts task", lambda: aws.healthy_task())
    stopped_before = {t["taskArn"] for t in aws.stopped()}
    aws.let_pass(120)
    assert aws.describe([task["taskArn"]])[0]["lastStatus"] == "RUNNING"
    later = [t for t in aws.stopped() if t["taskArn"] not in stopped_before]
    assert later == []
    service = aws.service()
    messages = list(iter_events(service))
    deployment = service["deployments"][0]
    assert messages[0] == "(service carts) has reached a steady state."
    assert messages[1] == f"(service carts) (deployment {deployment['id']}) deployment completed."
    assert deployment["rolloutState"] == "COMPLETED"
    assert (service["runningCount"], service["pendingCount"]) == (1, 0)
    items = aws.dynamodb.scan(TableName="retail-store-ecs-carts")["Items"]
    assert items
    for item in items:
        assert set(item) == {"id", "customerId", "itemId", "quantity", "unitPrice"}
        assert item["id"]["S"] == f"{item['customerId']['S']}:{item['itemId']['S']}"
        assert int(item["quantity"]["N"]) >= 1 and int(item["unitPrice"]["N"]) > 0


@pytest.mark.parametrize(
    "actions", [ITEM_ACTIONS, [*ITEM_ACTIONS, "dynamodb:Query"]], ids=["items", "items+query"]
)
def test_a_policy_on_the_table_alone_still_fails_on_the_index(
    aws: Clients, actions: list[str]
) -> None:
    """IAM: a policy on table/<name> alone does not allow Query on table/<name>/index/<index>
    (not even when it names dynamodb:Query)."""
    since = put_task_policy(aws, policy(allow(actions, TABLE_ARN)))
    denied = denial_in_log(aws, first_failure_after(aws, since))
    assert (denied.action, denied.resource, denied.kind) == ("dynamodb:Query", INDEX_ARN, NO_ALLOW)


def test_least_privilege_policy_runs(aws: Clients) -> None:
    """IAM: item actions on the table ARN plus Query on the index ARN are all carts needs."""
    put_task_policy(aws, LEAST_PRIVILEGE_POLICY)
    aws.wait("a healthy carts task", lambda: aws.healthy_task())
    aws.wait("cart items", lambda: aws.dynamodb.scan(TableName="retail-store-ecs-carts")["Items"])


def test_explicit_deny_beside_the_workshop_policy_fails(aws: Clients) -> None:
    """IAM: an explicit Deny wins over any Allow; the sentence says 'with an explicit deny'."""
    put_task_policy(aws, WORKSHOP_POLICY)
    since = put_task_policy(
        aws, policy({"Effect": "Deny", "Action": "dynamodb:Query", "Resource": "*"}), "NoQuery"
    )
    task = first_failure_after(aws, since)
    denied = denial_in_log(aws, task)
    assert (denied.action, denied.kind) == ("dynamodb:Query", EXPLICIT_DENY)
    assert any(
        "with an explicit deny in an identity-based policy" in m
        for m in aws.log_messages(task_id(task))
    )


def test_attached_managed_policy_counts(aws: Clients) -> None:
    """IAM: attached managed policies (their default version) count like inline ones."""
    arn = aws.iam.create_policy(PolicyName="CartsDynamoManaged", PolicyDocument=WORKSHOP_POLICY)[
        "Policy"
    ]["Arn"]
    aws.iam.attach_role_policy(RoleName=ROLE, PolicyArn=arn)
    aws.wait("a healthy carts task", lambda: aws.healthy_task())


def test_deleting_the_policy_fails_the_next_task(aws: Clients) -> None:
    """ECS: a healthy task keeps running after the policy goes (its startup query is done);
    StopTask answers desiredStatus STOPPED with stopCode UserInitiated before the task has
    stopped; the replacement, started without the permission, fails again."""
    put_task_policy(aws, WORKSHOP_POLICY)
    task = aws.wait("a healthy carts task", lambda: aws.healthy_task())
    aws.iam.delete_role_policy(RoleName=ROLE, PolicyName="CartsDynamoPolicy")
    aws.let_pass(20)
    assert aws.describe([task["taskArn"]])[0]["lastStatus"] == "RUNNING"
    answer = aws.ecs.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="policy removed")[
        "task"
    ]
    assert answer["desiredStatus"] == "STOPPED"
    assert answer["lastStatus"] != "STOPPED"
    assert answer["stopCode"] == "UserInitiated"
    assert answer["stoppedReason"] == "policy removed"
    stopped_at = aws.now()
    old = aws.wait(
        "the stopped task", lambda: [t for t in aws.stopped() if t["taskArn"] == task["taskArn"]]
    )[0]
    assert old["containers"][0]["exitCode"] == 143
    failed = first_failure_after(aws, stopped_at)
    assert denial_in_log(aws, failed).action == "dynamodb:Query"


def test_running_app_logs_denied_calls_and_keeps_running(aws: Clients) -> None:
    """AWS: a request the app makes after a Deny appears as an ERROR with IAM's sentence; the
    app keeps running (only a start-up failure kills it)."""
    put_task_policy(aws, WORKSHOP_POLICY)
    task = aws.wait("a healthy carts task", lambda: aws.healthy_task())
    put_task_policy(
        aws,
        policy(
            {"Effect": "Deny", "Action": ["dynamodb:PutItem", "dynamodb:GetItem"], "Resource": "*"}
        ),
        "NoWrites",
    )
    aws.wait(
        "an ERROR line with the explicit-deny sentence",
        lambda: any(
            " ERROR " in m and "explicit deny" in m for m in aws.log_messages(task_id(task))
        ),
    )
    assert aws.describe([task["taskArn"]])[0]["lastStatus"] == "RUNNING"


# --- reset, routes, stop ----------------------------------------------------------------------


def history(aws: Clients) -> list[tuple[str, str, Any, str | None]]:
    """Every task of the service as (id, lastStatus, createdAt, stopCode), oldest first."""
    return [(task_id(t), t["lastStatus"], t["createdAt"], t.get("stopCode")) for t in aws.tasks()]


def test_reset_brings_back_the_broken_state(lab: Lab, aws: Clients) -> None:
    """The lab: reset removes policies written since, empties the table, restarts the service;
    on a stepped clock it replays the same history (ids and times come from the seed and the
    clock's fixed start)."""
    broken = history(aws)
    assert [s for _, s, _, _ in broken].count("STOPPED") == lab.config.history
    put_task_policy(aws, WORKSHOP_POLICY)
    aws.wait("a healthy carts task", lambda: aws.healthy_task())
    aws.wait("cart items", lambda: aws.dynamodb.scan(TableName="retail-store-ecs-carts")["Items"])
    lab.reset()
    names = aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    assert names == ["BasicRetailStoreEcsTaskRoleDefaultPolicy9759E157"]
    assert aws.dynamodb.scan(TableName="retail-store-ecs-carts")["Items"] == []
    assert history(aws) == broken
    failed = aws.stopped()
    assert denial_in_log(aws, failed[-1]).action == "dynamodb:Query"
    assert aws.service()["deployments"][0]["rolloutState"] == "IN_PROGRESS"


def test_control_routes(lab: Lab, aws: Clients) -> None:
    """The lab: GET /_lab/state, POST /_lab/faults (400 for a bad knob), POST /_lab/reset."""
    import json
    import urllib.error
    import urllib.request

    def call(path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        post = data is not None or path.endswith("reset")
        request = urllib.request.Request(
            lab.endpoint_url + path,
            data=data if data is not None else (b"{}" if post else None),
            method="POST" if post else "GET",
            headers={"X-Lab-Token": lab.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, state = call("/_lab/state")
    assert status == 200 and state["account_id"] == ACCOUNT and state["service"]["name"] == SERVICE
    status, answer = call("/_lab/faults", {"throttle_rate": 0.25})
    assert status == 200 and answer["faults"]["throttle_rate"] == 0.25
    assert lab.faults.throttle_rate == 0.25
    status, answer = call("/_lab/faults", {"colour": "red"})
    assert status == 400 and "colour" in answer["error"]
    status, answer = call("/_lab/faults", {"throttle_rate": 2})
    assert status == 400 and "throttle_rate" in answer["error"]
    status, answer = call("/_lab/reset")
    assert status == 200 and answer["reset"] is True
    assert lab.faults.throttle_rate == 0.0


def test_stop_leaves_no_thread_and_frees_the_port() -> None:
    """The lab: stop() ends every thread it started and frees its port; it is idempotent.
    moto: the x-moto-account-id header the lab adds selects the account."""
    import socket
    import threading

    from runbook_lib.params import Params

    before = set(threading.enumerate())
    lab = Lab.start(Params(account_id="210987654321"), LabConfig(time_scale=0.005))
    clients = Clients(lab.endpoint_url)
    assert clients.sts.get_caller_identity()["Account"] == "210987654321"
    clients.ecs.list_tasks(cluster=CLUSTER)
    port = lab.port
    lab.stop()
    lab.stop()
    assert set(threading.enumerate()) - before == set()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
