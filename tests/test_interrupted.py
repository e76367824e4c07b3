"""A run killed at any step boundary, then run again: no replaced document is ever lost.

The role holds someone's same-named policy (the original). The CLI is stopped as a step's cell
starts (``STOPPED_AT`` here, every step in ``make reliability``), by Ctrl-C (SIGINT) or by SIGKILL
(no chance to say anything), then run again into the same ``--out`` with ``rollback: true``.
Whatever the first run managed to write:

- the original document is in a record under ``out/`` (the first run's, written before its
  write was sent, or the rerun's);
- the rerun's output says what the first run left: its undo and the document it replaced;
- the rerun's rollback puts the original back.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import ROLE, Clients, allow, cell_text, policy, run_cli
from interrupts import records, recovery_problems, stop_at

from runbook_lib.lab import Lab
from runbook_lib.permissions import STEPS

pytestmark = pytest.mark.notebook

#: The runs here are other processes (the CLI, papermill): they cannot move a stepped lab.
LAB_CLOCK = "real"

POLICY = "CartsDynamoPolicy"
ORIGINAL = policy(allow("s3:GetObject", "arn:aws:s3:::carts-assets/*"))

#: The steps whose stop takes a different way through the record and the rerun, each stopped by
#: both signals: the first cell (no record yet), the last step before the write (nothing written),
#: apply (the write in flight), watch (written, not finished), rollback (the undo in flight) and
#: the summary (finished). The other steps take the way of their neighbours; ``make reliability``
#: stops the CLI at every one of the steps (benchmarks/reliability_writes.py).
STOPPED_AT = ("parameters", "plan", "apply", "watch", "rollback", "summary")
assert set(STOPPED_AT) <= set(STEPS)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("step", STOPPED_AT)
def test_the_original_survives_a_run_stopped_at_any_step(
    fresh: Lab, aws: Clients, tmp_path: Path, step: str, sig: signal.Signals
) -> None:
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=ORIGINAL)
    out = tmp_path / "out"
    first = stop_at(out, fresh, step, sig)
    if sig == signal.SIGINT:
        assert first.returncode in (0, 130)  # a summary already done ends as usual
    [stopped] = records(out) or [{}]
    assert stopped.get("outcome") != "fixed: carts is RUNNING" or step == "summary"
    assert stopped.get("outcome") != "in progress" or sig == signal.SIGKILL

    proc, rerun = run_cli(out, f"endpoint_url={fresh.endpoint_url}", "rollback=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    now = aws.iam.get_role_policy(RoleName=ROLE, PolicyName=POLICY)["PolicyDocument"]
    connect = cell_text(out, "connect")
    problems = recovery_problems(out, ORIGINAL, stopped, rerun, connect, now, proc.stdout)
    assert problems == [], (
        problems,
        stopped.get("outcome"),
        stopped.get("failed_step"),
        rerun.get("earlier_runs"),
        connect[-2000:],
    )
