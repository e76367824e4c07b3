"""The watch loop against a scripted ECS (pure logic: no AWS, no sleeping)."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runbook_lib.display import LiveView
from runbook_lib.ecs import ServiceState, TaskDefinition, TaskDefinitions
from runbook_lib.errors import DeploymentFailed, WatchTimeout
from runbook_lib.watch import (
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    SETTLE_INTERVAL_S,
    SETTLE_WITHOUT_HEALTHCHECK_S,
    Baseline,
    PollEvidence,
    decide,
    denials_by_task,
    task_state,
    watch,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TD = TaskDefinition(
    "arn:td",
    "arn:aws:iam::1:role/r",
    "arn:aws:iam::1:role/x",
    "application",
    "grp",
    "carts-service",
)
ARN = "arn:aws:ecs:us-west-2:123456789012:task/c/"


def task(n: int, status: str, health: str = "UNKNOWN", stop: str = "") -> dict[str, Any]:
    t: dict[str, Any] = {
        "taskArn": f"{ARN}{n:032x}",
        "lastStatus": status,
        "desiredStatus": "STOPPED" if status == "STOPPED" else "RUNNING",
        "healthStatus": health,
        "createdAt": T0 + timedelta(seconds=n),
        "taskDefinitionArn": TD.arn,
        "containers": [
            {"name": "application", "exitCode": 1}
            if status == "STOPPED"
            else {"name": "application", "healthStatus": health}
        ],
    }
    if stop:
        t["stopCode"], t["stoppedReason"] = stop, "Essential container in task exited"
    return t


class FakeECS:
    """Each poll advances the script by one frame: the list of tasks ECS would describe."""

    def __init__(
        self, frames: list[list[dict[str, Any]]], rollout: str | None = None, desired: int = 1
    ) -> None:
        self.frames = frames
        self.i = 0
        self.calls: list[str] = []
        self.rollout = rollout
        self.desired = desired
        self.exceptions = type("E", (), {"ClusterNotFoundException": KeyError})

    @property
    def now(self) -> list[dict[str, Any]]:
        return self.frames[min(self.i, len(self.frames) - 1)]

    def get_paginator(self, name: str) -> Any:
        outer = self

        class P:
            def paginate(self, **kw: Any) -> list[dict[str, Any]]:
                outer.calls.append("list_tasks")
                return [
                    {
                        "taskArns": [
                            t["taskArn"]
                            for t in outer.now
                            if t["desiredStatus"] == kw["desiredStatus"]
                        ]
                    }
                ]

        return P()

    def describe_tasks(self, cluster: str, tasks: list[str]) -> dict[str, Any]:
        self.calls.append("describe_tasks")
        by_arn = {t["taskArn"]: t for t in self.now}
        return {"tasks": [by_arn[a] for a in tasks if a in by_arn]}

    def describe_services(self, cluster: str, services: list[str]) -> dict[str, Any]:
        self.calls.append("describe_services")
        running = sum(1 for t in self.now if t["lastStatus"] == "RUNNING")
        return {
            "services": [
                {
                    "serviceName": "carts",
                    "status": "ACTIVE",
                    "desiredCount": self.desired,
                    "runningCount": running,
                    "pendingCount": 0,
                    "taskDefinition": "arn:td",
                    "deployments": [
                        {
                            "id": "ecs-svc/5386320934964759578",
                            "status": "PRIMARY",
                            "rolloutState": self.rollout,
                            "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start.",
                        }
                    ]
                    if self.rollout
                    else [],
                    "events": [],
                }
            ]
        }


class FakeLogs:
    class exceptions:
        ResourceNotFoundException = KeyError

    def __init__(self, denial_for: set[str] | None = None) -> None:
        self.denial_for = denial_for or set()
        self.searches: list[dict[str, Any]] = []

    def get_log_events(self, **kw: Any) -> dict[str, Any]:
        tid = kw["logStreamName"].rsplit("/", 1)[-1]
        if tid in self.denial_for:
            msg = f"User: arn:aws:sts::123456789012:assumed-role/r/{tid} is not authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:us-west-2:123456789012:table/t because no identity-based policy allows the dynamodb:Query action"
            return {"events": [{"message": msg, "timestamp": 5_000}]}
        return {"events": []}

    def filter_log_events(self, **kw: Any) -> dict[str, Any]:
        self.searches.append(kw)
        events = [
            {"logStreamName": f"carts-service/application/{tid}", **e}
            for tid in sorted(self.denial_for)
            for e in self.get_log_events(logStreamName=f"x/{tid}")["events"]
            if e["timestamp"] >= kw.get("startTime", 0)
        ]
        return {"events": events}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def run(
    frames: list[list[dict[str, Any]]],
    baseline: Baseline | None,
    timeout: float = 60,
    logs: FakeLogs | None = None,
) -> tuple[Any, FakeECS, Clock]:
    ecs, clock = FakeECS(frames), Clock()

    def sleep(s: float) -> None:
        clock.sleep(s)
        ecs.i += 1

    result = watch(
        ecs, logs or FakeLogs(), TD, "c", "carts", baseline, timeout, sleep=sleep, clock=clock
    )
    return result, ecs, clock


def test_a_new_task_that_turns_healthy_ends_the_watch() -> None:
    base = Baseline(frozenset({task(1, "RUNNING", "HEALTHY")["taskArn"]}), 0.0)
    frames = [
        [task(1, "RUNNING", "HEALTHY")],
        [task(1, "STOPPED", stop="EssentialContainerExited")],
        [task(2, "PROVISIONING")],
        [task(2, "RUNNING")],
        [task(2, "RUNNING", "HEALTHY")],
    ]
    result, _, _ = run(frames, base)
    assert result.outcome == "running" and result.task["taskArn"].endswith(f"{2:032x}")
    assert result.failed_after_change == []  # the baseline task does not count against the fix
    assert "RUNNING and HEALTHY" in result.message


def test_a_task_denied_after_the_change_is_counted_and_watching_goes_on() -> None:
    frames = [
        [task(2, "PROVISIONING")],
        [task(2, "RUNNING")],
        [task(2, "STOPPED", stop="EssentialContainerExited")],
        [task(3, "PENDING")],
        [task(3, "RUNNING", "HEALTHY")],
    ]
    logs = FakeLogs({f"{2:032x}"})
    result, _, _ = run(frames, Baseline(frozenset(), 0.0), logs=logs)
    assert result.outcome == "running" and len(result.failed_after_change) == 1
    assert result.record()["propagation_delay_seen"] is True
    assert "is not authorized" in result.last_log_line


def test_timeout_names_the_last_stop_reason_and_log_line() -> None:
    frames = [[task(2, "RUNNING")], [task(2, "STOPPED", stop="EssentialContainerExited")], []]
    with pytest.raises(WatchTimeout) as err:
        run(frames, Baseline(frozenset(), 0.0), timeout=10, logs=FakeLogs({f"{2:032x}"}))
    msg = str(err.value)
    assert "within 10 s" in msg and "EssentialContainerExited" in msg and "dynamodb:Query" in msg


def test_polling_backs_off_to_the_cap() -> None:
    frames = [[task(2, "PROVISIONING")]] * 8 + [[task(2, "RUNNING", "HEALTHY")]]
    result, ecs, clock = run(frames, Baseline(frozenset(), 0.0))
    assert result.outcome == "running"
    assert clock.sleeps[0] == MIN_INTERVAL_S
    assert max(clock.sleeps) == MAX_INTERVAL_S
    assert all(MIN_INTERVAL_S <= s <= MAX_INTERVAL_S for s in clock.sleeps)
    # While a known task is starting, each poll is one describe_tasks call.
    polls = ecs.calls[ecs.calls.index("describe_tasks") :]
    assert polls.count("list_tasks") == 0


def test_a_change_does_not_bring_back_quick_polling() -> None:
    """A task that keeps changing (one failing over and over) is polled at the cap, not faster."""
    steps = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"] * 3
    frames = [[task(2, s)] for s in steps] + [[task(2, "RUNNING", "HEALTHY")]]
    result, _, clock = run(frames, Baseline(frozenset(), 0.0))
    assert result.outcome == "running"
    assert clock.sleeps[:3] == [MIN_INTERVAL_S, 2 * MIN_INTERVAL_S, MAX_INTERVAL_S]
    assert all(s in (MAX_INTERVAL_S, SETTLE_INTERVAL_S) for s in clock.sleeps[2:])
    # Each sleep follows a poll; a poll that saw the task starting is followed by the 2 s cap.
    for step, slept in zip(steps[2:], clock.sleeps[2:], strict=False):
        assert slept == (SETTLE_INTERVAL_S if step == "RUNNING" else MAX_INTERVAL_S), (step, slept)


def test_a_running_task_waiting_for_its_health_check_is_polled_more_slowly() -> None:
    """Under 30 calls a minute at AWS's pace: 2 s while starting, 4 s while RUNNING and waiting."""
    frames = (
        [[task(2, "PENDING")]] * 5 + [[task(2, "RUNNING")]] * 15 + [[task(2, "RUNNING", "HEALTHY")]]
    )
    result, ecs, clock = run(frames, Baseline(frozenset(), 0.0), timeout=300)
    assert result.outcome == "running"
    assert clock.sleeps[5:19] == [SETTLE_INTERVAL_S] * 14
    minutes = clock.t / 60
    assert len(ecs.calls) / minutes <= 30, (len(ecs.calls), clock.t)


def test_the_interval_runs_from_poll_start_to_poll_start() -> None:
    """A slow answer does not stretch the time between two polls beyond the cap."""
    frames = [[task(2, "PENDING")]] * 6 + [[task(2, "RUNNING", "HEALTHY")]]
    ecs, clock = FakeECS(frames), Clock()
    starts: list[float] = []
    describe = ecs.describe_tasks

    def slow_describe(cluster: str, tasks: list[str]) -> dict[str, Any]:
        starts.append(clock.t)
        clock.t += 0.3  # the answer takes 0.3 s
        return describe(cluster, tasks)

    def sleep(s: float) -> None:
        clock.sleep(s)
        ecs.i += 1

    ecs.describe_tasks = slow_describe  # type: ignore[method-assign]
    result = watch(ecs, FakeLogs(), TD, "c", "carts", None, 60, sleep=sleep, clock=clock)
    assert result.outcome == "running"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[:2] == pytest.approx([MIN_INTERVAL_S, 2 * MIN_INTERVAL_S])
    assert gaps[2:] == pytest.approx([MAX_INTERVAL_S] * (len(gaps) - 2))


def test_a_task_running_but_not_yet_healthy_at_the_change_is_watched() -> None:
    """Its app may make its start-up Query after the change; it must not be ignored."""
    base = Baseline(frozenset(), 0.0)
    result, _, _ = run([[task(1, "RUNNING")], [task(1, "RUNNING", "HEALTHY")]], base)
    assert result.outcome == "running" and result.task["taskArn"].endswith(f"{1:032x}")


def test_a_denial_logged_before_the_change_does_not_count_against_it() -> None:
    frames = [
        [task(1, "RUNNING")],
        [task(1, "STOPPED", stop="EssentialContainerExited")],
        [task(2, "RUNNING", "HEALTHY")],
    ]
    result, _, _ = run(frames, Baseline(frozenset(), 10.0), logs=FakeLogs({f"{1:032x}"}))
    assert result.outcome == "running" and result.failed_after_change == []


def test_without_a_write_the_already_running_task_counts() -> None:
    result, _, _ = run([[task(1, "RUNNING", "HEALTHY")]], None)
    assert result.outcome == "running" and result.polls == 1


class LogsWithDenials(FakeLogs):
    """Logs whose service-wide search finds a start-up denial of the given tasks."""

    def __init__(self, found: set[str]) -> None:
        super().__init__(found)
        self.found = found

    def filter_log_events(self, **kw: Any) -> dict[str, Any]:
        self.searches.append(kw)
        events = self.get_log_events
        return {
            "events": [
                {"logStreamName": f"carts-service/application/{tid}", **e}
                for tid in sorted(self.found)
                for e in events(logStreamName=f"carts-service/application/{tid}")["events"]
            ]
        }


def test_a_denied_task_the_polls_missed_counts_and_the_watch_ends() -> None:
    """Between two polls a task can start, be denied and stop (IAM's propagation delay); the
    service's log shows it. It counts as denied after the change, not against the settled task."""
    frames = [
        [task(3, "RUNNING", "HEALTHY"), task(2, "STOPPED", stop="EssentialContainerExited")],
    ]
    result, _, _ = run(frames, Baseline(frozenset(), 0.0), logs=LogsWithDenials({f"{2:032x}"}))
    assert result.outcome == "running" and result.task["taskArn"].endswith(f"{3:032x}")
    assert [t["taskArn"][-1] for t in result.failed_after_change] == ["2"]
    assert result.record()["propagation_delay_seen"] is True


def test_a_denial_in_the_running_task_own_log_keeps_the_watch_going() -> None:
    frames = [[task(3, "RUNNING", "HEALTHY")]]
    with pytest.raises(WatchTimeout, match="is not authorized"):
        run(frames, Baseline(frozenset(), 0.0), timeout=5, logs=LogsWithDenials({f"{3:032x}"}))


# --- each task judged by its own task definition ------------------------------------------------

#: A revision whose app container defines no health check (ECS reports UNKNOWN for ever).
NO_HC = TaskDefinition(
    "arn:td-no-hc",
    TD.task_role_arn,
    TD.execution_role_arn,
    "application",
    "grp",
    "carts-service",
    has_health_check=False,
)


def started(t: dict[str, Any], at: float) -> dict[str, Any]:
    return {**t, "startedAt": datetime.fromtimestamp(at, UTC)}


def test_task_state_without_a_health_check_settles_after_running_long_enough() -> None:
    t = started(task(1, "RUNNING"), 1000.0)
    assert (
        task_state(t, NO_HC, 1000.0 + SETTLE_WITHOUT_HEALTHCHECK_S - 1) == "waiting-no-health-check"
    )
    assert task_state(t, NO_HC, 1000.0 + SETTLE_WITHOUT_HEALTHCHECK_S) == "running-no-health-check"
    # The same task judged by a task definition with a check waits for HEALTHY.
    assert task_state(t, TD, 5000.0) == "waiting-health"


def test_a_clock_behind_aws_still_settles_a_task_without_a_health_check() -> None:
    """This machine's clock 60 s behind AWS's: startedAt looks like the future; the time the
    watch itself saw the task RUNNING decides."""
    t = started(task(1, "RUNNING"), 1060.0)
    assert task_state(t, NO_HC, 1000.0, seen_running_s=10.0) == "waiting-no-health-check"
    assert task_state(t, NO_HC, 1000.0, seen_running_s=30.0) == "running-no-health-check"


def test_task_state_reads_the_app_container_health_not_a_sidecar() -> None:
    """The task's health is the worst of its essential containers': a sidecar without a check
    keeps it UNKNOWN while the app's own check has passed."""
    t = task(1, "RUNNING", "UNKNOWN")
    t["containers"] = [
        {"name": "ecs-service-connect-Ab12", "healthStatus": "UNKNOWN"},
        {"name": "application", "healthStatus": "HEALTHY"},
    ]
    assert task_state(t, TD, 0.0) == "healthy"
    assert task_state({**t, "desiredStatus": "STOPPED"}, TD, 0.0) == "stopping"


def test_a_revision_without_a_health_check_ends_the_watch_once_running_long_enough() -> None:
    """The task's own task definition (not the service's) says there is no check to wait for."""
    frames = [[{**task(2, "RUNNING"), "taskDefinitionArn": NO_HC.arn}]]
    frames[0][0] = started(frames[0][0], 0.0)
    ecs, clock = FakeECS(frames), Clock()
    tds = TaskDefinitions(ecs, [TD, NO_HC])
    result = watch(
        ecs,
        FakeLogs(),
        tds,
        "c",
        "carts",
        Baseline(frozenset(), 0.0),
        300,
        sleep=clock.sleep,
        clock=clock,
        now=clock,
    )
    assert result.outcome == "running" and result.settled_as == "running-no-health-check"
    assert "defines no container health check" in result.message
    assert (
        SETTLE_WITHOUT_HEALTHCHECK_S <= clock.t < SETTLE_WITHOUT_HEALTHCHECK_S + SETTLE_INTERVAL_S
    )


def test_a_failed_deployment_stops_the_watch_at_once() -> None:
    """botocore: "A deployment in FAILED state doesn't launch any new tasks"."""
    ecs, clock = FakeECS([[task(2, "STOPPED", stop="EssentialContainerExited")]], "FAILED"), Clock()
    with pytest.raises(DeploymentFailed) as err:
        watch(
            ecs,
            FakeLogs(),
            TD,
            "c",
            "carts",
            Baseline(frozenset(), 0.0),
            300,
            sleep=clock.sleep,
            clock=clock,
        )
    assert "FAILED (ECS deployment circuit breaker: tasks failed to start.)" in str(err.value)
    assert "--force-new-deployment" in str(err.value)
    assert clock.t == 0.0  # no wait at all


def test_an_already_healthy_service_the_change_keeps_allowed_needs_no_new_task() -> None:
    healthy = task(1, "RUNNING", "HEALTHY")
    base = Baseline(frozenset({healthy["taskArn"]}), 0.0)
    ecs, clock = FakeECS([[healthy]], "COMPLETED"), Clock()
    result = watch(
        ecs,
        FakeLogs(),
        TD,
        "c",
        "carts",
        base,
        300,
        keeps_allowed=True,
        sleep=clock.sleep,
        clock=clock,
    )
    assert result.outcome == "already-running" and result.ok and clock.t == 0.0
    assert "ECS starts no new task for an IAM change" in result.message
    # Without the preflight's word that the change keeps carts allowed, it waits (and times out).
    ecs, clock = FakeECS([[healthy]], "COMPLETED"), Clock()
    with pytest.raises(WatchTimeout):
        watch(ecs, FakeLogs(), TD, "c", "carts", base, 20, sleep=clock.sleep, clock=clock)


def _svc(running: int, desired: int = 1, rollout: str = "IN_PROGRESS") -> ServiceState:
    return ServiceState(
        "carts",
        "ACTIVE",
        desired,
        running,
        0,
        "arn:td",
        ({"status": "PRIMARY", "id": "d", "rolloutState": rollout},),
        (),
    )


def test_decide_on_evidence() -> None:
    up = task(3, "RUNNING", "HEALTHY")
    states: dict[str, Any] = {up["taskArn"]: "healthy"}
    ev = PollEvidence((up,), states, _svc(1), {})
    kw: dict[str, Any] = {
        "elapsed": 10.0,
        "timeout_s": 60.0,
        "keeps_allowed": True,
        "healthy_at_change": 0,
    }
    assert decide(ev, **kw).outcome == "running"
    assert decide(PollEvidence((up,), states, _svc(1), {"x": "denied"}), **kw).why == "still-denied"
    assert decide(PollEvidence((up,), states, _svc(0)), **kw).why == "below-desired"
    late = decide(PollEvidence((up,), states, _svc(1), {"x": "denied"}), **{**kw, "elapsed": 60.0})
    assert late.outcome == "timeout" and late.why == "still-denied"
    assert (
        decide(PollEvidence((), {}, _svc(0, rollout="FAILED")), **kw).outcome == "deployment-failed"
    )
    steady = PollEvidence((), {}, _svc(1, rollout="COMPLETED"))
    assert decide(steady, **{**kw, "healthy_at_change": 1}).outcome == "already-running"
    assert decide(steady, **kw).why == "no-task"


def test_denials_are_counted_per_task_from_the_session_name() -> None:
    """A stream without a prefix is named after the container id; the denial's role session
    names the task whatever the stream. Another role's denial (another service in a shared log
    group) and the tasks healthy at the change are left out."""
    mine = FakeLogs({f"{7:032x}"}).get_log_events(logStreamName=f"x/{7:032x}")["events"][0]
    other = {**mine, "message": mine["message"].replace("assumed-role/r/", "assumed-role/other/")}
    events = [{**mine, "logStreamName": "0f3c9a"}, {**other, "logStreamName": "77aa"}]
    assert denials_by_task(events, frozenset({"r"}), frozenset()) == {f"{7:032x}": mine["message"]}
    assert denials_by_task(events, frozenset({"r"}), frozenset({f"{7:032x}"})) == {}


def test_without_a_stream_prefix_the_whole_group_is_searched_without_an_empty_prefix() -> None:
    bare = TaskDefinition(
        TD.arn, TD.task_role_arn, TD.execution_role_arn, "application", "grp", None
    )
    logs = FakeLogs()
    ecs, clock = FakeECS([[task(2, "RUNNING", "HEALTHY")]]), Clock()
    result = watch(
        ecs,
        logs,
        bare,
        "c",
        "carts",
        Baseline(frozenset(), 0.0),
        60,
        sleep=clock.sleep,
        clock=clock,
    )
    assert result.outcome == "running"
    assert logs.searches and all("logStreamNamePrefix" not in kw for kw in logs.searches)


def test_the_headless_log_shows_the_time_waited_once(capsys: pytest.CaptureFixture[str]) -> None:
    frames = [[task(2, "PENDING")], [task(2, "RUNNING")], [task(2, "RUNNING", "HEALTHY")]]
    ecs, clock = FakeECS(frames), Clock()

    def sleep(s: float) -> None:
        clock.sleep(s)
        ecs.i += 1

    view = LiveView("Watching carts", 60, live=False)
    watch(
        ecs,
        FakeLogs(),
        TD,
        "c",
        "carts",
        Baseline(frozenset(), 0.0),
        60,
        view=view,
        sleep=sleep,
        clock=clock,
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "newest task" in ln]
    assert lines
    for line in lines:
        assert re.fullmatch(
            r"\[watch\] \+ *\d+\.\ds newest task \w+; 0 stopped since the change", line
        )
