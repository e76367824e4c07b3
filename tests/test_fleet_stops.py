"""A lab fleet stopped under way, as a facilitator may see it: a worker killed after its target's
write landed (run again once), and Ctrl-C (the fleet stops after each run's step; ``--resume``
goes on). Apart from tests/test_fleet_lab.py so that, with the suite on two workers, these runs
and that module's fleet go side by side."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from fleet_support import FLEET, fleet, read_json, record, rows_by_target, wait_until
from helpers import ROOT, clean_env

from runbook_lib.fleet.records import RECORD

pytestmark = [pytest.mark.fleet, pytest.mark.notebook]


TWO = """\
defaults:
  backend: lab
  timeout_s: 120
targets:
  - name: slow
    account_id: "222222222201"
    lab_scenario: slow-propagation
  - name: other
    account_id: "222222222202"
"""


def test_a_worker_killed_after_the_write_landed_is_run_again_once(tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(TWO, encoding="utf-8")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [*FLEET, "--targets", str(targets), "--out", str(out), "--workers", "2", "--no-progress"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # "slow" waits in its watch for IAM to propagate (500 simulated seconds): its write has
        # landed (the record says so), its worker is busy, and then it dies.
        wait_until(
            "the write of target 'slow' to land",
            lambda: (
                (read_json(out / "slow" / RECORD) or {}).get("steps", {}).get("apply") or {}
            ).get("written"),
        )
        marker = read_json(out / "slow" / "fleet-attempt.json")
        assert marker is not None and marker["attempt"] == 1
        os.kill(marker["pid"], signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    rows = rows_by_target(out)
    # The second attempt runs in the same account of the fleet's lab, where the first one's
    # write landed: it finds the policy there, as a run on AWS would, and writes nothing.
    assert (rows["slow"]["outcome"], rows["slow"]["attempts"]) == ("already fixed", 2)
    assert rows["slow"]["written"] is False
    assert (rows["other"]["outcome"], rows["other"]["attempts"]) == ("fixed", 1)
    first = read_json(out / "slow" / "attempt-1" / RECORD)
    assert first is not None
    assert first["outcome"] == "worker lost" and first["steps"]["apply"]["written"] is True
    assert "the IAM write landed" in first["error"]
    assert first["undo"]  # the way back from the first attempt's write is kept
    assert record(out, "slow")["fleet"]["earlier_undo"] == [first["undo"]]


THREE = """\
defaults:
  backend: lab
  timeout_s: 120
targets:
  - name: first
    account_id: "333333333301"
  - name: second
    account_id: "333333333302"
    lab_scenario: slow-propagation
  - name: third
    account_id: "333333333303"
"""


def test_ctrl_c_stops_the_fleet_after_each_step_and_resume_goes_on(tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(THREE, encoding="utf-8")
    out = tmp_path / "out"
    # One worker: the targets run one after another, in the file's order.
    process = subprocess.Popen(
        [*FLEET, "--targets", str(targets), "--out", str(out), "--workers", "1", "--no-progress"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            "target 'second' to start its steps",
            lambda: "connect" in ((read_json(out / "second" / RECORD) or {}).get("steps") or {}),
        )
        # Ctrl-C in a terminal: SIGINT to the whole process group (the workers ignore it).
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr
    rows = rows_by_target(out)
    assert rows["first"]["outcome"] == "fixed"
    assert (rows["second"]["outcome"], rows["second"]["exit"]) == ("interrupted", 130)
    assert (rows["third"]["outcome"], rows["third"]["exit"]) == ("not started", None)
    assert not (out / "third").exists()
    stopped = record(out, "second")
    step = stopped["failed_step"]
    assert stopped["outcome"] == "interrupted" and step in stopped["error"]
    assert step not in stopped["steps"]  # it stopped before that step, after the one before
    applied = stopped["steps"].get("apply") or {}
    assert bool(stopped["undo"]) == bool(applied.get("written"))  # what it wrote, and the way back
    assert not (out / ".fleet-stop").exists()
    assert "interrupted" in stdout and "not started" in stdout

    done = fleet(tmp_path, "--targets", str(targets), "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_by_target(out)
    assert [rows[n]["outcome"] for n in ("first", "second", "third")] == ["fixed"] * 3
    assert [rows[n]["resumed"] for n in ("first", "second", "third")] == [True, False, False]
    assert (out / "second" / "earlier-1" / RECORD).is_file()
