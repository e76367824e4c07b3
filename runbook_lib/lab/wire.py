"""The request in hand, and the answer on its way out: the lab's outermost WSGI layer.

:class:`WireApp` wraps the lab's app (:class:`runbook_lib.lab.server.LabApp`, moto inside). For
each AWS request it

- names the request (service, operation, and for the JSON protocol its parameters) in a
  thread-local that the lab's overrides of moto read with :func:`current_request`: an IAM read
  that may answer stale (``GetRolePolicy``) must know it is that read and not a write that calls
  the same backend method, and moto's Logs backend is not handed ``logStreamNamePrefix``;
- when the lab validates its answers, holds each one to botocore's output shape
  (:func:`runbook_lib.lab.shapes.check_answer`) and reports what AWS could not have sent; the
  answer itself is sent unchanged, so that a client sees what the lab really said.

Control routes (``/_lab/``), requests that name no AWS service (no SigV4 credential scope) and
requests the lab refuses as a web page's (:func:`runbook_lib.lab.guard.browser_refusal`) pass
through untouched.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.lab.shapes import ShapeProblem, check_answer


@dataclass(frozen=True)
class Request:
    """The AWS request a thread is serving."""

    service: str = ""
    operation: str = ""
    #: The request's parameters, for the JSON protocol (ECS, Logs, DynamoDB); empty otherwise.
    params: dict[str, Any] = field(default_factory=dict)


_current = threading.local()


def current_request() -> Request:
    """The request this thread serves (an empty one outside a request: the scheduler's)."""
    found: Request = getattr(_current, "request", None) or Request()
    return found


class WireApp:
    """The lab's outermost WSGI layer (see the module docstring)."""

    def __init__(
        self, app: Any, report: Callable[[list[ShapeProblem]], None] | None = None
    ) -> None:
        self.app = app
        self.report = report

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        from runbook_lib.lab.guard import browser_refusal
        from runbook_lib.lab.server import (
            QUERY_SERVICES,
            json_operation,
            query_action,
            signing_service,
        )

        service = signing_service(environ)
        lab_route = str(environ.get("PATH_INFO", "")).startswith("/_lab/")
        if not service or lab_route or browser_refusal(environ) is not None:
            # Not AWS's to answer: the lab's routes, and what the lab refuses to web pages.
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if service in QUERY_SERVICES or service == "ec2":  # EC2's protocol is a query one too
            request = Request(service, query_action(environ))
        else:
            request = Request(service, json_operation(environ), _json_params(environ))
        _current.request = request
        try:
            if self.report is None or not request.operation:
                # A request naming no operation is no API call a client makes: nothing to hold
                # its answer to.
                return self._plain(environ, start_response)
            return self._checked(request, environ, start_response)
        finally:
            _current.request = None

    def _plain(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # The whole answer is read while the request is current: moto may answer lazily.
        result = self.app(environ, start_response)
        try:
            return [b"".join(result)]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _checked(
        self, request: Request, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        assert self.report is not None
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers, exc_info]
            return lambda data: None

        [body] = self._plain(environ, capture)
        status, headers, exc_info = captured
        code = int(status.split()[0])
        problems = check_answer(request.service, request.operation, code, headers, body)
        if problems:
            self.report(problems)
        start_response(status, headers, exc_info)
        return [body]


def _json_params(environ: dict[str, Any]) -> dict[str, Any]:
    """A JSON-protocol request's body, read and put back for moto."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length <= 0:
        return {}
    raw = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        params = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}
