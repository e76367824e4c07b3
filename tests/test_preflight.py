"""The preflight on real-account shapes: the role's boundary read and evaluated, IAM's simulator
asked for the role as it will be, and a boundary or SCP that blocks the fix named before writing.

IAM is botocore's Stubber (answers shaped from the ``iam`` model; nothing else is accepted).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from helpers import ACCOUNT, INDEX_ARN, REGION, ROLE, TABLE_ARN, StubbedAWS, aws_example

from runbook_lib.access_denied import PolicyType
from runbook_lib.carts import carts_requests
from runbook_lib.iam import RoleState, read_role
from runbook_lib.params import Params
from runbook_lib.policy import render_policy
from runbook_lib.preflight import (
    SimulatorAnswer,
    preflight,
    read_evaluation,
    simulate,
    simulation_inputs,
)

BOUNDARY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/DeveloperBoundary"
MANAGED_ARN = f"arn:aws:iam::{ACCOUNT}:policy/CartsLogs"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
S3_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "logs:*"], "Resource": "*"}],
}
DEFAULT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "*"}],
}
OLD_CARTS = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE_ARN}],
}
POLICY = render_policy(Params(), ACCOUNT)
REQUESTS = carts_requests(REGION, ACCOUNT, Params().table, Params().index)


def role(boundary: dict[str, Any] | None = None, **inline: dict[str, Any]) -> RoleState:
    return RoleState(
        name=ROLE,
        arn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
        account=ACCOUNT,
        trust_policy=TRUST,
        inline=inline,
        attached={MANAGED_ARN: DEFAULT_POLICY},
        boundary_arn=BOUNDARY_ARN if boundary is not None else None,
        boundary=boundary,
    )


# --- reading the role -------------------------------------------------------------------------


def test_read_role_reads_the_permissions_boundary_and_every_page() -> None:
    """get-role's example, with the boundary AWS adds to a role that has one; inline policies
    listed over two pages (Marker/IsTruncated); documents URL-encoded as IAM sends them."""
    aws = StubbedAWS()
    got = aws_example("iam", "get-role")
    got["Role"].update(
        RoleName=ROLE,
        Arn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
        AssumeRolePolicyDocument=quote(json.dumps(TRUST)),
        PermissionsBoundary={
            "PermissionsBoundaryType": "Policy",
            "PermissionsBoundaryArn": BOUNDARY_ARN,
        },
    )
    aws.add("iam", "get_role", got, {"RoleName": ROLE})
    aws.add(
        "iam",
        "list_role_policies",
        {"PolicyNames": ["Default"], "IsTruncated": True, "Marker": "m1"},
        {"RoleName": ROLE},
    )
    aws.add(
        "iam",
        "get_role_policy",
        {
            "RoleName": ROLE,
            "PolicyName": "Default",
            "PolicyDocument": quote(json.dumps(DEFAULT_POLICY)),
        },
    )
    aws.add(
        "iam",
        "list_role_policies",
        {"PolicyNames": ["CartsDynamoPolicy"], "IsTruncated": False},
        {"RoleName": ROLE, "Marker": "m1"},
    )
    aws.add(
        "iam",
        "get_role_policy",
        {
            "RoleName": ROLE,
            "PolicyName": "CartsDynamoPolicy",
            "PolicyDocument": quote(json.dumps(OLD_CARTS)),
        },
    )
    aws.add("iam", "list_attached_role_policies", {"AttachedPolicies": [], "IsTruncated": False})
    # get-policy's documented example has a malformed CreateDate ("19:23;32Z"): written here.
    policy = {
        "Policy": {"PolicyName": "DeveloperBoundary", "Arn": BOUNDARY_ARN, "DefaultVersionId": "v3"}
    }
    aws.add("iam", "get_policy", policy, {"PolicyArn": BOUNDARY_ARN})
    version = aws_example("iam", "get-policy-version")
    version["PolicyVersion"].update(Document=quote(json.dumps(S3_ONLY)), VersionId="v3")
    aws.add("iam", "get_policy_version", version, {"PolicyArn": BOUNDARY_ARN, "VersionId": "v3"})
    state = read_role(aws.client("iam"), ROLE, ACCOUNT)
    assert aws.pending() == {}
    assert state.boundary_arn == BOUNDARY_ARN and state.boundary == S3_ONLY
    assert set(state.inline) == {"Default", "CartsDynamoPolicy"}
    assert state.trust_policy == TRUST


# --- the local evaluation ---------------------------------------------------------------------


def test_a_boundary_without_dynamodb_blocks_the_fix_before_writing() -> None:
    result = preflight(role(S3_ONLY), POLICY, REGION, ACCOUNT, Params().table, Params().index)
    assert not result.ok and result.blocked_by == PolicyType.BOUNDARY
    verdict = result.verdict()
    assert verdict.startswith("Blocked before writing: the permissions boundary " + BOUNDARY_ARN)
    assert "dynamodb:Query" in verdict and "put-role-permissions-boundary" in verdict
    assert result.record()["blocked_by"] == "permissions boundary"
    assert "STOP: Blocked before writing" in str(result)


def test_a_boundary_that_allows_dynamodb_lets_the_candidate_through() -> None:
    wide = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    result = preflight(role(wide), POLICY, REGION, ACCOUNT, Params().table, Params().index)
    assert result.ok and result.blocked_by is None
    assert not result.before.all_allowed  # the boundary grants nothing on its own


def test_an_identity_deny_is_still_denied_but_not_blocked_by_the_boundary() -> None:
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"}],
    }
    result = preflight(
        role(None, Guard=deny), POLICY, REGION, ACCOUNT, Params().table, Params().index
    )
    assert not result.ok and result.blocked_by is None
    assert result.verdict().startswith("Still denied with the candidate: dynamodb:Query")


# --- IAM's simulator --------------------------------------------------------------------------


def evaluation(
    action: str, resource: str, decision: str = "allowed", **extra: Any
) -> dict[str, Any]:
    """One EvaluationResult as SimulateCustomPolicy answers with ResourceArns given."""
    return {
        "EvalActionName": action,
        "EvalResourceName": "arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}",
        "EvalDecision": decision,
        "MatchedStatements": [],
        "MissingContextValues": [],
        "ResourceSpecificResults": [
            {
                "EvalResourceName": resource,
                "EvalResourceDecision": decision,
                "MatchedStatements": [],
                "MissingContextValues": extra.pop("missing", []),
                **extra.pop("specific", {}),
            }
        ],
        **extra,
    }


def stub_simulation(
    aws: StubbedAWS, state: RoleState, answer: dict[str, dict[str, Any]] | None = None
) -> None:
    """Two simulations (the index with Query, the table with the item calls), the second over
    two pages."""
    inputs = simulation_inputs(state, POLICY)
    context = [
        {
            "ContextKeyName": "aws:SecureTransport",
            "ContextKeyValues": ["true"],
            "ContextKeyType": "boolean",
        }
    ]
    extra = answer or {}
    aws.add(
        "iam",
        "simulate_custom_policy",
        {
            "EvaluationResults": [
                evaluation("dynamodb:Query", INDEX_ARN, **extra.get("dynamodb:Query", {}))
            ],
            "IsTruncated": False,
        },
        {
            **inputs,
            "ActionNames": ["dynamodb:Query"],
            "ResourceArns": [INDEX_ARN],
            "ContextEntries": context,
        },
    )
    items = [a for a, r in REQUESTS if r == TABLE_ARN]
    first, rest = items[:2], items[2:]
    table = {**inputs, "ActionNames": items, "ResourceArns": [TABLE_ARN], "ContextEntries": context}
    aws.add(
        "iam",
        "simulate_custom_policy",
        {
            "EvaluationResults": [evaluation(a, TABLE_ARN, **extra.get(a, {})) for a in first],
            "IsTruncated": True,
            "Marker": "p2",
        },
        table,
    )
    aws.add(
        "iam",
        "simulate_custom_policy",
        {
            "EvaluationResults": [evaluation(a, TABLE_ARN, **extra.get(a, {})) for a in rest],
            "IsTruncated": False,
        },
        {**table, "Marker": "p2"},
    )


def test_the_simulator_is_given_the_role_as_it_will_be_and_read_to_the_last_page() -> None:
    """Replacing CartsDynamoPolicy: the old document is not simulated beside the candidate (as
    SimulatePrincipalPolicy's additive PolicyInputList would), the other inline and attached
    policies are, and so is the boundary."""
    state = role(S3_ONLY, Default=DEFAULT_POLICY, CartsDynamoPolicy=OLD_CARTS)
    inputs = simulation_inputs(state, POLICY)
    assert json.dumps(OLD_CARTS) not in inputs["PolicyInputList"]
    assert inputs["PolicyInputList"][-1] == POLICY.text
    assert json.dumps(DEFAULT_POLICY) in inputs["PolicyInputList"]
    assert inputs["PermissionsBoundaryPolicyInputList"] == [json.dumps(S3_ONLY)]
    aws = StubbedAWS()
    stub_simulation(aws, state)
    answers, note = simulate(aws.client("iam"), state, POLICY, REQUESTS)
    assert aws.pending() == {}
    assert answers is not None and [(a.action, a.resource) for a in answers] == REQUESTS
    assert all(a.allowed for a in answers) and "permissions boundary" in note


def test_the_simulator_saying_the_boundary_denies_blocks_the_run() -> None:
    state = role(None)
    aws = StubbedAWS()
    no = {"PermissionsBoundaryDecisionDetail": {"AllowedByPermissionsBoundary": False}}
    stub_simulation(aws, state, {"dynamodb:Query": {"decision": "implicitDeny", "specific": no}})
    result = preflight(state, POLICY, REGION, ACCOUNT, Params().table, Params().index)
    result.simulator, result.simulator_note = simulate(aws.client("iam"), state, POLICY, REQUESTS)
    assert result.after.all_allowed and not result.ok
    assert result.blocked_by == PolicyType.BOUNDARY and "dynamodb:Query" in result.verdict()


def test_an_organization_that_denies_is_named_and_no_policy_here_can_fix_it() -> None:
    state = role(None)
    aws = StubbedAWS()
    orgs = {"OrganizationsDecisionDetail": {"AllowedByOrganizations": False}}
    stub_simulation(aws, state, {"dynamodb:PutItem": {"decision": "explicitDeny", **orgs}})
    result = preflight(state, POLICY, REGION, ACCOUNT, Params().table, Params().index)
    result.simulator, _ = simulate(aws.client("iam"), state, POLICY, REQUESTS)
    assert result.blocked_by == PolicyType.SCP
    verdict = result.verdict()
    assert "service control policy" in verdict and "dynamodb:PutItem" in verdict
    assert "No policy in this account can fix it" in verdict


def test_missing_context_values_are_shown_with_the_answer() -> None:
    answer = read_evaluation(
        evaluation("dynamodb:Query", INDEX_ARN, "implicitDeny", missing=["aws:SourceVpce"]),
        INDEX_ARN,
    )
    assert answer == SimulatorAnswer(
        "dynamodb:Query", INDEX_ARN, "implicit_deny", None, None, ("aws:SourceVpce",)
    )


def test_aws_simulate_custom_policy_examples_read_as_the_simulator_meant() -> None:
    """The aws CLI's two documented answers (no ResourceArns: one result for "*")."""
    allowed = aws_example("iam", "simulate-custom-policy", 0)["EvaluationResults"][0]
    denied = aws_example("iam", "simulate-custom-policy", 1)["EvaluationResults"][0]
    assert read_evaluation(allowed, "*").decision == "allowed"
    assert read_evaluation(denied, "*").decision == "implicit_deny"


def test_a_caller_that_may_not_simulate_leaves_the_local_evaluation_alone() -> None:
    aws = StubbedAWS()
    aws.error("iam", "simulate_custom_policy", "AccessDenied", "not authorized", 403)
    answers, note = simulate(aws.client("iam"), role(None), POLICY, REQUESTS)
    assert answers is None and "AccessDenied" in note


@pytest.mark.parametrize("boundary", [None, S3_ONLY])
def test_the_record_names_the_boundary(boundary: dict[str, Any] | None) -> None:
    result = preflight(role(boundary), POLICY, REGION, ACCOUNT, Params().table, Params().index)
    assert result.record()["boundary"] == (BOUNDARY_ARN if boundary else None)
