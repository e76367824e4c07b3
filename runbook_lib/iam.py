"""The IAM edge: read the task role, check its trust, plan, write and undo the inline policy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import unquote

from runbook_lib.errors import NotFound
from runbook_lib.policy import (
    RenderedPolicy,
    delete_role_policy_command,
    diff,
    parse_document,
    policy_hash,
    put_role_policy_command,
    same_policy,
)
from runbook_lib.shows import Shows

ECS_TASKS = "ecs-tasks.amazonaws.com"


def _doc(value: Any) -> dict[str, Any]:
    # boto3 decodes IAM's URL-encoded documents into dicts; some endpoints return the text.
    if isinstance(value, str):
        return parse_document(unquote(value))
    return dict(value)


@dataclass(frozen=True)
class RoleState:
    """What IAM says about a role: trust policy, inline and attached managed policies, and its
    permissions boundary (a managed policy's ARN and its default version's document)."""

    name: str
    arn: str
    account: str
    trust_policy: dict[str, Any]
    inline: dict[str, dict[str, Any]]
    attached: dict[str, dict[str, Any]]  # policy ARN -> default version's document
    boundary_arn: str | None = None
    boundary: dict[str, Any] | None = None

    def effective_policies(self) -> dict[str, dict[str, Any]]:
        """Every identity policy of the role, named as the runbook shows them."""
        out = dict(self.inline)
        for arn, doc in self.attached.items():
            out[arn.rsplit("/", 1)[-1] + " (managed)"] = doc
        return out

    def policies_with(self, name: str, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The identity policies once ``put-role-policy`` has put ``document`` as the inline
        policy ``name`` (it replaces a same-named inline policy, and only that)."""
        out = self.effective_policies()
        out[name] = document
        return out

    def boundary_named(self) -> dict[str, dict[str, Any]] | None:
        """The boundary as ``{its ARN: document}`` (for :func:`runbook_lib.iam_eval.explain`,
        which names it in its decisions), None without one."""
        if self.boundary is None:
            return None
        return {self.boundary_arn or "permissions boundary": self.boundary}


def _managed_document(iam: Any, arn: str) -> dict[str, Any]:
    """The default version's document of a managed policy."""
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    got = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    return _doc(got["Document"])


def read_role(iam: Any, role_name: str, account: str) -> RoleState:
    """Read ``role_name`` with all of its identity policies and its permissions boundary.

    Raises :class:`NotFound` ("role X does not exist in account Y") when IAM says NoSuchEntity.
    The boundary is ``get_role``'s ``PermissionsBoundary``, a managed policy read like an
    attached one (its default version).
    """
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        raise NotFound(f"role {role_name!r} does not exist in account {account}.") from None
    inline: dict[str, dict[str, Any]] = {}
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
        for name in page["PolicyNames"]:
            got = iam.get_role_policy(RoleName=role_name, PolicyName=name)
            inline[name] = _doc(got["PolicyDocument"])
    attached: dict[str, dict[str, Any]] = {}
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name):
        for ap in page["AttachedPolicies"]:
            attached[ap["PolicyArn"]] = _managed_document(iam, ap["PolicyArn"])
    boundary_arn = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    boundary = _managed_document(iam, boundary_arn) if boundary_arn else None
    return RoleState(
        name=role_name,
        arn=role["Arn"],
        account=account,
        trust_policy=_doc(role["AssumeRolePolicyDocument"]),
        inline=inline,
        attached=attached,
        boundary_arn=boundary_arn,
        boundary=boundary,
    )


# --- trust --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustCheck(Shows):
    role: str
    trust_policy: dict[str, Any]
    ecs_tasks_trusted: bool
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.ecs_tasks_trusted

    def verdict(self) -> str:
        if self.ecs_tasks_trusted:
            return (
                f"{self.role} trusts {ECS_TASKS} to call sts:AssumeRole: ECS can hand it to tasks."
            )
        return (
            f"{self.role} does not let {ECS_TASKS} call sts:AssumeRole: tasks cannot use it. "
            "Fix the trust policy first (iam update-assume-role-policy)."
        )

    def __str__(self) -> str:
        lines = [self.verdict(), json.dumps(self.trust_policy, indent=2)]
        lines += [f"WARNING {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.ok else "#b00020"
        warn = "".join(f'<li style="color:#a15c00">{escape(w)}</li>' for w in self.warnings)
        return (
            f'<p style="color:{colour}"><b>{escape(self.verdict())}</b></p>'
            f"<pre>{escape(json.dumps(self.trust_policy, indent=2))}</pre>"
            + (f"<ul>{warn}</ul>" if warn else "")
        )


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def check_trust(role: RoleState) -> TrustCheck:
    """Does the role trust ``ecs-tasks.amazonaws.com`` (``sts:AssumeRole``)? Warn on more."""
    trusted = False
    warnings: list[str] = []
    for i, st in enumerate(_as_list(role.trust_policy.get("Statement"))):
        actions = [a.lower() for a in _as_list(st.get("Action"))]
        assume = any(a in ("sts:assumerole", "sts:*", "*") for a in actions)
        principal = st.get("Principal", {})
        if principal == "*":
            principal = {"AWS": "*"}
        if st.get("Effect") != "Allow" or not assume:
            continue
        services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if ECS_TASKS in services:
            trusted = True
        for s in services:
            if s != ECS_TASKS:
                warnings.append(f"statement {i} also trusts the service {s}.")
        for p in _as_list(principal.get("AWS")) if isinstance(principal, dict) else []:
            if p == "*":
                warnings.append(f"statement {i} lets any AWS principal assume the role.")
            else:
                warnings.append(f"statement {i} also lets {p} assume the role.")
        for key in ("Federated", "CanonicalUser"):
            if isinstance(principal, dict) and key in principal:
                warnings.append(f"statement {i} also trusts {key} principals.")
        if "NotPrincipal" in st:
            warnings.append(f"statement {i} uses NotPrincipal: it trusts everyone not listed.")
    return TrustCheck(role.name, role.trust_policy, trusted, tuple(warnings))


# --- plan, apply, rollback ----------------------------------------------------------------------


@dataclass
class Plan(Shows):
    """What ``put-role-policy`` will do to the role, and how to undo it."""

    role: str
    policy: RenderedPolicy
    action: str  # "create" | "replace" | "unchanged"
    previous: dict[str, Any] | None
    other_inline: tuple[str, ...]
    written: bool = False
    written_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        return (
            ""
            if self.action == "unchanged"
            else diff(self.previous, self.policy.document, self.policy.name)
        )

    @property
    def restore_command(self) -> str:
        """The exact command that puts the role back as it was before this plan."""
        if self.previous is None:
            return delete_role_policy_command(self.role, self.policy.name)
        return put_role_policy_command(
            self.role, self.policy.name, json.dumps(self.previous, separators=(",", ":"))
        )

    def summary(self) -> str:
        name, role = self.policy.name, self.role
        if self.action == "unchanged":
            return f"{role} already has {name} with this exact document: nothing to write."
        if self.action == "replace":
            return f"put-role-policy will REPLACE the existing inline policy {name} on {role} (diff below)."
        return f"put-role-policy will add the inline policy {name} to {role}."

    def record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "policy_name": self.policy.name,
            "action": self.action,
            "written": self.written,
            "before": self.previous,
            "before_sha256": policy_hash(self.previous) if self.previous is not None else None,
            "after": self.policy.document,
            "after_sha256": self.policy.sha256,
            "restore_command": self.restore_command,
        }

    def __str__(self) -> str:
        others = ", ".join(self.other_inline) or "none"
        lines = [self.summary(), f"Other inline policies on the role (kept): {others}"]
        if self.diff:
            lines.append(self.diff.rstrip())
        if self.action != "unchanged":
            lines.append(f"To undo: {self.restore_command}")
        lines += self.notes
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        others = ", ".join(f"<code>{escape(o)}</code>" for o in self.other_inline) or "none"
        colour = {"create": "#1b5e9f", "replace": "#a15c00", "unchanged": "#1b7f3b"}[self.action]
        html = (
            f'<p style="color:{colour}"><b>{escape(self.summary())}</b></p>'
            f"<p>Other inline policies on the role (kept): {others}</p>"
        )
        if self.diff:
            html += f"<pre>{escape(self.diff)}</pre>"
        if self.action != "unchanged":
            html += f"<p>To undo:</p><pre>{escape(self.restore_command)}</pre>"
        html += "".join(f"<p>{escape(n)}</p>" for n in self.notes)
        return html


def plan(role: RoleState, policy: RenderedPolicy) -> Plan:
    """Compare the rendered policy with what the role has under the same name."""
    previous = role.inline.get(policy.name)
    if previous is None:
        action = "create"
    elif same_policy(previous, policy.document):
        action = "unchanged"
    else:
        action = "replace"
    others = tuple(sorted(n for n in role.inline if n != policy.name))
    return Plan(role.name, policy, action, previous, others)


def apply(iam: Any, the_plan: Plan, now: Callable[[], float] = time.time) -> Plan:
    """Write the policy (``iam:PutRolePolicy``) unless the role already has it; ``now`` tells
    the time of the write as AWS tells it."""
    if the_plan.action == "unchanged":
        the_plan.notes.append("Skipped: the role already has this document.")
        return the_plan
    iam.put_role_policy(
        RoleName=the_plan.role,
        PolicyName=the_plan.policy.name,
        PolicyDocument=the_plan.policy.text,
    )
    the_plan.written = True
    the_plan.written_at = now()
    return the_plan


@dataclass(frozen=True)
class RollbackResult(Shows):
    role: str
    policy_name: str
    done: str  # "deleted" | "restored" | "nothing"
    matches_before: bool

    def __str__(self) -> str:
        what = {
            "deleted": f"deleted {self.policy_name} from {self.role}",
            "restored": f"put back the previous {self.policy_name} on {self.role}",
            "nothing": "nothing to roll back: this run wrote nothing",
        }[self.done]
        check = (
            "the role's inline policies match the state before the run"
            if self.matches_before
            else "WARNING: the role does not match the state before the run"
        )
        return f"Rollback: {what}; {check}."


def rollback(iam: Any, the_plan: Plan) -> RollbackResult:
    """Put the role back exactly as the plan found it, then check by reading it again."""
    name = the_plan.policy.name
    if not the_plan.written:
        return RollbackResult(the_plan.role, name, "nothing", True)
    if the_plan.previous is None:
        iam.delete_role_policy(RoleName=the_plan.role, PolicyName=name)
        done = "deleted"
    else:
        iam.put_role_policy(
            RoleName=the_plan.role, PolicyName=name, PolicyDocument=json.dumps(the_plan.previous)
        )
        done = "restored"
    names = iam.list_role_policies(RoleName=the_plan.role)["PolicyNames"]
    if the_plan.previous is None:
        ok = name not in names
    else:
        now = _doc(iam.get_role_policy(RoleName=the_plan.role, PolicyName=name)["PolicyDocument"])
        ok = same_policy(now, the_plan.previous)
    return RollbackResult(the_plan.role, name, done, ok)
