"""The notebook end to end: papermill runs through the CLI against labs on loopback, and strict
nbval against the committed golden outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from lab_fixtures import Clients, task_id, wait_for

from runbook_lib.history import latest_run
from runbook_lib.params import Params
from runbook_lib.record import find_secrets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "fix-iam-permissions.ipynb"
CLI = [sys.executable, "-m", "runbook_lib"]

pytestmark = pytest.mark.notebook


def run_cli(
    out: Path, *args: str, params: str | None = "params/lab.yaml"
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    cmd = [*CLI, "run", "--out", str(out)]
    if params:
        cmd += ["--params", params]
    proc = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)
    rec_path = (latest_run(out) or out) / "fix-iam-permissions.record.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    return proc, record


def iam_of(lab: Any) -> Any:
    return boto3.client(
        "iam",
        endpoint_url=lab.endpoint_url,
        region_name=lab.region,
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
    )


def inline_policies(lab: Any, role: str) -> dict[str, Any]:
    iam = iam_of(lab)
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    from runbook_lib.lab import Lab

    with Lab.start(Params()) as lab:
        yield lab


@pytest.fixture
def fresh_lab(lab: Any) -> Any:
    lab.reset()
    return lab


def assert_no_secrets(out: Path) -> None:
    for p in out.iterdir():
        if p.is_file():
            assert not find_secrets(p.read_text(errors="replace")), p


def test_main_command_fixes_carts_in_an_embedded_lab(tmp_path: Path) -> None:
    """The README's main job: papermill on params/lab.yaml ends with carts RUNNING."""
    proc, record = run_cli(tmp_path)
    run = latest_run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run is not None and run.parent == tmp_path
    assert record["outcome"] == "fixed: carts is RUNNING"
    steps = record["steps"]
    assert steps["diagnose"]["cause"] == "task-role"
    assert steps["diagnose"]["denied_action"] == "dynamodb:Query"
    assert steps["diagnose"]["denied_resource"].endswith(
        ":table/retail-store-ecs-carts/index/idx_global_customerId"
    )
    assert steps["plan"]["action"] == "create" and steps["plan"]["written"] is True
    assert steps["watch"]["outcome"] == "running"
    assert steps["verify"]["items"] >= 0
    for name in (
        "fix-iam-permissions.ipynb",
        "fix-iam-permissions.html",
        "fix-iam-permissions.record.json",
    ):
        assert (run / name).stat().st_size > 0
    assert "  diagnose" in proc.stderr and "outcome:  fixed: carts is RUNNING" in proc.stdout
    assert_no_secrets(run)


def test_least_privilege_scope_and_rollback_restore_the_exact_prior_state(
    fresh_lab: Any, tmp_path: Path
) -> None:
    before = inline_policies(fresh_lab, "retailStoreEcsTaskRole")
    proc, record = run_cli(
        tmp_path,
        "-p",
        f"endpoint_url={fresh_lab.endpoint_url}",
        "-p",
        "policy_scope=least-privilege",
        "-p",
        "rollback=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["steps"]["watch"]["outcome"] == "running"
    after_doc = record["steps"]["plan"]["after"]
    assert {s["Sid"] for s in after_doc["Statement"]} == {"CartsItems", "CartsCustomerIndex"}
    assert record["steps"]["rollback"]["done"] == "deleted"
    assert record["outcome"] == "fixed, then rolled back"
    assert inline_policies(fresh_lab, "retailStoreEcsTaskRole") == before
    # In the lab, the service fails again: a task that starts after the rollback is denied.
    aws = Clients(fresh_lab.endpoint_url)
    running = aws.task_arns("RUNNING")
    rolled_back_at = time.time()
    for arn in running:
        aws.ecs.stop_task(cluster="retail-store-ecs-cluster", task=arn, reason="check the rollback")
    denied = wait_for(
        "a carts task denied after the rollback",
        lambda: aws.stopped_after(rolled_back_at, "EssentialContainerExited"),
        timeout=20,
    )
    assert any(
        "is not authorized to perform: dynamodb:Query" in m
        for m in aws.log_messages(task_id(denied[0]))
    )


def test_apply_false_writes_nothing_and_a_second_run_writes_nothing_again(
    fresh_lab: Any, tmp_path: Path
) -> None:
    role = "retailStoreEcsTaskRole"
    before = inline_policies(fresh_lab, role)
    ep = f"endpoint_url={fresh_lab.endpoint_url}"
    proc, record = run_cli(tmp_path / "plan", "-p", ep, "-p", "apply=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["outcome"] == "planned: nothing written"
    assert inline_policies(fresh_lab, role) == before
    # Fix, then run again: the policy is in place, nothing is written, the service verifies.
    proc, record = run_cli(tmp_path / "fix", "-p", ep)
    assert proc.returncode == 0 and record["steps"]["plan"]["written"] is True
    fixed = inline_policies(fresh_lab, role)
    proc, record = run_cli(tmp_path / "again", "-p", ep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["steps"]["diagnose"]["cause"] == "healthy"
    assert (
        record["steps"]["plan"]["action"] == "unchanged"
        and record["steps"]["plan"]["written"] is False
    )
    assert record["steps"]["watch"]["outcome"] == "running"
    assert inline_policies(fresh_lab, role) == fixed


def test_other_names_account_and_region(tmp_path: Path) -> None:
    """A lab seeded from the same parameters as the run: every name is a parameter."""
    from runbook_lib.lab import Lab

    values = {
        "region": "eu-central-1",
        "account_id": "210987654321",
        "cluster": "shop",
        "service": "cart-svc",
        "task_role": "cartsTaskRole",
        "execution_role": "cartsExecRole",
        "policy_name": "CartsTable",
        "table": "carts-table",
        "index": "by_customer",
    }
    params = Params.from_mapping(values)
    params_file = tmp_path / "other.yaml"
    with Lab.start(params) as other:
        params_file.write_text(
            "\n".join(
                f"{k}: {json.dumps(v)}"
                for k, v in {**values, "endpoint_url": other.endpoint_url, "apply": True}.items()
            )
        )
        proc, record = run_cli(tmp_path / "out", params=str(params_file))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert record["caller"]["account"] == "210987654321"
        assert record["steps"]["diagnose"]["denied_resource"] == (
            "arn:aws:dynamodb:eu-central-1:210987654321:table/carts-table/index/by_customer"
        )
        assert "CartsTable" in inline_policies(other, "cartsTaskRole")


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("backend=local", "parameter 'backend' must be 'lab' or 'aws'"),
        ("policy_scope=admin", "parameter 'policy_scope' must be 'workshop' or 'least-privilege'"),
        ("region=us_west_2", "parameter 'region' must be an AWS region name"),
        ("timeout_s=-5", "parameter 'timeout_s' must be a number of seconds greater than 0"),
    ],
)
def test_bad_parameters_stop_before_a_kernel_starts(
    tmp_path: Path, override: str, phrase: str
) -> None:
    proc, record = run_cli(tmp_path, "-p", override)
    assert proc.returncode == 2 and phrase in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and record == {}


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("task_role=noSuchRole", "role 'noSuchRole' does not exist in account 123456789012"),
        ("cluster=no-such-cluster", "ECS cluster 'no-such-cluster' does not exist"),
        ("service=no-such-service", "ECS service 'no-such-service' does not exist in cluster"),
    ],
)
def test_names_that_do_not_exist_fail_early_without_a_write(
    fresh_lab: Any, tmp_path: Path, override: str, phrase: str
) -> None:
    before = inline_policies(fresh_lab, "retailStoreEcsTaskRole")
    proc, record = run_cli(tmp_path, "-p", f"endpoint_url={fresh_lab.endpoint_url}", "-p", override)
    assert proc.returncode == 1
    assert phrase in proc.stderr, proc.stderr[-2000:]
    assert "FAILED at step" in proc.stderr
    assert record["outcome"] == "failed" and record["undo"] is None
    assert inline_policies(fresh_lab, "retailStoreEcsTaskRole") == before


def test_golden_notebook_matches_a_fresh_lab_run_under_strict_nbval() -> None:
    """The committed outputs are what a learner sees; nbval re-runs every cell and compares."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUNBOOK_RECORD",)}
    env["RUNBOOK_HEADLESS"] = "1"
    env["RUNBOOK_RECORD"] = str(ROOT / "out" / "nbval.record.json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            str(NOTEBOOK),
            "--nbval-sanitize-with",
            str(ROOT / "tests" / "nbval-sanitize.cfg"),
            "-o",
            "addopts=",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_a_task_role_the_service_does_not_use_stops_in_diagnose(
    fresh_lab: Any, tmp_path: Path
) -> None:
    """A policy on a role the task definition does not name would not reach carts."""
    proc, record = run_cli(
        tmp_path,
        "-p",
        f"endpoint_url={fresh_lab.endpoint_url}",
        "-p",
        "task_role=retailStoreEcsTaskExecutionRole",
        "-p",
        "execution_role=retailStoreEcsTaskRole",
    )
    assert proc.returncode == 1
    assert record["failed_step"] == "diagnose" and record["undo"] is None
    assert (
        "uses task role retailStoreEcsTaskRole, not retailStoreEcsTaskExecutionRole" in proc.stderr
    )
    assert "CartsDynamoPolicy" not in inline_policies(fresh_lab, "retailStoreEcsTaskExecutionRole")
