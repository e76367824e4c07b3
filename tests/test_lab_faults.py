"""The lab's fault knobs and ECS's other ways to stop a task, seen through boto3."""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import (
    CLUSTER,
    LOG_GROUP,
    ROLE,
    SERVICE,
    WORKSHOP_POLICY,
    Clients,
    task_id,
)

from runbook_lib.lab import Lab, LabConfig, LabConfigError

pytestmark = pytest.mark.lab

EXEC_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"


LAB_SEED = 3


def fix(aws: Clients) -> float:
    aws.iam.put_role_policy(
        RoleName=ROLE, PolicyName="CartsDynamoPolicy", PolicyDocument=WORKSHOP_POLICY
    )
    return aws.now()


def test_propagation_delay_fails_the_first_task_after_the_fix(lab: Lab, aws: Clients) -> None:
    """IAM: a policy change may take a while to apply everywhere; a task launched seconds after
    put-role-policy can still be denied, a later one succeeds."""
    lab.set_faults(propagation_delay_s=60)
    fixed_at = fix(aws)
    failed = aws.wait(
        "a task created after the fix to fail",
        lambda: aws.stopped_after(fixed_at, "EssentialContainerExited"),
    )
    assert failed
    task = aws.wait("a healthy task", lambda: aws.healthy_task(fixed_at))
    assert task["createdAt"] > failed[0]["createdAt"]


def test_throttled_calls_are_retried_by_botocore(
    lab: Lab, aws: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS: throttling answers (IAM/STS 'Throttling', ECS and Logs 'ThrottlingException',
    DynamoDB 'ProvisionedThroughputExceededException', HTTP 400) are retried by botocore's
    standard retry mode until the call succeeds."""
    import boto3
    import botocore.endpoint

    # botocore sleeps between retries (up to seconds); the test checks the retrying, not the
    # waiting.
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)
    lab.set_faults(throttle_rate=0.5)
    session = boto3.Session(
        aws_access_key_id="lab", aws_secret_access_key="lab", region_name="us-west-2"
    )
    calls = {
        "iam": ("Throttling", lambda c: c.get_role(RoleName=ROLE)),
        "sts": ("Throttling", lambda c: c.get_caller_identity()),
        "ecs": ("ThrottlingException", lambda c: c.list_clusters()),
        "logs": ("ThrottlingException", lambda c: c.describe_log_groups()),
        "dynamodb": (
            "ProvisionedThroughputExceededException",
            lambda c: c.get_item(TableName="retail-store-ecs-carts", Key={"id": {"S": "x"}}),
        ),
    }
    for service, (code, call) in calls.items():
        retrying = session.client(
            service,
            endpoint_url=lab.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 12}),
        )
        attempts = [call(retrying)["ResponseMetadata"]["RetryAttempts"] for _ in range(6)]
        assert sum(attempts) > 0, service
        once = session.client(
            service,
            endpoint_url=lab.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )
        codes = set()
        for _ in range(12):
            try:
                call(once)
            except ClientError as exc:
                codes.add(exc.response["Error"]["Code"])
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert codes == {code}, service


def test_pull_fault_fails_tasks_before_they_run(lab: Lab, aws: Clients) -> None:
    """AWS: an image that cannot be pulled stops the task with stopCode TaskFailedToStart and
    'CannotPullContainerError: ...'; the container never ran, so it wrote no log stream."""
    lab.set_faults(execution_role_fault="pull")
    since = aws.now()
    [task, *_] = aws.wait(
        "a task that failed to start", lambda: aws.stopped_after(since, "TaskFailedToStart")
    )
    assert task["stoppedReason"].startswith("CannotPullContainerError: ")
    assert "startedAt" not in task and "pullStoppedAt" not in task
    [container] = task["containers"]
    assert "exitCode" not in container and container["lastStatus"] == "STOPPED"
    assert container["reason"] == task["stoppedReason"]
    assert aws.streams(task_id(task)) == []


def test_logs_fault_fails_tasks_with_resource_initialization_error(lab: Lab, aws: Clients) -> None:
    """AWS: an execution role that may not create the log stream stops the task with
    TaskFailedToStart and 'ResourceInitializationError: failed to validate logger args: ...
    AccessDeniedException ...'."""
    lab.set_faults(execution_role_fault="logs")
    since = aws.now()
    [task, *_] = aws.wait(
        "a task that failed to start", lambda: aws.stopped_after(since, "TaskFailedToStart")
    )
    reason = task["stoppedReason"]
    assert reason.startswith("ResourceInitializationError: failed to validate logger args: ")
    assert "AccessDeniedException" in reason and "logs:CreateLogStream" in reason
    assert "assumed-role/retailStoreEcsTaskExecutionRole/" + task_id(task) in reason
    assert aws.streams(task_id(task)) == []


def test_execution_role_without_its_policy_fails_to_start(aws: Clients) -> None:
    """AWS: detaching AmazonECSTaskExecutionRolePolicy takes logs:CreateLogStream from the
    execution role: tasks fail to start (TaskFailedToStart), not with an application error."""
    aws.iam.detach_role_policy(RoleName="retailStoreEcsTaskExecutionRole", PolicyArn=EXEC_POLICY)
    since = aws.now()
    [task, *_] = aws.wait(
        "a task that failed to start", lambda: aws.stopped_after(since, "TaskFailedToStart")
    )
    assert "logs:CreateLogStream" in task["stoppedReason"]
    assert "because no identity-based policy allows" in task["stoppedReason"]


def test_repeated_start_failures_are_throttled(lab: Lab, aws: Clients) -> None:
    """AWS: when tasks keep failing to start, ECS says the service 'is unable to consistently
    start tasks successfully' and waits longer between launches."""
    lab.set_faults(execution_role_fault="pull")
    aws.wait(
        "the start-throttling event",
        lambda: any("unable to consistently start tasks" in m for m in _messages(aws)),
    )


def test_force_new_deployment_replaces_the_running_task(aws: Clients) -> None:
    """ECS: update-service --force-new-deployment starts a new PRIMARY deployment, starts its
    task, stops the old one (ServiceSchedulerInitiated) once the new one is healthy."""
    fix(aws)
    old = aws.wait("a healthy task", lambda: aws.healthy_task())
    first = aws.service()["deployments"][0]["id"]
    service = aws.ecs.update_service(cluster=CLUSTER, service=SERVICE, forceNewDeployment=True)[
        "service"
    ]
    ids = [d["id"] for d in service["deployments"]]
    assert ids[1] == first and ids[0] != first
    assert [d["status"] for d in service["deployments"]] == ["PRIMARY", "ACTIVE"]
    new_id = ids[0]
    stopped = aws.wait(
        "the old task to stop",
        lambda: [t for t in aws.stopped() if t["taskArn"] == old["taskArn"]],
    )[0]
    assert stopped["stopCode"] == "ServiceSchedulerInitiated"
    assert stopped["stoppedReason"] == f"Scaling activity initiated by (deployment {new_id})"
    after = aws.service()
    assert [d["id"] for d in after["deployments"]] == [new_id]
    assert after["deployments"][0]["rolloutState"] == "COMPLETED"
    [running] = aws.describe(aws.task_arns("RUNNING"))
    assert running["startedBy"] == new_id


def test_desired_count_is_kept(aws: Clients) -> None:
    """ECS: the service scheduler keeps desiredCount tasks; runningCount counts them."""
    fix(aws)
    aws.ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=2)
    assert aws.service()["runningCount"] <= 1  # moto would claim 2 at once
    aws.wait(
        "two healthy tasks",
        lambda: (
            len([t for t in aws.describe(aws.task_arns()) if t["healthStatus"] == "HEALTHY"]) == 2
        ),
    )
    aws.wait("runningCount 2", lambda: aws.service()["runningCount"] == 2)
    aws.ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=1)
    aws.wait("one task left", lambda: len(aws.task_arns()) == 1)


def test_unknown_or_bad_knobs_are_refused(lab: Lab) -> None:
    """The lab: knobs are checked before they take effect."""
    with pytest.raises(LabConfigError, match="unknown fault knob 'colour'"):
        lab.set_faults(colour="red")
    with pytest.raises(LabConfigError, match="execution_role_fault"):
        lab.set_faults(execution_role_fault="disk")
    with pytest.raises(LabConfigError, match="throttle_rate"):
        lab.set_faults(throttle_rate=1.5)
    with pytest.raises(LabConfigError, match="time_scale"):
        LabConfig(time_scale=0)


def _messages(aws: Clients) -> list[str]:
    return [e["message"] for e in aws.service()["events"]]


def test_filter_log_events_honours_the_stream_prefix_and_interleaves(aws: Clients) -> None:
    """bc:logs FilterLogEvents: logStreamNamePrefix filters streams (moto ignores it);
    "interleaved ... is ignored and the value is assumed to be true": events in time order."""
    aws.wait("two stopped tasks", lambda: len(aws.stopped()) >= 2 or None)
    everything = aws.logs.filter_log_events(logGroupName=LOG_GROUP)["events"]
    stamps = [e["timestamp"] for e in everything]
    assert stamps == sorted(stamps)
    none = aws.logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNamePrefix="nothing/")
    assert none["events"] == []
    one = task_id(aws.stopped()[-1])
    found = aws.logs.filter_log_events(
        logGroupName=LOG_GROUP, logStreamNamePrefix=f"carts-service/application/{one}"
    )["events"]
    assert found and {e["logStreamName"] for e in found} == {f"carts-service/application/{one}"}


def test_stale_reads_are_a_knob_of_any_lab(aws: Clients) -> None:
    """The same eventual consistency as a fault knob on the workshop lab."""
    aws.lab.set_faults(stale_reads_s=5.0)
    aws.iam.put_role_policy(
        RoleName=ROLE, PolicyName="CartsDynamoPolicy", PolicyDocument=WORKSHOP_POLICY
    )
    assert "CartsDynamoPolicy" not in aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    aws.let_pass(5)
    assert "CartsDynamoPolicy" in aws.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
