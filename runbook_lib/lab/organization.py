"""What a lab organization holds when nobody says: the realistic mix of ``serve --accounts N``.

A facilitator's fleet is mostly broken as in the workshop; some learners already did step 3.2;
and a few accounts hold what real accounts hand out. Account ``i`` (from 1) plays:

- 2, and every sixth after it (8, 14, ...): ``step-done`` (already fixed);
- 3: ``execution-role`` (the execution role lost its managed policy);
- 4: ``permissions-boundary`` (a boundary allows no DynamoDB action);
- 5: ``circuit-breaker`` (a FAILED deployment);
- every other one: ``workshop``.

Member account ids are made up from the seed (12 digits, as AWS gives accounts); the management
account is the lab's own (``--params``'s ``account_id``, else moto's default).
"""

from __future__ import annotations

import random
from dataclasses import replace

from runbook_lib.params import Params

#: The most accounts one lab holds (each is a world with a scheduler; 100 take about 1 GB).
MAX_ACCOUNTS = 100

_SPECIAL = {2: "step-done", 3: "execution-role", 4: "permissions-boundary", 5: "circuit-breaker"}


def scenario_of(i: int) -> str:
    """The scenario account ``i`` (1-based) of the mix plays."""
    if i in _SPECIAL:
        return _SPECIAL[i]
    return "step-done" if i > 5 and i % 6 == 2 else "workshop"


def member_ids(n: int, seed: int, management: str) -> list[str]:
    """``n`` distinct 12-digit account ids from ``seed``, none of them ``management``."""
    rng = random.Random(f"{seed}:accounts")
    found: list[str] = []
    while len(found) < n:
        candidate = str(rng.randint(10**11, 10**12 - 1))
        if candidate != management and candidate not in found:
            found.append(candidate)
    return found


def mix(n: int, params: Params, seed: int = 0) -> list[tuple[Params, str]]:
    """The members of ``serve --accounts n``: ``params`` in each made-up account, each with the
    scenario :func:`scenario_of` gives it."""
    ids = member_ids(n, seed, params.lab_account_id)
    return [
        (replace(params, account_id=account, assume_role_arn=""), scenario_of(i))
        for i, account in enumerate(ids, start=1)
    ]
