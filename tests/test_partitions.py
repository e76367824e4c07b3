"""Partitions held to botocore's own answer, and the pure core's docstring examples.

botocore's ``Session().get_partition_for_region`` is the reference (AWS-FACTS §9): it reads
``endpoints.json``, checks each partition's region list, then its ``regionRegex``, and raises
``UnknownRegionError`` for anything else. The library carries its own copy of that table so
that it needs no botocore; these tests fail the day botocore's table moves.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from types import ModuleType

import botocore
import botocore.session
import pytest
from botocore.exceptions import UnknownRegionError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runbook_lib import access_denied, carts, iam_eval, partitions, policy
from runbook_lib.partitions import (
    PARTITIONS,
    UnknownRegion,
    arn,
    dns_suffix,
    partition_for_region,
    partition_of_arn,
)

SESSION = botocore.session.Session()
DATA = Path(botocore.__file__).parent / "data"
ENDPOINTS = json.loads((DATA / "endpoints.json").read_text(encoding="utf-8"))["partitions"]
PARTITIONS_JSON = json.loads((DATA / "partitions.json").read_text(encoding="utf-8"))["partitions"]


def botocore_partition(region: str) -> str | None:
    try:
        answer: str = SESSION.get_partition_for_region(region)
    except UnknownRegionError:
        return None
    return answer


def ours(region: str) -> str | None:
    try:
        return partition_for_region(region)
    except UnknownRegion:
        return None


def test_the_table_is_botocores_endpoints_json() -> None:
    got = [(p.name, p.region_regex, set(p.regions), p.dns_suffix) for p in PARTITIONS]
    want = [
        (p["partition"], p["regionRegex"], set(p["regions"]), p["dnsSuffix"]) for p in ENDPOINTS
    ]
    assert got == want


KNOWN = sorted(
    {r for p in ENDPOINTS for r in p["regions"]}
    | {r for p in PARTITIONS_JSON for r in p["regions"]}
)
# Names AWS has not opened (yet), near-misses, and the pseudo-regions of partitions.json.
INVENTED = [
    "cn-south-9",
    "us-gov-central-3",
    "us-iso-north-7",
    "us-isob-south-2",
    "eu-isoe-north-4",
    "us-isof-west-9",
    "eusc-de-west-2",
    "eusc-fr-east-1",
    "ap-moon-1",
    "zz-west-1",
    "us-west",
    "US-WEST-2",
    "uswest2",
    "local",
    "",
    "us-west-2 ",
    "cn-north-1a",
]


@pytest.mark.parametrize("region", KNOWN + INVENTED)
def test_every_region_resolves_as_botocore_resolves_it(region: str) -> None:
    assert ours(region) == botocore_partition(region)


def test_the_issue_regions() -> None:
    assert partition_for_region("cn-north-1") == "aws-cn"
    assert partition_for_region("cn-northwest-1") == "aws-cn"
    assert partition_for_region("us-gov-west-1") == "aws-us-gov"
    assert partition_for_region("us-west-2") == "aws"
    assert partition_for_region("us-iso-east-1") == "aws-iso"
    assert partition_for_region("us-isob-east-1") == "aws-iso-b"
    with pytest.raises(UnknownRegion, match="'mars-1' is in no AWS partition"):
        partition_for_region("mars-1")


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        lambda a, b, c: f"{a}-{b}-{c}",
        st.sampled_from(["us", "cn", "eu", "ap", "zz", "us-gov", "us-iso", "us-isob", "eusc-de"]),
        st.text("abcdefghijklmnopqrstuvwxyz_-0", min_size=0, max_size=8),
        st.text("0123456789a", min_size=0, max_size=3),
    )
)
@example("us-west-2\n")
def test_region_like_names_resolve_as_botocore_resolves_them(region: str) -> None:
    assert ours(region) == botocore_partition(region)


def test_arns_carry_the_partition() -> None:
    assert arn("dynamodb", "cn-north-1", "123456789012", "table/t") == (
        "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/t"
    )
    assert arn("iam", "", "123456789012", "role/r", partition="aws-us-gov") == (
        "arn:aws-us-gov:iam::123456789012:role/r"
    )
    assert partition_of_arn("arn:aws-iso-b:s3:::b") == "aws-iso-b"
    assert partition_of_arn("not-an-arn") is None
    assert dns_suffix("aws-cn") == "amazonaws.com.cn"
    with pytest.raises(ValueError, match="partition must be one of aws, aws-cn"):
        dns_suffix("aws-mars")


@pytest.mark.parametrize(
    ("region", "partition"),
    [("us-west-2", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-east-1", "aws-us-gov")],
)
def test_carts_arns_follow_the_region(region: str, partition: str) -> None:
    table = carts.table_arn(region, "123456789012", "carts")
    assert table == f"arn:{partition}:dynamodb:{region}:123456789012:table/carts"
    assert carts.index_arn(region, "123456789012", "carts", "i") == table + "/index/i"
    for _, resource in carts.carts_requests(region, "123456789012", "carts", "i"):
        assert partition_of_arn(resource) == partition == botocore_partition(region)
    principal = access_denied.assumed_role_arn("123456789012", "r", "t", region=region)
    assert principal == f"arn:{partition}:sts::123456789012:assumed-role/r/t"


def test_assumed_role_arn_keeps_its_old_default() -> None:
    assert access_denied.assumed_role_arn("123456789012", "r", "t") == (
        "arn:aws:sts::123456789012:assumed-role/r/t"
    )
    assert access_denied.assumed_role_arn("1", "r", "t", partition="aws-iso").startswith(
        "arn:aws-iso:sts::"
    )


@pytest.mark.parametrize("module", [partitions, carts, access_denied, iam_eval, policy])
def test_docstring_examples_of_the_pure_core(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
