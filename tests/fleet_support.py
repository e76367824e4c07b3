"""What the fleet tests share: a lab fleet of eleven accounts in mixed states, what each row must
say, and the fleet command run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, clean_env

from runbook_lib.fleet.records import RECORD

FLEET = [sys.executable, "-m", "runbook_lib", "fleet"]

#: Eleven accounts of the one lab the fleet starts, each in the scenario its row names (the
#: README's example: params/fleet/lab.example.yaml).
LAB_FLEET_FILE = ROOT / "params" / "fleet" / "lab.example.yaml"
LAB_FLEET = LAB_FLEET_FILE.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Expected:
    """What a target's row must say (and its record must show)."""

    outcome: str
    cause: str
    plan: str
    written: bool
    exit: int
    failed_step: str = ""
    undo: bool = False
    region: str = "us-west-2"


EXPECTED = {
    "team-01": Expected("fixed", "task-role", "create", True, 0, undo=True),
    "team-02": Expected("fixed", "task-role", "create", True, 0, undo=True),
    # The learner already did step 3.2: the policy it would write is there.
    "team-03": Expected("already fixed", "healthy", "unchanged", False, 0),
    # The execution role may not create the log stream: no task-role policy helps.
    "team-04": Expected("failed", "execution-role", "", False, 1, "diagnose"),
    "team-05": Expected("planned", "task-role", "create", False, 0),
    "team-06": Expected("rolled back", "task-role", "create", True, 0),
    "team-07": Expected("failed", "", "", False, 1, "connect"),
    "team-08": Expected("failed", "task-role", "create", True, 1, "watch", undo=True),
    "team-09": Expected("fixed", "task-role", "create", True, 0, undo=True, region="eu-west-1"),
    # A boundary allows no DynamoDB: stopped before writing, naming it.
    "team-10": Expected("failed", "task-role", "", False, 1, "preflight"),
    # The circuit breaker FAILED the deployment: ECS starts no task for it, so after the policy
    # the run starts a new deployment (apply's gated force-new-deployment), whose task runs.
    "team-11": Expected("fixed", "task-role", "create", True, 0, undo=True),
}

#: What each account holds at the end, by its row (the lab's state in the summary).
HOLDS_POLICY = {"fixed", "already fixed"}

#: Row columns that do not depend on timing (the same on any cluster, in any order).
STABLE = ("target", "account", "region", "cause", "plan", "written", "outcome", "exit")


def fleet(
    tmp_path: Path, *args: str, timeout: float = 900, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """``carts-runbook fleet ARGS`` in a clean environment (no AWS settings of the machine)."""
    return subprocess.run(
        [*FLEET, *args, "--no-progress"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def summary(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "fleet-summary.json").read_text(encoding="utf-8"))
    return data


def rows_by_target(out: Path) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in summary(out)["targets"]}


def record(out: Path, target: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / target / RECORD).read_text(encoding="utf-8"))
    return data


def check_lab_fleet(out: Path) -> None:
    """Every row of the lab fleet is as expected, and every account's record shows the state
    its row names (each run reached its own account)."""
    rows = rows_by_target(out)
    assert sorted(rows) == sorted(EXPECTED)
    for name, want in EXPECTED.items():
        row, rec = rows[name], record(out, name)
        got = (row["outcome"], row["cause"], row["plan"], row["written"], row["exit"])
        assert got == (want.outcome, want.cause, want.plan, want.written, want.exit), (name, row)
        assert row["failed_step"] == want.failed_step, (name, row)
        assert bool(row["undo"]) == want.undo, (name, row)
        assert row["region"] == want.region and rec["parameters"]["region"] == want.region
        assert row["html"] == f"{name}/fix-iam-permissions.html"
        assert (out / name / "fix-iam-permissions.html").is_file()
        assert (out / name / "fix-iam-permissions.ipynb").is_file()
        assert rec["fleet"]["target"] == name and rec["fleet"]["attempt"] == 1
        account = rec["parameters"]["account_id"] or rec["parameters"]["assume_role_arn"][13:25]
        assert row["account"] == account
        steps = rec["steps"]
        if want.failed_step != "connect":
            assert rec["caller"]["account"] == account  # its own account, nobody else's
        if want.outcome in ("fixed", "already fixed"):
            assert steps["watch"]["outcome"] == "running", name
            assert steps["verify"]["shaped_like_carts"] is True, name
            assert steps["plan"]["after_sha256"] == steps["render"]["sha256"]
        if want.outcome == "fixed":
            assert steps["apply"]["written"] is True
            assert rec["undo"] == steps["plan"]["restore_command"]
        if want.outcome == "planned":
            assert steps["apply"] == {"written": False, "reason": "apply is false"}
            assert steps["watch"]["outcome"] == "skipped"
        if want.outcome == "rolled back":
            assert steps["rollback"]["done"] == "deleted", steps["rollback"]
            assert steps["rollback"]["matches_before"] is True
            assert rec["undo"] is None
        if want.failed_step in ("connect", "diagnose"):
            assert "apply" not in steps and rec["undo"] is None  # nothing was written
        if want.failed_step == "watch":
            assert steps["apply"]["written"] is True and steps["watch"]["outcome"] == "timeout"
    # A role that does not trust the management account: STS refuses it, nothing is written,
    # the others go on.
    assert rows["team-07"]["detail"].startswith("at connect: RoleNotAssumed: cannot assume role")
    assert "AccessDenied" in rows["team-07"]["detail"]
    # Every other run acts as the organization's role, in its own account, as who ran it.
    for name in EXPECTED:
        if name != "team-07":
            account = rows[name]["account"]
            assert record(out, name)["caller"]["arn"].startswith(
                f"arn:aws:sts::{account}:assumed-role/OrganizationAccountAccessRole/carts-runbook."
            ), name
    check_lab_accounts(out)


def check_lab_accounts(out: Path) -> None:
    """Every account of the fleet's lab, as the lab held it at the end, matches its row: the
    task role's policies, the writes clients sent there, and carts' service."""
    lab = summary(out)["lab"]
    assert lab["shape_errors"] == []
    rows = rows_by_target(out)
    # The lab holds the accounts of the targets this fleet run ran (--resume skips some).
    ran = {n: r for n, r in rows.items() if not r["resumed"]}
    assert sorted(lab["accounts"]) == sorted(r["account"] for r in ran.values())
    for name, want in EXPECTED.items():
        if name not in ran:
            continue
        held = lab["accounts"][rows[name]["account"]]
        assert held["process_errors"] == [], (name, held)
        policies, service = held["task_role_policies"], held["service"]
        assert ("CartsDynamoPolicy" in policies) == (want.outcome in HOLDS_POLICY or want.undo), (
            name,
            held,
        )
        writes = {
            "fixed": ["PutRolePolicy"],
            "rolled back": ["PutRolePolicy", "DeleteRolePolicy"],
        }.get(want.outcome, ["PutRolePolicy"] if want.written else [])
        assert held["iam_writes"] == writes, (name, held)
        # Only the FAILED deployment's account gets a new one.
        assert held["ecs_writes"] == (["UpdateService"] if name == "team-11" else []), (name, held)
        if want.outcome in HOLDS_POLICY:
            assert service["runningCount"] >= 1 and service["rolloutState"] == "COMPLETED", name
        elif not want.written:
            # Still broken: carts' tasks keep failing, its deployment never completes.
            assert service["rolloutState"] in ("IN_PROGRESS", "FAILED"), (name, service)
        # (A rolled-back account's carts, and one whose write reaches carts only after the
        # watch gave up, change on the lab's clock after their run: not compared.)
    assert "team-10" in ran and "111111111110" in lab["accounts"]  # failed: never resumed
    held = lab["accounts"]["111111111110"]
    assert held["task_role_boundary"] == (
        "arn:aws:iam::111111111110:policy/RetailStoreTaskRoleBoundary"
    )
    # The FAILED deployment's account (its record: the run's own, or the resumed earlier one).
    [iam, ecs] = record(out, "team-11")["writes"]
    assert (iam["kind"], ecs["kind"], ecs["action"]) == (
        "iam-policy",
        "ecs-deployment",
        "force-new-deployment",
    )
    assert ecs["failed_deployment"] != ecs["new_deployment"] and ecs["state"] == "written"


def wait_until(what: str, check: Any, timeout: float = 300.0) -> Any:
    """Poll ``check`` (another process's progress) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
