"""The one lab a fleet's lab targets share: an organization whose member accounts are theirs.

Lab targets (backend ``lab``, no ``endpoint_url``) do not start a lab each in their kernel: the
command starts one lab before Dask (:meth:`runbook_lib.lab.Lab.start_organization`), with one
member account per account the targets name, each in the scenario its targets' ``lab_scenario``
names. Each target's run then reaches its account as an organization's admin reaches a member
account on AWS: the lab's keys (the management account's) assume
``arn:aws:iam::<account>:role/OrganizationAccountAccessRole`` (or the target's own
``assume_role_arn``) at the lab's endpoint. A target's settings hash (``--resume``) is of the
targets file's parameters, not of the endpoint a run was given.

The lab listens on 127.0.0.1 only: the workers of a ``--scheduler`` cluster must run on this
machine to reach it (:func:`runbook_lib.fleet.worker.check_worker` checks).
"""

from __future__ import annotations

import threading
from dataclasses import replace as with_changes
from typing import Any

from runbook_lib.fleet.targets import Target
from runbook_lib.params import LAB_DEFAULT_ACCOUNT, Params

#: Real seconds per simulated second of the fleet's lab. Each account plays its own processes
#: all along (carts failing and replaced, a fixed carts serving a shopper every 4 simulated
#: seconds), whoever is running: at a lab in a kernel's pace (0.005) sixteen accounts take about
#: half a core, at 0.02 (the pace of ``make scenarios``' labs) a sixth, for a watch that waits
#: about 2 s longer per target, idle (BENCHMARKS.md, the fleet).
FLEET_TIME_SCALE = 0.02

#: The management account's id: moto's default, unless a target's account is that one.
MANAGEMENT_ACCOUNTS = (LAB_DEFAULT_ACCOUNT, "999999999999")


def members(targets: list[Target]) -> list[tuple[Params, str]]:
    """One ``(params, scenario)`` per account the lab targets name, in the targets' order."""
    seen: dict[str, tuple[Params, str]] = {}
    for t in targets:
        if t.in_fleet_lab and t.account not in seen:
            params = with_changes(t.params, account_id=t.account, assume_role_arn="")
            seen[t.account] = (params, t.scenario)
    return list(seen.values())


def start(targets: list[Target]) -> Any:
    """Start the fleet's lab for the lab targets among ``targets`` (None when there are none).

    The lab runs on the wall clock at :data:`FLEET_TIME_SCALE`, in this process, until it is
    stopped.
    """
    found = members(targets)
    if not found:
        return None
    from runbook_lib.lab import Lab, LabConfig

    accounts = {p.lab_account_id for p, _ in found}
    management = next(a for a in MANAGEMENT_ACCOUNTS if a not in accounts)
    config = LabConfig(time_scale=FLEET_TIME_SCALE, clock="real")
    return Lab.start_organization(found, config, management=management)


class Starting:
    """:func:`start` in a thread: the lab seeds its accounts while the Dask cluster starts (both
    take a few seconds of CPU, in different processes). :meth:`result` waits for it;
    :meth:`stop` stops it however the fleet ends."""

    def __init__(self, targets: list[Target]) -> None:
        self._lab: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(targets,), name="fleet-lab-start", daemon=True
        )
        self._thread.start()

    def _run(self, targets: list[Target]) -> None:
        try:
            self._lab = start(targets)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        """The started lab (None without lab targets); re-raises what stopped its start."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._lab

    def stop(self) -> None:
        self._thread.join()
        if self._lab is not None:
            self._lab.stop()


def run_parameters(target: Target, lab: Any) -> dict[str, Any]:
    """The parameters of ``target``'s run: its own, and in the fleet's lab its endpoint and the
    role that reaches its account (the target's ``assume_role_arn``, else the organization's)."""
    values = target.params.public_dict()
    if lab is None or not target.in_fleet_lab:
        return values
    member = lab.account(target.account)
    values["endpoint_url"] = lab.endpoint_url
    values["account_id"] = target.account
    values["region"] = member.region  # a scenario's own partition moves it (aws-cn)
    if not values.get("assume_role_arn"):
        values["assume_role_arn"] = lab.role_arn(target.account)
    return values


def describe(lab: Any) -> dict[str, Any] | None:
    """What the summary says of the fleet's lab, read when the last target has ended: where it
    served, its management account, and each member account as the lab holds it then (its
    scenario, the task role's policies and boundary, carts' service, and the IAM and ECS writes
    clients sent there)."""
    if lab is None:
        return None
    state = lab.state()
    keep = (
        "scenario",
        "region",
        "task_role_policies",
        "task_role_boundary",
        "service",
        "iam_writes",
        "ecs_writes",
        "process_errors",
    )
    return {
        "endpoint_url": lab.endpoint_url,
        "management_account": lab.management,
        "shape_errors": state["shape_errors"],
        "accounts": {
            a["account_id"]: {k: a.get(k) for k in keep} for a in state.get("accounts", [])
        },
    }
