"""What the fleet reads from a run record: the write, the retry rule, resume, the summary rows;
and the engine's bounds. Records here are shaped as the runbook writes them (see record.py and
runbook.py), at the points a run can be cut off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.fleet import records
from runbook_lib.fleet.engine import Bounds
from runbook_lib.fleet.summary import (
    COLUMNS,
    exit_code,
    html_table,
    row_from_record,
    text_table,
    write_csv,
)
from runbook_lib.fleet.targets import Target
from runbook_lib.fleet.worker import ATTEMPT_FILE, CONTROL_FILE, Job, run_target
from runbook_lib.params import Params

UNDO = (
    "aws iam delete-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy"
)


def rec(*steps: str, **extra: Any) -> dict[str, Any]:
    """A record that finished ``steps`` of a lab run that writes (apply null on the lab)."""
    payloads: dict[str, Any] = {
        "parameters": {"backend": "lab", "apply": None, "account_id": "111111111101"},
        "connect": {"account": "111111111101"},
        "diagnose": {"cause": "task-role"},
        "plan": {"action": "create", "restore_command": UNDO},
        "apply": {"written": True, "undo": UNDO},
        "watch": {"outcome": "running"},
    }
    data: dict[str, Any] = {
        "outcome": "in progress",
        "failed_step": None,
        "error": None,
        "undo": None,
        "parameters": payloads["parameters"],
        "steps": {s: payloads.get(s, {}) for s in steps},
    }
    data.update(extra)
    return data


def test_a_run_cut_off_before_its_plan_wrote_nothing_and_may_run_again() -> None:
    assert records.write_state(None) == records.WRITE_NONE
    assert records.write_state(rec("parameters", "connect", "diagnose")) == records.WRITE_NONE
    assert records.retry_allowed(rec("parameters", "connect"))[0] is True


def test_a_run_cut_off_between_its_plan_and_the_end_of_apply_may_have_written() -> None:
    # The apply step is saved when it ends: a plan with something to write and no apply step
    # is a write that may have gone out.
    cut = rec("parameters", "connect", "diagnose", "plan")
    assert records.write_state(cut) == records.WRITE_UNKNOWN
    allowed, why = records.retry_allowed(cut)
    assert allowed is False and "may have sent its IAM write" in why
    # A failed apply that had sent its write keeps the undo in the record: unknown too.
    failed = rec("plan", outcome="failed", failed_step="apply", undo=UNDO)
    failed["steps"]["apply"] = {}
    assert records.write_state(failed) == records.WRITE_UNKNOWN
    # ... and one that failed before sending it has no undo: nothing written.
    failed["undo"] = None
    assert records.write_state(failed) == records.WRITE_NONE


def test_a_write_the_record_shows_landed_may_be_run_again() -> None:
    landed = rec("plan", "apply")
    assert records.write_state(landed) == records.WRITE_LANDED
    assert records.retry_allowed(landed) == (
        True,
        "its record shows the IAM write landed (the undo is kept)",
    )
    assert records.undo_of(landed) == UNDO


def test_a_plan_that_may_not_write_never_wrote() -> None:
    plan_only = rec("plan")
    plan_only["parameters"] = {"backend": "aws", "apply": None}
    assert records.write_state(plan_only) == records.WRITE_NONE
    unchanged = rec("plan")
    unchanged["steps"]["plan"] = {"action": "unchanged"}
    assert records.write_state(unchanged) == records.WRITE_NONE


def test_resume_skips_only_a_finished_run_of_the_same_settings() -> None:
    done = rec("plan", "apply", "watch", outcome="fixed: carts is RUNNING", finished_at="x")
    done["fleet"] = {"parameters_sha256": "abc"}
    assert records.finished_with(done, "abc")
    assert not records.finished_with(done, "other")
    for unfinished in ("failed", "interrupted", "worker lost", "in progress"):
        assert not records.finished_with({**done, "outcome": unfinished}, "abc")
    assert not records.finished_with({**done, "finished_at": None}, "abc")
    assert not records.finished_with(None, "abc")


def test_a_stopped_run_is_marked_with_where_and_the_undo(tmp_path: Path) -> None:
    path = tmp_path / records.RECORD
    records.save(path, rec("parameters", "connect", "diagnose", "plan", "apply"))
    marked = records.mark_stopped(path, "interrupted", "watch", "KeyboardInterrupt: stopped")
    assert marked is not None
    assert (marked["outcome"], marked["failed_step"], marked["undo"]) == (
        "interrupted",
        "watch",
        UNDO,
    )
    assert json.loads(path.read_text())["outcome"] == "interrupted"
    # A run that ended on its own keeps its end.
    records.save(path, rec("plan", outcome="fixed: carts is RUNNING"))
    kept = records.mark_stopped(path, "worker lost", "watch", "lost")
    assert kept is not None and kept["outcome"] == "fixed: carts is RUNNING"
    assert records.mark_stopped(tmp_path / "none.json", "interrupted", None, "x") is None


@pytest.mark.parametrize(
    ("outcome", "written", "short", "code"),
    [
        ("fixed: carts is RUNNING", True, "fixed", 0),
        ("fixed: carts is RUNNING", False, "already fixed", 0),
        ("fixed, then rolled back", True, "rolled back", 0),
        ("planned: nothing written", False, "planned", 0),
        ("checked: nothing to change", False, "nothing to change", 0),
        ("failed", False, "failed", 1),
        ("interrupted", True, "interrupted", 130),
    ],
)
def test_a_row_says_what_the_record_says(
    outcome: str, written: bool, short: str, code: int | None
) -> None:
    data = rec("connect", "diagnose", "plan", outcome=outcome, caller={"account": "111111111101"})
    data["steps"]["apply"] = {"written": written}
    row = row_from_record("team-01", data, account="999999999999", region="us-west-2")
    assert (row.outcome, row.exit, row.written) == (short, code, written)
    assert (row.account, row.cause, row.plan) == ("111111111101", "task-role", "create")
    assert row.html == "team-01/fix-iam-permissions.html"


def test_a_target_without_a_record_has_a_row_too() -> None:
    row = row_from_record("team-02", None, account="111111111102", region="eu-west-1")
    assert (row.outcome, row.exit, row.html, row.account) == (
        "not started",
        None,
        "",
        "111111111102",
    )
    bad_input = rec("parameters", outcome="failed", error="ParameterError: parameter 'x' must be")
    assert row_from_record("t", bad_input).exit == 2


def test_the_fleet_exit_code() -> None:
    fixed = row_from_record("a", rec("apply", outcome="fixed: carts is RUNNING"))
    failed = row_from_record("b", rec("connect", outcome="failed", error="NotFound: x"))
    stopped = row_from_record("c", None)
    assert exit_code([fixed]) == 0
    assert exit_code([fixed, failed]) == 1
    assert exit_code([fixed, failed, stopped]) == 130


def test_the_tables_show_every_row_and_link_each_target(tmp_path: Path) -> None:
    rows = [
        row_from_record("a<b", rec("apply", outcome="fixed: carts is RUNNING")),
        row_from_record("c", rec("connect", outcome="failed", failed_step="connect", error="E")),
    ]
    html = html_table(rows)
    assert '<a href="a&lt;b/fix-iam-permissions.html">a&lt;b</a>' in html
    text = text_table(rows)
    assert text.splitlines()[0].split()[:3] == ["target", "account", "region"]
    assert "c: at connect: E" in text
    write_csv(rows, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == ",".join(COLUMNS)


def test_bounds_keep_one_target_per_account_and_the_region_bound() -> None:
    arn = "arn:aws:iam::{}:role/OrganizationAccountAccessRole"
    one = Target("one", Params(backend="aws", assume_role_arn=arn.format("111122223333")))
    same = Target("same", Params(backend="aws", account_id="111122223333", region="eu-west-1"))
    other = Target("other", Params(backend="aws", assume_role_arn=arn.format("444455556666")))
    bounds = Bounds(per_account=1, per_region=1)
    assert bounds.fits(one)
    bounds.take(one)
    assert not bounds.fits(same)  # same account, another region: still one at a time
    assert not bounds.fits(other)  # another account, same region: the region bound
    bounds.give_back(one)
    assert bounds.fits(same) and bounds.fits(other)
    unbounded = Bounds(per_account=2)
    unbounded.take(one)
    assert unbounded.fits(same) and unbounded.fits(other)


def job(tmp_path: Path, fleet_run: str = "run-1") -> Job:
    return Job(
        target="t",
        parameters=Params().public_dict(),
        lab_scenario="",
        parameters_sha256="abc",
        folder=str(tmp_path / "t"),
        control=str(tmp_path / CONTROL_FILE),
        fleet_run=fleet_run,
        deadline_s=60.0,
    )


def test_a_worker_does_not_start_a_target_once_the_fleet_is_stopping(tmp_path: Path) -> None:
    (tmp_path / CONTROL_FILE).write_text("after-step\n")
    outcome = run_target(job(tmp_path))
    assert (outcome.status, outcome.exit, outcome.attempt) == ("not started", None, 0)
    assert not (tmp_path / "t").exists()


def test_a_worker_does_not_run_again_a_target_that_may_have_written(tmp_path: Path) -> None:
    # A scheduler rescheduled the task of a worker that died after the plan (Dask does so when
    # its allowed-failures is above 0): the worker itself applies the rule.
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / ATTEMPT_FILE).write_text(json.dumps({"fleet_run": "run-1", "attempt": 1}))
    records.save(folder / records.RECORD, rec("parameters", "connect", "diagnose", "plan"))
    outcome = run_target(job(tmp_path))
    assert (outcome.status, outcome.exit, outcome.attempt) == ("not retried", 1, 1)
    assert "may have sent its IAM write" in outcome.message
    saved = json.loads((folder / records.RECORD).read_text())
    assert (saved["outcome"], saved["failed_step"]) == ("worker lost", "plan")
    assert not (folder / "attempt-1").exists()  # nothing moved, nothing run
    # The marker of another fleet run is no earlier attempt of this one.
    (folder / ATTEMPT_FILE).write_text(json.dumps({"fleet_run": "older", "attempt": 1}))
    (tmp_path / CONTROL_FILE).write_text("after-step\n")
    assert run_target(job(tmp_path)).status == "not started"
