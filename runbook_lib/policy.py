"""Policy documents: render the carts policy, normalise, hash, diff and lint documents. Pure.

Partitions: every ARN rendered here carries the region's partition
(:func:`runbook_lib.partitions.partition_for_region`). The workshop's heredoc writes
``arn:aws:`` literally; in another partition a learner must write ``arn:aws-cn:`` (China) or
``arn:aws-us-gov:`` (GovCloud) instead, or the policy matches nothing there. So the workshop
scope renders the heredoc byte for byte with one change outside the ``aws`` partition: its
``arn:aws:`` becomes ``arn:<partition>:`` (see :func:`workshop_policy_text`). :func:`lint` calls
an ARN whose partition is not the region's an error.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from string import Template
from typing import Any

from runbook_lib.blocks import Block, Heading, Pre, Sentence, Tone, items
from runbook_lib.carts import CARTS_CALLS, index_arn, table_arn
from runbook_lib.params import Params
from runbook_lib.partitions import UnknownRegion, partition_for_region
from runbook_lib.shows import Shows

#: The workshop's heredoc, exactly as the learner types it (``$AWS_REGION``/``$ACCOUNT_ID`` are
#: filled by the shell). Rendering it byte for byte keeps the notebook and the terminal in step;
#: outside the ``aws`` partition only its ``arn:aws:`` changes (see :func:`workshop_policy_text`).
WORKSHOP_POLICY_TEMPLATE = """\
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "dynamodb:*"
            ],
            "Resource": [
                "arn:aws:dynamodb:$AWS_REGION:$ACCOUNT_ID:table/*"
            ]
        }
    ]
}
"""

POLICY_FILE = "carts-dynamodb-policy.json"

#: IAM's quota for a role's inline policies together, counted without whitespace.
INLINE_POLICY_QUOTA = 10_240


def workshop_policy_text(region: str, account_id: str, *, partition: str | None = None) -> str:
    """The seed's policy file, as the heredoc writes it (empty values stay empty, like a shell).

    In the ``aws`` partition the text is the heredoc's byte for byte. In another partition
    (``partition``, else the region's) the one ``arn:aws:`` becomes ``arn:<partition>:``, the
    edit a learner there must make: the heredoc's ARN would match nothing in ``aws-cn``. An empty
    region (an unset ``$AWS_REGION``) keeps the heredoc's ``arn:aws:``.

    >>> '"arn:aws-cn:dynamodb:cn-north-1:123456789012:table/*"' in workshop_policy_text(
    ...     "cn-north-1", "123456789012")
    True
    """
    text = Template(WORKSHOP_POLICY_TEMPLATE).substitute(AWS_REGION=region, ACCOUNT_ID=account_id)
    if partition is None:
        partition = partition_for_region(region) if region else "aws"
    if partition != "aws":
        text = text.replace('"arn:aws:dynamodb:', f'"arn:{partition}:dynamodb:', 1)
    return text


def least_privilege_document(
    region: str, account_id: str, table: str, index: str
) -> dict[str, Any]:
    """Only what carts calls (:data:`runbook_lib.carts.CARTS_CALLS`), only on its table and index."""
    on_table = [c.action for c in CARTS_CALLS if c.target == "table"]
    on_index = [c.action for c in CARTS_CALLS if c.target == "index"]
    statements: list[dict[str, Any]] = []
    if on_table:
        statements.append(
            {
                "Sid": "CartsItems",
                "Effect": "Allow",
                "Action": on_table,
                "Resource": table_arn(region, account_id, table),
            }
        )
    if on_index:
        statements.append(
            {
                "Sid": "CartsCustomerIndex",
                "Effect": "Allow",
                "Action": on_index,
                "Resource": index_arn(region, account_id, table, index),
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass(frozen=True)
class RenderedPolicy(Shows):
    """The policy the runbook will attach, with everything needed to show and write it."""

    name: str
    role: str
    scope: str
    text: str

    @property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed

    @property
    def sha256(self) -> str:
        return policy_hash(self.document)

    @property
    def cli_command(self) -> str:
        """The equivalent ``aws`` command (the document saved as :data:`POLICY_FILE`)."""
        return put_role_policy_command(self.role, self.name, f"file://{POLICY_FILE}")

    def blocks(self) -> list[Block]:
        return [
            Sentence(
                f"Policy {self.name} for role {self.role} (scope {self.scope}, "
                f"sha256 {self.sha256[:12]}):"
            ),
            Pre(self.text),
            Heading("Equivalent command:"),
            Pre(self.cli_command),
        ]


def render_policy(params: Params, account_id: str) -> RenderedPolicy:
    """Render the policy ``params.policy_scope`` asks for, for ``account_id``."""
    if params.policy_scope == "workshop":
        text = workshop_policy_text(params.region, account_id)
    else:
        doc = least_privilege_document(params.region, account_id, params.table, params.index)
        text = json.dumps(doc, indent=4) + "\n"
    return RenderedPolicy(
        name=params.policy_name, role=params.task_role, scope=params.policy_scope, text=text
    )


def put_role_policy_command(role: str, name: str, document_arg: str) -> str:
    """``aws iam put-role-policy`` for ``role``/``name`` (``document_arg``: file:// or JSON)."""
    return (
        f"aws iam put-role-policy --role-name {shlex.quote(role)} "
        f"--policy-name {shlex.quote(name)} --policy-document {shlex.quote(document_arg)}"
    )


def delete_role_policy_command(role: str, name: str) -> str:
    return f"aws iam delete-role-policy --role-name {shlex.quote(role)} --policy-name {shlex.quote(name)}"


# --- normalising, hashing, diffing --------------------------------------------------------------

_LISTY = ("Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal")


def parse_document(doc: dict[str, Any] | str) -> dict[str, Any]:
    """A document as a dict (IAM returns URL-decoded JSON text through boto3)."""
    if isinstance(doc, str):
        parsed = json.loads(doc)
        if not isinstance(parsed, dict):
            raise ValueError("a policy document must be a JSON object")
        return parsed
    return doc


def _norm(value: Any, key: str = "") -> Any:
    if key == "Statement":
        items = [_norm(v) for v in (value if isinstance(value, list) else [value])]
        return sorted(items, key=lambda s: json.dumps(s, sort_keys=True))
    if isinstance(value, dict):
        return {k: _norm(v, k) for k, v in sorted(value.items())}
    if isinstance(value, str) and key in _LISTY:
        return [value]
    if isinstance(value, list):
        items = [_norm(v) for v in value]
        if all(isinstance(v, str) for v in items):
            return sorted(set(items))
        return items
    return value


def normalise(doc: dict[str, Any] | str) -> dict[str, Any]:
    """A canonical form: keys sorted, ``Statement`` a sorted list, action/resource/principal
    values sorted lists without repeats. Two documents IAM treats alike normalise alike."""
    out: dict[str, Any] = _norm(parse_document(doc))
    return out


def same_policy(a: dict[str, Any] | str, b: dict[str, Any] | str) -> bool:
    return normalise(a) == normalise(b)


def policy_hash(doc: dict[str, Any] | str) -> str:
    """sha256 of the normalised, compact JSON."""
    canon = json.dumps(normalise(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def pretty(doc: dict[str, Any] | str) -> str:
    return json.dumps(parse_document(doc), indent=4, sort_keys=False) + "\n"


def diff(old: dict[str, Any] | str | None, new: dict[str, Any] | str, name: str) -> str:
    """A unified diff of the normalised documents (empty when they are the same)."""
    before = [] if old is None else json.dumps(normalise(old), indent=2).splitlines(keepends=True)
    after = json.dumps(normalise(new), indent=2).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"{name} (now)", f"{name} (after)", n=3))


def size_without_whitespace(doc: dict[str, Any] | str) -> int:
    """IAM's count for the inline-policy quota: characters outside JSON whitespace."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return len(re.sub(r"\s+", "", text))


# --- lint ----------------------------------------------------------------------------------------


class Level(StrEnum):
    """A lint finding's level, the word shown in front of it. An error stops the run before any
    write; a warning or a note leaves the choice to the reader. (A StrEnum: the record holds the
    word itself.)"""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass(frozen=True)
class LintReport(Shows):
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == Level.ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors

    def blocks(self) -> list[Block]:
        if not self.findings:
            return [Sentence("Lint: no findings.", "ok")]
        tones: dict[Level, Tone] = {Level.ERROR: "fail", Level.WARNING: "warn", Level.INFO: "info"}
        found = [Sentence(f.message, tones[f.level], f.level.capitalize()) for f in self.findings]
        return [Sentence("Lint:"), items(found)]


def _partition_findings(
    statement: dict[str, Any], partition: str, region: str, where: str
) -> list[Finding]:
    """An error for each ARN (Resource or NotResource) in another partition than ``region``'s:
    IAM compares the partition like any other text, so such an ARN matches nothing."""
    out: list[Finding] = []
    for key in ("Resource", "NotResource"):
        values = statement.get(key, [])
        for value in [values] if isinstance(values, str) else values:
            if not isinstance(value, str) or not value.startswith("arn:"):
                continue
            part = value.split(":", 2)[1]
            if "*" in part or "?" in part or part == partition:
                continue
            out.append(
                Finding(
                    Level.ERROR,
                    f"{where}: {key} {value!r} is in partition {part!r}, but region {region} is "
                    f"in {partition!r}: write arn:{partition}: or it matches nothing.",
                )
            )
    return out


_DDB_ARN = re.compile(
    r"^arn:(?P<part>[^:]*):dynamodb:(?P<region>[^:]*):(?P<account>[^:]*):(?P<rest>.*)$"
)


def lint(
    doc: dict[str, Any] | str,
    params: Params,
    account_id: str,
    other_inline: dict[str, Any] | None = None,
) -> LintReport:
    """Findings a careful engineer would raise before writing ``doc`` to the task role.

    ``other_inline``: the role's other inline policies (name -> document), for the size quota.
    """
    d = parse_document(doc)
    findings: list[Finding] = []
    try:
        partition: str | None = partition_for_region(params.region)
    except UnknownRegion as exc:
        partition = None
        findings.append(Finding(Level.ERROR, f"{exc}, so no ARN can be checked against it."))
    statements = d.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for i, st in enumerate(statements):
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else list(actions)
        resources = st.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else list(resources)
        where = f"statement {i}"
        if partition is not None:
            findings += _partition_findings(st, partition, params.region, where)
        if st.get("Effect") != "Allow":
            continue
        for a in actions:
            if a == "*" or a.endswith(":*"):
                findings.append(
                    Finding(
                        Level.WARNING,
                        f"{where}: action {a!r} grants every {a.split(':')[0] if ':' in a else 'AWS'} "
                        "action, including DeleteTable and UpdateTable; carts needs only "
                        + ", ".join(c.operation for c in CARTS_CALLS)
                        + ".",
                    )
                )
        if "NotAction" in st or "NotResource" in st:
            findings.append(
                Finding(Level.WARNING, f"{where}: Allow with NotAction/NotResource is broad.")
            )
        for r in resources:
            if r == "*":
                findings.append(
                    Finding(Level.WARNING, f"{where}: resource '*' covers every resource.")
                )
                continue
            m = _DDB_ARN.match(r)
            if not m:
                continue
            if not m["region"] or not m["account"]:
                findings.append(
                    Finding(
                        Level.ERROR,
                        f"{where}: resource {r!r} has an empty region or account (an unset shell "
                        "variable?) and matches nothing.",
                    )
                )
                continue
            if m["account"] not in ("*", account_id):
                findings.append(
                    Finding(
                        Level.ERROR,
                        f"{where}: resource {r!r} names account {m['account']}, not {account_id}.",
                    )
                )
            if m["region"] not in ("*", params.region):
                findings.append(
                    Finding(
                        Level.ERROR,
                        f"{where}: resource {r!r} names region {m['region']}, not {params.region}.",
                    )
                )
            if m["rest"].startswith("table/*") or m["rest"] == "*":
                findings.append(
                    Finding(
                        Level.WARNING,
                        f"{where}: resource {r!r} covers every table, index and stream in the "
                        "account and region, and the task role is shared by other services.",
                    )
                )
    total = size_without_whitespace(d) + sum(
        size_without_whitespace(v)
        for k, v in (other_inline or {}).items()
        if k != params.policy_name
    )
    if total > INLINE_POLICY_QUOTA:
        findings.append(
            Finding(
                Level.ERROR,
                f"the role's inline policies would total {total} characters (without whitespace); "
                f"IAM allows {INLINE_POLICY_QUOTA}.",
            )
        )
    else:
        findings.append(
            Finding(
                Level.INFO,
                f"inline policy size after the change: {total} of {INLINE_POLICY_QUOTA} characters.",
            )
        )
    return LintReport(tuple(findings))
