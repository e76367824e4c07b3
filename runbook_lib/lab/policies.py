"""A role's policies as moto holds them (identity policies and permissions boundary), and how they
looked a while ago.

IAM is eventually consistent: "Any change that you make in IAM ... takes time to become visible
from all possible endpoints" (IAM User Guide, troubleshoot_general.html#troubleshoot_general_
eventual-consistency). The lab plays that with :class:`PolicyHistory`: it records each distinct
state of a role (:class:`RoleState`) with the (monotonic) time it was first seen, and answers
"the role as it was N seconds ago", both for what a task's calls are decided by (the
``propagation_delay_s`` knob) and for what IAM's own reads answer (the ``stale_reads_s`` knob).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from runbook_lib.iam_eval import Decision, PolicyError, evaluate

S = TypeVar("S")


@dataclass(frozen=True)
class RoleState:
    """What IAM holds for one role at one time.

    ``inline``: inline policy name -> document text, as stored (what ``GetRolePolicy`` answers).
    ``managed``: attached managed policy ARN -> its default version's document.
    ``boundary_arn`` / ``boundary``: the permissions boundary (``GetRole``'s
    ``PermissionsBoundary.PermissionsBoundaryArn``) and its default version's document.
    """

    inline: Mapping[str, str] = field(default_factory=dict)
    managed: Mapping[str, str] = field(default_factory=dict)
    boundary_arn: str | None = None
    boundary: str | None = None

    @property
    def identity(self) -> dict[str, str]:
        """The identity-based policies that apply: inline and attached managed ones. Documents
        IAM would not have accepted (moto is more lenient) are left out, as IAM would never
        have stored them."""
        docs = {**self.inline, **self.managed}
        return {name: doc for name, doc in docs.items() if _acceptable(name, doc)}

    @property
    def boundary_policy(self) -> dict[str, str] | None:
        """The boundary as ``{ARN: document}`` (None when the role has none). A boundary whose
        policy moto no longer holds allows nothing, as IAM treats a boundary it cannot use."""
        if self.boundary_arn is None:
            return None
        doc = self.boundary if self.boundary and _acceptable("b", self.boundary) else None
        return {self.boundary_arn: doc or json.dumps({"Version": "2012-10-17", "Statement": []})}


def role_state(iam: Any, role_name: str) -> RoleState:
    """``role_name`` as moto's IAM backend holds it now (an unknown role has nothing)."""
    roles = [r for r in iam.roles.values() if r.name == role_name]
    if not roles:
        return RoleState()
    role = roles[0]
    inline = {name: _text(doc) for name, doc in role.policies.items()}
    managed = {}
    for arn, policy in role.managed_policies.items():
        doc = _default_document(policy)
        if doc is not None:
            managed[arn] = doc
    boundary_arn = getattr(role, "permissions_boundary_arn", None) or None
    boundary = None
    if boundary_arn is not None:
        policy = iam.managed_policies.get(boundary_arn)
        if policy is not None:
            boundary = _default_document(policy)
        elif ":iam::aws:policy/" in boundary_arn:
            # An AWS managed policy used as a boundary (AWS allows it): moto holds only those
            # the lab registered, but ships every one's document.
            from runbook_lib.lab.moto_patches import aws_managed_policy_data

            try:
                data = aws_managed_policy_data(boundary_arn.rsplit("/", 1)[1])
                boundary = _text(data["Document"])
            except KeyError:
                boundary = None
    return RoleState(inline, managed, boundary_arn, boundary)


def effective_policies(iam: Any, role_name: str) -> dict[str, str]:
    """The identity policies that apply to ``role_name`` (see :attr:`RoleState.identity`)."""
    return role_state(iam, role_name).identity


def _default_document(policy: Any) -> str | None:
    default = [v for v in policy.versions if v.is_default]
    return _text(default[0].document) if default else None


def _text(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc)


def _acceptable(name: str, doc: str) -> bool:
    try:
        evaluate({name: doc}, "lab:Probe", "*")
    except PolicyError:
        return False
    return True


@dataclass
class PolicyHistory(Generic[S]):
    """Distinct states of one role, each with the time it was first seen.

    ``read`` returns the current state; call :meth:`observe` after anything that may have
    changed it (the lab does after every IAM request) and :meth:`as_of` to look back.
    """

    read: Callable[[], S]
    keep: int = 256
    _times: list[float] = field(default_factory=list)
    _states: list[S] = field(default_factory=list)

    def observe(self, now: float) -> bool:
        """Record the current state if it differs from the last one; True if it did."""
        state = self.read()
        if self._states and self._states[-1] == state:
            return False
        self._times.append(now)
        self._states.append(state)
        if len(self._states) > self.keep:
            del self._times[0], self._states[0]
        return True

    def as_of(self, when: float) -> S:
        """The state that was current at ``when`` (the oldest one if ``when`` predates all)."""
        if not self._states:
            return self.read()
        i = bisect.bisect_right(self._times, when) - 1
        return self._states[max(i, 0)]

    def clear(self) -> None:
        self._times.clear()
        self._states.clear()


def decide(
    state: RoleState, action: str, resource: str, context: Mapping[str, Any] | None = None
) -> Decision:
    """IAM's decision for a call made with ``state``'s role: its identity-based policies,
    limited by its permissions boundary ("the intersection of the two categories", IAM User
    Guide, access_policies_boundaries.html; reference_policies_evaluation-logic.html)."""
    return evaluate(state.identity, action, resource, context, boundary=state.boundary_policy)


def denial(decision: Decision, principal: str) -> str:
    """AWS's AccessDenied sentence for a denied ``decision``, as ``principal`` receives it: it
    names the one policy type that denied, e.g. "because no permissions boundary allows the
    dynamodb:Query action" (IAM User Guide, troubleshoot_access-denied.html; AWS-FACTS 5)."""
    return decision.sentence(principal)
