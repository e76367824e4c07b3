"""Which regions exist, and which of them the embedded lab can hold, from botocore's own data.

Both lists are read from the JSON files botocore ships (nothing is imported, no session is
built), the same files boto3 and moto consult:

- ``partitions.json``: every partition with its ``regionRegex`` and its regions (AWS-FACTS §9).
  A region AWS does not list there is refused for both backends: a real client could only fail
  on it later (an endpoint that does not resolve, a signature scoped to no region).
- ``endpoints.json``: per partition, the endpoints of each service. moto builds a regional
  backend only for the regions botocore has an endpoint for (``AccountSpecificBackend.regions``
  = ``get_available_regions(service, partition)``); any other region raises ``KeyError`` in moto.
  The lab seeds EC2, DynamoDB, CloudWatch Logs and ECS in its region and keeps IAM and STS under
  the ``aws`` partition, so it holds the ``aws`` partition's regions where all four have one.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

#: The partition the lab's IAM and STS live in (moto keeps IAM per partition: AWS-FACTS §11).
LAB_PARTITION = "aws"
#: The regional services the lab seeds in its region (runbook_lib/lab/backends.py).
LAB_REGIONAL_SERVICES = ("ec2", "dynamodb", "logs", "ecs")


def _data(name: str) -> Any:
    return json.loads((resources.files("botocore") / "data" / name).read_bytes())


@lru_cache(maxsize=1)
def partitions() -> dict[str, tuple[re.Pattern[str], frozenset[str]]]:
    """Partition id -> (its regionRegex, its listed regions without the ``*-global`` names)."""
    found = {}
    for part in _data("partitions.json")["partitions"]:
        regions = frozenset(r for r in part["regions"] if not r.endswith("-global"))
        # ASCII: botocore's regexes use \w and \d, which in Python would accept any script.
        found[part["id"]] = (re.compile(part["regionRegex"], re.ASCII), regions)
    return found


def partition_of(region: str) -> str | None:
    """The partition whose list holds ``region``, else whose regex matches it (botocore's order:
    ``EndpointResolver.get_partition_for_region``); None when none does."""
    for pid, (_, regions) in partitions().items():
        if region in regions:
            return pid
    for pid, (regex, _) in partitions().items():
        if regex.fullmatch(region):
            return pid
    return None


@lru_cache(maxsize=1)
def aws_regions() -> frozenset[str]:
    """Every region botocore lists, in every partition."""
    return frozenset(r for _, regions in partitions().values() for r in regions)


def service_regions(service: str, partition: str = LAB_PARTITION) -> frozenset[str]:
    """The regions of ``partition`` with an endpoint for ``service`` (what moto builds)."""
    return _endpoint_regions()[partition].get(service, frozenset())


@lru_cache(maxsize=1)
def _endpoint_regions() -> dict[str, dict[str, frozenset[str]]]:
    found: dict[str, dict[str, frozenset[str]]] = {}
    for part in _data("endpoints.json")["partitions"]:
        listed = set(part["regions"])
        found[part["partition"]] = {
            name: frozenset(e for e in svc.get("endpoints", {}) if e in listed)
            for name, svc in part["services"].items()
        }
    return found


@lru_cache(maxsize=1)
def lab_regions() -> frozenset[str]:
    """The regions the embedded lab can hold."""
    held = set(partitions()[LAB_PARTITION][1])
    for service in LAB_REGIONAL_SERVICES:
        held &= service_regions(service)
    return frozenset(held)


__all__ = [
    "LAB_PARTITION",
    "LAB_REGIONAL_SERVICES",
    "aws_regions",
    "lab_regions",
    "partition_of",
    "partitions",
    "service_regions",
]
