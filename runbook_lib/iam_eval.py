"""Decide what a principal's policies allow, the way IAM does within one account.

The evaluation logic of the IAM User Guide ("Policy evaluation logic"), for the identity-based
policies of one principal: an explicit ``Deny`` in any statement wins; otherwise any ``Allow``
allows; otherwise the request is implicitly denied. Several policies are simply more statements.
Permissions boundaries, service control policies and session policies limit that (below).

>>> seed = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "dynamodb:*",
...         "Resource": "arn:aws:dynamodb:us-west-2:123456789012:table/*"}}
>>> d = evaluate({"CartsDynamoPolicy": seed}, "dynamodb:Query",
...              "arn:aws:dynamodb:us-west-2:123456789012:table/carts/index/by-customer")
>>> d.reason
'allowed by CartsDynamoPolicy, statement 0'

Matching: actions case-insensitively, resources case-sensitively, both with ``*`` (any run of
characters, ``/`` and ``:`` included) and ``?`` (one character). Documents are validated as
IAM validates them (``Effect``, exactly one of ``Action``/``NotAction`` and of
``Resource``/``NotResource``, no ``Principal``, ``Version`` 2012-10-17 or 2008-10-17, unique
alphanumeric ``Sid``); anything IAM would reject raises :class:`PolicyError`. Policy variables
(``${aws:username}``) are substituted from the request context under ``Version`` 2012-10-17 only;
without a ``Version`` (which means 2008-10-17) they are plain text, as in IAM. Conditions: see
:mod:`runbook_lib.iam_conditions`.

Policy types that limit the identity-based policies (keyword arguments of :func:`evaluate` and
:func:`explain`; each optional, and absent means "this principal has none"), decided as the
IAM User Guide's "Policy evaluation logic" (same account) orders them:

1. An explicit ``Deny`` in any policy of any type wins. AWS names only one type in its
   sentence and does not say which; here the first in the order below is named.
2. ``scps``: the service control policies of AWS Organizations, one entry per level from the
   root to the account (root, OUs, account; the simulator's ``OrderedOrganizationPolicyInputList``).
   Every level must allow the request. Leave out for an account outside an organization, for the
   management account and for service-linked roles, which SCPs do not limit.
3. ``policies`` (identity-based): some statement must allow the request. Only they grant.
4. ``boundary``: the role's or user's permissions boundary (one managed policy) must allow it
   too: "the intersection of the two categories". It grants nothing on its own.
5. ``session_policies``: the policies passed when the role was assumed (inline and managed);
   one of them must allow it too. Empty means no session policy, as AWS treats it.

Resource-based policies are not evaluated (the carts table has none, and IAM's simulator does
not simulate them for roles either). The :class:`Decision` says which type decided
(:attr:`Decision.policy_type`, a :class:`~runbook_lib.access_denied.PolicyType`) and, like the
simulator's ``PermissionsBoundaryDecisionDetail`` and ``OrganizationsDecisionDetail``, whether the
boundary and the organization allowed the request; :meth:`Decision.sentence` is AWS's
AccessDenied sentence for it.

Public API: :func:`evaluate`, :func:`explain`, :class:`Decision`, :class:`Explanation`,
:class:`StatementRef`, :class:`PolicyType`, :data:`DecisionKind`, :class:`PolicyError`, and the
input types :data:`Policies` and :data:`Boundary`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from runbook_lib.access_denied import PolicyType, advise_denial, format_access_denied
from runbook_lib.blocks import Block, Sentence, Table
from runbook_lib.iam_conditions import (
    Condition,
    Pattern,
    PolicyError,
    RequestContext,
    parse_conditions,
    parse_pattern,
)
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Boundary",
    "Decision",
    "DecisionKind",
    "Explanation",
    "Policies",
    "PolicyError",
    "PolicyType",
    "StatementRef",
    "evaluate",
    "explain",
]

DecisionKind = Literal["allowed", "implicit_deny", "explicit_deny"]
Document = Mapping[str, Any] | str
Policies = Mapping[str, Document] | Sequence[Document | tuple[str, Document]]
#: One permissions boundary: a document (dict or JSON text), or ``{name: document}`` /
#: ``[(name, document)]`` holding exactly one, to name it (its ARN, for the sentence's suffix).
Boundary = Policies | Document

_VERSIONS = ("2012-10-17", "2008-10-17")
_DOC_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_SID = re.compile(r"[A-Za-z0-9]*")


@dataclass(frozen=True)
class StatementRef:
    """Which statement of which policy took part in a decision.

    ``policy_type``: the kind of policy it belongs to; ``level``: for a service control policy,
    the organization level it is attached to (1 is the root).
    """

    policy: str
    index: int
    sid: str | None
    effect: str
    policy_type: PolicyType = PolicyType.IDENTITY
    level: int | None = None

    def __str__(self) -> str:
        where = repr(self.sid) if self.sid else str(self.index)
        return f"{_label(self.policy, self.policy_type, self.level)}, statement {where}"


@dataclass(frozen=True)
class Decision:
    """IAM's answer for one request, with the statements that decided it.

    ``statements``: the denying statements (of every type) for ``explicit_deny``, the allowing
    ones (identity, boundary, session) for ``allowed``, none for ``implicit_deny``.
    ``policy_type``: the type that decided: for a denial the one AWS's sentence names (the type
    of the first denying statement, or the first type that allows nothing); for ``allowed``,
    :attr:`PolicyType.IDENTITY`, the type that granted. ``level``: for an SCP implicit deny, the
    organization level (1 is the root) whose policies allow nothing here.
    ``allowed_by_boundary`` / ``allowed_by_organizations``: as IAM's simulator reports them
    (False: not allowed, explicitly or implicitly), None when there is no boundary / no SCP.
    """

    action: str
    resource: str
    decision: DecisionKind
    statements: tuple[StatementRef, ...] = ()
    policy_type: PolicyType = PolicyType.IDENTITY
    level: int | None = None
    allowed_by_boundary: bool | None = None
    allowed_by_organizations: bool | None = None

    @property
    def allowed(self) -> bool:
        """True when the request is allowed."""
        return self.decision == "allowed"

    @property
    def reason(self) -> str:
        """One line a person can read, e.g. ``allowed by CartsDynamoPolicy, statement 0``."""
        refs = "; ".join(str(ref) for ref in self.statements)
        if self.decision == "allowed":
            return f"allowed by {refs}"
        if self.decision == "explicit_deny":
            return f"denied explicitly by {refs}"
        on = f"{self.action} on {self.resource}"
        if self.policy_type == PolicyType.IDENTITY:
            return f"no statement allows {on}"
        if self.policy_type == PolicyType.SCP:
            return f"no service control policy at organization level {self.level} allows {on}"
        return f"no {self.policy_type.value} statement allows {on}"

    @property
    def decided_by(self) -> str:
        """The "decided by" cell: the statements, or which type allowed nothing (``-`` when no
        identity-based policy allows, as before boundaries were known)."""
        if self.statements:
            return "; ".join(map(str, self.statements))
        if self.allowed or self.policy_type == PolicyType.IDENTITY:
            return "-"
        at = f" at level {self.level}" if self.level is not None else ""
        return f"{self.policy_type.value}{at}: no Allow"

    @property
    def policy_arn(self) -> str | None:
        """For an explicit deny, the denying policy's name if it is an ARN (a managed policy,
        an SCP, a boundary): the ``: <ARN>`` AWS appends to its sentence. Else None."""
        if self.decision != "explicit_deny":
            return None
        for ref in self.statements:
            if ref.policy_type == self.policy_type and ref.policy.startswith("arn:"):
                return ref.policy
        return None

    def sentence(self, principal: str, *, with_policy_arn: bool = True) -> str:
        """AWS's AccessDenied sentence for this denial, as ``principal`` would receive it.

        Raises ValueError for an allowed request. ``with_policy_arn``: append ``: <ARN>`` to an
        explicit deny whose policy is named by its ARN, as AWS does within an account.
        """
        kind = self.decision
        if kind == "allowed":
            raise ValueError(f"{self.action} on {self.resource} is allowed: there is no denial")
        return format_access_denied(
            principal,
            self.action,
            self.resource,
            kind,
            policy_type=self.policy_type,
            policy_arn=self.policy_arn if with_policy_arn else None,
        )

    def advice(self, role_name: str | None = None) -> str:
        """One sentence on what would fix this denial (empty when allowed); see
        :func:`runbook_lib.access_denied.advise_denial`."""
        kind = self.decision
        if kind == "allowed":
            return ""
        return advise_denial(self.policy_type, kind, self.action, role_name)


_COLUMNS = ("action", "resource", "decision", "decided by")


@dataclass(frozen=True)
class Explanation(Shows):
    """The decisions for a list of requests; renders as a table in JupyterLab and in logs."""

    rows: tuple[Decision, ...]

    @property
    def all_allowed(self) -> bool:
        """True when every request is allowed (and so for no requests at all)."""
        return all(row.allowed for row in self.rows)

    @property
    def denied(self) -> tuple[Decision, ...]:
        """The requests that are not allowed, in order."""
        return tuple(row for row in self.rows if not row.allowed)

    def _records(self) -> list[tuple[str, str, str, str]]:
        return [(r.action, r.resource, r.decision, r.decided_by) for r in self.rows]

    def _summary(self) -> str:
        total = len(self.rows)
        if self.all_allowed:
            return f"all {total} requests allowed"
        return f"{len(self.denied)} of {total} requests not allowed"

    def to_frame(self) -> pd.DataFrame:
        """One row per request: action, resource, decision, decided by."""
        import pandas as pd

        return pd.DataFrame(self._records(), columns=list(_COLUMNS))

    def blocks(self) -> list[Block]:
        return [Table(self.to_frame()), Sentence(self._summary())]


@dataclass(frozen=True)
class _Statement:
    ref: StatementRef
    actions: tuple[Pattern, ...]
    not_action: bool
    resources: tuple[Pattern, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    def applies(self, action: str, resource: str, ctx: RequestContext) -> bool:
        hit = any(p.matches(action, ctx, ignore_case=True) for p in self.actions)
        if hit == self.not_action:
            return False
        hit = any(p.matches(resource, ctx) for p in self.resources)
        if hit == self.not_resource:
            return False
        return all(c.holds(ctx) for c in self.conditions)


def evaluate(
    policies: Policies,
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
    *,
    boundary: Boundary | None = None,
    scps: Sequence[Policies] | None = None,
    session_policies: Policies | None = None,
) -> Decision:
    """Decide one request (``action`` on ``resource``) as IAM would for this principal.

    ``policies``: the identity-based policies, ``{name: document}``, or a list of documents or
    ``(name, document)`` pairs; a document is a dict or JSON text. ``context``: request-context
    keys for conditions and policy variables, e.g. ``{"aws:SecureTransport": True}``.
    ``boundary``, ``scps`` (one :data:`Policies` per organization level, root first) and
    ``session_policies``: see the module docstring; each is optional. Raises
    :class:`PolicyError` for a document IAM would reject.

    >>> allow_all = {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
    >>> s3_only = {"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}
    >>> d = evaluate({"Admin": allow_all}, "dynamodb:Query", "arn:aws:dynamodb:::t",
    ...              boundary={"Boundary": s3_only})
    >>> d.decision, d.policy_type.value
    ('implicit_deny', 'permissions boundary')
    """
    policy_set = _load_set(policies, boundary, scps, session_policies)
    return _decide(policy_set, action, resource, RequestContext(context))


def explain(
    policies: Policies,
    requests: Sequence[tuple[str, str]],
    context: Mapping[str, Any] | None = None,
    *,
    boundary: Boundary | None = None,
    scps: Sequence[Policies] | None = None,
    session_policies: Policies | None = None,
) -> Explanation:
    """Decide each ``(action, resource)`` in ``requests``; the documents are parsed once.

    Keyword arguments as for :func:`evaluate`.

    >>> explain({"P": {"Statement": {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}}},
    ...         [("s3:GetObject", "arn:aws:s3:::b/k")]).all_allowed
    True
    """
    policy_set = _load_set(policies, boundary, scps, session_policies)
    ctx = RequestContext(context)
    return Explanation(tuple(_decide(policy_set, a, r, ctx) for a, r in requests))


@dataclass(frozen=True)
class _PolicySet:
    """Every statement that applies to one principal, by policy type (None: type absent)."""

    identity: tuple[_Statement, ...]
    boundary: tuple[_Statement, ...] | None
    scp_levels: tuple[tuple[_Statement, ...], ...] | None
    session: tuple[_Statement, ...] | None


def _decide(ps: _PolicySet, action: str, resource: str, ctx: RequestContext) -> Decision:
    def matching(statements: Sequence[_Statement]) -> list[StatementRef]:
        return [s.ref for s in statements if s.applies(action, resource, ctx)]

    def allows(refs: list[StatementRef]) -> bool:
        return any(r.effect == "Allow" for r in refs) and all(r.effect == "Allow" for r in refs)

    identity = matching(ps.identity)
    boundary = None if ps.boundary is None else matching(ps.boundary)
    session = None if ps.session is None else matching(ps.session)
    levels = None if ps.scp_levels is None else [matching(lv) for lv in ps.scp_levels]

    def decision(
        kind: DecisionKind,
        refs: Sequence[StatementRef] = (),
        ptype: PolicyType = PolicyType.IDENTITY,
        level: int | None = None,
    ) -> Decision:
        return Decision(
            action,
            resource,
            kind,
            tuple(refs),
            ptype,
            level,
            allowed_by_boundary=None if boundary is None else allows(boundary),
            allowed_by_organizations=None if levels is None else all(map(allows, levels)),
        )

    # 1. Any explicit deny; the type named is the first in the flowchart's order.
    staged = [
        (PolicyType.SCP, [r for level in levels or [] for r in level]),
        (PolicyType.IDENTITY, identity),
        (PolicyType.BOUNDARY, boundary or []),
        (PolicyType.SESSION, session or []),
    ]
    denies = [(ptype, r) for ptype, refs in staged for r in refs if r.effect == "Deny"]
    if denies:
        return decision("explicit_deny", [r for _, r in denies], denies[0][0])
    # 2-5. With no deny left, a type that applies must have a matching statement (an Allow).
    for i, level in enumerate(levels or [], start=1):
        if not level:
            return decision("implicit_deny", ptype=PolicyType.SCP, level=i)
    if not identity:
        return decision("implicit_deny")
    if boundary is not None and not boundary:
        return decision("implicit_deny", ptype=PolicyType.BOUNDARY)
    if session is not None and not session:
        return decision("implicit_deny", ptype=PolicyType.SESSION)
    return decision("allowed", identity + (boundary or []) + (session or []))


def _load_set(
    policies: Policies,
    boundary: Boundary | None,
    scps: Sequence[Policies] | None,
    session_policies: Policies | None,
) -> _PolicySet:
    identity = tuple(_load(policies, PolicyType.IDENTITY))
    bounds = None if boundary is None else tuple(_load_boundary(boundary))
    session = None
    if session_policies is not None and _named(session_policies):
        session = tuple(_load(session_policies, PolicyType.SESSION))
    levels = None
    if scps is not None:
        if isinstance(scps, str | bytes | Mapping):
            raise PolicyError(
                "scps is a list with one entry per organization level (root first), each "
                "{name: document} or a list of documents"
            )
        if len(scps) > 0:
            levels = tuple(_load_level(level, i) for i, level in enumerate(scps, start=1))
    return _PolicySet(identity, bounds, levels, session)


def _load_level(level: Policies, index: int) -> tuple[_Statement, ...]:
    if not _named(level):
        raise PolicyError(
            f"service control policies, level {index}: no policy; AWS Organizations keeps at "
            "least one SCP attached to the root, each OU and each account"
        )
    return tuple(_load(level, PolicyType.SCP, level=index))


def _load_boundary(boundary: Boundary) -> list[_Statement]:
    if isinstance(boundary, str) or (isinstance(boundary, Mapping) and "Statement" in boundary):
        named: list[tuple[str, Document]] = [(PolicyType.BOUNDARY.value, boundary)]
    else:
        named = _named(boundary)
    if len(named) != 1:
        raise PolicyError(
            "a principal has at most one permissions boundary (one managed policy): pass one "
            f"document, or None for no boundary, not {len(named)}"
        )
    return _load(named, PolicyType.BOUNDARY)


def _load(policies: Policies, ptype: PolicyType, level: int | None = None) -> list[_Statement]:
    return [s for name, doc in _named(policies) for s in _parse_document(name, doc, ptype, level)]


def _named(policies: Policies) -> list[tuple[str, Document]]:
    if isinstance(policies, str | bytes):
        raise PolicyError("pass policies as {name: document} or a list of documents, not a string")
    if isinstance(policies, Mapping):
        if "Statement" in policies:
            raise PolicyError("this is one policy document: pass {name: document} or [document]")
        named = [(str(name), doc) for name, doc in policies.items()]
    else:
        named = []
        for i, item in enumerate(policies):
            if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
                named.append((item[0], item[1]))
            else:
                named.append((f"policy {i}", item))
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise PolicyError(f"two policies are named {name!r}")
        seen.add(name)
    return named


def _parse_document(
    name: str, doc: Any, ptype: PolicyType = PolicyType.IDENTITY, level: int | None = None
) -> list[_Statement]:
    if isinstance(doc, str):
        return list(_parse_text(name, doc, ptype, level))
    return _parse_any(name, doc, ptype, level)


@lru_cache(maxsize=1024)
def _parse_text(
    name: str, doc: str, ptype: PolicyType, level: int | None
) -> tuple[_Statement, ...]:
    """A policy given as JSON text, parsed once: statements are frozen, and a caller that
    decides many requests against the same policies (the lab's carts app, a role's every call)
    would otherwise parse the same text each time. A document that fails raises each time."""
    return tuple(_parse_any(name, doc, ptype, level))


def _parse_any(
    name: str, doc: Any, ptype: PolicyType = PolicyType.IDENTITY, level: int | None = None
) -> list[_Statement]:
    policy, name = name, _label(name, ptype, level)
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{name}: a policy document is a JSON object, not {type(doc).__name__}")
    _no_unknown_keys(doc, _DOC_KEYS, name)
    version = doc.get("Version", "2008-10-17")
    if version not in _VERSIONS:
        raise PolicyError(f"{name}: Version must be one of {', '.join(_VERSIONS)}, not {version!r}")
    raw = doc.get("Statement")
    listed = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(listed, list) or not listed:
        raise PolicyError(f"{name}: Statement must be an object or a non-empty list of objects")
    statements = [
        _parse_statement(policy, i, s, version == "2012-10-17", ptype, level)
        for i, s in enumerate(listed)
    ]
    sids = [s.ref.sid for s in statements if s.ref.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError(f"{name}: statement ids (Sid) must be unique within a policy")
    return statements


def _label(policy: str, ptype: PolicyType, level: int | None) -> str:
    """How errors name a policy: as :class:`StatementRef` prints it, without the statement."""
    if ptype == PolicyType.IDENTITY:
        return policy
    # A bare boundary document is named by its type alone: "permissions boundary".
    named = ptype.value if policy == ptype.value else f"{ptype.value} {policy}"
    return named + (f" (level {level})" if level is not None else "")


def _parse_statement(
    policy: str,
    index: int,
    stmt: Any,
    variables: bool,
    ptype: PolicyType = PolicyType.IDENTITY,
    level: int | None = None,
) -> _Statement:
    where = f"{_label(policy, ptype, level)}, statement {index}"
    if not isinstance(stmt, Mapping):
        raise PolicyError(f"{where}: a statement is a JSON object, not {stmt!r}")
    if "Principal" in stmt or "NotPrincipal" in stmt:
        raise PolicyError(f"{where}: {ptype.article} {ptype.value} has no Principal/NotPrincipal")
    _no_unknown_keys(stmt, _STATEMENT_KEYS, where)
    effect = stmt.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be 'Allow' or 'Deny', not {effect!r}")
    sid = stmt.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not _SID.fullmatch(sid)):
        raise PolicyError(f"{where}: Sid must be letters and digits only, not {sid!r}")
    action_key = _exactly_one(stmt, "Action", "NotAction", where)
    resource_key = _exactly_one(stmt, "Resource", "NotResource", where)
    actions = _strings(stmt[action_key], f"{where}: {action_key}")
    for act in actions:
        if act != "*" and (act.count(":") != 1 or act.startswith(":")):
            raise PolicyError(f"{where}: action {act!r} must be '*' or 'service:action'")
    resources = _strings(stmt[resource_key], f"{where}: {resource_key}")
    for res in resources:
        if res != "*" and not res.startswith("arn:"):
            raise PolicyError(f"{where}: resource {res!r} must be an ARN or '*'")
    try:
        conditions = parse_conditions(stmt.get("Condition", {}), variables)
        resource_patterns = tuple(parse_pattern(r, variables) for r in resources)
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    return _Statement(
        ref=StatementRef(policy, index, sid or None, effect, ptype, level),
        actions=tuple(parse_pattern(a, False) for a in actions),
        not_action=action_key == "NotAction",
        resources=resource_patterns,
        not_resource=resource_key == "NotResource",
        conditions=conditions,
    )


def _no_unknown_keys(obj: Mapping[Any, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(map(repr, set(obj) - set(allowed)))
    if unknown:
        raise PolicyError(f"{where}: unknown element(s) {', '.join(unknown)}")


def _exactly_one(stmt: Mapping[str, Any], key: str, not_key: str, where: str) -> str:
    present = [k for k in (key, not_key) if k in stmt]
    if len(present) != 1:
        raise PolicyError(f"{where}: a statement needs exactly one of {key} and {not_key}")
    return present[0]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not listed or not all(isinstance(v, str) for v in listed):
        raise PolicyError(f"{where} must be a string or a non-empty list of strings")
    return tuple(listed)
