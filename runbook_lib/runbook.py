"""The runbook's steps, one method each, as the notebook calls them.

Each method does one step, returns an object that shows itself (HTML in JupyterLab, text in a
headless log) and adds its part to the run record. A step that fails marks the record failed,
with the command that undoes what the run wrote, and re-raises so papermill stops there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

from runbook_lib.diagnose import Diagnosis, diagnose
from runbook_lib.dynamo import ScanResult, scan_items
from runbook_lib.ecs import TaskDefinitions
from runbook_lib.errors import Blocked, DeploymentFailed, RunbookError, WrongCause
from runbook_lib.exists import check_names
from runbook_lib.iam import (
    Plan,
    RoleState,
    RollbackResult,
    TrustCheck,
    apply,
    check_trust,
    plan,
    read_role,
    rollback,
)
from runbook_lib.params import Params, notebook_values
from runbook_lib.policy import LintReport, RenderedPolicy, lint, render_policy
from runbook_lib.preflight import Preflight, preflight, simulate
from runbook_lib.record import RunRecord
from runbook_lib.session import Connection, Identity, connect
from runbook_lib.shows import Shows
from runbook_lib.watch import Baseline, WatchResult, watch


@dataclass(frozen=True)
class Note(Shows):
    """A sentence for the reader, as a step's result when there is nothing else to show."""

    text: str
    tone: str = "info"  # info | ok | warn

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        colour = {"ok": "#1b7f3b", "warn": "#a15c00"}.get(self.tone, "#333")
        return f'<p style="color:{colour}"><b>{escape(self.text)}</b></p>'


class Runbook:
    """State of one run across the notebook's cells."""

    def __init__(self, params: Params, record: RunRecord | None = None) -> None:
        self.params = params
        self.record = record or RunRecord.create()
        self.record.data["parameters"] = params.public_dict()
        self.conn: Connection | None = None
        self.diagnosis: Diagnosis | None = None
        self.role: RoleState | None = None
        self.policy: RenderedPolicy | None = None
        self.lint_report: LintReport | None = None
        self.preflight_result: Preflight | None = None
        self.plan_result: Plan | None = None
        self.baseline: Baseline | None = None
        self.watch_result: WatchResult | None = None
        self._write_sent = False

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
        try:
            yield payload
        except BaseException as exc:
            # What the step saw before it failed (the diagnosis's cause, say) stays on record.
            self.record.data["steps"][name] = payload
            self.record.data["timings_s"][name] = round(time.monotonic() - t0, 3)
            if isinstance(exc, KeyboardInterrupt):
                self.record.interrupt(name, self.undo_command())
            else:
                self.record.fail(name, exc, self.undo_command())
            raise
        self.record.step(name, payload, time.monotonic() - t0)

    def undo_command(self) -> str | None:
        """The command that undoes what this run wrote (None when it wrote nothing).

        A write that failed may still have landed (the answer lost on the way back), so it counts.
        """
        if self.plan_result is not None and (self.plan_result.written or self._write_sent):
            return self.plan_result.restore_command
        return None

    @property
    def connection(self) -> Connection:
        if self.conn is None:
            raise RunbookError(
                "not connected yet: run the 'Check the parameters and connect' cells first."
            )
        return self.conn

    # --- 1. connect -----------------------------------------------------------------------------

    def connect(self) -> Identity:
        """Build the session (starting a lab if the parameters ask) and check who answers."""
        with self._step("connect") as rec:
            self.conn = connect(self.params)
            assert self.conn.identity is not None
            ident = self.conn.identity
            rec.update(
                account=ident.account,
                caller_arn=ident.arn,
                endpoint=ident.endpoint,
                backend=ident.backend,
            )
            self.record.data["caller"] = {"account": ident.account, "arn": ident.arn}
            rec["found"] = check_names(self.conn.client, self.params, ident.account)
            return ident

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
            d = diagnose(
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
            self.policy = render_policy(self.params, self.account)
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
            report = lint(self._policy().document, self.params, self.account, self._role().inline)
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
            role, policy = self._role(), self._policy()
            result = preflight(role, policy, p.region, self.account, p.table, p.index)
            if not p.is_lab:
                from runbook_lib.carts import carts_requests

                reqs = carts_requests(p.region, self.account, p.table, p.index)
                result.simulator, result.simulator_note = simulate(
                    self.connection.client("iam"), role, policy, reqs
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
            tc = check_trust(self._role())
            rec.update(trusted=tc.ok, warnings=list(tc.warnings), trust_policy=tc.trust_policy)
            if not tc.ok:
                _show(tc)
                raise RunbookError(tc.verdict())
            return tc

    # --- 5. plan and apply ----------------------------------------------------------------------

    def plan(self) -> Plan:
        with self._step("plan") as rec:
            self.role = None  # read again: the plan must compare with what IAM holds now
            self.plan_result = plan(self._role(), self._policy())
            rec.update(self.plan_result.record())
            return self.plan_result

    def apply(self) -> Any:
        """Write the policy when ``apply`` allows; otherwise say so (and offer a button live)."""
        the_plan = self.plan_result if self.plan_result is not None else self.plan()
        if the_plan.action == "unchanged":
            with self._step("apply") as rec:
                rec.update(written=False, reason="unchanged")
            return Note(the_plan.summary(), "ok")
        if not self.params.writes:
            from runbook_lib.display import live_frontend

            with self._step("apply") as rec:
                rec.update(written=False, reason="apply is false")
            if live_frontend():
                return self._apply_button()
            return Note(
                "Plan only: parameter 'apply' is false, so nothing was written. Set apply to true "
                "(or run the printed command) to attach the policy.",
                "warn",
            )
        return self._write()

    def _write(self) -> Note:
        with self._step("apply") as rec:
            c = self.connection
            assert self.plan_result is not None
            baseline = Baseline.take(
                c.client("ecs"), self.params.cluster, self.params.service, now=c.clock.time
            )
            self.baseline = baseline
            self._write_sent = True
            apply(c.client("iam"), self.plan_result, now=c.clock.time)
            # The change is when the write landed: throttled retries can delay it, and a task
            # denied meanwhile was denied by the old policy, not by a slow propagation.
            if self.plan_result.written_at is not None:
                self.baseline = replace(baseline, at=self.plan_result.written_at)
            self.record.data["steps"]["plan"] = self.plan_result.record()
            rec.update(
                written=True, written_at=self.plan_result.written_at, undo=self.undo_command()
            )
            return Note(
                f"Wrote {self.plan_result.policy.name} to {self.plan_result.role} "
                f"({self.plan_result.action}). To undo: {self.undo_command()}",
                "ok",
            )

    def _apply_button(self) -> Any:
        import ipywidgets as w

        assert self.plan_result is not None
        button = w.Button(
            description=f"Apply {self.plan_result.policy.name}",
            button_style="warning",
            tooltip=f"iam:PutRolePolicy on {self.plan_result.role}",
            layout=w.Layout(width="auto"),
        )
        out = w.HTML(value="<i>Nothing written yet. Press the button to attach the policy.</i>")

        def on_click(_: Any) -> None:
            button.disabled = True
            try:
                note = self._write()
                out.value = note._repr_html_()
                button.button_style = "success"
                button.description = (
                    f"Applied {self.plan_result.policy.name if self.plan_result else ''}"
                )
            except Exception as exc:  # shown to the learner; the record has it too
                out.value = f'<p style="color:#b00020"><b>{escape(str(exc))}</b></p>'
                button.disabled = False

        button.on_click(on_click)
        box = w.VBox([button, out])
        box.add_class("carts-apply")
        return box

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
                result = watch(
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
        if not self.params.rollback:
            with self._step("rollback") as rec:
                rec.update(done=False)
            undo = self.undo_command()
            return Note(
                "Rollback not requested (parameter 'rollback' is false)."
                + (f" To undo later: {undo}" if undo else "")
            )
        with self._step("rollback") as rec:
            assert self.plan_result is not None, "rollback needs the plan step"
            result = rollback(self.connection.client("iam"), self.plan_result)
            rec.update(done=result.done, matches_before=result.matches_before)
            if not result.matches_before:
                raise RunbookError(str(result))
            return result

    # --- 9. summary -----------------------------------------------------------------------------

    def summary(self) -> Summary:
        outcome = self._outcome()
        undo = (
            None
            if (self.params.rollback and self.plan_result and self.plan_result.written)
            else self.undo_command()
        )
        calls = dict(sorted(self.connection.calls.items())) if self.conn else {}
        self.record.data["aws_calls"] = calls
        self.record.data["aws_call_count"] = sum(calls.values())
        self.record.finish(outcome, undo)
        return Summary(self.record.data, str(self.record.path))

    def _outcome(self) -> str:
        if self.params.rollback and self.plan_result is not None and self.plan_result.written:
            return "fixed, then rolled back"
        if self.watch_result is not None and self.watch_result.outcome == "running":
            return "fixed: carts is RUNNING"
        if self.watch_result is not None and self.watch_result.outcome == "already-running":
            return "checked: carts was already RUNNING and the change keeps it allowed"
        if (
            self.plan_result is not None
            and not self.plan_result.written
            and self.plan_result.action != "unchanged"
        ):
            return "planned: nothing written"
        return "checked: nothing to change"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


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

    def __str__(self) -> str:
        return "\n".join(f"{k:>16}  {v}" for k, v in self.rows())

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td>{escape(v)}</td></tr>"
            for k, v in self.rows()
        )
        return f"<p>Parameters (valid):</p><table>{body}</table>"


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

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{escape(x)}</li>" for x in self.lines())
        return f"<ul>{items}</ul>"


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
