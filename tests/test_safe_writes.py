"""Safe writes in a shared account, against a lab on loopback whose clock the test holds still.

- compare-and-swap: a policy written between plan and apply is not overwritten, the new diff is
  shown and the plan must be made again (in JupyterLab the Apply button turns into Re-plan);
- the write is read back (for a bounded time: IAM reads can lag) and another writer that won
  is named, both documents kept;
- rollback only what is still ours; refusals of cells run out of order; summary keeps failures;
- the undo is on record before the write is sent, and a later run finds an unfinished one;
- a FAILED ECS deployment gets a second, gated write.

Each runbook runs in this process (``Runbook`` steps, as the notebook's cells call them) with
the lab's stepped clock, so its waits are the lab's time passing, the same on any machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CHECKS,
    ROLE,
    WORKSHOP_POLICY,
    Clients,
    allow,
    in_process_run,
    inline_policies,
    policy,
    record_in,
    through_checks,
)

from runbook_lib.errors import PlanOutOfDate, RunbookError, StepOrder
from runbook_lib.lab import Lab
from runbook_lib.plan import rollback, unfinished_runs
from runbook_lib.policy import policy_hash, same_policy
from runbook_lib.record import RunRecord, earlier_records
from runbook_lib.runbook import Runbook
from runbook_lib.writes import PolicyWrite, read_until

LAB_SEED = 12
POLICY = "CartsDynamoPolicy"
#: A same-named policy someone else wrote (the workshop's terminal, another tool).
THEIRS = policy(allow("s3:GetObject", "arn:aws:s3:::carts-assets/*"))


def runbook(lab: Lab, out: Path, **values: Any) -> Runbook:
    """A run on ``lab`` recorded under ``out``; its waits are the lab's (stepped) time."""
    run: Runbook = in_process_run(lab, out, **values)
    return run


def on_disk(run: Runbook) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.record.path.read_text())
    return data


def their_doc() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(THEIRS)
    return found


pytestmark = pytest.mark.usefixtures("one_botocore_loader")


# --- compare-and-swap ---------------------------------------------------------------------------


def test_a_policy_written_between_plan_and_apply_is_not_overwritten(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """The issue's learner: plan, then the workshop's put-role-policy in a terminal, then apply."""
    run = through_checks(runbook(fresh, tmp_path))
    planned = run.plan()
    assert planned.action == "create"
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    with pytest.raises(PlanOutOfDate) as refused:
        run.apply()
    message = str(refused.value)
    assert message.startswith(f"Nothing written: {POLICY} on {ROLE} changed since the plan")
    assert "run the plan cell again" in message and "\n" not in message
    change = refused.value.diff
    assert '-        "s3:GetObject"' in change and '+        "dynamodb:*"' in change
    assert fresh.iam_writes == ["PutRolePolicy"]  # theirs only
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)
    rec = on_disk(run)
    assert rec["outcome"] == "failed" and rec["failed_step"] == "apply"
    refused_write = rec["steps"]["apply"]["writes"][0]
    assert refused_write["state"] == "refused"
    assert same_policy(refused_write["found"]["document"], THEIRS)
    assert rec["undo"] is None  # nothing was written
    # The same plan cannot be applied again: one sentence naming the plan cell.
    with pytest.raises(
        StepOrder, match=r"^Nothing written: IAM changed since this plan; run the plan cell"
    ):
        run.apply()
    # A new plan shows the replace, keeps theirs in the record, and applies.
    again = run.plan()
    assert again.action == "replace" and same_policy(again.previous or {}, THEIRS)
    run.apply()
    assert fresh.iam_writes == ["PutRolePolicy", "PutRolePolicy"]
    assert same_policy(inline_policies(aws)[POLICY], WORKSHOP_POLICY)
    rec = on_disk(run)
    assert rec["outcome"] == "in progress" and rec["failed_step"] is None  # resolved by re-running
    assert rec["resolved"][0]["step"] == "apply"
    assert [w["state"] for w in rec["writes"]] == ["refused", "written"]
    assert same_policy(rec["writes"][1]["before"]["document"], THEIRS)


def test_apply_button_turns_into_replan_and_shows_the_new_diff(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    run = through_checks(runbook(fresh, tmp_path, apply=False))
    run.plan()
    box = run._apply_button()
    button, out = box.children
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    button.click()
    assert button.description == "Re-plan" and not button.disabled
    assert "changed since the plan" in out.value and "dynamodb:*" in out.value
    assert fresh.iam_writes == ["PutRolePolicy"]
    button.click()  # re-plan: the new plan and its diff
    assert button.description == f"Apply {POLICY}" and not button.disabled
    assert "REPLACE" in out.value and "s3:GetObject" in out.value
    assert run.plan_result is not None and run.plan_result.action == "replace"
    button.click()  # apply the new plan
    assert button.description == f"Applied {POLICY}"
    assert same_policy(inline_policies(aws)[POLICY], WORKSHOP_POLICY)
    assert fresh.iam_writes == ["PutRolePolicy", "PutRolePolicy"]


def test_another_writer_after_the_write_is_named_and_both_documents_kept(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """Someone writes right after the runbook's put: reading back (for the bounded time IAM
    may lag) shows theirs; apply says another writer won and keeps both documents."""
    run = through_checks(runbook(fresh, tmp_path))
    run.plan()
    iam = run.connection.client("iam")

    def right_after(**_: Any) -> None:
        aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)

    iam.meta.events.register_first("after-call.iam.PutRolePolicy", right_after)
    with pytest.raises(RunbookError, match=r"^Another writer won") as won:
        run.apply()
    iam.meta.events.unregister("after-call.iam.PutRolePolicy", right_after)
    assert "both documents are in the record" in str(won.value)
    rec = on_disk(run)
    write = rec["writes"][0]
    assert write["state"] == "superseded"
    assert same_policy(write["after"]["document"], WORKSHOP_POLICY)
    assert same_policy(write["found"]["document"], THEIRS)
    assert rec["outcome"] == "failed" and rec["failed_step"] == "apply"
    # Theirs is not ours: rollback leaves it alone.
    run.params = run.params.__class__.from_mapping({**run.params.public_dict(), "rollback": True})
    with pytest.raises(RunbookError, match=r"^Rollback refused"):
        run.rollback()
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)
    assert fresh.iam_writes == ["PutRolePolicy", "PutRolePolicy"]


def test_a_put_inside_the_read_to_write_window_is_replaced_unseen(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """What IAM's lack of a conditional write leaves: a put that lands after the check read and
    before the write is replaced, and no read can tell. The run's own report stays true (IAM
    holds what it wrote); RELIABILITY.md gives the window's width."""
    run = through_checks(runbook(fresh, tmp_path))
    run.plan()
    iam = run.connection.client("iam")

    def inside(**_: Any) -> None:
        aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)

    iam.meta.events.register_first("before-send.iam.PutRolePolicy", inside)
    run.apply()
    iam.meta.events.unregister("before-send.iam.PutRolePolicy", inside)
    assert fresh.iam_writes == ["PutRolePolicy", "PutRolePolicy"]  # theirs, then ours
    assert same_policy(inline_policies(aws)[POLICY], WORKSHOP_POLICY)
    assert "s3:GetObject" not in json.dumps(on_disk(run))
    summary = run.summary()
    assert summary.data["iam_now"]["as_expected"] is True


class StaleIAM:
    """An IAM client whose reads lag its writes by ``lag`` reads (AWS: reads may be stale)."""

    class exceptions:
        class NoSuchEntityException(Exception):
            pass

    def __init__(self, lag: int, old: dict[str, Any] | None) -> None:
        self.lag, self.doc, self.old, self.reads = lag, old, old, 0

    def put_role_policy(self, RoleName: str, PolicyName: str, PolicyDocument: str) -> None:
        self.doc = json.loads(PolicyDocument)

    def delete_role_policy(self, RoleName: str, PolicyName: str) -> None:
        self.doc = None

    def get_role_policy(self, RoleName: str, PolicyName: str) -> dict[str, Any]:
        self.reads += 1
        doc = self.old if self.reads <= self.lag else self.doc
        if doc is None:
            raise self.exceptions.NoSuchEntityException()
        return {"PolicyDocument": doc}


class StillClock:
    def __init__(self) -> None:
        self.t = 0.0

    def time(self) -> float:
        return 1e9 + self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.mark.parametrize("lag", [0, 1, 3, 6])
def test_reading_back_waits_out_stale_reads_within_the_bound(lag: int) -> None:
    ours = json.loads(WORKSHOP_POLICY)
    iam, clock = StaleIAM(lag, None), StillClock()
    write = PolicyWrite(ROLE, POLICY, None, ours)
    write.send(iam, clock)
    assert write.confirm(iam, clock) is True and write.state == "written"
    assert write.reads == lag + 1 and clock.t <= 15.0


def test_a_read_stale_for_longer_than_the_bound_is_called_a_mismatch() -> None:
    iam, clock = StaleIAM(1000, their_doc()), StillClock()
    write = PolicyWrite(ROLE, POLICY, their_doc(), json.loads(WORKSHOP_POLICY))
    write.send(iam, clock)
    assert write.confirm(iam, clock) is False and write.state == "superseded"
    assert 15.0 <= clock.t < 20.0 and same_policy(write.found or {}, THEIRS)
    value, reads = read_until(lambda: 1, lambda v: v == 2, clock, limit_s=3.0)
    assert value == 1 and reads == 4  # at 0, 0.5, 1.5 and 3.5 s: the bound is kept


def test_rollback_right_after_the_write_waits_out_a_lagging_read() -> None:
    """Just after the write a read may still show the state before it, which is the state the
    rollback would restore: that is no reason to skip the rollback."""
    ours = json.loads(WORKSHOP_POLICY)
    iam, clock = StaleIAM(0, None), StillClock()
    PolicyWrite(ROLE, POLICY, None, ours).send(iam, clock)
    iam.lag = iam.reads + 3  # the next three reads show the policy as before the write
    sent: list[str] = []
    result = rollback(iam, clock, ROLE, POLICY, None, [ours], lambda w: sent.append(w.state))
    assert result.done == "deleted" and result.matches_before and iam.doc is None
    assert sent == ["planned", "written"] and clock.t < 15.0


def test_iam_reads_stale_after_a_write_are_waited_out_by_every_read_that_checks(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """The lab's stale reads (IAM reads answer the state before a write for 10 s after it: AWS-
    FACTS.md section 7): the read back, the rollback's check of what is ours and of its own
    write, and the summary's read each wait it out, within their bound."""
    fresh.set_faults(stale_reads_s=10.0)
    run = through_checks(runbook(fresh, tmp_path, rollback=True))
    run.plan()
    t0 = aws.now()
    run.apply()
    write = run.record.data["writes"][0]
    assert write["state"] == "written" and 10.0 <= aws.now() - t0 <= 15.0
    result = run.rollback()  # at once: a read still shows the state before the write
    assert (result.done, result.matches_before) == ("deleted", True)  # type: ignore[union-attr]
    summary = run.summary()
    assert summary.data["outcome"] == "rolled back" and summary.data["iam_now"]["as_expected"]
    assert fresh.iam_writes == ["PutRolePolicy", "DeleteRolePolicy"]


# --- rollback only what is still ours -----------------------------------------------------------


def test_rollback_refuses_a_document_this_run_did_not_write(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    run = through_checks(runbook(fresh, tmp_path, rollback=True))
    run.plan()
    run.apply()
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    with pytest.raises(RunbookError) as refused:
        run.rollback()
    text = str(refused.value)
    assert text.startswith(f"Rollback refused: {POLICY} on {ROLE} now holds {POLICY} sha256 ")
    assert "left alone" in text and "\n" not in text
    assert fresh.iam_writes == ["PutRolePolicy", "PutRolePolicy"]  # ours, theirs: no delete
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)
    rec = on_disk(run)
    assert rec["failed_step"] == "rollback"
    assert same_policy(rec["steps"]["rollback"]["found"]["document"], THEIRS)
    # The summary keeps the failure and says what IAM holds (theirs), not what the run wrote.
    with pytest.raises(RunbookError, match="another writer changed it"):
        run.summary()
    rec = on_disk(run)
    assert rec["outcome"] == "failed"
    assert same_policy(rec["steps"]["summary"]["now"]["document"], THEIRS)


def test_rollback_restores_a_replaced_document_exactly_and_checks_it(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    run = through_checks(runbook(fresh, tmp_path, rollback=True))
    assert run.plan().action == "replace"
    run.apply()
    result = run.rollback()
    assert str(result).startswith(f"Rollback: put back the previous {POLICY} on {ROLE}; the role's")
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)
    summary = run.summary()
    assert summary.data["outcome"] == "rolled back"
    assert summary.data["undo"] is None and summary.data["iam_now"]["as_expected"] is True
    # Run it twice: one sentence, naming the cell; nothing written.
    writes = list(fresh.iam_writes)
    with pytest.raises(StepOrder, match=r"^Nothing rolled back: this run has rolled back already"):
        run.rollback()
    assert fresh.iam_writes == writes


# --- steps guard their order ----------------------------------------------------------------------


@pytest.mark.parametrize("done", range(len(CHECKS) + 1))
def test_apply_refuses_until_every_step_before_it_passed(
    fresh: Lab, aws: Clients, tmp_path: Path, done: int
) -> None:
    run = runbook(fresh, tmp_path)
    steps = [*CHECKS[1:], "plan"]
    for step in steps[:done]:
        getattr(run, step)()
    if done == len(steps):
        run.apply()
        assert fresh.iam_writes == ["PutRolePolicy"]
        return
    # The first cell not yet run (render_policy has no cell of its own: lint renders).
    cell = {"render_policy": "lint", "check_trust": "trust"}.get(steps[done], steps[done])
    with pytest.raises(StepOrder) as refused:
        run.apply()
    sentence = str(refused.value)
    assert sentence.startswith(f"Nothing written: run the {cell} cell (`run.")
    assert sentence.endswith(".") and "\n" not in sentence
    assert fresh.iam_writes == []
    assert on_disk(run)["outcome"] == "in progress"  # a refusal is not a failed step


def test_apply_refuses_after_a_failed_preflight_even_with_a_plan(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    run = through_checks(runbook(fresh, tmp_path))
    run.plan()
    run._passed.discard("preflight")  # as after a preflight cell that failed when run again
    with pytest.raises(StepOrder, match="run the preflight cell"):
        run.apply()
    assert fresh.iam_writes == []


def test_rollback_before_a_plan_is_one_sentence(fresh: Lab, aws: Clients, tmp_path: Path) -> None:
    run = runbook(fresh, tmp_path, rollback=True)
    with pytest.raises(StepOrder) as refused:
        run.rollback()
    assert str(refused.value) == (
        "Nothing rolled back: run the plan cell (`run.plan()`, section 5) first; rollback takes "
        "back only what this run planned and wrote."
    )
    assert fresh.iam_writes == []


def test_summary_never_overwrites_a_failure(fresh: Lab, aws: Clients, tmp_path: Path) -> None:
    """A watch that fails after the write (IAM slow to reach the tasks): the summary keeps
    'failed' and the step, with the undo, instead of 'checked: nothing to change'."""
    fresh.set_faults(propagation_delay_s=900)
    run = through_checks(runbook(fresh, tmp_path, timeout_s=60))
    run.plan()
    run.apply()
    with pytest.raises(RunbookError):
        run.watch()
    summary = run.summary()
    assert summary.data["outcome"] == "failed" and summary.data["failed_step"] == "watch"
    assert summary.data["undo"] == (
        f"aws iam delete-role-policy --role-name {ROLE} --policy-name {POLICY}"
    )
    assert on_disk(run)["outcome"] == "failed"


# --- the undo survives ----------------------------------------------------------------------------


def test_the_undo_and_the_replaced_document_are_on_disk_before_the_write_is_sent(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    run = through_checks(runbook(fresh, tmp_path))
    run.plan()
    seen: list[dict[str, Any]] = []
    run.connection.client("iam").meta.events.register(
        "before-send.iam.PutRolePolicy", lambda **_: seen.append(on_disk(run))
    )
    run.apply()
    assert len(seen) == 1
    rec = seen[0]
    assert rec["outcome"] == "in progress" and rec["writes"][0]["state"] == "sending"
    assert same_policy(rec["writes"][0]["before"]["document"], THEIRS)
    assert rec["undo"].startswith(
        f"aws iam put-role-policy --role-name {ROLE} --policy-name {POLICY}"
    )
    assert "s3:GetObject" in rec["undo"]


def cut_off_after_apply(lab: Lab, out: Path, **values: Any) -> Runbook:
    """A run that wrote and then stopped, killed: its record stays 'in progress', and the
    process that wrote it is gone (here: the id of a process that has ended)."""
    run = through_checks(runbook(lab, out, **values))
    run.plan()
    run.apply()
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    run.record.data["process"]["pid"] = int(ended.stdout)
    run.record.save()
    return run


def test_a_rerun_names_the_unfinished_run_and_rollback_restores_the_state_before_it(
    fresh: Lab, aws: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone's same-named policy; a run replaces it and is cut off; a rerun with rollback:
    true shows the unfinished run, its undo and the document, and restores that document."""
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    first = cut_off_after_apply(fresh, tmp_path)
    first_id = first.record.data["run_id"]
    capsys.readouterr()
    rerun = runbook(fresh, tmp_path, rollback=True)
    said = capsys.readouterr().out
    assert f"An earlier run wrote {POLICY} on {ROLE} and did not finish: run {first_id}" in said
    assert f"Before it, the role held {POLICY} sha256 {policy_hash(their_doc())[:12]}" in said
    assert "s3:GetObject" in said and "To undo it: aws iam put-role-policy" in said
    earlier = rerun.record.data["earlier_runs"]
    assert earlier["first_writer"] == first_id
    assert same_policy(earlier["replaced"]["document"], THEIRS)
    through_checks(rerun)
    planned = rerun.plan()
    assert planned.action == "unchanged"  # the first run's policy is in place
    assert planned.restore is not None and planned.restore.run_id == first_id
    assert f"restore the state before run {first_id}" in str(planned)
    rerun.apply()
    rerun.watch()
    rerun.verify()
    result = rerun.rollback()
    assert result.done == "restored" and result.matches_before  # type: ignore[union-attr]
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)
    summary = rerun.summary()
    assert summary.data["outcome"] == f"restored the state before run {first_id}"
    assert f"Earlier unfinished run {first_id} replaced sha256" in str(summary)


def test_a_rerun_with_apply_false_restores_nothing_and_prints_the_command(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    cut_off_after_apply(fresh, tmp_path)
    writes = list(fresh.iam_writes)
    rerun = through_checks(runbook(fresh, tmp_path, rollback=True, apply=False))
    rerun.plan()
    rerun.apply()
    note = rerun.rollback()
    assert str(note).startswith("Not rolled back: parameter 'apply' is false.")
    assert f"aws iam delete-role-policy --role-name {ROLE} --policy-name {POLICY}" in str(note)
    assert fresh.iam_writes == writes


def test_the_earlier_state_is_not_restored_when_someone_wrote_since(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    """A run cut off after its write; then someone writes theirs; a rerun replaces theirs: its
    rollback puts theirs back (what its plan found), not the state before the first run."""
    first = cut_off_after_apply(fresh, tmp_path)
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=THEIRS)
    rerun = through_checks(runbook(fresh, tmp_path, rollback=True, policy_scope="least-privilege"))
    planned = rerun.plan()
    assert planned.action == "replace" and planned.restore is None
    assert f"Not restoring the state before run {first.record.data['run_id']}" in str(planned)
    rerun.apply()
    rerun.watch()
    rerun.verify()
    result = rerun.rollback()
    assert result.done == "restored" and result.restores == "the run"  # type: ignore[union-attr]
    assert same_policy(inline_policies(aws)[POLICY], THEIRS)


def test_only_unfinished_runs_on_the_same_target_count() -> None:
    target = {
        "account": "123456789012",
        "region": "us-west-2",
        "endpoint": "http://127.0.0.1:5000",
        "role": ROLE,
        "policy_name": POLICY,
    }
    wrote = {
        "kind": "iam-policy",
        "role": ROLE,
        "policy_name": POLICY,
        "state": "written",
        "before": {"exists": False, "document": None},
        "after": {"exists": True, "document": {"Version": "2012-10-17", "Statement": []}},
        "undo": "aws iam delete-role-policy ...",
    }

    def rec(outcome: str, **target_changes: str) -> dict[str, Any]:
        return {"outcome": outcome, "target": {**target, **target_changes}, "writes": [wrote]}

    assert unfinished_runs([], target) is None
    assert unfinished_runs([("a", {**rec("in progress"), "alive": True})], target) is None
    assert unfinished_runs([("a", rec("fixed: carts is RUNNING"))], target) is None
    found = unfinished_runs([("b", rec("interrupted")), ("a", rec("in progress"))], target)
    assert found is not None and [r.run_id for r in found.runs] == ["b", "a"]
    assert found.first_writer is not None and found.first_writer.run_id == "a"
    # Stops at the newest finished run; other targets and embedded labs never match.
    found = unfinished_runs(
        [("c", rec("failed")), ("b", rec("checked: nothing to change")), ("a", rec("in progress"))],
        target,
    )
    assert found is not None and [r.run_id for r in found.runs] == ["c"]
    assert unfinished_runs([("a", rec("in progress", account="210987654321"))], target) is None
    assert (
        unfinished_runs(
            [("a", rec("in progress", endpoint="embedded"))], {**target, "endpoint": "embedded"}
        )
        is None
    )


def test_earlier_records_are_the_runs_before_this_one_newest_first(tmp_path: Path) -> None:
    records = [record_in(tmp_path) for _ in range(3)]
    for r in records:
        r.save()
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "latest").symlink_to(records[-1].path.parent.name)
    found = earlier_records(records[-1].path)
    assert [rid for rid, _ in found] == [records[1].data["run_id"], records[0].data["run_id"]]
    # Written by this process, which still runs: going on beside this run, not cut off.
    assert all(data["alive"] for _, data in found)
    assert earlier_records(records[0].path) == []
    assert earlier_records(tmp_path / "flat.record.json") == []


# --- a FAILED deployment --------------------------------------------------------------------------


def fail_deployment(lab: Lab, aws: Clients) -> str:
    """The lab's circuit-breaker scenario, set up on this lab through ECS's API as a user would:
    the breaker on without rollback and a deployment under it, which the lab fails after AWS's
    threshold of failed tasks; a FAILED deployment launches no new task (AWS-FACTS.md section 1).
    Returns the FAILED deployment's id."""
    from runbook_lib.lab.scenarios import Api, circuit_breaker

    circuit_breaker(Api(lab.endpoint_url, lab.region, lab.params, aws.wait))
    failed = primary(aws)
    assert failed["rolloutState"] == "FAILED"
    return str(failed["id"])


def primary(aws: Clients) -> dict[str, Any]:
    found: dict[str, Any] = next(
        d for d in aws.service()["deployments"] if d["status"] == "PRIMARY"
    )
    return found


def test_a_failed_deployment_gets_a_second_write_shown_gated_recorded(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    failed = fail_deployment(fresh, aws)
    run = through_checks(runbook(fresh, tmp_path, apply=False))
    assert run.diagnosis is not None and run.diagnosis.service.rollout_state == "FAILED"
    planned = run.plan()
    kinds = [w.kind for w in planned.writes]
    assert kinds == ["iam-policy", "ecs-deployment"]
    text = str(planned)
    command = (
        f"aws ecs update-service --cluster {run.params.cluster} --service {run.params.service} "
        "--force-new-deployment"
    )
    assert command in text and "Cannot be undone" in text
    run.apply()  # apply: false: nothing is sent
    assert primary(aws)["id"] == failed and fresh.iam_writes == []
    # With apply allowed, both writes go, in order; the record and the summary list both.
    run = through_checks(runbook(fresh, tmp_path, rollback=True))
    run.plan()
    note = run.apply()
    assert "Started deployment" in str(note) and "Cannot be undone" in str(note)
    new = primary(aws)
    assert new["id"] != failed and new["rolloutState"] == "IN_PROGRESS"
    assert fresh.iam_writes == ["PutRolePolicy"]
    rec = on_disk(run)
    deploy = rec["writes"][1]
    assert deploy["state"] == "written" and deploy["command"] == command
    assert deploy["undo"] is None and deploy["undo_note"].startswith("Cannot be undone")
    assert deploy["failed_deployment"] == failed and deploy["new_deployment"] == new["id"]
    run.watch()
    rolled = run.rollback()
    assert f"Left as it is: {command} (Cannot be undone" in str(rolled)
    summary = str(run.summary())
    assert f"Also wrote (written): {command}." in summary


def test_the_deployment_write_is_skipped_when_ecs_moved_on(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    fail_deployment(fresh, aws)
    run = through_checks(runbook(fresh, tmp_path))
    run.plan()
    aws.ecs.update_service(
        cluster=run.params.cluster, service=run.params.service, forceNewDeployment=True
    )
    moved = primary(aws)["id"]
    note = run.apply()
    assert "No new deployment needed" in str(note)
    assert primary(aws)["id"] == moved
    assert [w["state"] for w in on_disk(run)["steps"]["apply"]["writes"]] == ["written", "skipped"]


def test_a_run_without_a_record_path_keeps_its_record_in_a_run_folder_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JupyterLab: no RUNBOOK_RECORD; each run's record goes to out/<run id>/, and a later run
    finds the earlier one there instead of writing over it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNBOOK_RECORD", raising=False)
    first = RunRecord.create()
    first.save()
    second = RunRecord.create()
    second.save()
    assert first.path.parent != second.path.parent
    assert first.path.parent.parent == second.path.parent.parent == Path("out")
    assert (tmp_path / "out" / "latest").resolve() == second.path.parent.resolve()
    assert [rid for rid, _ in earlier_records(second.path)] == [first.data["run_id"]]


def test_a_process_that_ended_or_is_another_is_not_a_run_going_on(tmp_path: Path) -> None:
    """A killed command's kernel can stay a zombie (nobody reaps it), and a pid can be reused:
    neither is a run still going on."""
    from runbook_lib.record import _alive, _process_start

    here = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _process_start(os.getpid()),
    }
    assert _alive(here)
    assert not _alive({**here, "started": "1"})  # the same pid, started at another time
    assert not _alive({**here, "host": "elsewhere"})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 60
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive({**here, "pid": child.pid, "started": None})  # ended, not reaped
    finally:
        child.wait()
    assert not _alive({**here, "pid": child.pid, "started": None})  # ended and reaped
