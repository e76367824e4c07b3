"""Watch the next carts task: from the policy change to a settled RUNNING task.

Done when a task whose app started after the change is RUNNING and HEALTHY (its health check
passed: the app got past its start-up Query), the service runs as many tasks as it wants, and no
task still running logged an AccessDenied since the change (a task denied since the change that
has stopped, even one that came and went between two polls, counts as not saved by the change
yet: IAM's propagation delay). Polling starts quick (:data:`MIN_INTERVAL_S`: the task may be
about to settle) and slows to one poll every :data:`MAX_INTERVAL_S` while a task is starting, or
:data:`SETTLE_INTERVAL_S` while it is RUNNING and waits for its health check, counted from the
start of one poll to the start of the next; each poll makes one call in the common case (``describe_tasks`` of
the task being watched). A change seen does not speed polling up again: ECS's steps last seconds,
and a task that keeps failing (a slow IAM propagation) would otherwise keep the watch polling at
the quickest rate for as long as it lasts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from runbook_lib.access_denied import parse_access_denied
from runbook_lib.display import LiveView, TaskTable
from runbook_lib.ecs import (
    TaskDefinition,
    describe_service,
    describe_tasks,
    list_service_tasks,
    task_id,
    tasks_frame,
)
from runbook_lib.errors import WatchTimeout
from runbook_lib.shows import Shows

MIN_INTERVAL_S = 0.5
#: The longest wait between two polls while a task is starting (before RUNNING) or none is known.
MAX_INTERVAL_S = 2.0
#: The wait while every watched task is RUNNING and waits for its first passing health check
#: (at AWS's pace tens of seconds: the carts check runs every 10 s after a 60 s start period).
#: Slower polling there keeps the watch under 30 calls a minute; HEALTHY is still seen within
#: one interval.
SETTLE_INTERVAL_S = 4.0
#: Without a container health check, how long RUNNING must last to count as settled.
SETTLE_WITHOUT_HEALTHCHECK_S = 30.0


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
        cls, ecs: Any, cluster: str, service: str, now: Callable[[], float] = time.time
    ) -> Baseline:
        """The service's healthy tasks now; ``now`` tells the time as AWS tells it."""
        arns = list_service_tasks(ecs, cluster, service, "RUNNING")
        tasks = describe_tasks(ecs, cluster, arns) if arns else []
        healthy = frozenset(t["taskArn"] for t in tasks if t.get("healthStatus") == "HEALTHY")
        return cls(healthy=healthy, at=now())


@dataclass
class WatchResult(Shows):
    outcome: str  # "running" | "timeout" | "skipped"
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

    @property
    def ok(self) -> bool:
        return self.outcome in ("running", "skipped")

    def table(self) -> TaskTable:
        return TaskTable(tasks_frame(self.tasks, limit=4), "Carts tasks (newest first):")

    def record(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "task": task_id(self.task["taskArn"]) if self.task else None,
            "tasks_denied_after_change": len(self.failed_after_change),
            "propagation_delay_seen": bool(self.failed_after_change) and self.outcome == "running",
            "last_stop_reason": self.last_stop_reason,
            "last_log_line": self.last_log_line,
            "elapsed_s": round(self.elapsed_s, 3),
            "polls": self.polls,
            "timeline": [{"t": round(t, 3), "event": e} for t, e in self.timeline],
        }

    def __str__(self) -> str:
        parts = [self.message]
        if self.failed_after_change and self.outcome == "running":
            parts.append(_propagation_note(len(self.failed_after_change)))
        if self.tasks:
            parts.append(str(self.table()))
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        colour = {"running": "#1b7f3b", "skipped": "#555"}.get(self.outcome, "#b00020")
        html = f'<p style="color:{colour}"><b>{escape(self.message)}</b></p>'
        if self.failed_after_change and self.outcome == "running":
            html += f"<p>{escape(_propagation_note(len(self.failed_after_change)))}</p>"
        if self.tasks:
            html += self.table()._repr_html_()
        return html


def _propagation_note(n: int) -> str:
    return (
        f"{n} task(s) started after the change were still denied: IAM changes take a moment to "
        "reach every endpoint, and ECS kept starting replacements until one got the permission."
    )


def _settled(task: dict[str, Any], has_health_check: bool, now: float) -> bool:
    if task.get("lastStatus") != "RUNNING" or task.get("desiredStatus") != "RUNNING":
        return False
    if has_health_check:
        return task.get("healthStatus") == "HEALTHY"
    started = task.get("startedAt")
    return started is not None and now - started.timestamp() >= SETTLE_WITHOUT_HEALTHCHECK_S


def watch(
    ecs: Any,
    logs: Any,
    td: TaskDefinition,
    cluster: str,
    service: str,
    baseline: Baseline | None,
    timeout_s: float,
    *,
    has_health_check: bool = True,
    view: LiveView | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> WatchResult:
    """Poll until a carts task settles in RUNNING or ``timeout_s`` passes.

    ``baseline`` is None when nothing was written: then the task already running counts.
    ``sleep`` and ``clock`` keep the watch's own time, ``now`` tells AWS's (epoch seconds).
    Raises :class:`WatchTimeout` with the last stop reason and log line on timeout.
    """
    t0 = clock()
    result = WatchResult("timeout", "")
    seen: dict[str, dict[str, Any]] = {}
    watching: list[str] = []
    done_with: set[str] = set()
    stopped: list[dict[str, Any]] = []  # watched tasks seen STOPPED
    interval = MIN_INTERVAL_S
    running_seen_at: float | None = None

    def eligible(arn: str) -> bool:
        return arn not in done_with and (baseline is None or arn not in baseline.healthy)

    while True:
        polled_at = clock()
        elapsed = polled_at - t0
        changed = False
        result.polls += 1
        if not watching:
            arns = list_service_tasks(ecs, cluster, service, "RUNNING")
            watching = [a for a in arns if eligible(a)]
        if watching:
            for t in describe_tasks(ecs, cluster, watching):
                arn = t["taskArn"]
                before = seen.get(arn)
                seen[arn] = t
                state = f"{t.get('lastStatus')}/{t.get('healthStatus', 'UNKNOWN')}"
                if (
                    before is None
                    or state
                    != f"{before.get('lastStatus')}/{before.get('healthStatus', 'UNKNOWN')}"
                ):
                    changed = True
                    result.timeline.append((elapsed, f"task {task_id(arn)} {state}"))
                if t.get("lastStatus") == "STOPPED":
                    # Whether the change had reached it is read from the logs once, when a task
                    # settles (one search for every task), not with a log read per stopped task.
                    done_with.add(arn)
                    stopped.append(t)
                    result.last_stop_reason = (
                        f"{t.get('stopCode', '')}: {t.get('stoppedReason', '')}"
                    )
                elif _settled(t, has_health_check, now()):
                    if running_seen_at is None:
                        running_seen_at = clock()
                    svc = describe_service(ecs, cluster, service)
                    if svc.running >= svc.desired:
                        denials = _denials_since(logs, td, baseline)
                        lines = dict(denials)
                        result.failed_after_change = _not_reached(stopped, denials, baseline)
                        # A task can start, be denied and stop between two polls: its denial
                        # counts as a task the change did not reach yet, not against this one.
                        for m in _stopped_since(ecs, cluster, arn, denials):
                            done_with.add(m["taskArn"])
                            stopped.append(m)
                            result.failed_after_change.append(m)
                            denials.pop(task_id(m["taskArn"]), None)
                            result.timeline.append(
                                (elapsed, f"task {task_id(m['taskArn'])} STOPPED")
                            )
                        for m in result.failed_after_change:
                            result.last_log_line = lines.get(task_id(m["taskArn"]), "") or (
                                result.last_log_line
                            )
                        denial = next(iter(denials.values()), None)
                        if denial is None:
                            result.outcome = "running"
                            result.task = t
                            result.message = (
                                f"carts task {task_id(arn)} is RUNNING and HEALTHY; the service runs "
                                f"{svc.running} of {svc.desired}."
                            )
                            result.reported_after_running_s = clock() - running_seen_at
                            break
                        result.last_log_line = denial
            watching = [a for a in watching if a not in done_with]
            if result.outcome == "running":
                break
        frame = tasks_frame(list(seen.values()), limit=6) if seen else None
        if view is not None:
            view.update(elapsed, _status_line(seen, result, elapsed), frame, changed)
        if elapsed >= timeout_s:
            break
        settling = bool(watching) and all(
            seen.get(a, {}).get("lastStatus") == "RUNNING" for a in watching
        )
        this = min(interval, SETTLE_INTERVAL_S if settling else MAX_INTERVAL_S)
        wake_at = min(polled_at + this, t0 + timeout_s)
        interval = min(interval * 2, SETTLE_INTERVAL_S)
        sleep(max(0.0, wake_at - clock()))

    result.elapsed_s = clock() - t0
    # What the result shows: the settled task and those the change did not save, not every task
    # the watch happened to see (that depends on where the restart cycle was at the change).
    shown = [*result.failed_after_change, *([result.task] if result.task else [])]
    result.tasks = sorted(shown, key=lambda t: t["createdAt"].timestamp(), reverse=True)
    if view is not None:
        frame = tasks_frame(list(seen.values()), limit=6) if seen else None
        view.update(result.elapsed_s, _status_line(seen, result, result.elapsed_s), frame, True)
        view.close(
            result.message or f"no carts task settled within {timeout_s:g} s",
            result.outcome == "running",
        )
    if result.outcome != "running":
        if stopped and not result.last_log_line:
            result.last_log_line = _last_denial(logs, td, task_id(stopped[-1]["taskArn"])) or ""
        result.message = (
            f"no carts task settled in RUNNING within {timeout_s:g} s. "
            f"Last stop: {result.last_stop_reason or 'none seen'}. "
            f"Last log line: {result.last_log_line or 'none'}"
        )
        raise WatchTimeout(result.message)
    return result


def _status_line(seen: dict[str, dict[str, Any]], result: WatchResult, elapsed: float) -> str:
    if result.outcome == "running":
        return result.message
    n_failed = len(result.failed_after_change)
    newest = max(seen.values(), key=lambda t: t["createdAt"].timestamp()) if seen else None
    now = f"newest task {newest.get('lastStatus')}" if newest else "waiting for a new task"
    return f"{elapsed:.1f} s: {now}; {n_failed} stopped since the change"


def _last_denial(logs: Any, td: TaskDefinition, tid: str) -> str | None:
    """The task's last AccessDenied log line, if it logged one."""
    if td.log_group is None:
        return None
    stream = td.log_stream(tid)
    if stream is None:
        return None
    try:
        got = logs.get_log_events(
            logGroupName=td.log_group, logStreamName=stream, limit=40, startFromHead=False
        )
    except logs.exceptions.ResourceNotFoundException:
        return None
    for event in reversed(got.get("events", [])):
        if parse_access_denied(event["message"]) is not None:
            return str(event["message"]).strip()
    return None


def _not_reached(
    stopped: list[dict[str, Any]], denials: dict[str, str], baseline: Baseline | None
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


def _stopped_since(
    ecs: Any, cluster: str, like_arn: str, denials: dict[str, str]
) -> list[dict[str, Any]]:
    """The tasks named in ``denials`` (by id) that have stopped, described now."""
    if not denials:
        return []
    prefix = like_arn.rsplit("/", 1)[0]
    tasks = describe_tasks(ecs, cluster, [f"{prefix}/{tid}" for tid in denials])
    return [t for t in tasks if t.get("lastStatus") == "STOPPED"]


def _denials_since(logs: Any, td: TaskDefinition, baseline: Baseline | None) -> dict[str, str]:
    """AccessDenied lines in the service's logs since the change, by task id (the first line of
    each task), leaving out the tasks that were already healthy at the change."""
    found: dict[str, str] = {}
    if td.log_group is None or baseline is None:
        return found
    got = logs.filter_log_events(
        logGroupName=td.log_group,
        logStreamNamePrefix=td.log_stream_prefix or "",
        startTime=int(baseline.at * 1000),
        filterPattern='"is not authorized to perform"',
    )
    skip = {task_id(a) for a in baseline.healthy}
    for e in got.get("events", []):
        stream_task = e.get("logStreamName", "").rsplit("/", 1)[-1]
        if stream_task not in skip and parse_access_denied(e["message"]) is not None:
            found.setdefault(stream_task, str(e["message"]).strip())
    return found
