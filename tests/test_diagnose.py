"""The diagnosis on AWS-shaped data: which task, which container, which log, which cause.

Pure decisions are fed AWS's own answers (the aws CLI's documented example outputs, parsed the
way botocore parses them) changed only where a case needs it; the gathering is run against
botocore's Stubber, which refuses any answer AWS could not send. No lab, no network.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers import (
    ACCOUNT,
    CLUSTER,
    EXEC_ROLE,
    REGION,
    ROLE,
    SCALE_IN,
    TD_ARN,
    StubbedAWS,
    aws_example,
    carts_container,
    carts_denial,
    carts_service,
    carts_task,
    carts_task_definition,
)

from runbook_lib.access_denied import (
    EXPLICIT_DENY,
    NO_ALLOW,
    assumed_role_arn,
    format_access_denied,
)
from runbook_lib.diagnose import (
    Diagnosis,
    Evidence,
    LogEvidence,
    decide,
    excerpt,
    gather,
    pick_failed_task,
)
from runbook_lib.ecs import (
    ContainerDef,
    ServiceState,
    TaskDefinition,
    pick_app_container,
    tasks_frame,
)
from runbook_lib.stopped import Cause, classify_stop, is_failure

TD2_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/retail-store-ecs-carts:2"


def stopped_task(
    n: int,
    stop_code: str = "EssentialContainerExited",
    reason: str = "Essential container in task exited",
    exit_code: int | None = 1,
    td: str = TD_ARN,
    container_reason: str | None = None,
) -> dict[str, Any]:
    return carts_task(
        n,
        stop_code=stop_code,
        reason=reason,
        exit_code=exit_code,
        td=td,
        container_reason=container_reason,
    )


def evidence(
    tasks: list[dict[str, Any]],
    svc: dict[str, Any] | None = None,
    denials: tuple[str, ...] = (),
    lines: tuple[str, ...] = (),
    tds: tuple[dict[str, Any], ...] = (),
) -> Evidence:
    """Evidence as :func:`gather` would return it for these AWS answers."""
    known = {t.arn: t for t in map(TaskDefinition.from_api, (carts_task_definition(), *tds))}
    stopped = sorted(tasks, key=lambda t: t["createdAt"], reverse=True)
    failed = pick_failed_task(stopped, {a: t.container for a, t in known.items()})
    log = LogEvidence("retail-store-ecs-tasks", "s", denials, lines or denials)
    return Evidence(
        ServiceState.from_api(svc or carts_service()),
        known[TD_ARN],
        tuple(stopped),
        known,
        failed,
        log,
    )


def diagnosis(ev: Evidence) -> Diagnosis:
    return Diagnosis.from_evidence(ev, decide(ev, ROLE), ROLE)


# --- which task -------------------------------------------------------------------------------


def test_a_scale_in_is_not_the_failure_the_older_failed_task_is() -> None:
    """ServiceSchedulerInitiated with exit 143 (SIGTERM on request) stops a healthy task."""
    scaled = stopped_task(3, "ServiceSchedulerInitiated", SCALE_IN, exit_code=143)
    failed = stopped_task(2)
    ev = evidence([scaled, failed], denials=(carts_denial(2),))
    assert ev.failed is failed
    d = diagnosis(ev)
    assert d.cause == Cause.TASK_ROLE and d.stop_code == "EssentialContainerExited"
    assert d.record()["failed_task"] == f"{2:032x}"


@pytest.mark.parametrize(
    ("code", "reason", "exit_code", "failure"),
    [
        ("ServiceSchedulerInitiated", SCALE_IN, 143, False),
        ("UserInitiated", "Task stopped by user", 143, False),
        ("SpotInterruption", "Your Spot Task was interrupted.", 143, False),
        ("ServiceSchedulerInitiated", "Task failed container health checks", 143, True),
        ("TaskFailedToStart", "CannotPullContainerError: pull image manifest", None, True),
        ("EssentialContainerExited", "Essential container in task exited", 1, True),
        ("EssentialContainerExited", "Essential container in task exited", 143, False),
        ("EssentialContainerExited", "Essential container in task exited", 0, True),
    ],
)
def test_which_stopped_tasks_failed(
    code: str, reason: str, exit_code: int | None, failure: bool
) -> None:
    assert is_failure(stopped_task(1, code, reason, exit_code), "application") is failure


def test_no_failed_task_is_unknown_not_a_scale_in_blamed() -> None:
    d = diagnosis(evidence([stopped_task(1, "ServiceSchedulerInitiated", SCALE_IN, 143)]))
    assert d.cause == Cause.UNKNOWN and d.failed_task is None
    assert "no stopped task failed" in d.headline()


# --- which container ----------------------------------------------------------------------------


def test_the_app_container_is_picked_from_the_carts_task_definition() -> None:
    # AWS's example: two essential containers, neither a sidecar nor logging with awslogs.
    example = TaskDefinition.from_api(
        aws_example("ecs", "describe-task-definition")["taskDefinition"]
    )
    assert example.container == "wordpress" and example.log_group is None
    router = {"name": "log_router", "image": "amazon/aws-for-fluent-bit:stable"}
    router["firelensConfiguration"] = {"type": "fluentbit"}
    xray = {"name": "xray-daemon", "image": "amazon/aws-xray-daemon", "essential": False}
    app = carts_container("web")
    picks = TaskDefinition.from_api(carts_task_definition(TD_ARN, router, xray, app))
    assert picks.container == "web" and picks.log_stream_prefix == "carts-service"
    # Among several app containers, the workshop's name wins, then the one logging to awslogs.
    two = [ContainerDef("api"), ContainerDef("application"), ContainerDef("worker")]
    assert pick_app_container(two).name == "application"
    logs = [ContainerDef("a"), ContainerDef("b", log_driver="awslogs")]
    assert pick_app_container(logs).name == "b"


def test_a_service_connect_sidecar_does_not_speak_for_the_app() -> None:
    """ECS injects Service Connect's agent into the task (never in the task definition); its exit
    code and health are not the app's."""
    task = stopped_task(4)
    sidecar = copy.deepcopy(task["containers"][0])
    sidecar.update(name="ecs-service-connect-Xq2Tz", image="ecs-service-connect-agent", exitCode=0)
    sidecar["healthStatus"] = "HEALTHY"
    task["containers"] = [sidecar, task["containers"][0]]
    task["containers"][1]["healthStatus"] = "UNHEALTHY"
    frame = tasks_frame([task], apps={TD_ARN: "application"})
    assert frame.loc[0, "exitCode"] == 1 and frame.loc[0, "health"] == "UNHEALTHY"
    assert is_failure(task, "application")
    d = diagnosis(evidence([task], denials=(carts_denial(4),)))
    assert d.exit_code == 1 and d.cause == Cause.TASK_ROLE


def test_the_failed_task_is_read_with_its_own_carts_task_definition() -> None:
    """Between two revisions: the failed task ran revision 2, whose app container has another
    name; its exit code is read from that container."""
    app2 = carts_container("carts")
    task = stopped_task(5, td=TD2_ARN)
    task["containers"][0]["name"] = "carts"
    ev = evidence([task], denials=(carts_denial(5),), tds=(carts_task_definition(TD2_ARN, app2),))
    assert ev.failed_td is not None and ev.failed_td.container == "carts"
    d = diagnosis(ev)
    assert d.cause == Cause.TASK_ROLE and d.exit_code == 1


# --- which cause --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "policy_type", "cause", "words"),
    [
        (NO_ALLOW, "identity-based policy", Cause.TASK_ROLE, "no policy that allows it"),
        (EXPLICIT_DENY, "identity-based policy", Cause.TASK_ROLE, "Remove or narrow the Deny"),
        (NO_ALLOW, "permissions boundary", Cause.BOUNDARY, "put-role-permissions-boundary"),
        (EXPLICIT_DENY, "permissions boundary", Cause.BOUNDARY, "Remove the Deny"),
        (
            EXPLICIT_DENY,
            "service control policy",
            Cause.SCP,
            "No policy in this account can fix it",
        ),
        (NO_ALLOW, "session policy", Cause.SESSION_POLICY, "session policy"),
        (EXPLICIT_DENY, "resource-based policy", Cause.RESOURCE_POLICY, "resource-based policy"),
    ],
)
def test_each_denial_sentence_names_its_cause_and_what_fixes_it(
    kind: str, policy_type: str, cause: Cause, words: str
) -> None:
    d = diagnosis(evidence([stopped_task(1)], denials=(carts_denial(1, kind, policy_type),)))
    assert d.cause == cause, d.headline()
    assert words in d.headline()
    assert d.fixable_here is (cause == Cause.TASK_ROLE)
    assert d.record()["denial_policy_type"] == policy_type


def test_an_execution_role_denial_in_the_stopped_reason_is_the_execution_role() -> None:
    principal = assumed_role_arn(ACCOUNT, EXEC_ROLE, f"{1:032x}")
    sentence = format_access_denied(
        principal, "logs:CreateLogStream", "arn:aws:logs:us-west-2:1:log-group:g", NO_ALLOW
    )
    reason = (
        "ResourceInitializationError: failed to validate logger args: create stream has been "
        f"retried 1 times: failed to create Cloudwatch log stream: AccessDeniedException: {sentence}"
    )
    d = diagnosis(evidence([stopped_task(1, "TaskFailedToStart", reason, None)]))
    assert d.cause == Cause.EXECUTION_ROLE and not d.fixable_here
    assert "execution role" in d.headline() and "logs:CreateLogStream" in d.headline()


@pytest.mark.parametrize(
    ("code", "reason", "container_reason", "exit_code", "cause", "advice"),
    [
        (
            "TaskFailedToStart",
            "CannotPullContainerError: pull image manifest has been retried 7 time(s): failed to "
            "resolve ref: dial tcp 99.83.145.10:443: i/o timeout",
            None,
            None,
            Cause.IMAGE_PULL,
            "reach the registry",
        ),
        (
            "TaskFailedToStart",
            "ResourceInitializationError: unable to pull secrets or registry auth: execution "
            "resource retrieval failed: dial tcp: i/o timeout",
            None,
            None,
            Cause.RESOURCE_INIT,
            "DNS resolution",
        ),
        (
            "TaskFailedToStart",
            "CannotStartContainerError: failed to get container status: exec format error",
            None,
            None,
            Cause.CONTAINER_RUNTIME,
            "architecture",
        ),
        (
            "EssentialContainerExited",
            "Essential container in task exited",
            "OutOfMemoryError: Container killed due to memory usage",
            137,
            Cause.OUT_OF_MEMORY,
            "more memory",
        ),
        (
            "TaskFailedToStart",
            "Capacity is unavailable at this time. Please try again later.",
            None,
            None,
            Cause.CAPACITY,
            "Availability Zone",
        ),
        (
            "ServiceSchedulerInitiated",
            "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:...)",
            None,
            143,
            Cause.HEALTH_CHECK,
            "health check",
        ),
    ],
)
def test_aws_stopped_task_errors_each_get_their_cause_and_advice(
    code: str,
    reason: str,
    container_reason: str | None,
    exit_code: int | None,
    cause: Cause,
    advice: str,
) -> None:
    """AWS's "stopped task error codes": a policy on the task role fixes none of them."""
    task = stopped_task(1, code, reason, exit_code, container_reason=container_reason)
    assert classify_stop(task, "application").cause == cause
    d = diagnosis(evidence([task]))
    assert d.cause == cause and not d.fixable_here
    assert advice in d.headline() and "will not help" in d.headline()


def test_aws_stop_task_example_is_a_failure_to_start_the_task_role_cannot_fix() -> None:
    """stop-task's example: TaskFailedToStart with no known error prefix and no containers."""
    task = aws_example("ecs", "stop-task")["task"]
    assert is_failure(task) and classify_stop(task).cause == Cause.FAILED_TO_START
    d = diagnosis(evidence([task]))
    assert not d.fixable_here and "never used the task role" in d.headline()


def test_an_exit_without_a_denial_is_reported_and_left_to_the_reader() -> None:
    lines = tuple(f"line {i}" for i in range(40))
    d = diagnosis(evidence([stopped_task(1)], lines=lines))
    assert d.cause == Cause.APP_EXIT and d.fixable_here
    assert "exited with code 1 without an AccessDenied" in d.warnings[0]
    assert d.log_lines == list(lines[-12:])


def test_a_healthy_service_and_a_placement_failure() -> None:
    healthy = diagnosis(evidence([], carts_service(running=1, rollout="COMPLETED")))
    assert healthy.cause == Cause.HEALTHY and healthy.fixable_here
    unable = (
        "(service carts) was unable to place a task. Reason: Capacity is unavailable at this "
        "time. Please try again later or in a different availability zone."
    )
    placed = diagnosis(evidence([], carts_service(events=[unable])))
    assert placed.cause == Cause.CAPACITY and "no capacity" in placed.headline()


def test_a_failed_deployment_is_said_to_start_no_task() -> None:
    svc = carts_service(rollout="FAILED")
    svc["deployments"][0]["rolloutStateReason"] = (
        "ECS deployment circuit breaker: tasks failed to start."
    )
    d = diagnosis(evidence([stopped_task(1)], svc, denials=(carts_denial(1),)))
    assert d.cause == Cause.TASK_ROLE and d.service.rollout_state == "FAILED"
    assert any("starts no new task" in w and "--force-new-deployment" in w for w in d.warnings)


def test_a_task_definition_with_another_task_role_is_a_mismatch() -> None:
    ev = evidence([stopped_task(1)], denials=(carts_denial(1),))
    d = Diagnosis.from_evidence(ev, decide(ev, "SomeOtherRole"), "SomeOtherRole")
    assert (
        d.role_mismatch is not None and "uses task role retailStoreEcsTaskRole" in d.role_mismatch
    )


def test_the_excerpt_is_the_failure_report_or_the_lines_around_the_carts_denial() -> None:
    sentence = carts_denial(1)
    report = ["noise", "***", "APPLICATION FAILED TO START", "***", "Description:", sentence]
    assert excerpt(report, sentence)[:2] == ["***", "APPLICATION FAILED TO START"]
    trace = ["start", f"DynamoDbException: {sentence}", *[f"\tat frame{i}" for i in range(300)]]
    shown = excerpt(trace, f"DynamoDbException: {sentence}")
    assert shown[1].endswith("action") and len(shown) == 10


# --- gathering, against botocore's Stubber ---------------------------------------------------


def stub_service_reads(aws: StubbedAWS, tasks: list[dict[str, Any]], td: dict[str, Any]) -> None:
    """describe_services, the service's task definition, list_tasks in two pages, describe_tasks."""
    aws.add("ecs", "describe_services", {"services": [carts_service()], "failures": []})
    aws.add("ecs", "describe_task_definition", {"taskDefinition": td})
    arns = [t["taskArn"] for t in tasks]
    half = len(arns) // 2
    aws.add(
        "ecs",
        "list_tasks",
        {"taskArns": arns[:half], "nextToken": "page-2"},
        {"cluster": CLUSTER, "serviceName": "carts", "desiredStatus": "STOPPED"},
    )
    aws.add(
        "ecs",
        "list_tasks",
        {"taskArns": arns[half:]},
        {
            "cluster": CLUSTER,
            "serviceName": "carts",
            "desiredStatus": "STOPPED",
            "nextToken": "page-2",
        },
    )
    aws.add(
        "ecs",
        "describe_tasks",
        {"tasks": tasks, "failures": []},
        {"cluster": CLUSTER, "tasks": arns},
    )


def test_gather_searches_every_page_and_reads_around_the_carts_denial() -> None:
    """A JVM logs hundreds of events after the denial: the search finds it on its second page,
    after an empty first one ("partially full, or even empty"), and the context read follows
    nextForwardToken until AWS hands the same token back."""
    aws = StubbedAWS()
    tasks = [stopped_task(1), stopped_task(2, "ServiceSchedulerInitiated", SCALE_IN, 143)]
    stub_service_reads(aws, tasks, carts_task_definition())
    stream = f"carts-service/application/{1:032x}"
    sentence = carts_denial(1)
    search = {
        "logGroupName": "retail-store-ecs-tasks",
        "logStreamNames": [stream],
        "filterPattern": '"is not authorized to perform"',
    }
    aws.add("logs", "filter_log_events", {"events": [], "nextToken": "t1"}, search)
    found = {"logStreamName": stream, "timestamp": 1_700_000_000_000, "message": sentence}
    aws.add("logs", "filter_log_events", {"events": [found]}, {**search, "nextToken": "t1"})
    window = {
        "logGroupName": "retail-store-ecs-tasks",
        "logStreamName": stream,
        "startFromHead": True,
        "startTime": 1_699_999_999_000,
        "endTime": 1_700_000_001_000,
    }
    trace = [{"timestamp": 1_700_000_000_000, "message": f"\tat frame{i}"} for i in range(300)]
    page = {
        "events": [{"timestamp": 1_700_000_000_000, "message": sentence}],
        "nextBackwardToken": "b/1",
    }
    aws.add("logs", "get_log_events", {**page, "nextForwardToken": "f/1"}, window)
    rest = {"events": trace, "nextForwardToken": "f/2", "nextBackwardToken": "b/2"}
    aws.add("logs", "get_log_events", rest, {**window, "nextToken": "f/1"})
    end = {"events": [], "nextForwardToken": "f/2", "nextBackwardToken": "b/3"}
    aws.add("logs", "get_log_events", end, {**window, "nextToken": "f/2"})
    ev = gather(aws.client("ecs"), aws.client("logs"), CLUSTER, "carts")
    assert aws.pending() == {}
    assert ev.failed is not None and ev.failed["taskArn"].endswith(f"{1:032x}")
    assert ev.log.stream == stream and ev.log.denials == (sentence,)
    assert len(ev.log.lines) == 301
    d = Diagnosis.from_evidence(ev, decide(ev, ROLE), ROLE)
    assert d.cause == Cause.TASK_ROLE and d.log_lines[0] == sentence


def test_without_a_stream_prefix_the_stream_is_the_container_id() -> None:
    """awslogs without awslogs-stream-prefix (EC2): the stream is named after the container's
    runtimeId; no call sends an empty logStreamNamePrefix (botocore: min 1)."""
    aws = StubbedAWS()
    bare = carts_container()
    del bare["logConfiguration"]["options"]["awslogs-stream-prefix"]
    task = stopped_task(1)
    runtime = "91251eed27db90006ad67b1a08187290869f216557717dd5c39b37c94EXAMPLE"
    task["containers"][0]["runtimeId"] = runtime
    stub_service_reads(aws, [task], carts_task_definition(TD_ARN, bare))
    search = {
        "logGroupName": "retail-store-ecs-tasks",
        "logStreamNames": [runtime],
        "filterPattern": '"is not authorized to perform"',
    }
    aws.add("logs", "filter_log_events", {"events": []}, search)
    tail = {"logGroupName": "retail-store-ecs-tasks", "logStreamName": runtime}
    last = [{"timestamp": 1, "message": "Exception in thread main"}]
    aws.add(
        "logs",
        "get_log_events",
        {"events": last, "nextForwardToken": "f/1", "nextBackwardToken": "b/1"},
        {**tail, "limit": 12, "startFromHead": False},
    )
    aws.add(
        "logs",
        "get_log_events",
        {"events": [], "nextForwardToken": "f/1", "nextBackwardToken": "b/1"},
        {**tail, "limit": 12, "startFromHead": False, "nextToken": "b/1"},
    )
    ev = gather(aws.client("ecs"), aws.client("logs"), CLUSTER, "carts")
    assert aws.pending() == {}
    assert ev.log.stream == runtime and ev.log.lines == ("Exception in thread main",)
    assert decide(ev, ROLE).cause == Cause.APP_EXIT


def test_an_app_that_does_not_log_to_awslogs_is_said_so() -> None:
    aws = StubbedAWS()
    firelens = carts_container()
    firelens["logConfiguration"] = {"logDriver": "awsfirelens", "options": {"Name": "cloudwatch"}}
    stub_service_reads(aws, [stopped_task(1)], carts_task_definition(TD_ARN, firelens))
    ev = gather(aws.client("ecs"), aws.client("logs"), CLUSTER, "carts")
    assert aws.pending() == {} and "does not log with awslogs" in ev.log.note
    assert "awsfirelens" in " ".join(decide(ev, ROLE).warnings)
