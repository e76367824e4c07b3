"""The runbook's steps, one method each, as the notebook calls them.

Each method does one step, returns an object that shows itself (HTML in JupyterLab, text in a
headless log) and adds its part to the run record. A step that fails marks the record failed,
with the command that undoes what the run wrote, and re-raises so papermill stops there.

Cells can run in any order in JupyterLab (and through this class): the steps that write check
that the steps they rely on ran and passed in this run, and refuse with one sentence naming the
cell to run (:class:`~runbook_lib.errors.StepOrder`) before anything is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runbook_lib import diagnose, gate, iam, plan, policy, preflight, session, watch
from runbook_lib.blocks import Block, Diff, Heading, Sentence, Table, Tone, items
from runbook_lib.diagnose import Diagnosis
from runbook_lib.dynamo import ScanResult, scan_items
from runbook_lib.ecs import TaskDefinitions
from runbook_lib.errors import (
    Blocked,
    DeploymentFailed,
    PlanOutOfDate,
    RunbookError,
    StepOrder,
    WrongCause,
)
from runbook_lib.exists import check_names
from runbook_lib.iam import RoleState, TrustCheck, read_role
from runbook_lib.params import Params, notebook_values
from runbook_lib.plan import (
    ALREADY,
    Plan,
    Restore,
    RollbackResult,
    Unfinished,
    unfinished_runs,
)
from runbook_lib.policy import LintReport, RenderedPolicy
from runbook_lib.preflight import Preflight
from runbook_lib.record import RunRecord, earlier_records
from runbook_lib.session import Connection, Identity
from runbook_lib.shows import Shows
from runbook_lib.watch import Baseline, WatchResult
from runbook_lib.writes import (
    SENT_STATES,
    DeploymentWrite,
    PolicyWrite,
    Write,
    describe_state,
    read_policy,
    read_until,
    same_state,
    state_record,
)

#: The notebook's cell for each step, as a refusal names it.
CELLS = {
    "connect": "connect cell (`run.connect()`, section 1)",
    "diagnose": "diagnose cell (`run.diagnose()`, section 2)",
    "lint": "lint cell (`run.lint()`, section 3)",
    "preflight": "preflight cell (`run.preflight()`, section 3)",
    "trust": "trust cell (`run.check_trust()`, section 4)",
    "plan": "plan cell (`run.plan()`, section 5)",
    "summary": "summary cell (`run.summary()`, section 9)",
}
#: What apply needs to have passed in this run, in the notebook's order.
BEFORE_APPLY = ("connect", "diagnose", "lint", "preflight", "trust", "plan")


@dataclass(frozen=True)
class Note(Shows):
    """A sentence for the reader, as a step's result when there is nothing else to show."""

    text: str
    tone: Tone = "info"

    def blocks(self) -> list[Block]:
        return [Sentence(self.text, self.tone)]


@dataclass(frozen=True)
class Changed(Shows):
    """A sentence and the diff it speaks of."""

    text: str
    diff: str

    def blocks(self) -> list[Block]:
        return [Sentence(self.text, "warn"), Diff(self.diff)]


class Runbook:
    """State of one run across the notebook's cells."""

    def __init__(self, params: Params, record: RunRecord | None = None) -> None:
        self.params = params
        self.record = record or RunRecord.create()
        self.record.data["parameters"] = params.public_dict()
        self._connection: Connection | None = None
        self.diagnosis: Diagnosis | None = None
        self.role: RoleState | None = None
        self.policy: RenderedPolicy | None = None
        self.lint_report: LintReport | None = None
        self.preflight_result: Preflight | None = None
        self.plan_result: Plan | None = None
        self.baseline: Baseline | None = None
        self.watch_result: WatchResult | None = None
        #: Every write this run sent (or was about to send), in order, whatever its kind.
        self.writes: list[Write] = []
        #: Earlier runs on the same policy that wrote and did not finish (found on connect).
        self.earlier: Unfinished | None = None
        self.rollback_result: RollbackResult | None = None
        #: Steps whose latest attempt passed, and failures not since passed on a second try.
        self._passed: set[str] = set()
        self._failures: dict[str, str] = {}

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_namespace(
        cls, namespace: Mapping[str, Any], record_path: str | None = None
    ) -> Runbook:
        """Validate the notebook's parameter variables (found in ``namespace``) and start a run.

        >>> Runbook.from_namespace({"backend": "lab"})  # doctest: +SKIP
        """
        values = notebook_values(namespace)  # with any unknown name papermill injected
        params = Params.from_mapping(values, source="the notebook's parameters")
        return cls(params, RunRecord.create(record_path))

    def parameters(self) -> ParamsView:
        """The validated parameters, as a table."""
        with self._step("parameters") as rec:
            rec.update(source=self.params.source)
        return ParamsView(self.params)

    @contextmanager
    def _step(self, name: str) -> Iterator[dict[str, Any]]:
        payload: dict[str, Any] = {}
        t0 = time.monotonic()
        self._passed.discard(name)
        try:
            gate.entered()  # a Ctrl-C held for this step raises here (headless runs)
            yield payload
        except BaseException as exc:
            # What the step saw before it failed (the diagnosis's cause, say) stays on record.
            self.record.data["steps"][name] = payload
            self.record.data["timings_s"][name] = round(time.monotonic() - t0, 3)
            self._failures.setdefault(name, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, KeyboardInterrupt):
                self.record.interrupt(name, self.undo_command())
            else:
                self.record.fail(name, exc, self.undo_command())
            raise
        finally:
            gate.left()
        self._passed.add(name)
        error = self._failures.pop(name, None)
        if error is not None:
            # Run again and passed (a learner re-runs a cell): that failure no longer stands.
            self.record.data.setdefault("resolved", []).append({"step": name, "error": error})
            if self.record.data.get("failed_step") == name:
                self._reopen()
        self.record.step(name, payload, time.monotonic() - t0)

    def _reopen(self) -> None:
        """The record's failure was resolved: it shows the oldest failure still standing."""
        data = self.record.data
        if self._failures:
            step, error = next(iter(self._failures.items()))
            data.update(outcome="failed", failed_step=step, error=error)
        else:
            data.update(outcome="in progress", failed_step=None, error=None)

    # --- writes and their undo -----------------------------------------------------------------

    def _policy_writes(self) -> list[PolicyWrite]:
        return [w for w in self.writes if isinstance(w, PolicyWrite) and w.sent]

    def _start_state(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether this run sent a policy write, the policy's state before the first)."""
        sent = self._policy_writes()
        return (True, sent[0].before) if sent else (False, None)

    def undo_command(self) -> str | None:
        """The command that puts the policy back as it was before this run's first write (None
        when the run wrote nothing, or when the policy is back in that state).

        A write that failed may still have landed (the answer lost on the way back), so it counts.
        """
        wrote, start = self._start_state()
        if not wrote:
            return None
        last = self._policy_writes()[-1]
        if last.state == "written" and same_state(last.after, start):
            return None  # rolled back
        return PolicyWrite(last.role, last.name, start, None).undo

    def _save_writes(self, write: Write | None = None) -> None:
        """Keep ``write`` among the run's writes and save the record now (with the undo)."""
        if write is not None and all(w is not write for w in self.writes):
            self.writes.append(write)
        self.record.writes([w.record() for w in self.writes], self.undo_command())

    def _sending(self, write: Write) -> None:
        """Just before a write is sent: on record, with its undo and what it replaces."""
        write.state = "sending"
        self._save_writes(write)

    @property
    def connection(self) -> Connection:
        """The session the connect step made (one per run); a clear error before it."""
        if self._connection is None:
            raise RunbookError(
                "not connected yet: run the 'Check the parameters and connect' cells first."
            )
        return self._connection

    @property
    def connected(self) -> bool:
        return self._connection is not None

    # --- 1. connect -----------------------------------------------------------------------------

    def connect(self) -> Identity:
        """Build the session (starting a lab if the parameters ask) and check who answers."""
        with self._step("connect") as rec:
            self._connection = conn = session.connect(self.params)
            assert conn.identity is not None
            ident = conn.identity
            rec.update(
                account=ident.account,
                caller_arn=ident.arn,
                endpoint=ident.endpoint,
                backend=ident.backend,
            )
            self.record.data["caller"] = {"account": ident.account, "arn": ident.arn}
            rec["found"] = check_names(
                conn.client("iam"),
                conn.client("ecs"),
                conn.client("dynamodb"),
                self.params,
                ident.account,
            )
            self.record.data["target"] = target = self._target(ident.account)
            self.earlier = unfinished_runs(earlier_records(self.record.path), target)
            if self.earlier is not None:
                self.record.data["earlier_runs"] = self.earlier.record()
                _show(self.earlier)
            return ident

    def _target(self, account: str) -> dict[str, Any]:
        """What this run writes to: a later run on the same target reads this run's record."""
        p = self.params
        if p.is_lab:
            endpoint = p.endpoint_url or "embedded"  # a lab in the kernel dies with the run
        else:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "aws"
        return {
            "account": account,
            "region": p.region,
            "endpoint": endpoint,
            "role": p.task_role,
            "policy_name": p.policy_name,
        }

    @property
    def account(self) -> str:
        ident = self.connection.identity
        assert ident is not None
        return ident.account

    # --- 2. diagnose ----------------------------------------------------------------------------

    def diagnose(self) -> Diagnosis:
        """See the failure: the service, the newest task that failed, its log, the cause.

        Stops (:class:`WrongCause`) when the cause is one a policy on the task role cannot fix
        (the execution role, a boundary, an SCP, the image, capacity...) or when the service's
        task definition runs as another role: nothing is written then."""
        with self._step("diagnose") as rec:
            c = self.connection
            d = diagnose.diagnose(
                c.client("ecs"),
                c.client("logs"),
                self.params.cluster,
                self.params.service,
                self.params.task_role,
            )
            self.diagnosis = d
            rec.update(d.record())
            if not d.fixable_here:
                _show(d)
                raise WrongCause(d.headline())
            if d.role_mismatch is not None:
                _show(d)
                raise WrongCause(d.role_mismatch)
            return d

    # --- 3. policy ------------------------------------------------------------------------------

    def render_policy(self) -> RenderedPolicy:
        with self._step("render") as rec:
            self.policy = policy.render_policy(self.params, self.account)
            rec.update(
                scope=self.policy.scope, sha256=self.policy.sha256, document=self.policy.document
            )
            return self.policy

    def _role(self) -> RoleState:
        if self.role is None:
            self.role = read_role(
                self.connection.client("iam"), self.params.task_role, self.account
            )
        return self.role

    def _policy(self) -> RenderedPolicy:
        return self.policy if self.policy is not None else self.render_policy()

    def lint(self) -> LintReport:
        """Wildcards, empty region or account, the inline size quota. Errors stop the run."""
        with self._step("lint") as rec:
            report = policy.lint(
                self._policy().document, self.params, self.account, self._role().inline
            )
            self.lint_report = report
            rec.update(findings=[{"level": f.level, "message": f.message} for f in report.findings])
            if not report.ok:
                _show(report)
                raise RunbookError(f"the policy cannot be written: {report.errors[0].message}")
            return report

    def preflight(self) -> Preflight:
        """Every carts call, decided before and after the candidate (and by IAM on real AWS)."""
        with self._step("preflight") as rec:
            p = self.params
            role, candidate = self._role(), self._policy()
            result = preflight.preflight(role, candidate, p.region, self.account, p.table, p.index)
            if not p.is_lab:
                from runbook_lib.carts import carts_requests

                reqs = carts_requests(p.region, self.account, p.table, p.index)
                result.simulator, result.simulator_note = preflight.simulate(
                    self.connection.client("iam"), role, candidate, reqs
                )
            else:
                result.simulator_note = "IAM's policy simulator is not part of the lab: the local evaluation stands alone."
            self.preflight_result = result
            rec.update(result.record())
            if not result.ok:
                _show(result)
                if result.blocked_by is not None:
                    raise Blocked(result.verdict())
                raise RunbookError(result.verdict())
            return result

    # --- 4. trust -------------------------------------------------------------------------------

    def check_trust(self) -> TrustCheck:
        with self._step("trust") as rec:
            tc = iam.check_trust(self._role())
            rec.update(trusted=tc.ok, warnings=list(tc.warnings), trust_policy=tc.trust_policy)
            if not tc.ok:
                _show(tc)
                raise RunbookError(tc.verdict())
            return tc

    # --- 5. plan and apply ----------------------------------------------------------------------

    def plan(self) -> Plan:
        """What the run will write, in order, read from IAM (and ECS) as they are now."""
        with self._step("plan") as rec:
            self.role = None  # read again: the plan must compare with what IAM holds now
            service = self.diagnosis.service if self.diagnosis else None
            self.plan_result = plan.plan(
                self._role(), self._policy(), service, self.params.cluster, self._restore()
            )
            rec.update(self.plan_result.record())
            return self.plan_result

    def _restore(self) -> Restore | None:
        """With rollback: true after an unfinished run that wrote: the state before it."""
        first = self.earlier.first_writer if self.earlier is not None else None
        if not self.params.rollback or self.earlier is None or first is None:
            return None
        return Restore(
            first.run_id, self.earlier.original, self.earlier.left_behind(), self.params.policy_name
        )

    def _plan_to_apply(self) -> Plan:
        """This run's plan, once everything apply relies on has passed; else one sentence."""
        for step in BEFORE_APPLY:
            if step not in self._passed:
                raise StepOrder(
                    f"Nothing written: run the {CELLS[step]} first; apply writes only after this "
                    "run's diagnose, lint, preflight, trust and plan have passed."
                )
        assert self.plan_result is not None
        if self.plan_result.refused:
            raise StepOrder(
                f"Nothing written: IAM changed since this plan; run the {CELLS['plan']} again to "
                "see the new diff."
            )
        return self.plan_result

    def apply(self) -> Any:
        """Write what the plan lists when ``apply`` allows; otherwise say so (and offer a button
        live)."""
        the_plan = self._plan_to_apply()
        if not the_plan.writes:
            with self._step("apply") as rec:
                rec.update(written=False, reason="unchanged")
            return Note(the_plan.summary(), "ok")
        if not the_plan.pending:
            return Note("This plan is applied already: " + self._applied_text(the_plan), "ok")
        if not self.params.writes:
            from runbook_lib.display import live_frontend

            with self._step("apply") as rec:
                rec.update(written=False, reason="apply is false")
            if live_frontend():
                return self._apply_button()
            return Note(
                "Plan only: parameter 'apply' is false, so nothing was written. Set apply to true "
                "(or run the printed commands) to make the writes.",
                "warn",
            )
        return self._write()

    def _write(self) -> Note:
        """Send the plan's writes in order, each recorded with its undo, then checked just before
        it is sent (nothing is written when IAM moved since the plan), and read back after."""
        the_plan = self._plan_to_apply()
        with self._step("apply") as rec:
            c = self.connection
            baseline = Baseline.take(
                c.client("ecs"), self.params.cluster, self.params.service, now=c.clock.time
            )
            self.baseline = baseline
            for write in the_plan.pending:
                # Each write's own calls are checked against its client's stubs (writes.py).
                client: Any = c.client("iam" if isinstance(write, PolicyWrite) else "ecs")
                # The undo and what the write replaces go on disk first, so that nothing but
                # one read stands between the check and the write (the window IAM leaves open).
                self._sending(write)
                if not write.check(client):
                    self._save_writes()
                    rec.update(written=False, writes=[w.record() for w in the_plan.writes])
                    if isinstance(write, PolicyWrite):
                        self.record.data["steps"]["plan"] = the_plan.record()
                        raise self._out_of_date(write)
                    continue  # the deployment moved on by itself: not needed
                self.rollback_result = None  # a new write: a rollback may take it back again
                write.send(client, c.clock)
                write.confirm(client, c.clock)
                self._save_writes()
                if isinstance(write, PolicyWrite):
                    # The change is when the write landed: throttled retries can delay it, and a
                    # task denied meanwhile was denied by the old policy, not by a slow propagation.
                    if write.written_at is not None:
                        self.baseline = replace(baseline, at=write.written_at)
                    if write.state == "superseded":
                        self.record.data["steps"]["plan"] = the_plan.record()
                        raise RunbookError(write.outcome())
            self.record.data["steps"]["plan"] = the_plan.record()
            rec.update(
                written=the_plan.written,
                written_at=the_plan.written_at,
                undo=self.undo_command(),
                writes=[w.record() for w in the_plan.writes],
            )
            return Note(self._applied_text(the_plan), "ok")

    def _applied_text(self, the_plan: Plan) -> str:
        said = []
        for w in the_plan.writes:
            if isinstance(w, PolicyWrite) and w.state == "written":
                said.append(
                    f"Wrote {w.name} to {w.role} ({w.action}) and read it back. To undo: {w.undo}"
                )
            else:
                said.append(w.outcome())
                if isinstance(w, DeploymentWrite) and w.sent:
                    said.append(w.undo_note)
        return " ".join(said)

    def _out_of_date(self, write: PolicyWrite) -> PlanOutOfDate:
        """The write's check failed: show what IAM holds now against the policy, say why."""
        from runbook_lib.policy import diff

        change = diff(write.found, self._policy().document, write.name)
        _show(
            Changed(
                f"What apply would now change ({describe_state(write.found, write.name)}):", change
            )
        )
        return PlanOutOfDate(write.outcome(), change)

    def _apply_button(self) -> Any:
        """The Apply button (``display.apply_button``) for this plan: it writes with this run's
        record and checks; "Re-plan" makes the plan again and shows the new diff."""
        from runbook_lib.display import apply_button

        assert self.plan_result is not None

        def replan() -> tuple[str, bool]:
            the_plan = self.plan()
            return the_plan._repr_html_(), bool(the_plan.pending)

        return apply_button(
            self.plan_result.policy.name,
            f"iam:PutRolePolicy on {self.plan_result.role}",
            write=lambda: self._write()._repr_html_(),
            replan=replan,
        )

    # --- 6. watch -------------------------------------------------------------------------------

    def watch(self) -> WatchResult | Note:
        """Watch the next carts task until it settles in RUNNING (or time runs out)."""
        the_plan = self.plan_result
        if the_plan is not None and the_plan.action != "unchanged" and not the_plan.written:
            from runbook_lib.display import live_frontend

            note = Note(
                "Nothing was written, so there is no new task to watch. Press Apply above, then "
                "run this cell again."
                if live_frontend()
                else "Plan only (parameter 'apply' is false): nothing was written, nothing to watch.",
                "warn",
            )
            with self._step("watch") as rec:
                rec.update(outcome="skipped", message=note.text)
            return note
        from runbook_lib.display import LiveView

        with self._step("watch") as rec:
            c = self.connection
            p = self.params
            ecs = c.client("ecs")
            # Each task is judged by its own task definition; those the diagnosis read are known.
            known = list(self.diagnosis.task_definitions.values()) if self.diagnosis else []
            tds = TaskDefinitions(ecs, known)
            if self.diagnosis is not None:
                tds.get(self.diagnosis.service.task_definition)
            pre = self.preflight_result
            view = LiveView(f"Watching {p.service} in {p.cluster}", p.timeout_s)
            try:
                result = watch.watch(
                    ecs,
                    c.client("logs"),
                    tds,
                    p.cluster,
                    p.service,
                    self.baseline if (the_plan and the_plan.written) else None,
                    p.timeout_s,
                    keeps_allowed=pre is not None and pre.ok,
                    view=view,
                    sleep=c.clock.sleep,
                    clock=c.clock.monotonic,
                    now=c.clock.time,
                )
            except DeploymentFailed:
                rec.update(outcome="deployment-failed")
                raise
            except RunbookError:
                rec.update(outcome="timeout")
                raise
            self.watch_result = result
            rec.update(result.record())
            return result

    # --- 7. verify ------------------------------------------------------------------------------

    def verify(self) -> ScanResult:
        with self._step("verify") as rec:
            result = scan_items(self.connection.client("dynamodb"), self.params.table)
            rec.update(
                items=len(result.items), shaped_like_carts=result.ok, sample=list(result.items[:3])
            )
            return result

    # --- 8. rollback ----------------------------------------------------------------------------

    def rollback(self) -> RollbackResult | Note:
        """Put the policy back as it was before this run (or, after an unfinished earlier run,
        before that one), only if IAM still holds what the runs wrote."""
        if not self.params.rollback:
            with self._step("rollback") as rec:
                rec.update(done=False)
            undo = self.undo_command()
            return Note(
                "Rollback not requested (parameter 'rollback' is false)."
                + (f" To undo later: {undo}" if undo else "")
            )
        if self.plan_result is None:
            raise StepOrder(
                f"Nothing rolled back: run the {CELLS['plan']} first; rollback takes back only "
                "what this run planned and wrote."
            )
        if self.rollback_result is not None and self.rollback_result.done != "refused":
            raise StepOrder(
                "Nothing rolled back: this run has rolled back already (its result is above); "
                f"run the {CELLS['summary']}."
            )
        with self._step("rollback") as rec:
            p = self.params
            target, expect, restores = self._rollback_target()
            if expect is None:
                result = RollbackResult(p.task_role, p.policy_name, "nothing", True)
            elif not p.writes:
                command = PolicyWrite(p.task_role, p.policy_name, None, target).command
                rec.update(done=False, reason="apply is false", restores=restores)
                return Note(
                    f"Not rolled back: parameter 'apply' is false. To restore the state before "
                    f"{restores} by hand: {command}",
                    "warn",
                )
            else:
                c = self.connection
                result = plan.rollback(
                    c.client("iam"),
                    c.clock,
                    p.task_role,
                    p.policy_name,
                    target,
                    expect,
                    self._save_writes_of,
                    restores,
                )
            kept = tuple(
                f"Left as it is: {w.command} ({w.undo_note})"
                for w in self.writes
                if isinstance(w, DeploymentWrite) and w.sent
            )
            result = replace(result, notes=kept)
            self.rollback_result = result
            rec.update(result.record())
            if result.done == "refused" or not result.matches_before:
                raise RunbookError(result.sentence())
            return result

    def _save_writes_of(self, write: PolicyWrite) -> None:
        if write.state == "planned":
            self._sending(write)
        else:
            self._save_writes(write)

    def _rollback_target(
        self,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any] | None] | None, str]:
        """(the state to restore, what IAM must hold for it to go ahead, whose start it is);
        the second is None when there is nothing to roll back."""
        sent = self._policy_writes()
        restore = self.plan_result.restore if self.plan_result is not None else None
        expect: list[dict[str, Any] | None] | None = None
        if sent:
            last = sent[-1]
            expect = [last.after] + ([last.before] if last.state == "sending" else [])
        if restore is not None:
            return (
                restore.state,
                expect if expect is not None else restore.expect,
                f"run {restore.run_id}",
            )
        if sent:
            return sent[0].before, expect, "the run"
        return None, None, "the run"

    # --- 9. summary -----------------------------------------------------------------------------

    def summary(self) -> Summary:
        """The outcome, what IAM holds now, and the record. A failure stays a failure, and the
        summary says nothing about IAM that a read of IAM does not show now."""
        with self._step("summary") as rec:
            held = self._iam_now()
            if held is not None:
                rec.update(held)
            outcome = self._outcome()
            calls = dict(sorted(self.connection.calls.items())) if self.connected else {}
            self.record.data["aws_calls"] = calls
            self.record.data["aws_call_count"] = sum(calls.values())
            if held is not None and not held["as_expected"]:
                summary = Summary({**self.record.data, "iam_now": held}, str(self.record.path))
                _show(summary)
                raise RunbookError(held["sentence"])
        self.record.data["iam_now"] = held
        self.record.finish(None if self._failures else outcome, self.undo_command())
        return Summary(self.record.data, str(self.record.path))

    def _expected_state(self) -> dict[str, Any] | None:
        """What this run's steps say the policy holds now."""
        assert self.plan_result is not None
        rb = self.rollback_result
        if rb is not None and (rb.done in ("deleted", "restored") or rb.reason == ALREADY):
            return rb.target
        sent = self._policy_writes()
        if sent:
            return sent[-1].after
        if self.plan_result.action == "unchanged":
            return self.plan_result.policy.document
        return self.plan_result.previous

    def _iam_now(self) -> dict[str, Any] | None:
        """Read the policy (for a bounded time, while a read may lag this run's last write) and
        compare it with what the run's steps said."""
        if not self.connected or self.plan_result is None:
            return None
        p, c = self.params, self.connection
        expected = self._expected_state()
        now, _ = read_until(
            lambda: read_policy(c.client("iam"), p.task_role, p.policy_name),
            lambda doc: same_state(doc, expected),
            c.clock,
        )
        ok = same_state(now, expected)
        sentence = (
            f"IAM holds {describe_state(now, p.policy_name)}, as this run left it."
            if ok
            else f"IAM holds {describe_state(now, p.policy_name)}, but this run left "
            f"{describe_state(expected, p.policy_name)}: another writer changed it since; the "
            "record keeps both."
        )
        return {
            "as_expected": ok,
            "now": state_record(now),
            "expected": state_record(expected),
            "sentence": sentence,
        }

    def _outcome(self) -> str:
        rb = self.rollback_result
        running = self.watch_result is not None and self.watch_result.outcome == "running"
        if rb is not None and rb.done in ("deleted", "restored"):
            if rb.restores != "the run":
                return f"restored the state before {rb.restores}"
            return "fixed, then rolled back" if running else "rolled back"
        if running:
            return "fixed: carts is RUNNING"
        if self.watch_result is not None and self.watch_result.outcome == "already-running":
            return "checked: carts was already RUNNING and the change keeps it allowed"
        if any(w.sent for w in self.writes):
            return "written: carts not seen RUNNING yet"
        if self.plan_result is not None and self.plan_result.pending:
            return "planned: nothing written"
        return "checked: nothing to change"

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@dataclass(frozen=True)
class ParamsView(Shows):
    params: Params

    def rows(self) -> list[tuple[str, str]]:
        p = self.params
        rows = [(k, repr(v)) for k, v in p.public_dict().items()]
        where = p.endpoint_url or (
            "a lab started in this kernel" if p.is_lab else f"AWS, region {p.region}"
        )
        writes = "yes" if p.writes else "no (plan only)"
        return [*rows, ("-> talks to", where), ("-> writes to IAM", writes)]

    def blocks(self) -> list[Block]:
        import pandas as pd

        values = pd.DataFrame(self.rows(), columns=["parameter", "value"])
        return [Heading("Parameters (valid):"), Table(values)]


@dataclass(frozen=True)
class Summary(Shows):
    data: dict[str, Any]
    path: str

    def lines(self) -> list[str]:
        d = self.data
        steps = d.get("steps", {})
        plan_rec = steps.get("plan", {})
        lines = [
            f"Outcome: {d['outcome']}",
            f"Caller: {d.get('caller', {}).get('arn', '?')}",
            f"Policy {plan_rec.get('policy_name', '?')} on {plan_rec.get('role', '?')}: "
            f"{plan_rec.get('action', '?')}; before sha256 {_short_hash(plan_rec.get('before_sha256'))}, "
            f"after sha256 {_short_hash(plan_rec.get('after_sha256'))}",
        ]
        if d.get("iam_now"):
            lines.append(str(d["iam_now"]["sentence"]))
        for w in d.get("writes") or []:
            if w.get("kind") != "iam-policy" and w.get("state") in SENT_STATES:
                lines.append(f"Also wrote ({w['state']}): {w['command']}. {w.get('undo_note', '')}")
        earlier = d.get("earlier_runs") or {}
        if earlier.get("first_writer"):
            replaced = (earlier.get("replaced") or {}).get("sha256")
            lines.append(
                f"Earlier unfinished run {earlier['first_writer']} replaced "
                f"{'sha256 ' + str(replaced)[:12] if replaced else 'no policy'}; its undo: "
                f"{earlier.get('undo')}"
            )
        if "diagnose" in steps:
            dg = steps["diagnose"]
            lines.append(
                f"Diagnosis: {dg['cause']} ({dg.get('denied_action') or '-'} on {dg.get('denied_resource') or '-'})"
            )
        if "watch" in steps:
            lines.append(
                f"Watch: {steps['watch'].get('outcome')} - {steps['watch'].get('message', '')}"
            )
        if d.get("undo"):
            lines.append(f"To undo: {d['undo']}")
        # The name only: no machine's folders end up in a notebook someone else reads (the
        # notebook's section 9 says where records go).
        lines.append(f"Record: {Path(self.path).name}")
        return lines

    def blocks(self) -> list[Block]:
        return [items(self.lines())]


def _short_hash(value: Any) -> str:
    return str(value)[:12] if value else "none (no such policy)"


def _show(obj: Any) -> None:
    """Show a step's result before its step fails, so the reader sees why."""
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            from IPython.display import display

            display(obj)
            return
    except ImportError:
        pass
    print(obj)
