"""The IAM edge: read the task role and check its trust (the writes are in ``writes.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from runbook_lib.blocks import Block, Pre, Sentence
from runbook_lib.errors import NotFound
from runbook_lib.policy import (
    parse_document,
)
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

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


def _managed_document(iam: IAMClient, arn: str) -> dict[str, Any]:
    """The default version's document of a managed policy."""
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    got = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    return _doc(got["Document"])


def read_role(iam: IAMClient, role_name: str, account: str) -> RoleState:
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
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name)
    for attached_page in pages:
        for ap in attached_page["AttachedPolicies"]:
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

    def blocks(self) -> list[Block]:
        return [
            Sentence(self.verdict(), "ok" if self.ok else "fail"),
            Pre(json.dumps(self.trust_policy, indent=2)),
            *(Sentence(w, "warn", "Warning") for w in self.warnings),
        ]


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
