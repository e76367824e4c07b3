"""The lab plays what real AWS accounts hand out: each scenario, seen through boto3, as AWS would
answer (each test names the AWS fact it reproduces), and a scenario set up by hand through the
API behaves the same as the one chosen by name.

Every lab here runs on a stepped clock (it moves only when a test waits) and holds its answers to
botocore's output shapes (the ``start_lab`` fixture fails a test whose lab answered otherwise).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import (
    CLUSTER,
    LOG_GROUP,
    ROLE,
    ROOT,
    SERVICE,
    WORKSHOP_POLICY,
    Clients,
    clean_env,
    iter_events,
    policy,
    task_id,
)

from runbook_lib.access_denied import PolicyType, parse_access_denied
from runbook_lib.lab import Lab, LabConfig, LabConfigError
from runbook_lib.lab.scenarios import BOUNDARY_POLICY, LOG_ROUTER, OTHER_POLICY, SCENARIOS
from runbook_lib.lab.scheduler import BREAKER_REASON, failure_threshold
from runbook_lib.params import Params

pytestmark = pytest.mark.lab

StartLab = Callable[..., Lab]
CHINA = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws-cn:s3:::b/*"})


def clients(lab: Lab) -> Clients:
    return Clients(lab.endpoint_url, region=lab.region, lab=lab)


def newest_stopped(aws: Clients) -> dict[str, Any]:
    return aws.wait("a stopped carts task", lambda: (aws.stopped() or [None])[-1])


def fix(aws: Clients) -> float:
    """The workshop's fix (put-role-policy CartsDynamoPolicy); returns when it was written."""
    aws.iam.put_role_policy(
        RoleName=ROLE, PolicyName="CartsDynamoPolicy", PolicyDocument=workshop_policy(aws)
    )
    return aws.now()


def workshop_policy(aws: Clients) -> str:
    if aws.region.startswith("cn-"):
        return WORKSHOP_POLICY.replace("arn:aws:", "arn:aws-cn:").replace("us-west-2", aws.region)
    return WORKSHOP_POLICY


def denials_of(aws: Clients, stream: str) -> list[Any]:
    events = aws.logs.get_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True
    )["events"]
    return [d for d in (parse_access_denied(e["message"]) for e in events) if d is not None]


def test_scenarios_are_named_and_sourced() -> None:
    """Each scenario says what the account holds, what the runbook must do, and the AWS document
    it follows; an unknown name is one sentence naming the choices."""
    assert next(iter(SCENARIOS)) == "workshop"
    for s in SCENARIOS.values():
        assert s.account and s.must and s.source, s.name
    with pytest.raises(LabConfigError, match="scenario must be one of workshop, no-health-check"):
        LabConfig(scenario="nope")


def test_circuit_breaker_threshold_is_half_the_desired_count_between_3_and_200() -> None:
    """bc:ecs ServiceDeploymentCircuitBreaker.threshold: 0.5 * desired, rounded up (the archived
    guide: 25 -> 13), at least 3, at most 200."""
    assert [failure_threshold(n) for n in (0, 1, 5, 6, 7, 25, 399, 400, 401, 10_000)] == [
        3,
        3,
        3,
        3,
        4,
        13,
        200,
        200,
        200,
        200,
    ]


# --- no health check --------------------------------------------------------------------------


def test_no_health_check_runs_unknown_and_running_counts_as_healthy(start_lab: StartLab) -> None:
    """bc:ecs Container.healthStatus: "If health checks aren't configured for this container in
    its task definition, then it reports the health status as UNKNOWN"; UpdateService: "Tasks
    for services that don't use a load balancer are considered healthy if they're in the RUNNING
    state": after the fix the deployment completes with a RUNNING, UNKNOWN task."""
    aws = clients(start_lab(scenario="no-health-check"))
    service = aws.service()
    tdef = aws.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    assert "healthCheck" not in tdef["taskDefinition"]["containerDefinitions"][0]
    assert tdef["taskDefinition"]["revision"] == 2
    stopped = newest_stopped(aws)
    assert stopped["taskDefinitionArn"] == service["taskDefinition"]
    assert stopped["healthStatus"] == "UNKNOWN"
    assert stopped["containers"][0]["healthStatus"] == "UNKNOWN"

    fix(aws)
    aws.let_pass(120)
    [task] = aws.describe(aws.task_arns())
    assert task["lastStatus"] == "RUNNING"
    assert aws.service()["deployments"][0]["rolloutState"] == "COMPLETED"
    assert task["healthStatus"] == "UNKNOWN"
    assert task["containers"][0]["healthStatus"] == "UNKNOWN"
    assert "(service carts) has reached a steady state." in list(iter_events(aws.service()))


# --- already fixed ------------------------------------------------------------------------------


def test_already_fixed_runs_healthy_and_starts_no_task_for_an_iam_change(
    start_lab: StartLab,
) -> None:
    """Another inline policy grants DynamoDB: carts RUNNING and HEALTHY, the deployment
    COMPLETED (bc:ecs Deployment.rolloutState). A further IAM change starts no task: ECS does
    not watch IAM, so the running task goes on."""
    aws = clients(start_lab(scenario="already-fixed"))
    assert OTHER_POLICY in aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    service = aws.service()
    assert service["deployments"][0]["rolloutState"] == "COMPLETED"
    assert (service["runningCount"], service["desiredCount"]) == (1, 1)
    [running] = aws.describe(aws.task_arns())
    assert running["healthStatus"] == "HEALTHY"

    fix(aws)
    aws.let_pass(300)
    [still] = aws.describe(aws.task_arns())
    assert task_id(still) == task_id(running) and still["lastStatus"] == "RUNNING"


# --- permissions boundary -----------------------------------------------------------------------


def test_a_boundary_denies_what_the_identity_policy_allows(start_lab: StartLab) -> None:
    """IAM User Guide (access_policies_boundaries.html): effective permissions are "the
    intersection of the two categories"; the denial reads "... because no permissions boundary
    allows the dynamodb:Query action" (troubleshoot_access-denied.html)."""
    aws = clients(start_lab(scenario="permissions-boundary"))
    boundary = aws.iam.get_role(RoleName=ROLE)["Role"]["PermissionsBoundary"]
    assert boundary["PermissionsBoundaryType"] == "PermissionsBoundaryPolicy"
    assert boundary["PermissionsBoundaryArn"].endswith(f":policy/{BOUNDARY_POLICY}")
    before = denials_of(aws, f"carts-service/application/{task_id(newest_stopped(aws))}")
    assert before[-1].policy_type == PolicyType.IDENTITY

    since = fix(aws)
    [after] = aws.wait(
        "a task started after the fix to stop",
        lambda: aws.stopped_after(since, "EssentialContainerExited")[:1],
    )
    denied = denials_of(aws, f"carts-service/application/{task_id(after)}")[0]
    assert denied.policy_type == PolicyType.BOUNDARY
    assert denied.action == "dynamodb:Query"
    assert str(denied).endswith("because no permissions boundary allows the dynamodb:Query action")


def test_the_propagation_delay_holds_the_boundary_too(start_lab: StartLab) -> None:
    """IAM eventual consistency (troubleshoot_general.html): removing a boundary, like any IAM
    change, reaches the task's calls only after the propagation delay."""
    lab = start_lab(scenario="permissions-boundary", propagation_delay_s=120.0)
    aws = clients(lab)
    fix(aws)
    aws.let_pass(130)  # the policy has propagated; the boundary still denies
    aws.iam.delete_role_permissions_boundary(RoleName=ROLE)
    removed = aws.now()
    early = aws.wait(
        "a task started soon after the boundary went to stop",
        lambda: aws.stopped_after(removed, "EssentialContainerExited")[:1],
    )
    assert denials_of(aws, f"carts-service/application/{task_id(early[0])}")[0].policy_type == (
        PolicyType.BOUNDARY
    )
    healthy = aws.wait("a HEALTHY task once the change has propagated", aws.healthy_task)
    assert healthy["createdAt"].timestamp() >= removed + 100


# --- circuit breaker ----------------------------------------------------------------------------


def test_circuit_breaker_fails_the_deployment_and_launches_nothing(start_lab: StartLab) -> None:
    """bc:ecs Deployment.rolloutState: after the threshold (3 for one task) the deployment is
    FAILED with "ECS deployment circuit breaker: tasks failed to start." and the service event
    "(deployment ...) deployment failed: tasks failed to start."; "A deployment in FAILED state
    doesn't launch any new tasks", even after the fix."""
    aws = clients(start_lab(scenario="circuit-breaker"))
    service = aws.service()
    breaker = service["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": False}
    primary = service["deployments"][0]
    assert (primary["status"], primary["rolloutState"]) == ("PRIMARY", "FAILED")
    assert primary["rolloutStateReason"] == BREAKER_REASON
    assert primary["failedTasks"] == 3
    event = (
        f"(service carts) (deployment {primary['id']}) deployment failed: tasks failed to start."
    )
    assert event in list(iter_events(service))

    fix(aws)
    aws.let_pass(300)
    assert aws.task_arns() == []
    assert aws.service()["deployments"][0]["rolloutState"] == "FAILED"


def test_force_new_deployment_starts_an_in_progress_deployment(start_lab: StartLab) -> None:
    """bc:ecs UpdateServiceRequest.forceNewDeployment "start[s] a new deployment with no service
    definition changes": IN_PROGRESS, failedTasks 0; the FAILED one stays ACTIVE; with the fix
    in place the new one completes (AWS-FACTS 1)."""
    aws = clients(start_lab(scenario="circuit-breaker"))
    failed = aws.service()["deployments"][0]
    fix(aws)
    aws.ecs.update_service(cluster=CLUSTER, service=SERVICE, forceNewDeployment=True)
    # The FAILED deployment has no task left: it is "completely replaced" (bc:ecs
    # Deployment.status) and no longer listed.
    [new] = aws.service()["deployments"]
    assert (new["status"], new["rolloutState"], new["failedTasks"]) == ("PRIMARY", "IN_PROGRESS", 0)
    assert new["id"] != failed["id"]
    aws.wait("a HEALTHY task of the new deployment", aws.healthy_task)
    [done] = aws.service()["deployments"]
    assert (done["id"], done["rolloutState"]) == (new["id"], "COMPLETED")


def test_rollback_on_goes_back_to_the_completed_deployment(start_lab: StartLab) -> None:
    """deployment-circuit-breaker.html: with rollback, ECS "looks for the most recent deployment
    that is in a COMPLETED state ... the deployment changes from a COMPLETED to IN_PROGRESS"."""
    aws = clients(start_lab(scenario="already-fixed"))
    completed = aws.service()["deployments"][0]
    aws.iam.delete_role_policy(RoleName=ROLE, PolicyName=OTHER_POLICY)
    aws.ecs.update_service(
        cluster=CLUSTER,
        service=SERVICE,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
        forceNewDeployment=True,
    )
    aws.wait(
        "the rollback",
        lambda: aws.service()["deployments"][0]["id"] == completed["id"] or None,
    )
    # The FAILED deployment had no task left: "completely replaced", no longer listed.
    [back] = aws.service()["deployments"]
    assert (back["status"], back["rolloutState"]) == ("PRIMARY", "IN_PROGRESS")
    assert back["rolloutStateReason"] == (
        f"ECS deployment circuit breaker: rolling back to deploymentId {completed['id']}."
    )
    assert f"(service carts) rolling back to deployment {completed['id']}." in list(
        iter_events(aws.service())
    )


# --- aws-cn ---------------------------------------------------------------------------------------


def test_aws_cn_makes_every_arn_in_its_partition(start_lab: StartLab) -> None:
    """botocore partitions (AWS-FACTS 9, 11): in cn-north-1 every ARN says arn:aws-cn: (tasks,
    containers, the ENI's attachment, the caller, the task's principal and the table in the
    denial), and IAM is another IAM than the aws partition's."""
    lab = start_lab(scenario="aws-cn")
    assert lab.region == "cn-north-1"
    aws = clients(lab)
    assert aws.sts.get_caller_identity()["Arn"].startswith("arn:aws-cn:sts::")
    assert aws.iam.get_role(RoleName=ROLE)["Role"]["Arn"].startswith("arn:aws-cn:iam::")
    task = newest_stopped(aws)
    assert task["taskArn"].startswith("arn:aws-cn:ecs:cn-north-1:")
    assert task["containers"][0]["containerArn"].startswith("arn:aws-cn:ecs:cn-north-1:")
    eni = [
        d["value"] for d in task["attachments"][0]["details"] if d["name"] == "networkInterfaceId"
    ]
    assert eni  # its description carries the attachment's ARN
    denied = denials_of(aws, f"carts-service/application/{task_id(task)}")[0]
    assert denied.principal.startswith("arn:aws-cn:sts::")
    assert denied.resource.startswith("arn:aws-cn:dynamodb:cn-north-1:")
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName="OnlyInChina", PolicyDocument=CHINA)
    other = Clients(lab.endpoint_url, region="us-west-2")
    try:
        seen = other.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchEntity"
    else:
        assert "OnlyInChina" not in seen


# --- no stream prefix ---------------------------------------------------------------------------


def test_without_a_stream_prefix_the_stream_is_the_container_id(start_lab: StartLab) -> None:
    """bc:ecs LogConfiguration.options: awslogs-stream-prefix is "Optional when using EC2"; without
    it "the log stream is named after the container ID that's assigned by the Docker daemon"."""
    aws = clients(start_lab(scenario="no-stream-prefix"))
    service = aws.service()
    assert service["launchType"] == "EC2"
    tdef = aws.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    options = tdef["taskDefinition"]["containerDefinitions"][0]["logConfiguration"]["options"]
    assert "awslogs-stream-prefix" not in options
    task = newest_stopped(aws)
    assert task["launchType"] == "EC2" and task["containerInstanceArn"]
    assert task.get("attachments", []) == [] and "platformVersion" not in task
    [container] = task["containers"]
    assert re.fullmatch(r"[0-9a-f]{64}", container["runtimeId"])
    denied = denials_of(aws, container["runtimeId"])[0]
    assert denied.action == "dynamodb:Query" and denied.session_name == task_id(task)


# --- sidecar ------------------------------------------------------------------------------------


def test_a_sidecar_is_listed_first_and_the_app_is_application(start_lab: StartLab) -> None:
    """bc:ecs Task.containers follows the task definition: the FireLens log router first, the
    essential carts container ``application`` second; the app exits 1, the router 0 when ECS
    stops it; the task is HEALTHY only when every essential container is (bc:ecs HealthCheck)."""
    aws = clients(start_lab(scenario="sidecar"))
    task = newest_stopped(aws)
    router, app = task["containers"]
    assert (router["name"], app["name"]) == (LOG_ROUTER, "application")
    assert (router["exitCode"], app["exitCode"]) == (0, 1)
    assert denials_of(aws, f"carts-service/application/{task_id(task)}")

    fix(aws)

    def router_healthy_app_not() -> dict[str, Any] | None:
        for t in aws.describe(aws.task_arns()):
            first, second = t["containers"]
            if first["healthStatus"] == "HEALTHY":
                return t if second["healthStatus"] == "UNKNOWN" else None
        return None

    starting = aws.wait("the router HEALTHY before the app", router_healthy_app_not)
    assert starting["healthStatus"] == "UNKNOWN"
    healthy = aws.wait("a HEALTHY task", aws.healthy_task)
    assert [c["healthStatus"] for c in healthy["containers"]] == ["HEALTHY", "HEALTHY"]


# --- knobs: log pages, stale reads -----------------------------------------------------------


def test_log_pages_are_partial_or_empty_before_the_end(start_lab: StartLab) -> None:
    """bc:logs GetLogEvents: "A returned page might only be partially full, or even empty ... As
    long as the nextBackwardToken or nextForwardToken returned is NOT equal to the nextToken that
    you passed ... there might be more"; at the end "it returns the same token you passed in".
    FilterLogEvents: the same pages; no nextToken when pagination is finished."""
    lab = start_lab(scenario="log-pages")
    aws = clients(lab)
    stream = f"carts-service/application/{task_id(newest_stopped(aws))}"

    first = aws.logs.get_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True
    )
    assert first["events"] == [] and first["nextForwardToken"]
    pages, token, seen = [], first["nextForwardToken"], []
    while True:
        page = aws.logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True, nextToken=token
        )
        if page["nextForwardToken"] == token:
            break
        pages.append(len(page["events"]))
        seen += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
    assert max(pages) <= 5 and 0 in pages
    newest = aws.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream)
    assert newest["events"] == []  # the default reads backward from the newest event
    back = aws.logs.get_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream, nextToken=newest["nextBackwardToken"]
    )["events"]
    assert 0 < len(back) <= 5 and [e["message"] for e in back] == seen[-len(back) :]

    filtered, next_token, calls = [], None, 0
    while True:
        kwargs = {"nextToken": next_token} if next_token else {}
        got = aws.logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNames=[stream], **kwargs)
        calls += 1
        assert len(got["events"]) <= 5 and got["searchedLogStreams"] == []
        filtered += [e["message"] for e in got["events"]]
        next_token = got.get("nextToken")
        if next_token is None:
            break
    assert calls > 2

    lab.set_faults(log_pages=False)
    whole = aws.logs.get_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True
    )
    assert [e["message"] for e in whole["events"]] == seen == filtered


def test_stale_reads_answer_the_state_before_a_write_for_a_while(start_lab: StartLab) -> None:
    """IAM User Guide (eventual consistency): a change "takes time to become visible from all
    possible endpoints": for stale_reads_s after a write GetRolePolicy, ListRolePolicies and
    GetRole answer the state before it; then the new state."""
    lab = start_lab(scenario="stale-reads")
    assert lab.faults.stale_reads_s == 10.0
    aws = clients(lab)
    fix(aws)
    assert "CartsDynamoPolicy" not in aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    with pytest.raises(ClientError, match="NoSuchEntity"):
        aws.iam.get_role_policy(RoleName=ROLE, PolicyName="CartsDynamoPolicy")
    aws.let_pass(10)
    assert "CartsDynamoPolicy" in aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]

    aws.iam.delete_role_policy(RoleName=ROLE, PolicyName="CartsDynamoPolicy")
    still = aws.iam.get_role_policy(RoleName=ROLE, PolicyName="CartsDynamoPolicy")
    assert still["PolicyDocument"] == json.loads(workshop_policy(aws))
    ceiling = policy({"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"})
    created = aws.iam.create_policy(PolicyName="Ceiling", PolicyDocument=ceiling)
    aws.iam.put_role_permissions_boundary(
        RoleName=ROLE, PermissionsBoundary=created["Policy"]["Arn"]
    )
    assert "PermissionsBoundary" not in aws.iam.get_role(RoleName=ROLE)["Role"]
    aws.let_pass(10)
    with pytest.raises(ClientError, match="NoSuchEntity"):
        aws.iam.get_role_policy(RoleName=ROLE, PolicyName="CartsDynamoPolicy")
    assert aws.iam.get_role(RoleName=ROLE)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"]


# --- by hand through the API = by name ------------------------------------------------------


def by_hand(name: str, aws: Clients) -> None:
    """What a user types to make the scenario ``name`` (aws CLI / boto3), then waits for."""
    service = aws.service()
    described = aws.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    definition = {
        k: v
        for k, v in described["taskDefinition"].items()
        if k
        in (
            "family",
            "taskRoleArn",
            "executionRoleArn",
            "networkMode",
            "containerDefinitions",
            "requiresCompatibilities",
            "cpu",
            "memory",
            "runtimePlatform",
        )
    }
    if name == "no-health-check":
        del definition["containerDefinitions"][0]["healthCheck"]
        arn = aws.ecs.register_task_definition(**definition)["taskDefinition"]["taskDefinitionArn"]
        aws.ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=arn)
        aws.wait("two failures", lambda: len(of_definition(aws, arn)) >= 2 or None)
    elif name == "permissions-boundary":
        ceiling = policy(
            {
                "Sid": "TaskRoleCeiling",
                "Effect": "Allow",
                "Action": ["ssmmessages:*", "elasticfilesystem:Client*", "logs:*", "s3:Get*"],
                "Resource": "*",
            }
        )
        arn = aws.iam.create_policy(
            PolicyName=BOUNDARY_POLICY,
            PolicyDocument=ceiling,
            Description="Ceiling for the retail store's task roles",
        )["Policy"]["Arn"]
        aws.iam.put_role_permissions_boundary(RoleName=ROLE, PermissionsBoundary=arn)
    elif name == "circuit-breaker":
        aws.ecs.update_service(
            cluster=CLUSTER,
            service=SERVICE,
            deploymentConfiguration={
                "deploymentCircuitBreaker": {"enable": True, "rollback": False},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
            forceNewDeployment=True,
        )
        aws.wait(
            "FAILED", lambda: aws.service()["deployments"][0]["rolloutState"] == "FAILED" or None
        )
    else:
        raise AssertionError(name)


def of_definition(aws: Clients, arn: str) -> list[dict[str, Any]]:
    return [t for t in aws.stopped() if t["taskDefinitionArn"] == arn]


def picture(aws: Clients) -> dict[str, Any]:
    """What the account shows, in the lab's own (seeded) terms: ids, states, events, logs."""
    service = aws.service()
    tasks = aws.tasks()
    return {
        "deployments": [
            {k: d.get(k) for k in ("id", "status", "rolloutState", "failedTasks", "runningCount")}
            for d in service["deployments"]
        ],
        "events": [(e["createdAt"], e["message"]) for e in service["events"]],
        "tasks": [
            (
                task_id(t),
                t["lastStatus"],
                t.get("stopCode"),
                t["healthStatus"],
                [(c["name"], c.get("exitCode"), c["healthStatus"]) for c in t["containers"]],
            )
            for t in tasks
        ],
        "denials": [
            str(d)
            for t in [t for t in tasks if t["lastStatus"] == "STOPPED"][-2:]
            for d in denials_of(aws, f"carts-service/application/{task_id(t)}")
        ],
        "boundary": aws.iam.get_role(RoleName=ROLE)["Role"].get("PermissionsBoundary"),
    }


@pytest.mark.parametrize("name", ["no-health-check", "permissions-boundary", "circuit-breaker"])
def test_a_scenario_set_up_by_hand_behaves_as_the_named_one(name: str, start_lab: StartLab) -> None:
    """The issue's rule: set up through the API (register-task-definition, update-service,
    put-role-permissions-boundary) the lab behaves the same as the scenario chosen by name, before
    and after the fix, on the same seed and the same steps of time."""
    pictures = []
    for how in ("by name", "by hand"):
        lab = start_lab(scenario=name) if how == "by name" else start_lab()
        aws = clients(lab)
        if how == "by hand":
            by_hand(name, aws)
        before = picture(aws)
        fix(aws)
        aws.let_pass(150)
        pictures.append((before, picture(aws)))
        lab.stop()
    assert pictures[0] == pictures[1]


# --- served ---------------------------------------------------------------------------------------


def test_serve_plays_a_scenario(tmp_path: Path) -> None:
    """`python -m runbook_lib.lab serve --scenario circuit-breaker`: the served lab's deployment
    is FAILED when it prints its exports, and its state names the scenario."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook_lib.lab",
            "serve",
            "--time-scale",
            "0.005",
            "--scenario",
            "circuit-breaker",
            "--validate-responses",
        ],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip().split("=", 1)[1]
        aws = Clients(endpoint)
        assert aws.service()["deployments"][0]["rolloutState"] == "FAILED"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "scenario circuit-breaker" in err


def test_params_region_of_the_scenarios_partition_is_kept(start_lab: StartLab) -> None:
    """aws-cn needs a region of partition aws-cn: cn-northwest-1 stays, us-west-2 becomes
    cn-north-1."""
    from runbook_lib.lab.lab import in_scenario_region

    assert in_scenario_region(Params(region="cn-northwest-1"), "aws-cn").region == "cn-northwest-1"
    assert in_scenario_region(Params(), "aws-cn").region == "cn-north-1"
    assert in_scenario_region(Params(), "workshop").region == "us-west-2"
