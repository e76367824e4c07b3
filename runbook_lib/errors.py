"""Errors a person can act on. Each message is one or two sentences, never a traceback wall."""

from __future__ import annotations


class RunbookError(Exception):
    """A step could not do its work; the message says what and what to do."""

    step = "runbook"


class NotFound(RunbookError):
    """A named resource (role, cluster, service, table) does not exist.

    ``param`` names the parameter that gave the name, when one did.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EndpointUnreachable(RunbookError):
    """The AWS endpoint (or the lab) did not answer."""


class EndpointTlsError(EndpointUnreachable):
    """TLS with the endpoint failed; the message keeps the reason ("certificate verify failed")."""


class EndpointNotAws(RunbookError):
    """Something answered at the endpoint, but not as AWS does (an HTML page, another API)."""


class WrongAccount(RunbookError):
    """The caller's account is not the one the parameters name."""


class WrongCause(RunbookError):
    """The diagnosis found a cause that the task-role policy cannot fix."""


class WatchTimeout(RunbookError):
    """No carts task reached a settled RUNNING state in time."""


class DeploymentFailed(RunbookError):
    """The service's deployment is FAILED: ECS starts no new task until a new deployment."""


class Blocked(RunbookError):
    """A policy the run cannot change (a permissions boundary, an SCP) would keep carts denied
    after the write: the run stops before writing."""


class RoleNotAssumed(RunbookError):
    """``sts:AssumeRole`` into the parameter's role was refused (or could not be sent)."""


class StepOrder(RunbookError):
    """A cell ran before the cells it needs (or after one that ends what it could do); the
    message names the cell to run. Nothing was written."""


class PlanOutOfDate(RunbookError):
    """IAM changed between the plan and the write: nothing was written; the plan must be made
    again. ``diff`` is what the write would now change (shown with the error)."""

    def __init__(self, message: str, diff: str = "") -> None:
        super().__init__(message)
        self.diff = diff
