"""The embedded workshop lab: start, reset, fault knobs, stop."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from runbook_lib.lab.app import make_catalog, make_customers
from runbook_lib.lab.backends import MOTO_LOCK, Backends
from runbook_lib.lab.clock import SteppedClock, make_clock
from runbook_lib.lab.config import HISTORY_TIME_SCALE, LabConfig
from runbook_lib.lab.errors import LabConfigError, LabError
from runbook_lib.lab.faults import Faults
from runbook_lib.lab.guard import TOKEN_ENV
from runbook_lib.lab.logstream import LogWriter
from runbook_lib.lab.runtime import Runtime
from runbook_lib.lab.scenarios import scenario
from runbook_lib.lab.scheduler import ServiceScheduler
from runbook_lib.lab.seed import LOG_GROUP, Seeded, seed_workshop
from runbook_lib.lab.server import LabApp, LabServer
from runbook_lib.lab.shapes import KEEP_PROBLEMS, ShapeProblem
from runbook_lib.lab.wire import WireApp
from runbook_lib.lab.world import Seeds, World
from runbook_lib.params import Params
from runbook_lib.session import LAB_ACCESS_KEY, LAB_SECRET_KEY

# moto keeps one state per process: two labs may share a process only with different accounts.
_accounts_lock = threading.Lock()
_accounts_in_use: set[str] = set()

#: A bound on playing the history (a lab whose tasks cannot fail would otherwise wait forever).
HISTORY_TIMEOUT_S = 10.0

#: IAM actions that only read; every other IAM action a client sends counts as a write.
IAM_READ_PREFIXES = ("Get", "List", "Simulate")
#: ECS actions that only read.
ECS_READ_PREFIXES = ("Describe", "List")

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
    """A local AWS on loopback holding the broken workshop account of step 3.2.

    >>> with Lab.start() as lab:                              # doctest: +SKIP
    ...     boto3.client("ecs", endpoint_url=lab.endpoint_url).list_tasks(...)
    """

    def __init__(self, params: Params, config: LabConfig, port: int) -> None:
        # Use Lab.start(): the constructor leaves the lab unseeded and not serving.
        self.params = params
        self.config = config
        self.account_id = params.lab_account_id
        self.region = params.region
        clock = make_clock(config.clock, config.time_scale)
        self.world = World(
            params=params,
            config=config,
            backends=Backends(self.account_id, self.region),
            clock=clock,
            runtime=Runtime(clock),
            logs=LogWriter(Backends(self.account_id, self.region), LOG_GROUP, clock),
            faults=config.faults,
            seeds=Seeds.from_seed(config.seed),
        )
        self.scheduler: ServiceScheduler | None = None
        self.seeded: Seeded | None = None
        #: IAM write actions clients sent since the lab was seeded, in order (the seed's own
        #: writes do not count).
        self.iam_writes: list[str] = []
        #: ECS write actions clients sent since the lab was seeded (all but Describe*, List*).
        self.ecs_writes: list[str] = []
        #: Answers the lab sent that AWS could not have sent (see :mod:`runbook_lib.lab.shapes`).
        self.shape_errors: list[ShapeProblem] = []
        self._shape_log = os.environ.get(VALIDATE_ENV, "")
        self.validates = config.validate_responses or bool(self._shape_log)
        #: The control routes' secret (``X-Lab-Token``): a web page cannot know it.
        self.token = secrets.token_hex(16)
        self._server = LabServer(self._wsgi_app, port)
        self._stopped = False

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
        from runbook_lib.lab.moto_patches import pin_task_lifecycle, shared_botocore_loader

        config = config or LabConfig()
        params = in_scenario_region(params or Params(), config.scenario)
        account = params.lab_account_id
        with _accounts_lock:
            if account in _accounts_in_use:
                raise LabError(
                    f"a lab for account {account} already runs in this process; stop it first "
                    "or give this one another account_id"
                )
            _accounts_in_use.add(account)
        with shared_botocore_loader():  # moto's first set-up in a process reads botocore's data
            try:
                lab = cls(params, config, port)
            except BaseException:
                with _accounts_lock:
                    _accounts_in_use.discard(account)
                raise
            pin_task_lifecycle()
            try:
                with MOTO_LOCK:
                    lab._build()
            except BaseException:
                lab.stop()
                raise
        try:
            lab.world.runtime.start()
            lab._server.start()
            lab._play_history()
            lab._play_scenario()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _stopped_tasks(self) -> int:
        with MOTO_LOCK:
            tasks = list(self.scheduler.tasks.values()) if self.scheduler else []
            return sum(1 for t in tasks if t.last_status == "STOPPED")

    def _play_history(self) -> None:
        """Let carts fail ``config.history`` times, quickly, before the lab answers ready."""
        want = self.config.history
        if want <= 0:
            return
        self._play_until(lambda: self._stopped_tasks() >= want)

    def _play_until(self, check: Callable[[], bool], what: str = "") -> None:
        """Let the lab's time pass until ``check()`` holds: step by step on a stepped clock,
        fast on a real one (at most :data:`HISTORY_TIMEOUT_S` wall seconds)."""
        clock = self.world.clock
        if clock.stepped:
            try:
                self.advance_until(check, HISTORY_LIMIT_S)
            except LabError:
                raise LabError(
                    f"the lab gave up after {HISTORY_LIMIT_S:g} simulated seconds waiting for "
                    f"{what or 'its history'}"
                ) from None
            return
        saved = clock.time_scale
        clock.time_scale = min(saved, HISTORY_TIME_SCALE)
        deadline = time.monotonic() + HISTORY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if check():
                    return
                time.sleep(0.005)
        finally:
            clock.time_scale = saved
        if what:
            raise LabError(f"the lab gave up after {HISTORY_TIMEOUT_S:g} s waiting for {what}")

    def _play_scenario(self) -> None:
        """Set the scenario up through AWS's API, as a user would on this lab, and let it
        play until it stands as the scenario says; its writes are not counted as a client's."""
        from runbook_lib.lab.scenarios import Api

        setup = scenario(self.config.scenario).setup
        if setup is None:
            return
        api = Api(
            self.endpoint_url,
            self.region,
            self.params,
            lambda what, check: self._play_until(check, what),
        )
        setup(api)
        with MOTO_LOCK:
            self.iam_writes = []
            self.ecs_writes = []

    def _build(self) -> None:
        """Wipe the account and seed the broken workshop state (caller holds MOTO_LOCK)."""
        from moto.moto_api._internal import mock_random

        from runbook_lib.lab.assume_role import install_assume_role_check
        from runbook_lib.lab.moto_patches import (
            install_caller_identity,
            install_ecs_overrides,
            install_iam_reads,
            install_logs_overrides,
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

    def stop(self) -> None:
        """Stop serving and scheduling; no thread or port is left behind. Idempotent."""
        from runbook_lib.lab.moto_patches import unpin_task_lifecycle

        if self._stopped:
            return
        self._stopped = True
        try:
            self._server.stop()
            self.world.runtime.stop()
        finally:
            unpin_task_lifecycle()
            with _accounts_lock:
                _accounts_in_use.discard(self.account_id)

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

    def reset(self) -> None:
        """Back to the broken state without a restart: every change since is gone (policies,
        tasks, items, logs), the service starts afresh and the fault knobs return to the
        lab's configuration. A stepped clock starts again from its fixed instant, so a reset lab
        tells the same history as a new one."""
        self._check_running()
        with MOTO_LOCK:
            self.world.faults = self.config.faults
            if isinstance(self.world.clock, SteppedClock):
                self.world.clock.restart()
            self._build()
        self._play_history()
        self._play_scenario()

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
        falls due (tasks, the carts app, the scheduler), then stand still again."""
        self._check_running()
        if not self.stepped:
            raise LabError("advance() needs a lab started with LabConfig(clock='stepped')")
        self.world.runtime.advance(seconds)

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
        """The fault knobs in force."""
        return self.world.faults

    def set_faults(self, **knobs: Any) -> Faults:
        """Change fault knobs at runtime, e.g. ``lab.set_faults(throttle_rate=0.3)``."""
        self._check_running()
        unknown = sorted(set(knobs) - set(Faults.knob_names()))
        if unknown:
            raise LabConfigError(
                f"unknown fault knob {unknown[0]!r}; knobs: {', '.join(Faults.knob_names())}."
            )
        with MOTO_LOCK:
            self.world.faults = replace(self.world.faults, **knobs)
            self.world.runtime.wake()
            return self.world.faults

    def state(self) -> dict[str, Any]:
        """A summary for people and tests: knobs, the service, the latest tasks, the policies."""
        with MOTO_LOCK:
            ecs = self.world.backends.ecs
            service = ecs.services.get(f"{self.params.cluster}:{self.params.service}")
            tasks = list(self.scheduler.tasks.values()) if self.scheduler else []
            role = self.world.history(self.params.task_role).read()
            summary: dict[str, Any] = {
                "endpoint_url": self.endpoint_url,
                "account_id": self.account_id,
                "region": self.region,
                "time_scale": self.config.time_scale,
                "seed": self.config.seed,
                "faults": self.world.faults.as_dict(),
                "task_role_policies": sorted(role.identity),
                "task_role_boundary": role.boundary_arn,
                "scenario": self.config.scenario,
                "iam_writes": list(self.iam_writes),
                "ecs_writes": list(self.ecs_writes),
                "process_errors": list(self.world.runtime.failures[-10:]),
                "validates_responses": self.validates,
                "shape_errors": [str(p) for p in self.shape_errors],
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

    def _check_running(self) -> None:
        if self._stopped:
            raise LabError("this lab has stopped; start a new one with Lab.start()")

    # --- what the HTTP wrapper asks ---------------------------------------------------------

    def after_request(self, service: str, operation: str) -> None:
        """Called with MOTO_LOCK held after moto answered a request."""
        if service == "iam":
            if not operation.startswith(IAM_READ_PREFIXES):
                self.iam_writes.append(operation or "(unknown IAM action)")
            self.world.observe_policies()
        elif service == "ecs" and not operation.startswith(ECS_READ_PREFIXES):
            self.ecs_writes.append(operation or "(unknown ECS action)")

    def throttle_now(self) -> bool:
        """Whether to throttle the request at hand (seeded draw)."""
        with MOTO_LOCK:
            rate = self.world.faults.throttle_rate
            return rate > 0 and self.world.seeds.throttle.random() < rate

    def request_id(self) -> str:
        with MOTO_LOCK:
            h = f"{self.world.seeds.throttle.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
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
