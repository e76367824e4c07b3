"""The lab's clocks: how long things take, and what time AWS says it is.

Durations ("the image pull takes 8 s") are simulated seconds. Two clocks turn them into time:

- :class:`Clock` (``clock="real"``) runs on the wall clock: each simulated second lasts
  ``time_scale`` real seconds, a daemon thread plays the lab's processes as they fall due, and the
  timestamps AWS shows (``createdAt``, ``stoppedAt``, log event times) are the wall clock's. This is
  the lab of a learner in JupyterLab and of ``python -m runbook_lib.lab serve``.
- :class:`SteppedClock` (``clock="stepped"``) stands still until somebody advances it
  (:meth:`runbook_lib.lab.Lab.advance`). Time starts at :data:`STEPPED_EPOCH`, one simulated second
  is one second of this clock, and nothing happens between two steps, however long the machine
  takes to serve a request. The same steps give the same history on any machine: the golden
  notebook and the tests use it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

#: Where a stepped clock starts: a fixed instant, so that every time a reader sees comes out the
#: same on every run. A workshop morning (UTC).
STEPPED_EPOCH = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

#: The lab's clocks by name (``LabConfig.clock``).
CLOCKS = ("real", "stepped")


class Clock:
    """The wall clock; simulated seconds last ``time_scale`` real seconds each."""

    #: Whether time moves only when advanced.
    stepped = False

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale

    def real(self, simulated_s: float) -> float:
        """Seconds of this clock that ``simulated_s`` simulated seconds last."""
        return simulated_s * self.time_scale

    def simulated(self, real_s: float) -> float:
        """Simulated seconds that ``real_s`` seconds of this clock amount to."""
        return real_s / self.time_scale

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for scheduling)."""
        return time.monotonic()

    def now(self) -> datetime:
        """What time AWS says it is: timezone-aware UTC."""
        return datetime.now(UTC)

    def epoch_ms(self) -> int:
        """:meth:`now` in milliseconds since the epoch (CloudWatch Logs' unit)."""
        return time.time_ns() // 1_000_000


class SteppedClock(Clock):
    """A clock that moves only when :meth:`advance_to` is called; one simulated second per
    second. Its :meth:`now` is :data:`STEPPED_EPOCH` plus the seconds advanced so far."""

    stepped = True

    def __init__(self, epoch: datetime = STEPPED_EPOCH) -> None:
        super().__init__(time_scale=1.0)
        self.epoch = epoch
        self._t = 0.0

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self._t)

    def epoch_ms(self) -> int:
        return round((self.epoch.timestamp() + self._t) * 1000)

    def restart(self) -> None:
        """Back to the epoch (a lab that reset its whole world starts its time again)."""
        self._t = 0.0

    def advance_to(self, t: float) -> None:
        """Move to ``t`` seconds after the epoch (never back)."""
        self._t = max(self._t, t)


def make_clock(kind: str, time_scale: float) -> Clock:
    """The clock a lab runs on: ``"real"`` (scaled wall time) or ``"stepped"``."""
    return SteppedClock() if kind == "stepped" else Clock(time_scale)
