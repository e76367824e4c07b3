"""The CloudWatch Logs edge: read a stream to its end and search a group, every page of each.

AWS's paging rules (botocore's ``logs`` model, AWS-FACTS.md section 4), which a loop over one
page gets wrong on a real account:

- ``GetLogEvents``: "A returned page might only be partially full, or even empty. ... As long as
  the nextBackwardToken or nextForwardToken returned is NOT equal to the nextToken that you passed
  into the API call, there might be more log events available." Paging forward needs
  ``startFromHead=True`` with each ``nextForwardToken``. It has no botocore paginator.
- ``FilterLogEvents``: pages may be partial or empty too; "If the results don't include a
  nextToken, then pagination is finished."
- Reading the end of a stream goes backward (``startFromHead=False``), following
  ``nextBackwardToken`` past empty pages the same way.
- ``logStreamNamePrefix`` is 1 to 512 characters: an empty prefix is refused by botocore, so a
  search over a whole group sends none. ``logStreamNames`` takes at most 100 names.

A missing group or stream (``ResourceNotFoundException``) reads as no events: a task that never
ran has no stream, and the diagnosis says what it could not read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_logs.type_defs import (
        FilterLogEventsRequestTypeDef,
        GetLogEventsRequestTypeDef,
    )

#: What every AccessDenied sentence holds (the CloudWatch filter syntax for an exact phrase; it is
#: case-sensitive, as AWS writes the sentence).
DENIAL_PATTERN = '"is not authorized to perform"'
#: Pages read at most per call of a function here: a bound for an endpoint that never ends a
#: stream (each page may hold 10,000 events, so this is far beyond any carts task's log).
MAX_PAGES = 500
#: ``logStreamNames`` holds at most this many names (botocore: ``max: 100``).
MAX_STREAM_NAMES = 100


def read_stream(
    logs: CloudWatchLogsClient,
    group: str,
    stream: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_pages: int = MAX_PAGES,
) -> list[dict[str, Any]]:
    """Every event of ``stream`` (between ``start_ms`` and ``end_ms``, epoch milliseconds, when
    given), oldest first: ``get_log_events`` from the head, following ``nextForwardToken`` until
    AWS hands back the token it was given."""
    request: GetLogEventsRequestTypeDef = {
        "logGroupName": group,
        "logStreamName": stream,
        "startFromHead": True,
    }
    if start_ms is not None:
        request["startTime"] = start_ms
    if end_ms is not None:
        request["endTime"] = end_ms
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(max_pages):
        if token:
            request["nextToken"] = token
        try:
            page = logs.get_log_events(**request)
        except logs.exceptions.ResourceNotFoundException:
            return events
        events += _plain(page.get("events", []))
        following = page.get("nextForwardToken")
        if not following or following == token:
            break
        token = following
    return events


def read_tail(
    logs: CloudWatchLogsClient, group: str, stream: str, lines: int
) -> list[dict[str, Any]]:
    """The stream's last ``lines`` events: ``get_log_events`` from the end, following
    ``nextBackwardToken`` past empty pages until enough are read or the token repeats."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        request: GetLogEventsRequestTypeDef = {
            "logGroupName": group,
            "logStreamName": stream,
            "limit": lines,
            "startFromHead": False,
        }
        if token:
            request["nextToken"] = token
        try:
            page = logs.get_log_events(**request)
        except logs.exceptions.ResourceNotFoundException:
            break
        events = _plain(page.get("events", [])) + events
        following = page.get("nextBackwardToken")
        if len(events) >= lines or not following or following == token:
            break
        token = following
    return events[-lines:]


def search(
    logs: CloudWatchLogsClient,
    group: str,
    pattern: str = DENIAL_PATTERN,
    *,
    streams: Sequence[str] | None = None,
    prefix: str | None = None,
    start_ms: int | None = None,
    max_pages: int = MAX_PAGES,
) -> list[dict[str, Any]]:
    """Events of ``group`` matching ``pattern``, in ``streams`` (names) or under ``prefix``, or in
    the whole group when neither is given: ``filter_log_events`` following ``nextToken`` until
    there is none. An empty ``prefix`` means the whole group (AWS refuses an empty one).
    ``streams`` may be longer than the API's 100 names: it is asked in batches."""
    if streams is not None:
        names = [s for s in dict.fromkeys(streams) if s]
        if not names:
            return []
        found: list[dict[str, Any]] = []
        for i in range(0, len(names), MAX_STREAM_NAMES):
            scope: FilterLogEventsRequestTypeDef = {"logStreamNames": names[i : i + 100]}
            found += _filter(logs, group, pattern, start_ms, max_pages, scope)
        return sorted(found, key=lambda e: (e.get("timestamp", 0), e.get("eventId", "")))
    return _filter(
        logs, group, pattern, start_ms, max_pages, {"logStreamNamePrefix": prefix} if prefix else {}
    )


def _filter(
    logs: CloudWatchLogsClient,
    group: str,
    pattern: str,
    start_ms: int | None,
    max_pages: int,
    scope: FilterLogEventsRequestTypeDef,
) -> list[dict[str, Any]]:
    request: FilterLogEventsRequestTypeDef = {
        **scope,
        "logGroupName": group,
        "filterPattern": pattern,
    }
    if start_ms is not None:
        request["startTime"] = start_ms
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(max_pages):
        if token:
            request["nextToken"] = token
        try:
            page = logs.filter_log_events(**request)
        except logs.exceptions.ResourceNotFoundException:
            return events
        events += _plain(page.get("events", []))
        token = page.get("nextToken")
        if not token:
            break
    return events


def lines_of(events: Sequence[dict[str, Any]]) -> list[str]:
    """The events' text, one line each (awslogs sends one event per line; a writer that sent a
    block is split)."""
    return [ln for e in events for ln in str(e.get("message", "")).splitlines()]


def _plain(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Typed answers as plain events (what the searches and the pure readers take)."""
    return [dict(e) for e in events]
