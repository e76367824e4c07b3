"""Ctrl-C in a headless run is taken by a step, never by ipykernel's own code (runbook_lib.gate).

The pure rules first; then a real headless kernel (the one ``carts-runbook run`` starts), sent
SIGINT while it waits between cells and while a cell runs code outside any step: each cell still
gets its reply (nothing waits for ever), and the interrupt reaches the next step that starts.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import gate


@pytest.fixture
def clean_gate() -> Iterator[None]:
    gate.reset()
    yield
    gate.reset()


def test_an_interrupt_inside_a_step_raises_there_once(clean_gate: None) -> None:
    gate.entered()
    with pytest.raises(KeyboardInterrupt):
        gate.on_sigint(signal.SIGINT, None)
    gate.on_sigint(signal.SIGINT, None)  # a second one while the step records the first
    gate.left()
    gate.entered()  # and no later step raises it again
    gate.left()


def test_an_interrupt_between_steps_is_held_for_the_next_step(clean_gate: None) -> None:
    gate.on_sigint(signal.SIGINT, None)  # outside any step: nothing raised here
    with pytest.raises(KeyboardInterrupt):
        gate.entered()
    gate.left()
    gate.entered()
    gate.left()


def test_without_an_interrupt_steps_run(clean_gate: None) -> None:
    for _ in range(3):
        gate.entered()
        gate.left()


# --- in the headless kernel ---------------------------------------------------------------------


def _execute(client: Any, code: str) -> tuple[str, str]:
    """Run ``code``; returns (the reply's status, the error's name if any). Bounded: a reply
    that never comes fails the test instead of hanging it."""
    reply = client.execute_interactive(code, timeout=60, store_history=False)
    content = reply["content"]
    return str(content["status"]), str(content.get("ename", ""))


@pytest.fixture
def headless(tmp_path: Path) -> Iterator[Any]:
    from runbook_lib.kernel import Kernel

    kernel = Kernel(tmp_path)
    client = kernel.manager.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        yield kernel, client
    finally:
        client.stop_channels()
        kernel.shut_down()


def test_the_headless_kernel_holds_an_interrupt_for_the_next_step(headless: Any) -> None:
    kernel, client = headless
    assert _execute(client, "from runbook_lib import gate; gate.installed()") == ("ok", "")

    # While the kernel waits for a cell: held, not lost.
    kernel.interrupt()
    # While a cell runs code outside a step (ipykernel would raise it anywhere, even after the
    # cell's code, where the reply is then never sent): held, and the cell ends as usual.
    code = "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\nx = 1"
    assert _execute(client, code) == ("ok", "")
    assert _execute(client, "x + 1") == ("ok", "")

    # The next step takes it, once.
    assert _execute(client, "gate.entered()") == ("error", "KeyboardInterrupt")
    assert _execute(client, "gate.left(); gate.entered(); gate.left()") == ("ok", "")


def test_the_headless_kernel_stops_a_step_at_once(headless: Any) -> None:
    _, client = headless
    code = (
        "import os, signal, time\nfrom runbook_lib import gate\ngate.entered()\n"
        "try:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(30)\n"
        "finally:\n    gate.left()"
    )
    assert _execute(client, code) == ("error", "KeyboardInterrupt")
