"""A lab fleet on the embedded Dask cluster, run as a facilitator runs it: eleven accounts in
mixed states, all in the one lab the command starts; a worker killed mid-run; Ctrl-C and
``--resume``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import (
    EXPECTED,
    FLEET,
    LAB_FLEET,
    STABLE,
    check_lab_fleet,
    fleet,
    read_json,
    record,
    rows_by_target,
    summary,
    wait_until,
)
from helpers import ROOT, clean_env

from runbook_lib.fleet.records import RECORD

pytestmark = [pytest.mark.fleet, pytest.mark.notebook]


class Ran:
    def __init__(self, out: Path, done: subprocess.CompletedProcess[str], targets: Path) -> None:
        self.out, self.done, self.targets = out, done, targets


@pytest.fixture(scope="module")
def lab_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    tmp = tmp_path_factory.mktemp("fleet")
    targets = tmp / "targets.yaml"
    targets.write_text(LAB_FLEET, encoding="utf-8")
    out = tmp / "out"
    done = fleet(tmp, "--targets", str(targets), "--out", str(out), "--workers", "2")
    yield Ran(out, done, targets)


def test_every_row_is_as_expected_and_every_account_matches_its_row(lab_fleet: Ran) -> None:
    assert lab_fleet.done.returncode == 1, lab_fleet.done.stderr[-3000:]  # four targets failed
    check_lab_fleet(lab_fleet.out)
    data = summary(lab_fleet.out)
    assert data["workers"] == 2 and data["scheduler"] == "embedded LocalCluster"
    assert data["counts"] == (
        "11 targets: 4 fixed, 1 already fixed, 1 rolled back, 1 planned, 4 failed"
    )
    lab = data["lab"]
    assert lab["management_account"] == "123456789012" and len(lab["accounts"]) == 11
    assert lab["accounts"]["111111111104"]["scenario"] == "execution-role"


def test_the_command_prints_only_its_own_lines(lab_fleet: Ran) -> None:
    """Nothing on the terminal that the command did not write itself: no kernel's warning, no
    Dask or lab log line."""
    lines = [line for line in lab_fleet.done.stderr.splitlines() if line.strip()]
    assert lines, "the command says what it runs"
    for line in lines:
        assert line.startswith("carts-runbook fleet: "), lab_fleet.done.stderr


def test_the_summary_files_and_the_table_at_the_end(lab_fleet: Ran) -> None:
    out, done = lab_fleet.out, lab_fleet.done
    csv_lines = (out / "fleet-summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("target,account,region,cause,plan,written,outcome,exit,")
    assert len(csv_lines) == 1 + len(EXPECTED)
    html = (out / "fleet-summary.html").read_text()
    assert "data:image/png;base64," in html  # the chart, rendered by the summary notebook
    assert "Outcomes per cause and per region" in html and "What needs a look" in html
    for name in EXPECTED:
        assert f'<a href="{name}/fix-iam-permissions.html">{name}</a>' in html
    assert "run.watch()" not in html and "import matplotlib" not in html  # no code shown
    assert (out / "fleet-summary.ipynb").is_file()
    table = done.stdout.splitlines()
    assert table[0].split()[:2] == ["target", "account"]
    for name, want in EXPECTED.items():
        line = next(line for line in table if line.startswith(name + " "))
        assert want.outcome in line
    assert "11 targets: 4 fixed" in done.stdout
    assert "team-07: at connect: RoleNotAssumed" in done.stdout


def test_each_target_folder_holds_what_a_single_run_writes(lab_fleet: Ran) -> None:
    folder = lab_fleet.out / "team-01"
    log = (folder / "run.log").read_text()
    assert log.startswith("  parameters  ok")  # carts-runbook run's step lines
    assert "outcome:  fixed: carts is RUNNING" in log
    rec = record(lab_fleet.out, "team-01")
    assert rec["fleet"]["parameters_sha256"] and rec["fleet"]["seconds"] > 0
    assert rec["outcome"] == "fixed: carts is RUNNING" and rec["finished_at"]
    assert "CartsDynamoPolicy" in (folder / "fix-iam-permissions.html").read_text()


def test_resume_runs_again_only_what_did_not_finish(lab_fleet: Ran, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(lab_fleet.out, out)
    done = fleet(tmp_path, "--targets", str(lab_fleet.targets), "--out", str(out), "--resume")
    assert done.returncode == 1, done.stderr[-3000:]
    check_lab_fleet(out)
    rows = rows_by_target(out)
    before = rows_by_target(lab_fleet.out)
    for name, want in EXPECTED.items():
        assert rows[name]["resumed"] is (want.exit == 0), name
        assert [rows[name][c] for c in STABLE] == [before[name][c] for c in STABLE]
    # The failed runs ran again; their first runs are kept beside (with their undo).
    assert (out / "team-08" / "earlier-1" / RECORD).is_file()
    assert record(out, "team-08")["fleet"]["earlier_undo"] == [rows["team-08"]["undo"]]
    assert not (out / "team-01" / "earlier-1").exists()
    # Without --resume the folder is refused: its records hold the undo of what they wrote.
    again = fleet(tmp_path, "--targets", str(lab_fleet.targets), "--out", str(out))
    assert again.returncode == 2 and "give --resume" in again.stderr


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
