"""What the runbook itself calls in AWS, step by step, declared once as data.

An AWS user must know what the runbook needs before running it with their role. Each step of
:class:`runbook_lib.runbook.Runbook` declares the IAM actions it calls and the resources it calls
them on (as cloud-custodian's actions declare their ``permissions``); from that declaration
``carts-runbook permissions`` prints the least-privilege identity policy a participant needs, plan
only or with the writes, scoped to the parameters' role, cluster, service and table wherever IAM
takes a resource for the action (the Service Authorization Reference's resource types).

``tests/test_permissions.py`` runs the runbook against the lab and fails on any call a step made
that its declaration does not hold, and evaluates the printed policy with :mod:`runbook_lib.iam_eval`
against the calls it recorded.

Pure: no AWS call, no boto3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runbook_lib.params import Params
from runbook_lib.partitions import partition_for_region

#: The runbook's steps in the notebook's order (the ``step:<name>`` tags of its cells).
STEPS = (
    "parameters",
    "connect",
    "diagnose",
    "render",
    "lint",
    "preflight",
    "trust",
    "plan",
    "apply",
    "watch",
    "verify",
    "rollback",
    "summary",
)


@dataclass(frozen=True)
class Need:
    """One IAM action a step calls, on which resource, and why.

    ``resource`` is a template over :meth:`Scope.values` (``{role_arn}``, ``{table_arn}``, ...);
    ``"*"`` where the action takes no resource-level permission. ``condition`` narrows a ``"*"``
    where IAM offers a condition key instead (``ecs:ListTasks`` and ``ecs:cluster``).
    """

    action: str
    resource: str
    why: str
    write: bool = False
    condition: tuple[tuple[str, str, str], ...] = ()  # (operator, key, value template)


def _role(action: str, why: str, write: bool = False) -> Need:
    return Need(action, "{role_arn}", why, write)


_READ_ROLE = (
    _role("iam:GetRole", "the role: its trust policy and permissions boundary"),
    _role("iam:ListRolePolicies", "the role's inline policies"),
    _role("iam:GetRolePolicy", "each inline policy's document"),
    _role("iam:ListAttachedRolePolicies", "the role's managed policies"),
    Need("iam:GetPolicy", "{any_policy_arn}", "each managed policy's default version"),
    Need("iam:GetPolicyVersion", "{any_policy_arn}", "each managed policy's document"),
)
_SEE_TASKS = (
    Need("ecs:DescribeServices", "{service_arn}", "the service, its deployments and events"),
    Need(
        "ecs:ListTasks",
        "*",
        "the service's tasks (IAM scopes ListTasks by the ecs:cluster condition key)",
        condition=(("ArnEquals", "ecs:cluster", "{cluster_arn}"),),
    ),
    Need("ecs:DescribeTasks", "{task_arns}", "the tasks' states, stop codes and containers"),
)
_READ_LOGS = (
    Need("logs:FilterLogEvents", "{log_group_arn}", "search the tasks' log for AccessDenied"),
    Need("logs:GetLogEvents", "{log_stream_arns}", "the lines around a denial"),
)

#: What each step calls. Steps that call nothing (render, lint, trust) are empty.
STEP_NEEDS: Mapping[str, tuple[Need, ...]] = {
    "parameters": (),
    "connect": (
        Need("sts:GetCallerIdentity", "*", "who answers (IAM needs no permission for it)"),
        Need("iam:GetRole", "{task_role_arn}", "the task role exists"),
        Need("iam:GetRole", "{execution_role_arn}", "the execution role exists"),
        Need("ecs:DescribeServices", "{service_arn}", "the cluster and service exist"),
        Need("dynamodb:DescribeTable", "{table_arn}", "the table and its index exist"),
    ),
    "diagnose": (
        *_SEE_TASKS,
        Need("ecs:DescribeTaskDefinition", "*", "each task's own task definition (no resource)"),
        *_READ_LOGS,
    ),
    "render": (),
    "lint": _READ_ROLE,
    "preflight": (
        *_READ_ROLE,
        Need("iam:SimulateCustomPolicy", "*", "IAM's simulator, on AWS only (no resource)"),
    ),
    "trust": _READ_ROLE,
    "plan": _READ_ROLE,
    "apply": (
        _role("iam:GetRolePolicy", "re-read the policy just before writing it, and read it back"),
        *_SEE_TASKS,
        _role("iam:PutRolePolicy", "attach the policy (CartsDynamoPolicy)", write=True),
        Need(
            "ecs:UpdateService",
            "{service_arn}",
            "a new deployment when the service's deployment FAILED (--force-new-deployment)",
            write=True,
        ),
    ),
    "watch": (
        *_SEE_TASKS,
        Need("ecs:DescribeTaskDefinition", "*", "the watched tasks' task definitions"),
        *_READ_LOGS,
    ),
    "verify": (Need("dynamodb:Scan", "{table_arn}", "what carts wrote (workshop 3.4)"),),
    "rollback": (
        _role("iam:ListRolePolicies", "check the rollback"),
        _role("iam:GetRolePolicy", "the policy still holds what this run wrote"),
        _role("iam:PutRolePolicy", "put back the document the run replaced", write=True),
        _role("iam:DeleteRolePolicy", "remove the policy the run created", write=True),
    ),
    "summary": (_role("iam:GetRolePolicy", "what the policy holds at the end of the run"),),
}

assert set(STEP_NEEDS) == set(STEPS)


@dataclass(frozen=True)
class Scope:
    """The names a policy is scoped to: the parameters' account, region and resources."""

    params: Params
    account: str  # "*" when the parameters do not name one
    log_group: str = "*"

    def values(self) -> dict[str, str]:
        p, a = self.params, self.account
        part = partition_for_region(p.region)
        ecs = f"arn:{part}:ecs:{p.region}:{a}"
        logs = f"arn:{part}:logs:{p.region}:{a}:log-group:{self.log_group}"
        return {
            "role_arn": f"arn:{part}:iam::{a}:role/{p.task_role}",
            "task_role_arn": f"arn:{part}:iam::{a}:role/{p.task_role}",
            "execution_role_arn": f"arn:{part}:iam::{a}:role/{p.execution_role}",
            "any_policy_arn": f"arn:{part}:iam::*:policy/*",
            "cluster_arn": f"{ecs}:cluster/{p.cluster}",
            "service_arn": f"{ecs}:service/{p.cluster}/{p.service}",
            "task_arns": f"{ecs}:task/{p.cluster}/*",
            "table_arn": f"arn:{part}:dynamodb:{p.region}:{a}:table/{p.table}",
            "log_group_arn": logs,
            "log_stream_arns": f"{logs}:log-stream:*",
        }

    def resource(self, need: Need) -> str:
        return need.resource.format(**self.values())


def needs(steps: Iterable[str] = STEPS, *, writes: bool = True) -> list[Need]:
    """Every need of ``steps``, once each, writes left out unless ``writes``."""
    seen: dict[tuple[str, str, tuple[Any, ...]], Need] = {}
    for step in steps:
        for need in STEP_NEEDS[step]:
            if need.write and not writes:
                continue
            seen.setdefault((need.action, need.resource, need.condition), need)
    return list(seen.values())


def declared_actions(step: str) -> frozenset[str]:
    """The IAM actions ``step`` may call."""
    return frozenset(n.action for n in STEP_NEEDS[step])


def policy_for(scope: Scope, *, writes: bool) -> dict[str, Any]:
    """The least-privilege identity policy for running the runbook with ``scope``'s names.

    One statement per (resource, condition), its actions sorted; reads first, then the writes
    (only with ``writes``: a plan-only participant gets no IAM or ECS write at all).
    """
    groups: dict[tuple[bool, str, tuple[Any, ...]], tuple[str, set[str]]] = {}
    for need in needs(writes=writes):
        key = (need.write, scope.resource(need), need.condition)
        sid, actions = groups.setdefault(key, (_sid(need), set()))
        actions.add(need.action)
    statements = []
    for (_write, resource, condition), (sid, actions) in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[1][0])
    ):
        st: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Allow",
            "Action": sorted(actions),
            "Resource": resource,
        }
        if condition:
            cond: dict[str, dict[str, str]] = {}
            for op, key, value in condition:
                cond.setdefault(op, {})[key] = value.format(**scope.values())
            st["Condition"] = cond
        statements.append(st)
    _unique_sids(statements)
    return {"Version": "2012-10-17", "Statement": statements}


#: Statement ids, by the resource template a statement is for.
_LABELS = {
    "*": "ActionsWithoutResourceLevel",
    "{role_arn}": "TaskRole",
    "{task_role_arn}": "TaskRole",
    "{execution_role_arn}": "ExecutionRole",
    "{any_policy_arn}": "ManagedPolicies",
    "{service_arn}": "Service",
    "{task_arns}": "ServiceTasks",
    "{table_arn}": "Table",
    "{log_group_arn}": "LogGroup",
    "{log_stream_arns}": "LogStreams",
}


def _sid(need: Need) -> str:
    label = _LABELS.get(need.resource, "Other")
    if need.condition:
        label = "ClusterTasks"
    return f"{'Write' if need.write else 'Read'}{label}"


def _unique_sids(statements: list[dict[str, Any]]) -> None:
    count: dict[str, int] = {}
    for st in statements:
        sid = st["Sid"]
        count[sid] = count.get(sid, 0) + 1
        if count[sid] > 1:
            st["Sid"] = f"{sid}{count[sid]}"


def policy_text(scope: Scope, *, writes: bool) -> str:
    """:func:`policy_for` as the JSON a participant pastes into IAM."""
    return json.dumps(policy_for(scope, writes=writes), indent=2) + "\n"


#: botocore's service names -> IAM's action prefixes (they differ for some services).
IAM_PREFIX = {"sts": "sts", "iam": "iam", "ecs": "ecs", "logs": "logs", "dynamodb": "dynamodb"}


def action_of(call: str) -> str:
    """``"iam:PutRolePolicy"`` for a call counted as ``"iam:PutRolePolicy"`` by the connection
    (botocore's service name and operation name)."""
    service, _, operation = call.partition(":")
    return f"{IAM_PREFIX.get(service, service)}:{operation}"
