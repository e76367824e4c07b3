"""Fault knobs and the failures they produce, worded as AWS words them.

Two kinds live here, both pure (no moto):

- throttling: the error a service answers when it throttles a caller, in that service's protocol
  shape, so that botocore's retry logic recognises it and backs off;
- start failures: how a task fails before its application runs (stop code ``TaskFailedToStart``).
  Each is a small scenario object; adding one is a function and a line in :data:`START_FAILURES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from runbook_lib.access_denied import NO_ALLOW, DenialKind, assumed_role_arn, format_access_denied
from runbook_lib.lab.errors import LabConfigError
from runbook_lib.partitions import arn

# --- throttling -----------------------------------------------------------------------------

# DynamoDB answers data-plane throttling with ProvisionedThroughputExceededException and
# control-plane throttling with ThrottlingException; botocore retries both.
_DYNAMODB_DATA_PLANE = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
_JSON_CONTENT_TYPE = {"dynamodb": "application/x-amz-json-1.0"}
_QUERY_NAMESPACE = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}

#: Services the throttle knob applies to (signing names).
THROTTLED_SERVICES = frozenset({"iam", "sts", "logs", "ecs", "dynamodb", "ec2"})


@dataclass(frozen=True)
class ErrorResponse:
    """An HTTP error answer: status, headers and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def status_line(self) -> str:
        reason = {400: "Bad Request", 503: "Service Unavailable"}.get(self.status, "Error")
        return f"{self.status} {reason}"


def throttling_error(service: str, operation: str, request_id: str) -> ErrorResponse | None:
    """The throttling error ``service`` answers for ``operation``; None if not modelled.

    >>> throttling_error("ecs", "DescribeTasks", "r-1").body
    b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
    """
    if service in ("iam", "sts"):
        # Query protocol: IAM and STS name the code "Throttling" (botocore retries it).
        xml = (
            f'<ErrorResponse xmlns="{_QUERY_NAMESPACE[service]}"><Error><Type>Sender</Type>'
            "<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return ErrorResponse(
            400, (("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)), xml.encode()
        )
    if service == "ec2":
        xml = (
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
            "<Message>Request limit exceeded.</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        return ErrorResponse(503, (("Content-Type", "text/xml"),), xml.encode())
    if service in ("ecs", "logs"):
        code, message = "ThrottlingException", "Rate exceeded"
    elif service == "dynamodb":
        if operation in _DYNAMODB_DATA_PLANE:
            code = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
            message = (
                "The level of configured provisioned throughput for the table was exceeded. "
                "Consider increasing your provisioning level with the UpdateTable API."
            )
        else:
            code = "com.amazonaws.dynamodb.v20120810#ThrottlingException"
            message = "Rate of requests exceeds the allowed throughput."
    else:
        return None
    body = json.dumps({"__type": code, "message": message}).encode()
    content_type = _JSON_CONTENT_TYPE.get(service, "application/x-amz-json-1.1")
    return ErrorResponse(
        400, (("Content-Type", content_type), ("x-amzn-RequestId", request_id)), body
    )


# --- start failures -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFacts:
    """What a start-failure scenario may name in its message."""

    account_id: str
    region: str
    task_id: str
    image: str
    execution_role: str
    log_group: str
    log_stream: str

    @property
    def stream_arn(self) -> str:
        """The log stream's ARN (what IAM decides ``logs:CreateLogStream`` on)."""
        return arn(
            "logs",
            self.region,
            self.account_id,
            f"log-group:{self.log_group}:log-stream:{self.log_stream}",
        )


@dataclass(frozen=True)
class StartFailure:
    """A task that stops before its application runs.

    ``pulled``: whether the image pull finished before the failure (it sets ``pullStoppedAt``).
    """

    stopped_reason: str
    pulled: bool
    stop_code: str = "TaskFailedToStart"


Scenario = Callable[[TaskFacts], StartFailure]


def image_pull_failure(facts: TaskFacts) -> StartFailure:
    """The image cannot be pulled: a private subnet without a route to the registry."""
    repo, _, tag = facts.image.rpartition(":")
    host, _, path = repo.partition("/")
    reason = (
        "CannotPullContainerError: pull image manifest has been retried 7 time(s): "
        f"failed to resolve ref {facts.image}: failed to do request: Head "
        f'"https://{host}/v2/{path}/manifests/{tag}": dial tcp 99.83.145.10:443: i/o timeout'
    )
    return StartFailure(reason, pulled=False)


def logger_failure(
    facts: TaskFacts, kind: DenialKind = NO_ALLOW, denied: str | None = None
) -> StartFailure:
    """The execution role may not create the task's log stream (awslogs driver).

    ``denied``: the AccessDenied sentence when the lab's evaluator decided it (it names the
    policy type that denied); else the identity-policy sentence of ``kind``.
    """
    if denied is None:
        principal = assumed_role_arn(
            facts.account_id, facts.execution_role, facts.task_id, region=facts.region
        )
        denied = format_access_denied(principal, "logs:CreateLogStream", facts.stream_arn, kind)
    reason = (
        "ResourceInitializationError: failed to validate logger args: create stream has been "
        "retried 1 times: failed to create Cloudwatch log stream: AccessDeniedException: "
        f"{denied} : exit status 1"
    )
    return StartFailure(reason, pulled=True)


#: The ``execution_role_fault`` knob's values and the scenario each one plays.
START_FAILURES: dict[str, Scenario] = {
    "pull": image_pull_failure,
    "logs": logger_failure,
}


# --- the knobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """The fault knobs a running lab can change (:meth:`Lab.set_faults`).

    ``propagation_delay_s``: simulated seconds before an IAM change reaches the carts app.
    ``throttle_rate``: share of API calls (0..1) answered with the service's throttling error.
    ``execution_role_fault``: None or a key of :data:`START_FAILURES`.
    ``stale_reads_s``: simulated seconds during which IAM's reads of a role (``GetRole``,
    ``GetRolePolicy``, ``ListRolePolicies``) may still answer its state before a write: IAM "takes
    time to become visible from all possible endpoints" (IAM User Guide, troubleshoot_general.html
    #troubleshoot_general_eventual-consistency; AWS-FACTS 7). The lab answers as of this long ago.
    ``log_pages``: CloudWatch Logs answers ``GetLogEvents`` and ``FilterLogEvents`` in partial and
    empty pages before the end, as its API reference says it may (bc:``logs``
    ``GetLogEventsResponse``, ``FilterLogEventsResponse``; AWS-FACTS 4); see
    :mod:`runbook_lib.lab.logpages`.
    """

    propagation_delay_s: float = 0.0
    throttle_rate: float = 0.0
    execution_role_fault: str | None = None
    stale_reads_s: float = 0.0
    log_pages: bool = False

    def __post_init__(self) -> None:
        delay = self.propagation_delay_s
        if not _number(delay) or not 0 <= delay <= 86_400:
            raise LabConfigError(
                f"propagation_delay_s must be a number of simulated seconds from 0 to 86400; "
                f"got {delay!r}."
            )
        rate = self.throttle_rate
        if not _number(rate) or not 0 <= rate < 1:
            raise LabConfigError(
                f"throttle_rate must be a share from 0 up to (not including) 1; got {rate!r}."
            )
        stale = self.stale_reads_s
        if not _number(stale) or not 0 <= stale <= 86_400:
            raise LabConfigError(
                f"stale_reads_s must be a number of simulated seconds from 0 to 86400; "
                f"got {stale!r}."
            )
        if not isinstance(self.log_pages, bool):
            raise LabConfigError(f"log_pages must be true or false; got {self.log_pages!r}.")
        fault = self.execution_role_fault
        if fault is not None and fault not in START_FAILURES:
            allowed = ", ".join(repr(k) for k in START_FAILURES)
            raise LabConfigError(
                f"execution_role_fault must be None or one of {allowed}; got {fault!r}."
            )

    @classmethod
    def knob_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, float | str | bool | None]:
        return {name: getattr(self, name) for name in self.knob_names()}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
