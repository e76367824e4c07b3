"""Watch the next carts task: from the policy change to a settled RUNNING task.

Gather, then decide. Each poll reads its evidence (:func:`gather`: every AWS call of a poll, in
one place) and a pure function decides what it means (:func:`task_state` for one task,
:func:`decide` for the watch). The watch ends when:

- **running**: a task whose app started after the change has *settled*, judged from the task's
  own task definition: its app container is HEALTHY when that container defines a health check;
  RUNNING for :data:`SETTLE_WITHOUT_HEALTHCHECK_S` when it defines none (ECS reports its health
  as UNKNOWN for ever then, botocore's ``Container.healthStatus``). The service must also run as
  many tasks as it wants, and no task still running may have logged an AccessDenied since the
  change (*still denied*: IAM's propagation delay; a denied task that stopped, even one that came
  and went between two polls, counts as not reached by the change yet);
- **already-running**: nothing was left to watch because the service was already RUNNING and
  HEALTHY at the change, its deployment is COMPLETED, and the change keeps every call carts makes
  allowed. ECS starts no task for an IAM change, so waiting would only wait for the timeout;
- **deployment-failed**: the service's deployment is FAILED ("A deployment in FAILED state
  doesn't launch any new tasks", botocore's ``Deployment.rolloutState``): no task will come, so
  the watch stops at once and says how to start a new deployment;
- **timeout**: ``timeout_s`` passed.

Polling starts quick (:data:`MIN_INTERVAL_S`: the task may be about to settle) and slows to one
poll every :data:`MAX_INTERVAL_S` while a task is starting, or :data:`SETTLE_INTERVAL_S` while it
is RUNNING and waits for its health check or when no task is there to watch (then each poll reads
the service too), counted from the start of one poll to the start of the next; each poll makes one
call in the common case (``describe_tasks`` of the task being watched). A change seen does not
speed polling up again: ECS's steps last seconds, and a task that keeps failing (a slow IAM
propagation) would otherwise keep the watch polling at the quickest rate for as long as it lasts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from runbook_lib.access_denied import parse_access_denied
from runbook_lib.blocks import Block, Sentence
from runbook_lib.display import LiveView, TaskTable
from runbook_lib.ecs import (
    ServiceState,
    TaskDefinition,
    TaskDefinitions,
    app_health,
    describe_service,
    describe_tasks,
    list_service_tasks,
    task_id,
    tasks_frame,
)
from runbook_lib.errors import DeploymentFailed, WatchTimeout
from runbook_lib.logs import DENIAL_PATTERN, search
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_logs import CloudWatchLogsClient

MIN_INTERVAL_S = 0.5
#: The longest wait between two polls while a task is starting (before RUNNING).
MAX_INTERVAL_S = 2.0
#: The wait while every watched task is RUNNING and waits for its first passing health check
#: (at AWS's pace tens of seconds: the carts check runs every 10 s after a 60 s start period),
#: and while no task is there to watch (each such poll reads the tasks and the service: two
#: calls). Slower polling there keeps the watch under 30 calls a minute; HEALTHY is still seen
#: within one interval.
SETTLE_INTERVAL_S = 4.0
#: Without a container health check, how long RUNNING must last to count as settled.
SETTLE_WITHOUT_HEALTHCHECK_S = 30.0

TaskState = Literal[
    "starting",
    "waiting-health",
    "waiting-no-health-check",
    "healthy",
    "running-no-health-check",
    "stopping",
    "stopped",
]
#: The states in which a task has settled.
SETTLED: frozenset[TaskState] = frozenset({"healthy", "running-no-health-check"})
#: How a watch ended. (A plan-only run has no watch: its record's watch step says "skipped".)
Outcome = Literal["running", "already-running", "deployment-failed", "timeout"]
#: States in which a task is up (RUNNING), settled or not: polled at the slower pace.
_UP: frozenset[TaskState] = frozenset(
    {"waiting-health", "waiting-no-health-check", "healthy", "running-no-health-check"}
)


@dataclass(frozen=True)
class Baseline:
    """The service's tasks at the moment of the change.

    A task already HEALTHY then passed its start-up Query before the change and proves nothing
    about the new policy. Any other task (even one RUNNING, whose app may not have made its
    Query yet) is watched: whichever way it goes, it went after the change.
    """

    healthy: frozenset[str]  # task ARNs already HEALTHY at the change
    at: float  # epoch seconds of the change

    @classmethod
    def take(
        cls, ecs: ECSClient, cluster: str, service: str, now: Callable[[], float] = time.time
    ) -> Baseline:
        """The service's healthy tasks now; ``now`` tells the time as AWS tells it."""
        arns = list_service_tasks(ecs, cluster, service, "RUNNING")
        tasks = describe_tasks(ecs, cluster, arns) if arns else []
        healthy = frozenset(t["taskArn"] for t in tasks if t.get("healthStatus") == "HEALTHY")
        return cls(healthy=healthy, at=now())


# --- decisions (pure) -----------------------------------------------------------------------


def task_state(
    task: Mapping[str, Any],
    td: TaskDefinition,
    now: float,
    settle_s: float = SETTLE_WITHOUT_HEALTHCHECK_S,
    seen_running_s: float = 0.0,
) -> TaskState:
    """Where one task is, judged from its own task definition ``td`` (``now``: epoch seconds).

    With a container health check on the app container, settled means its app container is
    HEALTHY (the task's own health is the worst of its essential containers', so a sidecar
    without a check would keep it UNKNOWN). Without one, settled means RUNNING for
    ``settle_s`` seconds: since ``startedAt`` by ``now``, or as the watch itself saw it
    (``seen_running_s``, on its own clock), whichever says so first. The second holds when this
    machine's clock is behind AWS's, which would otherwise put ``startedAt`` in the future.
    """
    last, desired = task.get("lastStatus"), task.get("desiredStatus")
    if last == "STOPPED":
        return "stopped"
    if desired != "RUNNING":
        return "stopping"
    if last != "RUNNING":
        return "starting"
    if td.has_health_check:
        healthy = app_health(dict(task), td.container) == "HEALTHY"
        return "healthy" if healthy else "waiting-health"
    started = task.get("startedAt")
    if seen_running_s >= settle_s or (
        started is not None and now - started.timestamp() >= settle_s
    ):
        return "running-no-health-check"
    return "waiting-no-health-check"


@dataclass(frozen=True)
class PollEvidence:
    """What one poll read.

    ``service`` is read only when a task settled or no task is left to watch; ``still_denied``
    (task id -> its AccessDenied line) only when a task settled with the service at its desired
    count, else None.
    """

    tasks: tuple[dict[str, Any], ...]
    states: Mapping[str, TaskState]
    service: ServiceState | None = None
    still_denied: Mapping[str, str] | None = None

    @property
    def idle(self) -> bool:
        """No task to watch: none appeared, or every one it watched has stopped."""
        return all(s == "stopped" for s in self.states.values())


@dataclass(frozen=True)
class Verdict:
    """What a poll means: ``outcome`` ends the watch unless it is ``wait``; ``why`` says what a
    wait waits for (``starting``, ``still-denied``, ``below-desired``, ``no-task``)."""

    outcome: Literal["wait", "running", "already-running", "deployment-failed", "timeout"]
    task: dict[str, Any] | None = None
    why: str = ""


def decide(
    ev: PollEvidence,
    *,
    elapsed: float,
    timeout_s: float,
    keeps_allowed: bool,
    healthy_at_change: int,
) -> Verdict:
    """What the poll's evidence means for the watch.

    ``keeps_allowed``: the change keeps every call carts makes allowed (the preflight's answer);
    ``healthy_at_change``: how many of the service's tasks were already HEALTHY at the change.
    """
    settled = [t for t in ev.tasks if ev.states.get(t["taskArn"]) in SETTLED]
    svc = ev.service
    waiting = Verdict("wait", why="no-task" if ev.idle else "starting")
    if settled and svc is not None:
        newest = max(settled, key=lambda t: t["createdAt"].timestamp())
        if svc.running < svc.desired:
            waiting = Verdict("wait", newest, "below-desired")
        elif ev.still_denied:
            waiting = Verdict("wait", newest, "still-denied")
        elif ev.still_denied is not None:
            return Verdict("running", newest)
    if svc is not None and ev.idle:
        if svc.deployment_failed:
            return Verdict("deployment-failed")
        steady = svc.running >= svc.desired > 0 and svc.rollout_state == "COMPLETED"
        if steady and keeps_allowed and healthy_at_change >= svc.desired:
            return Verdict("already-running")
    if elapsed >= timeout_s:
        return Verdict("timeout", waiting.task, waiting.why)
    return waiting


def not_reached(
    stopped: Sequence[dict[str, Any]],
    denials: dict[str, str],
    baseline: Baseline | None,
) -> list[dict[str, Any]]:
    """The stopped tasks the change had not reached: denied since the change (found in
    ``denials``, which this empties of them), or failed otherwise. A task that exited after a
    denial from before the change failed for the old policy and is left out."""
    out = []
    for t in stopped:
        tid = task_id(t["taskArn"])
        if (
            baseline is None
            or denials.pop(tid, None) is not None
            or t.get("stopCode") != "EssentialContainerExited"
        ):
            out.append(t)
    return out


def denials_by_task(
    events: Sequence[Mapping[str, Any]], roles: frozenset[str], skip: frozenset[str]
) -> dict[str, str]:
    """The first AccessDenied line of each task in ``events`` (log events), by task id.

    The task is the denial's role session name: ECS names a task role's session after the task
    id, whatever the stream is called (a stream without ``awslogs-stream-prefix`` is named after
    the container id). Denials of other roles than ``roles`` (another service in a shared log
    group) and of the tasks in ``skip`` are left out.
    """
    found: dict[str, str] = {}
    for e in events:
        message = str(e.get("message", ""))
        denied = parse_access_denied(message)
        if denied is None or (roles and denied.role_name not in roles):
            continue
        stream_task = str(e.get("logStreamName", "")).rsplit("/", 1)[-1]
        tid = denied.session_name or stream_task
        if tid not in skip:
            found.setdefault(tid, message.strip())
    return found


# --- the result -----------------------------------------------------------------------------


@dataclass
class WatchResult(Shows):
    outcome: Outcome
    message: str
    task: dict[str, Any] | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    failed_after_change: list[dict[str, Any]] = field(default_factory=list)
    last_stop_reason: str = ""
    last_log_line: str = ""
    elapsed_s: float = 0.0
    polls: int = 0
    reported_after_running_s: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)
    #: How the task settled: ``healthy`` (its app's health check passed) or
    #: ``running-no-health-check`` (RUNNING long enough, no check to pass).
    settled_as: Literal["", "healthy", "running-no-health-check"] = ""
    apps: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("running", "already-running")

    def table(self) -> TaskTable:
        return TaskTable(
            tasks_frame(self.tasks, limit=4, apps=self.apps), "Carts tasks (newest first):"
        )

    def record(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "task": task_id(self.task["taskArn"]) if self.task else None,
            "settled_as": self.settled_as or None,
            "tasks_denied_after_change": len(self.failed_after_change),
            "propagation_delay_seen": bool(self.failed_after_change) and self.outcome == "running",
            "last_stop_reason": self.last_stop_reason,
            "last_log_line": self.last_log_line,
            "elapsed_s": round(self.elapsed_s, 3),
            "polls": self.polls,
            "timeline": [{"t": round(t, 3), "event": e} for t, e in self.timeline],
        }

    def blocks(self) -> list[Block]:
        out: list[Block] = [Sentence(self.message, "ok" if self.ok else "fail")]
        if self.failed_after_change and self.outcome == "running":
            out.append(Sentence(_propagation_note(len(self.failed_after_change))))
        if self.tasks:
            out += self.table().blocks()
        return out


def _propagation_note(n: int) -> str:
    return (
        f"{n} task(s) started after the change were still denied: IAM changes take a moment to "
        "reach every endpoint, and ECS kept starting replacements until one got the permission."
    )


# --- the loop -------------------------------------------------------------------------------


@dataclass
class _Memory:
    """What the watch remembers from poll to poll."""

    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    watching: list[str] = field(default_factory=list)
    done_with: set[str] = field(default_factory=set)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # watched tasks seen STOPPED
    #: When the watch first saw each task RUNNING (its own clock).
    running_since: dict[str, float] = field(default_factory=dict)


@dataclass
class _Reader:
    """The AWS calls of the watch (gather), with what they need to know."""

    ecs: ECSClient
    logs: CloudWatchLogsClient
    tds: TaskDefinitions
    cluster: str
    service: str
    baseline: Baseline | None

    def eligible(self, arn: str, mem: _Memory) -> bool:
        return arn not in mem.done_with and (
            self.baseline is None or arn not in self.baseline.healthy
        )

    def gather(self, mem: _Memory, now: float, at: float) -> PollEvidence:
        """One poll: the watched tasks, and the service and the logs when they can decide.
        ``now``: AWS's time (epoch seconds); ``at``: the watch's own clock."""
        if not mem.watching:
            arns = list_service_tasks(self.ecs, self.cluster, self.service, "RUNNING")
            mem.watching = [a for a in arns if self.eligible(a, mem)]
        tasks = describe_tasks(self.ecs, self.cluster, mem.watching) if mem.watching else []
        for t in tasks:
            if t.get("lastStatus") == "RUNNING":
                mem.running_since.setdefault(t["taskArn"], at)
        states = {
            t["taskArn"]: task_state(
                t,
                self.tds.of(t),
                now,
                seen_running_s=at - mem.running_since.get(t["taskArn"], at),
            )
            for t in tasks
        }
        settled = any(s in SETTLED for s in states.values())
        idle = all(s == "stopped" for s in states.values())
        if not settled and not idle:
            return PollEvidence(tuple(tasks), states)
        svc = describe_service(self.ecs, self.cluster, self.service)
        if not settled or svc.running < svc.desired:
            return PollEvidence(tuple(tasks), states, svc)
        return PollEvidence(tuple(tasks), states, svc, self.denials_since())

    def denials_since(self) -> dict[str, str]:
        """AccessDenied lines in the service's logs since the change, by task id (the first
        line of each task), leaving out the tasks that were already healthy at the change.
        Every log group and stream prefix of the task definitions seen is searched, every page;
        streams named after container ids share no prefix, so their whole group is."""
        if self.baseline is None:
            return {}
        scopes = {
            (td.log_group, td.streams_prefix) for td in self.tds.known.values() if td.log_group
        }
        roles = frozenset(td.task_role_name for td in self.tds.known.values() if td.task_role_name)
        events: list[dict[str, Any]] = []
        for group, prefix in sorted(scopes, key=lambda s: (s[0] or "", s[1] or "")):
            assert group is not None
            events += search(
                self.logs,
                group,
                DENIAL_PATTERN,
                prefix=prefix,
                start_ms=int(self.baseline.at * 1000),
            )
        events.sort(key=lambda e: int(e.get("timestamp", 0)))
        skip = frozenset(task_id(a) for a in self.baseline.healthy)
        return denials_by_task(events, roles, skip)

    def stopped_among(self, like_arn: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Tasks of this service among ``ids`` that have stopped, described now."""
        if not ids:
            return []
        prefix = like_arn.rsplit("/", 1)[0]
        tasks = describe_tasks(self.ecs, self.cluster, [f"{prefix}/{tid}" for tid in ids])
        group = f"service:{self.service}"
        return [
            t for t in tasks if t.get("lastStatus") == "STOPPED" and t.get("group", group) == group
        ]


def watch(
    ecs: ECSClient,
    logs: CloudWatchLogsClient,
    td: TaskDefinition | TaskDefinitions,
    cluster: str,
    service: str,
    baseline: Baseline | None,
    timeout_s: float,
    *,
    keeps_allowed: bool = False,
    view: LiveView | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> WatchResult:
    """Poll until a carts task settles in RUNNING, or it is clear that none will come.

    ``td``: the task definitions already read (a task's own is read when first seen);
    ``baseline`` is None when nothing was written: then the task already running counts.
    ``keeps_allowed``: the change keeps every carts call allowed (the preflight said so), so a
    service that was healthy at the change needs no new task. ``sleep`` and ``clock`` keep the
    watch's own time, ``now`` tells AWS's (epoch seconds). Raises :class:`DeploymentFailed` when
    the deployment is FAILED, :class:`WatchTimeout` with the last stop reason and log line on
    timeout.
    """
    tds = td if isinstance(td, TaskDefinitions) else TaskDefinitions(ecs, [td])
    reader = _Reader(ecs, logs, tds, cluster, service, baseline)
    mem = _Memory()
    result = WatchResult("timeout", "")
    t0 = clock()
    interval = MIN_INTERVAL_S
    running_seen_at: float | None = None
    verdict = Verdict("wait")
    healthy_at_change = len(baseline.healthy) if baseline is not None else 0

    while True:
        polled_at = clock()
        elapsed = polled_at - t0
        result.polls += 1
        ev = reader.gather(mem, now(), polled_at)
        changed = _remember(mem, ev, result, elapsed)
        if ev.still_denied is not None:
            if running_seen_at is None:
                running_seen_at = clock()
            ev = replace(ev, still_denied=_count_not_reached(reader, mem, ev, result, elapsed))
        verdict = decide(
            ev,
            elapsed=elapsed,
            timeout_s=timeout_s,
            keeps_allowed=keeps_allowed,
            healthy_at_change=healthy_at_change,
        )
        if verdict.why == "still-denied" and ev.still_denied:
            result.last_log_line = next(iter(ev.still_denied.values()))
        mem.watching = [a for a in mem.watching if a not in mem.done_with]
        if view is not None and verdict.outcome == "wait":
            view.update(elapsed, _status_line(mem, result), _frame(mem, tds), changed)
        if verdict.outcome != "wait":
            break
        settling = bool(ev.tasks) and all(s in _UP for s in ev.states.values())
        slow = settling or ev.idle
        this = min(interval, SETTLE_INTERVAL_S if slow else MAX_INTERVAL_S)
        wake_at = min(polled_at + this, t0 + timeout_s)
        interval = min(interval * 2, SETTLE_INTERVAL_S)
        sleep(max(0.0, wake_at - clock()))

    result.elapsed_s = clock() - t0
    result.apps = tds.apps()
    _conclude(result, verdict, ev, mem, reader, timeout_s, running_seen_at, clock)
    if view is not None:
        view.update(result.elapsed_s, result.message, _frame(mem, tds), True)
        view.close(result.message, result.ok)
    if result.outcome == "deployment-failed":
        raise DeploymentFailed(result.message)
    if result.outcome == "timeout":
        raise WatchTimeout(result.message)
    return result


def _remember(mem: _Memory, ev: PollEvidence, result: WatchResult, elapsed: float) -> bool:
    """Keep what the poll saw; True when a task changed state (for the live view)."""
    changed = False
    for t in ev.tasks:
        arn = t["taskArn"]
        before = mem.seen.get(arn)
        mem.seen[arn] = t
        state = f"{t.get('lastStatus')}/{t.get('healthStatus', 'UNKNOWN')}"
        if (
            before is None
            or state != f"{before.get('lastStatus')}/{before.get('healthStatus', 'UNKNOWN')}"
        ):
            changed = True
            result.timeline.append((elapsed, f"task {task_id(arn)} {state}"))
        if ev.states.get(arn) == "stopped" and arn not in mem.done_with:
            # Whether the change had reached it is read from the logs once, when a task
            # settles (one search for every task), not with a log read per stopped task.
            mem.done_with.add(arn)
            mem.stopped.append(t)
            result.last_stop_reason = f"{t.get('stopCode', '')}: {t.get('stoppedReason', '')}"
    return changed


def _count_not_reached(
    reader: _Reader, mem: _Memory, ev: PollEvidence, result: WatchResult, elapsed: float
) -> dict[str, str]:
    """With a task settled: which tasks since the change the change had not reached yet (kept
    in ``result``). Returns the poll's denials without theirs: those of tasks still running."""
    assert ev.still_denied is not None
    denials = dict(ev.still_denied)
    lines = dict(denials)
    result.failed_after_change = not_reached(mem.stopped, denials, reader.baseline)
    # A task can start, be denied and stop between two polls: its denial counts as a task the
    # change did not reach yet, not against the settled one.
    like = next(iter(ev.states))
    for m in reader.stopped_among(like, list(denials)):
        mem.done_with.add(m["taskArn"])
        mem.stopped.append(m)
        result.failed_after_change.append(m)
        denials.pop(task_id(m["taskArn"]), None)
        result.timeline.append((elapsed, f"task {task_id(m['taskArn'])} STOPPED"))
    for m in result.failed_after_change:
        result.last_log_line = lines.get(task_id(m["taskArn"]), "") or result.last_log_line
    return denials


def _conclude(
    result: WatchResult,
    verdict: Verdict,
    ev: PollEvidence,
    mem: _Memory,
    reader: _Reader,
    timeout_s: float,
    running_seen_at: float | None,
    clock: Callable[[], float],
) -> None:
    """The result's outcome, message and tasks from the last verdict."""
    svc = ev.service
    where = f"{reader.service} in {reader.cluster}"
    if verdict.outcome == "running" and verdict.task is not None and svc is not None:
        t = verdict.task
        state = ev.states[t["taskArn"]]
        assert state == "healthy" or state == "running-no-health-check"  # decide(): settled
        result.outcome, result.task, result.settled_as = "running", t, state
        how = (
            "RUNNING and HEALTHY"
            if state == "healthy"
            else f"RUNNING for {SETTLE_WITHOUT_HEALTHCHECK_S:g} s (its task definition "
            f"{reader.tds.of(t).name} defines no container health check, so ECS reports its "
            "health as UNKNOWN)"
        )
        result.message = (
            f"carts task {task_id(t['taskArn'])} is {how}; the service runs "
            f"{svc.running} of {svc.desired}."
        )
        if running_seen_at is not None:
            result.reported_after_running_s = clock() - running_seen_at
    elif verdict.outcome == "already-running" and svc is not None:
        result.outcome = "already-running"
        result.message = (
            f"carts was already RUNNING and HEALTHY at the change ({svc.running} of "
            f"{svc.desired}, deployment {svc.primary.get('id', '?')} COMPLETED), and the change "
            "keeps every call carts makes allowed. ECS starts no new task for an IAM change, so "
            "there is no new task to wait for."
        )
    elif verdict.outcome == "deployment-failed" and svc is not None:
        result.outcome = "deployment-failed"
        reason = f" ({svc.rollout_reason})" if svc.rollout_reason else ""
        result.message = (
            f"ECS marked deployment {svc.primary.get('id', '?')} of {where} FAILED{reason}: a "
            "FAILED deployment launches no new task, so no carts task will come and the watch "
            f"stops after {result.elapsed_s:.0f} s. Start a new deployment to run tasks under "
            f"the current policies: aws ecs update-service --cluster {reader.cluster} "
            f"--service {reader.service} --force-new-deployment"
        )
    else:
        result.outcome = "timeout"
        if mem.stopped and not result.last_log_line:
            newest = mem.stopped[-1]
            result.last_log_line = _last_denial(reader, newest) or ""
        denied = (
            " A task is still denied after the change." if verdict.why == "still-denied" else ""
        )
        result.message = (
            f"no carts task settled in RUNNING within {timeout_s:g} s.{denied} "
            f"Last stop: {result.last_stop_reason or 'none seen'}. "
            f"Last log line: {result.last_log_line or 'none'}"
        )
    # What the result shows: the settled task and those the change did not save, not every task
    # the watch happened to see (that depends on where the restart cycle was at the change).
    shown = [*result.failed_after_change, *([result.task] if result.task else [])]
    result.tasks = sorted(shown, key=lambda t: t["createdAt"].timestamp(), reverse=True)


def _frame(mem: _Memory, tds: TaskDefinitions) -> Any:
    return tasks_frame(list(mem.seen.values()), limit=6, apps=tds.apps()) if mem.seen else None


def _status_line(mem: _Memory, result: WatchResult) -> str:
    """The live view's line (the time waited is shown beside it, by the view)."""
    n_failed = len(result.failed_after_change)
    seen = mem.seen
    newest = max(seen.values(), key=lambda t: t["createdAt"].timestamp()) if seen else None
    now = f"newest task {newest.get('lastStatus')}" if newest else "waiting for a new task"
    return f"{now}; {n_failed} stopped since the change"


def _last_denial(reader: _Reader, task: dict[str, Any]) -> str | None:
    """The task's last AccessDenied log line, if it logged one (its stream searched, every
    page)."""
    td = reader.tds.of(task)
    stream = td.log_stream_of(task)
    if td.log_group is None or stream is None:
        return None
    found = search(reader.logs, td.log_group, DENIAL_PATTERN, streams=[stream])
    for event in reversed(found):
        if parse_access_denied(str(event["message"])) is not None:
            return str(event["message"]).strip()
    return None
