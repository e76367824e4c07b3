"""The kernel a headless run executes the notebook in: started early, stopped promptly.

papermill (through nbclient) can start and stop a kernel itself; ``carts-runbook`` does both so
that none of it adds to the run:

- started before papermill is imported, the kernel boots (about 0.5 s) while the command
  imports papermill and reads the notebook;
- the client's readiness check is jupyter_client's (``kernel_info`` answered, IOPub connected)
  without its final 0.2 s of listening for IOPub to fall silent: nbclient ignores every message
  that answers no request of its own, so left-over start-up messages cannot reach a cell;
- at the end the kernel's exit is polled every 10 ms instead of every 100 ms, and the command
  does its own last work (the HTML) while the kernel exits.

The kernel runs as nbclient would run it: the ``python3`` kernel spec, IPython history in memory
(no file under ``~/.ipython``), the working directory given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

KERNEL_NAME = "python3"


class Kernel:
    """A kernel for one headless run: pass :attr:`manager` to papermill as ``km``, then
    :meth:`shut_down` (papermill leaves a kernel it did not start running)."""

    def __init__(self, cwd: Path, kernel_name: str = KERNEL_NAME) -> None:
        from jupyter_client.asynchronous.client import AsyncKernelClient
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        clients: list[Any] = []

        class Client(AsyncKernelClient):
            async def wait_for_ready(self, timeout: float | None = None) -> None:
                await _wait_for_ready(self, timeout)

        class Manager(AsyncKernelManager):
            """Keeps the clients it makes (nbclient makes one), to close their channels."""

            def client(self, **kwargs: Any) -> Any:
                made = super().client(**kwargs)
                clients.append(made)
                return made

        self._clients = clients
        self._run_sync = run_sync
        self.manager = Manager(kernel_name=kernel_name, client_factory=Client)
        run_sync(self.manager.start_kernel)(
            cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"]
        )

    def shut_down(self, meanwhile: Callable[[], None] | None = None) -> None:
        """Ask the kernel to exit, run ``meanwhile`` as it does, wait for it (forcing it after
        5 s) and free its resources."""
        manager = self.manager

        async def ask() -> bool:
            for client in self._clients:
                client.stop_channels()
            alive = bool(await manager.is_alive())
            if alive:
                await manager.request_shutdown()
            return alive

        async def finish(alive: bool) -> None:
            if alive:
                await manager.finish_shutdown(pollinterval=0.01)
            await manager.cleanup_resources()

        alive = self._run_sync(ask)()
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            self._run_sync(finish)(alive)


async def _wait_for_ready(client: Any, timeout: float | None) -> None:
    """Until the kernel answers ``kernel_info`` on the shell channel and IOPub carries messages."""
    deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
    while True:
        client.kernel_info()
        try:
            msg = await client.shell_channel.get_msg(timeout=1)
        except Empty:
            pass
        else:
            if msg["msg_type"] == "kernel_info_reply":
                try:
                    await client.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass  # IOPub not connected yet: ask again
                else:
                    client._handle_kernel_info_reply(msg)
                    return
        if not await client.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
