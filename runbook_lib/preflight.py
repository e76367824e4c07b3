"""Preflight: would carts be allowed once the candidate policy is on the role?

Decided locally with :mod:`runbook_lib.iam_eval` for every declared carts call, under the role's
current policies with the candidate put in (replacing a same-named inline policy, as
``put-role-policy`` would). On real AWS, IAM's own simulator is asked too, when the caller may.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from runbook_lib.carts import carts_requests
from runbook_lib.iam import RoleState
from runbook_lib.iam_eval import Explanation, explain
from runbook_lib.policy import RenderedPolicy
from runbook_lib.shows import Shows


@dataclass
class Preflight(Shows):
    before: Explanation
    after: Explanation
    simulator: list[dict[str, str]] | None = None
    simulator_note: str = ""

    @property
    def ok(self) -> bool:
        sim_ok = self.simulator is None or all(r["decision"] == "allowed" for r in self.simulator)
        return self.after.all_allowed and sim_ok

    def verdict(self) -> str:
        if self.ok:
            return "With the candidate policy, every call carts makes is allowed."
        denied = [r for r in self.after.rows if not r.allowed]
        if denied:
            first = denied[0]
            return f"Still denied with the candidate: {first.action} on {first.resource} ({first.reason})."
        return "IAM's simulator disagrees with the local evaluation: see its answers."

    def record(self) -> dict[str, Any]:
        return {
            "before": [
                {"action": r.action, "resource": r.resource, "decision": r.decision}
                for r in self.before.rows
            ],
            "after": [
                {"action": r.action, "resource": r.resource, "decision": r.decision, "by": r.reason}
                for r in self.after.rows
            ],
            "simulator": self.simulator,
            "simulator_note": self.simulator_note,
            "ok": self.ok,
        }

    def __str__(self) -> str:
        parts = [
            "Now (the role as it is):",
            str(self.before),
            "",
            "With the candidate policy:",
            str(self.after),
        ]
        if self.simulator is not None:
            parts += ["", "IAM policy simulator:"]
            parts += [
                f"  {r['action']:22} {r['decision']:15} {r['resource']}" for r in self.simulator
            ]
        if self.simulator_note:
            parts.append(self.simulator_note)
        parts += ["", ("OK: " if self.ok else "STOP: ") + self.verdict()]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.ok else "#b00020"
        html = "<p>Now (the role as it is):</p>" + self.before._repr_html_()
        html += "<p>With the candidate policy:</p>" + self.after._repr_html_()
        if self.simulator is not None:
            rows = "".join(
                f"<tr><td>{escape(r['action'])}</td><td>{escape(r['resource'])}</td><td>{escape(r['decision'])}</td></tr>"
                for r in self.simulator
            )
            html += f"<p>IAM policy simulator:</p><table><tr><th>action</th><th>resource</th><th>decision</th></tr>{rows}</table>"
        if self.simulator_note:
            html += f"<p>{escape(self.simulator_note)}</p>"
        html += f'<p style="color:{colour}"><b>{escape(self.verdict())}</b></p>'
        return html


def preflight(
    role: RoleState, policy: RenderedPolicy, region: str, account: str, table: str, index: str
) -> Preflight:
    """Local decisions for every carts call, before and after the candidate."""
    requests = carts_requests(region, account, table, index)
    now = role.effective_policies()
    after = dict(now)
    after[policy.name] = policy.document
    return Preflight(before=explain(now, requests), after=explain(after, requests))


def simulate(
    iam: Any, role: RoleState, policy: RenderedPolicy, requests: list[tuple[str, str]]
) -> tuple[list[dict[str, str]] | None, str]:
    """Ask ``iam:SimulatePrincipalPolicy`` with the candidate in ``PolicyInputList``.

    Returns (answers, note); answers is None when the simulator could not be asked.
    """
    from botocore.exceptions import ClientError

    out: list[dict[str, str]] = []
    try:
        for action, resource in requests:
            got = iam.simulate_principal_policy(
                PolicySourceArn=role.arn,
                PolicyInputList=[policy.text],
                ActionNames=[action],
                ResourceArns=[resource],
            )
            for r in got["EvaluationResults"]:
                decision = {"allowed": "allowed", "explicitDeny": "explicit_deny"}.get(
                    r["EvalDecision"], "implicit_deny"
                )
                out.append({"action": action, "resource": resource, "decision": decision})
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        return None, f"IAM's simulator was not asked ({code}): the local evaluation stands alone."
    return out, "IAM's simulator includes the role's current policies plus the candidate."
