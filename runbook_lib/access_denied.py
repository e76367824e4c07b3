"""AWS's AccessDenied sentence: written by the lab's carts app, read by the runbook's diagnosis.

The IAM User Guide ("Troubleshoot access denied error messages") gives its shape::

    User: <principal ARN> is not authorized to perform: <action> on resource: <resource ARN>
    because no <type> allows the <action> action                   (an implicit deny)
    with an explicit deny in a(n) <type>[: <policy ARN>]            (an explicit deny)

where ``<type>`` names one policy type (:class:`PolicyType`): ``identity-based policy``,
``permissions boundary``, ``service control policy``, ``session policy``, ``resource-based
policy`` (and ``resource control policy``, ``VPC endpoint policy``). Only one type is named even
when several deny, and the sentence has no final period. For a service control policy AWS
"always includes the phrase ... explicit deny ..., even if the denial is implicit", so an SCP
sentence cannot tell an SCP ``Deny`` from an SCP allow-list that leaves the action out; the same
is assumed here for resource control policies. Since 2025, same-account and same-organization
explicit denies end in ``: <policy ARN>`` (the denying SCP, RCP, boundary, session or managed
policy). The workshop's sentence, as the carts app logs it::

    User: arn:aws:sts::123456789012:assumed-role/retailStoreEcsTaskRole/0f3c... is not
    authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:us-west-2:123456789012:
    table/retail-store-ecs-carts/index/idx_global_customerId because no identity-based policy
    allows the dynamodb:Query action

ARNs may be in any partition (``arn:aws-cn:``, ``arn:aws-us-gov:``, ...).

Public names: :class:`PolicyType`, :data:`NO_ALLOW` and :data:`EXPLICIT_DENY` (the two kinds,
the same strings as :attr:`runbook_lib.iam_eval.Decision.decision` uses),
:class:`AccessDenied` (``policy_type``, ``policy_arn``, ``explicit``, ``explanation``,
``advice``, ``role_name``, ``session_name``, ``account_id``, ``partition``; ``str()`` is the
sentence), :func:`parse_access_denied`, :func:`format_access_denied`,
:func:`explain_denial`, :func:`advise_denial`, :func:`assumed_role_arn`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from runbook_lib.partitions import partition_for_region

__all__ = [
    "EXPLICIT_DENY",
    "NO_ALLOW",
    "AccessDenied",
    "PolicyType",
    "advise_denial",
    "assumed_role_arn",
    "explain_denial",
    "format_access_denied",
    "parse_access_denied",
]

#: The two kinds of denial AWS's sentence tells apart ("no ... allows" / "explicit deny in").
DenialKind = Literal["implicit_deny", "explicit_deny"]
NO_ALLOW: Final[DenialKind] = "implicit_deny"
EXPLICIT_DENY: Final[DenialKind] = "explicit_deny"


class PolicyType(StrEnum):
    """A policy type as AWS names it in the sentence (the value is AWS's words)."""

    IDENTITY = "identity-based policy"
    BOUNDARY = "permissions boundary"
    SCP = "service control policy"
    SESSION = "session policy"
    RESOURCE = "resource-based policy"
    RCP = "resource control policy"
    VPC_ENDPOINT = "VPC endpoint policy"

    @property
    def article(self) -> str:
        """``an`` for identity-based policy, ``a`` for the others."""
        return "an" if self.value[0] in "aeiou" else "a"

    @property
    def organizational(self) -> bool:
        """SCPs and RCPs: set by the organization, out of reach of the account's own IAM."""
        return self in (PolicyType.SCP, PolicyType.RCP)


_TYPES = "|".join(re.escape(t.value) for t in PolicyType)
_SENTENCE = re.compile(
    r"User: (?P<principal>arn:[\w-]+:(?:sts|iam)::\d{12}:\S+) is not authorized to perform: "
    r"(?P<action>[\w-]+:[\w*?-]+) on resource: (?P<resource>\S+) "
    rf"(?:because no (?P<implicit>{_TYPES}) allows the (?P=action) action"
    rf"|(?:because )?with an explicit deny in an? (?P<explicit>{_TYPES})"
    r"(?:: (?P<policy_arn>arn:\S+))?)"
)
_ASSUMED = re.compile(
    r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/"
    r"(?P<session>.+)$"
)
_PRINCIPAL = re.compile(r"^arn:(?P<partition>[\w-]+):(?:sts|iam)::(?P<account>\d{12}):")


@dataclass(frozen=True)
class AccessDenied:
    """One parsed AccessDenied sentence.

    ``kind``: :data:`NO_ALLOW` or :data:`EXPLICIT_DENY` as the sentence says it (an SCP
    sentence always says explicit). ``policy_arn``: the ``: <ARN>`` suffix, when present.
    """

    principal: str
    action: str
    resource: str
    kind: DenialKind
    policy_type: PolicyType = PolicyType.IDENTITY
    policy_arn: str | None = None

    @property
    def role_name(self) -> str | None:
        """The role behind an assumed-role principal, else None."""
        m = _ASSUMED.match(self.principal)
        return m.group("role") if m else None

    @property
    def session_name(self) -> str | None:
        """The role session name (for an ECS task role: the task id), else None."""
        m = _ASSUMED.match(self.principal)
        return m.group("session") if m else None

    @property
    def account_id(self) -> str | None:
        """The principal's account."""
        m = _PRINCIPAL.match(self.principal)
        return m.group("account") if m else None

    @property
    def partition(self) -> str | None:
        """The principal's partition (``aws``, ``aws-cn``, ``aws-us-gov``, ...)."""
        m = _PRINCIPAL.match(self.principal)
        return m.group("partition") if m else None

    @property
    def explicit(self) -> bool:
        """True when the sentence says "explicit deny" (always so for an SCP)."""
        return self.kind == EXPLICIT_DENY

    @property
    def explanation(self) -> str:
        """One sentence: what denied the call (see :func:`explain_denial`)."""
        return explain_denial(
            self.policy_type, self.kind, self.action, self.resource, self.policy_arn
        )

    @property
    def advice(self) -> str:
        """One sentence: what would fix it (see :func:`advise_denial`)."""
        return advise_denial(self.policy_type, self.kind, self.action, self.role_name)

    def __str__(self) -> str:
        return format_access_denied(
            self.principal,
            self.action,
            self.resource,
            self.kind,
            policy_type=self.policy_type,
            policy_arn=self.policy_arn,
        )


def assumed_role_arn(
    account_id: str,
    role_name: str,
    session_name: str,
    *,
    region: str | None = None,
    partition: str | None = None,
) -> str:
    """The principal ARN a task sees for its task role (session name = task id).

    The partition is ``partition``, else that of ``region``, else ``aws``.

    >>> assumed_role_arn("123456789012", "r", "t", region="cn-north-1")
    'arn:aws-cn:sts::123456789012:assumed-role/r/t'
    """
    if partition is None:
        partition = partition_for_region(region) if region else "aws"
    return f"arn:{partition}:sts::{account_id}:assumed-role/{role_name}/{session_name}"


def format_access_denied(
    principal: str,
    action: str,
    resource: str,
    kind: DenialKind,
    *,
    policy_type: PolicyType | str = PolicyType.IDENTITY,
    policy_arn: str | None = None,
) -> str:
    """AWS's sentence for a denied request.

    ``kind``: :data:`NO_ALLOW` or :data:`EXPLICIT_DENY`; ``policy_type``: a :class:`PolicyType`
    or its words. An SCP or RCP denial is written as an explicit deny whatever ``kind`` says, as
    AWS does. ``policy_arn`` is appended (``: <ARN>``) to an explicit deny only, where AWS puts it.

    >>> format_access_denied("arn:aws:iam::123456789012:user/u", "s3:GetObject",
    ...                      "arn:aws:s3:::b/k", NO_ALLOW, policy_type="permissions boundary")
    'User: arn:aws:iam::123456789012:user/u is not authorized to perform: s3:GetObject on resource: arn:aws:s3:::b/k because no permissions boundary allows the s3:GetObject action'
    """
    if kind not in (NO_ALLOW, EXPLICIT_DENY):
        raise ValueError(f"kind must be {NO_ALLOW!r} or {EXPLICIT_DENY!r}, not {kind!r}")
    ptype = _policy_type(policy_type)
    head = f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
    if kind == EXPLICIT_DENY or ptype.organizational:
        suffix = f": {policy_arn}" if policy_arn else ""
        return head + f"with an explicit deny in {ptype.article} {ptype.value}{suffix}"
    return head + f"because no {ptype.value} allows the {action} action"


def parse_access_denied(text: str) -> AccessDenied | None:
    """Find the first AccessDenied sentence in ``text`` (a log line or a whole report)."""
    m = _SENTENCE.search(text)
    if m is None:
        return None
    explicit = m.group("explicit")
    return AccessDenied(
        principal=m.group("principal"),
        action=m.group("action"),
        resource=m.group("resource"),
        kind=EXPLICIT_DENY if explicit else NO_ALLOW,
        policy_type=PolicyType(explicit or m.group("implicit")),
        policy_arn=m.group("policy_arn"),
    )


def explain_denial(
    policy_type: PolicyType | str,
    kind: DenialKind,
    action: str,
    resource: str,
    policy_arn: str | None = None,
) -> str:
    """One sentence saying what denied ``action`` on ``resource``.

    >>> explain_denial("permissions boundary", NO_ALLOW, "dynamodb:Query", "arn:aws:dynamodb:...")
    'The permissions boundary allows no dynamodb:Query on arn:aws:dynamodb:..., so no identity-based policy can grant it.'
    """
    ptype = _policy_type(policy_type)
    named = f" ({policy_arn})" if policy_arn else ""
    on = f"{action} on {resource}"
    if ptype.organizational:
        return (
            f"A {ptype.value} of the organization{named} denies {on}: either it denies it "
            "explicitly or no such policy allows it (AWS says explicit deny for both)."
        )
    if kind == EXPLICIT_DENY:
        return (
            f"A Deny statement in {ptype.article} {ptype.value}{named} matches {on}, and an "
            "explicit deny wins over every Allow."
        )
    if ptype == PolicyType.IDENTITY:
        return f"No identity-based policy of the principal allows {on}."
    if ptype == PolicyType.BOUNDARY:
        return f"The permissions boundary allows no {on}, so no identity-based policy can grant it."
    if ptype == PolicyType.SESSION:
        return (
            f"The session policy passed when the role was assumed allows no {on}, so the "
            "session cannot use it even where the role's own policies allow it."
        )
    if ptype == PolicyType.RESOURCE:
        return f"No resource-based policy on {resource} allows {action} for this principal."
    return f"The VPC endpoint's policy allows no {on} through that endpoint."


def advise_denial(
    policy_type: PolicyType | str, kind: DenialKind, action: str, role_name: str | None = None
) -> str:
    """One sentence saying what would fix the denial, and who can.

    >>> advise_denial("service control policy", EXPLICIT_DENY, "dynamodb:Query")[:46]
    'No policy in this account can fix it: ask the '
    """
    ptype = _policy_type(policy_type)
    role = f"role {role_name}" if role_name else "the principal"
    service = action.split(":", 1)[0]
    if ptype.organizational:
        return (
            "No policy in this account can fix it: ask the organization's administrator to "
            f"allow {action} for this account in its {ptype.value.replace('policy', 'policies')}."
        )
    if ptype == PolicyType.IDENTITY and kind == EXPLICIT_DENY:
        return (
            f"Remove or narrow the Deny statement for {action} in the policies of {role}; "
            "adding an Allow cannot help while it is there."
        )
    if ptype == PolicyType.IDENTITY:
        return (
            f"Allow {action} in a policy of {role}: an inline policy "
            "(aws iam put-role-policy) or an attached managed policy."
        )
    if ptype == PolicyType.BOUNDARY and kind == EXPLICIT_DENY:
        return (
            f"Remove the Deny for {action} from the permissions boundary of {role}, or set "
            "another boundary with aws iam put-role-permissions-boundary; no identity-based "
            "policy can override it."
        )
    if ptype == PolicyType.BOUNDARY:
        return (
            f"The permissions boundary of {role} must allow {action} too: change the boundary "
            "policy, or set one that allows it with aws iam put-role-permissions-boundary; "
            "a new identity-based policy alone cannot."
        )
    if ptype == PolicyType.SESSION:
        return (
            f"Assume the role again with a session policy that allows {action}, or with none; "
            "no change to the role's own policies can lift a session policy's limit."
        )
    if ptype == PolicyType.RESOURCE:
        return (
            f"Change the resource-based policy of the resource (for DynamoDB, aws dynamodb "
            f"put-resource-policy) so that it no longer denies {action} to {role}."
            if kind == EXPLICIT_DENY
            else f"Allow {role} in the resource-based policy of the resource: access from "
            "another account needs both that and an identity-based Allow."
        )
    return (
        f"Change the VPC endpoint's policy (aws ec2 modify-vpc-endpoint --policy-document) to "
        f"allow {action}, or call {service} by another route."
    )


def _policy_type(value: PolicyType | str) -> PolicyType:
    try:
        return PolicyType(value)
    except ValueError:
        words = ", ".join(repr(t.value) for t in PolicyType)
        raise ValueError(f"policy_type must be one of {words}, not {value!r}") from None
