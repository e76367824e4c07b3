"""The notebook end to end: papermill runs through the CLI against labs on loopback, and strict
nbval against the committed golden outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import NOTEBOOK, ROOT, STEM, Clients, cli_env, inline_policies, run_cli, task_id

from runbook_lib.history import latest_run
from runbook_lib.lab import Lab
from runbook_lib.params import Params
from runbook_lib.record import find_secrets

pytestmark = pytest.mark.notebook

#: The runs here are other processes (the CLI, papermill): they cannot move a stepped lab.
LAB_CLOCK = "real"


def assert_no_secrets(out: Path) -> None:
    for p in out.iterdir():
        if p.is_file():
            assert not find_secrets(p.read_text(errors="replace")), p


def test_main_command_fixes_carts_in_an_embedded_lab(tmp_path: Path) -> None:
    """The README's main job: papermill on params/lab.yaml ends with carts RUNNING."""
    proc, record = run_cli(tmp_path, params="params/lab.yaml")
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
    # Workshop 3.4: carts writes cart items {id: <customerId>:<itemId>, customerId, itemId,
    # quantity, unitPrice} once it runs (it shops every few seconds from start-up on).
    verify = steps["verify"]
    assert verify["items"] >= 1 and verify["shaped_like_carts"] is True
    assert 1 <= len(verify["sample"]) <= 3
    for item in verify["sample"]:
        assert set(item) == {"id", "customerId", "itemId", "quantity", "unitPrice"}
        assert item["id"] == f"{item['customerId']}:{item['itemId']}"
        assert item["quantity"] >= 1 and item["unitPrice"] > 0
    for suffix in (".ipynb", ".html", ".record.json"):
        assert (run / f"{STEM}{suffix}").stat().st_size > 0
    assert "  diagnose" in proc.stderr and "outcome:  fixed: carts is RUNNING" in proc.stdout
    assert_no_secrets(run)


def test_least_privilege_scope_and_rollback_restore_the_exact_prior_state(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    before = inline_policies(aws)
    proc, record = run_cli(
        tmp_path,
        f"endpoint_url={fresh.endpoint_url}",
        "policy_scope=least-privilege",
        "rollback=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["steps"]["watch"]["outcome"] == "running"
    after_doc = record["steps"]["plan"]["after"]
    assert {s["Sid"] for s in after_doc["Statement"]} == {"CartsItems", "CartsCustomerIndex"}
    assert record["steps"]["rollback"]["done"] == "deleted"
    assert record["outcome"] == "fixed, then rolled back"
    assert inline_policies(aws) == before
    # In the lab, the service fails again: a task that starts after the rollback is denied.
    running = aws.task_arns("RUNNING")
    rolled_back_at = aws.now()
    for arn in running:
        aws.ecs.stop_task(cluster="retail-store-ecs-cluster", task=arn, reason="check the rollback")
    denied = aws.wait(
        "a carts task denied after the rollback",
        lambda: aws.stopped_after(rolled_back_at, "EssentialContainerExited"),
    )
    assert any(
        "is not authorized to perform: dynamodb:Query" in m
        for m in aws.log_messages(task_id(denied[0]))
    )


def test_apply_false_writes_nothing_and_a_second_run_writes_nothing_again(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    before = inline_policies(aws)
    ep = f"endpoint_url={fresh.endpoint_url}"
    proc, record = run_cli(tmp_path / "plan", ep, "apply=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["outcome"] == "planned: nothing written"
    assert inline_policies(aws) == before
    # Fix, then run again: the policy is in place, nothing is written, the service verifies.
    proc, record = run_cli(tmp_path / "fix", ep)
    assert proc.returncode == 0 and record["steps"]["plan"]["written"] is True
    fixed = inline_policies(aws)
    proc, record = run_cli(tmp_path / "again", ep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["steps"]["diagnose"]["cause"] == "healthy"
    assert (
        record["steps"]["plan"]["action"] == "unchanged"
        and record["steps"]["plan"]["written"] is False
    )
    assert record["steps"]["watch"]["outcome"] == "running"
    assert inline_policies(aws) == fixed


def test_other_names_account_and_region(tmp_path: Path) -> None:
    """A lab seeded from the same parameters as the run: every name is a parameter."""
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
        assert "CartsTable" in inline_policies(
            Clients(other.endpoint_url, region="eu-central-1"), "cartsTaskRole"
        )


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
    proc, record = run_cli(tmp_path, override, params="params/lab.yaml")
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
    fresh: Lab, aws: Clients, tmp_path: Path, override: str, phrase: str
) -> None:
    before = inline_policies(aws)
    proc, record = run_cli(tmp_path, f"endpoint_url={fresh.endpoint_url}", override)
    assert proc.returncode == 1
    assert phrase in proc.stderr, proc.stderr[-2000:]
    assert "FAILED at step" in proc.stderr
    assert record["outcome"] == "failed" and record["undo"] is None
    assert inline_policies(aws) == before


def nbval(notebook: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Strict nbval on ``notebook``: every cell re-run in a fresh kernel, every output compared
    (after tests/nbval-sanitize.cfg), with the golden run's lab clock and record name."""
    env = cli_env(
        RUNBOOK_HEADLESS="1",
        RUNBOOK_LAB_CLOCK="stepped",
        RUNBOOK_RECORD=str(tmp_path / "record" / f"{STEM}.record.json"),
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--nbval",
            str(notebook),
            "--nbval-sanitize-with",
            str(ROOT / "tests" / "nbval-sanitize.cfg"),
            "-o",
            "addopts=",
            "--rootdir",
            str(notebook.parent),
        ],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_golden_notebook_matches_a_fresh_run_under_strict_nbval(tmp_path: Path) -> None:
    """The committed outputs are what a learner sees; nbval re-runs every cell and compares."""
    proc = nbval(NOTEBOOK, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_nbval_fails_when_an_output_differs(tmp_path: Path) -> None:
    """The comparison above can fail: one changed character in one golden output is caught.
    The notebook ends at the changed cell, diagnose's (the cells after it would only be compared
    as above, and nbval would run them all)."""
    nb = json.loads(NOTEBOOK.read_text())
    [diagnose] = [
        n for n, c in enumerate(nb["cells"]) if "step:diagnose" in c["metadata"].get("tags", [])
    ]
    nb["cells"] = nb["cells"][: diagnose + 1]
    text = nb["cells"][diagnose]["outputs"][0]["data"]["text/plain"]
    assert text[0].startswith("Service carts: ACTIVE")
    text[0] = text[0].replace("ACTIVE", "ACTIVF", 1)
    changed = tmp_path / "nb" / NOTEBOOK.name
    changed.parent.mkdir()
    changed.write_text(json.dumps(nb, indent=1))
    proc = nbval(changed, tmp_path)
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-3000:]


def test_golden_comes_out_the_same_every_time(tmp_path: Path) -> None:
    """`make golden` regenerates the committed notebook byte for byte: the lab's stepped clock,
    its seed and the run's own outputs leave nothing that changes from one run to the next."""
    made = tmp_path / NOTEBOOK.name
    proc = subprocess.run(
        [sys.executable, "-m", "runbook_lib", "golden", "--to", str(made)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert made.read_bytes() == NOTEBOOK.read_bytes()


def test_a_task_role_the_service_does_not_use_stops_in_diagnose(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """A policy on a role the task definition does not name would not reach carts."""
    proc, record = run_cli(
        tmp_path,
        f"endpoint_url={fresh.endpoint_url}",
        "task_role=retailStoreEcsTaskExecutionRole",
        "execution_role=retailStoreEcsTaskRole",
    )
    assert proc.returncode == 1
    assert record["failed_step"] == "diagnose" and record["undo"] is None
    assert (
        "uses task role retailStoreEcsTaskRole, not retailStoreEcsTaskExecutionRole" in proc.stderr
    )
    assert "CartsDynamoPolicy" not in inline_policies(aws, "retailStoreEcsTaskExecutionRole")
