"""What a result says, as blocks: each result describes itself once (``Shows.blocks``), and
:mod:`runbook_lib.shows` renders the same blocks as text for a log and as HTML for JupyterLab,
so the two cannot drift apart.

The set is small on purpose: a sentence (with a tone, and an optional label such as
``Diagnosis``), a heading over what follows, preformatted text (a policy, a log excerpt, a
command), a diff, a table (a pandas DataFrame) and a list whose entries are blocks themselves.
Nothing here knows about colours, HTML or widgets: a tone says what a sentence means, the
renderer says how that looks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

#: What a sentence means to the reader: it worked, look twice, it failed, for your information.
Tone = Literal["ok", "warn", "fail", "info"]

#: The one format for a time of day in every result (ECS events, task tables).
TIME_FORMAT = "%H:%M:%S"


@dataclass(frozen=True)
class Sentence:
    """A sentence. With a ``tone`` it stands out (in colour in JupyterLab); a ``label`` names
    what it is (``Diagnosis``, ``Warning``, ``OK``) in front of it."""

    text: str
    tone: Tone | None = None
    label: str = ""


@dataclass(frozen=True)
class Heading:
    """A short line over the blocks that follow (``Newest stopped tasks:``)."""

    text: str


@dataclass(frozen=True)
class Pre:
    """Preformatted text, kept as it is: a policy document, log lines, a command."""

    text: str


@dataclass(frozen=True)
class Diff:
    """A unified diff (``---``/``+++``/``@@`` lines, then ``+``, ``-`` and context lines)."""

    text: str


@dataclass(frozen=True, eq=False)
class Table:
    """A table of text cells, one row per record, the frame's order kept.

    ``tones``: per column, the tone of a cell by its value (a task's ``RUNNING`` is ``ok``), so
    that states stand out in JupyterLab; the text rendering shows the values alone. ``empty``:
    what to say when there is no row. ``name``: the table's kind, which pages and tests find it
    by (``tasks``: the HTML class ``carts-tasks``).
    """

    frame: pd.DataFrame
    tones: Mapping[str, Mapping[str, Tone]] = field(default_factory=dict)
    empty: str = "(none)"
    name: str = ""


@dataclass(frozen=True)
class Items:
    """A list, numbered or not, whose entries are one or more blocks each (a write: what it
    does, its command, its undo)."""

    entries: tuple[tuple[Block, ...], ...]
    numbered: bool = False


Block = Sentence | Heading | Pre | Diff | Table | Items


def items(sentences: list[Sentence] | list[str], numbered: bool = False) -> Items:
    """A list of one sentence per entry."""
    return Items(
        tuple((s if isinstance(s, Sentence) else Sentence(s),) for s in sentences), numbered
    )


def fmt_time(value: object) -> str:
    """A time as ``HH:MM:SS``; nothing for a time that is missing (None, or pandas' NaT, which
    is a datetime that cannot strftime); anything else as its text."""
    if value is None or value != value:  # NaT and NaN are not equal to themselves
        return ""
    if isinstance(value, datetime):
        return value.strftime(TIME_FORMAT)
    return str(value)


def fmt_cell(value: object) -> str:
    """A table cell as text: times through :func:`fmt_time`, missing values (None, NaN, NaT,
    pandas' NA) as nothing."""
    if type(value).__name__ == "NAType":  # pandas.NA: its comparisons answer NA, not a bool
        return ""
    if value is None or value != value:
        return ""
    if isinstance(value, datetime):
        return fmt_time(value)
    return str(value)
