"""AWS partitions: which ``arn:<partition>:`` a region's resources carry. Pure, no botocore.

An ARN's second field is the partition, and it follows from the region: ``arn:aws:`` in the
commercial regions, ``arn:aws-cn:`` in ``cn-*``, ``arn:aws-us-gov:`` in ``us-gov-*``, and so on.
An ARN built with the wrong partition matches nothing (IAM compares it like any other text), so
every ARN the runbook builds asks :func:`partition_for_region` first.

The table below is botocore's own (``botocore/data/endpoints.json``, the file
``EndpointResolver.get_partition_for_region`` reads; botocore 1.44.8): a region belongs to the
first partition that lists it or whose ``regionRegex`` matches it, so a region AWS opens later
(``cn-south-9``) already resolves. A test holds this table to botocore's answers.

>>> partition_for_region("cn-north-1")
'aws-cn'
>>> arn("dynamodb", "us-gov-west-1", "123456789012", "table/carts")
'arn:aws-us-gov:dynamodb:us-gov-west-1:123456789012:table/carts'

Public names: :data:`PARTITIONS`, :class:`Partition`, :class:`UnknownRegion`,
:func:`partition_for_region`, :func:`dns_suffix`, :func:`partition_of_arn`, :func:`arn`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "PARTITIONS",
    "Partition",
    "UnknownRegion",
    "arn",
    "dns_suffix",
    "partition_for_region",
    "partition_of_arn",
]


@dataclass(frozen=True)
class Partition:
    """One AWS partition as botocore's ``endpoints.json`` describes it."""

    name: str
    region_regex: str
    regions: tuple[str, ...]
    dns_suffix: str

    def holds(self, region: str) -> bool:
        """True when ``region`` is in this partition (listed, or matching ``regionRegex``).

        ``re.match`` with the regex as botocore writes it (``^...$``), as ``_region_match`` does.
        """
        return region in self.regions or re.match(self.region_regex, region) is not None


#: In botocore's order, which decides a region two regexes could claim (none do today).
PARTITIONS: tuple[Partition, ...] = (
    Partition(
        "aws",
        r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$",
        (
            "af-south-1",
            "ap-east-1",
            "ap-east-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-south-1",
            "ap-south-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-southeast-3",
            "ap-southeast-4",
            "ap-southeast-5",
            "ap-southeast-6",
            "ap-southeast-7",
            "ca-central-1",
            "ca-west-1",
            "eu-central-1",
            "eu-central-2",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "il-central-1",
            "me-central-1",
            "me-south-1",
            "mx-central-1",
            "sa-east-1",
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
        ),
        "amazonaws.com",
    ),
    Partition("aws-cn", r"^cn\-\w+\-\d+$", ("cn-north-1", "cn-northwest-1"), "amazonaws.com.cn"),
    Partition(
        "aws-us-gov", r"^us\-gov\-\w+\-\d+$", ("us-gov-east-1", "us-gov-west-1"), "amazonaws.com"
    ),
    Partition("aws-iso", r"^us\-iso\-\w+\-\d+$", ("us-iso-east-1", "us-iso-west-1"), "c2s.ic.gov"),
    Partition(
        "aws-iso-b", r"^us\-isob\-\w+\-\d+$", ("us-isob-east-1", "us-isob-west-1"), "sc2s.sgov.gov"
    ),
    Partition("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$", ("eu-isoe-west-1",), "cloud.adc-e.uk"),
    Partition(
        "aws-iso-f",
        r"^us\-isof\-\w+\-\d+$",
        ("us-isof-east-1", "us-isof-south-1"),
        "csp.hci.ic.gov",
    ),
    Partition("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", ("eusc-de-east-1",), "amazonaws.eu"),
)

_BY_NAME = {p.name: p for p in PARTITIONS}
_ARN = re.compile(r"^arn:(?P<partition>[^:]*):")


class UnknownRegion(ValueError):
    """A region name no AWS partition holds (botocore raises ``UnknownRegionError`` for it)."""


def partition_for_region(region: str) -> str:
    """The partition of ``region``: ``aws``, ``aws-cn``, ``aws-us-gov``, ``aws-iso``, ...

    Raises :class:`UnknownRegion` (a ``ValueError``) for a name no partition holds, as botocore's
    ``Session().get_partition_for_region`` does; there is no silent default, because an ARN in
    a guessed partition would match nothing.
    """
    for partition in PARTITIONS:
        if partition.holds(region):
            return partition.name
    raise UnknownRegion(
        f"region {region!r} is in no AWS partition: a region name looks like 'us-west-2' "
        "(aws), 'cn-north-1' (aws-cn) or 'us-gov-west-1' (aws-us-gov)"
    )


def dns_suffix(partition: str) -> str:
    """The endpoints' DNS suffix of ``partition`` (``amazonaws.com.cn`` for ``aws-cn``)."""
    try:
        return _BY_NAME[partition].dns_suffix
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise ValueError(f"partition must be one of {known}, not {partition!r}") from None


def partition_of_arn(value: str) -> str | None:
    """The partition field of an ARN (``arn:aws-cn:...`` gives ``aws-cn``); None if not an ARN."""
    m = _ARN.match(value)
    return m.group("partition") if m else None


def arn(
    service: str, region: str, account_id: str, resource: str, *, partition: str | None = None
) -> str:
    """``arn:<partition>:<service>:<region>:<account>:<resource>``, the partition from ``region``.

    For a global service (IAM, STS) pass ``region=""`` and the ``partition`` of the region the
    caller works in: ``arn("iam", "", acct, "role/r", partition=partition_for_region(region))``.
    """
    if partition is None:
        partition = partition_for_region(region)
    return f"arn:{partition}:{service}:{region}:{account_id}:{resource}"
