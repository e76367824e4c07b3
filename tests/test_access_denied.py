"""AWS's AccessDenied sentence, written by the lab and read by the diagnosis."""

from __future__ import annotations

import pytest

from runbook_lib.access_denied import (
    EXPLICIT_DENY,
    NO_ALLOW,
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
