"""Interleave writers one request at a time, in an order a seed chooses.

Each writer runs in its own thread, but only one runs at a time: a writer stops at each *gate*
(just before each AWS request it sends, and before each wait on the lab's clock) until it is
given the next turn, and the test's thread gives turns in an order drawn from a seeded random
generator. So a race explores the interleavings of real requests to a real lab, and the same
seed gives the same interleaving on any machine, however slow (no wall-clock sleeps decide
anything).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: How long (wall seconds) the scheduler waits for a writer to reach its next gate before it
#: calls the writer stuck: generous, it only bounds a hang.
STUCK_S = 120.0


@dataclass
class Writer:
    name: str
    body: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    #: The trace of this writer's gates, as labels ("iam:GetRolePolicy", "sleep 0.5").
    gates: list[str] = field(default_factory=list)


class Turns:
    """A seeded scheduler of writers; see the module's docstring."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cond = threading.Condition()
        self.turn: str | None = None
        self.waiting: set[str] = set()
        self.writers: dict[str, Writer] = {}
        self.order: list[str] = []  # the turns given, in order, with the gate each passed
        self._local = threading.local()

    # --- inside a writer's thread -------------------------------------------------------------

    def gate(self, label: str) -> None:
        """Stop here until this writer's next turn (no-op outside a writer's thread)."""
        name = getattr(self._local, "name", None)
        if name is None:
            return
        with self.cond:
            self.writers[name].gates.append(label)
            self.turn = None
            self.waiting.add(name)
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.turn == name, STUCK_S):
                raise TimeoutError(f"{name} never got its turn back at {label}")
            self.waiting.discard(name)

    def hook_client(self, client: Any) -> Any:
        """Gate ``client`` before every request it sends (botocore's before-send event)."""

        def before_send(request: Any, **_: Any) -> None:
            op = request.context.get("operation_name", "?") if hasattr(request, "context") else "?"
            self.gate(f"{client.meta.service_model.service_name}:{op}")

        client.meta.events.register("before-send", before_send)
        return client

    # --- the test's thread --------------------------------------------------------------------

    def run(self, *writers: Writer) -> list[str]:
        """Run the writers to the end, one turn at a time; returns the order of turns."""
        threads = []
        for w in writers:
            self.writers[w.name] = w
            t = threading.Thread(target=self._main, args=(w,), name=f"writer-{w.name}")
            threads.append(t)
        with self.cond:
            for t in threads:
                t.start()
            while True:
                ok = self.cond.wait_for(
                    lambda: (
                        self.turn is None and all(w.done or w.name in self.waiting for w in writers)
                    ),
                    STUCK_S,
                )
                if not ok:
                    raise TimeoutError("a writer neither reached a gate nor finished")
                ready = sorted(self.waiting)
                if not ready:
                    break
                chosen = self.rng.choice(ready)
                label = self.writers[chosen].gates[-1] if self.writers[chosen].gates else ""
                self.order.append(f"{chosen} {label}")
                self.turn = chosen
                self.cond.notify_all()
        for t in threads:
            t.join(STUCK_S)
        return self.order

    def _main(self, writer: Writer) -> None:
        self._local.name = writer.name
        try:
            self.gate("start")
            writer.result = writer.body()
        except BaseException as exc:  # reported by the test
            writer.error = exc
        finally:
            with self.cond:
                writer.done = True
                self.turn = None
                self.cond.notify_all()


class GatedClock:
    """A runbook's clock whose waits are gates too: while one writer waits on the lab's time,
    another may take its turn (and the lab moves only in the writer holding the turn)."""

    def __init__(self, inner: Any, turns: Turns) -> None:
        self.inner = inner
        self.turns = turns

    def time(self) -> float:
        return float(self.inner.time())

    def monotonic(self) -> float:
        return float(self.inner.monotonic())

    def sleep(self, seconds: float) -> None:
        self.turns.gate(f"sleep {seconds:g}")
        self.inner.sleep(seconds)
