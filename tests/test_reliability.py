"""Reliability and safety of headless runs: AWS misbehaving (throttling, slow IAM propagation, an
execution-role failure, the endpoint dying mid-run), runs interrupted and repeated, a same-named
policy already on the role, the aws backend's write guard and account check, and credentials kept
out of every output. Each run is the real CLI (papermill) against labs on loopback in this process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import (
    CLI,
    ROLE,
    ROOT,
    STEM,
    Clients,
    cell_text,
    cli_env,
    error_outputs,
    inline_policies,
    output_dir,
    read_record,
    run_cli,
    wait_for,
)

from runbook_lib.lab import Lab
from runbook_lib.params import LAB_DEFAULT_ACCOUNT, Params
from runbook_lib.plan import plan
from runbook_lib.policy import render_policy, same_policy
from runbook_lib.record import RunRecord, find_secrets
from runbook_lib.runbook import BEFORE_APPLY, Runbook

#: The runs here are other processes (the CLI, papermill): they cannot move a stepped lab.
LAB_CLOCK = "real"

POLICY = "CartsDynamoPolicy"
OTHER_ACCOUNT = "210987654321"

#: Credentials shaped like real ones (an access key id, a 40-character secret, a session token).
FAKE_KEY_ID = "AKIAQ3EGRELIABILITY7"
FAKE_SECRET = "m8Kq2vT9xLr4Wn7Bz1Yc5Hd0Jf6Gp3Se8Ua2Vb4X"
FAKE_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKENforTHEreliabilityTEST0123456789abcdefABCDEF=="


def newest_stop(lab: Lab) -> bool:
    """Whether the lab's newest stopped task failed to start."""
    stopped = [t for t in lab.state()["tasks"] if t["lastStatus"] == "STOPPED"]
    return bool(stopped) and stopped[-1]["stopCode"] == "TaskFailedToStart"


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment of a backend-aws run whose AWS is the lab: boto3 honours AWS_ENDPOINT_URL,
    and the credentials come from the environment as on an operator's machine."""
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=FAKE_KEY_ID,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_SESSION_TOKEN=FAKE_TOKEN,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def assert_short_failure(proc: subprocess.CompletedProcess[str], out: Path) -> None:
    """Failed with a sentence, not a traceback: in the CLI's stderr and in the notebook."""
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(proc.stderr.splitlines()) < 25, proc.stderr
    errors = error_outputs(out)
    assert len(errors) == 1
    assert len(errors[0]["traceback"]) == 1 and "Traceback" not in errors[0]["traceback"][0]


# --- AWS misbehaving --------------------------------------------------------------------------


@pytest.mark.notebook
def test_throttling_is_retried_and_the_run_finishes(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """AWS throttles a share of calls (IAM/STS 'Throttling', ECS 'ThrottlingException', ...):
    botocore's standard retry mode backs off and retries, and the run ends as without throttling."""
    fresh.set_faults(throttle_rate=0.3)
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["outcome"] == "fixed: carts is RUNNING"
    watch = record["steps"]["watch"]
    assert watch["outcome"] == "running"
    # No propagation delay here: a task denied while the write was being retried was denied by
    # the old policy, and must not count as one the change failed to save.
    assert watch["tasks_denied_after_change"] == 0 and watch["propagation_delay_seen"] is False
    assert fresh.iam_writes == ["PutRolePolicy"]


def test_the_change_is_timed_when_the_write_lands(
    fresh: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled put-role-policy is retried for a while; tasks denied meanwhile were denied by
    the old policy, so the watch's clock starts when the write has landed."""
    from runbook_lib.writes import PolicyWrite

    real_send = PolicyWrite.send

    def slow_send(self: PolicyWrite, iam: Any, clock: Any) -> None:
        time.sleep(0.3)  # the retries' back-off
        real_send(self, iam, clock)

    monkeypatch.setattr(PolicyWrite, "send", slow_send)
    params = Params.from_mapping({"endpoint_url": fresh.endpoint_url})
    run = Runbook(params, RunRecord.create(tmp_path / "record.json"))
    for step in ("connect", "diagnose", "render_policy", "lint", "preflight", "check_trust"):
        getattr(run, step)()
    run.plan()
    sent = time.time()
    run.apply()
    assert run.baseline is not None and run.plan_result is not None
    assert run.plan_result.written_at is not None
    assert run.baseline.at == run.plan_result.written_at >= sent + 0.3


@pytest.mark.notebook
def test_slow_propagation_keeps_the_watch_going_and_is_reported(fresh: Lab, tmp_path: Path) -> None:
    """IAM: a change may take a while to apply everywhere; tasks started just after
    put-role-policy are still denied. The watch goes on past them and says it happened."""
    fresh.set_faults(propagation_delay_s=120)
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}", "timeout_s=60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    watch = record["steps"]["watch"]
    assert watch["outcome"] == "running"
    assert watch["propagation_delay_seen"] is True and watch["tasks_denied_after_change"] >= 1
    assert "were still denied" in cell_text(tmp_path, "watch")


@pytest.mark.notebook
@pytest.mark.parametrize(
    ("fault", "reason", "cause"),
    [
        ("pull", "CannotPullContainerError", "image-pull"),
        ("logs", "ResourceInitializationError", "execution-role"),
    ],
)
def test_an_execution_role_failure_stops_before_any_write(
    fresh: Lab, aws: Clients, tmp_path: Path, fault: str, reason: str, cause: str
) -> None:
    """ECS: a task that cannot pull its image or create its log stream stops with
    TaskFailedToStart; a DynamoDB policy on the task role would not help. AWS's stopped-task
    error codes tell them apart: CannotPullContainerError (here a timeout on the way to the
    registry) is the image pull, whose advice names the execution role's ECR permissions among
    its causes; a ResourceInitializationError naming the execution role's denial is that role's."""
    before = inline_policies(aws)
    fresh.set_faults(execution_role_fault=fault)
    wait_for("the newest stopped task to have failed to start", lambda: newest_stop(fresh))
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}")
    assert_short_failure(proc, tmp_path)
    assert record["failed_step"] == "diagnose" and record["undo"] is None
    assert record["steps"]["diagnose"]["cause"] == cause
    assert record["steps"]["diagnose"]["stopped_reason"].startswith(reason)
    assert "WrongCause" in proc.stderr and "execution role" in proc.stderr
    assert "plan" not in record["steps"]
    assert fresh.iam_writes == [] and inline_policies(aws) == before


@pytest.mark.notebook
def test_the_lab_dying_mid_watch_is_one_sentence_with_the_undo_on_record(tmp_path: Path) -> None:
    """The endpoint goes away after the write: the run names the endpoint, shows no traceback,
    and the record names the failed step and the command that undoes the write."""
    params = Params(account_id=OTHER_ACCOUNT)
    dying = Lab.start(params)
    try:
        # A slow propagation keeps the watch waiting while the lab goes away.
        dying.set_faults(propagation_delay_s=5000)
        cmd = [*CLI, "--out", str(tmp_path), "-p", f"endpoint_url={dying.endpoint_url}"]
        cmd += ["-p", f"account_id='{OTHER_ACCOUNT}'", "-p", "timeout_s=120"]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            wait_for(
                "the run to write the policy",
                lambda: (
                    "apply" in read_record(tmp_path).get("steps", {}) or proc.poll() is not None
                ),
                timeout=60,
            )
            writes = list(dying.iam_writes)
            endpoint = dying.endpoint_url
        finally:
            dying.stop()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        dying.stop()
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert writes == ["PutRolePolicy"]
    assert_short_failure(done, tmp_path)
    assert "FAILED at step 'watch'" in stderr and endpoint in stderr
    assert endpoint in error_outputs(tmp_path)[0]["evalue"]
    record = read_record(tmp_path)
    assert record["failed_step"] == "watch" and endpoint in record["error"]
    undo = f"aws iam delete-role-policy --role-name {ROLE} --policy-name {POLICY}"
    assert record["undo"] == undo and undo in stderr


@pytest.mark.notebook
def test_a_closed_port_fails_in_connect_naming_the_endpoint(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{port}"
        proc, record = run_cli(tmp_path, f"endpoint_url={endpoint}")
    assert_short_failure(proc, tmp_path)
    assert "EndpointUnreachable" in proc.stderr and endpoint in proc.stderr
    assert record["failed_step"] == "connect" and record["undo"] is None


# --- runs repeated, policies already there ----------------------------------------------------


@pytest.mark.notebook
def test_a_run_after_an_interrupted_one_finds_the_policy_and_writes_nothing(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """An earlier run wrote the policy and was cut off before it could watch: this one sees the
    policy in place, writes nothing, and checks that carts runs and writes its table."""
    policy = render_policy(Params(), LAB_DEFAULT_ACCOUNT)
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=policy.text)
    writes_before = len(fresh.iam_writes)
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = record["steps"]["plan"]
    assert plan["action"] == "unchanged" and plan["written"] is False
    assert record["steps"]["apply"] == {"written": False, "reason": "unchanged"}
    assert record["steps"]["watch"]["outcome"] == "running"
    assert "verify" in record["steps"] and record["undo"] is None
    assert len(fresh.iam_writes) == writes_before


@pytest.mark.notebook
def test_a_same_named_policy_is_shown_kept_and_restored_exactly(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """IAM: put-role-policy silently replaces a same-named inline policy; the run shows the
    replacement, keeps the old document, and rollback puts it back as it was."""
    theirs = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TheirsNotOurs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": "arn:aws:s3:::carts-assets/*",
            }
        ],
    }
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=json.dumps(theirs))
    before, writes_before = inline_policies(aws), len(fresh.iam_writes)
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}", "rollback=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = record["steps"]["plan"]
    assert plan["action"] == "replace" and same_policy(plan["before"], theirs)
    shown = cell_text(tmp_path, "plan")
    assert "REPLACE" in shown and "TheirsNotOurs" in shown and "dynamodb:*" in shown
    rollback = record["steps"]["rollback"]
    assert (rollback["done"], rollback["matches_before"]) == ("restored", True)
    after = inline_policies(aws)
    assert after.keys() == before.keys()
    assert all(same_policy(after[n], before[n]) for n in before)
    assert fresh.iam_writes[writes_before:] == ["PutRolePolicy", "PutRolePolicy"]


# --- the aws backend's guards and credentials -------------------------------------------------


class NoAws:
    """A connection that fails the test if anything asks it for a client."""

    def client(self, service: str) -> Any:
        raise AssertionError(f"apply asked for a {service} client")


def test_apply_on_aws_without_apply_true_calls_nothing(tmp_path: Path) -> None:
    params = Params.from_mapping({"backend": "aws"})
    run = Runbook(params, RunRecord.create(tmp_path / "record.json"))
    policy = render_policy(params, LAB_DEFAULT_ACCOUNT)
    run.plan_result = plan(SimpleNamespace(name=ROLE, inline={}), policy)
    run._passed.update(BEFORE_APPLY)  # as after the cells before apply
    run._connection = NoAws()  # type: ignore[assignment]  # a stand-in that records any use
    note = run.apply()
    assert "nothing was written" in str(note)
    assert run.record.data["steps"]["apply"] == {"written": False, "reason": "apply is false"}
    assert run.plan_result.written is False and run.undo_command() is None


@pytest.mark.notebook
@pytest.mark.parametrize("backend", ["lab", "aws"])
def test_another_account_stops_in_connect_before_any_write(
    fresh: Lab, aws: Clients, tmp_path: Path, backend: str
) -> None:
    before = inline_policies(aws)
    overrides = [f"account_id='{OTHER_ACCOUNT}'", "apply=true"]
    if backend == "lab":
        proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}", *overrides)
    else:
        env = aws_env(fresh.endpoint_url)
        proc, record = run_cli(tmp_path, "backend=aws", *overrides, env=env)
    assert_short_failure(proc, tmp_path)
    assert record["failed_step"] == "connect"
    assert f"WrongAccount: the caller's account is {LAB_DEFAULT_ACCOUNT}" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert fresh.iam_writes == [] and inline_policies(aws) == before


@pytest.mark.notebook
@pytest.mark.parametrize("apply", [None, True])
def test_aws_backend_keeps_credentials_out_of_every_output(
    fresh: Lab, aws: Clients, tmp_path: Path, apply: bool | None
) -> None:
    """A backend-aws run with credentials in the environment (as an operator's shell has them):
    apply null only plans; apply true writes and rolls back. No output holds a credential."""
    # The scan knows these shapes; otherwise a clean scan would prove nothing.
    assert find_secrets(FAKE_KEY_ID) and find_secrets(f"aws_secret_access_key = {FAKE_SECRET}")
    before = inline_policies(aws)
    overrides = ["backend=aws", f"account_id='{LAB_DEFAULT_ACCOUNT}'", "timeout_s=60"]
    if apply:
        overrides += ["apply=true", "rollback=true"]
    proc, record = run_cli(tmp_path, *overrides, env=aws_env(fresh.endpoint_url))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["caller"]["account"] == LAB_DEFAULT_ACCOUNT
    if apply:
        assert record["outcome"] == "fixed, then rolled back"
        assert fresh.iam_writes == ["PutRolePolicy", "DeleteRolePolicy"]
    else:
        assert record["outcome"] == "planned: nothing written"
        assert record["steps"]["apply"] == {"written": False, "reason": "apply is false"}
        assert fresh.iam_writes == []
    assert inline_policies(aws) == before
    files = sorted(p for p in output_dir(tmp_path).iterdir() if p.is_file())
    assert {p.name for p in files} >= {f"{STEM}.ipynb", f"{STEM}.html", f"{STEM}.record.json"}
    for text, where in [(p.read_text(errors="replace"), p.name) for p in files] + [
        (proc.stdout, "stdout"),
        (proc.stderr, "stderr"),
    ]:
        for secret in (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN, FAKE_TOKEN[:24]):
            assert secret not in text, where
        assert not find_secrets(text), where
        assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text), where


# --- bad input through the real CLI -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        (
            ["backend=aws", "endpoint_url=http://127.0.0.1:5000"],
            "parameter 'endpoint_url' is only used with backend 'lab'",
        ),
        (
            ["account_id=123456789012"],
            "as text; got the number 123456789012 (YAML reads 123456789012 as a number; quote it: "
            "'123456789012').",
        ),
        (
            ["task_role=arn:aws:iam::123456789012:role/retailStoreEcsTaskRole"],
            "parameter 'task_role' must be an IAM role name",
        ),
        (["apply"], "option -p takes NAME=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_write(
    fresh: Lab, tmp_path: Path, overrides: list[str], phrase: str
) -> None:
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}", *overrides)
    assert proc.returncode == 2 and phrase in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and record == {}
    assert list(tmp_path.iterdir()) == []  # checked before a run folder or a kernel exists
    assert fresh.iam_writes == []
