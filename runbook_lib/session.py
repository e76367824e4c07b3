"""The client factory: parameters in, one boto3 session and its clients out.

Nothing here creates a client at import time. The same code then talks to the embedded lab or to
AWS; only this module knows which (and only to start a lab when asked).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

from runbook_lib import speedups
from runbook_lib.blocks import Block, Sentence
from runbook_lib.errors import (
    EndpointNotAws,
    EndpointTlsError,
    EndpointUnreachable,
    RoleNotAssumed,
    RunbookError,
    WrongAccount,
)
from runbook_lib.lab_keys import LAB_ACCESS_KEY, LAB_SECRET_KEY
from runbook_lib.params import Backend, Params
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_sts import STSClient

USER_AGENT = "carts-runbook/0.1"

#: Which clock a lab started in the kernel runs on: "real" (default) or "stepped" (time moves only
#: while the runbook waits, so a run's history is the same on every machine: the golden notebook).
LAB_CLOCK_ENV = "RUNBOOK_LAB_CLOCK"


class RunClock(Protocol):
    """What the runbook keeps time by: AWS's time (epoch seconds), a monotonic reading, a sleep."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clock: right for AWS, and for a lab on the wall clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


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
    backend: Backend

    def blocks(self) -> list[Block]:
        return [
            Sentence(
                f"Connected as {self.arn} in account {self.account} via {self.endpoint} "
                f"(backend {self.backend})."
            )
        ]


@dataclass
class Connection:
    """A session bound to one account and region, with cached clients and an optional lab."""

    params: Params
    session: boto3.Session
    endpoint_url: str | None
    lab: Any = None
    identity: Identity | None = None
    #: What the steps keep time by (a lab on a stepped clock supplies its own).
    clock: RunClock = field(default_factory=SystemClock)
    calls: dict[str, int] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @overload
    def client(self, service: Literal["ecs"]) -> ECSClient: ...
    @overload
    def client(self, service: Literal["iam"]) -> IAMClient: ...
    @overload
    def client(self, service: Literal["logs"]) -> CloudWatchLogsClient: ...
    @overload
    def client(self, service: Literal["sts"]) -> STSClient: ...
    @overload
    def client(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def client(self, service: str) -> Any: ...

    def client(self, service: str) -> Any:
        """A client for ``service`` (cached: one per service for the connection's life), typed by
        the mypy_boto3 stubs for the services the runbook calls (checked by mypy only)."""
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
        """Who answers, for people: its address does not matter for a lab in this kernel."""
        if self.lab is not None:
            return "the lab in this kernel"
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
            from runbook_lib.lab import Lab, LabConfig

            lab = Lab.start(params, LabConfig(clock=lab_clock()))
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
    if params.assume_role_arn:
        try:
            session = assume_role(session, params.assume_role_arn, endpoint, params.region)
        except RunbookError:
            if lab is not None:
                lab.stop()
            raise
    conn = Connection(params=params, session=session, endpoint_url=endpoint, lab=lab)
    lab_clock_here = lab.client_clock() if lab is not None else None
    if lab_clock_here is not None:
        conn.clock = lab_clock_here
    conn.identity = caller_identity(conn)
    expected = params.lab_account_id if params.is_lab else params.account_id
    if expected and conn.identity.account != expected:
        conn.close()
        raise WrongAccount(
            f"the caller's account is {conn.identity.account} but parameter 'account_id' is "
            f"{expected}; nothing was written. Check the profile or the parameter."
        )
    return conn


def session_name() -> str:
    """The ``RoleSessionName`` of an assumed role: who ran the runbook, as CloudTrail shows it
    (``assumed-role/<role>/carts-runbook.<user>``).

    STS allows 2-64 characters of ``[\\w+=,.@-]`` (botocore's ``roleSessionNameType``); other
    characters of the login name become ``-``.
    """
    import getpass
    import re

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return ("carts-runbook." + re.sub(r"[^\w+=,.@-]", "-", user, flags=re.ASCII))[:64]


def assume_role(
    base: boto3.Session, role_arn: str, endpoint_url: str | None, region: str
) -> boto3.Session:
    """A session acting as ``role_arn``: the base session's credentials (the standard chain)
    call ``sts:AssumeRole``, and the session renews them before they expire.

    Raises :class:`RoleNotAssumed` with one sentence when STS refuses.
    """
    import boto3
    import botocore.session
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    sts = base.client("sts", endpoint_url=endpoint_url, config=client_config())
    name = session_name()

    def fetch() -> dict[str, str]:
        try:
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise RoleNotAssumed(
                f"cannot assume role {role_arn} (parameter 'assume_role_arn'): "
                f"{err.get('Code', 'error')}: {err.get('Message', '')}. The base credentials "
                "need sts:AssumeRole on it and its trust policy must allow them; nothing was "
                "written."
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            where = endpoint_url or f"AWS STS ({region})"
            raise EndpointUnreachable(
                f"cannot reach {where} to assume role {role_arn}: {_network_reason(exc)}. "
                "Check the network and the region."
            ) from None
        except BotoCoreError as exc:
            raise RoleNotAssumed(
                f"cannot assume role {role_arn} (parameter 'assume_role_arn'): {exc}; nothing "
                "was written."
            ) from None
        expiry = creds["Expiration"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiry.isoformat() if hasattr(expiry, "isoformat") else str(expiry),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = botocore.session.Session()
    # botocore has no public setter for credentials that renew themselves: get_credentials()
    # returns this attribute, where its own credential resolver keeps what it found.
    core._credentials = credentials  # type: ignore[attr-defined]
    return boto3.Session(botocore_session=core, region_name=region)


def lab_clock() -> str:
    """The clock for a lab started in the kernel, from :data:`LAB_CLOCK_ENV`."""
    value = os.environ.get(LAB_CLOCK_ENV, "") or "real"
    if value not in ("real", "stepped"):
        raise RunbookError(f"{LAB_CLOCK_ENV} must be 'real' or 'stepped'; got {value!r}.")
    return value


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
    """``sts:GetCallerIdentity``, with one sentence for each way the endpoint can fail us.

    - nobody answers (connection refused, a timeout, the connection closed):
      :class:`EndpointUnreachable` with the reason;
    - TLS fails: :class:`EndpointTlsError`, keeping OpenSSL's reason ("certificate verify
      failed: self-signed certificate");
    - something answers that is not AWS (an HTML page, another service's JSON): botocore raises
      ``ResponseParserError``, a ``KeyError`` for the missing ``GetCallerIdentityResult``, or a
      ``ClientError`` with code ``Unknown``: :class:`EndpointNotAws` with the status and type.

    An error AWS itself sends (``InvalidClientTokenId``, ``ExpiredToken``) stays a ClientError:
    its own sentence is the one to read.
    """
    from botocore.exceptions import ClientError, HTTPClientError, SSLError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.parsers import ResponseParserError

    answer: dict[str, str] = {}

    def note(response_dict: dict[str, Any], **_: Any) -> None:
        headers = response_dict.get("headers") or {}
        answer["status"] = str(response_dict.get("status_code", "?"))
        answer["type"] = str(headers.get("content-type") or "no content type")

    sts = conn.client("sts")
    event = "before-parse.sts.GetCallerIdentity"
    sts.meta.events.register(event, note)
    try:
        who = sts.get_caller_identity()
        return Identity(
            account=str(who["Account"]),
            arn=str(who["Arn"]),
            endpoint=conn.endpoint,
            backend=conn.params.backend,
        )
    except SSLError as exc:
        raise EndpointTlsError(
            f"TLS with {conn.endpoint} failed: {_tls_reason(exc)}; "
            + (
                "a lab serves plain http://, so check endpoint_url."
                if conn.params.is_lab
                else "check AWS_CA_BUNDLE and any proxy that intercepts TLS."
            )
        ) from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise EndpointUnreachable(
            f"cannot reach {conn.endpoint}: {_network_reason(exc)}. "
            + (
                "Is the lab still serving there?"
                if conn.params.is_lab
                else "Check the network and the region."
            )
        ) from None
    except (ResponseParserError, KeyError, TypeError) as exc:
        raise _not_aws(conn, answer) from exc
    except ClientError as exc:
        # botocore names an error it could not read after the HTTP status ("404") or "Unknown".
        code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
        if "html" in answer.get("type", "") or code == "Unknown" or code.isdigit():
            raise _not_aws(conn, answer) from exc
        raise
    finally:
        sts.meta.events.unregister(event, note)


def _not_aws(conn: Connection, answer: dict[str, str]) -> EndpointNotAws:
    got = f"HTTP {answer.get('status', '?')}, {answer.get('type', 'no content type')}"
    return EndpointNotAws(
        f"{conn.endpoint} is not an AWS endpoint: it answered sts get-caller-identity with "
        f"something else ({got}); "
        + (
            "check that endpoint_url is a lab's address (python -m runbook_lib.lab serve)."
            if conn.params.is_lab
            else "check the network (a proxy or a captive portal?)."
        )
    )


def _tls_reason(exc: BaseException) -> str:
    """OpenSSL's reason, e.g. ``certificate verify failed: self-signed certificate``."""
    import re

    text = str(exc)
    found = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?)\s*(\(_ssl\.c:\d+\))?$", text)
    return found.group(1) if found else text


def _network_reason(exc: BaseException) -> str:
    """The operating system's reason (``Connection refused``) or botocore's class name."""
    seen: set[int] = set()
    cause: BaseException | None = getattr(exc, "kwargs", {}).get("error") or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror).lower()
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__
