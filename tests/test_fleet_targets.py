"""The targets file: read whole and checked before anything runs; each mistake one sentence
naming the target and the parameter, exit 2, and no target run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fleet_support import fleet
from helpers import ROOT

from runbook_lib.fleet.command import add_parser
from runbook_lib.fleet.targets import Target, TargetsError, load_targets
from runbook_lib.params import Params

ARN = "arn:aws:iam::{}:role/OrganizationAccountAccessRole"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_targets_file_gives_each_target_its_defaults_and_its_own_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        defaults:
          backend: aws
          region: eu-west-1
          policy_scope: least-privilege
        targets:
          - name: team-01
            assume_role_arn: {ARN.format("111122223333")}
          - name: team-02
            region: us-east-1
            account_id: "444455556666"
            assume_role_arn: {ARN.format("444455556666")}
        """,
    )
    found = load_targets(path)
    assert found.names == ["team-01", "team-02"]
    one, two = found.targets
    assert (one.params.backend, one.params.region, one.params.policy_scope) == (
        "aws",
        "eu-west-1",
        "least-privilege",
    )
    assert one.params.apply is None and not one.params.writes  # plan only by default on AWS
    assert two.params.region == "us-east-1" and two.account == "444455556666"
    assert one.account == "111122223333"  # the role's account
    assert one.params.source == "target 'team-01'"


def test_the_settings_hash_changes_with_any_parameter_or_scenario() -> None:
    base = Target("a", Params())
    assert base.parameters_sha256 == Target("a", Params()).parameters_sha256
    assert (
        len(
            {
                base.parameters_sha256,
                Target("a", Params(timeout_s=60.0)).parameters_sha256,
                Target("a", Params(policy_scope="least-privilege")).parameters_sha256,
                Target("a", Params(), lab_scenario="already-fixed").parameters_sha256,
            }
        )
        == 4
    )
    # The name is the folder, not a setting: a renamed target with the same settings ran the same.
    assert Target("b", Params()).parameters_sha256 == base.parameters_sha256


def test_throttling_keys_name_what_shares_aws_rates() -> None:
    own_lab = Target("a", Params(account_id="111111111111"))
    assert own_lab.account == "111111111111"
    assert own_lab.account_key != Target("b", Params(account_id="111111111111")).account_key
    arn = ARN.format("111122223333")
    aws_a = Target("a", Params(backend="aws", assume_role_arn=arn))
    aws_b = Target("b", Params(backend="aws", account_id="111122223333", region="eu-west-1"))
    assert aws_a.account_key == aws_b.account_key  # one account, whatever the region
    assert aws_a.region_key != aws_b.region_key
    served = Target("c", Params(endpoint_url="http://127.0.0.1:5000", account_id="111122223333"))
    assert served.account_key != aws_a.account_key  # another world, same account number
    no_account = Target("d", Params(backend="aws", profile="ops"))
    assert no_account.account_key == "aws profile ops"


BAD = [
    # (file, phrase, target, parameter)
    (
        "defaults: {}\ntargets:\n  - name: a\n    regoin: us-west-2\n",
        "target 'a': unknown parameter 'regoin' (did you mean 'region'?)",
        "a",
        "regoin",
    ),
    (
        "defaults:\n  colour: blue\ntargets:\n  - name: a\n",
        "defaults: unknown parameter 'colour'",
        None,
        "colour",
    ),
    ("target:\n  - name: a\n", "unknown key 'target'", None, None),
    (
        "targets:\n  - name: a\n  - name: b\n  - name: A\n",
        "target #3 has the name 'A', already used by another target ('a')",
        "A",
        "name",
    ),
    ("targets:\n  - account_id: '111111111111'\n", "target #1 has no name", None, "name"),
    ("targets:\n  - name: ../up\n", "target #1 has the name '../up'", None, "name"),
    ("targets:\n  - name: fleet-summary.json\n", "parameter 'name' must be", None, "name"),
    (
        "targets:\n  - name: a\n    region: us-west-2\n  - name: b\n    region: nowhere\n",
        "target 'b': parameter 'region' must be",
        "b",
        "region",
    ),
    (
        "defaults:\n  timeout_s: -5\ntargets:\n  - name: a\n",
        "target 'a' (from 'defaults'): parameter 'timeout_s'",
        "a",
        "timeout_s",
    ),
    (
        "targets:\n  - name: a\n    account_id: 111111111111\n",
        "target 'a': parameter 'account_id' must be",
        "a",
        "account_id",
    ),
    (
        "defaults:\n  backend: aws\ntargets:\n  - name: a\n  - name: b\n    apply: true\n",
        "target 'b': parameter 'apply' is true for backend 'aws'",
        "b",
        "apply",
    ),
    (
        f"targets:\n  - name: a\n    backend: aws\n    account_id: '111111111111'\n"
        f"    assume_role_arn: {ARN.format('222222222222')}\n",
        "target 'a': parameter 'assume_role_arn' names a role in account 222222222222",
        "a",
        "assume_role_arn",
    ),
    (
        "targets:\n  - name: a\n    backend: aws\n    lab_scenario: already-fixed\n",
        "target 'a': 'lab_scenario' chooses the state of the lab",
        "a",
        "lab_scenario",
    ),
    (
        "targets:\n  - name: a\n    lab_scenario: on-fire\n",
        "target 'a': 'lab_scenario' must be one of workshop, already-fixed",
        "a",
        "lab_scenario",
    ),
    (
        "targets:\n  - name: a\n    region: us-west-2\n    region: eu-west-1\n",
        "twice",
        None,
        "region",
    ),
    ("targets: [name: a\n", "is not valid YAML at line", None, "--targets"),
    ("targets: []\n", "must list its targets under 'targets'", None, None),
    ("- name: a\n", "must hold a mapping with 'defaults' and 'targets'", None, None),
    ("targets:\n  - just-a-name\n", "target #1 must be a mapping", None, "name"),
]


@pytest.mark.parametrize(("text", "phrase", "target", "parameter"), BAD)
def test_each_mistake_is_one_sentence_naming_target_and_parameter(
    tmp_path: Path, text: str, phrase: str, target: str | None, parameter: str | None
) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TargetsError) as err:
        load_targets(path)
    message = str(err.value)
    assert phrase in message, message
    assert message.startswith(("targets file", "cannot read targets file")), message
    assert message.endswith(".") and "\n" not in message
    assert err.value.target == target
    assert err.value.parameter == parameter


def test_apply_on_aws_needs_the_command_s_apply_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  backend: aws\n  apply: true\ntargets:\n  - name: a\n")
    with pytest.raises(TargetsError, match="--apply"):
        load_targets(path)
    assert load_targets(path, allow_aws_apply=True).targets[0].params.writes
    # The lab is no real account: apply true needs no flag there.
    lab = write(tmp_path, "defaults:\n  apply: true\ntargets:\n  - name: a\n")
    assert load_targets(lab).targets[0].params.writes


def test_the_example_targets_files_are_valid() -> None:
    lab = load_targets(ROOT / "params" / "fleet" / "lab.example.yaml")
    assert len(lab) == 9 and all(t.params.is_lab for t in lab.targets)
    aws = load_targets(ROOT / "params" / "fleet" / "aws.example.yaml")
    assert all(not t.params.is_lab and not t.params.writes for t in aws.targets)  # plan only


def test_an_unreadable_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(TargetsError, match=r"^cannot read targets file .*missing\.yaml"):
        load_targets(tmp_path / "missing.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00targets")
    with pytest.raises(TargetsError, match="not UTF-8"):
        load_targets(binary)


@pytest.mark.cli
@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("targets:\n  - name: a\n  - name: a\n", "already used by another target"),
        ("defaults:\n  backend: aws\n  apply: true\ntargets:\n  - name: a\n", "--apply"),
        ("targets:\n  - name: a\n    lab_scenario: on-fire\n", "'lab_scenario' must be one of"),
    ],
)
def test_the_command_exits_2_and_runs_no_target(tmp_path: Path, text: str, phrase: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    done = fleet(tmp_path, "--targets", str(path), "--out", str(out), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carts-runbook fleet: targets file")
    assert phrase in lines[0]
    assert not out.exists()  # nothing written, nothing run
    assert done.stdout == ""


def test_workers_and_a_scheduler_together_are_refused(tmp_path: Path) -> None:
    from runbook_lib.cli import main

    path = write(tmp_path, "targets:\n  - name: a\n")
    argv = ["fleet", "--targets", str(path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.cli
def test_a_scheduler_nobody_serves_is_one_sentence_and_leaves_no_folder(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        path = write(tmp_path, "targets:\n  - name: a\n")
        out = tmp_path / "out"
        done = fleet(tmp_path, "--targets", str(path), "--out", str(out), "--scheduler", address)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"carts-runbook fleet: cannot reach the Dask scheduler at {address}")
    assert not out.exists()  # nothing ran: the same command can be given again


def test_the_command_line_is_checked_before_anything_runs() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="carts-runbook")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["fleet", "--targets", "t.yaml", "--out", "o", "--workers", "2"])
    assert (args.workers, args.per_account, args.per_region, args.resume) == (2, 1, 0, False)
    for bad in (["--workers", "0"], ["--per-account", "-1"], ["--per-region", "x"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["fleet", "--targets", "t.yaml", "--out", "o", *bad])
        assert exit_.value.code == 2
