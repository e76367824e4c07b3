"""AWS over HTTP on loopback: moto's WSGI app behind the lab's own wrapper.

The wrapper (:class:`LabApp`)

- serves the lab's control routes under ``/_lab/`` (``POST /_lab/reset``, ``GET /_lab/state``,
  ``POST /_lab/faults`` with a JSON body of knobs);
- tells moto which account answers (the ``x-moto-account-id`` header, so the hosting process's
  environment stays untouched);
- answers a share of calls with the service's throttling error when the knob says so;
- answers an action moto does not implement with HTTP 501 ``NotImplemented`` in the service's
  error shape (a client sees a ClientError it can handle, not an HTML page);
- tells the lab which IAM action each request was, so that it can count the writes;
- holds :data:`MOTO_LOCK` while moto works, because moto is not thread-safe and the
  scheduler thread edits the same objects;
- answers a request signed for a region moto cannot hold with AWS's own refusal ("Credential
  should be scoped to a valid region"), never a 500;
- is closed to web pages (:mod:`runbook_lib.lab.guard`): only its own loopback Host, no foreign
  ``Origin``, no cross-site fetch, no CORS header on any answer, no unsigned AWS request, and
  the control routes want a JSON body and the lab's token.

:class:`LabServer` binds 127.0.0.1 only and leaves no thread or socket behind when it stops.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import threading
from collections.abc import Callable, Iterable
from html import escape
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

from runbook_lib.lab.backends import MOTO_LOCK
from runbook_lib.lab.errors import LabConfigError, PortInUse
from runbook_lib.lab.faults import THROTTLED_SERVICES, ErrorResponse, throttling_error
from runbook_lib.lab.guard import browser_refusal, control_refusal
from runbook_lib.regions import aws_regions

HOST = "127.0.0.1"
StartResponse = Callable[..., Any]
Request = socket.socket | tuple[bytes, socket.socket]


class Controls(Protocol):
    """What the control routes drive (the :class:`~runbook_lib.lab.Lab`)."""

    account_id: str
    #: The per-lab secret the control routes want in the ``X-Lab-Token`` header.
    token: str

    def reset(self) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def set_faults(self, **knobs: Any) -> Any: ...

    def after_request(self, service: str, operation: str) -> None: ...

    def throttle_now(self) -> bool: ...

    def request_id(self) -> str: ...


def signing_service(environ: dict[str, Any]) -> str:
    """The service a SigV4-signed request is for (its credential scope), or ``""``."""
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    try:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
        return scope.split("/")[3].lower()
    except IndexError:
        return ""


def signing_region(environ: dict[str, Any]) -> str:
    """The region a SigV4-signed request is scoped to (its credential scope), or ``""``."""
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    try:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
        return scope.split("/")[2]
    except IndexError:
        return ""


def json_operation(environ: dict[str, Any]) -> str:
    """The operation of a JSON-protocol request (``X-Amz-Target: DynamoDB_20120810.Query``)."""
    return str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]


#: Services whose requests name the action in a form body (``Action=PutRolePolicy``).
QUERY_SERVICES = frozenset({"iam", "sts"})


def query_action(environ: dict[str, Any]) -> str:
    """The ``Action`` of a query-protocol request; the body stays readable for moto."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length <= 0:
        return ""
    raw = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    return str(parse_qs(raw.decode("utf-8", "replace")).get("Action", [""])[0])


def not_implemented_error(service: str, message: str) -> tuple[bytes, int, dict[str, str]]:
    """HTTP 501 ``NotImplemented`` in ``service``'s error shape (botocore does not retry it)."""
    return service_error(service, 501, "NotImplemented", message)


def service_error(
    service: str, status: int, code: str, message: str, *, json_code: str | None = None
) -> tuple[bytes, int, dict[str, str]]:
    """An error in ``service``'s shape: query services (IAM, STS) XML, the others JSON."""
    if service in QUERY_SERVICES or service == "ec2":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>lab</RequestId></ErrorResponse>"
        ).encode()
        return body, status, {"Content-Type": "text/xml"}
    body = json.dumps({"__type": json_code or code, "message": message}).encode()
    return body, status, {"Content-Type": "application/x-amz-json-1.1"}


def region_error(service: str, region: str) -> tuple[bytes, int, dict[str, str]]:
    """AWS's answer to a request signed for a region it does not have: HTTP 403,
    ``SignatureDoesNotMatch`` from query services, ``InvalidSignatureException`` from JSON ones,
    "Credential should be scoped to a valid region" (Amazon EKS user guide, "Pod containers
    receive the following error", security-iam-troubleshoot-wrong-sts-endpoint; the ", not
    'REGION'" form is what AWS sends, as SDK issues quote it)."""
    return service_error(
        service,
        403,
        "SignatureDoesNotMatch",
        f"Credential should be scoped to a valid region, not {region!r}.",
        json_code="InvalidSignatureException",
    )


def unsigned_error(environ: dict[str, Any]) -> tuple[bytes, int, dict[str, str]]:
    """AWS's answer to a request without a signature (IAM API Reference, Common Errors:
    ``MissingAuthenticationToken``, HTTP 403), in the JSON shape when ``X-Amz-Target`` says so."""
    service = "dynamodb" if environ.get("HTTP_X_AMZ_TARGET") else "iam"
    return service_error(
        service,
        403,
        "MissingAuthenticationToken",
        "The request must contain either a valid (registered) AWS access key ID or X.509 "
        "certificate.",
    )


def backend_app(service: Any) -> Any:
    """moto's Flask app for ``service``: actions moto lacks answered by a 501, regions it
    cannot hold by AWS's region error instead of a 500."""
    from flask import request
    from moto.moto_server.werkzeug_app import create_backend_app

    app = create_backend_app(service)
    app.register_error_handler(
        NotImplementedError,
        lambda exc: not_implemented_error(str(service), f"the lab does not implement this: {exc}"),
    )

    def unknown_region(exc: KeyError) -> Any:
        # moto's AccountSpecificBackend raises KeyError(region) for a region botocore has no
        # endpoint for; any other KeyError is a bug and stays a 500.
        region = signing_region(request.environ)
        if region and exc.args == (region,):
            return region_error(signing_service(request.environ) or str(service), region)
        raise exc

    app.register_error_handler(KeyError, unknown_region)
    return app


class LabApp:
    """The WSGI application the lab serves (moto inside)."""

    def __init__(self, controls: Controls) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        self.controls = controls
        self.moto = DomainDispatcherApplication(backend_app)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = browser_refusal(environ)
        if refused is not None:
            return _json(start_response, 403, {"error": refused})
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/_lab/"):
            return self._control(environ, start_response)
        if path.startswith("/moto-api"):
            # moto's own dashboard and reset: the lab's control routes stand in for them.
            return _json(start_response, 404, {"error": "no such route; the lab's are /_lab/*"})
        service = signing_service(environ)
        if not service or "X-Amz-Credential=" in str(environ.get("QUERY_STRING", "")):
            # boto3 and the aws CLI sign every call in the Authorization header; a request
            # without one (or signed in a URL a page could embed) is refused as AWS would.
            return _send_shaped(start_response, unsigned_error(environ))
        region = signing_region(environ)
        if region not in aws_regions():
            # AWS refuses a credential scoped to a region it does not have, for every service
            # (global ones too); moto would answer IAM and STS, and 500 the regional services.
            return _send_shaped(start_response, region_error(service, region))
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self.controls.account_id
        operation = query_action(environ) if service in QUERY_SERVICES else json_operation(environ)
        if service in THROTTLED_SERVICES and self.controls.throttle_now():
            error = throttling_error(service, operation, self.controls.request_id())
            if error is not None:
                return _send(start_response, error)
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers, exc_info]
            return lambda data: None

        with MOTO_LOCK:
            result = self.moto(environ, capture)
            try:
                # Read the whole answer while holding the lock: moto may serialise lazily.
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            self.controls.after_request(service, operation)
        status, headers, exc_info = captured
        # moto (flask-cors) allows any origin; the lab allows none (AWS-FACTS §11).
        kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
        start_response(status, kept, exc_info)
        return [body]

    # --- /_lab/ -----------------------------------------------------------------------------

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = control_refusal(environ, self.controls.token)
        if refused is not None:
            return _json(start_response, refused[0], {"error": refused[1]})
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "")).rstrip("/")
        try:
            if path == "/_lab/state" and method == "GET":
                return _json(start_response, 200, self.controls.state())
            if path == "/_lab/reset" and method == "POST":
                self.controls.reset()
                return _json(start_response, 200, {"reset": True, **self.controls.state()})
            if path == "/_lab/faults" and method in ("POST", "PUT"):
                knobs = _read_json(environ)
                faults = self.controls.set_faults(**knobs)
                return _json(start_response, 200, {"faults": faults.as_dict()})
        except LabConfigError as exc:
            return _json(start_response, 400, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            return _json(start_response, 400, {"error": f"bad request: {exc}"})
        routes = "GET /_lab/state, POST /_lab/reset, POST /_lab/faults"
        return _json(start_response, 404, {"error": f"no such lab route; try {routes}"})


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object of fault knobs")
    unknown = [k for k in data if not isinstance(k, str)]
    if unknown:
        raise ValueError("knob names are strings")
    return data


def _json(start_response: StartResponse, status: int, data: dict[str, Any]) -> list[bytes]:
    body = json.dumps(data, default=str).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _send_shaped(
    start_response: StartResponse, answer: tuple[bytes, int, dict[str, str]]
) -> list[bytes]:
    body, status, headers = answer
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [*headers.items(), ("Content-Length", str(len(body)))],
    )
    return [body]


def _send(start_response: StartResponse, error: ErrorResponse) -> list[bytes]:
    headers = [*error.headers, ("Content-Length", str(len(error.body)))]
    start_response(error.status_line, headers)
    return [error.body]


class LabServer:
    """A threaded HTTP server on 127.0.0.1 for one WSGI app."""

    def __init__(
        self, make_app: Callable[[], Callable[..., Iterable[bytes]]], port: int = 0
    ) -> None:
        # The socket is bound before the app is built, so that a busy port fails fast.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {HOST} is in use; pick another with --port, or 0 for a free one"
                ) from None
            raise
        # werkzeug's own binding prints to stderr and calls sys.exit on a busy port; handing it
        # a socket bound here keeps errors ours.
        try:
            self._server = _make_server(make_app(), sock)
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"lab-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end open connections, wait for every thread; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.close_connections()


def _make_server(app: Callable[..., Iterable[bytes]], sock: socket.socket) -> Any:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import ThreadedWSGIServer

    class QuietHandler(MotoRequestHandler):
        """moto's request handler without a log line per request on stderr."""

        protocol_version = "HTTP/1.1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    class Server(ThreadedWSGIServer):
        """Tracks its connection threads so that stopping can end and join them."""

        def __init__(self) -> None:
            super().__init__(HOST, 0, app, QuietHandler, fd=sock.fileno())
            self._conn_lock = threading.Lock()
            self._conns: dict[threading.Thread, Request] = {}

        def process_request(self, request: Request, client_address: Any) -> None:
            thread = threading.Thread(
                target=self._serve_one,
                args=(request, client_address),
                name="lab-http-conn",
                daemon=True,
            )
            with self._conn_lock:
                self._conns[thread] = request
            thread.start()

        def _serve_one(self, request: Request, client_address: Any) -> None:
            try:
                self.process_request_thread(request, client_address)
            finally:
                with self._conn_lock:
                    self._conns.pop(threading.current_thread(), None)

        def close_connections(self) -> None:
            with self._conn_lock:
                open_conns = list(self._conns.items())
            for _, conn in open_conns:
                if isinstance(conn, socket.socket):
                    # Wakes a thread waiting for the next request on a kept-alive connection.
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            for thread, _ in open_conns:
                thread.join(timeout=5)

    return Server()
