"""The fleet's HTML summary: ``notebooks/fleet-summary.ipynb`` run by papermill in DIR.

The notebook reads ``fleet-summary.json`` with pandas and shows the table (each target linking to
its run's HTML) and a matplotlib chart of the outcomes per cause and per region. It is executed
into ``DIR/fleet-summary.ipynb`` and rendered without its code into ``DIR/fleet-summary.html``,
so the page carries the picture. Should it fail, a plain HTML table takes its place and the
reason is returned, so that a fleet never ends without a summary page.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from runbook_lib.fleet.summary import (
    SUMMARY_HTML,
    SUMMARY_JSON,
    SUMMARY_NOTEBOOK,
    Row,
    write_plain_html,
)

#: The summary notebook, shipped with the package beside the runbook's (runbook_lib/data/, a
#: link to notebooks/ in a checkout).
NOTEBOOK = SUMMARY_NOTEBOOK
#: The summary notebook may take this long (kernel start, pandas and matplotlib imports).
TIMEOUT_S = 300
#: What the summary notebook imports first: the kernel's longest wait, paid ahead (:class:`Warm`).
WARM_IMPORTS = "import pandas, matplotlib.pyplot, matplotlib.patches"


class Warm:
    """The summary's fixed costs, paid while the fleet's last targets run (one core is then
    idle on a 2-core machine): this process's imports of papermill and nbconvert, and a kernel
    started in DIR that has imported pandas and matplotlib, as the notebook's first cell would
    (nothing else runs in it: the notebook's outputs are the same). :meth:`start` is called when
    no target is left to submit; whatever is not ready when the summary is written is paid
    then, as without it."""

    def __init__(self, out: Path) -> None:
        self._out = out
        self._thread = threading.Thread(target=self._run, name="fleet-summary-warm", daemon=True)
        self._lock = threading.Lock()
        self._started = False
        self.kernel: Any = None

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def _run(self) -> None:
        try:
            import nbformat  # noqa: F401
            import papermill  # noqa: F401
            from nbconvert import HTMLExporter  # noqa: F401

            from runbook_lib.kernel import Kernel

            self.kernel = Kernel(self._out)
            _execute_silently(self.kernel, WARM_IMPORTS)
        except Exception:  # the summary pays it itself
            return

    def take(self) -> Any:
        """The warm kernel (None if there is none); the caller shuts it down."""
        if self._started:
            self._thread.join()
        kernel, self.kernel = self.kernel, None
        return kernel

    def close(self) -> None:
        kernel = self.take()
        if kernel is not None:
            kernel.shut_down()


def _execute_silently(kernel: Any, code: str, timeout_s: float = 120) -> None:
    """Run ``code`` in ``kernel`` without output, history or an execution count."""
    from jupyter_client.blocking.client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_file(kernel.manager.connection_file)
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive(
            code, silent=True, store_history=False, timeout=timeout_s, output_hook=lambda m: None
        )
    finally:
        client.stop_channels()


def render(
    out: Path, rows: list[Row], notebook: str = NOTEBOOK, warm: Warm | None = None
) -> str | None:
    """Write ``out/fleet-summary.html`` (and the executed notebook); None, or why the plain
    table was written instead. ``warm``: the costs already paid (its kernel is used)."""
    try:
        run_summary_notebook(out, notebook, warm.take() if warm is not None else None)
        return None
    except Exception as exc:  # any failure: the plain page still tells the fleet's story
        write_plain_html(rows, out / SUMMARY_HTML, "Fleet summary")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"[:300]


def run_summary_notebook(out: Path, notebook: str = NOTEBOOK, kernel: Any = None) -> None:
    """Execute the shipped summary notebook ``notebook`` in ``out`` and render it as HTML
    without its code; ``kernel``: one already started in ``out`` (shut down here)."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    from runbook_lib import shipped
    from runbook_lib.kernel import KERNEL_NAME, Kernel

    executed = out / SUMMARY_NOTEBOOK
    # The runbook's own private kernel (IPC in a folder of its own, its output kept apart): a
    # kernel papermill starts itself listens on TCP and warns about it on the command's stderr.
    kernel = kernel or Kernel(out)
    try:
        with shipped.shipped_path(notebook) as source:
            pm.execute_notebook(
                str(source),
                str(executed),
                parameters={"summary": str(out / SUMMARY_JSON)},
                kernel_name=KERNEL_NAME,
                progress_bar=False,
                cwd=str(out),
                execution_timeout=TIMEOUT_S,
                km=kernel.manager,
            )
    finally:
        kernel.shut_down()
    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    tmp = out / (SUMMARY_HTML + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out / SUMMARY_HTML)
