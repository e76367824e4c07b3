"""``sts:AssumeRole`` as AWS answers it: only into a role that exists and trusts the caller.

moto behaviour (AWS-FACTS §11, moto's ``STSBackend.assume_role`` docstring): "the role does not
need to exist"; any ARN gets credentials. AWS refuses instead: AssumeRole "returns a set of
temporary security credentials" only when the role's trust policy allows the caller, and the
caller's identity policies allow ``sts:AssumeRole``
(https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html); otherwise the answer
is HTTP 403 ``AccessDenied``, "User: <caller> is not authorized to perform: sts:AssumeRole on
resource: <role arn>" (the shape of IAM's AccessDenied messages, AWS-FACTS §5).

The lab's callers are its own keys (the workshop participant, whose ``AdministratorAccess``
allows ``sts:AssumeRole``), so the check here is the role's side: the role exists in the
account its ARN names, and a trust statement allows ``sts:AssumeRole`` to the caller's account
(``arn:aws:iam::<account>:root`` or the bare account id), the caller's role, or ``*``, and no
trust statement denies it.
"""

from __future__ import annotations

import json
from typing import Any

from moto.core.exceptions import _RESTError


class AssumeRoleDenied(_RESTError):
    """STS's answer to an AssumeRole it refuses (query protocol, HTTP 403)."""

    code = 403
    include_type_sender = True

    def __init__(self, caller_arn: str, role_arn: str) -> None:
        super().__init__(
            "AccessDenied",
            f"User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: "
            f"{role_arn}",
        )


def install_assume_role_check(sts: Any, caller_arn: str, caller_role_arn: str) -> None:
    """Make this STS backend refuse an AssumeRole its caller could not make on AWS."""
    original = type(sts).assume_role
    caller_account = caller_role_arn.split(":")[4]

    def assume_role(**kwargs: Any) -> Any:
        role_arn = str(kwargs.get("role_arn") or "")
        if not trusts(_trust_policy(role_arn), caller_account, caller_role_arn):
            raise AssumeRoleDenied(caller_arn, role_arn)
        return original(sts, **kwargs)

    sts.assume_role = assume_role


def _trust_policy(role_arn: str) -> dict[str, Any] | None:
    """The trust policy of the role ``role_arn`` names, from moto's IAM (None: no such role)."""
    from moto.backends import get_backend
    from moto.iam.exceptions import NotFoundException

    parts = role_arn.split(":")
    if len(parts) < 6 or not parts[4].isdigit():
        return None
    try:
        iam = get_backend("iam")[parts[4]]["global"]
        role = iam.get_role_by_arn(role_arn)
    except (NotFoundException, KeyError):
        return None
    try:
        document = json.loads(role.assume_role_policy_document)
    except (TypeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def trusts(policy: dict[str, Any] | None, caller_account: str, caller_role_arn: str) -> bool:
    """Whether a trust policy lets ``caller_role_arn`` (in ``caller_account``) assume the role.

    >>> trusts({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
    ...          "Principal": {"AWS": "arn:aws:iam::111122223333:root"}}]},
    ...        "111122223333", "arn:aws:iam::111122223333:role/Admin")
    True
    """
    if policy is None:
        return False
    names = {"*", caller_account, f"arn:aws:iam::{caller_account}:root", caller_role_arn}
    allowed = False
    statements = policy.get("Statement") or []
    for st in statements if isinstance(statements, list) else [statements]:
        if not isinstance(st, dict) or not _assume_action(st.get("Action")):
            continue
        principal = st.get("Principal")
        if principal == "*":
            matches = True
        else:
            aws = principal.get("AWS") if isinstance(principal, dict) else None
            values = aws if isinstance(aws, list) else [aws]
            matches = any(v in names for v in values)
        if matches and st.get("Effect") == "Deny":
            return False
        allowed = allowed or (matches and st.get("Effect") == "Allow")
    return allowed


def _assume_action(action: Any) -> bool:
    actions = action if isinstance(action, list) else [action]
    return any(str(a).lower() in ("sts:assumerole", "sts:*", "*") for a in actions)
