"""The simulated carts app (Spring Boot, ``SPRING_PROFILES_ACTIVE=dynamodb``) inside a task.

What it does is what WORKSHOP.md says the real one does: at start-up one ``Query`` on the
customer index; denied, it prints Spring Boot's failure report and exits with code 1. Allowed,
it serves shoppers: ``Query``, ``GetItem``, ``PutItem``, ``UpdateItem``, ``DeleteItem``, each
decided first by :func:`runbook_lib.iam_eval.evaluate` against the task role's effective
policies (as they were ``propagation_delay_s`` ago), then run on moto's DynamoDB backend.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from runbook_lib.access_denied import assumed_role_arn
from runbook_lib.carts import CARTS_CALLS, STARTUP_CUSTOMER_ID, resource_for
from runbook_lib.lab.backends import Backends
from runbook_lib.lab.clock import Clock
from runbook_lib.lab.logstream import LogWriter
from runbook_lib.lab.policies import RoleState, decide, denial
from runbook_lib.params import Params

_SPRING_VERSION = "0.8.0"
_MAIN = "[           main]"

#: Simulated seconds from container start to the start-up query, and between shopper actions.
STARTUP_S = (3.0, 4.0, 4.0)
ACTIVITY_EVERY_S = 4.0
#: The cart table stays around this size: shoppers remove items when it is full.
MAX_ITEMS = 40


@dataclass(frozen=True)
class AppContext:
    """What the lab hands a carts app: where things are, and how to decide and log."""

    params: Params
    role_name: str  # the task role (from the task definition)
    backends: Backends
    logs: LogWriter
    policies: Callable[[], RoleState]  # the task role as the app's calls are decided by it
    request_ids: random.Random
    shoppers: random.Random
    catalog: tuple[tuple[str, str], ...]  # (itemId, unitPrice)
    customers: tuple[str, ...]
    clock: Clock  # what time it is (AWS's timestamps, the log's, the request context's)
    partition: str = "aws"  # of the lab's region: ARNs in aws-cn read arn:aws-cn:...


class Denied(Exception):
    """A DynamoDB call the task role may not make; the message is AWS's sentence."""


class DynamoError(Exception):
    """Any other error DynamoDB answers (e.g. the table does not exist)."""


class CartsApp:
    """One run of the carts container; :meth:`run` is its process."""

    def __init__(self, ctx: AppContext, task_id: str, stream: str) -> None:
        self.ctx = ctx
        self.task_id = task_id
        self.stream = stream
        self.ready = False
        p = ctx.params
        self.principal = assumed_role_arn(
            p.lab_account_id, ctx.role_name, task_id, partition=ctx.partition
        )
        self._calls = {c.operation: c for c in CARTS_CALLS}

    # --- the process ------------------------------------------------------------------------

    def run(self) -> Generator[float, None, int]:
        """Start up, then serve shoppers until stopped; returns the exit code if it exits."""
        self._info(*_STARTING)
        yield STARTUP_S[0]
        self._info(*_CONTEXT)
        yield STARTUP_S[1]
        try:
            self._query(STARTUP_CUSTOMER_ID)
        except (Denied, DynamoError) as exc:
            self._fail_startup(str(exc))
            return 1
        yield STARTUP_S[2]
        started = sum(STARTUP_S) + 1.2
        self._info(
            *_STARTED,
            (
                "c.a.sample.carts.CartApplication",
                f"Started CartApplication in {started:.3f} seconds "
                f"(process running for {started + 0.8:.3f})",
            ),
        )
        self.ready = True
        worker = 0
        while True:
            yield ACTIVITY_EVERY_S
            worker = worker % 10 + 1
            try:
                self._shop()
            except (Denied, DynamoError) as exc:
                self._log_request_failure(worker, str(exc))

    # --- what a shopper does ----------------------------------------------------------------

    def _shop(self) -> None:
        rng = self.ctx.shoppers
        customer = rng.choice(self.ctx.customers)
        item_id, price = rng.choice(self.ctx.catalog)
        full = self._table_size()
        roll = rng.random()
        key = {"id": {"S": f"{customer}:{item_id}"}}
        if roll < 0.2 or (full >= MAX_ITEMS and roll < 0.7):
            cart = self._query(customer)
            if cart:
                victim = rng.choice(cart)
                self._call(
                    "DeleteItem",
                    lambda: self._db.delete_item(self.ctx.params.table, {"id": victim["id"]}),
                )
        elif roll < 0.4:
            self._query(customer)
        else:
            found = self._call("GetItem", lambda: self._db.get_item(self.ctx.params.table, key))
            if found is None:
                item = {
                    "id": {"S": f"{customer}:{item_id}"},
                    "customerId": {"S": customer},
                    "itemId": {"S": item_id},
                    "quantity": {"N": str(rng.randint(1, 3))},
                    "unitPrice": {"N": price},
                }
                self._call("PutItem", lambda: self._db.put_item(self.ctx.params.table, item))
            else:
                quantity = str(min(int(found.attrs["quantity"].value) + 1, 9))
                self._call(
                    "UpdateItem",
                    lambda: self._db.update_item(
                        self.ctx.params.table, key, "SET quantity = :q", {}, {":q": {"N": quantity}}
                    ),
                )

    @property
    def _db(self) -> Any:
        return self.ctx.backends.dynamodb

    def _table_size(self) -> int:
        # The lab peeks at the table to keep it at a readable size; the app makes no call.
        table = self._db.tables.get(self.ctx.params.table)
        return len(table.items) if table is not None else 0

    def _query(self, customer: str) -> list[dict[str, Any]]:
        p = self.ctx.params

        def query() -> list[dict[str, Any]]:
            items, _, _ = self._db.query(
                p.table,
                None,
                None,
                [],
                None,
                None,
                True,
                None,
                index_name=p.index,
                hash_key_conditions=[("customerId", {"S": customer})],
            )
            return [item.to_json()["Attributes"] for item in items]

        result: list[dict[str, Any]] = self._call("Query", query)
        return result

    def _call(self, operation: str, run: Callable[[], Any]) -> Any:
        """Decide ``operation`` as IAM would, then run it; raise Denied or DynamoError."""
        call = self._calls[operation]
        p = self.ctx.params
        resource = resource_for(call, p.region, p.lab_account_id, p.table, p.index)
        decision = decide(self.ctx.policies(), call.action, resource, self._context())
        if not decision.allowed:
            raise Denied(self._sdk_message(denial(decision, self.principal)))
        try:
            return run()
        except Exception as exc:
            if type(exc).__module__.startswith("moto."):
                raise DynamoError(self._sdk_message(getattr(exc, "message", str(exc)))) from None
            raise

    def _context(self) -> dict[str, Any]:
        p = self.ctx.params
        return {
            "aws:PrincipalArn": (
                f"arn:{self.ctx.partition}:iam::{p.lab_account_id}:role/{self.ctx.role_name}"
            ),
            "aws:PrincipalAccount": p.lab_account_id,
            "aws:PrincipalType": "AssumedRole",
            "aws:RequestedRegion": p.region,
            "aws:SecureTransport": True,
            "aws:CurrentTime": self.ctx.clock.now(),
            "aws:EpochTime": int(self.ctx.clock.now().timestamp()),
            "aws:ViaAWSService": False,
        }

    def _sdk_message(self, message: str) -> str:
        # The AWS SDK for Java v2 appends the service, status and request id to the message.
        request_id = "".join(self.ctx.request_ids.choices(_ID_ALPHABET, k=52))
        return f"{message} (Service: DynamoDb, Status Code: 400, Request ID: {request_id})"

    # --- what it prints ---------------------------------------------------------------------

    def _fail_startup(self, message: str) -> None:
        exception = f"software.amazon.awssdk.services.dynamodb.model.DynamoDbException: {message}"
        self._log(
            "WARN",
            _MAIN,
            "ConfigServletWebServerApplicationContext",
            "Exception encountered during context initialization - cancelling refresh attempt: "
            "org.springframework.beans.factory.UnsatisfiedDependencyException: Error creating "
            "bean with name 'cartsController': Unsatisfied dependency expressed through field "
            f"'service': {exception}",
        )
        self._log(
            "INFO", _MAIN, "o.apache.catalina.core.StandardService", "Stopping service [Tomcat]"
        )
        self._log(
            "INFO",
            _MAIN,
            ".s.b.a.l.ConditionEvaluationReportLogger",
            "\n\nError starting ApplicationContext. To display the condition evaluation "
            "report re-run your application with 'debug' enabled.",
        )
        self._log("ERROR", _MAIN, "o.s.b.d.LoggingFailureAnalysisReporter", "")
        self.ctx.logs.write(self.stream, failure_report(message))

    def _log_request_failure(self, worker: int, message: str) -> None:
        thread = f"[nio-8080-exec-{worker}]".rjust(len(_MAIN))
        self._log(
            "ERROR",
            thread,
            "o.a.c.c.C.[.[.[/].[dispatcherServlet]",
            "Servlet.service() for servlet [dispatcherServlet] in context with path [] threw "
            "exception [Request processing failed: software.amazon.awssdk.services.dynamodb."
            f"model.DynamoDbException: {message}] with root cause",
        )
        self.ctx.logs.write(
            self.stream,
            f"software.amazon.awssdk.services.dynamodb.model.DynamoDbException: {message}",
            "\tat software.amazon.awssdk.services.dynamodb.DefaultDynamoDbClient"
            ".query(DefaultDynamoDbClient.java:4318)",
        )

    def _info(self, *lines: tuple[str, str]) -> None:
        for logger, message in lines:
            self._log("INFO", _MAIN, logger, message)

    def _log(self, level: str, thread: str, logger: str, message: str) -> None:
        stamp = self.ctx.clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = f"{stamp} {level:>5} 1 --- [carts] {thread} {logger:<40} : {message}"
        self.ctx.logs.write(self.stream, line)


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# Spring Boot's start-up lines, (logger, message), in three bursts: the JVM starts, the web
# context initialises (then the app queries DynamoDB), the server is up.
_STARTING = (
    (
        "c.a.sample.carts.CartApplication",
        f"Starting CartApplication v{_SPRING_VERSION} using Java 21.0.4 with PID 1 "
        "(/app/app.jar started by appuser in /app)",
    ),
    ("c.a.sample.carts.CartApplication", 'The following 1 profile is active: "dynamodb"'),
)
_CONTEXT = (
    ("o.s.b.w.embedded.tomcat.TomcatWebServer", "Tomcat initialized with port 8080 (http)"),
    ("o.apache.catalina.core.StandardService", "Starting service [Tomcat]"),
    ("o.apache.catalina.core.StandardEngine", "Starting Servlet engine: [Apache Tomcat/10.1.28]"),
    ("o.a.c.c.C.[Tomcat].[localhost].[/]", "Initializing Spring embedded WebApplicationContext"),
    (
        "w.s.c.ServletWebServerApplicationContext",
        "Root WebApplicationContext: initialization completed in 2874 ms",
    ),
)
_STARTED = (
    ("o.s.b.a.e.web.EndpointLinksResolver", "Exposing 1 endpoint beneath base path '/actuator'"),
    (
        "o.s.b.w.embedded.tomcat.TomcatWebServer",
        "Tomcat started on port 8080 (http) with context path '/'",
    ),
)


def failure_report(message: str) -> str:
    """Spring Boot's failure report for an error the DynamoDB client raised at start-up."""
    return (
        "\n***************************\nAPPLICATION FAILED TO START\n***************************\n"
        "\nDescription:\n\nAn error occurred when accessing Amazon DynamoDB:\n\n"
        f"{message}\n\nAction:\n\nCheck that the DynamoDB table has been created and your IAM "
        "credentials are configured with the appropriate access.\n"
    )


def make_catalog(rng: random.Random, size: int = 12) -> tuple[tuple[str, str], ...]:
    """Item ids (UUID-like) and unit prices for the shop, from the lab's seed."""
    items = []
    for _ in range(size):
        h = f"{rng.getrandbits(128):032x}"
        item_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        items.append((item_id, str(rng.choice((15, 24, 32, 45, 58, 79, 120, 250)))))
    return tuple(items)


def make_customers(rng: random.Random, size: int = 6) -> tuple[str, ...]:
    """Shopper ids (what the UI keeps in its session cookie), from the lab's seed."""
    return tuple(f"{rng.getrandbits(64):016x}" for _ in range(size))
