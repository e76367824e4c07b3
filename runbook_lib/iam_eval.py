"""Decide what identity-based policies allow, the way IAM does within one account.

The evaluation logic of the IAM User Guide ("Policy evaluation logic"), for the identity-based
policies of one principal: an explicit ``Deny`` in any statement wins; otherwise any ``Allow``
allows; otherwise the request is implicitly denied. Several policies are simply more statements.

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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
    "Decision",
    "DecisionKind",
    "Explanation",
    "PolicyError",
    "StatementRef",
    "evaluate",
    "explain",
]

DecisionKind = Literal["allowed", "implicit_deny", "explicit_deny"]
Document = Mapping[str, Any] | str
Policies = Mapping[str, Document] | Sequence[Document | tuple[str, Document]]

_VERSIONS = ("2012-10-17", "2008-10-17")
_DOC_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_SID = re.compile(r"[A-Za-z0-9]*")


@dataclass(frozen=True)
class StatementRef:
    """Which statement of which policy took part in a decision."""

    policy: str
    index: int
    sid: str | None
    effect: str

    def __str__(self) -> str:
        where = repr(self.sid) if self.sid else str(self.index)
        return f"{self.policy}, statement {where}"


@dataclass(frozen=True)
class Decision:
    """IAM's answer for one request, with the statements that decided it.

    ``statements``: the denying statements for ``explicit_deny``, the allowing ones for
    ``allowed``, none for ``implicit_deny``.
    """

    action: str
    resource: str
    decision: DecisionKind
    statements: tuple[StatementRef, ...] = ()

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
        return f"no statement allows {self.action} on {self.resource}"


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
        return [
            (r.action, r.resource, r.decision, "; ".join(map(str, r.statements)) or "-")
            for r in self.rows
        ]

    def _summary(self) -> str:
        total = len(self.rows)
        if self.all_allowed:
            return f"all {total} requests allowed"
        return f"{len(self.denied)} of {total} requests not allowed"

    def to_frame(self) -> pd.DataFrame:
        """One row per request: action, resource, decision, decided by."""
        import pandas as pd

        return pd.DataFrame(self._records(), columns=list(_COLUMNS))

    def _repr_html_(self) -> str:
        table = self.to_frame().to_html(index=False, escape=True)
        return f"{table}\n<p>{self._summary()}</p>"

    def __str__(self) -> str:
        records = [_COLUMNS, *self._records()]
        widths = [max(len(rec[i]) for rec in records) for i in range(len(_COLUMNS))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(rec, widths, strict=True)).rstrip()
            for rec in records
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*lines, self._summary()])


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
    policies: Policies, action: str, resource: str, context: Mapping[str, Any] | None = None
) -> Decision:
    """Decide one request (``action`` on ``resource``) against every statement of ``policies``.

    ``policies``: ``{name: document}``, or a list of documents or ``(name, document)`` pairs;
    a document is a dict or JSON text. ``context``: request-context keys for conditions and
    policy variables, e.g. ``{"aws:SecureTransport": True}``. Raises :class:`PolicyError` for a
    document IAM would reject.
    """
    return _decide(_load(policies), action, resource, RequestContext(context))


def explain(
    policies: Policies,
    requests: Sequence[tuple[str, str]],
    context: Mapping[str, Any] | None = None,
) -> Explanation:
    """Decide each ``(action, resource)`` in ``requests``; the documents are parsed once.

    >>> explain({"P": {"Statement": {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}}},
    ...         [("s3:GetObject", "arn:aws:s3:::b/k")]).all_allowed
    True
    """
    statements = _load(policies)
    ctx = RequestContext(context)
    return Explanation(tuple(_decide(statements, a, r, ctx) for a, r in requests))


def _decide(
    statements: Sequence[_Statement], action: str, resource: str, ctx: RequestContext
) -> Decision:
    matched = [s.ref for s in statements if s.applies(action, resource, ctx)]
    denies = tuple(ref for ref in matched if ref.effect == "Deny")
    if denies:
        return Decision(action, resource, "explicit_deny", denies)
    if matched:
        return Decision(action, resource, "allowed", tuple(matched))
    return Decision(action, resource, "implicit_deny")


def _load(policies: Policies) -> list[_Statement]:
    return [s for name, doc in _named(policies) for s in _parse_document(name, doc)]


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


def _parse_document(name: str, doc: Any) -> list[_Statement]:
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
        _parse_statement(name, i, s, version == "2012-10-17") for i, s in enumerate(listed)
    ]
    sids = [s.ref.sid for s in statements if s.ref.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError(f"{name}: statement ids (Sid) must be unique within a policy")
    return statements


def _parse_statement(policy: str, index: int, stmt: Any, variables: bool) -> _Statement:
    where = f"{policy}, statement {index}"
    if not isinstance(stmt, Mapping):
        raise PolicyError(f"{where}: a statement is a JSON object, not {stmt!r}")
    if "Principal" in stmt or "NotPrincipal" in stmt:
        raise PolicyError(f"{where}: an identity-based policy has no Principal/NotPrincipal")
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
        ref=StatementRef(policy, index, sid or None, effect),
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
