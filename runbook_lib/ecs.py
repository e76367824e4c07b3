"""The ECS edge: the service, its deployment and events, its tasks as a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from runbook_lib.blocks import Block, Sentence, Table
from runbook_lib.errors import NotFound
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import pandas as pd
    from mypy_boto3_ecs import ECSClient

TASK_COLUMNS = [
    "task",
    "lastStatus",
    "desiredStatus",
    "health",
    "createdAt",
    "startedAt",
    "stoppedAt",
    "stopCode",
    "stoppedReason",
    "exitCode",
]


def task_id(arn: str) -> str:
    """The id at the end of a task ARN."""
    return arn.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ServiceState(Shows):
    """``describe_services`` for one service, reduced to what the runbook reads."""

    name: str
    status: str
    desired: int
    running: int
    pending: int
    task_definition: str
    deployments: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]  # newest first

    @classmethod
    def from_api(cls, s: Mapping[str, Any]) -> ServiceState:
        """From one of ``describe_services``' ``services``."""
        return cls(
            name=str(s["serviceName"]),
            status=str(s.get("status", "")),
            desired=int(s.get("desiredCount", 0)),
            running=int(s.get("runningCount", 0)),
            pending=int(s.get("pendingCount", 0)),
            task_definition=str(s.get("taskDefinition", "")),
            deployments=tuple(s.get("deployments", [])),
            events=tuple(s.get("events", [])),
        )

    @property
    def primary(self) -> dict[str, Any]:
        for d in self.deployments:
            if d.get("status") == "PRIMARY":
                return d
        return self.deployments[0] if self.deployments else {}

    @property
    def rollout_state(self) -> str:
        return str(self.primary.get("rolloutState", "UNKNOWN"))

    @property
    def rollout_reason(self) -> str:
        """``rolloutStateReason`` of the primary deployment (e.g. ``ECS deployment circuit
        breaker: tasks failed to start.``), empty when ECS gave none."""
        return str(self.primary.get("rolloutStateReason", ""))

    @property
    def deployment_failed(self) -> bool:
        """The primary deployment is FAILED: "A deployment in FAILED state doesn't launch any new
        tasks" (botocore's ``Deployment.rolloutState``), so waiting for a new task is pointless."""
        return self.rollout_state == "FAILED"

    def placement_failures(self, newest: int = 5) -> list[str]:
        """Among the ``newest`` events, those where the scheduler could not place a task
        (``(service S) was unable to place a task because no container instance met all of its
        requirements...``, or on Fargate ``... Reason: Capacity is unavailable at this time``)."""
        return [
            str(e.get("message", ""))
            for e in self.events[:newest]
            if "unable to place a task" in str(e.get("message", ""))
        ]

    @property
    def steady(self) -> bool:
        return (
            self.running == self.desired and self.pending == 0 and self.rollout_state == "COMPLETED"
        )

    def counts(self) -> str:
        """Running counts only once a task stays up: before that they flicker with each retry."""
        if self.rollout_state == "COMPLETED":
            return f"running {self.running} of {self.desired}"
        return f"desired {self.desired}, no task has stayed up yet"

    def blocks(self) -> list[Block]:
        import pandas as pd

        events = pd.DataFrame(
            [(e.get("createdAt"), str(e.get("message", ""))) for e in self.events[:5]],
            columns=["time", "event (newest first)"],
        )
        line = (
            f"Service {self.name}: {self.status}, {self.counts()}; deployment "
            f"{self.primary.get('id', '?')} {self.rollout_state}."
        )
        return [
            Sentence(line, "ok" if self.steady else "warn"),
            Table(events, empty="No events yet."),
        ]


def describe_service(ecs: ECSClient, cluster: str, service: str) -> ServiceState:
    """Read the service; :class:`NotFound` names the cluster or service that is missing."""
    try:
        got = ecs.describe_services(cluster=cluster, services=[service])
    except ecs.exceptions.ClusterNotFoundException:
        raise NotFound(
            f"ECS cluster {cluster!r} does not exist in this account and region.", "cluster"
        ) from None
    services = [s for s in got.get("services", []) if s.get("status") != "INACTIVE"]
    if not services:
        reasons = "; ".join(f.get("reason", "") for f in got.get("failures", []))
        if "cluster" in reasons.lower():
            raise NotFound(
                f"ECS cluster {cluster!r} does not exist in this account and region.", "cluster"
            )
        raise NotFound(f"ECS service {service!r} does not exist in cluster {cluster!r}.", "service")
    return ServiceState.from_api(services[0])


def list_service_tasks(
    ecs: ECSClient, cluster: str, service: str, desired_status: Literal["RUNNING", "STOPPED"]
) -> list[str]:
    """Task ARNs of the service with ``desired_status`` (RUNNING or STOPPED)."""
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(
        cluster=cluster, serviceName=service, desiredStatus=desired_status
    ):
        arns += page.get("taskArns", [])
    return arns


def describe_tasks(ecs: ECSClient, cluster: str, arns: list[str]) -> list[dict[str, Any]]:
    """``describe_tasks`` in batches of 100 (the API's limit)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(arns), 100):
        out += plain(ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100]).get("tasks", []))
    return out


def plain(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The API's typed answers as the JSON the pure functions read (the shape of the aws CLI's
    output too): the edge checks what it sends and reads; what it hands on is data."""
    return [dict(i) for i in items]


def app_container(task: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The app's container in a ``describe_tasks`` task: the one named ``name`` (the task
    definition's app container, :func:`pick_app_container`).

    Without ``name``, or when no container has it: the first container that is not a sidecar ECS
    injects or a known one (:func:`is_known_sidecar`), else the first. Empty when the task has no
    containers (one that failed before ECS created them).
    """
    containers: list[dict[str, Any]] = task.get("containers", [])
    if name is not None:
        for c in containers:
            if c.get("name") == name:
                return c
    for c in containers:
        if not is_known_sidecar(str(c.get("name", "")), str(c.get("image", ""))):
            return c
    return containers[0] if containers else {}


def app_health(task: dict[str, Any], name: str | None = None) -> str:
    """The app container's ``healthStatus``, else the task's.

    The task's own health is the worst of its essential containers' (botocore's
    ``Task.healthStatus``): a sidecar without a health check keeps it UNKNOWN forever, so the
    app's own is the one that says whether the app is up.
    """
    container = app_container(task, name)
    return str(container.get("healthStatus") or task.get("healthStatus") or "UNKNOWN")


def task_row(task: dict[str, Any], app: str | None = None) -> dict[str, Any]:
    c = app_container(task, app)
    return {
        "task": task_id(task["taskArn"]),
        "lastStatus": task.get("lastStatus", ""),
        "desiredStatus": task.get("desiredStatus", ""),
        "health": app_health(task, app),
        "createdAt": task.get("createdAt"),
        "startedAt": task.get("startedAt"),
        "stoppedAt": task.get("stoppedAt"),
        "stopCode": task.get("stopCode", ""),
        "stoppedReason": task.get("stoppedReason", ""),
        "exitCode": c.get("exitCode"),
    }


def tasks_frame(
    tasks: list[dict[str, Any]],
    limit: int | None = None,
    apps: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Tasks as a DataFrame, newest first (by ``createdAt``), one row per task.

    ``apps``: the app container's name by task definition ARN, so that each row shows the exit
    code and health of its own task definition's app container.
    """
    import pandas as pd

    rows = sorted(
        (task_row(t, (apps or {}).get(t.get("taskDefinitionArn", ""))) for t in tasks),
        key=lambda r: _sort_key(r["createdAt"]),
        reverse=True,
    )
    if limit is not None:
        rows = rows[:limit]
    frame = pd.DataFrame(rows, columns=TASK_COLUMNS)
    frame["exitCode"] = frame["exitCode"].astype("Int64")
    return frame


def _sort_key(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


# --- task definitions ----------------------------------------------------------------------------

#: Names and images of containers that run beside an app and are not it: the FireLens log router
#: (AWS's ``aws-for-fluent-bit``), the X-Ray daemon, the CloudWatch agent, the ADOT collector,
#: App Mesh's Envoy, and Service Connect's agent (ECS injects it into the task as
#: ``ecs-service-connect-<id>``; it is never in the task definition).
KNOWN_SIDECAR_NAMES = (
    "ecs-service-connect-",
    "log_router",
    "log-router",
    "firelens",
    "fluent-bit",
    "xray",
    "aws-xray-daemon",
    "cloudwatch-agent",
    "cwagent",
    "aws-otel-collector",
    "otel-collector",
    "adot-collector",
    "envoy",
    "datadog-agent",
)
KNOWN_SIDECAR_IMAGES = (
    "aws-for-fluent-bit",
    "fluent-bit",
    "aws-xray-daemon",
    "cloudwatch-agent",
    "aws-otel-collector",
    "aws-appmesh-envoy",
    "ecs-service-connect-agent",
    "datadog/agent",
)
#: The workshop's app container (WORKSHOP.md 3.1): the one chosen among several candidates.
WORKSHOP_CONTAINER = "application"


def is_known_sidecar(name: str, image: str = "", *, firelens: bool = False) -> bool:
    """Whether a container is a known sidecar (by its FireLens configuration, name or image)."""
    lname, limage = name.lower(), image.lower()
    return (
        firelens
        or any(lname == s or lname.startswith(s) for s in KNOWN_SIDECAR_NAMES)
        or any(s in limage for s in KNOWN_SIDECAR_IMAGES)
    )


@dataclass(frozen=True)
class ContainerDef:
    """One container definition, reduced to what the runbook reads."""

    name: str
    image: str = ""
    essential: bool = True
    has_health_check: bool = False
    log_driver: str | None = None
    log_options: tuple[tuple[str, str], ...] = ()
    firelens: bool = False

    @property
    def sidecar(self) -> bool:
        return is_known_sidecar(self.name, self.image, firelens=self.firelens)

    def log_option(self, key: str) -> str | None:
        return dict(self.log_options).get(key)

    @classmethod
    def from_api(cls, c: Mapping[str, Any]) -> ContainerDef:
        """From a ``containerDefinitions`` entry (``essential`` omitted means true)."""
        log = c.get("logConfiguration") or {}
        return cls(
            name=str(c.get("name", "")),
            image=str(c.get("image", "")),
            essential=bool(c.get("essential", True)),
            has_health_check=bool((c.get("healthCheck") or {}).get("command")),
            log_driver=log.get("logDriver"),
            log_options=tuple(sorted((log.get("options") or {}).items())),
            firelens=c.get("firelensConfiguration") is not None,
        )


def pick_app_container(
    containers: Sequence[ContainerDef], preferred: str = WORKSHOP_CONTAINER
) -> ContainerDef:
    """The app container of a task definition: whose exit code, health and log tell the story.

    A task definition may hold sidecars beside the app (a FireLens log router, an X-Ray daemon,
    Envoy), essential or not, and ECS adds Service Connect's agent to the task itself. Decided so:

    1. only essential containers (``essential`` omitted means true); a non-essential one cannot
       stop the task, so it is not the one that failed it;
    2. among them, those that are not known sidecars (:func:`is_known_sidecar`: a
       ``firelensConfiguration``, or a known name or image); if every one is, all of them;
    3. the one named ``preferred`` (the workshop's ``application``) if there is one;
    4. else the first whose log the runbook can read (the ``awslogs`` driver);
    5. else the first, in the task definition's order.

    Raises ValueError for a task definition without containers (ECS cannot register one).
    """
    if not containers:
        raise ValueError("a task definition has at least one container definition")
    essential = [c for c in containers if c.essential] or list(containers)
    apps = [c for c in essential if not c.sidecar] or essential
    for c in apps:
        if c.name == preferred:
            return c
    for c in apps:
        if c.log_driver == "awslogs":
            return c
    return apps[0]


@dataclass(frozen=True)
class TaskDefinition:
    """A task definition, reduced to its roles and its app container (:func:`pick_app_container`).

    ``log_group`` and ``log_stream_prefix`` are the app container's ``awslogs`` options (None
    without the ``awslogs`` driver or without a prefix); ``has_health_check`` says whether the app
    container defines a ``healthCheck`` (without one ECS reports its health as UNKNOWN for ever).
    """

    arn: str
    task_role_arn: str
    execution_role_arn: str
    container: str
    log_group: str | None
    log_stream_prefix: str | None
    has_health_check: bool = True
    containers: tuple[ContainerDef, ...] = ()
    log_driver: str | None = "awslogs"

    @property
    def task_role_name(self) -> str:
        return self.task_role_arn.rsplit("/", 1)[-1] if self.task_role_arn else ""

    @property
    def name(self) -> str:
        """``family:revision``."""
        return self.arn.rsplit("/", 1)[-1]

    def log_stream(self, task: str, runtime_id: str | None = None) -> str | None:
        """The awslogs stream of the app container of task ``task`` (an id).

        With ``awslogs-stream-prefix``: ``prefix/container-name/task-id``. Without one (allowed
        on the EC2 launch type) the stream is named after the container's Docker id, which
        ``describe_tasks`` gives as ``containers[].runtimeId``: ``runtime_id``, or None when the
        container never ran (botocore's ``LogConfiguration.options``).
        """
        if self.log_group is None:
            return None
        if self.log_stream_prefix is None:
            return runtime_id or None
        return f"{self.log_stream_prefix}/{self.container}/{task}"

    def log_stream_of(self, task: Mapping[str, Any]) -> str | None:
        """:meth:`log_stream` for a ``describe_tasks`` task (its id and its app's runtime id)."""
        runtime = app_container(dict(task), self.container).get("runtimeId")
        return self.log_stream(task_id(str(task["taskArn"])), runtime)

    @property
    def streams_prefix(self) -> str | None:
        """The prefix every app stream of this task definition starts with, or None when the
        streams are named after container ids (then no prefix tells them apart)."""
        if self.log_group is None or self.log_stream_prefix is None:
            return None
        return f"{self.log_stream_prefix}/{self.container}/"

    @classmethod
    def from_api(cls, td: Mapping[str, Any], preferred: str = WORKSHOP_CONTAINER) -> TaskDefinition:
        """From ``describe_task_definition``'s ``taskDefinition``."""
        containers = tuple(ContainerDef.from_api(c) for c in td.get("containerDefinitions", []))
        app = pick_app_container(containers, preferred)
        awslogs = app.log_driver == "awslogs"
        return cls(
            arn=str(td["taskDefinitionArn"]),
            task_role_arn=str(td.get("taskRoleArn", "")),
            execution_role_arn=str(td.get("executionRoleArn", "")),
            container=app.name,
            log_group=app.log_option("awslogs-group") if awslogs else None,
            log_stream_prefix=(app.log_option("awslogs-stream-prefix") or None)
            if awslogs
            else None,
            has_health_check=app.has_health_check,
            containers=containers,
            log_driver=app.log_driver,
        )


def describe_task_definition(ecs: ECSClient, arn: str) -> TaskDefinition:
    """Read a task definition (by ARN or ``family:revision``)."""
    return TaskDefinition.from_api(
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    )


class TaskDefinitions:
    """Task definitions read once each: a service's tasks may come from several revisions, and
    each task is judged by its own (``describe_tasks``' ``taskDefinitionArn``)."""

    def __init__(self, ecs: ECSClient, known: Sequence[TaskDefinition] = ()) -> None:
        self.ecs = ecs
        self._by_arn: dict[str, TaskDefinition] = {td.arn: td for td in known}

    def get(self, arn: str) -> TaskDefinition:
        found = self._by_arn.get(arn)
        if found is None:
            found = describe_task_definition(self.ecs, arn)
            self._by_arn[arn] = found
        return found

    def of(self, task: Mapping[str, Any]) -> TaskDefinition:
        return self.get(str(task["taskDefinitionArn"]))

    @property
    def known(self) -> dict[str, TaskDefinition]:
        return dict(self._by_arn)

    def apps(self) -> dict[str, str]:
        """The app container's name by task definition ARN (for :func:`tasks_frame`)."""
        return {arn: td.container for arn, td in self._by_arn.items()}
