"""The fleet's summary: one row per target, from its run record; the files, the table, the exit.

A row says what the target's record says, in the terms a facilitator sorts by: the account and
region, the ``cause`` the diagnosis found, the ``plan`` (``create``/``replace``/``unchanged``),
whether it was ``written``, a short ``outcome`` (below), the ``exit`` a ``carts-runbook run`` of
it gives (0 fixed or nothing to do, 1 failed, 2 bad input; 130 interrupted), the seconds, the AWS
calls, the link to its HTML, and the undo command of anything it wrote.

``outcome`` is one of :data:`OUTCOMES`; ``detail`` keeps the record's own sentence (the error of
a failed step, with the step).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from html import escape
from pathlib import Path
from typing import Any

from runbook_lib.fleet.records import HTML, undo_of

SUMMARY_JSON = "fleet-summary.json"
SUMMARY_CSV = "fleet-summary.csv"
SUMMARY_HTML = "fleet-summary.html"
SUMMARY_NOTEBOOK = "fleet-summary.ipynb"

#: The short outcomes, the good ones first.
OUTCOMES = (
    "fixed",  # the policy was written and a carts task runs with it
    "already fixed",  # nothing to write: the role had the policy, carts runs
    "rolled back",  # fixed, then restored as it was (rollback: true)
    "planned",  # plan only (apply false): nothing written
    "nothing to change",  # the plan was unchanged, no watch
    "failed",  # a step failed (its detail says which and why)
    "worker lost",  # the worker died and the run could not safely run again
    "interrupted",  # Ctrl-C stopped it; the record says where and the undo
    "not started",  # the fleet stopped before it
    "not run again",  # --resume left it: its last run may have written (see detail)
)
GOOD = frozenset({"fixed", "already fixed", "rolled back", "planned", "nothing to change"})


@dataclass(frozen=True)
class Row:
    target: str
    account: str
    region: str
    cause: str
    plan: str
    written: bool
    outcome: str
    exit: int | None
    seconds: float | None
    aws_calls: int | None
    html: str
    detail: str
    failed_step: str
    undo: str
    attempts: int
    resumed: bool

    @property
    def good(self) -> bool:
        return self.outcome in GOOD


COLUMNS = tuple(f.name for f in fields(Row))


def short_outcome(record: dict[str, Any]) -> str:
    """The record's outcome as one of :data:`OUTCOMES`."""
    text = str(record.get("outcome") or "")
    steps = record.get("steps") or {}
    written = bool((steps.get("apply") or {}).get("written"))
    if text.startswith("fixed, then rolled back"):
        return "rolled back"
    if text.startswith("fixed"):
        return "fixed" if written else "already fixed"
    if text.startswith("planned"):
        return "planned"
    if text.startswith("checked"):
        return "nothing to change"
    if text in ("interrupted", "worker lost", "failed"):
        return text
    return "failed"


def row_from_record(
    target: str,
    record: dict[str, Any] | None,
    *,
    account: str = "",
    region: str = "",
    exit_code: int | None = None,
    seconds: float | None = None,
    attempts: int = 0,
    resumed: bool = False,
    outcome: str | None = None,
    detail: str = "",
) -> Row:
    """One summary row from a target's record (None: the target has none).

    ``account`` and ``region`` are what the targets file says, used when the record has no
    better (the caller's account is the record's, once connected). ``outcome`` forces the short
    outcome (``not started``, ``not run again``, ``worker lost``).
    """
    rec = record or {}
    steps = rec.get("steps") or {}
    params = rec.get("parameters") or {}
    fleet = rec.get("fleet") or {}
    diag = steps.get("diagnose") or {}
    plan = steps.get("plan") or {}
    applied = steps.get("apply") or {}
    short = outcome or (short_outcome(rec) if record else "not started")
    if exit_code is None and record and short in GOOD:
        exit_code = 0
    error = str(rec.get("error") or "")
    if exit_code is None and short in ("failed", "worker lost", "not run again"):
        exit_code = 2 if error.startswith("ParameterError") else 1
    if exit_code is None and short == "interrupted":
        exit_code = 130
    undo = undo_of(record) or ""
    earlier = [u for u in fleet.get("earlier_undo") or [] if u != undo]
    if earlier and not undo:
        undo = earlier[-1]
    calls = rec.get("aws_call_count")
    return Row(
        target=target,
        account=str((rec.get("caller") or {}).get("account") or account),
        region=str(params.get("region") or region),
        cause=str(diag.get("cause") or ""),
        plan=str(plan.get("action") or ""),
        written=bool(applied.get("written")),
        outcome=short,
        exit=exit_code,
        seconds=seconds if seconds is not None else fleet.get("seconds"),
        aws_calls=int(calls) if isinstance(calls, int) else None,
        html=f"{target}/{HTML}" if record else "",
        detail=detail or _detail(rec),
        failed_step=str(rec.get("failed_step") or ""),
        undo=undo,
        attempts=max(attempts, int(fleet.get("attempt") or 0)),
        resumed=resumed,
    )


def _detail(rec: dict[str, Any]) -> str:
    if rec.get("error"):
        step = rec.get("failed_step")
        return f"{'at ' + str(step) + ': ' if step else ''}{rec['error']}"
    return str(rec.get("outcome") or "")


def exit_code(rows: list[Row]) -> int:
    """The fleet's exit: 0 when every target ended well, 130 when Ctrl-C stopped it, else 1."""
    if any(r.outcome in ("interrupted", "not started") for r in rows):
        return 130
    return 0 if all(r.good for r in rows) else 1


# --- files ----------------------------------------------------------------------------------


def write_json(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    data = {**meta, "columns": list(COLUMNS), "targets": [asdict(r) for r in rows]}
    _atomic(path, json.dumps(data, indent=2) + "\n")


def write_csv(rows: list[Row], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    _atomic(path, buf.getvalue())


def html_table(rows: list[Row]) -> str:
    """The table as HTML, each target linking to its run's HTML (a fallback page and tests)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS if c != "html")
    body = []
    for r in rows:
        cells = []
        for c in COLUMNS:
            if c == "html":
                continue
            value = getattr(r, c)
            text = escape("" if value is None else str(value))
            if c == "target" and r.html:
                text = f'<a href="{escape(r.html)}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        body.append(f'<tr class="{escape(r.outcome.replace(" ", "-"))}">{"".join(cells)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_plain_html(rows: list[Row], path: Path, title: str) -> None:
    """A plain HTML summary, written when the summary notebook could not run."""
    counts = ", ".join(f"{n} {o}" for o, n in Counter(r.outcome for r in rows).items())
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(counts)}</p>{html_table(rows)}</body></html>\n"
    )
    _atomic(path, page)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --- the terminal ---------------------------------------------------------------------------

_TEXT_COLUMNS = ("target", "account", "region", "cause", "plan", "written", "outcome", "exit")


def text_table(rows: list[Row]) -> str:
    """The table for the terminal: the main columns, then seconds and calls; failures' details
    below it."""
    cols = [*_TEXT_COLUMNS, "seconds", "aws_calls"]

    def cell(r: Row, c: str) -> str:
        v = getattr(r, c)
        if v is None:
            return "-"
        if c == "seconds":
            return f"{v:.1f}"
        if c == "written":
            return "yes" if v else "no"
        return str(v) or "-"

    table = [[c.replace("_", " ") for c in cols]] + [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{r.target}: {r.detail}" for r in rows if not r.good and r.detail]
    notes += [f"{r.target}: to undo: {r.undo}" for r in rows if r.undo and not r.good]
    return "\n".join([line.rstrip() for line in lines] + (["", *notes] if notes else []))


def counts_line(rows: list[Row]) -> str:
    counts = Counter(r.outcome for r in rows)
    parts = [f"{counts[o]} {o}" for o in OUTCOMES if counts[o]]
    return f"{len(rows)} targets: " + ", ".join(parts)
