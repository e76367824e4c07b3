"""What the carts service calls in DynamoDB, declared once.

The carts app (Spring Boot, ``SPRING_PROFILES_ACTIVE=dynamodb``) runs one ``Query`` on the
customer index as soon as it is ready, then in normal running ``Query`` (index) and
``GetItem``/``PutItem``/``UpdateItem``/``DeleteItem`` (table). Nothing else.

This list drives three things that must agree: the least-privilege policy
(:mod:`runbook_lib.policy`), the preflight check in the runbook, and the lab's simulated carts
app (:mod:`runbook_lib.lab`).

ARNs carry the region's partition (:func:`runbook_lib.partitions.partition_for_region`):
``arn:aws-cn:dynamodb:cn-north-1:...`` in China, ``arn:aws-us-gov:...`` in GovCloud. A region no
partition holds raises :class:`runbook_lib.partitions.UnknownRegion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runbook_lib.partitions import arn

Target = Literal["table", "index"]


@dataclass(frozen=True)
class CartsCall:
    """One DynamoDB API call the carts app makes, and what it touches."""

    action: str
    target: Target
    purpose: str

    @property
    def operation(self) -> str:
        """The API operation name, e.g. ``Query`` for ``dynamodb:Query``."""
        return self.action.split(":", 1)[1]


CARTS_CALLS: tuple[CartsCall, ...] = (
    CartsCall("dynamodb:Query", "index", "find a customer's cart items (also the startup check)"),
    CartsCall("dynamodb:GetItem", "table", "read one cart item"),
    CartsCall("dynamodb:PutItem", "table", "add an item to a cart"),
    CartsCall("dynamodb:UpdateItem", "table", "change an item's quantity"),
    CartsCall("dynamodb:DeleteItem", "table", "remove an item from a cart"),
)

#: The customer id of the start-up query.
STARTUP_CUSTOMER_ID = "test"


def table_arn(region: str, account_id: str, table: str, *, partition: str | None = None) -> str:
    """ARN of a DynamoDB table, in the region's partition unless ``partition`` is given.

    >>> table_arn("us-west-2", "123456789012", "retail-store-ecs-carts")
    'arn:aws:dynamodb:us-west-2:123456789012:table/retail-store-ecs-carts'
    >>> table_arn("cn-north-1", "123456789012", "carts")
    'arn:aws-cn:dynamodb:cn-north-1:123456789012:table/carts'
    """
    return arn("dynamodb", region, account_id, f"table/{table}", partition=partition)


def index_arn(
    region: str, account_id: str, table: str, index: str, *, partition: str | None = None
) -> str:
    """ARN of a table's secondary index (what IAM sees for ``Query`` on an index)."""
    return f"{table_arn(region, account_id, table, partition=partition)}/index/{index}"


def resource_for(call: CartsCall, region: str, account_id: str, table: str, index: str) -> str:
    """The resource ARN IAM evaluates for ``call``."""
    if call.target == "index":
        return index_arn(region, account_id, table, index)
    return table_arn(region, account_id, table)


def carts_requests(region: str, account_id: str, table: str, index: str) -> list[tuple[str, str]]:
    """Every (action, resource) pair the carts app needs, in declaration order."""
    return [(c.action, resource_for(c, region, account_id, table, index)) for c in CARTS_CALLS]
