"""AWS's AccessDenied sentence: written by the lab's carts app, read by the runbook's diagnosis.

The sentence AWS returns for an identity-policy denial, as the carts app logs it::

    User: arn:aws:sts::123456789012:assumed-role/retailStoreEcsTaskRole/0f3c... is not
    authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:us-west-2:123456789012:
    table/retail-store-ecs-carts/index/idx_global_customerId because no identity-based policy
    allows the dynamodb:Query action

With an explicit Deny the reason reads ``with an explicit deny in an identity-based policy``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NO_ALLOW = "implicit_deny"
EXPLICIT_DENY = "explicit_deny"

_SENTENCE = re.compile(
    r"User: (?P<principal>arn:[\w-]+:(?:sts|iam)::\d{12}:[^\s]+) is not authorized to perform: "
    r"(?P<action>[\w-]+:[\w*?-]+) on resource: (?P<resource>arn:[^\s]+) "
    r"(?:because no identity-based policy allows the (?P=action) action"
    r"|with an explicit deny in an identity-based policy"
    r"(?P<deny_arn>: arn:[^\s]+)?)"
)
_ASSUMED = re.compile(
    r"^arn:[\w-]+:sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/(?P<session>.+)$"
)


@dataclass(frozen=True)
class AccessDenied:
    """One parsed AccessDenied sentence."""

    principal: str
    action: str
    resource: str
    kind: str  # NO_ALLOW or EXPLICIT_DENY

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
        m = _ASSUMED.match(self.principal)
        return m.group("account") if m else None

    @property
    def explicit(self) -> bool:
        return self.kind == EXPLICIT_DENY


def assumed_role_arn(account_id: str, role_name: str, session_name: str) -> str:
    """The principal ARN a task sees for its task role (session name = task id)."""
    return f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}"


def format_access_denied(principal: str, action: str, resource: str, kind: str) -> str:
    """AWS's sentence for a denied request (``kind``: NO_ALLOW or EXPLICIT_DENY)."""
    head = f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
    if kind == EXPLICIT_DENY:
        return head + "with an explicit deny in an identity-based policy"
    if kind == NO_ALLOW:
        return head + f"because no identity-based policy allows the {action} action"
    raise ValueError(f"kind must be {NO_ALLOW!r} or {EXPLICIT_DENY!r}, not {kind!r}")


def parse_access_denied(text: str) -> AccessDenied | None:
    """Find the first AccessDenied sentence in ``text`` (a log line or a whole report)."""
    m = _SENTENCE.search(text)
    if m is None:
        return None
    explicit = "explicit deny" in m.group(0)
    return AccessDenied(
        principal=m.group("principal"),
        action=m.group("action"),
        resource=m.group("resource"),
        kind=EXPLICIT_DENY if explicit else NO_ALLOW,
    )
