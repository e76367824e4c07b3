"""CloudWatch Logs' pages, as its API reference describes them (bc: ``logs`` 2014-03-28;
AWS-FACTS 4). Pure: events in, one page and its tokens out.

``GetLogEvents``: "A returned page might only be partially full, or even empty. ... As long as
the nextBackwardToken or nextForwardToken returned is NOT equal to the nextToken that you passed
into the API call, there might be more log events available. ... The returned tokens are never
null." and, for ``nextForwardToken``, "If you have reached the end of the stream, it returns the
same token you passed in." ``FilterLogEvents``: the same "partially full, or even empty" pages,
and "If the results don't include a nextToken, then pagination is finished."

With the lab's ``log_pages`` knob on, every page holds at most :data:`PAGE_EVENTS` events and is
preceded by an empty one (reading forward from the head, or backward from the newest event, the
default), so a reader that stops at the first short or empty page misses what follows. With it off, ``FilterLogEvents`` answers whole pages (up to ``limit``) and
``GetLogEvents`` is moto's own.

Tokens are opaque to a client. Here a ``GetLogEvents`` token is ``f/`` or ``b/`` and 56 digits,
like AWS's and moto's; the number is ``2 * position + served``, where ``served`` says whether
the empty page at that position was already answered. A ``FilterLogEvents`` token is the same
number in base 36 after the log group's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

#: Events per page when the knob is on: small, so that a stream of a failed carts task (about
#: 40 events) takes several pages.
PAGE_EVENTS = 5
#: CloudWatch Logs' own page bound: "up to 1 MB of log events ... up to 10,000 log events".
MAX_EVENTS = 10_000

E = TypeVar("E")


class BadToken(ValueError):
    """A token this lab did not hand out ("The specified nextToken is invalid.")."""


@dataclass(frozen=True)
class Page:
    """One page of ``GetLogEvents``: events and both tokens (never null)."""

    events: list[Any]
    backward: str
    forward: str


def _token(direction: str, position: int, served: bool) -> str:
    return f"{direction}/{2 * position + int(served):056d}"


def _read_token(token: str) -> tuple[str, int, bool]:
    direction, _, number = token.partition("/")
    if direction not in ("f", "b") or not number.isdigit():
        raise BadToken(token)
    n = int(number)
    return direction, n // 2, bool(n % 2)


def get_page(
    events: list[E], token: str | None, start_from_head: bool, limit: int | None, small: bool
) -> Page:
    """The page of ``events`` (oldest first) that ``GetLogEvents`` answers.

    ``small``: the ``log_pages`` knob (pages of :data:`PAGE_EVENTS`, each after an empty one).
    Without a token, ``start_from_head`` false reads the newest events (AWS's default).
    """
    size = min(limit or MAX_EVENTS, PAGE_EVENTS if small else MAX_EVENTS)
    end = len(events)
    if token is None:
        direction, position = ("f", 0) if start_from_head else ("b", end)
        served = not small
    else:
        direction, position, served = _read_token(token)
        position = min(position, end)
    if direction == "b":
        if not served and position > 0:
            # An empty page before the beginning, with a token that moves on.
            return Page([], _token("b", position, True), _token("f", position, True))
        first = max(position - size, 0)
        if first == position:
            return Page([], token or _token("b", 0, True), _token("f", position, True))
        page = events[first:position]
        return Page(page, _token("b", first, not small), _token("f", position, True))
    if not served and position < end:
        # An empty page before the end, with a token that moves on.
        return Page([], _token("b", position, True), _token("f", position, True))
    last = min(position + size, end)
    if last == position:
        # The end: the same token as was passed in.
        same = token or _token("f", position, served)
        return Page([], _token("b", position, True), same)
    return Page(events[position:last], _token("b", position, True), _token("f", last, not small))


def filter_page(
    events: list[E], group: str, token: str | None, limit: int | None, small: bool
) -> tuple[list[E], str | None]:
    """The page of ``events`` (already filtered, oldest first) that ``FilterLogEvents`` answers,
    and its ``nextToken`` (None when pagination is finished)."""
    size = min(limit or MAX_EVENTS, PAGE_EVENTS if small else MAX_EVENTS)
    position, served = 0, not small
    if token is not None:
        name, _, number = token.rpartition("@")
        if name != group:
            raise BadToken(token)
        try:
            n = int(number, 36)
        except ValueError:
            raise BadToken(token) from None
        position, served = n // 2, bool(n % 2)
    if not served and position < len(events):
        return [], f"{group}@{_base36(2 * position + 1)}"
    last = min(position + size, len(events))
    if last >= len(events):
        return events[position:last], None
    return events[position:last], f"{group}@{_base36(2 * last + int(not small))}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
