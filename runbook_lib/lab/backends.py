"""moto's in-process backends for the lab's account and region, and the one lock around them.

moto's backends are plain Python objects shared by every thread of the process and are not
thread-safe. Every reader and writer (the HTTP server's request threads, the scheduler thread,
``Lab.reset``) holds :data:`MOTO_LOCK` while it touches them. It is re-entrant because backend
methods the lab overrides call back into the scheduler, which takes it too.
"""

from __future__ import annotations

import threading
from typing import Any

#: The one lock around moto's state in this process (moto keeps one state per process).
MOTO_LOCK = threading.RLock()

#: The services the lab seeds and resets.
SERVICES = ("ec2", "iam", "sts", "dynamodb", "logs", "ecs")


class Backends:
    """The lab account's moto backends (each looked up on use: a reset replaces their state)."""

    def __init__(self, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region

    def _key(self, service: str) -> str:
        from moto.utilities.utils import get_partition

        # moto behaviour: a global service's backend (IAM, STS) is kept under its partition's
        # name ("aws", "aws-cn"): IAM in cn-north-1 is another IAM than in us-west-2, as in AWS.
        return str(get_partition(self.region)) if service in ("iam", "sts") else self.region

    def _get(self, service: str) -> Any:
        from moto.backends import get_backend

        return get_backend(service)[self.account_id][self._key(service)]  # type: ignore[call-overload]

    def _exists(self, service: str) -> bool:
        from moto.backends import get_backend

        # moto behaviour: the account's ``in`` answers for every region moto knows, built or
        # not: ask its keys.
        region = self._key(service)
        built = get_backend(service)[self.account_id].keys()  # type: ignore[call-overload]
        return region in built

    @property
    def ecs(self) -> Any:
        return self._get("ecs")

    @property
    def iam(self) -> Any:
        return self._get("iam")

    @property
    def sts(self) -> Any:
        return self._get("sts")

    @property
    def ec2(self) -> Any:
        return self._get("ec2")

    @property
    def dynamodb(self) -> Any:
        return self._get("dynamodb")

    @property
    def logs(self) -> Any:
        return self._get("logs")

    def reset(self) -> None:
        """Forget everything in the lab's account and region (caller holds MOTO_LOCK)."""
        for service in SERVICES:
            # BaseBackend.reset re-runs __init__ on the same object: overrides set on the
            # instance are gone afterwards and must be installed again. A backend that the
            # lookup itself creates is new already; resetting it would build it twice (EC2's
            # build, with its default VPC and images, takes about 0.08 s).
            existed = self._exists(service)
            backend = self._get(service)
            if existed:
                backend.reset()
