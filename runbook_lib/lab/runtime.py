"""Cooperative processes on simulated time, run by one daemon thread.

A process is a generator that yields how many simulated seconds to sleep; whatever it does
between two yields happens at one instant, holding :data:`MOTO_LOCK`, so requests served by the
HTTP server never see a half-made change. A task's lifecycle, the carts app inside it and the
service scheduler's checks are all processes::

    def blink(task):
        task.last_status = "PENDING"
        yield 8.0                      # the image pull takes 8 simulated seconds
        task.last_status = "RUNNING"

On a real clock the thread waits on a condition of the same lock, so code that holds the lock (a
request thread that stopped a task) can wake it at once with :meth:`Runtime.wake`. On a stepped
clock there is no thread: :meth:`Runtime.advance` plays whatever falls due in the caller's thread,
and between two calls the world stands still.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.lab.backends import MOTO_LOCK
from runbook_lib.lab.clock import Clock

log = logging.getLogger("runbook_lib.lab")

#: A process: yields simulated seconds to sleep, may return a value when it ends.
Process = Generator[float, None, Any]


@dataclass(eq=False)
class Proc:
    """A spawned process: cancel it with :meth:`Runtime.cancel` (or its owner's)."""

    name: str
    gen: Process
    owner: object | None
    on_exit: Callable[[Any], None] | None
    alive: bool = True


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    proc: Proc = field(compare=False)


class Runtime:
    """Runs processes in simulated time on one daemon thread."""

    #: A process never sleeps less than this many real seconds (keeps a fast lab from spinning).
    MIN_SLEEP_S = 0.001

    def __init__(self, clock: Clock, name: str = "lab-scheduler") -> None:
        self.clock = clock
        self._cond = threading.Condition(MOTO_LOCK)
        self._heap: list[_Entry] = []
        self._live: set[Proc] = set()
        self._current: Proc | None = None
        #: What broke in processes so far ("name: error"), newest last.
        self.failures: list[str] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._name = name

    # All methods below that touch the heap are called with MOTO_LOCK held.

    def spawn(
        self,
        name: str,
        gen: Process,
        *,
        owner: object | None = None,
        delay_s: float = 0.0,
        on_exit: Callable[[Any], None] | None = None,
    ) -> Proc:
        """Start ``gen`` after ``delay_s`` simulated seconds."""
        proc = Proc(name, gen, owner, on_exit)
        self._live.add(proc)
        self._push(proc, delay_s)
        return proc

    def cancel(self, proc: Proc) -> None:
        """Stop ``proc`` where it is; it runs no further (its ``on_exit`` is not called)."""
        if not proc.alive:
            return
        proc.alive = False
        self._live.discard(proc)
        # A process that cancels itself is still executing: _step closes it when it yields.
        if proc is not self._current:
            proc.gen.close()

    def cancel_owned(self, owner: object) -> None:
        """Cancel every live process of ``owner``."""
        for proc in [p for p in self._live if p.owner is owner]:
            self.cancel(proc)

    def clear(self) -> None:
        """Cancel every process."""
        for proc in list(self._live):
            self.cancel(proc)
        self._heap.clear()

    def wake(self) -> None:
        """Make the thread look at the queue again now."""
        self._cond.notify_all()

    def _push(self, proc: Proc, delay_s: float) -> None:
        due = self.clock.monotonic() + max(self.clock.real(delay_s), 0.0)
        heapq.heappush(self._heap, _Entry(due, next(self._seq), proc))
        self._cond.notify_all()

    def _step(self, proc: Proc) -> None:
        self._current = proc
        try:
            try:
                delay = proc.gen.send(None)
            except StopIteration as done:
                self._end(proc)
                if proc.on_exit is not None:
                    proc.on_exit(done.value)
                return
        except Exception as exc:
            # One broken process must not take the whole lab down; say what broke, and keep it
            # for Lab.state() so that tests notice.
            self._end(proc)
            log.exception("lab process %s failed", proc.name)
            self.failures.append(f"{proc.name}: {type(exc).__name__}: {exc}")
            return
        finally:
            self._current = None
        if not proc.alive:
            proc.gen.close()
            return
        self._push(proc, max(float(delay), self.clock.simulated(self.MIN_SLEEP_S)))

    def _end(self, proc: Proc) -> None:
        proc.alive = False
        self._live.discard(proc)

    def run_due(self) -> float | None:
        """Advance every process that is due; the real seconds until the next one (or None)."""
        while self._heap:
            head = self._heap[0]
            if not head.proc.alive:
                heapq.heappop(self._heap)
                continue
            wait = head.due - self.clock.monotonic()
            if wait > 0:
                return wait
            heapq.heappop(self._heap)
            self._step(head.proc)
        return None

    # --- the thread -------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """On a stepped clock: play every process that falls due in the next ``seconds``
        (simulated), in order, each at its own instant; the clock then reads ``seconds`` later."""
        if not self.clock.stepped:
            raise RuntimeError("advance() needs a stepped clock; a real clock runs on its own")
        with self._cond:
            target = self.clock.monotonic() + max(seconds, 0.0)
            while self._heap and self._heap[0].due <= target:
                head = heapq.heappop(self._heap)
                if not head.proc.alive:
                    continue
                self._set_time(head.due)
                self._step(head.proc)
            self._set_time(target)

    def _set_time(self, t: float) -> None:
        advance_to = getattr(self.clock, "advance_to", None)
        if advance_to is not None:
            advance_to(t)

    def start(self) -> None:
        """Start the daemon thread (idempotent; a stepped clock needs none)."""
        if self._thread is not None or self.clock.stepped:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (idempotent); processes stay cancelled."""
        thread = self._thread
        with self._cond:
            self._stopping = True
            self.clear()
            self._cond.notify_all()
        if thread is None:
            return
        thread.join()
        self._thread = None

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                wait = self.run_due()
                if self._stopping:
                    break
                self._cond.wait(timeout=wait)
