"""One ECS task's life, as Fargate lives it, on moto's task object.

PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING
-> STOPPED, with the timestamps, stop codes and container fields ``describe_tasks`` shows. What
happens in RUNNING is up to the application (:mod:`runbook_lib.lab.app`); what can go wrong
before it are the start-failure scenarios of :mod:`runbook_lib.lab.faults`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from runbook_lib.iam_eval import evaluate
from runbook_lib.lab.app import AppContext, CartsApp
from runbook_lib.lab.faults import (
    START_FAILURES,
    StartFailure,
    TaskFacts,
    logger_failure,
)
from runbook_lib.lab.moto_patches import freeze_task
from runbook_lib.lab.world import World

PENDING_STATES = ("PROVISIONING", "PENDING", "ACTIVATING")


@dataclass(frozen=True)
class Timings:
    """Simulated seconds each step of a Fargate task takes (roughly what AWS shows)."""

    provisioning: float = 4.0
    pull: float = 8.0
    activating: float = 2.0
    deactivating: float = 1.0
    stopping: float = 2.0
    deprovisioning: float = 4.0
    health_interval: float = 10.0
    start_period: float = 60.0


class TaskListener(Protocol):
    """What the service scheduler wants to hear about its tasks."""

    def task_running(self, task: LabTask) -> None: ...

    def task_healthy(self, task: LabTask) -> None: ...

    def task_stopping(self, task: LabTask) -> None: ...

    def task_stopped(self, task: LabTask) -> None: ...


@dataclass(eq=False)
class LabTask:
    """The lab's handle on one moto task."""

    moto: Any
    service: str
    deployment_id: str
    app: CartsApp | None = None
    failed_to_start: bool = False
    stop_counted: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.moto.id)

    @property
    def arn(self) -> str:
        return str(self.moto.task_arn)

    @property
    def last_status(self) -> str:
        return str(self.moto.last_status)

    @property
    def wants_to_run(self) -> bool:
        return bool(self.moto.desired_status == "RUNNING")

    @property
    def healthy(self) -> bool:
        return bool(self.moto.health_status == "HEALTHY")


class TaskRunner:
    """Launches tasks and plays their lifecycle as runtime processes."""

    def __init__(self, world: World, listener: TaskListener, timings: Timings) -> None:
        self.world = world
        self.listener = listener
        self.timings = timings

    # --- launch -----------------------------------------------------------------------------

    def launch(self, service: Any, deployment_id: str) -> LabTask:
        """Start one task of ``service`` (``run_task`` on moto, then make it look like AWS's)."""
        ecs = self.world.backends.ecs
        network = service.network_configuration or None
        [moto_task] = ecs.run_task(
            service.cluster_name,
            service.task_definition,
            1,
            None,
            deployment_id,
            None,
            service.launch_type or "FARGATE",
            networking_configuration=network,
            group=f"service:{service.name}",
        )
        task = LabTask(moto_task, service.name, deployment_id)
        self._dress(task, service)
        self.world.runtime.spawn(f"task {task.id}", self._boot(task), owner=task)
        return task

    def _dress(self, task: LabTask, service: Any) -> None:
        """Give moto's fresh task the id and fields AWS would."""
        ecs, world = self.world.backends.ecs, self.world
        t = task.moto
        old_arn = t.task_arn
        # moto behaviour: task ids are UUIDs with dashes; AWS's are 32 hex digits. The lab's
        # come from its seed, so a run is reproducible.
        t.id = f"{world.seeds.task_ids.getrandbits(128):032x}"
        tasks = ecs.tasks[t.cluster_name]
        tasks[t.task_arn] = tasks.pop(old_arn)
        freeze_task(t)
        now = world.clock.now()
        tdef = ecs.describe_task_definition(t.task_definition_arn)
        subnet_id = _detail(t, "subnetId")
        subnet = world.backends.ec2.get_subnet(subnet_id) if subnet_id else None
        t.last_status = "PROVISIONING"
        t.desired_status = "RUNNING"
        t.created_at = now
        t.version = 1
        t.cpu = tdef.cpu
        t.memory = tdef.memory
        t.launch_type = service.launch_type or "FARGATE"
        t.platform_version = "1.4.0"
        t.platform_family = "Linux"
        t.availability_zone = subnet.availability_zone if subnet is not None else None
        t.connectivity = None
        t.health_status = "UNKNOWN"
        t.enable_execute_command = False
        t.ephemeral_storage = {"sizeInGiB": 20}
        # moto behaviour: an empty stoppedReason is sent on every task; AWS sends none.
        t.stopped_reason = None
        self._fix_network(t, subnet)
        cdef = tdef.container_definitions[0]
        for c in t.containers:
            # moto behaviour: containers[].taskArn holds the task definition's ARN and
            # containerArn hangs off it; exitCode is 0 and healthStatus HEALTHY from the start.
            c.task_arn = t.task_arn
            c.container_arn = (
                f"arn:aws:ecs:{world.region}:{world.account_id}:container/{t.cluster_name}/"
                f"{t.id}/{_uuid(world.seeds.task_ids.getrandbits(128))}"
            )
            c.exitCode = None
            c.last_status = "PENDING"
            c.health_status = "UNKNOWN" if cdef.get("healthCheck") else None
            c.cpu = str(cdef.get("cpu", 0))
            c.memory_reservation = (
                str(cdef["memoryReservation"]) if "memoryReservation" in cdef else None
            )
            c.network_interfaces = (
                [
                    {
                        "attachmentId": t.attachments[0]["id"],
                        "privateIpv4Address": _detail(t, "privateIPv4Address"),
                    }
                ]
                if t.attachments
                else []
            )

    def _fix_network(self, t: Any, subnet: Any) -> None:
        # moto behaviour: the task's ENI gets a random 10.x address from Python's unseeded
        # global generator, outside the subnet, with an "ec2.internal" name in every region.
        if not t.attachments or subnet is None:
            return
        world = self.world
        net = ipaddress.IPv4Network(subnet.cidr_block)
        address = str(net.network_address + world.seeds.addresses.randint(4, net.num_addresses - 2))
        dns = f"ip-{address.replace('.', '-')}.{world.region}.compute.internal"
        attachment = t.attachments[0]
        attachment["id"] = _uuid(world.seeds.task_ids.getrandbits(128))
        for detail in attachment["details"]:
            if detail["name"] == "privateIPv4Address":
                detail["value"] = address
            elif detail["name"] == "privateDnsName":
                detail["value"] = dns
        eni = world.backends.ec2.enis.get(_detail(t, "networkInterfaceId"))
        if eni is not None:
            eni.private_ip_address = address
            eni.private_dns_name = dns
            eni.description = (
                f"arn:aws:ecs:{world.region}:{world.account_id}:attachment/{attachment['id']}"
            )
        attachment["status"] = "PRECREATED"

    # --- the lifecycle ----------------------------------------------------------------------

    def _set(self, task: LabTask, status: str) -> None:
        task.moto.last_status = status
        task.moto.version += 1

    def _boot(self, task: LabTask) -> Generator[float, None, None]:
        t, timings, world = task.moto, self.timings, self.world
        yield timings.provisioning
        self._set(task, "PENDING")
        for attachment in t.attachments:
            attachment["status"] = "ATTACHED"
        t.connectivity = "CONNECTED"
        t.connectivity_at = world.clock.now()
        t.pull_started_at = world.clock.now()
        failure = self.start_failure(task)
        if failure is not None and not failure.pulled:
            yield timings.pull * 2  # the agent retries the pull before it gives up
            self._fail_start(task, failure)
            return
        yield timings.pull
        t.pull_stopped_at = world.clock.now()
        for c in t.containers:
            c.image_digest = "sha256:" + f"{world.seeds.task_ids.getrandbits(256):064x}"
        if failure is not None:
            yield 1.0
            self._fail_start(task, failure)
            return
        self._set(task, "ACTIVATING")
        yield timings.activating
        self._set(task, "RUNNING")
        t.started_at = world.clock.now()
        for c in t.containers:
            c.last_status = "RUNNING"
            c.runtime_id = f"{t.id}-{world.seeds.task_ids.randint(10**9, 10**10 - 1)}"
        self.listener.task_running(task)
        self._start_app(task)

    def _start_app(self, task: LabTask) -> None:
        world = self.world
        tdef = world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        cdef = tdef.container_definitions[0]
        role = str(getattr(tdef, "task_role_arn", "") or "").split("/")[-1]
        stream = _stream_name(cdef, task.id)
        if stream is not None:
            world.logs.open(stream)
        if "retail-store-sample-cart" in str(cdef.get("image", "")) and stream is not None:
            ctx = AppContext(
                params=world.params,
                role_name=role,
                backends=world.backends,
                logs=world.logs,
                policies=lambda: world.policies_seen_by_tasks(role),
                request_ids=world.seeds.request_ids,
                shoppers=world.seeds.shoppers,
                catalog=world.catalog,
                customers=world.customers,
                clock=world.clock,
            )
            task.app = CartsApp(ctx, task.id, stream)
            world.runtime.spawn(
                f"carts app {task.id}",
                task.app.run(),
                owner=task,
                on_exit=lambda code: self.container_exited(task, int(code)),
            )
        if cdef.get("healthCheck"):
            start_period = float(cdef["healthCheck"].get("startPeriod", self.timings.start_period))
            world.runtime.spawn(f"health {task.id}", self._health(task, start_period), owner=task)

    def _health(self, task: LabTask, start_period: float) -> Generator[float, None, None]:
        # The container turns HEALTHY when the start period has passed and the app answers
        # /actuator/health; until then it stays UNKNOWN.
        yield start_period
        while task.app is not None and not task.app.ready:
            yield self.timings.health_interval
        for c in task.moto.containers:
            c.health_status = "HEALTHY"
        task.moto.health_status = "HEALTHY"
        task.moto.version += 1
        self.listener.task_healthy(task)

    def container_exited(self, task: LabTask, exit_code: int) -> None:
        """The essential container exited on its own: the task stops."""
        for c in task.moto.containers:
            c.exitCode = exit_code
            c.last_status = "STOPPED"
        task.moto.execution_stopped_at = self.world.clock.now()
        self.stop(task, "EssentialContainerExited", "Essential container in task exited")

    def stop(self, task: LabTask, stop_code: str, reason: str) -> None:
        """Stop ``task`` (desiredStatus STOPPED now, lastStatus STOPPED after the walk down)."""
        t = task.moto
        if t.desired_status == "STOPPED" and t.stop_code:
            return
        self.world.runtime.cancel_owned(task)
        t.desired_status = "STOPPED"
        t.stop_code = stop_code
        t.stopped_reason = reason
        t.stopping_at = self.world.clock.now()
        t.version += 1
        self.listener.task_stopping(task)
        self.world.runtime.spawn(f"stop {task.id}", self._wind_down(task), owner=task)

    def _wind_down(self, task: LabTask) -> Generator[float, None, None]:
        t, timings, world = task.moto, self.timings, self.world
        started = t.last_status == "RUNNING"
        if started:
            self._set(task, "DEACTIVATING")
            yield timings.deactivating
            self._set(task, "STOPPING")
            yield timings.stopping
            for c in t.containers:
                if c.last_status != "STOPPED":
                    # SIGTERM from ECS: the JVM exits with 128 + 15.
                    c.exitCode = 143
                    c.last_status = "STOPPED"
            if getattr(t, "execution_stopped_at", None) is None:
                t.execution_stopped_at = world.clock.now()
        else:
            for c in t.containers:
                c.last_status = "STOPPED"
            t.execution_stopped_at = world.clock.now()
        self._set(task, "DEPROVISIONING")
        yield timings.deprovisioning
        eni_id = _detail(t, "networkInterfaceId")
        if eni_id and eni_id in world.backends.ec2.enis:
            world.backends.ec2.delete_network_interface(eni_id)
        for attachment in t.attachments:
            attachment["status"] = "DELETED"
        self._set(task, "STOPPED")
        t.stopped_at = world.clock.now()
        self.listener.task_stopped(task)

    # --- start failures ---------------------------------------------------------------------

    def start_failure(self, task: LabTask) -> StartFailure | None:
        """Why the task cannot start its container, or None: the fault knob first, then the
        execution role's right to create the log stream."""
        world = self.world
        tdef = world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        cdef = tdef.container_definitions[0]
        options = (cdef.get("logConfiguration") or {}).get("options") or {}
        exec_role = str(getattr(tdef, "execution_role_arn", "") or "").split("/")[-1]
        facts = TaskFacts(
            account_id=world.account_id,
            region=world.region,
            task_id=task.id,
            image=str(cdef.get("image", "")),
            execution_role=exec_role,
            log_group=str(options.get("awslogs-group", "")),
            log_stream=_stream_name(cdef, task.id) or "",
        )
        knob = world.faults.execution_role_fault
        if knob is not None:
            return START_FAILURES[knob](facts)
        if facts.log_group:
            if facts.log_group not in world.backends.logs.groups:
                return StartFailure(
                    "ResourceInitializationError: failed to validate logger args: "
                    "The specified log group does not exist. : exit status 1",
                    pulled=True,
                )
            resource = (
                f"arn:aws:logs:{facts.region}:{facts.account_id}:log-group:{facts.log_group}"
                f":log-stream:{facts.log_stream}"
            )
            decision = evaluate(world.history(exec_role).read(), "logs:CreateLogStream", resource)
            if not decision.allowed:
                return logger_failure(facts, decision.decision)
        return None

    def _fail_start(self, task: LabTask, failure: StartFailure) -> None:
        task.failed_to_start = True
        for c in task.moto.containers:
            c.reason = failure.stopped_reason
        self.stop(task, failure.stop_code, failure.stopped_reason)


def _detail(t: Any, name: str) -> str | None:
    for attachment in t.attachments:
        for detail in attachment.get("details", []):
            if detail["name"] == name:
                return str(detail["value"])
    return None


def _stream_name(cdef: dict[str, Any], task_id: str) -> str | None:
    config = cdef.get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return None
    prefix = (config.get("options") or {}).get("awslogs-stream-prefix")
    name = cdef.get("name", "")
    return f"{prefix}/{name}/{task_id}" if prefix else task_id


def _uuid(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
