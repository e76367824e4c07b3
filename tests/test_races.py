"""Two writers on one policy, many rounds, in interleavings a seed chooses (``races.py``): the
runbook against a direct put-role-policy, and two runbooks with different scopes. No lost update
(outside the one window IAM leaves, counted), no false success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Clients
from races import race_direct, race_runbooks
from turns import Turns, Writer

from runbook_lib.lab import Lab

LAB_SEED = 13
#: Ten seeded rounds of each race: seeds 10 to 19 (and 1010 to 1019) draw each start a race has
#: (someone's same-named policy there or not, for the direct put; which runbooks roll back, for
#: two runbooks) with each end (rolled back or not). ``make reliability`` runs 20 rounds of each,
#: these among them (benchmarks/reliability_writes.py).
ROUNDS = 10
DIRECT_FIRST_SEED = 10
RUNBOOKS_FIRST_SEED = 1010

pytestmark = pytest.mark.usefixtures("one_botocore_loader")


def test_runbook_against_a_direct_put_at_a_random_point(
    fresh: Lab, aws: Clients, tmp_path: Path
) -> None:
    tally = race_direct(fresh, aws, tmp_path, ROUNDS, DIRECT_FIRST_SEED)
    print(tally.line())
    assert tally.races == ROUNDS
    assert tally.lost_updates == 0 and tally.false_successes == 0, tally.notes


def test_two_runbooks_with_different_scopes(fresh: Lab, aws: Clients, tmp_path: Path) -> None:
    tally = race_runbooks(fresh, aws, tmp_path, ROUNDS, RUNBOOKS_FIRST_SEED)
    print(tally.line())
    assert tally.races == ROUNDS
    assert tally.lost_updates == 0 and tally.false_successes == 0, tally.notes


def test_turns_replay_the_same_interleaving_for_a_seed() -> None:
    def run_once(seed: int) -> list[str]:
        turns = Turns(seed)

        def body(name: str) -> Any:
            def go() -> None:
                for i in range(5):
                    turns.gate(f"{name}{i}")

            return go

        return turns.run(Writer("a", body("a")), Writer("b", body("b")))

    first = run_once(0)
    assert first == run_once(0) and len(first) == 12
    assert any(run_once(seed) != first for seed in range(1, 5))
