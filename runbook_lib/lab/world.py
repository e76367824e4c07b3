"""What the parts of a running lab share: its parameters, backends, clocks, knobs and seeds."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

from runbook_lib.lab.backends import Backends
from runbook_lib.lab.clock import Clock
from runbook_lib.lab.config import LabConfig
from runbook_lib.lab.faults import Faults
from runbook_lib.lab.logstream import LogWriter
from runbook_lib.lab.policies import PolicyHistory, RoleState, role_state
from runbook_lib.lab.runtime import Runtime
from runbook_lib.params import Params
from runbook_lib.partitions import partition_for_region


@dataclass
class Seeds:
    """One random stream per purpose, so that e.g. throttling does not shift the task ids."""

    task_ids: random.Random
    deployment_ids: random.Random
    request_ids: random.Random
    shoppers: random.Random
    catalog: random.Random
    throttle: random.Random
    addresses: random.Random
    events: random.Random

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        return cls(**{f.name: random.Random(f"{seed}:{f.name}") for f in fields(cls)})


@dataclass
class World:
    """The shared state of one lab; everything in it is touched with MOTO_LOCK held."""

    params: Params
    config: LabConfig
    backends: Backends
    clock: Clock
    runtime: Runtime
    logs: LogWriter
    faults: Faults
    seeds: Seeds
    histories: dict[str, PolicyHistory[RoleState]] = field(default_factory=dict)
    #: The shop's items (itemId, unitPrice) and shoppers (customer ids), from the seed.
    catalog: tuple[tuple[str, str], ...] = ()
    customers: tuple[str, ...] = ()

    @property
    def account_id(self) -> str:
        return self.params.lab_account_id

    @property
    def region(self) -> str:
        return self.params.region

    @property
    def partition(self) -> str:
        """The partition of the lab's region (``aws``, ``aws-cn``, ...): every ARN the lab makes
        carries it, as moto's own ARNs do (bc: ``partitions.json``; AWS-FACTS 9, 11)."""
        return partition_for_region(self.region)

    def history(self, role: str) -> PolicyHistory[RoleState]:
        """The policy history of ``role`` (started now if the lab has not watched it yet)."""
        found = self.histories.get(role)
        if found is None:
            found = PolicyHistory(lambda: role_state(self.backends.iam, role))
            found.observe(self.clock.monotonic())
            self.histories[role] = found
        return found

    def observe_policies(self) -> None:
        """Record any change of the watched roles' policies (after every IAM request)."""
        now = self.clock.monotonic()
        for history in self.histories.values():
            history.observe(now)

    def policies_seen_by_tasks(self, role: str) -> RoleState:
        """``role``'s policies as a task sees them now: as they were a propagation delay ago
        (its identity policies and its permissions boundary alike)."""
        history = self.history(role)
        history.observe(self.clock.monotonic())
        delay = self.clock.real(self.faults.propagation_delay_s)
        return history.as_of(self.clock.monotonic() - delay)

    def role_as_read(self, role: str) -> RoleState | None:
        """``role`` as IAM's read API answers it now: as it was ``stale_reads_s`` ago when that
        knob is on (None when it is off, or for a role the lab does not watch: answer what
        moto holds)."""
        if self.faults.stale_reads_s <= 0 or role not in self.histories:
            return None
        history = self.histories[role]
        history.observe(self.clock.monotonic())
        return history.as_of(self.clock.monotonic() - self.clock.real(self.faults.stale_reads_s))
