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
  scheduler thread edits the same objects.

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
from typing import Any, Protocol
from urllib.parse import parse_qs

from runbook_lib.lab.backends import MOTO_LOCK
from runbook_lib.lab.errors import LabConfigError, PortInUse
from runbook_lib.lab.faults import THROTTLED_SERVICES, ErrorResponse, throttling_error

HOST = "127.0.0.1"
StartResponse = Callable[..., Any]
Request = socket.socket | tuple[bytes, socket.socket]


class Controls(Protocol):
    """What the control routes drive (the :class:`~runbook_lib.lab.Lab`)."""

    account_id: str

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
    if service in QUERY_SERVICES or service == "ec2":
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>NotImplemented</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>lab</RequestId></ErrorResponse>"
        ).encode()
        return body, 501, {"Content-Type": "text/xml"}
    body = json.dumps({"__type": "NotImplemented", "message": message}).encode()
    return body, 501, {"Content-Type": "application/x-amz-json-1.1"}


def backend_app(service: Any) -> Any:
    """moto's Flask app for ``service``, with actions moto lacks answered by a 501."""
    from moto.moto_server.werkzeug_app import create_backend_app

    app = create_backend_app(service)
    app.register_error_handler(
        NotImplementedError,
        lambda exc: not_implemented_error(str(service), f"the lab does not implement this: {exc}"),
    )
    return app


class LabApp:
    """The WSGI application the lab serves (moto inside)."""

    def __init__(self, controls: Controls) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        self.controls = controls
        self.moto = DomainDispatcherApplication(backend_app)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith("/_lab/"):
            return self._control(environ, start_response)
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self.controls.account_id
        service = signing_service(environ)
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
        start_response(status, headers, exc_info)
        return [body]

    # --- /_lab/ -----------------------------------------------------------------------------

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
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
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
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
