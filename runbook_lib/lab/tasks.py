"""One ECS task's life, as Fargate (or an EC2 container instance) lives it, on moto's task object.

PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING
-> STOPPED, with the timestamps, stop codes and container fields ``describe_tasks`` shows. A task
without an ``awsvpc`` network interface skips the states that exist for it (PROVISIONING,
ACTIVATING, DEPROVISIONING: "for tasks that use the awsvpc network mode, the elastic network
interface needs to be provisioned", ECS Developer Guide, task-lifecycle-explanation.html).

Every container of the task definition runs, in its order (``describe_tasks`` lists them so): the
app container (:func:`app_container`) runs the carts app, the others are sidecars that log a
line and run until the task stops. What happens in RUNNING is up to the application
(:mod:`runbook_lib.lab.app`); what can go wrong before it are the start-failure scenarios of
:mod:`runbook_lib.lab.faults`.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from runbook_lib.access_denied import assumed_role_arn
from runbook_lib.lab.app import AppContext, CartsApp
from runbook_lib.lab.faults import (
    START_FAILURES,
    StartFailure,
    TaskFacts,
    logger_failure,
)
from runbook_lib.lab.moto_patches import freeze_task
from runbook_lib.lab.policies import decide, denial
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

    @property
    def counts_as_healthy(self) -> bool:
        """Whether the service scheduler takes this task as healthy: HEALTHY, or RUNNING when no
        essential container defines a health check ("Tasks for services that don't use a load
        balancer are considered healthy if they're in the RUNNING state", bc:``ecs``
        ``UpdateService``)."""
        if self.healthy:
            return True
        return not self.health_checked and self.last_status == "RUNNING"

    #: Whether an essential container of the task's definition has a health check.
    health_checked: bool = True


class TaskRunner:
    """Launches tasks and plays their lifecycle as runtime processes."""

    def __init__(self, world: World, listener: TaskListener, timings: Timings) -> None:
        self.world = world
        self.listener = listener
        self.timings = timings

    # --- launch -----------------------------------------------------------------------------

    def launch(self, service: Any, deployment_id: str) -> LabTask | None:
        """Start one task of ``service`` (``run_task`` on moto, then make it look like AWS's);
        None when no container instance has room for it (EC2 launch type)."""
        ecs = self.world.backends.ecs
        network = service.network_configuration or None
        placed = ecs.run_task(
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
        if not placed:
            return None
        task = LabTask(placed[0], service.name, deployment_id)
        self._dress(task, service)
        self._docker_ids(task.moto)
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
        fargate = (service.launch_type or "FARGATE") == "FARGATE"
        t.last_status = "PROVISIONING" if t.attachments else "PENDING"
        t.desired_status = "RUNNING"
        t.created_at = now
        t.version = 1
        t.cpu = tdef.cpu
        t.memory = tdef.memory
        t.launch_type = service.launch_type or "FARGATE"
        if fargate:
            t.platform_version = "1.4.0"
            t.platform_family = "Linux"
            t.ephemeral_storage = {"sizeInGiB": 20}
        t.availability_zone = self._zone(t, subnet)
        t.connectivity = None
        t.health_status = "UNKNOWN"
        t.enable_execute_command = False
        # moto behaviour: an empty stoppedReason is sent on every task; AWS sends none.
        t.stopped_reason = None
        self._fix_network(t, subnet)
        task.health_checked = any(
            d.get("healthCheck") for d in tdef.container_definitions if d.get("essential", True)
        )
        # moto behaviour: a task holds one container, made from the first container definition
        # only; AWS runs (and describe_tasks lists) every container of the definition, in order.
        first = t.containers[0]
        t.containers = [first, *(copy.copy(first) for _ in tdef.container_definitions[1:])]
        for c, cdef in zip(t.containers, tdef.container_definitions, strict=True):
            # moto behaviour: containers[].taskArn holds the task definition's ARN and
            # containerArn hangs off it; exitCode is 0 and healthStatus HEALTHY from the start.
            c.name = cdef.get("name")
            c.image = cdef.get("image")
            c.memory = cdef.get("memory")
            c.task_arn = t.task_arn
            c.container_arn = (
                f"arn:{world.partition}:ecs:{world.region}:{world.account_id}:container/"
                f"{t.cluster_name}/{t.id}/{_uuid(world.seeds.task_ids.getrandbits(128))}"
            )
            c.exitCode = None
            c.last_status = "PENDING"
            # "If health checks aren't configured for this container in its task definition,
            # then it reports the health status as UNKNOWN" (bc:ecs Container.healthStatus).
            c.health_status = "UNKNOWN"
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

    def _zone(self, t: Any, subnet: Any) -> str | None:
        if subnet is not None:
            return str(subnet.availability_zone)
        instance = self._container_instance(t)
        if instance is None:
            return None
        ec2_instance = self.world.backends.ec2.get_instance(instance.ec2_instance_id)
        return str(ec2_instance.placement.zone) if ec2_instance is not None else None

    def _container_instance(self, t: Any) -> Any:
        arn = getattr(t, "container_instance_arn", None)
        if not arn:
            return None
        instances = self.world.backends.ecs.container_instances.get(t.cluster_name, {})
        return instances.get(str(arn).split("/")[-1])

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
                f"arn:{world.partition}:ecs:{world.region}:{world.account_id}:attachment/"
                f"{attachment['id']}"
            )
        attachment["status"] = "PRECREATED"

    # --- the lifecycle ----------------------------------------------------------------------

    def _set(self, task: LabTask, status: str) -> None:
        task.moto.last_status = status
        task.moto.version += 1

    def _boot(self, task: LabTask) -> Generator[float, None, None]:
        t, timings, world = task.moto, self.timings, self.world
        if t.attachments:
            yield timings.provisioning
            self._set(task, "PENDING")
        for attachment in t.attachments:
            attachment["status"] = "ATTACHED"
        if t.attachments or t.launch_type == "FARGATE":
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
        if t.attachments:
            self._set(task, "ACTIVATING")
            yield timings.activating
        self._set(task, "RUNNING")
        t.started_at = world.clock.now()
        for c in t.containers:
            c.last_status = "RUNNING"
            c.runtime_id = getattr(c, "lab_docker_id", None) or self._runtime_id(t)
        self.listener.task_running(task)
        self._start_app(task)
        if not task.health_checked:
            self.listener.task_healthy(task)

    def _runtime_id(self, t: Any) -> str:
        """The container's id on its host (``Container.runtimeId``): on Fargate the task id and
        a number; on EC2 the 64 hex digits the Docker daemon assigns."""
        rng = self.world.seeds.task_ids
        if t.launch_type == "FARGATE":
            return f"{t.id}-{rng.randint(10**9, 10**10 - 1)}"
        return f"{rng.getrandbits(256):064x}"

    def _docker_ids(self, t: Any) -> None:
        """On EC2, the ids the Docker daemon will give the containers, known from the start so
        that a log stream named after one can be named before the container runs."""
        if t.launch_type != "FARGATE":
            for c in t.containers:
                c.lab_docker_id = self._runtime_id(t)

    def _start_app(self, task: LabTask) -> None:
        world = self.world
        tdef = world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        app = app_container(tdef.container_definitions)
        role = str(getattr(tdef, "task_role_arn", "") or "").split("/")[-1]
        stream = None
        for c, cdef in zip(task.moto.containers, tdef.container_definitions, strict=True):
            name = _stream_name(cdef, task.id, c.runtime_id)
            if name is None:
                continue
            world.logs.open(name, _log_group(cdef))
            if cdef is app:
                stream = name
            else:
                world.logs.write(name, *sidecar_lines(cdef), group=_log_group(cdef))
        if "retail-store-sample-cart" in str(app.get("image", "")) and stream is not None:
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
                partition=world.partition,
            )
            task.app = CartsApp(ctx, task.id, stream)
            world.runtime.spawn(
                f"carts app {task.id}",
                task.app.run(),
                owner=task,
                on_exit=lambda code: self.container_exited(task, int(code)),
            )
        for c, cdef in zip(task.moto.containers, tdef.container_definitions, strict=True):
            check = cdef.get("healthCheck")
            if check:
                start_period = float(check.get("startPeriod", self.timings.start_period))
                name = f"health {task.id}" if cdef is app else f"health {task.id} {c.name}"
                waits_for_app = task.app if cdef is app else None
                world.runtime.spawn(
                    name, self._health(task, c, start_period, waits_for_app), owner=task
                )

    def _health(
        self, task: LabTask, container: Any, start_period: float, app: CartsApp | None
    ) -> Generator[float, None, None]:
        # A container turns HEALTHY when its start period has passed and its check passes (the
        # carts app answers /actuator/health once it has started); until then it is UNKNOWN.
        yield start_period
        while app is not None and not app.ready:
            yield self.timings.health_interval
        container.health_status = "HEALTHY"
        tdef = self.world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        status = task_health(task.moto.containers, tdef.container_definitions)
        if status != task.moto.health_status:
            task.moto.health_status = status
            task.moto.version += 1
            if status == "HEALTHY":
                self.listener.task_healthy(task)

    def container_exited(self, task: LabTask, exit_code: int) -> None:
        """The app's essential container exited on its own: the task stops (ECS stops its other
        containers, which the walk down gives their own exit codes)."""
        tdef = self.world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        app = app_container(tdef.container_definitions)
        for c, cdef in zip(task.moto.containers, tdef.container_definitions, strict=True):
            if cdef is app:
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
            tdef = world.backends.ecs.describe_task_definition(t.task_definition_arn)
            app = app_container(tdef.container_definitions)
            for c, cdef in zip(t.containers, tdef.container_definitions, strict=True):
                if c.last_status != "STOPPED":
                    # SIGTERM from ECS: the JVM exits with 128 + 15; a sidecar (Fluent Bit, a
                    # proxy) handles it and exits 0.
                    c.exitCode = 143 if cdef is app else 0
                    c.last_status = "STOPPED"
            if getattr(t, "execution_stopped_at", None) is None:
                t.execution_stopped_at = world.clock.now()
        else:
            for c in t.containers:
                c.last_status = "STOPPED"
            t.execution_stopped_at = world.clock.now()
        if t.attachments:
            self._set(task, "DEPROVISIONING")
            yield timings.deprovisioning
        self._release(t)
        eni_id = _detail(t, "networkInterfaceId")
        if eni_id and eni_id in world.backends.ec2.enis:
            world.backends.ec2.delete_network_interface(eni_id)
        for attachment in t.attachments:
            attachment["status"] = "DELETED"
        self._set(task, "STOPPED")
        t.stopped_at = world.clock.now()
        self.listener.task_stopped(task)

    def _release(self, t: Any) -> None:
        """Give the task's CPU, memory and ports back to its container instance (EC2).

        moto behaviour: only moto's own ``stop_task`` returns them; the lab stops tasks itself.
        """
        instance = self._container_instance(t)
        requirements = getattr(t, "resource_requirements", None)
        if instance is not None and requirements:
            self.world.backends.ecs.update_container_instance_resources(
                instance, requirements, removing=True
            )

    # --- start failures ---------------------------------------------------------------------

    def start_failure(self, task: LabTask) -> StartFailure | None:
        """Why the task cannot start its containers, or None: the fault knob first, then the
        execution role's right to create each container's log stream."""
        world = self.world
        tdef = world.backends.ecs.describe_task_definition(task.moto.task_definition_arn)
        exec_role = str(getattr(tdef, "execution_role_arn", "") or "").split("/")[-1]
        app = app_container(tdef.container_definitions)
        knob = world.faults.execution_role_fault
        if knob is not None:
            return START_FAILURES[knob](self._facts(task, app, exec_role, 0))
        for i, cdef in enumerate(tdef.container_definitions):
            facts = self._facts(task, cdef, exec_role, i)
            if not facts.log_group:
                continue
            if facts.log_group not in world.backends.logs.groups:
                return StartFailure(
                    "ResourceInitializationError: failed to validate logger args: "
                    "The specified log group does not exist. : exit status 1",
                    pulled=True,
                )
            state = world.history(exec_role).read()
            decision = decide(state, "logs:CreateLogStream", facts.stream_arn)
            if not decision.allowed:
                principal = assumed_role_arn(
                    facts.account_id, exec_role, task.id, partition=world.partition
                )
                return logger_failure(facts, denied=denial(decision, principal))
        return None

    def _facts(self, task: LabTask, cdef: dict[str, Any], exec_role: str, i: int) -> TaskFacts:
        world = self.world
        container = task.moto.containers[i] if i < len(task.moto.containers) else None
        return TaskFacts(
            account_id=world.account_id,
            region=world.region,
            task_id=task.id,
            image=str(cdef.get("image", "")),
            execution_role=exec_role,
            log_group=_log_group(cdef),
            log_stream=_stream_name(cdef, task.id, getattr(container, "lab_docker_id", None)) or "",
        )

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


def app_container(definitions: list[dict[str, Any]]) -> dict[str, Any]:
    """The container the lab plays as carts: the one running the carts image, else the first
    essential one (a sidecar such as a FireLens log router may be listed before it)."""
    for cdef in definitions:
        if "retail-store-sample-cart" in str(cdef.get("image", "")):
            return cdef
    essential = [d for d in definitions if d.get("essential", True)]
    return (essential or definitions)[0]


def task_health(containers: list[Any], definitions: list[dict[str, Any]]) -> str:
    """The task's health from its essential containers' (bc:``ecs`` ``HealthCheck``): UNHEALTHY
    if any is, else UNKNOWN if any is, else HEALTHY. A task whose essential containers define
    no health check is UNKNOWN."""
    found = {
        c.health_status
        for c, d in zip(containers, definitions, strict=True)
        if d.get("essential", True)
    }
    if "UNHEALTHY" in found:
        return "UNHEALTHY"
    if "UNKNOWN" in found or not found:
        return "UNKNOWN"
    return "HEALTHY"


def sidecar_lines(cdef: dict[str, Any]) -> tuple[str, ...]:
    """What a sidecar prints as it starts (Fluent Bit's banner for a FireLens log router)."""
    if cdef.get("firelensConfiguration"):
        return (
            "Fluent Bit v1.9.10",
            "* Copyright (C) 2015-2022 The Fluent Bit Authors",
            "[ info] [fluent bit] version=1.9.10, commit=6345fd1347, pid=1",
            "[ info] [http_server] listen iface=0.0.0.0 tcp_port=2020",
            "[ info] [sp] stream processor started",
        )
    return (f"{cdef.get('name', 'sidecar')} started",)


def _log_group(cdef: dict[str, Any]) -> str:
    config = cdef.get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return ""
    return str((config.get("options") or {}).get("awslogs-group", ""))


def _stream_name(cdef: dict[str, Any], task_id: str, runtime_id: str | None) -> str | None:
    """The awslogs stream of a container (bc:``ecs`` ``LogConfiguration.options``): with
    ``awslogs-stream-prefix``, ``prefix-name/container-name/ecs-task-id``; without one (allowed on
    EC2 only), "named after the container ID that's assigned by the Docker daemon" (its
    ``runtimeId``; None before the container exists). None when the driver is not awslogs."""
    config = cdef.get("logConfiguration") or {}
    if config.get("logDriver") != "awslogs":
        return None
    prefix = (config.get("options") or {}).get("awslogs-stream-prefix")
    name = cdef.get("name", "")
    return f"{prefix}/{name}/{task_id}" if prefix else runtime_id


def _uuid(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
