"""Rendering, normalising, diffing and linting policy documents (pure)."""

from __future__ import annotations

import json

from runbook_lib.carts import CARTS_CALLS, carts_requests
from runbook_lib.iam_eval import evaluate
from runbook_lib.params import Params
from runbook_lib.policy import (
    diff,
    least_privilege_document,
    lint,
    normalise,
    policy_hash,
    render_policy,
    same_policy,
    workshop_policy_text,
)

ACCOUNT = "123456789012"
# What the workshop's heredoc writes with AWS_REGION=us-west-2 and ACCOUNT_ID=123456789012.
SEED_FILE = """{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "dynamodb:*"
            ],
            "Resource": [
                "arn:aws:dynamodb:us-west-2:123456789012:table/*"
            ]
        }
    ]
}
"""


def test_workshop_scope_is_the_seed_byte_for_byte() -> None:
    p = render_policy(Params(), ACCOUNT)
    assert p.text == SEED_FILE
    assert p.cli_command == (
        "aws iam put-role-policy --role-name retailStoreEcsTaskRole --policy-name "
        "CartsDynamoPolicy --policy-document file://carts-dynamodb-policy.json"
    )


def test_unset_shell_variables_render_an_empty_region_and_account() -> None:
    assert '"arn:aws:dynamodb:::table/*"' in workshop_policy_text("", "")


def test_least_privilege_allows_exactly_the_carts_calls() -> None:
    doc = least_privilege_document("eu-west-1", ACCOUNT, "t1", "i1")
    for action, resource in carts_requests("eu-west-1", ACCOUNT, "t1", "i1"):
        assert evaluate([doc], action, resource).allowed
    table = "arn:aws:dynamodb:eu-west-1:123456789012:table/t1"
    assert not evaluate([doc], "dynamodb:Scan", table).allowed
    assert not evaluate([doc], "dynamodb:DeleteTable", table).allowed
    assert not evaluate([doc], "dynamodb:Query", table.replace("t1", "other") + "/index/i1").allowed
    assert not evaluate([doc], "dynamodb:GetItem", table + "/index/i1").allowed
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert actions == {c.action for c in CARTS_CALLS}


def test_normalise_treats_scalar_and_list_alike_and_ignores_order() -> None:
    a = json.loads(SEED_FILE)
    b = {
        "Statement": {
            "Resource": "arn:aws:dynamodb:us-west-2:123456789012:table/*",
            "Action": "dynamodb:*",
            "Effect": "Allow",
        },
        "Version": "2012-10-17",
    }
    assert same_policy(a, b) and policy_hash(a) == policy_hash(b)
    c = least_privilege_document("us-west-2", ACCOUNT, "t", "i")
    c2 = {"Version": "2012-10-17", "Statement": list(reversed(c["Statement"]))}
    c2["Statement"][1]["Action"] = list(reversed(c2["Statement"][1]["Action"]))
    assert normalise(c) == normalise(c2)
    assert not same_policy(a, c)


def test_diff_is_empty_for_the_same_document_and_shows_changes() -> None:
    a = json.loads(SEED_FILE)
    assert diff(a, SEED_FILE, "P") == ""
    d = diff(a, least_privilege_document("us-west-2", ACCOUNT, "t", "i"), "P")
    assert d.startswith("--- P (now)") and '-        "dynamodb:*"' in d and "+" in d


def test_lint_flags_wildcards_empty_arns_wrong_account_and_size() -> None:
    params = Params()
    seed = lint(SEED_FILE, params, ACCOUNT)
    assert seed.ok and [f.level for f in seed.findings].count("warning") == 2
    empty = lint(workshop_policy_text("", ""), params, ACCOUNT)
    assert not empty.ok and "empty region or account" in empty.errors[0].message
    other = lint(workshop_policy_text("us-west-2", "999999999999"), params, ACCOUNT)
    assert "names account 999999999999" in other.errors[0].message
    lp = lint(least_privilege_document("us-west-2", ACCOUNT, "t", "i"), params, ACCOUNT)
    assert lp.ok and all(f.level == "info" for f in lp.findings)
    big = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/" + "x" * 10_300,
            }
        ],
    }
    too_big = lint(SEED_FILE, params, ACCOUNT, other_inline={"Other": big})
    assert not too_big.ok and "10240" in too_big.errors[0].message


# ---------------------------------------------------------------- partitions

CN_SEED = SEED_FILE.replace("arn:aws:dynamodb:us-west-2:", "arn:aws-cn:dynamodb:cn-north-1:")


def test_workshop_scope_in_china_changes_only_the_partition() -> None:
    """The heredoc's arn:aws: matches nothing in aws-cn: rendered there, the one ARN carries
    arn:aws-cn: and every other byte is the heredoc's."""
    p = render_policy(Params(region="cn-north-1"), ACCOUNT)
    assert p.text == CN_SEED
    diff_lines = [
        (a, b) for a, b in zip(SEED_FILE.splitlines(), p.text.splitlines(), strict=True) if a != b
    ]
    assert diff_lines == [
        (
            '                "arn:aws:dynamodb:us-west-2:123456789012:table/*"',
            '                "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/*"',
        )
    ]
    gov = workshop_policy_text("us-gov-west-1", ACCOUNT)
    assert '"arn:aws-us-gov:dynamodb:us-gov-west-1:123456789012:table/*"' in gov
    assert workshop_policy_text("us-west-2", ACCOUNT) == SEED_FILE


def test_least_privilege_in_other_partitions_allows_the_carts_calls_there() -> None:
    for region, partition in (("cn-northwest-1", "aws-cn"), ("us-gov-east-1", "aws-us-gov")):
        doc = least_privilege_document(region, ACCOUNT, "t1", "i1")
        resources = [s["Resource"] for s in doc["Statement"]]
        assert all(r.startswith(f"arn:{partition}:dynamodb:{region}:") for r in resources)
        for action, resource in carts_requests(region, ACCOUNT, "t1", "i1"):
            assert evaluate([doc], action, resource).allowed
            # The same request in the aws partition is another resource altogether.
            aws_resource = resource.replace(f"arn:{partition}:", "arn:aws:")
            assert not evaluate([doc], action, aws_resource).allowed
        assert lint(doc, Params(region=region), ACCOUNT).ok


def test_lint_calls_an_arn_in_another_partition_an_error() -> None:
    cn = Params(region="cn-north-1")
    heredoc_in_china = SEED_FILE.replace("us-west-2", "cn-north-1")  # arn:aws: kept
    report = lint(heredoc_in_china, cn, ACCOUNT)
    assert not report.ok
    assert report.errors[0].message == (
        "statement 0: Resource 'arn:aws:dynamodb:cn-north-1:123456789012:table/*' is in "
        "partition 'aws', but region cn-north-1 is in 'aws-cn': write arn:aws-cn: or it "
        "matches nothing."
    )
    assert lint(CN_SEED, cn, ACCOUNT).ok
    assert not lint(CN_SEED, Params(), ACCOUNT).ok  # aws-cn ARNs in us-west-2
    # Deny and NotResource are checked too; a wildcard partition matches every partition.
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "dynamodb:GetItem",
                "Resource": "arn:*:dynamodb:*:*:table/t",
            },
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "NotResource": ["arn:aws:s3:::b", "arn:aws-cn:s3:::b"],
            },
        ],
    }
    errors = [f.message for f in lint(doc, cn, ACCOUNT).errors]
    assert errors == [
        "statement 1: NotResource 'arn:aws:s3:::b' is in partition 'aws', but region cn-north-1 "
        "is in 'aws-cn': write arn:aws-cn: or it matches nothing."
    ]
