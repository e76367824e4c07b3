"""AssumeRole in the lab answers as STS does: credentials only for a role that exists and trusts
the caller, AccessDenied (HTTP 403) otherwise; and the runbook's ``assume_role_arn`` acts as the
role, with a session name that says who ran it."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import ACCOUNT, Clients

from runbook_lib.errors import RoleNotAssumed
from runbook_lib.lab import Lab
from runbook_lib.lab.assume_role import trusts
from runbook_lib.params import Params
from runbook_lib.session import connect, session_name

pytestmark = pytest.mark.lab

PARTICIPANT = f"arn:aws:iam::{ACCOUNT}:role/WSParticipantRole"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


def statement(principal: Any, effect: str = "Allow", action: Any = "sts:AssumeRole") -> Any:
    return {"Effect": effect, "Principal": principal, "Action": action}


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        ({"AWS": ROOT}, True),
        ({"AWS": ACCOUNT}, True),
        ({"AWS": [f"arn:aws:iam::{'9' * 12}:root", PARTICIPANT]}, True),
        ({"AWS": "*"}, True),
        ("*", True),
        ({"AWS": f"arn:aws:iam::{'9' * 12}:root"}, False),
        ({"Service": "ecs-tasks.amazonaws.com"}, False),
    ],
)
def test_a_trust_policy_allows_the_callers_account_or_role(principal: Any, allowed: bool) -> None:
    policy = {"Version": "2012-10-17", "Statement": [statement(principal)]}
    assert trusts(policy, ACCOUNT, PARTICIPANT) is allowed


def test_a_deny_in_the_trust_policy_wins_and_no_role_trusts_nobody() -> None:
    both = {"Statement": [statement({"AWS": ROOT}), statement({"AWS": PARTICIPANT}, "Deny")]}
    assert trusts(both, ACCOUNT, PARTICIPANT) is False
    assert (
        trusts({"Statement": [statement({"AWS": ROOT}, action="s3:*")]}, ACCOUNT, PARTICIPANT)
        is False
    )
    assert trusts(None, ACCOUNT, PARTICIPANT) is False


def test_sts_refuses_a_role_that_does_not_exist_or_trusts_only_a_service(clients: Clients) -> None:
    for role in ("OrganizationAccountAccessRole", "retailStoreEcsTaskRole"):
        arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        with pytest.raises(ClientError) as err:
            clients.sts.assume_role(RoleArn=arn, RoleSessionName="carts-runbook.test")
        answer = err.value.response
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert answer["Error"]["Code"] == "AccessDenied"
        assert answer["Error"]["Message"] == (
            f"User: arn:aws:sts::{ACCOUNT}:assumed-role/WSParticipantRole/Participant is not "
            f"authorized to perform: sts:AssumeRole on resource: {arn}"
        )


def test_sts_hands_out_credentials_for_a_role_that_trusts_the_account(clients: Clients) -> None:
    given = clients.sts.assume_role(RoleArn=PARTICIPANT, RoleSessionName="carts-runbook.test")
    assert given["AssumedRoleUser"]["Arn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/WSParticipantRole/carts-runbook.test"
    )
    assert given["Credentials"]["AccessKeyId"].startswith("ASIA")


def test_the_runbook_assumes_its_role_and_says_who_ran_it(lab: Lab) -> None:
    params = Params.from_mapping({"endpoint_url": lab.endpoint_url, "assume_role_arn": PARTICIPANT})
    conn = connect(params)
    assert conn.identity is not None
    assert conn.identity.arn == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/WSParticipantRole/{session_name()}"
    )
    # The temporary credentials sign every call (IAM reads the account's roles).
    names = [r["RoleName"] for r in conn.client("iam").list_roles()["Roles"]]
    assert "retailStoreEcsTaskRole" in names
    bad = Params.from_mapping(
        {
            "endpoint_url": lab.endpoint_url,
            "assume_role_arn": f"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole",
        }
    )
    with pytest.raises(RoleNotAssumed) as err:
        connect(bad)
    message = str(err.value)
    assert "parameter 'assume_role_arn'" in message and "nothing was written" in message
    assert "\n" not in message


def test_the_session_name_is_what_sts_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "ana maría/ops")
    assert session_name() == "carts-runbook.ana-mar-a-ops"
    monkeypatch.setattr("getpass.getuser", lambda: "x" * 100)
    assert len(session_name()) == 64
