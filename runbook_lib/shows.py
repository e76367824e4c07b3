"""Results that show themselves: ``_repr_html_`` in JupyterLab, ``__str__`` everywhere else.

A result describes itself once, as blocks (:mod:`runbook_lib.blocks`); this module renders the
same blocks as plain text (what papermill logs and the CLI print) and as HTML. It is the one
place where a tone becomes a colour: no other module spells a colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from runbook_lib.blocks import Block, Diff, Heading, Items, Pre, Sentence, Table, Tone, fmt_cell

#: A tone as the colour of a sentence (and of a diff's added and removed lines).
TONE_COLOURS: dict[Tone, str] = {
    "ok": "#1b7f3b",
    "warn": "#a15c00",
    "fail": "#b00020",
    "info": "#1b5e9f",
}
#: A tone as the background of a table cell (light, so the value stays readable).
TONE_TINTS: dict[Tone, str] = {
    "ok": "#d7f5df",
    "warn": "#fde2c8",
    "fail": "#fbdada",
    "info": "#dceaf7",
}


class Shows:
    """Mixin: a result that lists its :meth:`blocks`; text and HTML both come from them.

    IPython's text/plain is the object's ``__str__`` (a readable log, not a repr).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # IPython walks the MRO and takes a class's own __repr__ (dataclasses make one) before a
        # base class's _repr_pretty_: put _repr_pretty_ on every subclass itself.
        cls._repr_pretty_ = Shows._repr_pretty_  # type: ignore[method-assign]

    def blocks(self) -> list[Block]:
        """What the result says, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not describe itself")

    def __str__(self) -> str:
        return to_text(self.blocks())

    def _repr_html_(self) -> str:
        return to_html(self.blocks())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# --- text ---------------------------------------------------------------------------------------


def to_text(blocks: Sequence[Block]) -> str:
    """The blocks as lines for a log. A blank line goes before a heading, and before a labelled
    sentence (``DIAGNOSIS: ...``) that ends what came before it; nothing else is added."""
    lines: list[str] = []
    prev: Block | None = None
    for block in blocks:
        if prev is not None and _gap(prev, block):
            lines.append("")
        lines.append(_text(block))
        prev = block
    return "\n".join(lines)


def _gap(prev: Block, block: Block) -> bool:
    if isinstance(block, Heading):
        return True
    if isinstance(block, Sentence) and block.label:
        return not (isinstance(prev, Sentence) and prev.label)
    return False


def _text(block: Block) -> str:
    if isinstance(block, Sentence):
        return f"{block.label.upper()}: {block.text}" if block.label else block.text
    if isinstance(block, Heading):
        return block.text
    if isinstance(block, Pre | Diff):
        return block.text.rstrip()
    if isinstance(block, Table):
        return _table_text(block)
    return _items_text(block)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    header = [str(c) for c in table.frame.columns]
    rows = [[fmt_cell(v) for v in row] for row in table.frame.itertuples(index=False, name=None)]
    return header, rows


def _table_text(table: Table) -> str:
    """Columns left-aligned under a header and a rule, two spaces apart."""
    if table.frame.empty:
        return table.empty
    header, rows = _cells(table)
    flat = [[" ".join(c.split("\n")) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in flat) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in flat
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _items_text(block: Items) -> str:
    out: list[str] = []
    for n, entry in enumerate(block.entries, 1):
        marker = f"{n}. " if block.numbered else "- "
        inner = "\n".join(_text(b) for b in entry).splitlines() or [""]
        out.append(marker + inner[0])
        out += [" " * len(marker) + line if line else "" for line in inner[1:]]
    return "\n".join(out)


# --- HTML ---------------------------------------------------------------------------------------


def to_html(blocks: Sequence[Block]) -> str:
    """The blocks as HTML for JupyterLab; every piece of text is escaped."""
    return "".join(_html(b) for b in blocks)


def _html(block: Block) -> str:
    if isinstance(block, Sentence):
        return f"<p{_colour(block.tone)}>{_sentence_html(block)}</p>"
    if isinstance(block, Heading):
        return f"<p><b>{escape(block.text)}</b></p>"
    if isinstance(block, Pre):
        return f"<pre>{escape(block.text.rstrip())}</pre>"
    if isinstance(block, Diff):
        return _diff_html(block)
    if isinstance(block, Table):
        return _table_html(block)
    tag = "ol" if block.numbered else "ul"
    entries = "".join(f"<li>{_entry_html(entry)}</li>" for entry in block.entries)
    return f"<{tag}>{entries}</{tag}>"


def _colour(tone: Tone | None) -> str:
    return f' style="color:{TONE_COLOURS[tone]}"' if tone else ""


def _sentence_html(s: Sentence) -> str:
    if s.label:
        return f"<b>{escape(s.label)}:</b> {escape(s.text)}"
    return f"<b>{escape(s.text)}</b>" if s.tone else escape(s.text)


def _entry_html(entry: tuple[Block, ...]) -> str:
    # A list entry that is one sentence reads as a line, not as a paragraph in a list.
    if len(entry) == 1 and isinstance(entry[0], Sentence):
        s = entry[0]
        return f"<span{_colour(s.tone)}>{_sentence_html(s)}</span>" if s.tone else _sentence_html(s)
    return to_html(entry)


def _diff_html(block: Diff) -> str:
    lines = []
    for line in block.text.rstrip().split("\n"):
        tone: Tone | None = None
        if line.startswith("+") and not line.startswith("+++"):
            tone = "ok"
        elif line.startswith("-") and not line.startswith("---"):
            tone = "fail"
        elif line.startswith("@@"):
            tone = "info"
        lines.append(f"<span{_colour(tone)}>{escape(line)}</span>" if tone else escape(line))
    return '<pre class="carts-diff">' + "\n".join(lines) + "</pre>"


def _table_html(table: Table) -> str:
    if table.frame.empty:
        return f"<p>{escape(table.empty)}</p>"
    header, rows = _cells(table)
    columns = [table.tones.get(c, {}) for c in header]
    head = "".join(f"<th>{escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{_tint(tones.get(cell))}>{escape(cell)}</td>"
            for cell, tones in zip(row, columns, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    kind = f" carts-{table.name}" if table.name else ""
    return (
        f'<table class="carts-table{kind}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _tint(tone: Tone | None) -> str:
    return f' style="background-color:{TONE_TINTS[tone]}"' if tone else ""
