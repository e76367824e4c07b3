"""AWS's AccessDenied sentence, written by the lab and read by the diagnosis."""

from __future__ import annotations

import pytest

from runbook_lib.access_denied import (
    EXPLICIT_DENY,
    NO_ALLOW,
    PolicyType,
    advise_denial,
    assumed_role_arn,
    format_access_denied,
    parse_access_denied,
)

TASK = "0f3c2b1a9e8d7c6b5a4f3e2d1c0b9a8f"
INDEX = "arn:aws:dynamodb:us-west-2:123456789012:table/retail-store-ecs-carts/index/idx_global_customerId"
# The sentence as WORKSHOP.md quotes it from the carts log.
WORKSHOP_LINE = (
    f"User: arn:aws:sts::123456789012:assumed-role/retailStoreEcsTaskRole/{TASK} is not authorized "
    f"to perform: dynamodb:Query on resource: {INDEX} because no identity-based policy allows the "
    "dynamodb:Query action (Service: DynamoDb, Status Code: 400, Request ID: ABC)"
)


def test_format_reproduces_the_workshop_sentence() -> None:
    principal = assumed_role_arn("123456789012", "retailStoreEcsTaskRole", TASK)
    assert format_access_denied(principal, "dynamodb:Query", INDEX, NO_ALLOW) in WORKSHOP_LINE


def test_parse_names_role_session_action_and_resource() -> None:
    d = parse_access_denied("2026-11-30 ERROR ... " + WORKSHOP_LINE)
    assert d is not None
    assert (d.role_name, d.session_name, d.account_id) == (
        "retailStoreEcsTaskRole",
        TASK,
        "123456789012",
    )
    assert (d.action, d.resource, d.explicit) == ("dynamodb:Query", INDEX, False)


def test_explicit_deny_sentence_round_trips() -> None:
    s = format_access_denied(
        assumed_role_arn("123456789012", "r", TASK), "dynamodb:Query", INDEX, EXPLICIT_DENY
    )
    assert s.endswith("with an explicit deny in an identity-based policy")
    d = parse_access_denied(s)
    assert d is not None and d.explicit and d.kind == EXPLICIT_DENY


def test_unrelated_lines_and_bad_kind() -> None:
    assert parse_access_denied("Started CartsApplication in 12.3 seconds") is None
    with pytest.raises(ValueError):
        format_access_denied("p", "a:b", "arn:x", "maybe")


# ---------------------------------------------------------------- every sentence of AWS-FACTS §5

A = "arn:aws:sts::111122223333:assumed-role/LabRole/sess"
R = "arn:aws:dynamodb:us-east-1:111122223333:table/Orders"
HEAD = f"User: {A} is not authorized to perform: dynamodb:GetItem on resource: {R} "
# The troubleshooting page's cases, rendered for DynamoDB (AWS-FACTS §5 table).
AWS_SENTENCES = [
    (
        "because no identity-based policy allows the dynamodb:GetItem action",
        PolicyType.IDENTITY,
        NO_ALLOW,
    ),
    ("with an explicit deny in an identity-based policy", PolicyType.IDENTITY, EXPLICIT_DENY),
    (
        "because no permissions boundary allows the dynamodb:GetItem action",
        PolicyType.BOUNDARY,
        NO_ALLOW,
    ),
    ("with an explicit deny in a permissions boundary", PolicyType.BOUNDARY, EXPLICIT_DENY),
    ("with an explicit deny in a service control policy", PolicyType.SCP, EXPLICIT_DENY),
    ("because no session policy allows the dynamodb:GetItem action", PolicyType.SESSION, NO_ALLOW),
    ("with an explicit deny in a resource-based policy", PolicyType.RESOURCE, EXPLICIT_DENY),
]
# The ARNs AWS appends to same-account and same-organization explicit denies.
SCP_ARN = (
    "arn:aws:organizations::987654321098:policy/o-qv5af4abcd/service_control_policy/p-2kgnabcd"
)
BOUNDARY_ARN = "arn:aws:iam::111122223333:policy/DeveloperBoundary"


@pytest.mark.parametrize(("context", "ptype", "kind"), AWS_SENTENCES)
def test_each_aws_sentence_parses_and_formats_back(
    context: str, ptype: PolicyType, kind: str
) -> None:
    sentence = HEAD + context
    d = parse_access_denied(
        f"ERROR DynamoDbException: {sentence} (Service: DynamoDb, Status Code: 400)"
    )
    assert d is not None
    assert (d.principal, d.action, d.resource) == (A, "dynamodb:GetItem", R)
    assert (d.policy_type, d.kind, d.policy_arn) == (ptype, kind, None)
    assert (d.role_name, d.session_name, d.account_id, d.partition) == (
        "LabRole",
        "sess",
        "111122223333",
        "aws",
    )
    assert str(d) == sentence
    assert format_access_denied(A, "dynamodb:GetItem", R, kind, policy_type=ptype) == sentence
    assert d.explanation.endswith(".") and d.advice.endswith(".")
    assert "\n" not in d.explanation + d.advice


@pytest.mark.parametrize(
    ("ptype", "policy_arn"),
    [
        (PolicyType.SCP, SCP_ARN),
        (PolicyType.BOUNDARY, BOUNDARY_ARN),
        (PolicyType.IDENTITY, "arn:aws:iam::111122223333:policy/DenyDynamo"),
        (PolicyType.SESSION, "arn:aws:iam::111122223333:policy/SessionLimit"),
        (
            PolicyType.RCP,
            "arn:aws:organizations::987654321098:policy/o-a/resource_control_policy/p-b",
        ),
    ],
)
def test_explicit_denies_may_name_the_policy_arn(ptype: PolicyType, policy_arn: str) -> None:
    sentence = format_access_denied(
        A, "dynamodb:GetItem", R, EXPLICIT_DENY, policy_type=ptype, policy_arn=policy_arn
    )
    assert sentence == f"{HEAD}with an explicit deny in {ptype.article} {ptype.value}: {policy_arn}"
    d = parse_access_denied(sentence + " (Service: DynamoDb, Status Code: 400, Request ID: X)")
    assert d is not None and (d.policy_type, d.policy_arn, d.explicit) == (ptype, policy_arn, True)
    assert policy_arn in d.explanation
    assert str(d) == sentence


def test_the_blog_example_with_an_scp_arn() -> None:
    """The security blog's enhanced message, verbatim (an IAM user, a wildcard resource)."""
    text = (
        "An error occurred (AccessDenied) when calling the ListRoles operation: User: "
        "arn:aws:iam::123456789012:user/Matt is not authorized to perform: iam:ListRoles on "
        "resource: arn:aws:iam::123456789012:role/* with an explicit deny in a service control "
        "policy: arn:aws:organizations::987654321098:policy/o-qv5af4abcd/service_control_policy/"
        "p-2kgnabcd"
    )
    d = parse_access_denied(text)
    assert d is not None
    assert (d.action, d.resource, d.policy_type, d.policy_arn) == (
        "iam:ListRoles",
        "arn:aws:iam::123456789012:role/*",
        PolicyType.SCP,
        SCP_ARN,
    )
    assert (d.role_name, d.account_id) == (None, "123456789012")


def test_an_scp_sentence_always_says_explicit_even_when_none_allows() -> None:
    """AWS: for SCPs the message "always includes the phrase ... explicit deny ..., even if the
    denial is implicit"; the explanation says it cannot tell which, the advice that no policy in
    the account can fix it."""
    implicit = format_access_denied(
        A, "dynamodb:GetItem", R, NO_ALLOW, policy_type="service control policy"
    )
    assert implicit == HEAD + "with an explicit deny in a service control policy"
    d = parse_access_denied(implicit)
    assert d is not None and d.explicit
    assert "no such policy allows it" in d.explanation
    assert d.advice.startswith("No policy in this account can fix it: ask the organization's")
    assert "service control policies" in d.advice


def test_advice_names_what_fixes_each_kind() -> None:
    boundary = parse_access_denied(HEAD + AWS_SENTENCES[2][0])
    assert boundary is not None
    assert "permissions boundary of role LabRole must allow dynamodb:GetItem too" in boundary.advice
    assert "aws iam put-role-permissions-boundary" in boundary.advice
    identity = parse_access_denied(HEAD + AWS_SENTENCES[0][0])
    assert identity is not None and "aws iam put-role-policy" in identity.advice
    deny = parse_access_denied(HEAD + AWS_SENTENCES[1][0])
    assert deny is not None and "Remove or narrow the Deny statement" in deny.advice
    session = parse_access_denied(HEAD + AWS_SENTENCES[5][0])
    assert session is not None and "session policy" in session.advice
    resource = parse_access_denied(HEAD + AWS_SENTENCES[6][0])
    assert resource is not None and "put-resource-policy" in resource.advice
    texts = {
        advise_denial(t, k, "dynamodb:GetItem", "r")
        for t in PolicyType
        for k in (NO_ALLOW, EXPLICIT_DENY)
    }
    assert len(texts) >= 10  # one sentence per kind, not one for all


@pytest.mark.parametrize(
    ("partition", "region"),
    [("aws-cn", "cn-north-1"), ("aws-us-gov", "us-gov-west-1"), ("aws-iso-b", "us-isob-east-1")],
)
def test_sentences_in_other_partitions(partition: str, region: str) -> None:
    principal = assumed_role_arn("111122223333", "LabRole", TASK, region=region)
    resource = f"arn:{partition}:dynamodb:{region}:111122223333:table/carts"
    for ptype in PolicyType:
        for kind in (NO_ALLOW, EXPLICIT_DENY):
            sentence = format_access_denied(
                principal, "dynamodb:Query", resource, kind, policy_type=ptype
            )
            d = parse_access_denied(sentence)
            assert d is not None, sentence
            assert (d.partition, d.role_name, d.resource, d.policy_type) == (
                partition,
                "LabRole",
                resource,
                ptype,
            )


def test_a_different_action_in_the_implicit_phrase_is_not_the_sentence() -> None:
    """ "because no ... allows the <action> action" names the same action as the head."""
    bad = f"User: {A} is not authorized to perform: dynamodb:GetItem on resource: {R} because no identity-based policy allows the dynamodb:Query action"
    assert parse_access_denied(bad) is None


def test_bad_policy_type_is_refused_with_the_allowed_words() -> None:
    with pytest.raises(ValueError, match="policy_type must be one of 'identity-based policy'"):
        format_access_denied(A, "dynamodb:GetItem", R, NO_ALLOW, policy_type="bucket policy")
