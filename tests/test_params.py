"""The parameters contract: defaults, validation sentences, params files."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.params import (
    PARAMETER_NAMES,
    ParameterError,
    Params,
    load_params_file,
    params_from_file,
    role_account,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_workshop_names_and_the_lab() -> None:
    p = Params()
    assert (p.backend, p.cluster, p.service) == ("lab", "retail-store-ecs-cluster", "carts")
    assert (p.task_role, p.policy_name) == ("retailStoreEcsTaskRole", "CartsDynamoPolicy")
    assert (p.table, p.index) == ("retail-store-ecs-carts", "idx_global_customerId")
    assert p.lab_account_id == "123456789012"


def test_assume_role_arn_names_the_account_a_lab_seeds() -> None:
    arn = "arn:aws:iam::111122223333:role/OrganizationAccountAccessRole"
    assert role_account(arn) == "111122223333"
    assert role_account("arn:aws-cn:iam::111122223333:role/team/Admin") == "111122223333"
    assert role_account("not an arn") == ""
    assert Params.from_mapping({"assume_role_arn": arn}).lab_account_id == "111122223333"
    same = {"assume_role_arn": arn, "account_id": "111122223333", "backend": "aws"}
    assert Params.from_mapping(same).assume_role_arn == arn


def test_apply_null_writes_only_on_the_lab() -> None:
    assert Params.from_mapping({"backend": "lab"}).writes is True
    assert Params.from_mapping({"backend": "aws"}).writes is False
    assert Params.from_mapping({"backend": "aws", "apply": True}).writes is True
    assert Params.from_mapping({"backend": "lab", "apply": False}).writes is False


BAD = [
    ({"backend": "localstack"}, "backend", "'lab' or 'aws'"),
    ({"backend": ""}, "backend", "'lab' or 'aws'"),
    ({"region": "us_west_2"}, "region", "AWS region"),
    ({"region": "US-WEST-2"}, "region", "AWS region"),
    ({"region": 5}, "region", "AWS region"),
    ({"account_id": "12345"}, "account_id", "12-digit"),
    ({"account_id": 123456789012}, "account_id", "12-digit"),
    ({"backend": "aws", "profile": "has space"}, "profile", "profile name"),
    ({"profile": "workshop"}, "profile", "only used with backend 'aws'"),
    ({"assume_role_arn": "OrganizationAccountAccessRole"}, "assume_role_arn", "IAM role ARN"),
    ({"assume_role_arn": "arn:aws:iam::12345:role/Admin"}, "assume_role_arn", "IAM role ARN"),
    (
        {"assume_role_arn": "arn:aws:sts::111122223333:assumed-role/Admin/me"},
        "assume_role_arn",
        "IAM role ARN",
    ),
    ({"assume_role_arn": 111122223333}, "assume_role_arn", "as text"),
    (
        {
            "account_id": "111122223333",
            "assume_role_arn": "arn:aws:iam::444455556666:role/OrganizationAccountAccessRole",
        },
        "assume_role_arn",
        "same account",
    ),
    ({"endpoint_url": "127.0.0.1:5000"}, "endpoint_url", "http(s) URL"),
    ({"cluster": "bad cluster!"}, "cluster", "ECS cluster name"),
    ({"cluster": ""}, "cluster", "ECS cluster name"),
    ({"service": "a/b"}, "service", "ECS service name"),
    ({"task_role": "x" * 65}, "task_role", "IAM role name"),
    ({"task_role": "arn:aws:iam::123456789012:role/x"}, "task_role", "IAM role name"),
    ({"execution_role": "retailStoreEcsTaskRole"}, "execution_role", "other than 'task_role'"),
    ({"policy_name": "Carts Policy"}, "policy_name", "IAM policy name"),
    ({"table": "ab"}, "table", "DynamoDB table name"),
    ({"index": "idx global"}, "index", "DynamoDB index name"),
    ({"policy_scope": "admin"}, "policy_scope", "'workshop' or 'least-privilege'"),
    ({"apply": "yes"}, "apply", "true, false or null"),
    ({"rollback": None}, "rollback", "true or false"),
    ({"timeout_s": -1}, "timeout_s", "greater than 0"),
    ({"timeout_s": 0}, "timeout_s", "greater than 0"),
    ({"timeout_s": True}, "timeout_s", "number of seconds"),
    ({"timeout_s": float("nan")}, "timeout_s", "number of seconds"),
    ({"timeout_s": 99999}, "timeout_s", "at most 3600"),
    ({"regoin": "us-west-2"}, "regoin", "unknown parameter"),
]


@pytest.mark.parametrize(("values", "name", "phrase"), BAD)
def test_bad_value_gets_one_sentence_naming_the_parameter(
    values: dict[str, object], name: str, phrase: str
) -> None:
    with pytest.raises(ParameterError) as err:
        Params.from_mapping(values)
    msg = str(err.value)
    assert err.value.name == name
    assert repr(name) in msg and phrase in msg
    assert msg.endswith(".") and "\n" not in msg


def test_every_parameter_has_a_bad_case() -> None:
    assert {name for _, name, _ in BAD} >= set(PARAMETER_NAMES)


def test_params_files_in_the_repo_are_valid() -> None:
    for path in sorted((ROOT / "params").glob("*.yaml")):
        p = params_from_file(path)
        assert p.source == str(path)
    lab = params_from_file(ROOT / "params" / "lab.yaml")
    assert lab.backend == "lab" and lab.writes
    aws = params_from_file(ROOT / "params" / "aws.example.yaml")
    assert aws.backend == "aws" and aws.apply is False and not aws.writes


def test_params_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="cannot read params file"):
        load_params_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [lab\n")
    with pytest.raises(ParameterError, match="not valid YAML at line"):
        load_params_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- backend\n")
    with pytest.raises(ParameterError, match="must hold a mapping"):
        load_params_file(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("backend: lab\ncolour: blue\n")
    with pytest.raises(ParameterError, match=r"unknown parameter 'colour' in .*unknown\.yaml"):
        params_from_file(unknown)


def test_public_dict_round_trips_and_holds_no_secret_names() -> None:
    p = Params.from_mapping({"backend": "aws", "profile": "workshop", "apply": False})
    d = p.public_dict()
    assert Params.from_mapping(d) == p
    assert not any("secret" in k or "key" in k or "token" in k for k in d)
