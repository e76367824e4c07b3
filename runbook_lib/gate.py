"""Where a headless run's kernel takes Ctrl-C: inside a step, never in ipykernel's own code.

ipykernel raises ``KeyboardInterrupt`` wherever the kernel's main thread is when SIGINT
arrives while it handles a request, and ignores SIGINT between requests. Both lose an interrupt
in a headless run:

- raised in ipykernel's code around a cell (after the cell's code ran, before its reply is sent),
  the interrupt is caught there ("KeyboardInterrupt caught in kernel") and the reply is never
  sent: papermill then waits for a reply that never comes;
- arriving while the kernel waits for the next cell, it is ignored, and the step that cell runs
  does not know the run was stopped.

A headless kernel (:func:`runbook_lib.kernel.launch`) installs :func:`on_sigint` for its whole
life. An interrupt that arrives inside a step (:meth:`runbook_lib.runbook.Runbook._step` calls
:func:`entered` and :func:`left`) raises there, once, where the step records it with its undo;
one that arrives anywhere else is held, and the next step to start raises it. A learner's
JupyterLab kernel keeps IPython's own handling: their own cells stay interruptible.
"""

from __future__ import annotations

import signal
from types import FrameType

_installed = False
_depth = 0
_pending = False
_taken = False


def install() -> None:
    """Take SIGINT for the rest of the process's life (a headless kernel's)."""
    global _installed
    signal.signal(signal.SIGINT, on_sigint)
    _installed = True


def installed() -> bool:
    return _installed


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """Raise in a step; hold it anywhere else. A run is stopped once: later ones are ignored."""
    global _pending, _taken
    if _taken:
        return
    if _depth > 0:
        _taken = True
        raise KeyboardInterrupt
    _pending = True


def entered() -> None:
    """A step starts: it raises an interrupt that was held for it."""
    global _depth, _pending, _taken
    _depth += 1
    if _pending and not _taken:
        _pending = False
        _taken = True
        raise KeyboardInterrupt


def left() -> None:
    """A step ends (however it ends)."""
    global _depth
    _depth = max(0, _depth - 1)


def reset() -> None:
    """Forget every interrupt (for tests)."""
    global _depth, _pending, _taken
    _depth, _pending, _taken = 0, False, False
