"""What a target's run record says, for the fleet: did it write, may it run again, is it done.

The record is the JSON file each run saves after every step
(:class:`runbook_lib.record.RunRecord`), so it survives a kernel, a worker or a machine that dies.
The fleet reads it to decide a retry and a resume, and adds its own part under ``"fleet"``
(the target, the hash of its settings, the attempt, the seconds). Pure functions over the parsed
JSON, plus small helpers that load and save it through :class:`RunRecord` (which refuses anything
shaped like a credential).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runbook_lib.record import RunRecord

#: The file names a run writes in its folder (as ``carts-runbook run`` names them).
STEM = "fix-iam-permissions"
RECORD = f"{STEM}.record.json"
NOTEBOOK = f"{STEM}.ipynb"
HTML = f"{STEM}.html"

#: Outcomes of a run that did not finish.
UNFINISHED = ("in progress", "failed", "interrupted", "worker lost")

# What a record says about the run's write to IAM.
WRITE_NONE = "none"  # nothing was or will be written by this run
WRITE_LANDED = "landed"  # the apply step recorded the write as done
WRITE_UNKNOWN = "unknown"  # a write may have been sent, and the record cannot say it landed


def load(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none (or it is not a record)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as the record at ``path`` (atomically; refuses a credential)."""
    RunRecord(path, data).save()


def writes_allowed(record: dict[str, Any]) -> bool:
    """Whether the run's parameters let it write (``apply``, or null on the lab)."""
    params = record.get("parameters") or {}
    apply = params.get("apply")
    return bool(apply) if apply is not None else params.get("backend", "lab") == "lab"


def write_state(record: dict[str, Any] | None) -> str:
    """What the record says of the run's IAM write: :data:`WRITE_NONE`, :data:`WRITE_LANDED` or
    :data:`WRITE_UNKNOWN`.

    The apply step is saved only when it ends. A run killed during it (or between the plan and
    it) leaves a plan with something to write and no apply step: the write may have gone out, so
    that counts as unknown. A failed apply step whose record holds an undo command had sent its
    write (:meth:`Runbook.undo_command` counts a sent write).
    """
    if not record:
        return WRITE_NONE
    steps = record.get("steps") or {}
    applied = steps.get("apply")
    if isinstance(applied, dict):
        if applied.get("written") is True:
            return WRITE_LANDED
        if applied.get("written") is False:
            return WRITE_NONE
        return WRITE_UNKNOWN if record.get("undo") else WRITE_NONE
    plan = steps.get("plan")
    if isinstance(plan, dict) and plan.get("action") not in (None, "unchanged"):
        return WRITE_UNKNOWN if writes_allowed(record) else WRITE_NONE
    return WRITE_NONE


def retry_allowed(record: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether a target whose worker was lost may run again, and why (one sentence).

    Never after it may have written to IAM, unless the record shows the write landed: a second
    run would read its own write as the role's "before" and lose the way back.
    """
    state = write_state(record)
    if state == WRITE_UNKNOWN:
        return (
            False,
            "its run may have sent its IAM write and the record does not show it landed, so it "
            "was not run again; check the role before running it again",
        )
    if state == WRITE_LANDED:
        return True, "its record shows the IAM write landed (the undo is kept)"
    return True, "it had written nothing to IAM"


def last_step(record: dict[str, Any] | None) -> str | None:
    """The step the run was in or had last finished, from the record."""
    if not record:
        return None
    failed = record.get("failed_step")
    if failed:
        return str(failed)
    steps = list((record.get("steps") or {}).keys())
    return steps[-1] if steps else None


def undo_of(record: dict[str, Any] | None) -> str | None:
    """The command that undoes what the run wrote (from the record), or None."""
    if not record:
        return None
    if record.get("undo"):
        return str(record["undo"])
    if record.get("outcome") != "in progress":
        return None  # a run that ended says its undo itself (none after a rollback)
    # Cut off after its apply step: the step recorded the undo of its write.
    applied = (record.get("steps") or {}).get("apply") or {}
    undo = applied.get("undo") if isinstance(applied, dict) else None
    return str(undo) if undo else None


def finished_with(record: dict[str, Any] | None, parameters_sha256: str) -> bool:
    """Whether the record shows a finished run of the same settings (``--resume`` skips it)."""
    if not record or record.get("outcome") in UNFINISHED or not record.get("finished_at"):
        return False
    fleet = record.get("fleet") or {}
    return bool(fleet.get("parameters_sha256") == parameters_sha256)


def mark_stopped(path: Path, outcome: str, step: str | None, reason: str) -> dict[str, Any] | None:
    """Mark the record at ``path`` as stopped (``interrupted``, ``worker lost``, or ``failed``
    for a run past its deadline) at ``step``, keeping the undo of anything it wrote; returns the
    record (None when there is none).

    Only a record still ``in progress``, or one whose step failed because the kernel was
    interrupted (``KeyboardInterrupt``), is changed: a run that ended on its own keeps its end.
    """
    data = load(path)
    if data is None:
        return None
    by_interrupt = str(data.get("error") or "").startswith("KeyboardInterrupt")
    if data.get("outcome") == "in progress" or by_interrupt:
        undo = undo_of(data)
        data["outcome"] = outcome
        data["failed_step"] = data.get("failed_step") or step
        data["error"] = reason
        data["undo"] = undo
        save(path, data)
    return data
