"""The embedded workshop lab: start, reset, fault knobs, stop."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from runbook_lib.lab.account import ORGANIZATION_ROLE, LabAccount, seed_management
from runbook_lib.lab.backends import MOTO_LOCK, Backends
from runbook_lib.lab.clock import SteppedClock
from runbook_lib.lab.config import HISTORY_TIME_SCALE, LabConfig
from runbook_lib.lab.errors import LabConfigError, LabError
from runbook_lib.lab.faults import Faults
from runbook_lib.lab.guard import TOKEN_ENV
from runbook_lib.lab.scenarios import scenario
from runbook_lib.lab.scheduler import ServiceScheduler
from runbook_lib.lab.seed import Seeded
from runbook_lib.lab.server import LabApp, LabServer
from runbook_lib.lab.shapes import KEEP_PROBLEMS, ShapeProblem
from runbook_lib.lab.wire import WireApp
from runbook_lib.lab.world import World
from runbook_lib.lab_keys import LAB_ACCESS_KEY, LAB_SECRET_KEY
from runbook_lib.params import LAB_DEFAULT_ACCOUNT, Params

# moto keeps one state per process: two labs may share a process only with different accounts.
_accounts_lock = threading.Lock()
_accounts_in_use: set[str] = set()

#: A bound on playing the history (a lab whose tasks cannot fail would otherwise wait forever).
HISTORY_TIMEOUT_S = 10.0

#: When set (to a file path), every lab in the process validates its answers against botocore's
#: output shapes, whatever its config says, and appends each problem to that file as a line of
#: JSON: how a test suite covers labs it does not start itself (a papermill kernel's, a served
#: lab's), and reads what they answered that AWS could not.
VALIDATE_ENV = "RUNBOOK_LAB_VALIDATE"

#: On a stepped clock, how far (simulated seconds) the history may go before giving up, and the
#: step it advances by between two looks.
HISTORY_LIMIT_S = 1200.0
STEP_S = 1.0

T = TypeVar("T")


class Lab:
    """A local AWS on loopback holding the broken workshop account of step 3.2, or an
    organization of such accounts (:meth:`start_organization`).

    >>> with Lab.start() as lab:                              # doctest: +SKIP
    ...     boto3.client("ecs", endpoint_url=lab.endpoint_url).list_tasks(...)

    The lab's keys (``lab``/``lab``) act in one account: the workshop's, or an organization's
    management account. A request is moto's in the account its keys belong to: AssumeRole's
    temporary keys keep the account of the role they were issued for (AWS-FACTS §11), so a
    client that assumed ``arn:aws:iam::<member>:role/OrganizationAccountAccessRole`` acts in
    that member account. The attributes of one account (``params``, ``world``, ``scheduler``,
    ``iam_writes``, ...) are those of the first member.
    """

    def __init__(
        self,
        members: list[LabAccount],
        config: LabConfig,
        port: int,
        management: str | None = None,
    ) -> None:
        # Use Lab.start() or Lab.start_organization(): the constructor leaves the lab unseeded
        # and not serving.
        self.config = config
        self.members: dict[str, LabAccount] = {a.account_id: a for a in members}
        self.main = members[0]
        #: The organization's management account (None: a lab of one workshop account).
        self.management = management
        #: The account the lab's own keys act in.
        self.caller_account = management or self.main.account_id
        #: Answers the lab sent that AWS could not have sent (see :mod:`runbook_lib.lab.shapes`).
        self.shape_errors: list[ShapeProblem] = []
        self._shape_log = os.environ.get(VALIDATE_ENV, "")
        self.validates = config.validate_responses or bool(self._shape_log)
        #: The control routes' secret (``X-Lab-Token``): a web page cannot know it.
        self.token = secrets.token_hex(16)
        self._server = LabServer(self._wsgi_app, port)
        self._stopped = False

    # --- the first member's account, as a lab of one account has it ---------------------------

    @property
    def params(self) -> Params:
        return self.main.params

    @property
    def account_id(self) -> str:
        return self.main.account_id

    @property
    def region(self) -> str:
        return self.main.region

    @property
    def world(self) -> World:
        return self.main.world

    @property
    def scheduler(self) -> ServiceScheduler | None:
        return self.main.scheduler

    @property
    def seeded(self) -> Seeded | None:
        return self.main.seeded

    @property
    def iam_writes(self) -> list[str]:
        """IAM write actions clients sent since the lab was seeded, in order (the seed's own
        writes do not count)."""
        return self.main.iam_writes

    @iam_writes.setter
    def iam_writes(self, value: list[str]) -> None:
        self.main.iam_writes = value

    @property
    def ecs_writes(self) -> list[str]:
        """ECS write actions clients sent since the lab was seeded (all but Describe*, List*)."""
        return self.main.ecs_writes

    @ecs_writes.setter
    def ecs_writes(self, value: list[str]) -> None:
        self.main.ecs_writes = value

    def account(self, account_id: str) -> LabAccount:
        """The member account ``account_id``; :class:`LabError` for one the lab does not hold."""
        found = self.members.get(account_id)
        if found is None:
            raise LabError(
                f"the lab holds no account {account_id}; it holds {', '.join(self.members)}"
            )
        return found

    def _wsgi_app(self) -> Any:
        return WireApp(LabApp(self), self.shape_problems if self.validates else None)

    def shape_problems(self, problems: list[ShapeProblem]) -> None:
        """Keep what :class:`~runbook_lib.lab.wire.WireApp` found (the first
        :data:`~runbook_lib.lab.shapes.KEEP_PROBLEMS`), and append it to the file that
        :data:`VALIDATE_ENV` names."""
        with MOTO_LOCK:
            room = KEEP_PROBLEMS - len(self.shape_errors)
            self.shape_errors.extend(problems[: max(room, 0)])
        if self._shape_log:
            lines = "".join(
                json.dumps({"endpoint": self.endpoint_url, **p.as_dict()}) + "\n" for p in problems
            )
            with open(self._shape_log, "a", encoding="utf-8") as sink:
                sink.write(lines)

    # --- life -------------------------------------------------------------------------------

    @classmethod
    def start(
        cls, params: Params | None = None, config: LabConfig | None = None, port: int = 0
    ) -> Lab:
        """Seed the workshop account, start the scheduler and serve on 127.0.0.1:``port``.

        ``port`` 0 picks a free port. Raises :class:`~runbook_lib.lab.errors.PortInUse` for a
        busy port and :class:`LabError` when a lab of the same account already runs here.
        """
        config = config or LabConfig()
        params = in_scenario_region(params or Params(), config.scenario)
        return cls._start([LabAccount(params, config)], config, port, None)

    @classmethod
    def start_organization(
        cls,
        members: Sequence[tuple[Params, str]],
        config: LabConfig | None = None,
        port: int = 0,
        management: str = LAB_DEFAULT_ACCOUNT,
    ) -> Lab:
        """A lab holding an organization: ``management`` holds the lab's keys and no workload;
        each member ``(params, scenario)`` is a workshop account of its own (``params``'s
        ``account_id``, region and names), in that scenario, seeded with ``config.seed`` plus its
        place, with ``config``'s clock and fault knobs, and the role
        ``OrganizationAccountAccessRole`` that trusts the management account.

        Every account is in one partition (an organization does not span partitions: IAM and
        STS are apart in each). Raises :class:`LabConfigError` naming the account otherwise.
        """
        config = config or LabConfig()
        if not members:
            raise LabConfigError("an organization needs at least one member account.")
        accounts: list[LabAccount] = []
        for i, (params, name) in enumerate(members):
            member_config = replace(config, scenario=name, seed=config.seed + i)
            accounts.append(LabAccount(in_scenario_region(params, name), member_config))
        ids = [a.account_id for a in accounts]
        twice = sorted({i for i in ids if ids.count(i) > 1} | ({management} & set(ids)))
        if twice:
            raise LabConfigError(
                f"account {twice[0]} is given twice; each account of an organization is one "
                "member (the management account holds no workshop)."
            )
        partition = accounts[0].partition
        for a in accounts:
            if a.partition != partition:
                raise LabConfigError(
                    f"account {a.account_id} is in region {a.region!r} of partition "
                    f"{a.partition}, but account {accounts[0].account_id} is in partition "
                    f"{partition}; an organization's accounts are all in one partition."
                )
        return cls._start(accounts, config, port, management)

    @classmethod
    def _start(
        cls, members: list[LabAccount], config: LabConfig, port: int, management: str | None
    ) -> Lab:
        from runbook_lib.lab.moto_patches import pin_task_lifecycle, shared_botocore_loader

        ids = [a.account_id for a in members] + ([management] if management else [])
        with _accounts_lock:
            busy = [i for i in ids if i in _accounts_in_use]
            if busy:
                raise LabError(
                    f"a lab for account {busy[0]} already runs in this process; stop it first "
                    "or give this one another account_id"
                )
            _accounts_in_use.update(ids)
        with shared_botocore_loader():  # moto's first set-up in a process reads botocore's data
            try:
                lab = cls(members, config, port, management)
            except BaseException:
                with _accounts_lock:
                    _accounts_in_use.difference_update(ids)
                raise
            pin_task_lifecycle()
            try:
                with MOTO_LOCK:
                    lab._build()
            except BaseException:
                lab.stop()
                raise
        try:
            for a in lab.members.values():
                a.world.runtime.start()
            lab._server.start()
            lab._play_history()
            lab._play_scenarios()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _play_history(self) -> None:
        """Let carts fail ``config.history`` times in every account, quickly, before the lab
        answers ready."""
        want = self.config.history
        if want <= 0:
            return
        members = list(self.members.values())
        self._play_until(lambda: all(a.stopped_tasks() >= want for a in members))

    def _play_until(self, check: Callable[[], bool], what: str = "") -> None:
        """Let the lab's time pass until ``check()`` holds: step by step on a stepped clock,
        fast on a real one (at most :data:`HISTORY_TIMEOUT_S` wall seconds)."""
        clocks = [a.world.clock for a in self.members.values()]
        if self.stepped:
            try:
                self.advance_until(check, HISTORY_LIMIT_S)
            except LabError:
                raise LabError(
                    f"the lab gave up after {HISTORY_LIMIT_S:g} simulated seconds waiting for "
                    f"{what or 'its history'}"
                ) from None
            return
        saved = [clock.time_scale for clock in clocks]
        for clock in clocks:
            clock.time_scale = min(clock.time_scale, HISTORY_TIME_SCALE)
        deadline = time.monotonic() + HISTORY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if check():
                    return
                time.sleep(0.005)
        finally:
            for clock, scale in zip(clocks, saved, strict=True):
                clock.time_scale = scale
        if what:
            raise LabError(f"the lab gave up after {HISTORY_TIMEOUT_S:g} s waiting for {what}")

    def _play_scenarios(self) -> None:
        """Set each account's scenario up through AWS's API, as a user would on this lab (in an
        organization, as its management account does: through the role it assumes in each
        member), and let it play until it stands as the scenario says; its writes are not
        counted as a client's."""
        from runbook_lib.lab.scenarios import Api

        for a in self.members.values():
            setup = scenario(a.config.scenario).setup
            if setup is None:
                continue
            role = (
                f"arn:{a.partition}:iam::{a.account_id}:role/{ORGANIZATION_ROLE}"
                if self.management
                else None
            )
            api = Api(self.endpoint_url, a.region, a.params, self._until_for(a), role_arn=role)
            setup(api)
            with MOTO_LOCK:
                a.iam_writes = []
                a.ecs_writes = []

    def _until_for(self, a: LabAccount) -> Callable[[str, Callable[[], bool]], None]:
        """The wait a scenario's set-up in ``a`` uses; its error names the account in an
        organization."""

        def until(step: str, check: Callable[[], bool]) -> None:
            self._play_until(check, f"{step} (account {a.account_id})" if self.management else step)

        return until

    def _build(self) -> None:
        """Wipe every account and seed it (caller holds MOTO_LOCK)."""
        from runbook_lib.lab.assume_role import install_assume_role_check
        from runbook_lib.lab.moto_patches import install_caller_identity
        from runbook_lib.lab.seed import PARTICIPANT_ROLE

        if self.management is not None:
            params = replace(self.main.params, account_id=self.management, assume_role_arn="")
            backends = Backends(self.management, params.region)
            arn, user_id = seed_management(backends, params)
            install_caller_identity(backends.sts, arn, user_id)
            partition = self.main.partition
            install_assume_role_check(
                backends.sts, arn, f"arn:{partition}:iam::{self.management}:role/{PARTICIPANT_ROLE}"
            )
        for a in self.members.values():
            a.build(self.management)

    def stop(self) -> None:
        """Stop serving and scheduling; no thread or port is left behind. Idempotent."""
        from runbook_lib.lab.moto_patches import unpin_task_lifecycle

        if self._stopped:
            return
        self._stopped = True
        try:
            self._server.stop()
            for a in self.members.values():
                a.world.runtime.stop()
        finally:
            unpin_task_lifecycle()
            with _accounts_lock:
                _accounts_in_use.difference_update(self.members)
                _accounts_in_use.discard(self.management or "")

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what callers use -------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and the ``aws`` CLI at this lab, and
        ``python -m runbook_lib.lab reset|state`` at its control routes (the token)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": LAB_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LAB_SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            TOKEN_ENV: self.token,
        }

    def role_arn(self, account_id: str) -> str:
        """The role the management account assumes in member ``account_id``."""
        member = self.account(account_id)
        return f"arn:{member.partition}:iam::{account_id}:role/{ORGANIZATION_ROLE}"

    def reset(self) -> None:
        """Back to the broken state without a restart: every change since is gone (policies,
        tasks, items, logs), the service starts afresh and the fault knobs return to the
        lab's configuration. A stepped clock starts again from its fixed instant, so a reset lab
        tells the same history as a new one."""
        self._check_running()
        with MOTO_LOCK:
            for a in self.members.values():
                a.world.faults = a.config.faults
                if isinstance(a.world.clock, SteppedClock):
                    a.world.clock.restart()
            self._build()
        self._play_history()
        self._play_scenarios()

    # --- time ---------------------------------------------------------------------------------

    @property
    def stepped(self) -> bool:
        """Whether the lab's time moves only when :meth:`advance` moves it."""
        return self.world.clock.stepped

    def now(self) -> datetime:
        """What time the lab's AWS says it is."""
        with MOTO_LOCK:
            return self.world.clock.now()

    def advance(self, seconds: float) -> None:
        """On a stepped clock: let ``seconds`` simulated seconds pass, playing everything that
        falls due (tasks, the carts app, the scheduler) in every account, then stand still."""
        self._check_running()
        if not self.stepped:
            raise LabError("advance() needs a lab started with LabConfig(clock='stepped')")
        for a in self.members.values():
            a.world.runtime.advance(seconds)

    def advance_until(
        self, check: Callable[[], T | None], limit_s: float, step_s: float = STEP_S
    ) -> T:
        """Advance ``step_s`` at a time until ``check()`` returns something truthy (returned);
        :class:`LabError` after ``limit_s`` simulated seconds. ``check`` runs on a still world."""
        waited = 0.0
        while True:
            value = check()
            if value:
                return value
            if waited >= limit_s:
                raise LabError(f"nothing came of {limit_s:g} simulated seconds")
            self.advance(step_s)
            waited += step_s

    def client_clock(self) -> LabClientClock | None:
        """The clock a runbook in this process keeps time by (None on a real clock: the wall
        clock is the lab's clock then)."""
        return LabClientClock(self) if self.stepped else None

    @property
    def faults(self) -> Faults:
        """The fault knobs in force (the first member's)."""
        return self.world.faults

    def set_faults(self, account: str | None = None, **knobs: Any) -> Faults:
        """Change fault knobs at runtime, e.g. ``lab.set_faults(throttle_rate=0.3)``: in every
        member account, or in ``account`` only."""
        self._check_running()
        unknown = sorted(set(knobs) - set(Faults.knob_names()))
        if unknown:
            raise LabConfigError(
                f"unknown fault knob {unknown[0]!r}; knobs: {', '.join(Faults.knob_names())}."
            )
        targets = [self.account(account)] if account else list(self.members.values())
        with MOTO_LOCK:
            for a in targets:
                a.world.faults = replace(a.world.faults, **knobs)
                a.world.runtime.wake()
            return targets[0].world.faults

    def state(self) -> dict[str, Any]:
        """A summary for people and tests: knobs, the service, the latest tasks, the policies
        (the first member's), and in an organization every member's under ``accounts``."""
        with MOTO_LOCK:
            summary: dict[str, Any] = {
                "endpoint_url": self.endpoint_url,
                "time_scale": self.config.time_scale,
                "validates_responses": self.validates,
                "shape_errors": [str(p) for p in self.shape_errors],
                **self.main.state(),
            }
            if self.management is not None:
                summary["organization"] = {
                    "management_account": self.management,
                    "member_role": ORGANIZATION_ROLE,
                }
                summary["accounts"] = [a.state() for a in self.members.values()]
            return summary

    def _check_running(self) -> None:
        if self._stopped:
            raise LabError("this lab has stopped; start a new one with Lab.start()")

    # --- what the HTTP wrapper asks ---------------------------------------------------------

    def account_for(self, access_key: str) -> str:
        """The account a request signed with ``access_key`` acts in: the member whose IAM holds
        the key (AssumeRole's), else the account of the lab's own keys."""
        if access_key and access_key != LAB_ACCESS_KEY:
            with MOTO_LOCK:
                for a in self.members.values():
                    if a.holds_key(access_key):
                        return a.account_id
        return self.caller_account

    def after_request(self, account: str, service: str, operation: str) -> None:
        """Called with MOTO_LOCK held after moto answered a request made in ``account``."""
        member = self.members.get(account)
        if member is not None:
            member.after_request(service, operation)

    def throttle_now(self, account: str) -> bool:
        """Whether to throttle the request at hand (seeded draw of its account)."""
        member = self.members.get(account)
        with MOTO_LOCK:
            return member is not None and member.throttle_now()

    def request_id(self) -> str:
        with MOTO_LOCK:
            h = f"{self.world.seeds.throttle.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
        if self.management is not None:
            return (
                f"<Lab {state} at {self.endpoint_url} organization of {self.management} with "
                f"{len(self.members)} member accounts>"
            )
        return f"<Lab {state} at {self.endpoint_url} account {self.account_id} {self.region}>"


class LabClientClock:
    """A runbook's clock on a stepped lab: its waits are the lab's time passing.

    What a runbook asks a clock (see :class:`runbook_lib.session.SystemClock`): the time AWS says it
    is, a monotonic reading, and a sleep. Sleeping advances the lab, so a watch that polls every few
    seconds sees the lab go on exactly as far as it waited, on any machine.
    """

    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    def time(self) -> float:
        return self._lab.now().timestamp()

    def monotonic(self) -> float:
        with MOTO_LOCK:
            return self._lab.world.clock.monotonic()

    def sleep(self, seconds: float) -> None:
        self._lab.advance(seconds)


def in_scenario_region(params: Params, name: str) -> Params:
    """``params`` in the region the scenario ``name`` needs: a region of another partition
    is replaced by the scenario's (aws-cn: ``cn-north-1``); one of the same partition stays."""
    from runbook_lib.partitions import partition_for_region

    wanted = scenario(name).region
    if wanted is None or partition_for_region(params.region) == partition_for_region(wanted):
        return params
    return replace(params, region=wanted)
