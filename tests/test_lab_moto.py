"""What the lab relies on: pinned moto's behaviours it works around, and its pure parts.

Each test of moto names the behaviour (see runbook_lib/lab/moto_patches.py and the comments
starting "moto behaviour:"). When one fails after a moto upgrade, the workaround it backs needs
a look: it may be unneeded now, or wrong.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from runbook_lib.lab.faults import Faults, throttling_error
from runbook_lib.lab.policies import PolicyHistory

ACCOUNT = "000000000099"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_ecs() -> Iterator[SimpleNamespace]:
    """moto's backends for a private account, with a network, a cluster and a task definition."""
    from moto.backends import get_backend

    from runbook_lib.lab.backends import MOTO_LOCK

    with MOTO_LOCK:
        ec2 = get_backend("ec2")[ACCOUNT][REGION]
        ecs = get_backend("ecs")[ACCOUNT][REGION]
        vpc = ec2.create_vpc("10.1.0.0/16")
        subnet = ec2.create_subnet(vpc.id, "10.1.1.0/24", availability_zone=f"{REGION}a")
        group = ec2.create_security_group("g", "test", vpc_id=vpc.id)
        ecs.create_cluster("c")
        tdef = ecs.register_task_definition(
            "f",
            [{"name": "a", "image": "i", "memoryReservation": 512}],
            requires_compatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            network_mode="awsvpc",
        )
        net = {"awsvpcConfiguration": {"subnets": [subnet.id], "securityGroups": [group.id]}}
    yield SimpleNamespace(ec2=ec2, ecs=ecs, vpc=vpc, tdef=tdef, net=net)
    with MOTO_LOCK:
        for service in ("ecs", "ec2", "iam", "logs"):
            backends = get_backend(service).get(ACCOUNT, {})  # type: ignore[call-overload]
            for backend in backends.values():
                backend.reset()


def run_one(m: SimpleNamespace, **kwargs: Any) -> Any:
    m.vpc.enable_dns_hostnames = True
    [task] = m.ecs.run_task(
        "c", m.tdef.arn, 1, None, "", None, "FARGATE", networking_configuration=m.net, **kwargs
    )
    return task


# --- ECS ----------------------------------------------------------------------------------------


def test_moto_create_service_fakes_counts_and_starts_no_task(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: create_service starts no task and reports runningCount 0, pendingCount 1,
    rolloutState IN_PROGRESS (the lab's scheduler recounts)."""
    service = moto_ecs.ecs.create_service(
        "c", "s", 1, moto_ecs.tdef.arn, launch_type="FARGATE", network_configuration=moto_ecs.net
    )
    assert (service.running_count, service.pending_count) == (0, 1)
    assert service.deployments[0]["rolloutState"] == "IN_PROGRESS"
    assert service.events == []
    updated = moto_ecs.ecs.update_service({"cluster": "c", "service": "s", "desired_count": 3})
    assert updated.running_count == 3
    before = updated.deployments[0]["id"]
    again = moto_ecs.ecs.update_service(
        {"cluster": "c", "service": "s", "force_new_deployment": True}
    )
    assert len(again.deployments) == 1 and again.deployments[0]["id"] != before


def test_moto_run_task_needs_memory_and_dns_hostnames(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: run_task fails without container-level memory(Reservation), and on an
    awsvpc VPC without DNS hostnames (it reads the ENI's private DNS name)."""
    m = moto_ecs
    bare = m.ecs.register_task_definition(
        "bare",
        [{"name": "a", "image": "i"}],
        requires_compatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        network_mode="awsvpc",
    )
    m.vpc.enable_dns_hostnames = True
    with pytest.raises(TypeError):
        m.ecs.run_task("c", bare.arn, 1, None, "", None, "FARGATE", networking_configuration=m.net)
    m.vpc.enable_dns_hostnames = False
    with pytest.raises(AttributeError, match="private_dns_name"):
        m.ecs.run_task(
            "c", m.tdef.arn, 1, None, "", None, "FARGATE", networking_configuration=m.net
        )


def test_moto_task_fields_differ_from_aws(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: task ids are UUIDs with dashes; containers[].taskArn holds the task
    definition ARN; exitCode 0 and healthStatus HEALTHY from the start; stoppedReason ''."""
    task = run_one(moto_ecs, group="service:s")
    assert str(uuid.UUID(task.id)) == task.id
    [container] = task.containers
    assert container.task_arn == moto_ecs.tdef.arn
    assert (container.exitCode, container.health_status) == (0, "HEALTHY")
    assert task.stopped_reason == ""
    assert task.last_status == "RUNNING"


def test_moto_advances_tasks_on_describe_unless_frozen(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: the state manager moves an ecs::task towards STOPPED as it is described
    (default: manual progression, one step per describe); a task without transitions stays."""
    from moto.moto_api import state_manager

    from runbook_lib.lab.moto_patches import freeze_task

    default = state_manager._default_transitions["ecs::task"]
    assert default == {"progression": "manual", "times": 1}
    pinned = state_manager._transitions.pop("ecs::task", None)  # a lab may run in this process
    try:
        moving, frozen = run_one(moto_ecs), run_one(moto_ecs)
        freeze_task(frozen)
        moto_ecs.ecs.describe_tasks("c", [moving.task_arn, frozen.task_arn])
        assert moving.last_status == "DEACTIVATING"
        assert frozen.last_status == "RUNNING"
    finally:
        if pinned is not None:
            state_manager.set_transition("ecs::task", pinned)


def test_moto_list_tasks_ignores_service_name(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: list_tasks ignores serviceName and, without desiredStatus, lists stopped
    tasks too; moto's stop_task jumps to STOPPED at once."""
    ours, other = run_one(moto_ecs, group="service:s"), run_one(moto_ecs, group="family:f")
    moto_ecs.ecs.stop_task("c", other.task_arn, "test")
    assert other.last_status == "STOPPED"
    listed = moto_ecs.ecs.list_tasks("c", None, None, None, "s", None)
    assert {ours.task_arn, other.task_arn} <= {t.task_arn for t in listed}


def test_moto_backend_reset_drops_instance_overrides(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: BaseBackend.reset re-runs __init__ on the same object, so the lab's
    per-instance overrides must be installed again after a reset."""
    from moto.backends import get_backend

    backend = get_backend("logs")[ACCOUNT][REGION]
    backend.list_tasks = lambda: None
    backend.reset()
    assert "list_tasks" not in vars(backend)
    assert get_backend("logs")[ACCOUNT][REGION] is backend


# --- IAM, Logs ----------------------------------------------------------------------------------


def test_moto_has_no_aws_managed_policies_but_ships_their_documents() -> None:
    """moto behaviour: AWS managed policies are not loaded by default; moto ships their data,
    from which the lab registers AmazonECSTaskExecutionRolePolicy."""
    from moto.backends import get_backend
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    from runbook_lib.lab.moto_patches import register_aws_managed_policy

    iam = get_backend("iam")[ACCOUNT]["global"]
    arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    assert arn not in iam.managed_policies
    assert "AmazonECSTaskExecutionRolePolicy" in json.loads(aws_managed_policies_data)
    assert register_aws_managed_policy(iam, "AmazonECSTaskExecutionRolePolicy") == arn
    assert arn in iam.managed_policies


def test_moto_logs_rejects_events_out_of_order() -> None:
    """moto behaviour (as CloudWatch Logs): events of one put must be in time order."""
    from moto.backends import get_backend
    from moto.logs.exceptions import InvalidParameterException

    logs = get_backend("logs")[ACCOUNT][REGION]
    logs.create_log_group("g", {})
    logs.create_log_stream("g", "s")
    now = 1_800_000_000_000
    with pytest.raises(InvalidParameterException):
        logs.put_log_events(
            "g", "s", [{"timestamp": now, "message": "b"}, {"timestamp": now - 1, "message": "a"}]
        )


def test_moto_task_holds_only_the_first_container(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: a task gets one container, from the first container definition; AWS runs
    every container of the definition (the lab builds the others: sidecars)."""
    m = moto_ecs
    tdef = m.ecs.register_task_definition(
        "two",
        [
            {"name": "router", "image": "r", "memoryReservation": 50},
            {"name": "app", "image": "a", "memoryReservation": 512},
        ],
        requires_compatibilities=["FARGATE"],
        cpu="256",
        memory="1024",
        network_mode="awsvpc",
    )
    m.vpc.enable_dns_hostnames = True
    [task] = m.ecs.run_task(
        "c", tdef.arn, 1, None, "", None, "FARGATE", networking_configuration=m.net
    )
    assert [c.name for c in task.containers] == ["router"]


def test_moto_services_are_replaced_and_deleted_at_once(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: create_service over an ACTIVE service of the same name replaces it
    silently (AWS: "Creation of service was not idempotent."), and delete_service makes it
    INACTIVE at once (AWS: DRAINING until its tasks have stopped)."""
    m = moto_ecs
    args = ("c", "twice", 1, m.tdef.arn)
    first = m.ecs.create_service(*args, launch_type="FARGATE", network_configuration=m.net)
    second = m.ecs.create_service(*args, launch_type="FARGATE", network_configuration=m.net)
    assert second is not first and m.ecs.services["c:twice"] is second
    assert m.ecs.delete_service("c", "twice", True).status == "INACTIVE"


def test_moto_gives_ec2_resources_back_only_in_its_own_stop_task(moto_ecs: SimpleNamespace) -> None:
    """moto behaviour: a task placed on a container instance holds its memory until moto's
    stop_task; the lab stops tasks itself, so it gives them back (TaskRunner._release)."""
    m = moto_ecs
    reservation = m.ec2.run_instances(
        "ami-12c6146b", 1, None, [], instance_type="m5.large", is_instance_type_default=False
    )
    instance = m.ecs.register_container_instance("c", reservation.instances[0].id)

    def memory() -> int:
        return int(
            next(r for r in instance.remaining_resources if r["name"] == "MEMORY")["integerValue"]
        )

    before = memory()
    m.vpc.enable_dns_hostnames = True  # moto's awsvpc ENI needs it (see the run_task test above)
    [task] = m.ecs.run_task(
        "c", m.tdef.arn, 1, None, "", None, "EC2", networking_configuration=m.net
    )
    assert memory() == before - 512
    task.last_status = "STOPPED"
    assert memory() == before - 512
    m.ecs.update_container_instance_resources(instance, task.resource_requirements, removing=True)
    assert memory() == before


def test_moto_logs_filter_and_missing_stream_differ_from_aws() -> None:
    """moto behaviour: FilterLogEvents' backend is not handed logStreamNamePrefix, answers
    stream by stream unless interleaved, and lists every stream in searchedLogStreams (AWS:
    prefix honoured, always interleaved, an empty list); GetLogEvents on a missing stream says
    the log group does not exist."""
    import inspect
    import time

    from moto.backends import get_backend
    from moto.logs.exceptions import ResourceNotFoundException

    logs = get_backend("logs")[ACCOUNT][REGION]
    assert "log_stream_name_prefix" not in inspect.signature(logs.filter_log_events).parameters
    logs.create_log_group("f", {})
    now = int(time.time() * 1000) - 60_000
    for name, stamps in (("b-later", (now + 2,)), ("a-earlier", (now + 1, now + 3))):
        logs.create_log_stream("f", name)
        logs.put_log_events("f", name, [{"timestamp": t, "message": name} for t in stamps])
    events, _, searched = logs.filter_log_events("f", [], None, None, None, None, "", False)
    assert [e["timestamp"] for e in events] == [now + 2, now + 1, now + 3]
    assert len(searched) == 2
    with pytest.raises(ResourceNotFoundException, match="log group does not exist"):
        logs.get_log_events("f", None, "no-such-stream", None, None, None, None, True)


def test_moto_keeps_iam_per_partition() -> None:
    """moto behaviour (as AWS): IAM of partition aws-cn is another backend than aws's, keyed by
    the partition's name (LAB-NOTES, AWS-FACTS 11); the lab asks the region's."""
    from runbook_lib.lab.backends import Backends

    china, world = Backends(ACCOUNT, "cn-north-1"), Backends(ACCOUNT, REGION)
    assert china.iam is not world.iam
    assert (china._key("iam"), world._key("iam"), world._key("ecs")) == ("aws-cn", "aws", REGION)


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "code"),
    [
        ("iam", "GetRole", "Throttling"),
        ("sts", "GetCallerIdentity", "Throttling"),
        ("ecs", "DescribeTasks", "ThrottlingException"),
        ("logs", "FilterLogEvents", "ThrottlingException"),
        ("dynamodb", "Query", "ProvisionedThroughputExceededException"),
        ("dynamodb", "DescribeTable", "ThrottlingException"),
        ("ec2", "DescribeSubnets", "RequestLimitExceeded"),
    ],
)
def test_throttling_errors_parse_as_throttling(service: str, operation: str, code: str) -> None:
    """AWS: each protocol's error shape; botocore's standard retry mode sees throttling."""
    import botocore.session
    from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

    error = throttling_error(service, operation, "req-1")
    assert error is not None
    model = botocore.session.get_session().get_service_model(service)
    from botocore.parsers import create_parser

    parsed = create_parser(model.metadata["protocol"]).parse(
        {"status_code": error.status, "headers": dict(error.headers), "body": error.body},
        model.operation_model(operation).output_shape,
    )
    assert parsed["Error"]["Code"] == code
    context = RetryContext(
        attempt_number=1,
        operation_model=model.operation_model(operation),
        parsed_response=parsed,
        http_response=SimpleNamespace(status_code=error.status),
    )
    assert ThrottledRetryableChecker().is_retryable(context)


def test_unmodelled_services_are_not_throttled() -> None:
    assert throttling_error("s3", "GetObject", "r") is None


def test_fault_knobs_are_checked() -> None:
    """The lab: knobs outside their range are refused with a sentence naming them."""
    from runbook_lib.lab import LabConfig, LabConfigError

    assert Faults().as_dict() == {
        "propagation_delay_s": 0.0,
        "throttle_rate": 0.0,
        "execution_role_fault": None,
        "stale_reads_s": 0.0,
        "log_pages": False,
    }
    for bad in (
        {"propagation_delay_s": -1},
        {"throttle_rate": 1.0},
        {"throttle_rate": True},
        {"execution_role_fault": "disk"},
        {"stale_reads_s": -1},
        {"stale_reads_s": float("nan")},
        {"log_pages": "yes"},
    ):
        with pytest.raises(LabConfigError):
            Faults(**bad)  # type: ignore[arg-type]
    with pytest.raises(LabConfigError, match="seed"):
        LabConfig(seed=-1)


def test_policy_history_answers_as_of_a_time() -> None:
    """IAM eventual consistency as the lab plays it: the state that was current at a time."""
    state = {"a": "1"}
    history = PolicyHistory(lambda: dict(state))
    assert history.observe(10.0)
    assert not history.observe(11.0)
    state["b"] = "2"
    assert history.observe(20.0)
    assert history.as_of(5.0) == {"a": "1"}
    assert history.as_of(19.9) == {"a": "1"}
    assert history.as_of(20.0) == {"a": "1", "b": "2"}


def test_importing_runbook_lib_and_the_lab_package_skips_moto() -> None:
    """The house rule: importing runbook_lib (and even runbook_lib.lab) loads neither moto nor
    Flask; only starting a lab does."""
    import subprocess
    import sys

    code = (
        "import sys, runbook_lib, runbook_lib.lab; "
        "print(sorted(m for m in ('moto', 'flask', 'werkzeug') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
