"""CloudWatch Logs paging as AWS documents it (botocore's ``logs`` model), against botocore's
Stubber: pages may be partial or empty before the end."""

from __future__ import annotations

from helpers import StubbedAWS, aws_example

from runbook_lib.logs import DENIAL_PATTERN, read_stream, search

GROUP, STREAM = "my-logs", "20150601"


def test_get_log_events_is_followed_until_the_token_comes_back() -> None:
    """get-log-events' example is the first page; an empty page in the middle does not end the
    read; the end is the page that hands back the token it was given."""
    aws = StubbedAWS()
    first = aws_example("logs", "get-log-events")
    forward = first["nextForwardToken"]
    ask = {"logGroupName": GROUP, "logStreamName": STREAM, "startFromHead": True}
    aws.add("logs", "get_log_events", first, ask)
    empty = {"events": [], "nextForwardToken": "f/2", "nextBackwardToken": "b/2"}
    aws.add("logs", "get_log_events", empty, {**ask, "nextToken": forward})
    last = {
        "events": [{"timestamp": 1433190184360, "message": "Example Event 3"}],
        "nextForwardToken": "f/3",
        "nextBackwardToken": "b/3",
    }
    aws.add("logs", "get_log_events", last, {**ask, "nextToken": "f/2"})
    end = {"events": [], "nextForwardToken": "f/3", "nextBackwardToken": "b/4"}
    aws.add("logs", "get_log_events", end, {**ask, "nextToken": "f/3"})
    events = read_stream(aws.client("logs"), GROUP, STREAM)
    assert aws.pending() == {}
    assert [e["message"] for e in events] == [
        "Example Event 1",
        "Example Event 1",
        "Example Event 2",
        "Example Event 3",
    ]


def test_filter_log_events_is_followed_until_there_is_no_token() -> None:
    aws = StubbedAWS()
    ask = {"logGroupName": GROUP, "filterPattern": DENIAL_PATTERN, "logStreamNamePrefix": "carts"}
    aws.add("logs", "filter_log_events", {"events": [], "nextToken": "n1"}, ask)
    hit = {"logStreamName": "carts/a/1", "timestamp": 5, "message": "is not authorized to perform"}
    aws.add(
        "logs",
        "filter_log_events",
        {"events": [hit], "nextToken": "n2"},
        {**ask, "nextToken": "n1"},
    )
    aws.add("logs", "filter_log_events", {"events": []}, {**ask, "nextToken": "n2"})
    assert search(aws.client("logs"), GROUP, prefix="carts") == [hit]
    assert aws.pending() == {}


def test_an_empty_prefix_searches_the_whole_group_and_names_go_by_the_hundred() -> None:
    """logStreamNamePrefix is 1 to 512 characters and logStreamNames at most 100: an empty
    prefix is not sent, and 150 streams are asked in two batches."""
    aws = StubbedAWS()
    aws.add(
        "logs", "filter_log_events", {"events": []}, {"logGroupName": GROUP, "filterPattern": "x"}
    )
    assert search(aws.client("logs"), GROUP, "x", prefix="") == []
    names = [f"s{i}" for i in range(150)]
    for batch in (names[:100], names[100:]):
        ask = {"logGroupName": GROUP, "filterPattern": "x", "logStreamNames": batch}
        event = {"logStreamName": batch[0], "timestamp": len(batch), "message": "m"}
        aws.add("logs", "filter_log_events", {"events": [event]}, ask)
    found = search(aws.client("logs"), GROUP, "x", streams=names)
    assert [e["logStreamName"] for e in found] == ["s100", "s0"]  # oldest first
    assert aws.pending() == {}


def test_a_stream_that_does_not_exist_reads_as_no_events() -> None:
    aws = StubbedAWS()
    aws.error(
        "logs",
        "get_log_events",
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    )
    assert read_stream(aws.client("logs"), GROUP, STREAM) == []
