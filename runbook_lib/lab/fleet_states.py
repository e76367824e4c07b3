"""States a lab started in a runbook's kernel can hold, chosen by name: a fleet's mixed accounts.

A fleet of lab targets (``carts-runbook fleet`` with backend ``lab`` and no ``endpoint_url``) runs
each target's notebook in its own kernel, and each kernel starts its own lab, seeded from the
target's parameters. The targets file's ``lab_scenario`` key says which state that lab holds; the
fleet passes it to the kernel in :data:`LAB_STATE_ENV` (an environment variable, like the lab's
clock: it is no runbook parameter, and the aws backend never reads it).

Each state is reached the way AWS would reach it, through the lab's fault knobs and its public
API, after the lab has played its history:

- ``workshop``: the broken workshop account, as every lab starts;
- ``already-fixed``: someone already ran step 3.2: ``CartsDynamoPolicy`` as this runbook renders
  it is on the task role (written with ``iam:PutRolePolicy``) and carts is running;
- ``execution-role``: the execution role cannot pull the image, so tasks stop with
  ``TaskFailedToStart`` (the lab's ``execution_role_fault="pull"``): no task-role policy helps;
- ``slow-propagation``: IAM changes reach the carts app only after 2,000 simulated seconds
  (AWS: "a few minutes"; the lab's ``propagation_delay_s``), so the watch waits a while.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from runbook_lib.lab.config import LabConfig
from runbook_lib.lab.errors import LabConfigError, LabError
from runbook_lib.session import LAB_STATE_ENV

LAB_STATES = ("workshop", "already-fixed", "execution-role", "slow-propagation")

#: How long ``already-fixed`` waits (real seconds, wall clock) for carts to run again.
SETTLE_TIMEOUT_S = 30.0
#: On a stepped clock, how far (simulated seconds) ``already-fixed`` may advance.
SETTLE_LIMIT_S = 600.0
#: ``slow-propagation``'s delay, in simulated seconds.
SLOW_PROPAGATION_S = 2000.0


def check_state(name: str) -> str:
    """``name`` if it is a state (empty means ``workshop``); :class:`LabConfigError` otherwise."""
    state = name or "workshop"
    if state not in LAB_STATES:
        raise LabConfigError(
            f"{LAB_STATE_ENV} must be one of {', '.join(LAB_STATES)}; got {name!r}."
        )
    return state


def state_config(name: str, config: LabConfig) -> LabConfig:
    """``config`` with the fault knobs state ``name`` starts with."""
    state = check_state(name)
    if state == "execution-role":
        return replace(config, execution_role_fault="pull")
    if state == "slow-propagation":
        return replace(config, propagation_delay_s=SLOW_PROPAGATION_S)
    return config


def enter_state(lab: Any, name: str) -> None:
    """Bring a started ``lab`` into state ``name`` through its API (a no-op for most states)."""
    if check_state(name) == "already-fixed":
        _fix_already(lab)


def _fix_already(lab: Any) -> None:
    """Put the policy this runbook would write, as a learner who did step 3.2 would, and wait
    until a carts task runs with it and the deployment has completed."""
    import boto3

    from runbook_lib.policy import render_policy
    from runbook_lib.session import LAB_ACCESS_KEY, LAB_SECRET_KEY

    params = lab.params
    policy = render_policy(params, lab.account_id)
    iam = boto3.client(
        "iam",
        endpoint_url=lab.endpoint_url,
        region_name=params.region,
        aws_access_key_id=LAB_ACCESS_KEY,
        aws_secret_access_key=LAB_SECRET_KEY,
    )
    iam.put_role_policy(
        RoleName=params.task_role, PolicyName=policy.name, PolicyDocument=policy.text
    )
    lab.iam_writes.clear()  # the state's own write, like the seed's, is no client's

    def settled() -> bool:
        service = lab.state().get("service", {})
        return bool(
            service.get("runningCount", 0) >= 1 and service.get("rolloutState") == "COMPLETED"
        )

    if lab.stepped:
        lab.advance_until(settled, SETTLE_LIMIT_S)
        return
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not settled():
        if time.monotonic() > deadline:
            raise LabError(
                f"state 'already-fixed': carts did not run within {SETTLE_TIMEOUT_S:g} s"
            )
        time.sleep(0.02)
