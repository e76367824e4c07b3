"""A lab fleet on the embedded Dask cluster, run as a facilitator runs it: eleven accounts in
mixed states, all in the one lab the command starts, and ``--resume``. (A worker killed mid-run
and Ctrl-C: tests/test_fleet_stops.py.)"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import (
    EXPECTED,
    LAB_FLEET,
    STABLE,
    check_lab_fleet,
    fleet,
    record,
    rows_by_target,
    summary,
)

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
