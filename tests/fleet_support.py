"""What the fleet tests share: a lab fleet of nine accounts in mixed states, what each row must
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

#: Nine lab accounts, each started by its target's kernel in the state its row names (the README's
#: example: params/fleet/lab.example.yaml).
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
    "team-03": Expected("already fixed", "healthy", "unchanged", False, 0),
    # The image cannot be pulled (the execution role's side): no task-role policy helps.
    "team-04": Expected("failed", "image-pull", "", False, 1, "diagnose"),
    "team-05": Expected("planned", "task-role", "create", False, 0),
    "team-06": Expected("rolled back", "task-role", "create", True, 0),
    "team-07": Expected("failed", "", "", False, 1, "connect"),
    "team-08": Expected("failed", "task-role", "create", True, 1, "watch", undo=True),
    "team-09": Expected("fixed", "task-role", "create", True, 0, undo=True, region="eu-west-1"),
}

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
    # A role the account does not have: STS refuses it, nothing is written, the others go on.
    assert rows["team-07"]["detail"].startswith("at connect: RoleNotAssumed: cannot assume role")
    assert "AccessDenied" in rows["team-07"]["detail"]
    # A role it has: the run acts as that role, in the role's account, as who ran it.
    caller = record(out, "team-09")["caller"]
    assert caller["account"] == "111111111109"
    assert caller["arn"].startswith(
        "arn:aws:sts::111111111109:assumed-role/WSParticipantRole/carts-runbook."
    )


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
