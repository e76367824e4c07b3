"""Races of two writers on one policy, in interleavings a seed chooses (:mod:`turns`), and the
judge of each round. Used by ``tests/test_races.py`` and ``benchmarks/reliability.py``.

- the runbook (plan, apply, watch, verify, rollback when asked, summary) against someone typing
  the workshop's ``put-role-policy`` with their own document at a random point of it;
- two runbooks with different scopes (workshop and least-privilege), each through its summary.

Every request the writers send is a real request to a lab on loopback; one writer runs at a time,
so the order of turns is the order in which the lab saw the requests. After each round:

- **no lost update**: every document a runbook's write replaced is in that run's record, except
  when the other writer's put landed between the runbook's last read and its write: IAM has no
  conditional write, and that window is counted, not hidden;
- **no false success**: what a runbook's summary says IAM holds is what IAM held at that moment,
  and a run whose write is no longer in place does not end in a success.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import ROLE, Clients, allow, in_process_run, policy, policy_states, through_checks
from turns import GatedClock, Turns, Writer

from runbook_lib.errors import RunbookError
from runbook_lib.lab import Lab
from runbook_lib.runbook import Runbook
from runbook_lib.writes import read_policy, same_state

POLICY = "CartsDynamoPolicy"
THEIRS = json.loads(policy(allow("s3:GetObject", "arn:aws:s3:::carts-assets/*")))
WRITE_OPS = ("iam:PutRolePolicy", "iam:DeleteRolePolicy")
SUCCESS = ("fixed", "rolled back", "restored", "checked")


@dataclass
class Tally:
    races: int = 0
    lost_updates: int = 0
    false_successes: int = 0
    in_window: int = 0
    writes: int = 0  # IAM writes the lab saw, all rounds
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.races} races, {self.lost_updates} lost updates, {self.false_successes} false "
            f"successes ({self.in_window} with the other put inside the read-to-write window)"
        )


@dataclass
class Seen:
    """What IAM held just before each write a writer sent (read as the write's turn began)."""

    replaced: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    at_summary: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def gated_runbook(
    lab: Lab, out: Path, turns: Turns, truth: Clients, seen: Seen, name: str, **values: Any
) -> Runbook:
    """A runbook through its checks (outside the race), then gated: every request it sends
    and every wait on the lab's clock is a turn."""
    clock = GatedClock(lab.client_clock(), turns)
    run: Runbook = in_process_run(lab, out, clock, timeout_s=120, **values)
    through_checks(run)
    make = run.connection.client
    hooked: set[str] = set()

    def client(service: str) -> Any:
        c = make(service)
        if service not in hooked:
            hooked.add(service)
            hook(c, turns, truth, seen, name)
        return c

    run.connection.client = client  # type: ignore[method-assign]
    return run


def hook(c: Any, turns: Turns, truth: Clients, seen: Seen, name: str) -> None:
    """Gate ``c``'s requests; before each of its writes, note what IAM holds (the turn is ours:
    nothing can change between this read and the write)."""

    def before_send(request: Any, **_: Any) -> None:
        op = f"{c.meta.service_model.service_name}:{request.context.get('operation_name', '?')}"
        turns.gate(op)
        if op in WRITE_OPS:
            seen.replaced.append((name, op, read_policy(truth.iam, ROLE, POLICY)))

    c.meta.events.register("before-send", before_send, unique_id=f"gate-{id(c)}")


def runbook_body(run: Runbook, truth: Clients, seen: Seen, name: str) -> Any:
    def body() -> dict[str, Any]:
        try:
            run.plan()
            run.apply()
            run.watch()
            run.verify()
            run.rollback()
        except RunbookError:
            pass  # the record says why; the summary must keep it
        with contextlib.suppress(RunbookError):
            run.summary()
        # Still this writer's turn: IAM as it was when the summary read it.
        seen.at_summary[name] = read_policy(truth.iam, ROLE, POLICY)
        return dict(run.record.data)

    return body


def direct_body(iam: Any, turns: Turns, pauses: int) -> Any:
    def body() -> None:
        for i in range(pauses):
            turns.gate(f"pause {i}")
        iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=json.dumps(THEIRS))

    return body


def in_window(order: list[str], writer: str, other: str, nth_write: int) -> bool:
    """Whether ``other`` sent a write between ``writer``'s last IAM read and its
    ``nth_write``-th write (counted from 0), in the order the lab saw the requests."""
    writes = 0
    last_read = -1
    for i, turn in enumerate(order):
        who, _, label = turn.partition(" ")
        if who == writer and label == "iam:GetRolePolicy":
            last_read = i
        if who == writer and label in WRITE_OPS:
            if writes == nth_write:
                return any(
                    t.partition(" ")[0] == other and t.partition(" ")[2] in WRITE_OPS
                    for t in order[last_read + 1 : i]
                )
            writes += 1
    return False


def judge(
    tally: Tally,
    order: list[str],
    seen: Seen,
    records: dict[str, dict[str, Any]],
    other_of: dict[str, str],
) -> None:
    tally.races += 1
    for name, record in records.items():
        kept = policy_states(record)
        nth = 0
        for writer, _op, replaced in seen.replaced:
            if writer != name:
                continue
            if not any(same_state(replaced, k) for k in kept):
                if in_window(order, name, other_of[name], nth):
                    tally.in_window += 1
                else:
                    tally.lost_updates += 1
                    tally.notes.append(f"{name} replaced a document it never saw: {order}")
            nth += 1
        truth = seen.at_summary[name]
        said = (record.get("iam_now") or record.get("steps", {}).get("summary") or {}).get("now")
        if said is not None and not same_state(said["document"] if said["exists"] else None, truth):
            tally.false_successes += 1
            tally.notes.append(f"{name}'s summary says {said}, IAM held {truth}: {order}")
        outcome = str(record.get("outcome"))
        expected = (record.get("iam_now") or {}).get("expected")
        if outcome.startswith(SUCCESS) and expected is not None:
            want = expected["document"] if expected["exists"] else None
            if not same_state(want, truth):
                tally.false_successes += 1
                tally.notes.append(f"{name} ended '{outcome}' but IAM held {truth}: {order}")


def race_direct(lab: Lab, truth: Clients, out: Path, rounds: int, first_seed: int = 0) -> Tally:
    """``rounds`` races of the runbook against a direct put-role-policy at a random point;
    half start with someone's same-named policy, half roll back."""
    tally = Tally()
    direct = Clients(lab.endpoint_url).iam
    for seed in range(first_seed, first_seed + rounds):
        rng = random.Random(seed)
        lab.reset()
        if rng.random() < 0.5:
            truth.iam.put_role_policy(
                RoleName=ROLE, PolicyName=POLICY, PolicyDocument=json.dumps({**THEIRS, "Id": "o"})
            )
        turns, seen = Turns(seed), Seen()
        here = out / f"round-{seed}"  # each round a learner of its own: no earlier runs
        run = gated_runbook(lab, here, turns, truth, seen, "runbook", rollback=rng.random() < 0.5)
        hook(direct, turns, truth, seen, "direct")
        order = turns.run(
            Writer("runbook", runbook_body(run, truth, seen, "runbook")),
            Writer("direct", direct_body(direct, turns, rng.randint(0, 40))),
        )
        failed = [w.error for w in turns.writers.values() if w.error is not None]
        if failed:
            raise RuntimeError(f"a writer failed in round {seed}: {failed[0]!r}") from failed[0]
        tally.writes += len(lab.iam_writes)
        judge(
            tally, order, seen, {"runbook": turns.writers["runbook"].result}, {"runbook": "direct"}
        )
    return tally


def race_runbooks(
    lab: Lab, truth: Clients, out: Path, rounds: int, first_seed: int = 1000
) -> Tally:
    """``rounds`` races of two runbooks, workshop and least-privilege scopes, through their
    summaries; some roll back."""
    tally = Tally()
    for seed in range(first_seed, first_seed + rounds):
        rng = random.Random(seed)
        lab.reset()
        turns, seen = Turns(seed), Seen()
        here = out / f"round-{seed}"  # both runs share it: each sees the other's record
        a = gated_runbook(lab, here, turns, truth, seen, "workshop", rollback=rng.random() < 0.3)
        b = gated_runbook(
            lab,
            here,
            turns,
            truth,
            seen,
            "least",
            policy_scope="least-privilege",
            rollback=rng.random() < 0.3,
        )
        order = turns.run(
            Writer("workshop", runbook_body(a, truth, seen, "workshop")),
            Writer("least", runbook_body(b, truth, seen, "least")),
        )
        failed = [w.error for w in turns.writers.values() if w.error is not None]
        if failed:
            raise RuntimeError(f"a writer failed in round {seed}: {failed[0]!r}") from failed[0]
        tally.writes += len(lab.iam_writes)
        records = {n: w.result for n, w in turns.writers.items()}
        judge(tally, order, seen, records, {"workshop": "least", "least": "workshop"})
        # Never both "fixed" on different documents: IAM holds one.
        fixed = [n for n, r in records.items() if str(r["outcome"]).startswith("fixed: carts")]
        if len(fixed) == 2 and not same_state(seen.at_summary[fixed[0]], seen.at_summary[fixed[1]]):
            tally.false_successes += 1
            tally.notes.append(f"both fixed on different documents: {order}")
    return tally
