"""Which regions exist, and which of them the embedded lab can hold.

- The regions AWS has are those of :data:`runbook_lib.partitions.PARTITIONS` (botocore's
  ``endpoints.json`` table, held to botocore by tests/test_partitions.py). A well-formed name
  that no partition lists (``us-west-3``) is refused for both backends: a real client could
  only fail on it later (an endpoint that does not resolve, a signature scoped to no region).
- moto builds a regional backend only for the regions botocore has an endpoint for
  (``AccountSpecificBackend.regions`` = ``get_available_regions(service, partition)``, read from
  ``endpoints.json``); any other region raises ``KeyError`` inside moto. The lab seeds EC2,
  DynamoDB, CloudWatch Logs and ECS in its region, and IAM and STS in the region's partition
  (moto keeps IAM per partition, and answers ``arn:aws-cn:`` ARNs in ``cn-*``: AWS-FACTS §11;
  the lab makes every ARN of its own in the region's partition too). So it holds the regions
  of :data:`LAB_PARTITIONS` where all four have an endpoint (``cn-north-1`` and
  ``cn-northwest-1`` among them: the ``aws-cn`` scenario plays one end to end).
  ``endpoints.json`` is read as data here: no botocore session is built, and nothing is
  imported for the aws backend.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from runbook_lib.partitions import PARTITIONS

#: The partitions the lab holds. aws-us-gov and the isolated partitions are left out: botocore
#: lists their endpoints, but nothing the lab or its tests play was ever checked there.
LAB_PARTITIONS = ("aws", "aws-cn")
#: The partition of the lab's default region.
LAB_PARTITION = "aws"
#: The regional services the lab seeds in its region (runbook_lib/lab/backends.py).
LAB_REGIONAL_SERVICES = ("ec2", "dynamodb", "logs", "ecs")


@lru_cache(maxsize=1)
def aws_regions() -> frozenset[str]:
    """Every region a partition lists."""
    return frozenset(r for p in PARTITIONS for r in p.regions)


def partition_regions(partition: str) -> frozenset[str]:
    """The regions ``partition`` lists (empty for an unknown partition)."""
    return frozenset(r for p in PARTITIONS if p.name == partition for r in p.regions)


def service_regions(service: str, partition: str = LAB_PARTITION) -> frozenset[str]:
    """The regions of ``partition`` with an endpoint for ``service`` (the regions moto builds),
    as botocore's ``EndpointResolver.get_available_endpoints`` lists them."""
    return _endpoint_regions().get(partition, {}).get(service, frozenset())


@lru_cache(maxsize=1)
def _endpoint_regions() -> dict[str, dict[str, frozenset[str]]]:
    """partition -> service -> regions with an endpoint (``endpoints.json``: read and parsed once
    per process, as it is large; BENCHMARKS.md has the cost)."""
    data = json.loads((resources.files("botocore") / "data" / "endpoints.json").read_bytes())
    found: dict[str, dict[str, frozenset[str]]] = {}
    for part in data["partitions"]:
        listed = set(part["regions"])
        found[part["partition"]] = {
            name: frozenset(e for e in svc.get("endpoints", {}) if e in listed)
            for name, svc in part["services"].items()
        }
    return found


@lru_cache(maxsize=1)
def lab_regions() -> frozenset[str]:
    """The regions the embedded lab can hold: in each of :data:`LAB_PARTITIONS`, the regions
    where EC2, DynamoDB, CloudWatch Logs and ECS all have an endpoint."""
    held: set[str] = set()
    for partition in LAB_PARTITIONS:
        here = set(partition_regions(partition))
        for service in LAB_REGIONAL_SERVICES:
            here &= service_regions(service, partition)
        held |= here
    return frozenset(held)


__all__ = [
    "LAB_PARTITION",
    "LAB_PARTITIONS",
    "LAB_REGIONAL_SERVICES",
    "aws_regions",
    "lab_regions",
    "partition_regions",
    "service_regions",
]
