"""The ECS edge: the service, its deployment and events, its tasks as a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_lib.errors import NotFound
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import pandas as pd

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

_STARTED = re.compile(r"has started \d+ tasks?: (?P<tasks>.*)\.$")
_TASK_ID = re.compile(r"\(task ([0-9a-f]{32}|[0-9a-f-]{36})\)")


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
    def steady(self) -> bool:
        return (
            self.running == self.desired and self.pending == 0 and self.rollout_state == "COMPLETED"
        )

    def started_task_ids(self) -> list[str]:
        """Task ids named in "has started N tasks" events, newest first."""
        ids: list[str] = []
        for e in self.events:
            if _STARTED.search(e.get("message", "")):
                ids += _TASK_ID.findall(e["message"])
        return ids

    def counts(self) -> str:
        """Running counts only once a task stays up: before that they flicker with each retry."""
        if self.rollout_state == "COMPLETED":
            return f"running {self.running} of {self.desired}"
        return f"desired {self.desired}, no task has stayed up yet"

    def __str__(self) -> str:
        lines = [
            f"Service {self.name}: {self.status}, {self.counts()}; deployment "
            f"{self.primary.get('id', '?')} {self.rollout_state}.",
            "Recent events (newest first):",
        ]
        lines += [
            f"  {_fmt_time(e.get('createdAt'))}  {e.get('message', '')}" for e in self.events[:5]
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        colour = "#1b7f3b" if self.steady else "#a15c00"
        rows = "".join(
            f"<tr><td>{escape(_fmt_time(e.get('createdAt')))}</td>"
            f"<td>{escape(e.get('message', ''))}</td></tr>"
            for e in self.events[:5]
        )
        return (
            f"<p>Service <b>{escape(self.name)}</b>: {escape(self.status)}, {escape(self.counts())}; "
            f"deployment <code>{escape(str(self.primary.get('id', '?')))}</code> "
            f'<b style="color:{colour}">{escape(self.rollout_state)}</b>.</p>'
            f"<table><tr><th>time</th><th>event (newest first)</th></tr>{rows}</table>"
        )


def _fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%H:%M:%S")
    return "" if value is None else str(value)


def describe_service(ecs: Any, cluster: str, service: str) -> ServiceState:
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
    s = services[0]
    return ServiceState(
        name=s["serviceName"],
        status=s.get("status", ""),
        desired=int(s.get("desiredCount", 0)),
        running=int(s.get("runningCount", 0)),
        pending=int(s.get("pendingCount", 0)),
        task_definition=s.get("taskDefinition", ""),
        deployments=tuple(s.get("deployments", [])),
        events=tuple(s.get("events", [])),
    )


def list_service_tasks(ecs: Any, cluster: str, service: str, desired_status: str) -> list[str]:
    """Task ARNs of the service with ``desired_status`` (RUNNING or STOPPED)."""
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(
        cluster=cluster, serviceName=service, desiredStatus=desired_status
    ):
        arns += page.get("taskArns", [])
    return arns


def describe_tasks(ecs: Any, cluster: str, arns: list[str]) -> list[dict[str, Any]]:
    """``describe_tasks`` in batches of 100 (the API's limit)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(arns), 100):
        out += ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100]).get("tasks", [])
    return out


def essential_container(task: dict[str, Any]) -> dict[str, Any]:
    containers = task.get("containers", [])
    return containers[0] if containers else {}


def task_row(task: dict[str, Any]) -> dict[str, Any]:
    c = essential_container(task)
    return {
        "task": task_id(task["taskArn"]),
        "lastStatus": task.get("lastStatus", ""),
        "desiredStatus": task.get("desiredStatus", ""),
        "health": task.get("healthStatus", c.get("healthStatus", "")),
        "createdAt": task.get("createdAt"),
        "startedAt": task.get("startedAt"),
        "stoppedAt": task.get("stoppedAt"),
        "stopCode": task.get("stopCode", ""),
        "stoppedReason": task.get("stoppedReason", ""),
        "exitCode": c.get("exitCode"),
    }


def tasks_frame(tasks: list[dict[str, Any]], limit: int | None = None) -> pd.DataFrame:
    """Tasks as a DataFrame, newest first (by ``createdAt``), one row per task."""
    import pandas as pd

    rows = sorted(
        (task_row(t) for t in tasks), key=lambda r: _sort_key(r["createdAt"]), reverse=True
    )
    if limit is not None:
        rows = rows[:limit]
    frame = pd.DataFrame(rows, columns=TASK_COLUMNS)
    frame["exitCode"] = frame["exitCode"].astype("Int64")
    return frame


def _sort_key(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


@dataclass(frozen=True)
class TaskDefinition:
    arn: str
    task_role_arn: str
    execution_role_arn: str
    container: str
    log_group: str | None
    log_stream_prefix: str | None

    def log_stream(self, task: str) -> str | None:
        """The awslogs stream of the essential container of task ``task`` (an id)."""
        if self.log_stream_prefix is None:
            return None
        return f"{self.log_stream_prefix}/{self.container}/{task}"


def describe_task_definition(ecs: Any, arn: str) -> TaskDefinition:
    td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    containers = td.get("containerDefinitions", [])
    essential = next((c for c in containers if c.get("essential", True)), containers[0])
    log = essential.get("logConfiguration", {})
    opts = log.get("options", {}) if log.get("logDriver") == "awslogs" else {}
    return TaskDefinition(
        arn=td["taskDefinitionArn"],
        task_role_arn=td.get("taskRoleArn", ""),
        execution_role_arn=td.get("executionRoleArn", ""),
        container=essential["name"],
        log_group=opts.get("awslogs-group"),
        log_stream_prefix=opts.get("awslogs-stream-prefix"),
    )
