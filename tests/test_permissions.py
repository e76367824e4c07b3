"""The runbook's own permissions, declared per step (runbook_lib/permissions.py), against what a
run really calls, and the policy `carts-runbook permissions` prints, evaluated by the IAM
evaluator against those calls."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import ROOT

from runbook_lib.iam_eval import evaluate
from runbook_lib.params import Params
from runbook_lib.permissions import STEP_NEEDS, Scope, action_of, declared_actions, policy_for
from runbook_lib.record import RunRecord
from runbook_lib.runbook import Runbook

pytestmark = pytest.mark.lab

ACCOUNT = "246813579024"  # a lab of its own, beside any other in this process
LOG_GROUP = "retail-store-ecs-tasks"

#: The notebook's cells, as Runbook methods, and the step each one is.
CELLS = (
    ("parameters", "parameters"),
    ("connect", "connect"),
    ("diagnose", "diagnose"),
    ("render_policy", "render"),
    ("lint", "lint"),
    ("preflight", "preflight"),
    ("check_trust", "trust"),
    ("plan", "plan"),
    ("apply", "apply"),
    ("watch", "watch"),
    ("verify", "verify"),
    ("rollback", "rollback"),
    ("summary", "summary"),
)


@dataclass
class Call:
    step: str
    action: str
    params: dict[str, Any]


@dataclass
class Recorded:
    calls: list[Call] = field(default_factory=list)
    step: str = ""


def record_calls(run: Runbook, into: Recorded) -> None:
    """Every AWS call the run's clients send, with its parameters and the step it was sent in."""
    conn = run.connection
    original = conn.client

    def client(service: str) -> Any:
        made = original(service)
        if not getattr(made, "_permissions_test", False):
            made._permissions_test = True

            def seen(model: Any, params: dict[str, Any], **_: Any) -> None:
                op = f"{model.service_model.service_name}:{model.name}"
                into.calls.append(Call(into.step, action_of(op), dict(params)))

            made.meta.events.register("before-parameter-build", seen)
        return made

    conn.client = client  # type: ignore[method-assign]


def run_notebook_steps(params: Params, tmp_path: Any) -> tuple[Runbook, Recorded]:
    """The notebook's cells in order, in this process, against a lab on a stepped clock."""
    run = Runbook(params, RunRecord.create(tmp_path / "record.json"))
    recorded = Recorded()
    try:
        for method, step in CELLS:
            recorded.step = step
            getattr(run, method)()
            if step == "connect":
                record_calls(run, recorded)
                # connect's own calls happened before the hook: take them from the counter.
                for op, n in run.connection.calls.items():
                    recorded.calls += [Call("connect", action_of(op), {})] * n
    finally:
        run.close()
    return run, recorded


@pytest.fixture
def stepped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RUNBOOK_LAB_CLOCK", "stepped")
    yield


@pytest.fixture
def writes_and_rollback(stepped: None, tmp_path: Any) -> tuple[Runbook, Recorded]:
    params = Params.from_mapping({"account_id": ACCOUNT, "apply": True, "rollback": True})
    return run_notebook_steps(params, tmp_path)


@pytest.fixture
def plan_only(stepped: None, tmp_path: Any) -> tuple[Runbook, Recorded]:
    params = Params.from_mapping({"account_id": ACCOUNT, "apply": False})
    return run_notebook_steps(params, tmp_path)


def resource_and_context(call: Call, p: Params) -> tuple[str, dict[str, Any]]:
    """The resource IAM authorizes the call on (the Service Authorization Reference's resource
    type for the action), and the condition keys it sets."""
    a, params = call.action, call.params
    base = f"arn:aws:{{}}:{p.region}:{ACCOUNT}"
    ecs = base.format("ecs")
    if a.startswith("iam:") and "RoleName" in params:
        return f"arn:aws:iam::{ACCOUNT}:role/{params['RoleName']}", {}
    if a in ("iam:GetPolicy", "iam:GetPolicyVersion"):
        return str(params["PolicyArn"]), {}
    if a == "ecs:DescribeServices":
        return f"{ecs}:service/{params['cluster']}/{params['services'][0]}", {}
    if a == "ecs:ListTasks":
        return "*", {"ecs:cluster": f"{ecs}:cluster/{params['cluster']}"}
    if a == "ecs:DescribeTasks":
        return str(params["tasks"][0]), {}
    if a.startswith("dynamodb:"):
        return f"{base.format('dynamodb')}:table/{params['TableName']}", {}
    if a == "logs:FilterLogEvents":
        return f"{base.format('logs')}:log-group:{params['logGroupName']}", {}
    if a == "logs:GetLogEvents":
        group, stream = params["logGroupName"], params["logStreamName"]
        return f"{base.format('logs')}:log-group:{group}:log-stream:{stream}", {}
    return "*", {}


def test_every_call_a_run_makes_is_declared_for_its_step(
    writes_and_rollback: tuple[Runbook, Recorded],
) -> None:
    run, recorded = writes_and_rollback
    assert run.record.data["outcome"] == "fixed, then rolled back"
    by_step: dict[str, Counter[str]] = {}
    for call in recorded.calls:
        by_step.setdefault(call.step, Counter())[call.action] += 1
    for step, actions in by_step.items():
        undeclared = set(actions) - declared_actions(step)
        assert not undeclared, f"step {step!r} called {sorted(undeclared)} without declaring it"
    # The declaration is not a blanket: the writes happen where they are declared, and only there.
    assert by_step["apply"]["iam:PutRolePolicy"] == 1
    assert by_step["rollback"]["iam:DeleteRolePolicy"] == 1
    writers = {s for s, needs in STEP_NEEDS.items() if any(n.write for n in needs)}
    assert writers == {"apply", "rollback"}


def test_the_printed_policy_allows_every_call_and_the_plan_only_one_no_write(
    writes_and_rollback: tuple[Runbook, Recorded], plan_only: tuple[Runbook, Recorded]
) -> None:
    params = Params.from_mapping({"account_id": ACCOUNT})
    scope = Scope(params, ACCOUNT, LOG_GROUP)
    plan_policy = {"plan-only": json.dumps(policy_for(scope, writes=False))}
    full_policy = {"with-writes": json.dumps(policy_for(scope, writes=True))}
    run, recorded = plan_only
    assert run.record.data["outcome"] == "planned: nothing written"
    assert run.plan_result is not None and not run.plan_result.written
    for policy, calls in (
        (plan_policy, recorded.calls),
        (full_policy, writes_and_rollback[1].calls),
    ):
        assert calls
        for call in calls:
            if not call.params and call.step == "connect":
                continue  # counted before the hook: the declaration test covers them
            resource, context = resource_and_context(call, params)
            decision = evaluate(policy, call.action, resource, context)
            assert decision.allowed, (call.step, call.action, resource, decision.reason)
    role = f"arn:aws:iam::{ACCOUNT}:role/{params.task_role}"
    for write in ("iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy"):
        assert not evaluate(plan_policy, write, role).allowed, write
    assert evaluate(full_policy, "iam:PutRolePolicy", role).allowed
    # Scoped: another role, another table, another cluster's tasks are not allowed.
    other_role = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    assert not evaluate(full_policy, "iam:PutRolePolicy", other_role).allowed
    other_table = f"arn:aws:dynamodb:{params.region}:{ACCOUNT}:table/orders"
    assert not evaluate(full_policy, "dynamodb:Scan", other_table).allowed
    other_cluster = f"arn:aws:ecs:{params.region}:{ACCOUNT}:cluster/prod"
    assert not evaluate(full_policy, "ecs:ListTasks", "*", {"ecs:cluster": other_cluster}).allowed


def test_permissions_command_prints_the_policy(tmp_path: Any) -> None:
    cmd = [sys.executable, "-m", "runbook_lib", "permissions", "-p", f"account_id='{ACCOUNT}'"]
    plan = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    full = subprocess.run([*cmd, "--apply"], cwd=tmp_path, capture_output=True, text=True)
    assert plan.returncode == 0 and full.returncode == 0, plan.stderr + full.stderr
    plan_doc, full_doc = json.loads(plan.stdout), json.loads(full.stdout)
    actions = lambda doc: {a for st in doc["Statement"] for a in st["Action"]}  # noqa: E731
    assert "iam:PutRolePolicy" in actions(full_doc) - actions(plan_doc)
    assert "plan only" in plan.stderr and ACCOUNT in plan.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "runbook_lib", "permissions", "-p", "table=a b"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "parameter 'table'" in bad.stderr and bad.stdout == ""
