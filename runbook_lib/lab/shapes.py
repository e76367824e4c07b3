"""Every answer the lab sends, held to botocore's output shape for its operation.

A lab answer that AWS could not send is a bug: the runbook would pass against the lab and fail on
AWS. botocore's ``Stubber`` refuses a response it is given that does not fit the operation's
output shape (``Stubber._validate_operation_response``: ``validate_parameters(response,
output_shape)`` after dropping ``ResponseMetadata``). The lab does the same with what goes over
the wire, in three steps:

1. parse the body with botocore's parser for the protocol a client resolves for the service
   (``ServiceModel.resolved_protocol``: ``query`` for IAM and STS, ``ec2``, ``json`` for ECS,
   Logs and DynamoDB), as a client would; a body it cannot parse is a problem;
2. :class:`botocore.validate.ParamValidator` on the parsed result against the operation's output
   shape (required members, types, minimum lengths), as the Stubber does;
3. what the parser and the validator let pass: a value outside the member's ``enum``, and, for
   the JSON protocol, a member the shape does not have (the parser drops it silently, but AWS
   sends only modelled members).

An error answer (HTTP status 300 or more) must parse to an ``Error`` with a ``Code``, as
botocore needs to raise a ``ClientError`` (an HTML page or an empty body would not).

The models are botocore's own (``botocore/data/<service>/``), read once per process and shared:
they hold no account or region.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: How many problems a lab keeps (the first ones matter: one bug repeats on every answer).
KEEP_PROBLEMS = 50

#: Numeric shapes whose model ``min`` AWS itself does not honour in its answers (the model's
#: constraint is the request's): (service, shape name) -> where AWS is seen sending less.
#: The Stubber would refuse these real answers; the lab accepts them, and nothing below 0.
AWS_SENDS_BELOW_MIN: dict[tuple[str, str], str] = {
    ("dynamodb", "PositiveLongObject"): (
        "aws CLI examples: describe-table.rst (ProvisionedThroughput.NumberOfDecreasesToday 0), "
        "create-table.rst (ReadCapacityUnits 0 for a PAY_PER_REQUEST table)"
    ),
}

_models_lock = threading.Lock()
_models: dict[str, Any] = {}


@dataclass(frozen=True)
class ShapeProblem:
    """One answer AWS could not have sent: which call, and what is wrong with it."""

    service: str
    operation: str
    status: int
    problem: str

    def __str__(self) -> str:
        return f"{self.service}:{self.operation} (HTTP {self.status}): {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "operation": self.operation,
            "status": self.status,
            "problem": self.problem,
        }


def service_model(service: str) -> Any:
    """botocore's model of ``service`` (a signing name: iam, sts, ecs, logs, dynamodb, ec2)."""
    with _models_lock:
        found = _models.get(service)
        if found is None:
            import botocore.session

            found = botocore.session.get_session().get_service_model(service)
            _models[service] = found
        return found


def check_answer(
    service: str,
    operation: str,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> list[ShapeProblem]:
    """What is wrong with one answer, as AWS's model of ``service``/``operation`` sees it
    (an empty list when nothing is)."""
    from botocore.exceptions import UnknownServiceError

    def problem(text: str) -> list[ShapeProblem]:
        return [ShapeProblem(service, operation or "(none)", status, text)]

    try:
        model = service_model(service)
    except UnknownServiceError:
        return problem(f"no botocore model for service {service!r}")
    if operation not in model.operation_names:
        return problem(f"{operation!r} is no operation of {service}")
    shape = model.operation_model(operation).output_shape
    try:
        parsed = _parse(model.resolved_protocol, status, headers, body, shape)
    except Exception as exc:  # botocore's parsers raise many kinds
        return problem(f"botocore cannot parse the body: {type(exc).__name__}: {exc}")
    if status >= 300:
        # botocore's generic fallback names a body it cannot read by the HTTP status alone.
        code = (parsed.get("Error") or {}).get("Code")
        if code and code != str(status):
            return []
        return problem(f"an error answer without an error code: {body[:200]!r}")
    found = [*_validate(service, parsed, shape), *_enums(service, parsed, shape, "")]
    if model.resolved_protocol == "json" and shape is not None and body.strip():
        try:
            raw = json.loads(body)
        except ValueError:
            raw = None
        found += _unmodelled(raw, shape, "")
    return [ShapeProblem(service, operation, status, text) for text in found]


def _parse(
    protocol: str, status: int, headers: Iterable[tuple[str, str]], body: bytes, shape: Any
) -> dict[str, Any]:
    from botocore.parsers import create_parser
    from urllib3._collections import HTTPHeaderDict

    answer = {"status_code": status, "headers": HTTPHeaderDict(list(headers)), "body": body}
    parsed: dict[str, Any] = create_parser(protocol).parse(answer, shape)
    return parsed


def _validate(service: str, parsed: dict[str, Any], shape: Any) -> list[str]:
    response = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
    if shape is None:
        return [f"the operation returns nothing, but the answer holds {sorted(response)}"] * bool(
            response
        )
    report = _validator(service).validate(response, shape)
    if not report.has_errors():
        return []
    lines = report.generate_report().splitlines()
    return [line.strip().replace(" in input:", ":") for line in lines if line.strip()]


#: Enum values AWS itself sends outside botocore's enum: (service, shape name) -> values, with
#: where AWS documents it.
AWS_SENDS_OUTSIDE_ENUM: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("ec2", "PlatformValues"): (
        frozenset({"windows"}),
        "EC2 API Reference, Image.platform: 'This value is set to windows for Windows AMIs; "
        "otherwise, it is blank.' (the model's enum says 'Windows')",
    ),
}


def _validator(service: str) -> Any:
    """botocore's ParamValidator, but numbers of :data:`AWS_SENDS_BELOW_MIN` may go down to 0."""
    from botocore.validate import ParamValidator

    class OutputValidator(ParamValidator):
        def _validate_long(self, param: Any, shape: Any, errors: Any, name: str) -> None:
            lenient = (service, shape.name) in AWS_SENDS_BELOW_MIN
            if lenient and isinstance(param, int) and not isinstance(param, bool) and param >= 0:
                return
            super()._validate_long(param, shape, errors, name)  # type: ignore[misc]

    return OutputValidator()


def _enums(service: str, value: Any, shape: Any, path: str) -> list[str]:
    """Values outside a member's ``enum`` (the validator does not look at enums)."""
    if shape is None or value is None:
        return []
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        return [
            problem
            for name, member in shape.members.items()
            if name in value
            for problem in _enums(service, value[name], member, f"{path}.{name}" if path else name)
        ]
    if kind == "list" and isinstance(value, list):
        return [
            p for i, v in enumerate(value) for p in _enums(service, v, shape.member, f"{path}[{i}]")
        ]
    if kind == "map" and isinstance(value, Mapping):
        return [
            p for k, v in value.items() for p in _enums(service, v, shape.value, f"{path}[{k!r}]")
        ]
    allowed = getattr(shape, "enum", None)
    also = AWS_SENDS_OUTSIDE_ENUM.get((service, shape.name), (frozenset(), ""))[0]
    if kind == "string" and allowed and value not in allowed and value not in also:
        return [f"{path}: {value!r} is not one of the model's values for {shape.name}"]
    return []


def _unmodelled(value: Any, shape: Any, path: str) -> list[str]:
    """Members of a JSON answer that its shape does not have."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        found = []
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            member = shape.members.get(name)
            if member is None:
                found.append(f"{where}: no such member of {shape.name}")
            else:
                found += _unmodelled(item, member, where)
        return found
    if kind == "list" and isinstance(value, list):
        return [
            p for i, v in enumerate(value) for p in _unmodelled(v, shape.member, f"{path}[{i}]")
        ]
    if kind == "map" and isinstance(value, dict):
        return [p for k, v in value.items() for p in _unmodelled(v, shape.value, f"{path}[{k!r}]")]
    return []
