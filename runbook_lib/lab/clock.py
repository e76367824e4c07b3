"""The lab's two clocks: wall time for what AWS shows, scaled time for how long things take.

Timestamps the learner sees (``createdAt``, ``stoppedAt``, log event times) come from the real
wall clock, because CloudWatch Logs rejects events from the future and out of order. Durations
("the image pull takes 8 s") are simulated seconds, each lasting ``time_scale`` real seconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Converts simulated seconds to real ones and reads the wall clock."""

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale

    def real(self, simulated_s: float) -> float:
        """Real seconds that ``simulated_s`` simulated seconds last."""
        return simulated_s * self.time_scale

    def simulated(self, real_s: float) -> float:
        """Simulated seconds that ``real_s`` real seconds amount to."""
        return real_s / self.time_scale

    @staticmethod
    def monotonic() -> float:
        """Real seconds on a clock that never goes back (for scheduling)."""
        return time.monotonic()

    @staticmethod
    def now() -> datetime:
        """The wall clock, timezone-aware UTC (what AWS timestamps are)."""
        return datetime.now(UTC)

    @staticmethod
    def epoch_ms() -> int:
        """The wall clock in milliseconds since the epoch (CloudWatch Logs' unit)."""
        return time.time_ns() // 1_000_000
