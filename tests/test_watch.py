"""The watch loop against a scripted ECS (pure logic: no AWS, no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runbook_lib.ecs import TaskDefinition
from runbook_lib.errors import WatchTimeout
from runbook_lib.watch import MAX_INTERVAL_S, MIN_INTERVAL_S, Baseline, watch

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
        "containers": [{"exitCode": 1} if status == "STOPPED" else {}],
    }
    if stop:
        t["stopCode"], t["stoppedReason"] = stop, "Essential container in task exited"
    return t


class FakeECS:
    """Each poll advances the script by one frame: the list of tasks ECS would describe."""

    def __init__(self, frames: list[list[dict[str, Any]]]) -> None:
        self.frames = frames
        self.i = 0
        self.calls: list[str] = []
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
                    "desiredCount": 1,
                    "runningCount": running,
                    "pendingCount": 0,
                    "taskDefinition": "arn:td",
                    "deployments": [],
                    "events": [],
                }
            ]
        }


class FakeLogs:
    class exceptions:
        ResourceNotFoundException = KeyError

    def __init__(self, denial_for: set[str] | None = None) -> None:
        self.denial_for = denial_for or set()

    def get_log_events(self, **kw: Any) -> dict[str, Any]:
        tid = kw["logStreamName"].rsplit("/", 1)[-1]
        if tid in self.denial_for:
            msg = f"User: arn:aws:sts::123456789012:assumed-role/r/{tid} is not authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:us-west-2:123456789012:table/t because no identity-based policy allows the dynamodb:Query action"
            return {"events": [{"message": msg, "timestamp": 5_000}]}
        return {"events": []}

    def filter_log_events(self, **kw: Any) -> dict[str, Any]:
        return {"events": []}


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


def test_polling_backs_off_to_the_cap_and_resets_on_change() -> None:
    frames = [[task(2, "PROVISIONING")]] * 8 + [[task(2, "RUNNING", "HEALTHY")]]
    result, ecs, clock = run(frames, Baseline(frozenset(), 0.0))
    assert result.outcome == "running"
    assert clock.sleeps[0] == MIN_INTERVAL_S
    assert max(clock.sleeps) == MAX_INTERVAL_S
    assert all(MIN_INTERVAL_S <= s <= MAX_INTERVAL_S for s in clock.sleeps)
    # While a known task is starting, each poll is one describe_tasks call.
    polls = ecs.calls[ecs.calls.index("describe_tasks") :]
    assert polls.count("list_tasks") == 0


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
    assert "is not authorized" in result.last_log_line


def test_without_a_write_the_already_running_task_counts() -> None:
    result, _, _ = run([[task(1, "RUNNING", "HEALTHY")]], None)
    assert result.outcome == "running" and result.polls == 1
