"""Verify the integration (workshop 3.4): what carts wrote to its table."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from runbook_lib.errors import NotFound

if TYPE_CHECKING:
    import pandas as pd

ITEM_COLUMNS = ["id", "customerId", "itemId", "quantity", "unitPrice"]


def _plain(attr: dict[str, Any]) -> Any:
    ((kind, value),) = attr.items()
    if kind == "N":
        return float(value) if "." in value else int(value)
    return value


@dataclass(frozen=True)
class ScanResult:
    table: str
    items: tuple[dict[str, Any], ...]
    scanned: int

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = sorted(self.items, key=lambda i: str(i.get("id", "")))
        cols = ITEM_COLUMNS + sorted({k for i in rows for k in i} - set(ITEM_COLUMNS))
        return pd.DataFrame(rows, columns=cols)

    def verdict(self) -> str:
        if self.items:
            return f"carts is writing to {self.table}: {len(self.items)} item(s) in the table."
        return f"{self.table} is empty: carts has not stored a cart item yet (add one in the UI)."

    def __str__(self) -> str:
        body = self.frame.head(10).to_string(index=False) if self.items else ""
        return f"{self.verdict()}\n{body}".rstrip()

    def _repr_html_(self) -> str:
        html = f"<p><b>{escape(self.verdict())}</b></p>"
        if self.items:
            html += self.frame.head(10).to_html(index=False)
        return html


def scan_items(dynamodb: Any, table: str, limit: int = 100) -> ScanResult:
    """``aws dynamodb scan --table-name <table>``, the first ``limit`` items."""
    try:
        got = dynamodb.scan(TableName=table, Limit=limit)
    except dynamodb.exceptions.ResourceNotFoundException:
        raise NotFound(
            f"DynamoDB table {table!r} does not exist in this account and region."
        ) from None
    items = tuple({k: _plain(v) for k, v in item.items()} for item in got.get("Items", []))
    return ScanResult(table, items, int(got.get("ScannedCount", len(items))))
