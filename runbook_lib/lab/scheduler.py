"""The ECS service scheduler, played by the lab (moto has none).

It keeps each ACTIVE service at its desired count, rolls out new deployments, counts running and
pending tasks, and writes the service events the console shows, newest first::

    (service carts) has started 1 tasks: (task 0f3c...).
    (service carts) (deployment ecs-svc/4503311985234598394) deployment completed.
    (service carts) has reached a steady state.

Tasks that die after RUNNING are replaced at once; tasks that fail to start
(``TaskFailedToStart``) make it back off, as ECS's start throttling does.

With the deployment circuit breaker on (``deploymentConfiguration.deploymentCircuitBreaker``), a
deployment whose failed tasks reach the threshold turns FAILED and launches no new task (see
:func:`failure_threshold` and :meth:`ServiceScheduler._trip`, AWS-FACTS 1).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from runbook_lib.lab.tasks import PENDING_STATES, LabTask, TaskRunner, Timings
from runbook_lib.lab.world import World

#: Simulated seconds between the scheduler's routine checks, and before a replacement starts.
CHECK_EVERY_S = 5.0
REPLACE_AFTER_S = 2.0
#: Start throttling: after this many tasks in a row failed to start, waits double up to the cap.
THROTTLE_AFTER = 3
THROTTLE_CAP_S = 300.0
#: How many stopped tasks stay listed (AWS keeps them for an hour) and events per service.
KEEP_STOPPED = 100
KEEP_EVENTS = 100

#: The circuit breaker's reason, and the event ECS writes when it trips (AWS-FACTS 1: the reason
#: as observed on FAILED deployments, containers-roadmap#1488; the event as observed in consoles).
BREAKER_REASON = "ECS deployment circuit breaker: tasks failed to start."
BREAKER_EVENT = "(deployment {id}) deployment failed: tasks failed to start."

#: "was unable to place a task because no container instance met all of its requirements"
#: (ECS Developer Guide, service-event-messages.html), when an EC2 cluster has no room.
_NO_ROOM = "was unable to place a task because no container instance met all of its requirements."

_UNABLE = (
    "is unable to consistently start tasks successfully. For more information, see the "
    "Troubleshooting section of the Amazon ECS Developer Guide."
)


class ServiceScheduler:
    """Plays ECS's service scheduler over moto's services (all calls hold MOTO_LOCK)."""

    def __init__(self, world: World, timings: Timings | None = None) -> None:
        self.world = world
        self.runner = TaskRunner(world, self, timings or Timings())
        self.tasks: dict[str, LabTask] = {}
        self._launching: set[str] = set()
        self._failed_starts: dict[str, int] = {}
        self._steady: dict[str, bool] = {}
        #: Deployments whose failed tasks no longer count: one of their tasks ran successfully.
        self._proven: set[str] = set()

    @property
    def ecs(self) -> Any:
        return self.world.backends.ecs

    def start(self) -> None:
        """Take over the services moto holds and start the routine checks."""
        for service in list(self.ecs.services.values()):
            if service.deployments:
                self._renew_deployment_id(service.deployments[0])
            self._recount(service)
        self.world.runtime.spawn("service scheduler", self._routine(), owner=self)
        self.reconcile()

    def _routine(self) -> Generator[float, None, None]:
        while True:
            yield CHECK_EVERY_S
            self.reconcile()

    # --- keeping the desired count ----------------------------------------------------------

    def reconcile(self) -> None:
        """Bring every service towards its desired state (launch, stop, count)."""
        for key, service in list(self.ecs.services.items()):
            self._reconcile(key, service)
        self._prune()

    def _reconcile(self, key: str, service: Any) -> None:
        mine = self._tasks_of(service)
        if service.status != "ACTIVE":
            for task in mine:
                if task.wants_to_run:
                    self.runner.stop(task, "ServiceSchedulerInitiated", "Service deleted")
            self._recount(service)
            if service.status == "DRAINING" and not any(t.last_status != "STOPPED" for t in mine):
                service.status = "INACTIVE"
            return
        primary = self._primary(service)
        if primary is None:
            return
        live = [t for t in mine if t.wants_to_run and t.deployment_id == primary["id"]]
        wanted = int(service.desired_count or 0)
        # "A deployment in FAILED state doesn't launch any new tasks." (bc:ecs
        # Deployment.rolloutState)
        failed = primary.get("rolloutState") == "FAILED"
        if len(live) < wanted and key not in self._launching and not failed:
            self._launching.add(key)
            self.world.runtime.spawn(
                f"launch {key}",
                self._launch(key, wanted - len(live)),
                owner=self,
                delay_s=self._launch_delay(key, service),
            )
        elif len(live) > wanted:
            extra = sorted(live, key=lambda t: t.moto.created_at, reverse=True)[
                : len(live) - wanted
            ]
            reason = f"Scaling activity initiated by (deployment {primary['id']})"
            for task in extra:
                self.runner.stop(task, "ServiceSchedulerInitiated", reason)
            self._event(service, f"has stopped {len(extra)} running tasks: {_task_list(extra)}.")
        self._recount(service)

    def _launch_delay(self, key: str, service: Any) -> float:
        if not self._tasks_of(service):
            return 0.0
        failures = self._failed_starts.get(key, 0)
        if failures < THROTTLE_AFTER:
            return REPLACE_AFTER_S
        if failures == THROTTLE_AFTER:
            self._event(service, _UNABLE)
        return float(min(REPLACE_AFTER_S * 2 ** (failures - THROTTLE_AFTER + 1), THROTTLE_CAP_S))

    def _launch(self, key: str, count: int) -> Generator[float, None, None]:
        yield 0.0
        self._launching.discard(key)
        service = self.ecs.services.get(key)
        primary = self._primary(service) if service is not None else None
        if service is None or primary is None or service.status != "ACTIVE":
            return
        if primary.get("rolloutState") == "FAILED":
            return
        live = [
            t
            for t in self._tasks_of(service)
            if t.wants_to_run and t.deployment_id == primary["id"]
        ]
        count = min(count, int(service.desired_count or 0) - len(live))
        if count <= 0:
            return
        placed = [self.runner.launch(service, primary["id"]) for _ in range(count)]
        started = [t for t in placed if t is not None]
        if len(started) < len(placed):
            self._event(service, _NO_ROOM)
            self._launching.add(key)
            self.world.runtime.spawn(
                f"launch {key}", self._launch(key, count), owner=self, delay_s=CHECK_EVERY_S
            )
        if not started:
            return
        for task in started:
            self.tasks[task.arn] = task
        self._steady[key] = False
        self._event(service, f"has started {len(started)} tasks: {_task_list(started)}.")
        self._recount(service)

    # --- what tasks tell the scheduler ------------------------------------------------------

    def task_running(self, task: LabTask) -> None:
        self._recount_for(task)

    def task_healthy(self, task: LabTask) -> None:
        service = self._service_for(task)
        if service is None:
            return
        key = _key(service)
        self._failed_starts[key] = 0
        primary = self._primary(service)
        self._recount(service)
        if primary is None or task.deployment_id != primary["id"]:
            return
        if primary["id"] not in self._proven:
            # "Once a service deployment has one or more successfully running tasks, the failed
            # task count resets to zero and stops being evaluated." (bc:ecs Deployment.failedTasks)
            self._proven.add(primary["id"])
            primary["failedTasks"] = 0
        healthy = [
            t
            for t in self._tasks_of(service)
            if t.wants_to_run and t.deployment_id == primary["id"] and t.counts_as_healthy
        ]
        if len(healthy) < int(service.desired_count or 0):
            return
        self._retire_old_deployments(service, primary)
        if primary.get("rolloutState") != "COMPLETED":
            primary["rolloutState"] = "COMPLETED"
            primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
            primary["updatedAt"] = self.world.clock.now()
            self._event(service, f"(deployment {primary['id']}) deployment completed.")
        if not self._steady.get(key):
            self._steady[key] = True
            self._event(service, "has reached a steady state.")

    def task_stopping(self, task: LabTask) -> None:
        service = self._service_for(task)
        if service is None:
            return
        key = _key(service)
        self._steady[key] = False
        if task.failed_to_start:
            self._failed_starts[key] = self._failed_starts.get(key, 0) + 1
        primary = self._primary(service)
        failed = task.moto.stop_code in ("EssentialContainerExited", "TaskFailedToStart")
        ours = primary is not None and task.deployment_id == primary["id"]
        counted = primary is not None and ours and failed and not task.counts_as_healthy
        if primary is not None and counted and primary["id"] not in self._proven:
            primary["failedTasks"] = int(primary.get("failedTasks") or 0) + 1
            self._trip(service, primary)
        self._reconcile(key, service)

    # --- the deployment circuit breaker -----------------------------------------------------

    def _trip(self, service: Any, primary: dict[str, Any]) -> None:
        """Mark ``primary`` FAILED once its failed tasks reach the breaker's threshold; with
        rollback, go back to the newest COMPLETED deployment, else stall (AWS-FACTS 1)."""
        breaker = circuit_breaker(service)
        if breaker is None or primary.get("rolloutState") != "IN_PROGRESS":
            return
        if int(primary.get("failedTasks") or 0) < failure_threshold(service.desired_count):
            return
        now = self.world.clock.now()
        primary.update(rolloutState="FAILED", rolloutStateReason=BREAKER_REASON, updatedAt=now)
        self._event(service, BREAKER_EVENT.format(id=primary["id"]))
        completed = [d for d in service.deployments if d.get("rolloutState") == "COMPLETED"]
        if not breaker.get("rollback") or not completed:
            # "When the deployment circuit breaker does not find a deployment that is in a
            # COMPLETED state, the circuit breaker does not launch new tasks and the deployment
            # is stalled." (deployment-circuit-breaker.html)
            return
        # "ECS looks for the most recent deployment that is in a COMPLETED state ... the
        # deployment changes from a COMPLETED to IN_PROGRESS" (deployment-circuit-breaker.html)
        target = completed[0]
        primary["status"] = "ACTIVE"
        target.update(
            status="PRIMARY",
            rolloutState="IN_PROGRESS",
            rolloutStateReason=(
                f"ECS deployment circuit breaker: rolling back to deploymentId {target['id']}."
            ),
            updatedAt=now,
        )
        service.deployments = [target, *(d for d in service.deployments if d is not target)]
        service.task_definition = target["taskDefinition"]
        self._event(service, f"rolling back to deployment {target['id']}.")

    def task_stopped(self, task: LabTask) -> None:
        service = self._service_for(task)
        if service is not None and service.status == "DRAINING":
            self._reconcile(_key(service), service)
        self._recount_for(task)
        self._prune()

    # --- what the ECS API overrides tell the scheduler --------------------------------------

    def user_stop(self, task: Any, reason: str | None) -> None:
        """``StopTask`` from a caller: stop code UserInitiated, then the usual walk down."""
        lab_task = self.tasks.get(task.task_arn)
        reason = reason or "Task stopped by user"
        if lab_task is None:
            # A task the lab did not start: stop it the way moto would, with AWS's fields.
            task.desired_status = "STOPPED"
            task.last_status = "STOPPED"
            task.stop_code = "UserInitiated"
            task.stopped_reason = reason
            task.stopped_at = self.world.clock.now()
            return
        self.runner.stop(lab_task, "UserInitiated", reason)

    def service_changed(self, service: Any, before: dict[str, Any]) -> None:
        """``UpdateService``/``DeleteService`` went through moto: roll out and recount."""
        if service.deployments and before:
            current = service.deployments[0]
            if (
                current["id"] != before["deployment_id"]
                or service.task_definition != before["task_definition"]
            ):
                self._new_deployment(service, before)
        self._reconcile(_key(service), service)

    def service_created(self, service: Any) -> None:
        """``CreateService`` went through moto: take the new service over."""
        key = _key(service)
        self._failed_starts.pop(key, None)
        self._steady[key] = False
        if service.deployments:
            self._renew_deployment_id(service.deployments[0])
        self._reconcile(key, service)

    def _new_deployment(self, service: Any, before: dict[str, Any]) -> None:
        now = self.world.clock.now()
        old = dict(service.deployments[0])
        old.update(
            id=before["deployment_id"], status="ACTIVE", taskDefinition=before["task_definition"]
        )
        new = dict(service.deployments[0])
        new.update(
            status="PRIMARY",
            taskDefinition=service.task_definition,
            createdAt=now,
            updatedAt=now,
            runningCount=0,
            pendingCount=0,
            failedTasks=0,
            rolloutState="IN_PROGRESS",
        )
        self._renew_deployment_id(new)
        service.deployments = [new, old, *service.deployments[1:]]
        self._steady[_key(service)] = False

    def _retire_old_deployments(self, service: Any, primary: dict[str, Any]) -> None:
        old_tasks = [
            t
            for t in self._tasks_of(service)
            if t.wants_to_run and t.deployment_id != primary["id"]
        ]
        if old_tasks:
            reason = f"Scaling activity initiated by (deployment {primary['id']})"
            for task in old_tasks:
                self.runner.stop(task, "ServiceSchedulerInitiated", reason)
            self._event(
                service, f"has stopped {len(old_tasks)} running tasks: {_task_list(old_tasks)}."
            )
        service.deployments = [d for d in service.deployments if d is primary]

    # --- bookkeeping ------------------------------------------------------------------------

    def _renew_deployment_id(self, deployment: dict[str, Any]) -> None:
        # moto behaviour: deployment ids are "ecs-svc/" and up to 18 digits from moto's
        # generator; AWS's have 19 digits. The lab's come from its seed.
        digits = self.world.seeds.deployment_ids.randint(10**18, 10**19 - 1)
        deployment["id"] = f"ecs-svc/{digits}"
        state = deployment.get("rolloutState", "IN_PROGRESS")
        word = "completed" if state == "COMPLETED" else "in progress"
        deployment["rolloutStateReason"] = f"ECS deployment {deployment['id']} {word}."

    def _recount(self, service: Any) -> None:
        # moto behaviour: describe_services reports runningCount 0 / pendingCount = desired
        # from creation on, and update_service sets runningCount = desiredCount. AWS counts.
        mine = [t for t in self._tasks_of(service) if t.wants_to_run]
        # "ACTIVE: A service deployment that still has running tasks ... INACTIVE: A deployment
        # that has been completely replaced" (bc:ecs Deployment.status): one left without a task
        # is no longer listed.
        service.deployments = [
            d
            for d in service.deployments
            if d.get("status") == "PRIMARY" or any(t.deployment_id == d["id"] for t in mine)
        ]
        total_running = total_pending = 0
        for deployment in service.deployments:
            of = [t for t in mine if t.deployment_id == deployment["id"]]
            running = sum(1 for t in of if t.last_status == "RUNNING")
            pending = sum(1 for t in of if t.last_status in PENDING_STATES)
            deployment["runningCount"] = running
            deployment["pendingCount"] = pending
            if deployment.get("status") == "PRIMARY":
                deployment["desiredCount"] = int(service.desired_count or 0)
            else:
                deployment["desiredCount"] = running + pending
            total_running += running
            total_pending += pending
        service.running_count = total_running
        service.pending_count = total_pending

    def _recount_for(self, task: LabTask) -> None:
        service = self._service_for(task)
        if service is not None:
            self._recount(service)

    def _event(self, service: Any, message: str) -> None:
        rng = self.world.seeds.events
        h = f"{rng.getrandbits(128):032x}"
        service.events.insert(
            0,
            {
                "id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                "createdAt": self.world.clock.now(),
                "message": f"(service {service.name}) {message}",
            },
        )
        del service.events[KEEP_EVENTS:]

    def _prune(self) -> None:
        stopped = [t for t in self.tasks.values() if t.last_status == "STOPPED"]
        for task in stopped[: max(len(stopped) - KEEP_STOPPED, 0)]:
            self.tasks.pop(task.arn, None)
            self.ecs.tasks.get(task.moto.cluster_name, {}).pop(task.arn, None)

    def _tasks_of(self, service: Any) -> list[LabTask]:
        return [
            t
            for t in self.tasks.values()
            if t.service == service.name and t.moto.cluster_name == service.cluster_name
        ]

    def _service_for(self, task: LabTask) -> Any:
        return self.ecs.services.get(f"{task.moto.cluster_name}:{task.service}")

    @staticmethod
    def _primary(service: Any) -> dict[str, Any] | None:
        for deployment in service.deployments:
            if deployment.get("status") == "PRIMARY":
                found: dict[str, Any] = deployment
                return found
        return None


def circuit_breaker(service: Any) -> dict[str, Any] | None:
    """The service's ``deploymentCircuitBreaker`` when it is enabled (bc:``ecs``
    ``DeploymentCircuitBreaker.enable``), else None."""
    config = getattr(service, "deployment_configuration", None) or {}
    breaker = config.get("deploymentCircuitBreaker") or {}
    return breaker if breaker.get("enable") else None


def failure_threshold(desired_count: Any) -> int:
    """Failed tasks that trip the breaker: ``0.5 * desired task count`` rounded up, at least 3
    and at most 200 (bc:``ecs`` ``ServiceDeploymentCircuitBreaker.threshold``; the archived
    deployment-circuit-breaker guide rounds 25 to 13; AWS-FACTS 1).

    >>> [failure_threshold(n) for n in (1, 6, 7, 25, 1000)]
    [3, 3, 4, 13, 200]
    """
    return min(max(math.ceil(0.5 * int(desired_count or 0)), 3), 200)


def _key(service: Any) -> str:
    return f"{service.cluster_name}:{service.name}"


def _task_list(tasks: list[LabTask]) -> str:
    return " ".join(f"(task {t.id})" for t in tasks)
