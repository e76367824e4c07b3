"""Preflight: would carts be allowed once the candidate policy is on the role?

Decided locally with :mod:`runbook_lib.iam_eval` for every declared carts call, under the role as
it will be: its current identity policies with the candidate put in (replacing a same-named
inline policy, as ``put-role-policy`` would), limited by its permissions boundary (effective =
identity ∩ boundary, "the intersection of the two categories"). On real AWS IAM's own simulator
is asked too, when the caller may (:func:`simulate`).

A boundary or a service control policy that would still deny carts after the write stops the run
before anything is written: the write would change nothing for carts, and the sentence says what
blocks and what would fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_lib.access_denied import PolicyType
from runbook_lib.blocks import Block, Heading, Sentence, Table
from runbook_lib.carts import carts_requests
from runbook_lib.iam import RoleState
from runbook_lib.iam_eval import DecisionKind, Explanation, explain
from runbook_lib.policy import RenderedPolicy
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_iam.type_defs import ContextEntryTypeDef

#: Request context the carts app sends with every call (the AWS SDK speaks HTTPS), given to the
#: simulator so that a policy's conditions on these keys decide as they would for carts.
SIMULATOR_CONTEXT = ("aws:SecureTransport",)


@dataclass(frozen=True)
class SimulatorAnswer:
    """IAM's simulator on one carts call (one ``EvaluationResult``, for its resource)."""

    action: str
    resource: str
    decision: DecisionKind
    allowed_by_boundary: bool | None = None
    allowed_by_organizations: bool | None = None
    missing_context: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def record(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "resource": self.resource,
            "decision": self.decision,
            "allowed_by_boundary": self.allowed_by_boundary,
            "allowed_by_organizations": self.allowed_by_organizations,
            "missing_context": list(self.missing_context),
        }


_DECISIONS: dict[str, DecisionKind] = {
    "allowed": "allowed",
    "explicitDeny": "explicit_deny",
    "implicitDeny": "implicit_deny",
}


def read_evaluation(result: Mapping[str, Any], resource: str) -> SimulatorAnswer:
    """One ``EvaluationResult`` of ``SimulateCustomPolicy``, for ``resource``.

    With ``ResourceArns`` given, "any missing context values are instead included under the
    ResourceSpecificResults section" and the per-resource decision and boundary detail are there
    too (botocore's ``iam`` model); the organization's detail is only at the top level.
    """
    scope: Mapping[str, Any] = result
    for specific in result.get("ResourceSpecificResults", []):
        if specific.get("EvalResourceName") == resource:
            scope = specific
            break
    raw = scope.get("EvalResourceDecision", scope.get("EvalDecision", result.get("EvalDecision")))
    boundary = (
        scope.get("PermissionsBoundaryDecisionDetail")
        or result.get("PermissionsBoundaryDecisionDetail")
        or {}
    )
    orgs = result.get("OrganizationsDecisionDetail") or {}
    missing = list(result.get("MissingContextValues", []))
    missing += [m for m in scope.get("MissingContextValues", []) if m not in missing]
    return SimulatorAnswer(
        action=str(result.get("EvalActionName", "")),
        resource=resource,
        decision=_DECISIONS.get(str(raw), "implicit_deny"),
        allowed_by_boundary=boundary.get("AllowedByPermissionsBoundary"),
        allowed_by_organizations=orgs.get("AllowedByOrganizations"),
        missing_context=tuple(missing),
    )


@dataclass
class Preflight(Shows):
    before: Explanation
    after: Explanation
    simulator: list[SimulatorAnswer] | None = None
    simulator_note: str = ""
    role: str = ""
    boundary_arn: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def blocked_by(self) -> PolicyType | None:
        """The policy type that still denies a carts call with the candidate in place, when no
        policy on the role can lift it: the permissions boundary or the organization's SCPs (the
        local evaluation's type, else the simulator's decision details)."""
        for row in self.after.denied:
            if row.policy_type in (PolicyType.BOUNDARY, PolicyType.SCP, PolicyType.RCP):
                return row.policy_type
        for r in self.simulator or []:
            if r.allowed_by_boundary is False:
                return PolicyType.BOUNDARY
            if r.allowed_by_organizations is False:
                return PolicyType.SCP
        return None

    @property
    def ok(self) -> bool:
        sim_ok = self.simulator is None or all(r.allowed for r in self.simulator)
        return self.after.all_allowed and sim_ok

    def verdict(self) -> str:
        if self.ok:
            return "With the candidate policy, every call carts makes is allowed."
        blocked = self.blocked_by
        if blocked is not None:
            return self._blocked_sentence(blocked)
        denied = self.after.denied
        if denied:
            first = denied[0]
            return (
                f"Still denied with the candidate: {first.action} on {first.resource} "
                f"({first.reason}). {first.advice(self.role or None)}"
            ).rstrip()
        sim = next(r for r in self.simulator or [] if not r.allowed)
        missing = (
            f" It lacked the context keys {', '.join(sim.missing_context)}."
            if sim.missing_context
            else ""
        )
        return (
            f"IAM's simulator says {sim.decision} for {sim.action} on {sim.resource} where the "
            f"local evaluation allows it: see its answers.{missing}"
        )

    def _blocked_sentence(self, blocked: PolicyType) -> str:
        local = next((r for r in self.after.denied if r.policy_type == blocked), None)
        sim = next(
            (
                r
                for r in self.simulator or []
                if (blocked == PolicyType.BOUNDARY and r.allowed_by_boundary is False)
                or (blocked != PolicyType.BOUNDARY and r.allowed_by_organizations is False)
            ),
            None,
        )
        action = local.action if local else sim.action if sim else "?"
        resource = local.resource if local else sim.resource if sim else "?"
        role = self.role or "the task role"
        if blocked == PolicyType.BOUNDARY:
            which = f" {self.boundary_arn}" if self.boundary_arn else ""
            return (
                f"Blocked before writing: the permissions boundary{which} of {role} allows no "
                f"{action} on {resource}, so carts would stay denied whatever policy is put on "
                f"the role. To fix it, allow {action} in that boundary policy (or set another "
                f"boundary: aws iam put-role-permissions-boundary --role-name {role}), then run "
                "again."
            )
        return (
            f"Blocked before writing: a {blocked.value} of the organization denies {action} on "
            f"{resource} for this account, so carts would stay denied whatever policy is put on "
            f"{role}. No policy in this account can fix it: ask the organization's administrator "
            f"to allow {action} for this account, then run again."
        )

    def record(self) -> dict[str, Any]:
        blocked = self.blocked_by
        return {
            "before": [
                {"action": r.action, "resource": r.resource, "decision": r.decision}
                for r in self.before.rows
            ],
            "after": [
                {
                    "action": r.action,
                    "resource": r.resource,
                    "decision": r.decision,
                    "by": r.reason,
                    "policy_type": r.policy_type.value,
                }
                for r in self.after.rows
            ],
            "boundary": self.boundary_arn,
            "simulator": [r.record() for r in self.simulator]
            if self.simulator is not None
            else None,
            "simulator_note": self.simulator_note,
            "blocked_by": blocked.value if blocked is not None else None,
            "ok": self.ok,
        }

    def _boundary_line(self) -> str:
        if self.boundary_arn is None:
            return ""
        return (
            f"{self.role or 'The role'} has the permissions boundary {self.boundary_arn}: a call "
            "is allowed only when both an identity-based policy and the boundary allow it."
        )

    def blocks(self) -> list[Block]:
        out: list[Block] = [Sentence(self._boundary_line())] if self.boundary_arn else []
        out += [Heading("Now (the role as it is):"), *self.before.blocks()]
        out += [Heading("With the candidate policy:"), *self.after.blocks()]
        if self.simulator is not None:
            import pandas as pd

            answers = pd.DataFrame(
                [
                    (
                        r.action,
                        r.resource,
                        r.decision,
                        _yes_no(r.allowed_by_boundary),
                        _yes_no(r.allowed_by_organizations),
                        ", ".join(r.missing_context),
                    )
                    for r in self.simulator
                ],
                columns=[
                    "action",
                    "resource",
                    "decision",
                    "boundary allows",
                    "organization allows",
                    "missing context",
                ],
            )
            out += [Heading("IAM policy simulator:"), Table(answers)]
        if self.simulator_note:
            out.append(Sentence(self.simulator_note))
        out += [Sentence(n) for n in self.notes]
        verdict = Sentence(self.verdict(), "ok" if self.ok else "fail", "OK" if self.ok else "Stop")
        return [*out, verdict]


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def preflight(
    role: RoleState, policy: RenderedPolicy, region: str, account: str, table: str, index: str
) -> Preflight:
    """Local decisions for every carts call, before and after the candidate, within the role's
    permissions boundary."""
    requests = carts_requests(region, account, table, index)
    boundary = role.boundary_named()
    return Preflight(
        before=explain(role.effective_policies(), requests, boundary=boundary),
        after=explain(
            role.policies_with(policy.name, policy.document), requests, boundary=boundary
        ),
        role=role.name,
        boundary_arn=role.boundary_arn,
    )


def simulation_inputs(role: RoleState, policy: RenderedPolicy) -> dict[str, Any]:
    """``SimulateCustomPolicy``'s policy inputs for the role as it will be: every other inline
    policy and every attached one, plus the candidate (which replaces a same-named inline policy,
    as ``put-role-policy`` does; ``SimulatePrincipalPolicy``'s ``PolicyInputList`` would only
    add it beside the old one), and the role's permissions boundary."""
    docs = [json.dumps(d) for n, d in sorted(role.inline.items()) if n != policy.name]
    docs += [json.dumps(d) for _, d in sorted(role.attached.items())]
    docs.append(policy.text)
    inputs: dict[str, Any] = {"PolicyInputList": docs}
    if role.boundary is not None:
        inputs["PermissionsBoundaryPolicyInputList"] = [json.dumps(role.boundary)]
    return inputs


def simulate(
    iam: IAMClient, role: RoleState, policy: RenderedPolicy, requests: Sequence[tuple[str, str]]
) -> tuple[list[SimulatorAnswer] | None, str]:
    """Ask IAM's ``SimulateCustomPolicy`` about every carts call, for the role as it will be
    (:func:`simulation_inputs`): one simulation per resource with its actions, every page
    (``Marker``/``IsTruncated``).

    Returns (answers, note); answers is None when the simulator could not be asked (the caller
    may not call it, say): the local evaluation then stands alone.
    """
    from botocore.exceptions import ClientError

    by_resource: dict[str, list[str]] = {}
    for action, resource in requests:
        by_resource.setdefault(resource, []).append(action)
    inputs = simulation_inputs(role, policy)
    context: list[ContextEntryTypeDef] = [
        {"ContextKeyName": key, "ContextKeyValues": ["true"], "ContextKeyType": "boolean"}
        for key in SIMULATOR_CONTEXT
    ]
    answers: dict[tuple[str, str], SimulatorAnswer] = {}
    try:
        paginator = iam.get_paginator("simulate_custom_policy")
        for resource, actions in by_resource.items():
            pages = paginator.paginate(
                **inputs, ActionNames=actions, ResourceArns=[resource], ContextEntries=context
            )
            for page in pages:
                for result in page.get("EvaluationResults", []):
                    answer = read_evaluation(result, resource)
                    answers[(answer.action, resource)] = answer
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        return None, f"IAM's simulator was not asked ({code}): the local evaluation stands alone."
    note = "IAM's simulator was given the role as it will be: its other policies, the candidate" + (
        " and its permissions boundary." if role.boundary is not None else "."
    )
    unanswered = [(a, r) for a, r in requests if (a, r) not in answers]
    if unanswered:
        # A call the simulator did not answer is not known to be allowed.
        note += " It gave no answer for " + ", ".join(f"{a} on {r}" for a, r in unanswered) + "."
        answers.update({(a, r): SimulatorAnswer(a, r, "implicit_deny") for a, r in unanswered})
    return [answers[(a, r)] for a, r in requests], note
