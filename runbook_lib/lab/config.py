"""How a lab runs: the speed of simulated time, the seed, and the fault knobs it starts with."""

from __future__ import annotations

from dataclasses import dataclass, replace

from runbook_lib.lab.clock import CLOCKS
from runbook_lib.lab.errors import LabConfigError
from runbook_lib.lab.faults import Faults, _number
from runbook_lib.lab.scenarios import scenario

#: Real seconds per simulated second for tests: a fail-and-restart cycle of a carts task
#: (about 27 simulated seconds) takes about 0.15 s.
TEST_TIME_SCALE = 0.005

#: Real seconds per simulated second for ``python -m runbook_lib.lab serve``: a human in a
#: terminal sees a carts task fail and come back every few seconds.
SERVE_TIME_SCALE = 0.1

#: The time scale of the failures a new lab plays before it answers "ready" (see ``history``).
HISTORY_TIME_SCALE = 0.001


@dataclass(frozen=True)
class LabConfig:
    """Settings of one lab (frozen; change the fault knobs at runtime with ``set_faults``).

    ``time_scale``: real seconds per simulated second (``1.0`` runs at AWS's pace).
    ``clock``: ``"real"`` (the lab lives on the wall clock, scaled by ``time_scale``) or
    ``"stepped"`` (time stands still until :meth:`~runbook_lib.lab.Lab.advance` moves it; see
    :mod:`runbook_lib.lab.clock`).
    ``seed``: seeds every id and value the lab makes up (task ids, request ids, cart items).
    The fault knobs (``propagation_delay_s``, ``throttle_rate``, ``execution_role_fault``,
    ``stale_reads_s``, ``log_pages``) are described on :class:`~runbook_lib.lab.faults.Faults`.
    ``scenario``: the situation of a real account the lab plays (a name of
    :data:`runbook_lib.lab.scenarios.SCENARIOS`; ``"workshop"`` is the workshop as it is). A
    scenario may also turn fault knobs on; knobs set here win over the scenario's.
    """

    time_scale: float = TEST_TIME_SCALE
    clock: str = "real"
    seed: int = 0
    propagation_delay_s: float = 0.0
    throttle_rate: float = 0.0
    execution_role_fault: str | None = None
    stale_reads_s: float = 0.0
    log_pages: bool = False
    #: Failed carts tasks a new (or reset) lab has behind it when it answers: at step 3.2 the
    #: learner has watched carts fail for a while, and the diagnosis reads the newest few.
    history: int = 4
    #: Hold every answer to botocore's output shape for its operation and keep what AWS could
    #: not have sent in ``Lab.state()["shape_errors"]`` (:mod:`runbook_lib.lab.shapes`).
    validate_responses: bool = False
    scenario: str = "workshop"

    def __post_init__(self) -> None:
        if not _number(self.time_scale) or not 0.0001 <= self.time_scale <= 10:
            raise LabConfigError(
                "time_scale must be real seconds per simulated second, from 0.0001 to 10; "
                f"got {self.time_scale!r}."
            )
        if self.clock not in CLOCKS:
            raise LabConfigError(
                f"clock must be {' or '.join(map(repr, CLOCKS))}; got {self.clock!r}."
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise LabConfigError(f"seed must be a whole number 0 or greater; got {self.seed!r}.")
        if (
            not isinstance(self.history, int)
            or isinstance(self.history, bool)
            or not 0 <= self.history <= 20
        ):
            raise LabConfigError(
                f"history must be a whole number from 0 to 20; got {self.history!r}."
            )
        scenario(self.scenario)  # a LabConfigError naming the scenarios
        self.faults  # noqa: B018 - validates the fault knobs

    @property
    def faults(self) -> Faults:
        """The fault knobs the lab starts with: those set here, else the scenario's."""
        mine = Faults(
            propagation_delay_s=self.propagation_delay_s,
            throttle_rate=self.throttle_rate,
            execution_role_fault=self.execution_role_fault,
            stale_reads_s=self.stale_reads_s,
            log_pages=self.log_pages,
        )
        default = Faults()
        knobs = {
            name: value
            for name, value in scenario(self.scenario).faults.items()
            if getattr(mine, name) == getattr(default, name)
        }
        return replace(mine, **knobs)
