"""What a run will write, and what it may take back.

- :func:`plan` compares the rendered policy with what the role holds and lists the writes
  (:mod:`runbook_lib.writes`): the inline policy, and a new ECS deployment when the service's
  deployment FAILED. The record, the undo and the summary read the list, whatever the write.
- :func:`unfinished_runs` reads the records of earlier runs (pure): the newest runs on the same
  role and policy that wrote and did not finish, and the state before the first of them.
- :func:`rollback` takes back only what is still ours: it reads the policy (retrying while IAM
  may lag a write) and restores the earlier state only when IAM holds exactly what the runs wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from runbook_lib.blocks import Block, Diff, Heading, Pre, Sentence, Tone
from runbook_lib.policy import RenderedPolicy, pretty
from runbook_lib.shows import Shows
from runbook_lib.writes import (
    Clock,
    DeploymentWrite,
    PolicyWrite,
    Write,
    describe_state,
    read_policy,
    read_until,
    same_state,
    state_hash,
    state_record,
    writes_list,
)

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

#: Why a rollback wrote nothing although the run wrote: the policy is already as before.
ALREADY = "IAM already holds that state"
#: Outcomes of a run that did not finish: its writes may be half done and its undo not applied.
UNFINISHED = ("in progress", "interrupted", "failed")


#: What a plan does with the policy: write it where there is none, replace another document of
#: that name, or nothing (IAM holds it already).
PlanAction = Literal["create", "replace", "unchanged"]
#: What a rollback did: deleted the policy this run created, restored the one it replaced,
#: nothing (nothing of this run's is there), or refused (IAM holds something else now).
RollbackDone = Literal["deleted", "restored", "nothing", "refused"]

# --- earlier runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlierRun:
    """One earlier run's record, reduced to what a rerun needs."""

    run_id: str
    outcome: str
    failed_step: str | None
    #: Its policy writes that may have reached IAM, oldest first (record dicts).
    writes: tuple[dict[str, Any], ...]

    @property
    def wrote(self) -> bool:
        return bool(self.writes)

    def where(self) -> str:
        step = f" in {self.failed_step}" if self.failed_step else ""
        return f"run {self.run_id} ({self.outcome}{step})"


@dataclass(frozen=True)
class Unfinished(Shows):
    """Earlier runs on the same role and policy that did not finish, newest first, and the state
    of the policy before the first of them that wrote."""

    role: str
    policy_name: str
    runs: tuple[EarlierRun, ...]

    @property
    def writers(self) -> list[EarlierRun]:
        return [r for r in self.runs if r.wrote]

    @property
    def first_writer(self) -> EarlierRun | None:
        found = self.writers
        return found[-1] if found else None

    @property
    def original(self) -> dict[str, Any] | None:
        """The policy before the first unfinished run wrote (None: there was none)."""
        first = self.first_writer
        return None if first is None else _doc_of(first.writes[0]["before"])

    def left_behind(self) -> list[dict[str, Any] | None]:
        """What IAM may hold now if nobody else wrote since: the newest write's result, or, when
        it was cut off before its answer came back, what it replaced."""
        newest = self.writers[0].writes[-1]
        states = [_doc_of(newest["after"])]
        if newest["state"] == "sending":
            states.append(_doc_of(newest["before"]))
        return states

    @property
    def undo(self) -> str | None:
        first = self.first_writer
        return None if first is None else str(first.writes[0]["undo"])

    def sentences(self) -> list[str]:
        first = self.first_writer
        if first is None:
            newest = self.runs[0]
            return [f"The previous run on {self.policy_name}, {newest.where()}, wrote nothing."]
        name = self.policy_name
        lines = [f"An earlier run wrote {name} on {self.role} and did not finish: {first.where()}."]
        since = [r.where() for r in self.runs if r is not first]
        if since:
            shown = ", ".join(since[:3]) + (f" and {len(since) - 3} more" if len(since) > 3 else "")
            lines.append(f"Runs since, also unfinished: {shown}.")
        lines.append(
            f"Before it, the role held {describe_state(self.original, name)}"
            + (": the document it replaced is below." if self.original is not None else ".")
        )
        lines.append(f"To undo it: {self.undo}")
        lines.append(
            "With rollback: true, this run offers to restore that state (a write, gated by "
            "'apply' like any other; the plan says which state)."
        )
        return lines

    def record(self) -> dict[str, Any]:
        return {
            "runs": [
                {"run_id": r.run_id, "outcome": r.outcome, "failed_step": r.failed_step}
                for r in self.runs
            ],
            "first_writer": self.first_writer.run_id if self.first_writer else None,
            "replaced": state_record(self.original) if self.first_writer else None,
            "undo": self.undo,
        }

    def blocks(self) -> list[Block]:
        first, *rest = self.sentences()
        out: list[Block] = [Sentence(first, "warn" if self.first_writer else "info")]
        out += [Sentence(t) for t in rest]
        if self.first_writer is not None and self.original is not None:
            out.append(Pre(pretty(self.original)))
        return out


def _doc_of(state: Mapping[str, Any]) -> dict[str, Any] | None:
    doc = state.get("document") if state.get("exists") else None
    return dict(doc) if isinstance(doc, dict) else None


def _policy_writes(record: Mapping[str, Any], role: str, name: str) -> tuple[dict[str, Any], ...]:
    return tuple(
        w
        for w in record.get("writes") or []
        if w.get("kind") == "iam-policy"
        and w.get("role") == role
        and w.get("policy_name") == name
        and w.get("state") in ("sending", "written", "superseded")
    )


def unfinished_runs(
    records: Sequence[tuple[str, Mapping[str, Any]]], target: Mapping[str, Any]
) -> Unfinished | None:
    """From earlier records (run id, record), newest first: the unfinished runs on ``target``
    (same account, region, endpoint, role and policy) up to the newest run that finished.

    None when the newest earlier run on the target finished, or there is none.
    """
    role, name = str(target.get("role")), str(target.get("policy_name"))
    chain: list[EarlierRun] = []
    for run_id, rec in records:
        if not same_target(rec.get("target"), target) or rec.get("alive"):
            continue  # another policy, or a run still going on beside this one
        outcome = str(rec.get("outcome"))
        if outcome not in UNFINISHED:
            break
        chain.append(
            EarlierRun(run_id, outcome, rec.get("failed_step"), _policy_writes(rec, role, name))
        )
    return Unfinished(role, name, tuple(chain)) if chain else None


def same_target(a: Any, b: Mapping[str, Any]) -> bool:
    """Whether two records speak of the same policy in the same account. A lab started in a
    kernel lives only as long as its run: no other run can act on it."""
    if not isinstance(a, Mapping) or a.get("endpoint") == "embedded":
        return False
    keys = ("account", "region", "endpoint", "role", "policy_name")
    return all(a.get(k) == b.get(k) for k in keys)


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class Restore:
    """``rollback: true`` in a rerun: the state to restore is the one before an earlier run."""

    run_id: str
    state: dict[str, Any] | None
    #: What IAM must hold for the restore to go ahead (what the runs wrote).
    expect: list[dict[str, Any] | None]
    policy_name: str

    def sentence(self) -> str:
        return (
            f"rollback: true: the rollback cell will restore the state before run {self.run_id} "
            f"({describe_state(self.state, self.policy_name)}), if IAM still holds what the runs "
            "wrote."
        )


@dataclass
class Plan(Shows):
    """What the run will write, in order, and how each write is undone."""

    role: str
    policy: RenderedPolicy
    action: PlanAction  # the policy's
    previous: dict[str, Any] | None
    other_inline: tuple[str, ...]
    writes: list[Write] = field(default_factory=list)
    restore: Restore | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def policy_write(self) -> PolicyWrite | None:
        for w in self.writes:
            if isinstance(w, PolicyWrite):
                return w
        return None

    @property
    def deployment_write(self) -> DeploymentWrite | None:
        for w in self.writes:
            if isinstance(w, DeploymentWrite):
                return w
        return None

    @property
    def written(self) -> bool:
        """Whether this plan's policy reached IAM (read back, or overwritten since)."""
        pw = self.policy_write
        return pw is not None and pw.state in ("written", "superseded")

    @property
    def written_at(self) -> float | None:
        pw = self.policy_write
        return pw.written_at if pw is not None else None

    @property
    def refused(self) -> bool:
        """Whether a check found the world changed since this plan: it cannot be applied."""
        return any(w.state == "refused" for w in self.writes)

    @property
    def pending(self) -> list[Write]:
        return [w for w in self.writes if w.state == "planned"]

    @property
    def diff(self) -> str:
        pw = self.policy_write
        return pw.diff() if pw is not None else ""

    @property
    def restore_command(self) -> str:
        """The exact command that puts the policy back as this plan found it."""
        return PolicyWrite(self.role, self.policy.name, self.previous, None).undo or ""

    def summary(self) -> str:
        name, role = self.policy.name, self.role
        if self.action == "unchanged":
            head = f"{role} already has {name} with this exact document: nothing to write."
        elif self.action == "replace":
            head = f"put-role-policy will REPLACE the existing inline policy {name} on {role} (diff below)."
        else:
            head = f"put-role-policy will add the inline policy {name} to {role}."
        if self.deployment_write is not None:
            head += " Then a new ECS deployment (its deployment FAILED)."
        return head

    def record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "policy_name": self.policy.name,
            "action": self.action,
            "written": self.written,
            "before": self.previous,
            "before_sha256": state_hash(self.previous),
            "after": self.policy.document,
            "after_sha256": self.policy.sha256,
            "restore_command": self.restore_command,
            "writes": [w.record() for w in self.writes],
            "restore": None
            if self.restore is None
            else {
                "before_run": self.restore.run_id,
                "state": state_record(self.restore.state),
            },
        }

    def blocks(self) -> list[Block]:
        others = ", ".join(self.other_inline) or "none"
        tone: dict[str, Tone] = {"create": "info", "replace": "warn", "unchanged": "ok"}
        out: list[Block] = [
            Sentence(self.summary(), tone[self.action]),
            Sentence(f"Other inline policies on the role (kept): {others}"),
        ]
        if self.diff:
            out.append(Diff(self.diff))
        if self.writes:
            out += [Heading("Writes, in order:"), writes_list(self.writes)]
        if self.restore is not None:
            out.append(Sentence(self.restore.sentence()))
        out += [Sentence(n) for n in self.notes]
        return out


def plan(
    role: Any,
    policy: RenderedPolicy,
    service: Any = None,
    cluster: str = "",
    restore: Restore | None = None,
) -> Plan:
    """Compare the rendered policy with what ``role`` (a ``RoleState``) has under the same name;
    add a new deployment when ``service`` (a ``ServiceState`` in ``cluster``) has a FAILED
    PRIMARY deployment."""
    previous = role.inline.get(policy.name)
    if previous is None:
        action: PlanAction = "create"
    elif same_state(previous, policy.document):
        action = "unchanged"
    else:
        action = "replace"
    others = tuple(sorted(n for n in role.inline if n != policy.name))
    writes: list[Write] = []
    if action != "unchanged":
        writes.append(
            PolicyWrite(role.name, policy.name, previous, policy.document, text=policy.text)
        )
    notes = []
    if restore is not None and not any(same_state(previous, e) for e in restore.expect):
        # Someone wrote since the unfinished run: its starting state is no longer the one to go
        # back to. This run's own rollback restores what this plan found.
        notes.append(
            f"Not restoring the state before run {restore.run_id}: {role.name} holds "
            f"{describe_state(previous, policy.name)}, which that run did not write."
        )
        restore = None
    if service is not None and service.rollout_state == "FAILED":
        writes.append(DeploymentWrite(cluster, service.name, str(service.primary.get("id", ""))))
    return Plan(role.name, policy, action, previous, others, writes, restore, notes)


# --- rollback ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackResult(Shows):
    role: str
    policy_name: str
    done: RollbackDone
    matches_before: bool
    #: "the run" or "run <id>": whose starting state the rollback restores.
    restores: str = "the run"
    target: dict[str, Any] | None = None
    #: What IAM held when the rollback refused (kept for the record), or after it wrote.
    found: dict[str, Any] | None = None
    reason: str = ""
    write: PolicyWrite | None = None
    #: What the rollback leaves as it is, and why (a new deployment cannot be undone).
    notes: tuple[str, ...] = ()

    def sentence(self) -> str:
        name, role = self.policy_name, self.role
        if self.done == "refused":
            return (
                f"Rollback refused: {name} on {role} now holds "
                f"{describe_state(self.found, name)}, which this run did not write, so it is "
                "left alone (the document is kept in the record)."
            )
        what = {
            "deleted": f"deleted {name} from {role}",
            "restored": f"put back the previous {name} on {role}",
            "nothing": f"nothing to roll back: {self.reason or 'this run wrote nothing'}",
        }[self.done]
        if self.done == "nothing":
            return f"Rollback: {what}."
        check = (
            f"the role's inline policies match the state before {self.restores}"
            if self.matches_before
            else f"WARNING: the role does not match the state before {self.restores} "
            f"(IAM shows {describe_state(self.found, name)})"
        )
        return f"Rollback: {what}; {check}."

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "done": self.done,
            "matches_before": self.matches_before,
            "restores": self.restores,
            "target": state_record(self.target),
        }
        if self.done == "refused" or not self.matches_before:
            rec["found"] = state_record(self.found)
        if self.write is not None:
            rec["write"] = self.write.record()
        if self.notes:
            rec["notes"] = list(self.notes)
        return rec

    def blocks(self) -> list[Block]:
        tone: Tone = "ok" if self.matches_before else "warn"
        if self.done in ("nothing", "refused"):
            tone = "info" if self.done == "nothing" else "fail"
        return [Sentence(self.sentence(), tone), *(Sentence(n) for n in self.notes)]


def rollback(
    iam: IAMClient,
    clock: Clock,
    role: str,
    name: str,
    target: dict[str, Any] | None,
    expect: list[dict[str, Any] | None],
    on_change: Callable[[PolicyWrite], None],
    restores: str = "the run",
) -> RollbackResult:
    """Restore ``target`` only if the policy holds one of ``expect`` (what the run wrote).

    The policy is read until it shows an expected state, for a bounded time (a read may lag a
    write); a policy that still shows the target after that is left as it is. Anything else: refused, IAM left alone. ``on_change`` records the
    write before it is sent; after it, the policy is read back, again for a bounded time.
    """
    # Wait for what the run wrote, not for the target: right after a write, a lagging read
    # shows the state before it, which is often the very target.
    now, _ = read_until(
        lambda: read_policy(iam, role, name),
        lambda doc: any(same_state(doc, e) for e in expect),
        clock,
    )
    if same_state(now, target) and not any(same_state(now, e) for e in expect):
        return RollbackResult(role, name, "nothing", True, restores, target, now, ALREADY)
    if not any(same_state(now, e) for e in expect):
        return RollbackResult(role, name, "refused", False, restores, target, now)
    write = PolicyWrite(role, name, now, target, purpose="rollback")
    on_change(write)
    write.send(iam, clock)
    write.confirm(iam, clock)
    on_change(write)
    done: RollbackDone = "deleted" if target is None else "restored"
    return RollbackResult(
        role, name, done, write.state == "written", restores, target, write.found, write=write
    )
