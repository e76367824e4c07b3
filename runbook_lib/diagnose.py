"""See the failure (workshop 3.1): the service, the task that failed, its log, and the cause.

Gather, then decide. :func:`gather` makes every AWS call of the step (the service and its task
definition, the stopped tasks and their own task definitions, the failed task's log) and returns
:class:`Evidence`, plain data. :func:`decide` names the cause from that data alone, and so do the
pure helpers it uses (:func:`pick_failed_task`, :func:`cause_of_denial`,
:func:`runbook_lib.stopped.classify_stop`): tests feed them AWS-shaped dicts.

Which task: the newest STOPPED task that *failed* (:func:`runbook_lib.stopped.is_failure`); a
scale-in or a deployment's replacement stops healthy tasks too and says nothing. Its exit code and
log are those of its app container, named in the task's *own* task definition (a service may be
between two revisions). Its log is searched for AWS's denial sentence with a filter pattern, every
page, rather than read from its last lines: a JVM stack trace after the denial is hundreds of
events long.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_lib.access_denied import AccessDenied, PolicyType, parse_access_denied
from runbook_lib.blocks import Block, Heading, Pre, Sentence, Tone
from runbook_lib.display import task_table
from runbook_lib.ecs import (
    ServiceState,
    TaskDefinition,
    TaskDefinitions,
    describe_service,
    describe_tasks,
    list_service_tasks,
    task_id,
    tasks_frame,
)
from runbook_lib.logs import DENIAL_PATTERN, lines_of, read_stream, read_tail, search
from runbook_lib.shows import Shows
from runbook_lib.stopped import (
    FIXABLE_HERE,
    Cause,
    StopVerdict,
    capacity_verdict,
    classify_stop,
    is_failure,
)

if TYPE_CHECKING:
    import pandas as pd
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_logs import CloudWatchLogsClient

# The record's words for the causes the runbook steps test for (kept as names for callers).
TASK_ROLE = Cause.TASK_ROLE
EXECUTION_ROLE = Cause.EXECUTION_ROLE
HEALTHY = Cause.HEALTHY
UNKNOWN = Cause.UNKNOWN
#: How many stopped tasks the diagnosis shows (the newest ones; older ones say nothing more).
SHOWN_STOPPED = 3
#: How many stopped tasks are read (the API's batch: the newest hundred).
READ_STOPPED = 100
#: Task definitions read at most for the stopped tasks (a service rarely spans more revisions).
READ_TASK_DEFINITIONS = 5
#: The log read around the denial: the events within this many milliseconds of it (a failure
#: report is written at once, with the denial in it).
CONTEXT_MS = 1000
#: Log lines shown when no failure report or denial gives a better place to look.
TAIL_LINES = 12

#: Which cause a denial of the task role names, by the policy type AWS's sentence names.
DENIAL_CAUSES: dict[PolicyType, Cause] = {
    PolicyType.IDENTITY: Cause.TASK_ROLE,
    PolicyType.BOUNDARY: Cause.BOUNDARY,
    PolicyType.SCP: Cause.SCP,
    PolicyType.RCP: Cause.SCP,
    PolicyType.SESSION: Cause.SESSION_POLICY,
    PolicyType.RESOURCE: Cause.RESOURCE_POLICY,
    PolicyType.VPC_ENDPOINT: Cause.RESOURCE_POLICY,
}


# --- evidence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEvidence:
    """What the failed task's app container logged: every denial line, and the lines around the
    first one (or the stream's last lines when it logged none). ``note`` says why nothing could
    be read."""

    group: str | None = None
    stream: str | None = None
    denials: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Evidence:
    """Everything the diagnosis reads from AWS, before deciding anything from it."""

    service: ServiceState
    task_definition: TaskDefinition  # the service's
    stopped: tuple[dict[str, Any], ...]  # fully STOPPED, newest first
    task_definitions: Mapping[str, TaskDefinition]  # by ARN: the service's and the stopped tasks'
    failed: dict[str, Any] | None = None
    log: LogEvidence = field(default_factory=LogEvidence)

    @property
    def failed_td(self) -> TaskDefinition | None:
        if self.failed is None:
            return None
        return self.task_definitions.get(str(self.failed.get("taskDefinitionArn", "")))


def pick_failed_task(
    stopped: Sequence[dict[str, Any]], apps: Mapping[str, str]
) -> dict[str, Any] | None:
    """The newest task in ``stopped`` (newest first) that failed, judged by its own stop code and
    its own app container's exit code (``apps``: app container by task definition ARN)."""
    for task in stopped:
        if is_failure(task, apps.get(str(task.get("taskDefinitionArn", "")))):
            return task
    return None


def gather(ecs: ECSClient, logs: CloudWatchLogsClient, cluster: str, service: str) -> Evidence:
    """Every AWS call of the diagnosis, in one place."""
    state = describe_service(ecs, cluster, service)
    tds = TaskDefinitions(ecs)
    service_td = tds.get(state.task_definition)
    arns = list_service_tasks(ecs, cluster, service, "STOPPED")
    # Tasks ECS is still stopping are listed too; only those fully STOPPED have their final
    # fields (stoppedAt, exit code) and read the same from one look to the next.
    stopped = [
        t
        for t in describe_tasks(ecs, cluster, arns[-READ_STOPPED:])
        if t.get("lastStatus") == "STOPPED"
    ]
    stopped.sort(key=_created, reverse=True)
    for arn in list(dict.fromkeys(str(t.get("taskDefinitionArn", "")) for t in stopped))[
        :READ_TASK_DEFINITIONS
    ]:
        if arn:
            tds.get(arn)
    failed = pick_failed_task(stopped, tds.apps())
    log = LogEvidence()
    if failed is not None:
        td = tds.of(failed)
        log = read_task_log(logs, td, failed)
    return Evidence(state, service_td, tuple(stopped), tds.known, failed, log)


def read_task_log(
    logs: CloudWatchLogsClient, td: TaskDefinition, task: Mapping[str, Any]
) -> LogEvidence:
    """The app container's log of ``task``: searched for denials (every page), then the lines
    around the first one, or the stream's last lines when there is none."""
    if td.log_group is None:
        return LogEvidence(
            note=f"the app container {td.container} of {td.name} does not log with awslogs "
            f"(log driver: {td.log_driver or 'none'}), so its log cannot be read here."
        )
    stream = td.log_stream_of(task)
    if stream is None:
        return LogEvidence(
            group=td.log_group,
            note=f"task {task_id(str(task['taskArn']))} has no log stream: its app container "
            "never ran (no awslogs-stream-prefix, and no container id to name the stream).",
        )
    found = search(logs, td.log_group, DENIAL_PATTERN, streams=[stream])
    denials = tuple(str(e["message"]).strip() for e in found)
    if found:
        at = int(found[0].get("timestamp", 0))
        events = read_stream(
            logs, td.log_group, stream, start_ms=at - CONTEXT_MS, end_ms=at + CONTEXT_MS
        )
    else:
        events = read_tail(logs, td.log_group, stream, TAIL_LINES)
    return LogEvidence(td.log_group, stream, denials, tuple(lines_of(events)))


# --- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """What :func:`decide` concludes."""

    cause: Cause
    denied: AccessDenied | None = None
    stop: StopVerdict | None = None
    warnings: tuple[str, ...] = ()
    role_mismatch: str | None = None


def cause_of_denial(denied: AccessDenied, task_role: str, execution_role: str = "") -> Cause:
    """The cause a denial names: for the task role, by the policy type of AWS's sentence
    (:data:`DENIAL_CAUSES`); for the execution role, :attr:`Cause.EXECUTION_ROLE`; for anyone
    else, :attr:`Cause.UNKNOWN` (someone else's denial is not the app's)."""
    if denied.role_name == task_role and task_role:
        return DENIAL_CAUSES.get(denied.policy_type, Cause.UNKNOWN)
    if execution_role and denied.role_name == execution_role:
        return Cause.EXECUTION_ROLE
    return Cause.UNKNOWN


def decide(ev: Evidence, task_role: str) -> Finding:
    """Name the cause from the evidence alone.

    1. The service's task definition must run as ``task_role``, or a policy on it reaches no
       task (``role_mismatch``).
    2. A service running its desired count with a COMPLETED deployment is healthy.
    3. No failed task: a placement failure in the service's events is a capacity problem;
       otherwise unknown.
    4. A denial: in the stopped reason (ECS, as the execution role, fetching the image, secrets
       or the log stream), else in the app's log (as the task role: the policy type AWS names
       decides, :func:`cause_of_denial`).
    5. Otherwise what ECS says about the stop (:func:`runbook_lib.stopped.classify_stop`).
    """
    warnings: list[str] = []
    mismatch = None
    td = ev.task_definition
    if td.task_role_name != task_role:
        mismatch = (
            f"the task definition {td.name} uses task role {td.task_role_name or '(none)'}, "
            f"not {task_role} (parameter 'task_role'): a policy on {task_role} would not reach carts."
        )
        warnings.append(mismatch)
    state = ev.service
    if state.running >= state.desired > 0 and state.rollout_state == "COMPLETED":
        return Finding(Cause.HEALTHY, warnings=tuple(warnings), role_mismatch=mismatch)
    if state.deployment_failed:
        warnings.append(
            f"deployment {state.primary.get('id', '?')} is FAILED"
            + (f" ({state.rollout_reason})" if state.rollout_reason else "")
            + ": ECS starts no new task for it, even once the cause is fixed, until a new "
            "deployment (aws ecs update-service --force-new-deployment)."
        )
    if state.desired == 0:
        warnings.append("the service's desired count is 0: ECS starts no task for it.")
    failed = ev.failed
    if failed is None:
        placement = state.placement_failures()
        if placement:
            stop = capacity_verdict(placement[0])
            return Finding(Cause.CAPACITY, None, stop, tuple(warnings), mismatch)
        return Finding(Cause.UNKNOWN, warnings=tuple(warnings), role_mismatch=mismatch)
    own = ev.failed_td or td
    stop = classify_stop(failed, own.container)
    exec_role = own.execution_role_arn.rsplit("/", 1)[-1]
    if ev.log.note:
        warnings.append(ev.log.note)
    in_reason = parse_access_denied(stop.stopped_reason)
    if in_reason is not None:
        cause = cause_of_denial(in_reason, own.task_role_name, exec_role)
        if cause == Cause.UNKNOWN:
            cause = Cause.EXECUTION_ROLE  # ECS fetches for the task as the execution role
        return Finding(cause, in_reason, stop, tuple(warnings), mismatch)
    denied = next((d for d in map(parse_access_denied, ev.log.denials) if d is not None), None)
    if denied is not None:
        cause = cause_of_denial(denied, own.task_role_name, exec_role)
        if cause != Cause.UNKNOWN:
            return Finding(cause, denied, stop, tuple(warnings), mismatch)
        warnings.append(f"the denied principal is {denied.principal}, not the task role.")
        return Finding(stop.cause, denied, stop, tuple(warnings), mismatch)
    if stop.cause == Cause.APP_EXIT and stop.exit_code not in (None, 0):
        warnings.append(
            f"the container exited with code {stop.exit_code} without an AccessDenied in its log."
        )
    return Finding(stop.cause, None, stop, tuple(warnings), mismatch)


def excerpt(lines: Sequence[str], denial: str | None = None) -> list[str]:
    """The lines worth showing: Spring Boot's failure report from its banner on if there is one,
    else a few lines around the denial, else the last :data:`TAIL_LINES`."""
    for i, line in enumerate(lines):
        if "APPLICATION FAILED TO START" in line:
            start = max(0, i - 1)
            return [ln.rstrip() for ln in lines[start : start + 14]]
    if denial is not None:
        for i, line in enumerate(lines):
            if denial in line or line in denial:
                return [ln.rstrip() for ln in lines[max(0, i - 3) : i + 9]]
    return [ln.rstrip() for ln in lines[-TAIL_LINES:]]


# --- the result -----------------------------------------------------------------------------


@dataclass
class Diagnosis(Shows):
    """What is wrong with the service, in the learner's words and as data for the record."""

    service: ServiceState
    task_definition: TaskDefinition
    task_role: str
    stopped: list[dict[str, Any]]
    cause: Cause
    denied: AccessDenied | None = None
    stop_code: str = ""
    stopped_reason: str = ""
    log_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Set when the service's task definition runs as another role than ``task_role``: a policy
    #: on ``task_role`` would not reach carts. The sentence that says so.
    role_mismatch: str | None = None
    #: The task the diagnosis is about (the newest that failed), and what ECS says of its stop.
    failed_task: dict[str, Any] | None = None
    stop: StopVerdict | None = None
    log_stream: str | None = None
    #: Every task definition read, by ARN (the service's and the stopped tasks' own).
    task_definitions: dict[str, TaskDefinition] = field(default_factory=dict)

    @classmethod
    def from_evidence(cls, ev: Evidence, finding: Finding, task_role: str) -> Diagnosis:
        first_denial = ev.log.denials[0] if ev.log.denials else None
        failed = ev.failed
        return cls(
            service=ev.service,
            task_definition=ev.task_definition,
            task_role=task_role,
            stopped=list(ev.stopped),
            cause=finding.cause,
            denied=finding.denied,
            stop_code=str(failed.get("stopCode", "")) if failed else "",
            stopped_reason=finding.stop.stopped_reason if finding.stop else "",
            log_lines=excerpt(ev.log.lines, first_denial) if ev.log.lines else [],
            warnings=list(finding.warnings),
            role_mismatch=finding.role_mismatch,
            failed_task=failed,
            stop=finding.stop,
            log_stream=ev.log.stream,
            task_definitions=dict(ev.task_definitions),
        )

    @property
    def frame(self) -> pd.DataFrame:
        apps = {arn: td.container for arn, td in self.task_definitions.items()}
        return tasks_frame(self.stopped, limit=SHOWN_STOPPED, apps=apps)

    @property
    def fixable_here(self) -> bool:
        """Whether a policy on the task role may be the fix (or nothing needs fixing)."""
        return self.cause in FIXABLE_HERE

    @property
    def exit_code(self) -> int | None:
        return self.stop.exit_code if self.stop else None

    def headline(self) -> str:
        d, role = self.denied, self.task_role
        if self.cause == Cause.HEALTHY:
            return (
                f"The service is already healthy ({self.service.running}/{self.service.desired} "
                "running, deployment completed): the runbook will check the policy and continue."
            )
        if self.cause == Cause.TASK_ROLE and d is not None:
            how = "an explicit Deny" if d.explicit else "no policy that allows it"
            code = f"code {self.exit_code}" if self.exit_code is not None else "an error"
            text = (
                f"Cause: the task role {role} may not call {d.action} on {d.resource} ({how}). "
                f"The app's first DynamoDB call is denied, it exits with {code} and ECS stops "
                f"the task ({self.stop_code}) and starts another."
            )
            if d.explicit:
                text += " " + d.advice
            return text
        if d is not None and self.cause in (
            Cause.BOUNDARY,
            Cause.SCP,
            Cause.SESSION_POLICY,
            Cause.RESOURCE_POLICY,
        ):
            return (
                f"Cause: {role} may not call {d.action} on {d.resource}, and no policy on the task "
                f"role can change that. {d.explanation} {d.advice}"
            )
        if self.cause == Cause.EXECUTION_ROLE:
            text = (
                f"Cause: the task never started ({self.stop_code}: {self.stopped_reason}). That is "
                "the execution role's job (pulling the image, fetching secrets, writing logs), not "
                "the task role's: a DynamoDB policy on the task role will not help."
            )
            if d is not None:
                return f"{text} {d.explanation} {d.advice}"
            return f"{text} Check the execution role's policy (AmazonECSTaskExecutionRolePolicy)."
        if self.stop is not None and self.cause not in (Cause.APP_EXIT, Cause.UNKNOWN):
            what = f"{self.stop_code}: {self.stopped_reason}" if self.stop_code else ""
            return (
                f"Cause: {self.stop.meaning}"
                + (f" ({what})" if what else f" ({self.stopped_reason})")
                + f". A policy on the task role will not help. {self.stop.advice}"
            )
        return (
            "Cause not recognised: the newest failed task "
            + (
                f"stopped with {self.stop_code} ({self.stopped_reason})"
                if self.stop_code
                else "shows no stop code"
                if self.failed_task is not None
                else "is not there (no stopped task failed)"
            )
            + " and its log names no AccessDenied."
            + (" Read its log lines above." if self.log_lines else " No log line was found.")
        )

    def record(self) -> dict[str, Any]:
        d = self.denied
        return {
            "cause": str(self.cause),
            "denied_action": d.action if d else None,
            "denied_resource": d.resource if d else None,
            "denial": d.kind if d else None,
            "denial_policy_type": d.policy_type.value if d else None,
            "denial_sentence": str(d) if d else None,
            "stop_code": self.stop_code,
            "stopped_reason": self.stopped_reason,
            "exit_code": self.exit_code,
            "failed_task": task_id(self.failed_task["taskArn"]) if self.failed_task else None,
            "failed_task_definition": (
                self.failed_task.get("taskDefinitionArn") if self.failed_task else None
            ),
            "log_stream": self.log_stream,
            "fixable_here": self.fixable_here,
            "service": {
                "desired": self.service.desired,
                "running": self.service.running,
                "rollout_state": self.service.rollout_state,
            },
            "warnings": self.warnings,
        }

    def blocks(self) -> list[Block]:
        out = [*self.service.blocks(), Heading("Newest stopped tasks:")]
        out.append(task_table(self.frame) if self.stopped else Sentence("none"))
        if self.log_lines:
            out.append(Heading(f"Log of the newest failed task ({self._log_source()}):"))
            out.append(Pre("\n".join(self.log_lines)))
        out.append(Sentence(self.headline(), self._tone(), "Diagnosis"))
        out += [Sentence(w, "warn", "Warning") for w in self.warnings]
        return out

    def _tone(self) -> Tone:
        if self.cause == Cause.HEALTHY:
            return "ok"
        return "warn" if self.cause in (Cause.UNKNOWN, Cause.APP_EXIT) else "fail"

    def _log_source(self) -> str:
        return "around its AccessDenied" if self.denied is not None else "last lines"


def diagnose(
    ecs: ECSClient, logs: CloudWatchLogsClient, cluster: str, service: str, task_role: str
) -> Diagnosis:
    """Read the service, the task that failed and its log (:func:`gather`), and name the cause
    (:func:`decide`)."""
    ev = gather(ecs, logs, cluster, service)
    return Diagnosis.from_evidence(ev, decide(ev, task_role), task_role)


def _created(task: dict[str, Any]) -> float:
    created = task.get("createdAt")
    return created.timestamp() if created is not None else 0.0
