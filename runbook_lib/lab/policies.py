"""A role's effective identity policies as moto holds them, and how they looked a while ago.

IAM is eventually consistent: a policy change "might take a few minutes" to reach every
endpoint. The lab plays that with :class:`PolicyHistory`: it records each distinct state of a
role's policies with the (monotonic) time it was first seen, and answers "the policies as they
were N seconds ago".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.iam_eval import PolicyError, evaluate

#: name (inline) or ARN (managed) -> policy document JSON text.
Snapshot = Mapping[str, str]


def effective_policies(iam: Any, role_name: str) -> dict[str, str]:
    """The identity policies that apply to ``role_name``: its inline policies and the default
    version of each attached managed policy. An unknown role has none.

    Documents IAM would not have accepted (moto is more lenient) are left out, as IAM would
    never have stored them.
    """
    roles = [r for r in iam.roles.values() if r.name == role_name]
    if not roles:
        return {}
    role = roles[0]
    docs: dict[str, str] = {name: _text(doc) for name, doc in role.policies.items()}
    for arn, policy in role.managed_policies.items():
        default = [v for v in policy.versions if v.is_default]
        if default:
            docs[arn] = _text(default[0].document)
    return {name: doc for name, doc in docs.items() if _acceptable(name, doc)}


def _text(doc: Any) -> str:
    return doc if isinstance(doc, str) else _json(doc)


def _json(doc: Any) -> str:
    import json

    return json.dumps(doc)


def _acceptable(name: str, doc: str) -> bool:
    try:
        evaluate({name: doc}, "lab:Probe", "*")
    except PolicyError:
        return False
    return True


@dataclass
class PolicyHistory:
    """Distinct policy states of one role, each with the time it was first seen.

    ``read`` returns the current state; call :meth:`observe` after anything that may have
    changed it (the lab does after every IAM request) and :meth:`as_of` to look back.
    """

    read: Callable[[], dict[str, str]]
    keep: int = 256
    _times: list[float] = field(default_factory=list)
    _states: list[dict[str, str]] = field(default_factory=list)

    def observe(self, now: float) -> bool:
        """Record the current state if it differs from the last one; True if it did."""
        state = self.read()
        if self._states and self._states[-1] == state:
            return False
        self._times.append(now)
        self._states.append(state)
        if len(self._states) > self.keep:
            del self._times[0], self._states[0]
        return True

    def as_of(self, when: float) -> dict[str, str]:
        """The state that was current at ``when`` (the oldest one if ``when`` predates all)."""
        if not self._states:
            return self.read()
        i = bisect.bisect_right(self._times, when) - 1
        return self._states[max(i, 0)]

    def clear(self) -> None:
        self._times.clear()
        self._states.clear()
