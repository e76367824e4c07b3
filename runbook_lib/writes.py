"""The writes the runbook makes, each checked before it is sent and read back after.

A run's plan is a list of writes (:mod:`runbook_lib.plan`): the inline policy on the task role
(``iam:PutRolePolicy``, or ``iam:DeleteRolePolicy`` when a rollback removes it) and, when the
service's deployment has FAILED, ``ecs:UpdateService --force-new-deployment``. Each write here
knows how to:

- **check** the world still holds what the plan saw, just before sending (Terraform's "refresh
  before apply"); when it does not, nothing is sent and the plan must be made again;
- **send** itself (the caller records the undo *before* the check, so a run killed at any point
  leaves the replaced document in its record, and only the check's read precedes the write);
- **confirm** by reading back, retrying for a bounded time because IAM reads can lag a write
  (AWS-FACTS.md section 7), and say who won when IAM holds something else;
- describe its command, its undo (or why it has none) and its record, so that the record, the
  undo and the summary treat every write alike.

IAM has no conditional write: between the check and the write another writer can still slip a
document in, which this write then replaces unseen. That window is one request round trip;
RELIABILITY.md has its measured width.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import unquote

from runbook_lib.blocks import Block, Items, Pre, Sentence
from runbook_lib.policy import (
    POLICY_FILE,
    delete_role_policy_command,
    diff,
    parse_document,
    policy_hash,
    put_role_policy_command,
    same_policy,
)
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_iam import IAMClient

#: How long a read after a write may lag before a difference counts (simulated seconds on a
#: stepped lab). AWS documents no bound for IAM's propagation (AWS-FACTS.md section 7); changes
#: usually show within seconds, and a run that waits longer only delays its report.
READ_AFTER_WRITE_LIMIT_S = 15.0
#: The pauses between reads: short first (the usual case is a read that is already current).
READ_INTERVALS_S = (0.5, 1.0, 2.0, 4.0)

WriteState = Literal[
    "planned",  # in the plan, not sent
    "refused",  # the check found the world changed since the plan: not sent
    "skipped",  # no longer needed when checked (the deployment moved on): not sent
    "sending",  # the undo is on record; the request may or may not have reached AWS
    "written",  # sent and read back as written
    "superseded",  # sent, but reading back shows something else: another writer won
]
#: States after which AWS may hold what the write sent: the undo applies.
SENT_STATES = ("sending", "written", "superseded")

T = TypeVar("T")


class Clock(Protocol):
    """What a write keeps time by (``runbook_lib.session.RunClock``)."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def time(self) -> float: ...


def read_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    clock: Clock,
    limit_s: float = READ_AFTER_WRITE_LIMIT_S,
) -> tuple[T, int]:
    """Read until ``done(value)`` or ``limit_s`` seconds of ``clock`` have passed; returns the
    last value read and the number of reads. The first read is immediate."""
    start = clock.monotonic()
    for reads, pause in enumerate(_pauses(), 1):
        value = read()
        left = limit_s - (clock.monotonic() - start)
        if done(value) or left <= 0:
            return value, reads
        clock.sleep(min(pause, left))
    raise AssertionError("unreachable")  # pragma: no cover


def _pauses() -> Any:
    yield from READ_INTERVALS_S
    while True:
        yield READ_INTERVALS_S[-1]


# --- what IAM holds -----------------------------------------------------------------------------


def _doc(value: Any) -> dict[str, Any]:
    # boto3 decodes IAM's URL-encoded documents into dicts; some endpoints return the text.
    if isinstance(value, str):
        return parse_document(unquote(value))
    return dict(value)


def read_policy(iam: IAMClient, role: str, name: str) -> dict[str, Any] | None:
    """The inline policy ``name`` of ``role`` as IAM answers now; None when there is none."""
    try:
        got = iam.get_role_policy(RoleName=role, PolicyName=name)
    except iam.exceptions.NoSuchEntityException:
        return None
    return _doc(got["PolicyDocument"])


def same_state(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two states of one inline policy are alike (None: no such policy)."""
    if a is None or b is None:
        return a is None and b is None
    return same_policy(a, b)


def state_hash(doc: dict[str, Any] | None) -> str | None:
    return None if doc is None else policy_hash(doc)


def describe_state(doc: dict[str, Any] | None, name: str) -> str:
    """``no CartsDynamoPolicy`` or ``CartsDynamoPolicy sha256 f5742a59e93c``."""
    if doc is None:
        return f"no {name}"
    return f"{name} sha256 {policy_hash(doc)[:12]}"


def state_record(doc: dict[str, Any] | None) -> dict[str, Any]:
    """A state of the policy for the record: the document itself, never just its hash."""
    return {"exists": doc is not None, "document": doc, "sha256": state_hash(doc)}


# --- the inline policy ------------------------------------------------------------------------


@dataclass
class PolicyWrite(Shows):
    """Put ``after`` as the inline policy ``name`` of ``role`` (delete it when ``after`` is
    None), where the plan found ``before``."""

    role: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: The exact text sent (the rendered policy, byte for byte); compact JSON when None.
    text: str | None = None
    #: "fix" (the runbook's policy), "rollback" (this run's undo), "restore" (an earlier run's).
    purpose: Literal["fix", "rollback"] = "fix"
    state: WriteState = "planned"
    #: What IAM held when it was not what this write expected (refused or superseded).
    found: dict[str, Any] | None = None
    found_read: bool = False
    sent_at: float | None = None
    written_at: float | None = None
    reads: int = 0
    kind: Literal["iam-policy"] = field(default="iam-policy", init=False)

    # --- what it is ---------------------------------------------------------------------------

    @property
    def action(self) -> str:
        if self.after is None:
            return "delete"
        return "create" if self.before is None else "replace"

    @property
    def body(self) -> str:
        if self.text is not None:
            return self.text
        return json.dumps(self.after, separators=(",", ":"))

    @property
    def command(self) -> str:
        """The ``aws`` command that makes this write."""
        if self.after is None:
            return delete_role_policy_command(self.role, self.name)
        return put_role_policy_command(
            self.role, self.name, json.dumps(self.after, separators=(",", ":"))
        )

    @property
    def shown_command(self) -> str:
        """The command as a reader types it: the rendered policy from its file (the policy cell
        shows that file's text), any other document inline."""
        if self.text is not None and self.after is not None:
            return put_role_policy_command(self.role, self.name, f"file://{POLICY_FILE}")
        return self.command

    @property
    def undo(self) -> str | None:
        """The command that puts back what this write replaced."""
        if self.before is None:
            return delete_role_policy_command(self.role, self.name)
        return put_role_policy_command(
            self.role, self.name, json.dumps(self.before, separators=(",", ":"))
        )

    @property
    def undo_note(self) -> str:
        return f"To undo: {self.undo}"

    @property
    def sent(self) -> bool:
        return self.state in SENT_STATES

    def summary(self) -> str:
        name, role = self.name, self.role
        if self.action == "delete":
            return f"delete-role-policy will remove {name} from {role}."
        if self.action == "replace":
            return f"put-role-policy will REPLACE the existing inline policy {name} on {role}."
        return f"put-role-policy will add the inline policy {name} to {role}."

    def diff(self) -> str:
        if self.after is None:
            return "" if self.before is None else f"--- {self.name} (now)\n+++ (deleted)\n"
        return diff(self.before, self.after, self.name)

    # --- check, send, confirm -----------------------------------------------------------------

    def check(self, iam: IAMClient) -> bool:
        """Just before sending: does IAM still hold what the plan saw? When not, the write is
        ``refused`` (and what IAM holds is kept in :attr:`found`)."""
        now = read_policy(iam, self.role, self.name)
        if same_state(now, self.before):
            return True
        self.state, self.found, self.found_read = "refused", now, True
        return False

    def send(self, iam: IAMClient, clock: Clock) -> None:
        """Send the write; the caller has recorded the undo (state ``sending``) before."""
        self.sent_at = clock.time()
        if self.after is None:
            # Gone already is the state this write wants (confirm reads it).
            with suppress(iam.exceptions.NoSuchEntityException):
                iam.delete_role_policy(RoleName=self.role, PolicyName=self.name)
        else:
            iam.put_role_policy(RoleName=self.role, PolicyName=self.name, PolicyDocument=self.body)
        # The change is when the write landed: throttled retries can delay it.
        self.written_at = clock.time()

    def confirm(
        self, iam: IAMClient, clock: Clock, limit_s: float = READ_AFTER_WRITE_LIMIT_S
    ) -> bool:
        """Read back until IAM shows this write (a read may lag it for a while); ``written``, or
        ``superseded`` with what IAM holds in :attr:`found` after ``limit_s``."""
        now, self.reads = read_until(
            lambda: read_policy(iam, self.role, self.name),
            lambda doc: same_state(doc, self.after),
            clock,
            limit_s,
        )
        if same_state(now, self.after):
            self.state = "written"
            return True
        self.state, self.found, self.found_read = "superseded", now, True
        return False

    def outcome(self) -> str:
        """One sentence for the state the write ended in."""
        name, role = self.name, self.role
        if self.state == "refused":
            return (
                f"Nothing written: {name} on {role} changed since the plan (the plan saw "
                f"{describe_state(self.before, name)}, IAM now holds "
                f"{describe_state(self.found, name)}); run the plan cell again to see the new diff."
            )
        if self.state == "superseded":
            return (
                f"Another writer won: after this run wrote {describe_state(self.after, name)}, IAM "
                f"holds {describe_state(self.found, name)}, which this run did not write; both "
                "documents are in the record."
            )
        if self.state == "written":
            verb = "Removed" if self.after is None else "Wrote"
            return f"{verb} {name} on {role} ({self.action}) and read it back."
        if self.state == "sending":
            return f"Sent {self.action} of {name} on {role}; not read back yet."
        return f"{self.action} of {name} on {role}: {self.state}."

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "kind": self.kind,
            "purpose": self.purpose,
            "role": self.role,
            "policy_name": self.name,
            "action": self.action,
            "state": self.state,
            "command": self.command,
            "undo": self.undo,
            "before": state_record(self.before),
            "after": state_record(self.after),
            "sent_at": self.sent_at,
            "written_at": self.written_at,
        }
        if self.found_read:
            rec["found"] = state_record(self.found)
        return rec

    def blocks(self) -> list[Block]:
        return write_blocks(self)


# --- the ECS deployment -----------------------------------------------------------------------


@dataclass
class DeploymentWrite(Shows):
    """``ecs update-service --force-new-deployment``: ECS launches no new task for a deployment
    whose rollout FAILED (botocore's ECS model, ``Deployment.rolloutState``), so the fixed role
    would never be tried. A new deployment of the same task definition is."""

    cluster: str
    service: str
    failed_deployment: str  # the PRIMARY deployment the plan saw FAILED
    state: WriteState = "planned"
    found: str = ""  # what the check saw instead ("ecs-svc/123 IN_PROGRESS")
    new_deployment: str = ""
    sent_at: float | None = None
    written_at: float | None = None
    kind: Literal["ecs-deployment"] = field(default="ecs-deployment", init=False)

    @property
    def action(self) -> str:
        return "force-new-deployment"

    @property
    def command(self) -> str:
        return (
            f"aws ecs update-service --cluster {self.cluster} --service {self.service} "
            "--force-new-deployment"
        )

    @property
    def shown_command(self) -> str:
        return self.command

    @property
    def undo(self) -> str | None:
        return None

    @property
    def undo_note(self) -> str:
        return (
            "Cannot be undone, and changes nothing to undo: it starts a new deployment of the "
            "same task definition, whose tasks replace the FAILED deployment's."
        )

    @property
    def sent(self) -> bool:
        return self.state in SENT_STATES

    def summary(self) -> str:
        return (
            f"update-service will start a new deployment of {self.service}: deployment "
            f"{self.failed_deployment} FAILED and ECS launches no new task for it."
        )

    def diff(self) -> str:
        return ""

    def check(self, ecs: ECSClient) -> bool:
        """Is the PRIMARY deployment still the one the plan saw FAILED? When ECS has moved on
        (someone started another deployment), the write is ``skipped``: it is not needed."""
        primary = _primary(ecs, self.cluster, self.service)
        now = f"{primary.get('id', '?')} {primary.get('rolloutState', '?')}"
        if primary.get("id") == self.failed_deployment and primary.get("rolloutState") == "FAILED":
            return True
        self.state, self.found = "skipped", now
        return False

    def send(self, ecs: ECSClient, clock: Clock) -> None:
        self.sent_at = clock.time()
        got = ecs.update_service(
            cluster=self.cluster, service=self.service, forceNewDeployment=True
        )["service"]
        self.written_at = clock.time()
        self.new_deployment = _primary_of(got).get("id", "")

    def confirm(
        self, ecs: ECSClient, clock: Clock, limit_s: float = READ_AFTER_WRITE_LIMIT_S
    ) -> bool:
        """A new PRIMARY deployment, other than the FAILED one, is what was asked for."""
        primary, _ = read_until(
            lambda: _primary(ecs, self.cluster, self.service),
            lambda p: p.get("id") not in (None, self.failed_deployment),
            clock,
            limit_s,
        )
        if primary.get("id") not in (None, self.failed_deployment):
            self.state, self.new_deployment = "written", str(primary["id"])
            return True
        self.state = "superseded"
        self.found = f"{primary.get('id', '?')} {primary.get('rolloutState', '?')}"
        return False

    def outcome(self) -> str:
        if self.state == "skipped":
            return (
                f"No new deployment needed: the deployment of {self.service} is now {self.found}, "
                f"no longer the FAILED {self.failed_deployment}."
            )
        if self.state == "written":
            return (
                f"Started deployment {self.new_deployment} of {self.service} (the FAILED "
                f"{self.failed_deployment} launches no task)."
            )
        if self.state == "superseded":
            return (
                f"Asked ECS for a new deployment of {self.service}, but its PRIMARY deployment is "
                f"still {self.found}."
            )
        return f"{self.action} of {self.service}: {self.state}."

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "purpose": "fix",
            "cluster": self.cluster,
            "service": self.service,
            "action": self.action,
            "state": self.state,
            "command": self.command,
            "undo": None,
            "undo_note": self.undo_note,
            "failed_deployment": self.failed_deployment,
            "new_deployment": self.new_deployment or None,
            "found": self.found or None,
            "sent_at": self.sent_at,
            "written_at": self.written_at,
        }

    def blocks(self) -> list[Block]:
        return write_blocks(self)


def _primary_of(service: Mapping[str, Any]) -> dict[str, Any]:
    for d in service.get("deployments", []):
        if d.get("status") == "PRIMARY":
            return dict(d)
    return {}


def _primary(ecs: ECSClient, cluster: str, service: str) -> dict[str, Any]:
    got = ecs.describe_services(cluster=cluster, services=[service])["services"]
    return _primary_of(got[0]) if got else {}


Write = PolicyWrite | DeploymentWrite


def write_blocks(w: Write) -> list[Block]:
    """What a write does, the command that makes it, and how it is undone (or why it is not)."""
    return [Sentence(w.summary()), Pre(w.shown_command), Sentence(w.undo_note)]


def writes_list(writes: list[Write]) -> Items:
    """The writes in order, each with its command and its undo, for plans and summaries."""
    return Items(tuple(tuple(write_blocks(w)) for w in writes), numbered=True)
