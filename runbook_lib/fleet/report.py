"""The fleet's HTML summary: ``notebooks/fleet-summary.ipynb`` run by papermill in DIR.

The notebook reads ``fleet-summary.json`` with pandas and shows the table (each target linking to
its run's HTML) and a matplotlib chart of the outcomes per cause and per region. It is executed
into ``DIR/fleet-summary.ipynb`` and rendered without its code into ``DIR/fleet-summary.html``,
so the page carries the picture. Should it fail, a plain HTML table takes its place and the
reason is returned, so that a fleet never ends without a summary page.
"""

from __future__ import annotations

from pathlib import Path

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


def render(out: Path, rows: list[Row], notebook: str = NOTEBOOK) -> str | None:
    """Write ``out/fleet-summary.html`` (and the executed notebook); None, or why the plain
    table was written instead."""
    try:
        run_summary_notebook(out, notebook)
        return None
    except Exception as exc:  # any failure: the plain page still tells the fleet's story
        write_plain_html(rows, out / SUMMARY_HTML, "Fleet summary")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"[:300]


def run_summary_notebook(out: Path, notebook: str = NOTEBOOK) -> None:
    """Execute the shipped summary notebook ``notebook`` in ``out`` and render it as HTML
    without its code."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    from runbook_lib import shipped
    from runbook_lib.kernel import KERNEL_NAME

    executed = out / SUMMARY_NOTEBOOK
    with shipped.shipped_path(notebook) as source:
        pm.execute_notebook(
            str(source),
            str(executed),
            parameters={"summary": str(out / SUMMARY_JSON)},
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            cwd=str(out),
            execution_timeout=TIMEOUT_S,
        )
    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    tmp = out / (SUMMARY_HTML + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out / SUMMARY_HTML)
