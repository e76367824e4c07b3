"""One account of a lab: its world (seed, clock, scheduler, carts app, fault knobs, scenario).

A lab holds one account (the workshop's, ``Lab.start``) or an organization
(``Lab.start_organization``): a management account that holds the lab's keys and no workload,
and member accounts, each a world of its own. moto keeps accounts apart (its backends are keyed
by account id, AWS-FACTS §11); each :class:`LabAccount` seeds, plays and resets its own, on its
own clock and scheduler, under the one :data:`~runbook_lib.lab.backends.MOTO_LOCK`.
"""

from __future__ import annotations

import json
from typing import Any

from runbook_lib.lab.app import make_catalog, make_customers
from runbook_lib.lab.backends import MOTO_LOCK, Backends
from runbook_lib.lab.clock import make_clock
from runbook_lib.lab.config import LabConfig
from runbook_lib.lab.logstream import LogWriter
from runbook_lib.lab.runtime import Runtime
from runbook_lib.lab.scheduler import ServiceScheduler
from runbook_lib.lab.seed import LOG_GROUP, Seeded, seed_workshop
from runbook_lib.lab.world import Seeds, World
from runbook_lib.params import Params

#: IAM actions that only read; every other IAM action a client sends counts as a write.
IAM_READ_PREFIXES = ("Get", "List", "Simulate")
#: ECS actions that only read.
ECS_READ_PREFIXES = ("Describe", "List")

#: The role AWS Organizations creates in every account it creates: administrator permissions,
#: trusted by the management account ("Accessing member accounts in your organization",
#: AWS Organizations User Guide, orgs_manage_accounts_access.html; AWS-FACTS §11).
ORGANIZATION_ROLE = "OrganizationAccountAccessRole"


def organization_trust(partition: str, management: str) -> dict[str, Any]:
    """The trust policy Organizations gives :data:`ORGANIZATION_ROLE`: the management account's
    root, ``sts:AssumeRole`` (orgs_manage_accounts_create-cross-account-role.html)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{management}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


class LabAccount:
    """One member of a lab: the workshop account of ``params``, in ``config``'s scenario, with
    ``config``'s fault knobs and seed, on a clock and scheduler of its own."""

    def __init__(self, params: Params, config: LabConfig) -> None:
        self.params = params
        self.config = config
        self.account_id = params.lab_account_id
        self.region = params.region
        clock = make_clock(config.clock, config.time_scale)
        backends = Backends(self.account_id, self.region)
        self.world = World(
            params=params,
            config=config,
            backends=backends,
            clock=clock,
            runtime=Runtime(clock, name=f"lab-scheduler-{self.account_id}"),
            logs=LogWriter(backends, LOG_GROUP, clock),
            faults=config.faults,
            seeds=Seeds.from_seed(config.seed),
        )
        self.scheduler: ServiceScheduler | None = None
        self.seeded: Seeded | None = None
        #: IAM write actions clients sent to this account since it was seeded, in order (the
        #: seed's and the scenario's own writes do not count).
        self.iam_writes: list[str] = []
        #: ECS write actions clients sent since the account was seeded (all but Describe*, List*).
        self.ecs_writes: list[str] = []

    @property
    def partition(self) -> str:
        return self.world.partition

    def build(self, management: str | None = None) -> None:
        """Wipe the account and seed the broken workshop state (caller holds MOTO_LOCK); in an
        organization (``management`` given) also the role its management account assumes."""
        from moto.moto_api._internal import mock_random

        from runbook_lib.lab.assume_role import install_assume_role_check
        from runbook_lib.lab.moto_patches import (
            install_caller_identity,
            install_ecs_overrides,
            install_iam_reads,
            install_logs_overrides,
            register_aws_managed_policy,
        )
        from runbook_lib.lab.seed import PARTICIPANT_ROLE

        world = self.world
        world.runtime.clear()
        world.backends.reset()
        self.iam_writes = []
        self.ecs_writes = []
        world.logs.forget()
        world.histories.clear()
        world.seeds = Seeds.from_seed(self.config.seed)
        world.catalog = make_catalog(world.seeds.catalog)
        world.customers = make_customers(world.seeds.catalog)
        # moto makes its ids (vpc-, subnet-, role ids) with its own generator: seed it too.
        mock_random.seed(self.config.seed)
        self.seeded = seed_workshop(world.backends, self.params)
        if management is not None:
            iam = world.backends.iam
            iam.create_role(
                ORGANIZATION_ROLE,
                json.dumps(organization_trust(self.partition, management)),
                "/",
                None,
                "Created by AWS Organizations: the management account's way in",
                [],
                None,
            )
            iam.attach_role_policy(
                register_aws_managed_policy(iam, "AdministratorAccess"), ORGANIZATION_ROLE
            )
        install_caller_identity(
            world.backends.sts, self.seeded.participant_arn, self.seeded.participant_user_id
        )
        install_assume_role_check(
            world.backends.sts,
            self.seeded.participant_arn,
            f"arn:{world.partition}:iam::{self.account_id}:role/{PARTICIPANT_ROLE}",
        )
        self.scheduler = ServiceScheduler(world)
        install_ecs_overrides(world.backends.ecs, self.scheduler)
        install_logs_overrides(world.backends.logs, lambda: self.world.faults.log_pages)
        install_iam_reads(world.backends.iam, world.role_as_read)
        world.history(self.params.task_role)
        world.history(self.params.execution_role)
        self.scheduler.start()

    def stopped_tasks(self) -> int:
        with MOTO_LOCK:
            tasks = list(self.scheduler.tasks.values()) if self.scheduler else []
            return sum(1 for t in tasks if t.last_status == "STOPPED")

    def after_request(self, service: str, operation: str) -> None:
        """Called with MOTO_LOCK held after moto answered a request made in this account."""
        if service == "iam":
            if not operation.startswith(IAM_READ_PREFIXES):
                self.iam_writes.append(operation or "(unknown IAM action)")
            self.world.observe_policies()
        elif service == "ecs" and not operation.startswith(ECS_READ_PREFIXES):
            self.ecs_writes.append(operation or "(unknown ECS action)")

    def throttle_now(self) -> bool:
        """Whether to throttle the request at hand (seeded draw; caller holds MOTO_LOCK)."""
        rate = self.world.faults.throttle_rate
        return rate > 0 and self.world.seeds.throttle.random() < rate

    def holds_key(self, access_key: str) -> bool:
        """Whether moto issued ``access_key`` in this account (AssumeRole's temporary keys are
        kept in the IAM of the role's account: ``STSBackend._create_access_key``)."""
        return access_key in self.world.backends.iam.access_keys

    def state(self) -> dict[str, Any]:
        """This account for people and tests (caller holds MOTO_LOCK)."""
        ecs = self.world.backends.ecs
        service = ecs.services.get(f"{self.params.cluster}:{self.params.service}")
        tasks = list(self.scheduler.tasks.values()) if self.scheduler else []
        role = self.world.history(self.params.task_role).read()
        summary: dict[str, Any] = {
            "account_id": self.account_id,
            "region": self.region,
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "faults": self.world.faults.as_dict(),
            "task_role_policies": sorted(role.identity),
            "task_role_boundary": role.boundary_arn,
            "iam_writes": list(self.iam_writes),
            "ecs_writes": list(self.ecs_writes),
            "process_errors": list(self.world.runtime.failures[-10:]),
            "tasks": [
                {
                    "id": t.id,
                    "lastStatus": t.last_status,
                    "desiredStatus": t.moto.desired_status,
                    "stopCode": getattr(t.moto, "stop_code", None),
                }
                for t in tasks[-10:]
            ],
        }
        if service is not None:
            primary = service.deployments[0] if service.deployments else {}
            summary["service"] = {
                "name": service.name,
                "status": service.status,
                "desiredCount": service.desired_count,
                "runningCount": service.running_count,
                "pendingCount": service.pending_count,
                "rolloutState": primary.get("rolloutState"),
            }
        return summary


def seed_management(backends: Backends, params: Params) -> tuple[str, str]:
    """The management account of a lab organization: the lab's keys act there as the workshop
    participant role (with ``AdministratorAccess``) and nothing runs there (AWS Organizations'
    advice: "use the management account only for tasks that require it", orgs_best-practices_
    mgmt-acct.html). Returns the caller's assumed-role ARN and user id; caller holds MOTO_LOCK."""
    from runbook_lib.lab.seed import seed_participant

    backends.reset()
    return seed_participant(backends.iam, params)
