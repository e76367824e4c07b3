"""Why an ECS task stopped: AWS's stop codes and stopped-task errors, each with what to check.

Pure: every function takes ``describe_tasks`` tasks (dicts) and decides. Sources: botocore's
``TaskStopCode`` (``TaskFailedToStart``, ``EssentialContainerExited``, ``UserInitiated``,
``ServiceSchedulerInitiated``, ``SpotInterruption``, ``TerminationNotice``,
``InfrastructureHealth``) and AWS's "Amazon ECS stopped task error codes" page for the
``stoppedReason`` prefixes (AWS-FACTS.md section 8).

Which stopped task is a *failure*: a scale-in, a deployment replacing a task, or a person
stopping it stops a healthy task too (``ServiceSchedulerInitiated`` or ``UserInitiated``, its
containers exit with 143, 128 + SIGTERM), and so does a Spot interruption or AWS retiring the
host. None of those says anything about the app. A task that failed to start, whose essential
container exited on its own, or that the scheduler stopped for failing its health checks is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runbook_lib.ecs import app_container


class Cause(StrEnum):
    """What the diagnosis blames (the record's ``cause``)."""

    #: The task role's identity-based policies allow no call the app makes: the runbook's fix.
    TASK_ROLE = "task-role"
    #: The task role's permissions boundary allows no such call (or denies it).
    BOUNDARY = "boundary"
    #: A service (or resource) control policy of the organization denies it.
    SCP = "scp"
    #: The session policy the role was assumed with allows no such call.
    SESSION_POLICY = "session-policy"
    #: A resource-based or VPC endpoint policy denies it.
    RESOURCE_POLICY = "resource-policy"
    #: ECS, as the execution role, may not fetch what the task needs (registry auth, secrets,
    #: its log stream): the task never started.
    EXECUTION_ROLE = "execution-role"
    #: The image could not be pulled (its name or tag, or no route to the registry).
    IMAGE_PULL = "image-pull"
    #: Fargate could not set up the task's resources (network, volumes, secrets) for another
    #: reason than a denial.
    RESOURCE_INIT = "resource-initialization"
    #: The container runtime could not start, inspect or stop a container.
    CONTAINER_RUNTIME = "container-runtime"
    #: No capacity to place or run the task (Fargate capacity, CPU or memory on instances).
    CAPACITY = "capacity"
    #: A container was killed for using more memory than it may.
    OUT_OF_MEMORY = "out-of-memory"
    #: The scheduler stopped a running task that failed its container or load balancer checks.
    HEALTH_CHECK = "health-check"
    #: The app exited on its own, and its log names no denial.
    APP_EXIT = "app-exit"
    #: AWS took the capacity back (Spot interruption, host retirement, infrastructure health).
    INFRASTRUCTURE = "infrastructure"
    #: The task failed to start for a reason none of the above names: its app never ran, so it
    #: never used the task role.
    FAILED_TO_START = "failed-to-start"
    #: The service runs its tasks and its deployment completed.
    HEALTHY = "healthy"
    #: Nothing the runbook can name.
    UNKNOWN = "unknown"


#: Causes that a policy on the task role can fix (or that need nothing fixed). Every other stops
#: the run before anything is written: the runbook's one write would not help.
FIXABLE_HERE = frozenset({Cause.TASK_ROLE, Cause.HEALTHY, Cause.UNKNOWN, Cause.APP_EXIT})

#: Stop codes that say nothing about the app (it was told to stop, or lost its host).
NOT_FAILURES = frozenset({"ServiceSchedulerInitiated", "UserInitiated"})
INFRASTRUCTURE_CODES = frozenset({"SpotInterruption", "TerminationNotice", "InfrastructureHealth"})
#: 128 + SIGTERM: how a container stopped on request exits.
SIGTERM_EXIT = 143
#: 128 + SIGKILL: how a container killed for its memory (or not stopping in time) exits.
SIGKILL_EXIT = 137

_HEALTH_CHECK_REASONS = ("failed container health checks", "failed ELB health checks")
_NETWORK_MARKERS = ("i/o timeout", "dial tcp", "no such host", "context deadline exceeded")
_CAPACITY_MARKERS = ("Capacity is unavailable", "RESOURCE:CPU", "RESOURCE:MEMORY", "insufficient")


@dataclass(frozen=True)
class StopRule:
    """One of AWS's stopped-task errors: the ``stoppedReason`` prefix, what it means, what to do."""

    prefix: str
    cause: Cause
    meaning: str
    advice: str


#: AWS's "stopped task error codes", in the order they are tried (a reason starts with one).
STOP_RULES: tuple[StopRule, ...] = (
    StopRule(
        "CannotPullContainerError",
        Cause.IMAGE_PULL,
        "ECS could not pull the container image",
        "Check that the image name and tag exist, that the execution role may pull it "
        "(AmazonECSTaskExecutionRolePolicy: ecr:GetAuthorizationToken, ecr:BatchGetImage), and "
        "that the task's subnets reach the registry (a NAT gateway, a public IP, or ECR's VPC "
        "endpoints).",
    ),
    StopRule(
        "ResourceInitializationError",
        Cause.RESOURCE_INIT,
        "Fargate could not prepare the task's resources before its containers start (registry "
        "auth, secrets, the log driver, volumes)",
        "Read the rest of the reason: a timeout means the subnets cannot reach AWS's endpoints "
        "(a NAT gateway, a public IP, or VPC endpoints for ECR, Secrets Manager and CloudWatch "
        "Logs) or the VPC has no DNS resolution; a missing log group must be created (or "
        "awslogs-create-group set, with logs:CreateLogGroup on the execution role).",
    ),
    StopRule(
        "CannotStartContainerError",
        Cause.CONTAINER_RUNTIME,
        "the container runtime could not start the container",
        "Check the container's command and entry point, its image's architecture, and its "
        "memory and CPU settings; the rest of the reason is the runtime's own error.",
    ),
    StopRule(
        "ContainerRuntimeTimeoutError",
        Cause.CONTAINER_RUNTIME,
        "the container did not reach RUNNING in time",
        "The task's host or the runtime was slow or stuck; start the task again, and check the "
        "container's start-up if it happens every time.",
    ),
    StopRule(
        "DockerTimeoutError",
        Cause.CONTAINER_RUNTIME,
        "the container did not reach RUNNING in time (platform version 1.3 or older)",
        "Start the task again, and move the service to platform version 1.4 or later.",
    ),
    StopRule(
        "CannotCreateVolumeError",
        Cause.CONTAINER_RUNTIME,
        "ECS could not create a volume of the task",
        "Check the task definition's volumes (an EFS file system's mount targets and access "
        "point, a Docker volume driver).",
    ),
    StopRule(
        "CannotInspectContainerError",
        Cause.CONTAINER_RUNTIME,
        "the runtime could not report on the container",
        "A problem of the task's host: start the task again; on EC2, check the container agent.",
    ),
    StopRule(
        "CannotStopContainerError",
        Cause.CONTAINER_RUNTIME,
        "the runtime could not stop the container",
        "A problem of the task's host: on EC2, check the container agent and Docker.",
    ),
    StopRule(
        "OutOfMemoryError",
        Cause.OUT_OF_MEMORY,
        "a container was killed for using more memory than it may",
        "Give the container (or the task) more memory, or find why the app needs more.",
    ),
)

CAPACITY_RULE = StopRule(
    "",
    Cause.CAPACITY,
    "ECS had no capacity to place or run the task",
    "On Fargate, try again later or another subnet (Availability Zone); on EC2, add container "
    "instances or lower the task's CPU and memory.",
)
HEALTH_CHECK_RULE = StopRule(
    "",
    Cause.HEALTH_CHECK,
    "the scheduler stopped the task because it failed its health checks",
    "Read the app's log for why it does not answer its health check, and check the check "
    "itself (command, start period) or the target group's.",
)
INFRASTRUCTURE_RULE = StopRule(
    "",
    Cause.INFRASTRUCTURE,
    "AWS took the task's capacity back (a Spot interruption, a host's retirement)",
    "Nothing in the task is wrong: the service starts a replacement by itself.",
)
FAILED_TO_START_RULE = StopRule(
    "",
    Cause.FAILED_TO_START,
    "the task failed to start, so its app never ran and never used the task role",
    "Read the full stopped reason and the service's events for what ECS could not do.",
)
APP_EXIT_RULE = StopRule(
    "",
    Cause.APP_EXIT,
    "the app's container exited on its own",
    "Read the app's log around its last lines for the error it stopped on.",
)


@dataclass(frozen=True)
class StopVerdict:
    """Why one task stopped: the rule that matched, and the app container's exit code."""

    cause: Cause
    stop_code: str
    stopped_reason: str
    exit_code: int | None
    meaning: str
    advice: str

    @property
    def network(self) -> bool:
        """The reason reads like a network timeout (no route to an AWS endpoint)."""
        return any(m in self.stopped_reason for m in _NETWORK_MARKERS)


def reasons_of(task: dict[str, Any]) -> list[str]:
    """The task's ``stoppedReason`` and every container's ``reason`` (the detail of an error is
    sometimes only on the container, e.g. ``OutOfMemoryError: Container killed due to memory
    usage``)."""
    reasons = [str(task.get("stoppedReason", ""))]
    reasons += [str(c.get("reason", "")) for c in task.get("containers", [])]
    return [r for r in reasons if r]


def is_failure(task: dict[str, Any], app: str | None = None) -> bool:
    """Whether a STOPPED task failed (see the module docstring): it failed to start, its app
    exited on its own (not with 143 on request), an error code names why, or the scheduler
    stopped it for failing its health checks."""
    code = str(task.get("stopCode", ""))
    reasons = reasons_of(task)
    if any(r.startswith(rule.prefix) for r in reasons for rule in STOP_RULES):
        return True
    if code in INFRASTRUCTURE_CODES:
        return False
    if code in NOT_FAILURES:
        return any(h in r for r in reasons for h in _HEALTH_CHECK_REASONS)
    if code == "TaskFailedToStart":
        return True
    exit_code = app_container(task, app).get("exitCode")
    # EssentialContainerExited, or no stop code at all (an older agent): the exit code decides.
    return exit_code != SIGTERM_EXIT


def classify_stop(task: dict[str, Any], app: str | None = None) -> StopVerdict:
    """The cause of one stopped task from its stop code, reasons and the app's exit code.

    A denial in the app's log is not read here (see :mod:`runbook_lib.diagnose`): this is what
    ECS itself says.
    """
    code = str(task.get("stopCode", ""))
    reasons = reasons_of(task)
    reason = reasons[0] if reasons else ""
    exit_code = app_container(task, app).get("exitCode")

    def verdict(rule: StopRule, why: str = reason) -> StopVerdict:
        return StopVerdict(rule.cause, code, why, exit_code, rule.meaning, rule.advice)

    for rule in STOP_RULES:
        for r in reasons:
            if r.startswith(rule.prefix):
                return verdict(rule, r)
    if any(m in r for r in reasons for m in _CAPACITY_MARKERS):
        return verdict(CAPACITY_RULE)
    if any(h in r for r in reasons for h in _HEALTH_CHECK_REASONS):
        return verdict(HEALTH_CHECK_RULE)
    if code in INFRASTRUCTURE_CODES:
        return verdict(INFRASTRUCTURE_RULE)
    if code == "TaskFailedToStart":
        return verdict(FAILED_TO_START_RULE)
    return verdict(APP_EXIT_RULE)


def capacity_verdict(message: str) -> StopVerdict:
    """The verdict for a service event saying no task could be placed."""
    return StopVerdict(
        Cause.CAPACITY, "", message, None, CAPACITY_RULE.meaning, CAPACITY_RULE.advice
    )
