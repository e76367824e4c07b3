"""Container output into CloudWatch Logs, the way the awslogs driver ships it.

One log event per line; empty lines are dropped (CloudWatch Logs rejects empty messages).
Timestamps come from the lab's clock and never decrease within a stream, because CloudWatch Logs
rejects events out of order. Events are stored on the stream itself, as the driver's own
``PutLogEvents`` would have stored them when they happened: a stepped clock's instants lie in the
past, where moto's API-level check (events older than 14 days are rejected) would drop them.
"""

from __future__ import annotations

from runbook_lib.lab.backends import Backends
from runbook_lib.lab.clock import Clock

#: Streams the lab keeps per group. CloudWatch keeps every stream, but a lab that fails a task
#: every fraction of a second would otherwise grow without end; tasks older than the newest
#: hundred are no longer listed by ECS either.
KEEP_STREAMS = 300


class LogWriter:
    """Writes lines to streams of one log group, in moto's Logs backend (caller holds the lock)."""

    def __init__(
        self, backends: Backends, group: str, clock: Clock, keep: int = KEEP_STREAMS
    ) -> None:
        self.backends = backends
        self.group = group
        self.clock = clock
        self.keep = keep
        self._last_ms: dict[tuple[str, str], int] = {}

    def open(self, stream: str, group: str | None = None) -> None:
        """Create ``stream`` in the group (the awslogs driver does, as the container starts);
        ``group`` defaults to the writer's (a sidecar may log to another)."""
        group_name = group or self.group
        self.backends.logs.create_log_stream(group_name, stream)
        self._last_ms[(group_name, stream)] = 0
        while len(self._last_ms) > self.keep:
            oldest_group, oldest = next(iter(self._last_ms))
            del self._last_ms[(oldest_group, oldest)]
            found = self.backends.logs.groups.get(oldest_group)
            if found is not None and oldest in found.streams:
                found.delete_log_stream(oldest)

    def write(self, stream: str, *lines: str, group: str | None = None) -> None:
        """Append ``lines`` (each may hold several lines of text) as log events, stamped now."""
        events = [line for text in lines for line in text.splitlines() if line.strip()]
        if not events:
            return
        group_name = group or self.group
        key = (group_name, stream)
        stamp = max(self.clock.epoch_ms(), self._last_ms.get(key, 0))
        self._last_ms[key] = stamp
        found = self.backends.logs.groups.get(group_name)
        if found is None or stream not in found.streams:
            return  # somebody deleted the group or stream: the driver's lines go nowhere
        found.put_log_events(stream, [{"timestamp": stamp, "message": m} for m in events])

    def forget(self) -> None:
        """Drop what the writer remembers of streams (after the log group was recreated)."""
        self._last_ms.clear()
