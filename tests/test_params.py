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
        {"assume_role_arn": "arn:aws-cn:iam::111122223333:role/Admin"},
        "assume_role_arn",
        "partition aws-cn but region 'us-west-2' is in partition aws",
    ),
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


# --- strict inputs (whole strings, ASCII, AWS's character sets and lengths) ---------------------

STRICT = [
    ({"policy_name": "CartsDynamoPolicy\n"}, "policy_name", "IAM policy name"),
    ({"task_role": "retailStoreEcsTaskRole\n"}, "task_role", "IAM role name"),
    ({"region": "us-west-2\n"}, "region", "AWS region"),
    ({"cluster": "retail-store-ecs-cluster\n"}, "cluster", "ECS cluster name"),
    ({"table": "retail-store-ecs-carts\n"}, "table", "DynamoDB table name"),
    ({"account_id": "123456789012\n"}, "account_id", "12-digit"),
    ({"endpoint_url": "http://127.0.0.1:5000\n"}, "endpoint_url", "http(s) URL"),
    # Fullwidth digits are \d without re.ASCII; they would land in the policy's ARNs.
    ({"account_id": "１２３４５６７８９０１２"}, "account_id", "12-digit"),
    ({"region": "us-west-２"}, "region", "AWS region"),
    # Letters of other scripts are \w without re.ASCII.
    ({"task_role": "rôle"}, "task_role", "IAM role name"),
    ({"policy_name": "Pоlicy"}, "policy_name", "IAM policy name"),  # a Cyrillic о
    ({"index": "idx_ünïcode"}, "index", "DynamoDB index name"),
    ({"cluster": "x" * 256}, "cluster", "ECS cluster name"),
    ({"service": "carts.v2"}, "service", "ECS service name"),
    ({"policy_name": "p" * 129}, "policy_name", "IAM policy name"),
    ({"table": "t" * 256}, "table", "DynamoDB table name"),
    ({"endpoint_url": "http://127.0.0.1:99999"}, "endpoint_url", "port from 0 to 65535"),
    ({"region": "us-WEST-2"}, "region", "AWS region"),
]


@pytest.mark.parametrize(("values", "name", "phrase"), STRICT)
def test_patterns_match_whole_ascii_strings(
    values: dict[str, object], name: str, phrase: str
) -> None:
    with pytest.raises(ParameterError) as err:
        Params.from_mapping(values)
    assert err.value.name == name
    msg = str(err.value)
    assert phrase in msg and msg.endswith(".") and "\n" not in msg


def test_names_at_aws_limits_are_accepted() -> None:
    """AWS-FACTS §10: role 64, policy 128, ECS 255, DynamoDB 3 and 255, IAM's +=,.@- set."""
    p = Params.from_mapping(
        {
            "task_role": "r" * 64,
            "execution_role": "a+b=c,d.e@f-g_h",
            "policy_name": "p" * 128,
            "cluster": "c" * 255,
            "service": "s-_1",
            "table": "t.b",
            "index": "i" * 255,
        }
    )
    assert len(p.task_role) == 64 and len(p.policy_name) == 128 and len(p.cluster) == 255


# --- regions -------------------------------------------------------------------------------------


def test_a_well_formed_region_aws_does_not_have_is_refused_for_both_backends() -> None:
    for backend in ("lab", "aws"):
        with pytest.raises(ParameterError) as err:
            Params.from_mapping({"backend": backend, "region": "us-west-3"})
        assert err.value.name == "region"
        assert str(err.value) == (
            "parameter 'region' must be a region AWS has, such as 'us-west-2'; got 'us-west-3', "
            "shaped like a region of partition aws but not in botocore's list of regions "
            "(did you mean 'us-west-2'?)."
        )


@pytest.mark.parametrize(
    ("region", "why"),
    [
        ("cn-north-1", "it is in partition aws-cn, and the lab keeps IAM in partition aws"),
        ("us-gov-west-1", "it is in partition aws-us-gov"),
    ],
)
def test_a_real_region_the_lab_cannot_hold_is_refused_for_the_lab_only(
    region: str, why: str
) -> None:
    with pytest.raises(ParameterError, match="must be a region the lab can hold") as err:
        Params.from_mapping({"region": region})
    assert why in str(err.value)
    assert Params.from_mapping({"backend": "aws", "region": region}).region == region


def test_the_lab_regions_are_the_regions_moto_builds_for_the_labs_services() -> None:
    """moto's AccountSpecificBackend.regions (botocore's get_available_regions per partition)
    for EC2, DynamoDB, Logs and ECS, in the aws partition: exactly what the lab accepts."""
    from moto.backends import get_backend

    from runbook_lib import regions

    aws = regions.partition_regions("aws")
    held = set(aws)
    for service in regions.LAB_REGIONAL_SERVICES:
        moto_regions = set(get_backend(service)["123456789012"].regions)  # type: ignore[call-overload]
        assert regions.service_regions(service) == moto_regions & aws
        held &= moto_regions
    assert regions.lab_regions() == held
    assert {"us-west-2", "us-east-1", "eu-west-1"} <= held


def test_a_region_only_announced_is_refused_for_both_backends() -> None:
    """botocore's partitions.json already names me-west-1, but endpoints.json (the table
    get_partition_for_region and get_available_regions read, and partitions.py holds) does not
    list it and no service has an endpoint there: not a region to run in yet."""
    import json
    from importlib import resources

    announced = json.loads((resources.files("botocore") / "data" / "partitions.json").read_bytes())
    aws = next(p for p in announced["partitions"] if p["id"] == "aws")
    assert "me-west-1" in aws["regions"]
    for backend in ("lab", "aws"):
        with pytest.raises(ParameterError, match="not in botocore's list of regions"):
            Params.from_mapping({"backend": backend, "region": "me-west-1"})


# --- numbers YAML makes, echo limit ----------------------------------------------------------------


def test_yaml_numbers_get_a_hint_to_quote_them(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("account_id: 012345670123\n")
    with pytest.raises(ParameterError) as err:
        params_from_file(f)
    assert str(err.value) == (
        "parameter 'account_id' must be empty or a 12-digit AWS account id, as text; got the "
        "number 1402433619 (YAML reads 012345670123 as the octal number 1402433619; quote it: "
        "'012345670123')."
    )
    f.write_text("account_id: 123456789012\n")
    with pytest.raises(ParameterError, match=r"YAML reads 123456789012 as a number; quote it"):
        params_from_file(f)
    f.write_text("index: 1.10\n")
    with pytest.raises(ParameterError, match=r"YAML reads 1.10 as the number 1.1; quote it"):
        params_from_file(f)
    f.write_text("account_id: '012345670123'\ntimeout_s: 60\n")
    p = params_from_file(f)
    assert p.account_id == "012345670123" and p.timeout_s == 60.0


def test_command_line_values_read_like_a_params_file() -> None:
    from runbook_lib.params import parse_value

    with pytest.raises(ParameterError, match="YAML reads 012345670123 as the octal number"):
        Params.from_mapping({"account_id": parse_value("012345670123")})
    assert parse_value("'012345670123'") == "012345670123"
    assert parse_value("[unclosed") == "[unclosed"  # not YAML: the text, for the check to judge
    with pytest.raises(ParameterError, match="an alias"):
        parse_value("[&a [1, 2], *a]")


def test_a_number_from_papermill_or_the_notebook_gets_the_generic_hint() -> None:
    with pytest.raises(ParameterError, match=r"-r keeps them text"):
        Params.from_mapping({"account_id": 12345670123})


def test_echoed_values_are_cut_at_200_characters_with_bounded_work() -> None:
    from runbook_lib.params import ECHO_LIMIT, echo

    with pytest.raises(ParameterError) as err:
        Params.from_mapping({"table": "t" * 10_000_000})
    got = str(err.value).split("; got ", 1)[1]
    assert len(got) == ECHO_LIMIT + 1 and got.endswith("….")
    # What YAML aliases build: a value that shares itself, 10**30 leaves if printed in full.
    bomb: list[object] = ["lol"]
    for _ in range(30):
        bomb = [bomb] * 10
    text = echo(bomb)
    assert len(text) <= ECHO_LIMIT
    with pytest.raises(ParameterError) as err:
        Params.from_mapping({"index": bomb})
    assert len(str(err.value)) < 400
    with pytest.raises(ParameterError) as err:
        Params.from_mapping({"x" * 5000: 1})
    assert len(str(err.value)) < 600


# --- params files ----------------------------------------------------------------------------------

BAD_FILES = [
    (b"", "is empty"),
    (b"# nothing but a comment\n---\n", "is empty"),
    (b"backend: lab\nregion: us-west-2\nbackend: aws\n", "holds the key 'backend' twice at line 3"),
    (b"base: &b us-west-2\nregion: *b\n", "holds an alias (*name) at line 2"),
    (b"<<: {backend: lab}\n", "holds a merge key (<<) at line 1"),
    (
        b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"index: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "holds an alias (*name) at line 2",
    ),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "is binary, not a YAML text file"),
    (b"region: caf\xe9\n", "is not UTF-8 text"),
    (b"1: lab\n", "has the key 1, which is not a parameter name"),
    (b"x" * (64 * 1024 + 1), "is larger than 64 KiB"),
]


@pytest.mark.parametrize(("content", "phrase"), BAD_FILES)
def test_bad_params_files_get_one_sentence(tmp_path: Path, content: bytes, phrase: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(content)
    with pytest.raises(ParameterError) as err:
        load_params_file(f)
    msg = str(err.value)
    assert err.value.name == "params"
    assert msg.startswith(f"params file {str(f)!r} ") and phrase in msg
    assert msg.endswith(".") and "\n" not in msg


def test_a_program_or_a_directory_as_params_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"^params file '/bin/ls' is binary, not a YAML"):
        load_params_file("/bin/ls")
    with pytest.raises(ParameterError, match=r"^cannot read params file .*: Is a directory\.$"):
        load_params_file(tmp_path)


def test_an_explicit_empty_mapping_is_all_defaults(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("{}\n")
    assert params_from_file(f) == Params()


# --- unknown names and papermill's injected cell ----------------------------------------------


def test_an_unknown_name_gets_the_nearest_known_one() -> None:
    with pytest.raises(ParameterError) as err:
        Params.from_mapping({"polcy_scope": "least-privilege"}, source="the command line")
    assert str(err.value).startswith(
        "unknown parameter 'polcy_scope' in the command line (did you mean 'policy_scope'?); "
        "allowed: backend, region,"
    )
    with pytest.raises(ParameterError) as err:
        Params.from_mapping({"wibble": "blue"})
    assert "did you mean" not in str(err.value)


PARAMETERS_CELL = 'backend: str = "lab"  # the backend\nregion: str = "us-west-2"\n'


def injected_cell(**values: object) -> str:
    """papermill's own rendering of the injected cell (its PythonTranslator)."""
    from papermill.translators import translate_parameters

    return str(translate_parameters("python3", "python", values, "Parameters"))


def test_injected_names_come_from_papermills_cell_only() -> None:
    from runbook_lib.params import injected_names

    cell = injected_cell(polcy_scope="least-privilege", region="eu-west-1", timeout_s=60)
    history = ["", PARAMETERS_CELL, cell, "import runbook_lib as rb"]
    assert injected_names(history) == ["polcy_scope", "region", "timeout_s"]
    # A learner's cells that only look alike: not a comment header, or not literal assignments.
    assert injected_names(["", PARAMETERS_CELL, "polcy = 1\n"]) == []
    assert injected_names(["# Parameters\nx = compute()\n"]) == []
    # The newest injected cell wins (a papermill output notebook re-run in JupyterLab).
    later = injected_cell(region="eu-west-1")
    assert injected_names(["", cell, later]) == ["region"]


def test_notebook_values_keep_unknown_injected_names_for_the_contract_to_refuse() -> None:
    from runbook_lib.params import notebook_values

    cell = injected_cell(polcy_scope="least-privilege", PAPERMILL_INPUT_PATH="in.ipynb")
    namespace = {
        "_ih": ["", PARAMETERS_CELL, cell],
        "backend": "lab",
        "region": "us-west-2",
        "polcy_scope": "least-privilege",
        "PAPERMILL_INPUT_PATH": "in.ipynb",
        "rb": object(),
    }
    values = notebook_values(namespace)
    assert values == {"backend": "lab", "region": "us-west-2", "polcy_scope": "least-privilege"}
    with pytest.raises(ParameterError, match=r"did you mean 'policy_scope'\?"):
        Params.from_mapping(values, source="the notebook's parameters")
    # No injected cell (JupyterLab, or papermill without parameters): the contract's names only.
    assert notebook_values({"_ih": ["", PARAMETERS_CELL], "region": "us-west-2"}) == {
        "region": "us-west-2"
    }
