"""Where pinned moto (5.2.5) differs from AWS in ways a learner would see, and the lab's fixes.

Every fix is applied to the lab account's backend *objects* (instance attributes), never to
moto's classes, so other users of moto in the same process are not affected. A reset of a
backend drops them (moto's ``BaseBackend.reset`` re-runs ``__init__``): install them again.
``tests/test_lab_moto.py`` fails when one of the behaviours worked around here changes.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

#: moto's state-manager name for ECS tasks.
ECS_TASK_MODEL = "ecs::task"

_pin_lock = threading.Lock()
_pin_count = 0
_pin_previous: dict[str, Any] | None = None

_loader_lock = threading.RLock()
_loader_users = 0
_loader_original: Any = None


def pin_task_lifecycle() -> None:
    """Stop moto from moving ECS tasks towards STOPPED on its own.

    moto behaviour: by default moto's state manager advances an ``ecs::task`` one step towards
    STOPPED at every ``describe_tasks``. The lab's scheduler owns the lifecycle, so the model is
    pinned to manual progression for as long as a lab runs in this process (counted, and
    restored when the last lab stops). Tasks the lab starts are also frozen one by one
    (:func:`freeze_task`), which would suffice alone, but a task somebody starts with
    ``run_task`` would still be advanced without the pin.
    """
    from moto.moto_api import state_manager

    global _pin_count, _pin_previous
    with _pin_lock:
        if _pin_count == 0:
            custom = state_manager._transitions.get(ECS_TASK_MODEL)
            _pin_previous = dict(custom) if custom is not None else None
            state_manager.set_transition(
                ECS_TASK_MODEL, {"progression": "manual", "times": 1_000_000_000}
            )
        _pin_count += 1


def unpin_task_lifecycle() -> None:
    """Undo one :func:`pin_task_lifecycle`; the last one restores moto's previous setting."""
    from moto.moto_api import state_manager

    global _pin_count, _pin_previous
    with _pin_lock:
        if _pin_count == 0:
            return
        _pin_count -= 1
        if _pin_count == 0:
            if _pin_previous is None:
                state_manager.unset_transition(ECS_TASK_MODEL)
            else:
                state_manager.set_transition(ECS_TASK_MODEL, _pin_previous)
            _pin_previous = None


def freeze_task(task: Any) -> None:
    """Give one moto task no transitions, so its status changes only when the lab sets it.

    moto behaviour: ``ManagedState.status`` follows the task's own transition list; an empty
    list leaves the status where the lab put it.
    """
    task._transitions = []


def register_aws_managed_policy(iam: Any, name: str) -> str:
    """Make one AWS managed policy attachable in the lab account; returns its ARN.

    moto behaviour: AWS managed policies exist only when ``MOTO_IAM_LOAD_MANAGED_POLICIES`` is
    set, and then all of them (over a thousand, slow). moto ships their documents, so the lab
    registers just the one it attaches, from moto's own data.
    """
    from moto.iam.models import AWSManagedPolicy

    data = aws_managed_policy_data(name)
    policy = AWSManagedPolicy.from_data(name, iam.account_id, iam.region_name, data)
    if policy.arn not in iam.managed_policies:
        iam.managed_policies[policy.arn] = policy
        iam.aws_managed_policies.append(policy)
    return str(policy.arn)


def aws_managed_policy_data(name: str) -> dict[str, Any]:
    """moto's data of one AWS managed policy (its ``Document``, ``DefaultVersionId``, dates).

    moto behaviour: it ships every AWS managed policy as one JSON text of almost 5 MB, whose
    top-level keys start a line one space in. Parsing it whole takes about 0.1 s, and a lab
    seeds two policies at every start and reset, so only the one object is decoded; the whole
    text is parsed if that layout ever changes.
    """
    from moto.iam.aws_managed_policies import aws_managed_policies_data as text

    key = f'\n "{name}":'
    at = text.find(key)
    if at >= 0:
        try:
            found, _ = json.JSONDecoder().raw_decode(text, at + len(key))
        except ValueError:
            found = None
        if isinstance(found, dict) and "Document" in found:
            return found
    data: dict[str, Any] = json.loads(text)[name]
    return data


@contextmanager
def shared_botocore_loader() -> Iterator[None]:
    """While the lab sets moto up, let every new botocore session share one data loader.

    moto behaviour: importing its EC2 backend lists the regions through three new
    ``boto3.Session()`` objects, and its backend dictionaries make another; each new session
    parses botocore's endpoint data (1.2 MB of JSON) and the EC2 service model again. The
    loader only reads botocore's data files and caches what it read, so sharing it changes no
    answer and saves about 0.4 s of a lab's start. botocore's ``create_loader`` is replaced for
    the duration only (counted, so that labs starting in several threads restore it once).
    """
    import botocore.session

    global _loader_users, _loader_original
    with _loader_lock:
        if _loader_users == 0:
            original = botocore.session.create_loader
            loaders: dict[Any, Any] = {}

            def create_loader(search_path_string: Any = None) -> Any:
                with _loader_lock:
                    if search_path_string not in loaders:
                        loaders[search_path_string] = original(search_path_string)
                    return loaders[search_path_string]

            _loader_original = original
            botocore.session.create_loader = create_loader
        _loader_users += 1
    try:
        yield
    finally:
        with _loader_lock:
            _loader_users -= 1
            if _loader_users == 0:
                botocore.session.create_loader = _loader_original
                _loader_original = None


def install_caller_identity(sts: Any, arn: str, user_id: str) -> None:
    """Answer ``sts:GetCallerIdentity`` for the lab's keys as the workshop participant.

    moto behaviour: a caller whose keys moto did not issue is ``arn:aws:sts::<account>:user/moto``
    with user id ``AKIAIOSFODNN7EXAMPLE``. A workshop learner is an assumed role.
    """
    original = type(sts).get_caller_identity

    def get_caller_identity(access_key_id: str, region: str) -> tuple[str, str, str]:
        user, found_arn, account = original(sts, access_key_id, region)
        if found_arn.endswith(":user/moto"):
            return user_id, arn, str(sts.account_id)
        return str(user), str(found_arn), str(account)

    sts.get_caller_identity = get_caller_identity


class EcsHooks(Protocol):
    """What the ECS overrides tell the lab's scheduler."""

    def user_stop(self, task: Any, reason: str | None) -> None: ...

    def service_changed(self, service: Any, before: dict[str, Any]) -> None: ...

    def service_created(self, service: Any) -> None: ...


def install_ecs_overrides(ecs: Any, hooks: EcsHooks) -> None:
    """Replace the ECS backend methods whose answers differ from AWS's, on this backend only."""
    from moto.ecs.exceptions import InvalidParameterException, ServiceNotFoundException

    original_list_tasks = type(ecs).list_tasks
    original_update_service = type(ecs).update_service
    original_delete_service = type(ecs).delete_service
    original_create_service = type(ecs).create_service

    def list_tasks(
        cluster_str: str | None = None,
        container_instance: str | None = None,
        family: str | None = None,
        started_by: str | None = None,
        service_name: str | None = None,
        desiredStatus: str | None = None,
    ) -> list[Any]:
        # moto behaviour: list_tasks ignores serviceName (returns every task of the cluster)
        # and, without desiredStatus, lists stopped tasks too. AWS filters by the service's
        # task group and defaults desiredStatus to RUNNING.
        tasks = original_list_tasks(
            ecs,
            cluster_str,
            container_instance,
            family,
            started_by,
            None,
            desiredStatus or "RUNNING",
        )
        if service_name:
            name = service_name.split("/")[-1]
            cluster = ecs._get_cluster(cluster_str or "default")
            if f"{cluster.name}:{name}" not in ecs.services:
                raise ServiceNotFoundException()
            tasks = [t for t in tasks if t.group == f"service:{name}"]
        return list(tasks)

    def describe_tasks(cluster_str: str, tasks: list[str]) -> list[Any]:
        # moto behaviour: describe_tasks advances each task's managed state by one tick and
        # matches ids as substrings. The lab's scheduler owns the lifecycle; match exactly.
        ecs._get_cluster(cluster_str)
        if not tasks:
            raise InvalidParameterException("Tasks cannot be empty.")
        wanted = {t.split("/")[-1] for t in tasks}
        return [
            task
            for cluster_tasks in ecs.tasks.values()
            for task in cluster_tasks.values()
            if task.id in wanted
        ]

    def stop_task(cluster_str: str, task_str: str, reason: str | None) -> Any:
        # moto behaviour: stop_task jumps the task to STOPPED at once and answers HTTP 500 for
        # an unknown task. AWS sets desiredStatus STOPPED, stopCode UserInitiated and walks the
        # task down through DEACTIVATING..STOPPED; the scheduler does the walk.
        cluster = ecs._get_cluster(cluster_str or "default")
        task_id = task_str.split("/")[-1]
        for task in ecs.tasks.get(cluster.name, {}).values():
            if task.id == task_id:
                if task.desired_status != "STOPPED":
                    hooks.user_stop(task, reason)
                return task
        raise InvalidParameterException("The referenced task was not found.")

    def update_service(service_properties: dict[str, Any]) -> Any:
        # moto behaviour: update_service fakes runningCount = desiredCount and renews only the
        # deployment id on forceNewDeployment. The scheduler recounts and rolls out.
        cluster = service_properties.get("cluster", "default")
        name = str(service_properties.get("service", "")).split("/")[-1]
        current = ecs._get_service(cluster, name)
        before = {
            "deployment_id": current.deployments[0]["id"] if current.deployments else None,
            "task_definition": current.task_definition,
            "desired_count": current.desired_count,
        }
        service = original_update_service(ecs, service_properties)
        hooks.service_changed(service, before)
        return service

    def delete_service(cluster_name: str, service_name: str, force: bool) -> Any:
        # moto behaviour: a deleted service is INACTIVE at once. AWS: "the service status
        # moves from ACTIVE to DRAINING, and the service is no longer visible in the console or
        # in ListServices. After the tasks have stopped, then the service status moves from
        # DRAINING to INACTIVE" (bc:ecs DeleteService); the scheduler finishes the move.
        service = original_delete_service(ecs, cluster_name, service_name, force)
        service.status = "DRAINING"
        hooks.service_changed(service, {})
        return service

    def create_service(cluster_str: str, service_name: str, *args: Any, **kwargs: Any) -> Any:
        # moto behaviour: creating a service over one of the same name replaces it silently.
        # AWS refuses while the old one is ACTIVE or DRAINING (the messages clients report).
        cluster = ecs._get_cluster(cluster_str or "default")
        existing = ecs.services.get(f"{cluster.name}:{service_name}")
        if existing is not None and existing.status == "ACTIVE":
            raise InvalidParameterException("Creation of service was not idempotent.")
        if existing is not None and existing.status == "DRAINING":
            raise InvalidParameterException("Unable to Start a service that is still Draining.")
        service = original_create_service(ecs, cluster_str, service_name, *args, **kwargs)
        hooks.service_created(service)
        return service

    overrides: dict[str, Callable[..., Any]] = {
        "list_tasks": list_tasks,
        "describe_tasks": describe_tasks,
        "stop_task": stop_task,
        "update_service": update_service,
        "delete_service": delete_service,
        "create_service": create_service,
    }
    for name, fn in overrides.items():
        setattr(ecs, name, fn)


def install_logs_overrides(logs: Any, small_pages: Callable[[], bool]) -> None:
    """Answer ``FilterLogEvents`` (and, with the ``log_pages`` knob, ``GetLogEvents``) as
    CloudWatch Logs does; pages and tokens come from :mod:`runbook_lib.lab.logpages`."""
    from moto.logs.exceptions import InvalidParameterException, ResourceNotFoundException

    from runbook_lib.lab import logpages
    from runbook_lib.lab.wire import current_request

    original_get_log_events = type(logs).get_log_events

    def too_many(limit: int | None) -> None:
        if limit and limit > logpages.MAX_EVENTS:
            raise InvalidParameterException(
                constraint="Member must have value less than or equal to 10000",
                parameter="limit",
                value=limit,
            )

    def get_log_events(
        log_group_name: str,
        log_group_id: str,
        log_stream_name: str,
        start_time: int | None,
        end_time: int | None,
        limit: int | None,
        next_token: str | None,
        start_from_head: bool,
    ) -> tuple[list[dict[str, Any]], str, str]:
        group = logs._find_log_group(log_group_id=log_group_id, log_group_name=log_group_name)
        if log_stream_name not in group.streams:
            # moto behaviour: a missing stream is "The specified log group does not exist."
            raise ResourceNotFoundException("The specified log stream does not exist.")
        if not small_pages():
            return original_get_log_events(  # type: ignore[no-any-return]
                logs,
                log_group_name,
                log_group_id,
                log_stream_name,
                start_time,
                end_time,
                limit,
                next_token,
                start_from_head,
            )
        too_many(limit)
        events = sorted(
            (
                e
                for e in group.streams[log_stream_name].events
                if (not start_time or e.timestamp >= start_time)
                and (not end_time or e.timestamp <= end_time)
            ),
            key=lambda e: e.timestamp,
        )
        try:
            page = logpages.get_page(events, next_token, bool(start_from_head), limit, True)
        except logpages.BadToken:
            raise InvalidParameterException("The specified nextToken is invalid.") from None
        return [e.to_response_dict() for e in page.events], page.backward, page.forward

    def filter_log_events(
        log_group_name: str,
        log_stream_names: list[str],
        start_time: int | None,
        end_time: int | None,
        limit: int | None,
        next_token: str | None,
        filter_pattern: str,
        interleaved: bool,
    ) -> tuple[list[dict[str, Any]], str | None, list[dict[str, Any]]]:
        # moto behaviour: logStreamNamePrefix is not handed to the backend (every stream is
        # searched), events come stream by stream unless interleaved, and searchedLogStreams
        # lists every stream. AWS: "interleaved ... is ignored and the value is assumed to be
        # true", searchedLogStreams "returns an empty list" (bc:logs FilterLogEvents).
        too_many(limit)
        if log_group_name not in logs.groups:
            raise ResourceNotFoundException()
        group = logs.groups[log_group_name]
        prefix = current_request().params.get("logStreamNamePrefix")
        names = [
            name
            for name in group.streams
            if (not log_stream_names or name in log_stream_names)
            and (not prefix or name.startswith(prefix))
        ]
        events: list[dict[str, Any]] = []
        for name in names:
            events += group.streams[name].filter_log_events(start_time, end_time, filter_pattern)
        events.sort(key=lambda e: e["timestamp"])
        try:
            page, token = logpages.filter_page(
                events, log_group_name, next_token, limit, small_pages()
            )
        except logpages.BadToken:
            raise InvalidParameterException("The specified nextToken is invalid.") from None
        return page, token, []

    logs.get_log_events = get_log_events
    logs.filter_log_events = filter_log_events


def install_iam_reads(iam: Any, as_read: Callable[[str], Any]) -> None:
    """Let IAM's reads of a role answer its earlier state while a write propagates.

    ``as_read(role_name)``: the :class:`~runbook_lib.lab.policies.RoleState` a read answers now
    (None: what moto holds). Only the read operations themselves are answered from it
    (``GetRole``, ``GetRolePolicy``, ``ListRolePolicies``); moto's write paths call the same
    backend methods and keep seeing the present.
    """
    from moto.iam.exceptions import NotFoundException

    from runbook_lib.lab.wire import current_request

    original_get_role = type(iam).get_role
    original_get_role_policy = type(iam).get_role_policy
    original_list_role_policies = type(iam).list_role_policies

    def stale(operation: str, role_name: str) -> Any:
        request = current_request()
        if request.service != "iam" or request.operation != operation:
            return None
        return as_read(role_name)

    def get_role(role_name: str) -> Any:
        role = original_get_role(iam, role_name)
        state = stale("GetRole", role_name)
        if state is None or state.boundary_arn == role.permissions_boundary_arn:
            return role
        seen = copy.copy(role)
        seen.permissions_boundary_arn = state.boundary_arn
        return seen

    def get_role_policy(role_name: str, policy_name: str) -> tuple[str, str]:
        state = stale("GetRolePolicy", role_name)
        if state is None:
            return original_get_role_policy(iam, role_name, policy_name)  # type: ignore[no-any-return]
        original_get_role(iam, role_name)  # NoSuchEntity for a role that is gone
        if policy_name not in state.inline:
            # moto's own wording for a policy the role does not have.
            raise NotFoundException(
                f"Policy Document {policy_name} not attached to role {role_name}"
            )
        return policy_name, str(state.inline[policy_name])

    def list_role_policies(role_name: str) -> list[str]:
        state = stale("ListRolePolicies", role_name)
        if state is None:
            return original_list_role_policies(iam, role_name)  # type: ignore[no-any-return]
        original_get_role(iam, role_name)
        return list(state.inline)

    iam.get_role = get_role
    iam.get_role_policy = get_role_policy
    iam.list_role_policies = list_role_policies
