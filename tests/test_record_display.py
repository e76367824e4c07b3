"""The run record (saved after each step, never with a credential) and the task table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbook_lib.display import TaskTable
from runbook_lib.ecs import tasks_frame
from runbook_lib.record import RunRecord, SecretInOutput, find_secrets


def test_record_is_saved_after_each_step_and_on_failure(tmp_path: Path) -> None:
    rec = RunRecord.create(tmp_path / "r.json")
    rec.step("connect", {"account": "123456789012"}, 0.01)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert (
        saved["outcome"] == "in progress" and saved["steps"]["connect"]["account"] == "123456789012"
    )
    rec.fail(
        "apply", RuntimeError("boom"), "aws iam delete-role-policy --role-name r --policy-name p"
    )
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["failed_step"] == "apply" and saved["undo"].startswith(
        "aws iam delete-role-policy"
    )


def test_record_refuses_credentials(tmp_path: Path) -> None:
    rec = RunRecord.create(tmp_path / "r.json")
    with pytest.raises(SecretInOutput):
        rec.step("connect", {"oops": "AKIAIOSFODNN7EXAMPLE"}, 0.0)
    assert not (tmp_path / "r.json").exists()
    assert find_secrets('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"')
    assert not find_secrets("arn:aws:iam::123456789012:role/retailStoreEcsTaskRole")


def test_task_table_newest_first_with_status_colours() -> None:
    t = lambda n, s: {  # noqa: E731
        "taskArn": f"arn:aws:ecs:r:1:task/c/{n:032x}",
        "lastStatus": s,
        "desiredStatus": "RUNNING" if s == "RUNNING" else "STOPPED",
        "createdAt": datetime(2026, 11, 30, 12, 0, n, tzinfo=UTC),
        "stopCode": "EssentialContainerExited" if s == "STOPPED" else "",
        "containers": [{"exitCode": 1} if s == "STOPPED" else {}],
    }
    frame = tasks_frame([t(1, "STOPPED"), t(3, "RUNNING"), t(2, "STOPPED")])
    assert list(frame["lastStatus"]) == ["RUNNING", "STOPPED", "STOPPED"]
    assert frame["exitCode"].iloc[1] == 1
    table = TaskTable(frame)
    text = str(table)
    assert "12:00:03" in text and "EssentialContainerExited" in text
    html = table._repr_html_()
    assert 'class="carts-table carts-tasks"' in html
    assert html.index(">RUNNING<") < html.index(">STOPPED<")  # newest first in HTML too
    assert TaskTable(frame)._repr_html_() == html  # same HTML every time (golden outputs)
