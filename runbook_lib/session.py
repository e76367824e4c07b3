"""The client factory: parameters in, one boto3 session and its clients out.

Nothing here creates a client at import time. The same code then talks to the embedded lab or to
AWS; only this module knows which (and only to start a lab when asked).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_lib import speedups
from runbook_lib.errors import EndpointUnreachable, WrongAccount
from runbook_lib.params import Params
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import boto3

USER_AGENT = "carts-runbook/0.1"

#: Dummy credentials for the lab: it accepts any, and these are no secret.
LAB_ACCESS_KEY = "lab"
LAB_SECRET_KEY = "lab"


def client_config() -> Any:
    """One botocore Config for every client: standard retries (throttling backs off), timeouts."""
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": 8},
        connect_timeout=3,
        read_timeout=20,
        user_agent_extra=USER_AGENT,
    )


@dataclass
class Identity(Shows):
    """Who answers: ``sts:GetCallerIdentity`` plus the endpoint."""

    account: str
    arn: str
    endpoint: str
    backend: str

    def __str__(self) -> str:
        return f"{self.arn} (account {self.account}) via {self.endpoint} [{self.backend}]"

    def _repr_html_(self) -> str:
        from html import escape

        return (
            f"<p>Connected as <code>{escape(self.arn)}</code> in account <b>{escape(self.account)}</b>"
            f" via <code>{escape(self.endpoint)}</code> (backend <b>{escape(self.backend)}</b>).</p>"
        )


@dataclass
class Connection:
    """A session bound to one account and region, with cached clients and an optional lab."""

    params: Params
    session: boto3.Session
    endpoint_url: str | None
    lab: Any = None
    identity: Identity | None = None
    calls: dict[str, int] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, service: str) -> Any:
        """A client for ``service`` (cached: one per service for the connection's life)."""
        with self._lock:
            c = self._clients.get(service)
            if c is None:
                factory: Any = self.session  # boto3's stubs type client() per service name
                c = factory.client(service, endpoint_url=self.endpoint_url, config=client_config())
                c.meta.events.register("before-call", self._count)
                self._clients[service] = c
            return c

    def _count(self, model: Any, **_: Any) -> None:
        key = f"{model.service_model.service_name}:{model.name}"
        self.calls[key] = self.calls.get(key, 0) + 1

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or f"AWS ({self.params.region})"

    def close(self) -> None:
        """Stop the lab this connection started, if any."""
        if self.lab is not None:
            self.lab.stop()
            self.lab = None


def connect(params: Params, *, on_lab_start: Callable[[Any], None] | None = None) -> Connection:
    """Build the session the parameters ask for and check who answers.

    - backend ``lab`` with an empty ``endpoint_url``: start an embedded lab on loopback, seeded
      from ``params``; it stops when the process exits (or with :meth:`Connection.close`).
    - backend ``lab`` with ``endpoint_url``: a lab already serving there.
    - backend ``aws``: the standard credential chain (``profile`` if set), the real endpoints.

    Raises :class:`WrongAccount` when ``account_id`` is set and the caller's account differs, and
    :class:`EndpointUnreachable` when nobody answers.
    """
    import boto3

    lab = None
    endpoint = params.endpoint_url or None
    if params.is_lab:
        if endpoint is None:
            from runbook_lib.lab import Lab

            lab = Lab.start(params)
            atexit.register(_stop_at_exit, lab)
            endpoint = lab.endpoint_url
            if on_lab_start is not None:
                on_lab_start(lab)
        session = boto3.Session(
            aws_access_key_id=LAB_ACCESS_KEY,
            aws_secret_access_key=LAB_SECRET_KEY,
            region_name=params.region,
        )
    else:
        session = boto3.Session(profile_name=params.profile or None, region_name=params.region)
    conn = Connection(params=params, session=session, endpoint_url=endpoint, lab=lab)
    conn.identity = caller_identity(conn)
    expected = params.lab_account_id if params.is_lab else params.account_id
    if expected and conn.identity.account != expected:
        conn.close()
        raise WrongAccount(
            f"the caller's account is {conn.identity.account} but parameter 'account_id' is "
            f"{expected}; nothing was written. Check the profile or the parameter."
        )
    return conn


def _stop_at_exit(lab: Any) -> None:
    """Stop the lab when the process ends, and spare the exit the garbage collector's passes.

    Python's finalisation runs full collections over every object still alive, and a lab leaves
    moto's state behind (a few hundred thousand objects), which a kernel shut down by papermill
    would add to every headless run (BENCHMARKS.md has the figure). Frozen objects are skipped;
    the process is ending, and whatever it holds goes with it (see :mod:`runbook_lib.speedups`).
    """
    lab.stop()
    speedups.freeze_gc()


def caller_identity(conn: Connection) -> Identity:
    """``sts:GetCallerIdentity``, with a clear error when the endpoint does not answer."""
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        who = conn.client("sts").get_caller_identity()
    except BotoConnectionError as exc:
        raise EndpointUnreachable(
            f"cannot reach {conn.endpoint}: {type(exc).__name__}. "
            + (
                "Is the lab still serving there?"
                if conn.params.is_lab
                else "Check the network and the region."
            )
        ) from None
    return Identity(
        account=str(who["Account"]),
        arn=str(who["Arn"]),
        endpoint=conn.endpoint,
        backend=conn.params.backend,
    )
