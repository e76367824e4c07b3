"""Verify the integration (workshop 3.4): what carts wrote to its table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runbook_lib.blocks import Block, Sentence, Table
from runbook_lib.errors import NotFound
from runbook_lib.shows import Shows

if TYPE_CHECKING:
    import pandas as pd
    from mypy_boto3_dynamodb import DynamoDBClient

ITEM_COLUMNS = ["id", "customerId", "itemId", "quantity", "unitPrice"]
SHOWN_ITEMS = 5


def _plain(attr: Mapping[str, Any]) -> Any:
    ((kind, value),) = attr.items()
    if kind == "N":
        return float(value) if "." in value else int(value)
    return value


@dataclass(frozen=True)
class ScanResult(Shows):
    table: str
    items: tuple[dict[str, Any], ...]
    scanned: int

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = sorted(self.items, key=lambda i: str(i.get("id", "")))
        cols = ITEM_COLUMNS + sorted({k for i in rows for k in i} - set(ITEM_COLUMNS))
        return pd.DataFrame(rows, columns=cols)

    @property
    def malformed(self) -> list[dict[str, Any]]:
        """Items that are not shaped like the workshop's (3.4): the keys, and id = customerId:itemId."""
        return [
            i
            for i in self.items
            if not set(ITEM_COLUMNS) <= set(i) or i["id"] != f"{i['customerId']}:{i['itemId']}"
        ]

    @property
    def ok(self) -> bool:
        return bool(self.items) and not self.malformed

    def verdict(self) -> str:
        if not self.items:
            return (
                f"{self.table} is empty: carts has not stored a cart item yet (add one in the UI)."
            )
        if self.malformed:
            return (
                f"{len(self.malformed)} item(s) in {self.table} are not shaped like carts' items."
            )
        return (
            f"carts is writing to {self.table}: {len(self.items)} item(s), each shaped like the "
            "workshop's {id: <customerId>:<itemId>, customerId, itemId, quantity, unitPrice}."
        )

    def blocks(self) -> list[Block]:
        out: list[Block] = [Sentence(self.verdict(), "ok" if self.ok else "warn")]
        if self.items:
            out.append(Table(self.frame.head(SHOWN_ITEMS)))
        return out


def scan_items(dynamodb: DynamoDBClient, table: str, limit: int = 100) -> ScanResult:
    """``aws dynamodb scan --table-name <table>``, the first ``limit`` items."""
    try:
        got = dynamodb.scan(TableName=table, Limit=limit)
    except dynamodb.exceptions.ResourceNotFoundException:
        raise NotFound(
            f"DynamoDB table {table!r} does not exist in this account and region."
        ) from None
    items = tuple({k: _plain(v) for k, v in item.items()} for item in got.get("Items", []))
    return ScanResult(table, items, int(got.get("ScannedCount", len(items))))
