"""A lab that holds a fleet: an organization in one lab (``serve --accounts N``), seen through
boto3 as an organization's admin sees AWS: the management account's keys, AssumeRole into
``OrganizationAccountAccessRole`` landing in each member (AWS-FACTS §11), every member a world of
its own in the scenario of the mix, and the closed lab's checks and the answer checks for every
account.

The organization runs on a stepped clock (it moves only when a test waits) and holds its answers
to botocore's output shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import CLUSTER, ROLE, ROOT, SERVICE, clean_env

from runbook_lib.lab import Lab, LabConfig, LabConfigError
from runbook_lib.lab.guard import TOKEN_HEADER
from runbook_lib.lab.organization import mix, scenario_of
from runbook_lib.params import Params

pytestmark = pytest.mark.lab

MANAGEMENT = "123456789012"


@pytest.fixture(scope="module")
def org() -> Iterator[Lab]:
    """Eight member accounts in the realistic mix, answers validated, on a stepped clock."""
    config = LabConfig(clock="stepped", validate_responses=True)
    with Lab.start_organization(mix(8, Params()), config, management=MANAGEMENT) as running:
        yield running
        state = running.state()
        assert state["shape_errors"] == [], "the lab answered what AWS could not send"
        for account in state["accounts"]:
            assert account["process_errors"] == [], account["account_id"]


def session(lab: Lab, creds: dict[str, Any] | None = None) -> boto3.Session:
    if creds is None:
        return boto3.Session(
            aws_access_key_id="lab", aws_secret_access_key="lab", region_name=lab.region
        )
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=lab.region,
    )


def member(lab: Lab, account: str) -> boto3.Session:
    """The management account's way into ``account``, as an organization's admin takes it."""
    sts = session(lab).client("sts", endpoint_url=lab.endpoint_url)
    creds = sts.assume_role(RoleArn=lab.role_arn(account), RoleSessionName="admin")
    return session(lab, creds["Credentials"])


def client(s: boto3.Session, lab: Lab, service: str) -> Any:
    return s.client(service, endpoint_url=lab.endpoint_url)


def test_the_mix_is_mostly_the_workshop_with_one_of_each_real_account_state() -> None:
    names = [scenario_of(i) for i in range(1, 21)]
    assert names[:5] == [
        "workshop",
        "step-done",
        "execution-role",
        "permissions-boundary",
        "circuit-breaker",
    ]
    assert names.count("workshop") > len(names) / 2
    assert {i + 1 for i, n in enumerate(names) if n == "step-done"} == {2, 8, 14, 20}
    accounts = [p.account_id for p, _ in mix(20, Params(), seed=3)]
    assert len(set(accounts)) == 20 and MANAGEMENT not in accounts
    assert all(len(a) == 12 and a.isdigit() for a in accounts)
    assert accounts == [p.account_id for p, _ in mix(20, Params(), seed=3)]  # from the seed


def test_assume_role_lands_in_each_member_and_the_lab_keys_stay_in_management(org: Lab) -> None:
    admin = client(session(org), org, "sts").get_caller_identity()
    assert admin["Account"] == MANAGEMENT
    assert admin["Arn"] == f"arn:aws:sts::{MANAGEMENT}:assumed-role/WSParticipantRole/Participant"
    # The management account runs no workload.
    assert client(session(org), org, "ecs").list_clusters()["clusterArns"] == []
    for account in org.members:
        s = member(org, account)
        who = client(s, org, "sts").get_caller_identity()
        assert who["Account"] == account
        assert who["Arn"] == (
            f"arn:aws:sts::{account}:assumed-role/OrganizationAccountAccessRole/admin"
        )
        role = client(s, org, "iam").get_role(RoleName=ROLE)["Role"]
        assert role["Arn"] == f"arn:aws:iam::{account}:role/{ROLE}"
        service = client(s, org, "ecs").describe_services(cluster=CLUSTER, services=[SERVICE])
        assert service["services"][0]["serviceArn"].split(":")[4] == account


def test_the_organization_role_is_as_organizations_creates_it(org: Lab) -> None:
    account = next(iter(org.members))
    iam = client(member(org, account), org, "iam")
    role = iam.get_role(RoleName="OrganizationAccountAccessRole")["Role"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{MANAGEMENT}:root"}
    assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
    attached = iam.list_attached_role_policies(RoleName="OrganizationAccountAccessRole")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["AdministratorAccess"]


def test_accounts_are_apart(org: Lab) -> None:
    first, second = list(org.members)[:2]
    iam = client(member(org, first), org, "iam")
    iam.create_role(RoleName="OnlyInFirst", AssumeRolePolicyDocument=json.dumps({}))
    try:
        with pytest.raises(ClientError, match="NoSuchEntity"):
            client(member(org, second), org, "iam").get_role(RoleName="OnlyInFirst")
        with pytest.raises(ClientError, match="NoSuchEntity"):
            client(session(org), org, "iam").get_role(RoleName="OnlyInFirst")
        assert org.account(first).iam_writes == ["CreateRole"]
        assert org.account(second).iam_writes == []
    finally:
        iam.delete_role(RoleName="OnlyInFirst")
        org.account(first).iam_writes.clear()


def test_sts_refuses_a_role_that_does_not_trust_the_management_account(org: Lab) -> None:
    sts = client(session(org), org, "sts")
    account = next(iter(org.members))
    for role in ("WSParticipantRole", "NoSuchRole"):
        arn = f"arn:aws:iam::{account}:role/{role}"
        with pytest.raises(ClientError) as err:
            sts.assume_role(RoleArn=arn, RoleSessionName="admin")
        assert err.value.response["Error"]["Code"] == "AccessDenied"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err.value.response["Error"]["Message"] == (
            f"User: arn:aws:sts::{MANAGEMENT}:assumed-role/WSParticipantRole/Participant is not "
            f"authorized to perform: sts:AssumeRole on resource: {arn}"
        )


def test_each_member_plays_its_scenario(org: Lab) -> None:
    """Each account as the mix says, read through the API in that account."""
    for account, (_, name) in zip(org.members, mix(8, Params()), strict=True):
        s = member(org, account)
        iam, ecs = client(s, org, "iam"), client(s, org, "ecs")
        policies = iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
        service = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
        rollout = service["deployments"][0]["rolloutState"]
        role = iam.get_role(RoleName=ROLE)["Role"]
        assert org.account(account).config.scenario == name
        if name == "step-done":
            assert "CartsDynamoPolicy" in policies and rollout == "COMPLETED", account
        else:
            assert "CartsDynamoPolicy" not in policies, account
        if name == "permissions-boundary":
            assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == (
                f"arn:aws:iam::{account}:policy/RetailStoreTaskRoleBoundary"
            )
        else:
            assert "PermissionsBoundary" not in role
        if name == "circuit-breaker":
            assert rollout == "FAILED"
        if name == "execution-role":
            stopped = ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="STOPPED")
            tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=stopped["taskArns"])["tasks"]
            # Since the policy was detached, every task stops before carts runs.
            failed = [t for t in tasks if t["stopCode"] == "TaskFailedToStart"]
            assert len(failed) >= 2
            assert all("ResourceInitializationError" in t["stoppedReason"] for t in failed)
        if name == "workshop":
            assert rollout == "IN_PROGRESS", account


def test_the_closed_lab_checks_hold_for_member_requests(org: Lab) -> None:
    """A page cannot reach a member either: a foreign Origin is refused whatever the keys."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    account = next(iter(org.members))
    creds = member(org, account).get_credentials().get_frozen_credentials()
    request = AWSRequest(
        method="POST",
        url=org.endpoint_url + "/",
        data="Action=GetCallerIdentity&Version=2011-06-15",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
    )
    SigV4Auth(creds, "sts", org.region).add_auth(request)
    prepared = urllib.request.Request(
        request.url, data=request.body, headers=dict(request.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(prepared, timeout=10)
    assert err.value.code == 403


def test_faults_are_set_per_account_through_the_control_route(org: Lab) -> None:
    first, second = list(org.members)[:2]
    body = json.dumps({"account": first, "throttle_rate": 0.5}).encode()
    request = urllib.request.Request(
        org.endpoint_url + "/_lab/faults",
        data=body,
        method="POST",
        headers={TOKEN_HEADER: org.token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["faults"]["throttle_rate"] == 0.5
        assert org.account(first).world.faults.throttle_rate == 0.5
        assert org.account(second).world.faults.throttle_rate == 0.0
        unknown = json.dumps({"account": "999999999990", "throttle_rate": 0.5}).encode()
        request.data = unknown
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert (
            err.value.code == 400 and "holds no account 999999999990" in err.value.read().decode()
        )
    finally:
        org.set_faults(throttle_rate=0.0)


def test_an_organization_is_in_one_partition_and_each_account_once() -> None:
    with pytest.raises(LabConfigError, match="an organization's accounts are all in one partition"):
        Lab.start_organization(
            [
                (Params(account_id="111111111101"), "workshop"),
                (Params(account_id="111111111102", region="cn-north-1"), "workshop"),
            ]
        )
    with pytest.raises(LabConfigError, match="account 111111111101 is given twice"):
        Lab.start_organization(
            [
                (Params(account_id="111111111101"), "workshop"),
                (Params(account_id="111111111101"), "step-done"),
            ]
        )


def test_an_organization_in_aws_cn() -> None:
    """Every ARN in the region's partition: the organization role's trust and the caller."""
    members = [(Params(account_id="111111111101", region="cn-north-1"), "workshop")]
    config = LabConfig(clock="stepped", validate_responses=True)
    with Lab.start_organization(members, config, management="999999999999") as lab:
        assert lab.role_arn("111111111101") == (
            "arn:aws-cn:iam::111111111101:role/OrganizationAccountAccessRole"
        )
        who = client(member(lab, "111111111101"), lab, "sts").get_caller_identity()
        assert who["Arn"].startswith("arn:aws-cn:sts::111111111101:assumed-role/")
        assert lab.state()["shape_errors"] == []


@pytest.mark.cli
def test_serve_accounts_prints_the_exports_and_every_account(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.lab", "serve", "--accounts", "5"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        exports = [process.stdout.readline().rstrip("\n") for _ in range(5)]
        assert exports[0].startswith("export AWS_ENDPOINT_URL=http://127.0.0.1:")
        lines = [process.stderr.readline().rstrip("\n") for _ in range(6)]
    finally:
        process.terminate()
        process.communicate(timeout=30)
    scenarios = [line.split("scenario ")[1].split(")")[0] for line in lines[:5]]
    assert scenarios == [scenario_of(i) for i in range(1, 6)]
    assert all(":role/OrganizationAccountAccessRole" in line for line in lines[:5])
    assert lines[5].startswith("lab: serving an organization of 5 accounts at http://127.0.0.1:")
    assert "management account 123456789012" in lines[5]


@pytest.mark.cli
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--accounts", "0"], "--accounts must be from 1 to 100; got 0"),
        (["--accounts", "101"], "--accounts must be from 1 to 100; got 101"),
        (["--accounts", "3", "--scenario", "sidecar"], "--scenario chooses the state of a one"),
    ],
)
def test_serve_accounts_refuses_what_it_cannot_hold(
    tmp_path: Path, args: list[str], said: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runbook_lib.lab", "serve", *args],
        cwd=ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("lab: ") and said in done.stderr
