"""Trust check and plan over role data (no AWS): what put-role-policy would do, how to undo it."""

from __future__ import annotations

import json

from runbook_lib.iam import RoleState, check_trust
from runbook_lib.params import Params
from runbook_lib.plan import plan
from runbook_lib.policy import render_policy

ECS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
BASE = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["ssmmessages:OpenDataChannel"], "Resource": "*"}],
}


def role(trust: dict[str, object] = ECS_TRUST, **inline: dict[str, object]) -> RoleState:
    return RoleState(
        "retailStoreEcsTaskRole",
        "arn:aws:iam::123456789012:role/retailStoreEcsTaskRole",
        "123456789012",
        trust,
        {"Base": BASE, **inline},
        {},
    )


def test_workshop_trust_is_accepted_without_warnings() -> None:
    tc = check_trust(role())
    assert tc.ok and tc.warnings == () and "trusts ecs-tasks.amazonaws.com" in tc.verdict()


def test_trust_without_ecs_tasks_fails_and_broader_principals_warn() -> None:
    ec2 = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ]
    }
    tc = check_trust(role(ec2))
    assert not tc.ok and "does not let ecs-tasks.amazonaws.com" in tc.verdict()
    broad = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["ecs-tasks.amazonaws.com", "lambda.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            },
            {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
        ]
    }
    tc = check_trust(role(broad))
    assert tc.ok
    assert any("lambda.amazonaws.com" in w for w in tc.warnings)
    assert any("any AWS principal" in w for w in tc.warnings)
    denied = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ]
    }
    assert not check_trust(role(denied)).ok


def test_plan_create_replace_unchanged_and_restore_commands() -> None:
    policy = render_policy(Params(), "123456789012")
    create = plan(role(), policy)
    assert create.action == "create" and create.other_inline == ("Base",)
    assert (
        create.restore_command
        == "aws iam delete-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy"
    )
    same = plan(role(CartsDynamoPolicy=policy.document), policy)
    assert same.action == "unchanged" and same.diff == ""
    other = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"}],
    }
    replace = plan(role(CartsDynamoPolicy=other), policy)
    assert replace.action == "replace" and "REPLACE" in replace.summary()
    assert '"dynamodb:GetItem"' in replace.diff
    assert "put-role-policy" in replace.restore_command
    restored = json.loads(replace.restore_command.split("--policy-document ", 1)[1].strip("'"))
    assert restored == other
    rec = replace.record()
    assert rec["before"] == other and rec["before_sha256"] != rec["after_sha256"]
