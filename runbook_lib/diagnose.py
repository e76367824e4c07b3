"""See the failure (workshop 3.1): stopped tasks, their logs, and which role is to blame."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from runbook_lib.access_denied import AccessDenied, parse_access_denied
from runbook_lib.display import task_table_html, task_table_text
from runbook_lib.ecs import (
    ServiceState,
    TaskDefinition,
    describe_service,
    describe_task_definition,
    describe_tasks,
    essential_container,
    list_service_tasks,
    task_id,
    tasks_frame,
)
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import pandas as pd

TASK_ROLE = "task-role"
EXECUTION_ROLE = "execution-role"
HEALTHY = "healthy"
UNKNOWN = "unknown"
#: How many stopped tasks the diagnosis shows (the newest ones; older ones say nothing more).
SHOWN_STOPPED = 3

_EXEC_ROLE_REASONS = ("CannotPullContainerError", "ResourceInitializationError")


def read_log_lines(logs: Any, group: str, stream: str, limit: int = 60) -> list[str]:
    """The last ``limit`` lines of a log stream (empty if the stream does not exist)."""
    try:
        got = logs.get_log_events(
            logGroupName=group, logStreamName=stream, limit=limit, startFromHead=False
        )
    except logs.exceptions.ResourceNotFoundException:
        return []
    # awslogs writes one event per line; split anyway in case a writer sent a block.
    return [ln for e in got.get("events", []) for ln in e["message"].splitlines()][-limit:]


def find_access_denied(lines: list[str]) -> tuple[AccessDenied | None, str | None]:
    """The first AccessDenied sentence in ``lines`` and the line that holds it."""
    for line in lines:
        found = parse_access_denied(line)
        if found is not None:
            return found, line
    return None, None


@dataclass
class Diagnosis(Shows):
    """What is wrong with the service, in the learner's words and as data for the record."""

    service: ServiceState
    task_definition: TaskDefinition
    task_role: str
    stopped: list[dict[str, Any]]
    cause: str
    denied: AccessDenied | None = None
    stop_code: str = ""
    stopped_reason: str = ""
    log_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Set when the service's task definition runs as another role than ``task_role``: a policy
    #: on ``task_role`` would not reach carts. The sentence that says so.
    role_mismatch: str | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return tasks_frame(self.stopped, limit=SHOWN_STOPPED)

    @property
    def fixable_here(self) -> bool:
        """Whether a policy on the task role is the fix (or nothing needs fixing)."""
        return self.cause in (TASK_ROLE, HEALTHY)

    def headline(self) -> str:
        if self.cause == HEALTHY:
            return (
                f"The service is already healthy ({self.service.running}/{self.service.desired} "
                "running, deployment completed): the runbook will check the policy and continue."
            )
        if self.cause == TASK_ROLE and self.denied is not None:
            how = "an explicit Deny" if self.denied.explicit else "no policy that allows it"
            return (
                f"Cause: the task role {self.task_role} may not call {self.denied.action} on "
                f"{self.denied.resource} ({how}). The app's first DynamoDB call is denied, it exits "
                f"with code 1 and ECS stops the task ({self.stop_code}) and starts another."
            )
        if self.cause == EXECUTION_ROLE:
            return (
                f"Cause: the task never started ({self.stop_code}: {self.stopped_reason}). That is the "
                "execution role's job (pulling the image, writing logs), not the task role's: a "
                "DynamoDB policy on the task role will not help. Check the execution role's policy "
                "(AmazonECSTaskExecutionRolePolicy) and the image name."
            )
        return (
            "Cause not recognised: the newest stopped task "
            + (
                f"stopped with {self.stop_code} ({self.stopped_reason})"
                if self.stop_code
                else "shows no stop code"
            )
            + " and its log names no AccessDenied. Read the log lines below."
        )

    def record(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "denied_action": self.denied.action if self.denied else None,
            "denied_resource": self.denied.resource if self.denied else None,
            "denial": self.denied.kind if self.denied else None,
            "stop_code": self.stop_code,
            "stopped_reason": self.stopped_reason,
            "service": {
                "desired": self.service.desired,
                "running": self.service.running,
                "rollout_state": self.service.rollout_state,
            },
            "warnings": self.warnings,
        }

    def __str__(self) -> str:
        parts = [str(self.service), "", "Newest stopped tasks:"]
        parts.append(task_table_text(self.frame) if self.stopped else "  none")
        if self.log_lines:
            parts += ["", "Log of the newest stopped task (last lines):"]
            parts += [f"  {ln}" for ln in self.log_lines]
        parts += ["", "DIAGNOSIS: " + self.headline()]
        parts += [f"WARNING {w}" for w in self.warnings]
        return "\n".join(parts)

    def _repr_html_(self) -> str:

        colour = {"task-role": "#b00020", "execution-role": "#b00020", "healthy": "#1b7f3b"}.get(
            self.cause, "#a15c00"
        )
        html = self.service._repr_html_()
        html += "<p>Newest stopped tasks:</p>"
        html += task_table_html(self.frame) if self.stopped else "<p>none</p>"
        if self.log_lines:
            html += "<p>Log of the newest stopped task (last lines):</p>"
            html += f"<pre>{escape(chr(10).join(self.log_lines))}</pre>"
        html += f'<p style="color:{colour}"><b>Diagnosis:</b> {escape(self.headline())}</p>'
        html += "".join(f'<p style="color:#a15c00">Warning: {escape(w)}</p>' for w in self.warnings)
        return html


def diagnose(ecs: Any, logs: Any, cluster: str, service: str, task_role: str) -> Diagnosis:
    """Read the service, its newest stopped tasks and their logs, and name the cause."""
    state = describe_service(ecs, cluster, service)
    td = describe_task_definition(ecs, state.task_definition)
    warnings: list[str] = []
    mismatch: str | None = None
    td_role = td.task_role_arn.rsplit("/", 1)[-1] if td.task_role_arn else ""
    if td_role != task_role:
        mismatch = (
            f"the task definition {td.arn.rsplit('/', 1)[-1]} uses task role {td_role or '(none)'}, "
            f"not {task_role} (parameter 'task_role'): a policy on {task_role} would not reach carts."
        )
        warnings.append(mismatch)
    stopped_arns = list_service_tasks(ecs, cluster, service, "STOPPED")
    # The newest few are enough: each replacement fails the same way.
    # Tasks ECS is still stopping are listed too; only those fully STOPPED have their final
    # fields (stoppedAt, exit code) and read the same from one look to the next.
    stopped = [
        t
        for t in describe_tasks(ecs, cluster, stopped_arns[-100:])
        if t.get("lastStatus") == "STOPPED"
    ]
    stopped.sort(key=_created, reverse=True)
    d = Diagnosis(state, td, task_role, stopped, UNKNOWN, warnings=warnings, role_mismatch=mismatch)
    if state.running >= state.desired > 0 and state.rollout_state == "COMPLETED":
        d.cause = HEALTHY
        return d
    if not stopped:
        d.cause = UNKNOWN
        return d
    newest = stopped[0]
    d.stop_code = newest.get("stopCode", "")
    d.stopped_reason = newest.get("stoppedReason", "")
    if d.stop_code == "TaskFailedToStart" or d.stopped_reason.startswith(_EXEC_ROLE_REASONS):
        d.cause = EXECUTION_ROLE
        return d
    if td.log_group is not None:
        stream = td.log_stream(task_id(newest["taskArn"]))
        if stream:
            lines = read_log_lines(logs, td.log_group, stream)
            denied, _ = find_access_denied(lines)
            d.denied = denied
            d.log_lines = _excerpt(lines)
    exit_code = essential_container(newest).get("exitCode")
    if d.denied is not None and d.denied.role_name == td_role:
        d.cause = TASK_ROLE
    elif d.denied is not None:
        d.warnings.append(f"the denied principal is {d.denied.principal}, not the task role.")
    elif exit_code not in (None, 0):
        d.warnings.append(
            f"the container exited with code {exit_code} without an AccessDenied in its log."
        )
    return d


def _created(task: dict[str, Any]) -> float:
    created = task.get("createdAt")
    return created.timestamp() if created is not None else 0.0


def _excerpt(lines: list[str]) -> list[str]:
    """The failure report if there is one (from its banner on), else the last 12 lines."""
    for i, line in enumerate(lines):
        if "APPLICATION FAILED TO START" in line:
            start = max(0, i - 1)
            return [ln.rstrip() for ln in lines[start : start + 14]]
    return [ln.rstrip() for ln in lines[-12:]]
