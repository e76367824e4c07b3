"""The IAM evaluator against ``iam_corpus.yaml``: each case names the AWS rule it checks.

Also here: the explanation table, and the least-privilege policy derived from what carts calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_lib import carts
from runbook_lib.access_denied import parse_access_denied
from runbook_lib.iam_conditions import SUPPORTED_OPERATORS
from runbook_lib.iam_eval import (
    Decision,
    PolicyError,
    PolicyType,
    StatementRef,
    evaluate,
    explain,
)

CORPUS: list[dict[str, Any]] = yaml.safe_load(
    Path(__file__).with_name("iam_corpus.yaml").read_text(encoding="utf-8")
)
DECISIONS = {"allowed", "implicit_deny", "explicit_deny"}

REGION, ACCOUNT = "us-west-2", "123456789012"
TABLE, INDEX = "retail-store-ecs-carts", "idx_global_customerId"
TABLE_ARN = carts.table_arn(REGION, ACCOUNT, TABLE)
INDEX_ARN = carts.index_arn(REGION, ACCOUNT, TABLE, INDEX)
WORKSHOP = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "dynamodb:*",
            "Resource": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/*",
        }
    ],
}


# ---------------------------------------------------------------- the corpus


def test_corpus_cases_are_well_formed() -> None:
    ids = [case["id"] for case in CORPUS]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CORPUS) >= 60
    for case in CORPUS:
        assert case.get("rule") and case.get("doc"), case["id"]
        assert ("expect" in case) != ("raises" in case), case["id"]
        assert case.get("expect", "allowed") in DECISIONS, case["id"]
        assert isinstance(case["action"], str) and isinstance(case["resource"], str), case["id"]
        assert case.get("expect_type", "identity-based policy") in TYPES, case["id"]
        known = {"id", "rule", "doc", "policies", "action", "resource", "context", "expect"}
        known |= {"raises", "decided_by", "expect_type", "expect_level", "sentence", *KWARGS}
        known |= {"boundary_allows", "organizations_allow"}
        assert set(case) <= known, f"{case['id']}: unknown fields {set(case) - known}"


PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/retailStoreEcsTaskRole/0f3c2b1a"
TYPES = {t.value for t in PolicyType}
KWARGS = ("boundary", "scps", "session_policies")


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_corpus_case(case: dict[str, Any]) -> None:
    args = (case["policies"], case["action"], case["resource"], case.get("context"))
    kwargs = {key: case[key] for key in KWARGS if key in case}
    if "raises" in case:
        with pytest.raises(PolicyError) as caught:
            evaluate(*args, **kwargs)
        assert case["raises"] in str(caught.value), case["rule"]
        return
    decision = evaluate(*args, **kwargs)
    assert decision.decision == case["expect"], f"{case['rule']} ({case['doc']}): {decision.reason}"
    if "decided_by" in case:
        assert [str(ref) for ref in decision.statements] == case["decided_by"], case["rule"]
    if "expect_type" in case:
        assert decision.policy_type == case["expect_type"], f"{case['rule']}: {decision.reason}"
    if "expect_level" in case:
        assert decision.level == case["expect_level"], case["rule"]
    if "boundary_allows" in case:
        assert decision.allowed_by_boundary is case["boundary_allows"], case["rule"]
    if "organizations_allow" in case:
        assert decision.allowed_by_organizations is case["organizations_allow"], case["rule"]
    if "sentence" in case:
        sentence = decision.sentence(PRINCIPAL)
        assert sentence.endswith(" " + case["sentence"]), case["rule"]
        parsed = parse_access_denied(sentence)
        assert parsed is not None and parsed.policy_type == decision.policy_type, case["rule"]
    # Without the limiting types, the identity-based policies decide alone; the limits can only
    # take away (AWS: boundaries, SCPs and session policies grant nothing).
    if kwargs and decision.allowed:
        assert evaluate(*args).allowed, case["rule"]


def _condition_operators(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Condition" and isinstance(value, dict):
                yield from value
            yield from _condition_operators(value)
    elif isinstance(node, list):
        for item in node:
            yield from _condition_operators(item)


def test_corpus_covers_every_supported_operator_and_outcome() -> None:
    """Each operator the evaluator accepts is exercised by at least one corpus case."""
    used = {op for case in CORPUS for op in _condition_operators(case["policies"])}
    bases = {op.rpartition(":")[2].removesuffix("IfExists") for op in used}
    assert SUPPORTED_OPERATORS - bases == set()
    assert any(op.endswith("IfExists") for op in used)
    assert any(op.startswith("ForAllValues:") for op in used)
    assert any(op.startswith("ForAnyValue:") for op in used)
    assert {case["expect"] for case in CORPUS if "expect" in case} == DECISIONS


# ---------------------------------------------------------------- AWS rules worth their own name


def test_for_all_values_is_true_when_the_key_is_missing_per_aws_multivalued_keys_doc() -> None:
    """IAM User Guide, "Single-valued vs. multivalued context keys", ForAllValues: "It also
    returns true if there are no context keys in the request." So an Allow guarded only by
    ForAllValues allows a request that carries no tags at all.
    """
    policy = {
        "Statement": {
            "Effect": "Allow",
            "Action": "dynamodb:TagResource",
            "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}},
        }
    }
    assert evaluate({"P": policy}, "dynamodb:TagResource", TABLE_ARN).allowed
    assert not evaluate(
        {"P": policy}, "dynamodb:TagResource", TABLE_ARN, {"aws:TagKeys": ["owner"]}
    ).allowed


def test_negated_operator_is_true_when_the_key_is_missing_per_aws_condition_operators_doc() -> None:
    """IAM User Guide, "Condition operators", Important: "If the policy condition requires that
    the key is not matched, such as StringNotLike or ArnNotLike, and the right key is not
    present, the condition is true." Plain operators are false; IfExists is true.
    """
    cond = {"aws:PrincipalTag/team": "carts"}
    cases = {"StringNotLike": True, "StringLike": False, "StringLikeIfExists": True}
    for operator, expected in cases.items():
        policy = {
            "Statement": {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {operator: cond},
            }
        }
        assert evaluate([policy], "dynamodb:Query", INDEX_ARN).allowed is expected, operator


# ---------------------------------------------------------------- decisions and explanations


def test_decision_reasons_name_the_deciding_statements() -> None:
    deny = {"Statement": {"Sid": "NoQuery", "Effect": "Deny", "Action": "*", "Resource": "*"}}
    allowed = evaluate({"CartsDynamoPolicy": WORKSHOP}, "dynamodb:Query", INDEX_ARN)
    denied = evaluate(
        {"CartsDynamoPolicy": WORKSHOP, "DenyQuery": deny}, "dynamodb:Query", INDEX_ARN
    )
    implicit = evaluate({"CartsDynamoPolicy": WORKSHOP}, "dynamodb:Query", "arn:aws:s3:::b")
    assert allowed.reason == "allowed by CartsDynamoPolicy, statement 0"
    assert denied.reason == "denied explicitly by DenyQuery, statement 'NoQuery'"
    assert implicit.reason == "no statement allows dynamodb:Query on arn:aws:s3:::b"
    assert denied.statements == (StatementRef("DenyQuery", 0, "NoQuery", "Deny"),)
    assert (allowed.allowed, denied.allowed, implicit.allowed) == (True, False, False)
    assert implicit.statements == ()


def test_explain_text_table_frame_and_html() -> None:
    requests = [*carts.carts_requests(REGION, ACCOUNT, TABLE, INDEX), ("dynamodb:Scan", "arn:x")]
    result = explain({"CartsDynamoPolicy": WORKSHOP}, requests)

    assert not result.all_allowed
    assert [d.action for d in result.denied] == ["dynamodb:Scan"]
    text = str(result)
    lines = text.splitlines()
    assert lines[0].split() == ["action", "resource", "decision", "decided", "by"]
    for (action, resource), line in zip(requests, lines[2:], strict=False):
        assert line.startswith(action) and resource in line
    assert text.count("allowed") >= len(requests) - 1 and "implicit_deny" in text
    assert lines[-1] == "1 of 6 requests not allowed"

    frame = result.to_frame()
    assert list(frame.columns) == ["action", "resource", "decision", "decided by"]
    assert list(frame["decision"]) == ["allowed"] * 5 + ["implicit_deny"]
    assert frame["decided by"].iloc[0] == "CartsDynamoPolicy, statement 0"

    html = result._repr_html_()
    assert "<table" in html and "dynamodb:Scan" in html and "1 of 6 requests not allowed" in html


def test_explain_all_allowed_and_matches_evaluate() -> None:
    requests = carts.carts_requests(REGION, ACCOUNT, TABLE, INDEX)
    result = explain({"CartsDynamoPolicy": WORKSHOP}, requests)
    assert result.all_allowed and str(result).endswith("all 5 requests allowed")
    assert result.rows == tuple(
        evaluate({"CartsDynamoPolicy": WORKSHOP}, a, r) for a, r in requests
    )
    unset = json.dumps(WORKSHOP).replace(
        f"{REGION}:{ACCOUNT}", ":"
    )  # $AWS_REGION, $ACCOUNT_ID unset
    result = explain({"CartsDynamoPolicy": unset}, requests)
    assert "arn:aws:dynamodb:::table/*" in unset
    assert result.denied == result.rows and not result.all_allowed


def test_explain_rejects_a_bad_document_before_deciding_anything() -> None:
    with pytest.raises(PolicyError, match="Effect"):
        explain({"P": {"Statement": {"Effect": "Permit", "Action": "*", "Resource": "*"}}}, [])


# ---------------------------------------------------------------- least privilege for carts


def _least_privilege(requests: list[tuple[str, str]]) -> dict[str, Any]:
    by_resource: dict[str, list[str]] = {}
    for action, resource in requests:
        by_resource.setdefault(resource, []).append(action)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": actions, "Resource": resource}
            for resource, actions in by_resource.items()
        ],
    }


def test_least_privilege_policy_allows_every_carts_request_and_nothing_else() -> None:
    requests = carts.carts_requests(REGION, ACCOUNT, TABLE, INDEX)
    policies = {"CartsDynamoPolicy": _least_privilege(requests)}
    assert explain(policies, requests).all_allowed

    # Every other pairing of a carts action with a carts resource is denied...
    actions = {a for a, _ in requests}
    resources = {r for _, r in requests}
    others = [(a, r) for a in sorted(actions) for r in sorted(resources) if (a, r) not in requests]
    assert others, "carts uses more than one resource"
    # ...and so is what carts never calls, or calls elsewhere.
    others += [
        ("dynamodb:Scan", TABLE_ARN),
        ("dynamodb:DeleteTable", TABLE_ARN),
        ("dynamodb:DescribeTable", TABLE_ARN),
        ("dynamodb:BatchWriteItem", TABLE_ARN),
        ("dynamodb:UpdateTable", TABLE_ARN),
        ("dynamodb:GetItem", carts.table_arn(REGION, ACCOUNT, "orders")),
        ("dynamodb:Query", carts.index_arn(REGION, ACCOUNT, TABLE, "other_index")),
        ("dynamodb:GetItem", carts.table_arn("us-east-1", ACCOUNT, TABLE)),
        ("dynamodb:GetRecords", f"{TABLE_ARN}/stream/2024-01-01T00:00:00.000"),
        ("s3:GetObject", "arn:aws:s3:::retail-store-ecs-carts/key"),
    ]
    result = explain(policies, others)
    assert [d for d in result.rows if d.allowed] == []
    assert all(d.decision == "implicit_deny" for d in result.rows)


def test_workshop_policy_is_broader_than_least_privilege() -> None:
    """The seed policy allows what the least-privilege one refuses: the reason to narrow it."""
    requests = carts.carts_requests(REGION, ACCOUNT, TABLE, INDEX)
    least = {"CartsDynamoPolicy": _least_privilege(requests)}
    seed = {"CartsDynamoPolicy": WORKSHOP}
    extra = ("dynamodb:DeleteTable", TABLE_ARN)
    assert evaluate(seed, *extra).allowed
    assert evaluate(least, *extra) == Decision(*extra, "implicit_deny")


# ---------------------------------------------------------------- boundaries in explanations

S3_ONLY_BOUNDARY = {
    "Version": "2012-10-17",
    "Statement": {"Effect": "Allow", "Action": ["s3:*", "logs:*"], "Resource": "*"},
}


def test_explain_with_a_boundary_names_it_in_every_row() -> None:
    """Issue 11's boundary case: the workshop policy is written, yet every carts call stays
    denied, and the table says by what."""
    requests = carts.carts_requests(REGION, ACCOUNT, TABLE, INDEX)
    boundary = {"arn:aws:iam::123456789012:policy/TaskBoundary": S3_ONLY_BOUNDARY}
    result = explain({"CartsDynamoPolicy": WORKSHOP}, requests, boundary=boundary)
    assert not result.all_allowed and len(result.denied) == 5
    assert {d.policy_type for d in result.rows} == {PolicyType.BOUNDARY}
    assert {d.decided_by for d in result.rows} == {"permissions boundary: no Allow"}
    assert (
        result.rows[0].reason
        == f"no permissions boundary statement allows dynamodb:Query on {INDEX_ARN}"
    )
    assert "permissions boundary: no Allow" in str(result)
    assert "permissions boundary: no Allow" in result._repr_html_()
    assert result.rows == tuple(
        evaluate({"CartsDynamoPolicy": WORKSHOP}, a, r, boundary=boundary) for a, r in requests
    )
    # Without the boundary the same policy allows all five: the boundary alone decides.
    assert explain({"CartsDynamoPolicy": WORKSHOP}, requests).all_allowed


def test_a_denial_gives_the_lab_its_sentence_and_the_runbook_its_advice() -> None:
    principal = "arn:aws:sts::123456789012:assumed-role/retailStoreEcsTaskRole/0f3c"
    denied = evaluate(
        {"CartsDynamoPolicy": WORKSHOP}, "dynamodb:Query", INDEX_ARN, boundary=S3_ONLY_BOUNDARY
    )
    assert denied.sentence(principal) == (
        f"User: {principal} is not authorized to perform: dynamodb:Query on resource: "
        f"{INDEX_ARN} because no permissions boundary allows the dynamodb:Query action"
    )
    assert "put-role-permissions-boundary" in denied.advice("retailStoreEcsTaskRole")
    allowed = evaluate({"CartsDynamoPolicy": WORKSHOP}, "dynamodb:Query", INDEX_ARN)
    assert allowed.advice() == "" and allowed.policy_type == PolicyType.IDENTITY
    with pytest.raises(ValueError, match="is allowed: there is no denial"):
        allowed.sentence(principal)
    # The old identity-only sentence is unchanged, and the policy ARN is appended only for an
    # explicit deny by a policy named by its ARN.
    none = evaluate({}, "dynamodb:Query", INDEX_ARN)
    assert none.sentence(principal).endswith(
        "because no identity-based policy allows the dynamodb:Query action"
    )
    deny = {"Statement": {"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"}}
    arn = "arn:aws:iam::123456789012:policy/DenyDynamo"
    explicit = evaluate({arn: deny, "Inline": WORKSHOP}, "dynamodb:Query", INDEX_ARN)
    assert explicit.policy_arn == arn
    assert explicit.sentence(principal).endswith(f"in an identity-based policy: {arn}")
    assert explicit.sentence(principal, with_policy_arn=False).endswith("identity-based policy")
    inline = evaluate({"DenyInline": deny}, "dynamodb:Query", INDEX_ARN)
    assert inline.policy_arn is None


def test_boundary_inputs_and_the_old_api() -> None:
    """A boundary may be a dict, JSON text or {name: document}; no keyword means no limit, as
    before; StatementRef built with four fields prints as before."""
    as_text = json.dumps(S3_ONLY_BOUNDARY)
    for boundary in (S3_ONLY_BOUNDARY, as_text, {"B": S3_ONLY_BOUNDARY}, [("B", as_text)]):
        d = evaluate({"P": WORKSHOP}, "dynamodb:GetItem", TABLE_ARN, boundary=boundary)
        assert (d.decision, d.policy_type) == ("implicit_deny", PolicyType.BOUNDARY)
    old = evaluate({"P": WORKSHOP}, "dynamodb:GetItem", TABLE_ARN)
    assert old.allowed_by_boundary is None and old.allowed_by_organizations is None
    assert str(StatementRef("P", 0, None, "Allow")) == "P, statement 0"
    with pytest.raises(PolicyError, match="one entry per organization level"):
        evaluate({"P": WORKSHOP}, "dynamodb:GetItem", TABLE_ARN, scps={"FullAWSAccess": WORKSHOP})
    with pytest.raises(PolicyError, match="permissions boundary: not valid JSON"):
        evaluate({"P": WORKSHOP}, "dynamodb:GetItem", TABLE_ARN, boundary="{not json")


def test_corpus_covers_every_limiting_type_and_outcome() -> None:
    """The corpus has allowed, implicit and explicit cases for boundaries, SCPs and sessions."""
    seen = {
        (key, case["expect"], case.get("expect_type"))
        for case in CORPUS
        if "expect" in case
        for key in KWARGS
        if key in case
    }
    for key, words in (
        ("boundary", "permissions boundary"),
        ("scps", "service control policy"),
        ("session_policies", "session policy"),
    ):
        assert (key, "implicit_deny", words) in seen, key
        assert (key, "explicit_deny", words) in seen, key
        assert any(k == key and e == "allowed" for k, e, _ in seen), key
