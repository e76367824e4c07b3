"""The kernel a headless run executes the notebook in: private, quiet, started early, stopped
promptly.

papermill (through nbclient) can start and stop a kernel itself; ``carts-runbook`` does both so
that the kernel is the one it should be and none of its start or stop adds to the run:

- **This interpreter, always.** The kernel runs ipykernel in ``sys.executable`` (through
  :func:`launch`), not whatever a ``python3`` kernel spec on the machine names (a user's
  ``~/.local/share/jupyter`` spec comes before the environment's own): an installed tool (pipx,
  a container) then runs the notebook with the ``runbook_lib`` it was installed with.
- **Local sockets in a private folder.** The kernel listens on IPC transport (Unix sockets) in a
  folder of its own (mode 0700), with its connection file: no TCP port on the machine, and no
  "running over TCP without encryption" warning. The folder is removed when the kernel stops.
- **Its own output kept apart.** What the kernel process itself prints (not a cell's output,
  which goes to the notebook) goes to :attr:`Kernel.log_path`, not to the command's terminal:
  the command prints only its own lines, and keeps the log as ``kernel.log`` when there is one.
- **Ctrl-C taken by a step.** The kernel leaves SIGINT to :mod:`runbook_lib.gate` for its whole
  life: an interrupt stops the running step, or the next one to start, never ipykernel's own code
  around a cell (where it would swallow the cell's reply and papermill would wait for ever).
- **Started early.** Started before papermill is imported, the kernel boots while the command
  imports papermill and reads the notebook.
- **Ready without the final wait.** The client's readiness check is jupyter_client's
  (``kernel_info`` answered, IOPub connected) without its last fraction of a second listening for
  IOPub to fall silent: nbclient ignores every message that answers no request of its own, so
  left-over start-up messages cannot reach a cell.
- **Stopped promptly.** The kernel's exit is polled every 10 ms, and the command does its own last
  work (the HTML) while the kernel exits.

The last three, and :func:`launch`'s own (:func:`runbook_lib.speedups.in_kernel`), are speed-ups:
``RUNBOOK_SPEEDUPS=0`` turns them off. The kernel otherwise runs as nbclient would run it: IPython
history in memory (no file under ``~/.ipython``), the working directory given. BENCHMARKS.md has
what each of these saves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import IO, Any

from runbook_lib import gate, speedups

KERNEL_NAME = "python3"


def kernel_argv() -> list[str]:
    """The kernel's command line: this interpreter's ipykernel, through :func:`launch` (see the
    module's docstring)."""
    return [sys.executable, "-m", "runbook_lib.kernel", "-f", "{connection_file}"]


def launch() -> None:
    """Start ipykernel as ``ipykernel_launcher`` does, with Ctrl-C taken by the run's steps
    (:mod:`runbook_lib.gate`), after the kernel-side speed-ups (unless they are off)."""
    gate.install()  # from the start: an interrupt during start-up is held for the first step
    # The working directory comes off sys.path while ipykernel loads; IPython puts it back.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    if speedups.enabled():
        speedups.in_kernel()
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.kernelapp import IPKernelApp

    class HeadlessKernel(IPythonKernel):
        """ipykernel's kernel that leaves SIGINT to the gate: ipykernel would put Python's own
        handler in place for each request and ignore SIGINT between requests."""

        def pre_handler_hook(self) -> None:
            pass

        def post_handler_hook(self) -> None:
            pass

    app = IPKernelApp.instance(kernel_class=HeadlessKernel)
    app.initialize()  # type: ignore[no-untyped-call]
    gate.install()  # IPKernelApp.initialize ignores SIGINT (init_signal): the gate takes it back
    app.start()  # type: ignore[no-untyped-call]


class Kernel:
    """A kernel for one headless run: pass :attr:`manager` to papermill as ``km``, then
    :meth:`shut_down` (papermill leaves a kernel it did not start running)."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.asynchronous.client import AsyncKernelClient
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        clients: list[Any] = []

        class Client(AsyncKernelClient):
            async def wait_for_ready(self, timeout: float | None = None) -> None:
                if speedups.enabled():
                    await _wait_for_ready(self, timeout)
                else:
                    await super().wait_for_ready(timeout)

        class ThisPython(KernelSpecManager):
            """The one kernel spec a headless run uses: ipykernel in this interpreter."""

            def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
                return KernelSpec(
                    argv=kernel_argv(),
                    name=kernel_name,
                    display_name="Python 3 (carts runbook)",
                    language="python",
                    interrupt_mode="signal",
                )

        class Manager(AsyncKernelManager):
            """Keeps the clients it makes (nbclient makes one), to close their channels."""

            def client(self, **kwargs: Any) -> Any:
                made = super().client(**kwargs)
                clients.append(made)
                return made

        self._clients = clients
        self._run_sync = run_sync
        self.folder = Path(tempfile.mkdtemp(prefix="carts-runbook-kernel-"))  # mode 0700
        self.log_path = self.folder / "kernel.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in shut_down
        self.manager = Manager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=ThisPython(),
            client_factory=Client,
            transport="ipc",
            ip=str(self.folder / "kernel"),
            connection_file=str(self.folder / "kernel.json"),
        )
        try:
            run_sync(self.manager.start_kernel)(
                cwd=str(cwd),
                extra_arguments=["--HistoryManager.hist_file=:memory:"],
                stdout=self._log,
                stderr=self._log,
            )
        except BaseException:
            self._log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    @property
    def pid(self) -> int | None:
        """The kernel process's id (None once it has been stopped)."""
        provisioner = self.manager.provisioner
        pid = getattr(provisioner, "pid", None) if provisioner is not None else None
        return int(pid) if pid is not None else None

    def interrupt(self) -> None:
        """Send the kernel SIGINT, as Jupyter's "interrupt kernel" does; safe from a signal handler
        (no event loop involved). The running cell raises KeyboardInterrupt."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """Stop the kernel process at once (a second Ctrl-C)."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def log_text(self) -> str:
        """What the kernel process printed outside any cell (empty for a quiet kernel)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def shut_down(self, meanwhile: Callable[[], None] | None = None) -> str:
        """Ask the kernel to exit, run ``meanwhile`` as it does, wait for it (forcing it after
        5 s), free its resources and remove its folder. Returns what the kernel printed outside
        any cell (see :meth:`log_text`)."""
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
                await manager.finish_shutdown(pollinterval=0.01 if speedups.enabled() else 0.1)
            await manager.cleanup_resources()

        try:
            alive = self._run_sync(ask)()
            try:
                if meanwhile is not None:
                    meanwhile()
            finally:
                self._run_sync(finish)(alive)
        finally:
            self._log.close()
            text = self.log_text()
            shutil.rmtree(self.folder, ignore_errors=True)
        return text


async def _wait_for_ready(client: Any, timeout: float | None) -> None:
    """Until the kernel answers ``kernel_info`` on the shell channel and IOPub carries messages.

    jupyter_client's own check ends by listening to IOPub until it falls silent; this one does not
    (see the module's docstring). Like it, it adapts the session to the kernel's protocol version,
    through the public ``Session.adapt_version``.
    """
    # Public (jupyter_client's top level re-exports it), though not listed for mypy's strict mode.
    from jupyter_client import protocol_version_info  # type: ignore[attr-defined]

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
                    major = int(str(msg["content"]["protocol_version"]).split(".")[0])
                    if major != protocol_version_info[0]:
                        client.session.adapt_version = major
                    return
        if not await client.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


if __name__ == "__main__":
    launch()
