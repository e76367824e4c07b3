"""``carts-runbook``: run the notebook headless with papermill, or regenerate its golden outputs.

    carts-runbook run --params params/lab.yaml --out out
    carts-runbook golden

``run`` validates the parameters before starting a kernel, shows one line per step, writes the
executed notebook, an HTML rendering and the JSON record under ``--out``, prints a short summary,
and exits 1 naming the failing step when a step fails (2 for bad parameters).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runbook_lib.params import ParameterError, Params, load_params_file

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "fix-iam-permissions.ipynb"
STEM = "fix-iam-permissions"


def _parse_value(text: str) -> Any:
    from runbook_lib.params import parse_value

    return parse_value(text)  # YAML as in a params file: no alias, numbers keep their text


def _step_of(cell: Any) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag.startswith("step:"):
            return str(tag[5:])
    return None


class Progress:
    """One line per step on stderr: name, time, ok or FAILED (and ``on_step(name)`` as each
    step starts)."""

    def __init__(
        self, stream: Any = sys.stderr, on_step: Callable[[str], None] | None = None
    ) -> None:
        self.stream = stream
        self.on_step = on_step
        self.t: float = 0.0

    def start(self, cell: Any, cell_index: int, **_: Any) -> None:
        step = _step_of(cell)
        if step:
            if self.on_step is not None:
                self.on_step(step)
            self.t = time.monotonic()
            print(f"  {step:<11}", end="", file=self.stream, flush=True)

    def done(self, cell: Any, cell_index: int, execute_reply: Any = None, **_: Any) -> None:
        step = _step_of(cell)
        if step:
            failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            status = "FAILED" if failed else "ok"
            print(f" {status} ({time.monotonic() - self.t:.1f} s)", file=self.stream, flush=True)


def execute(
    parameters: dict[str, Any],
    output: Path,
    record: Path,
    progress: Progress | None = None,
    inject: bool = True,
    while_stopping: Callable[[], None] | None = None,
) -> Any:
    """Execute the notebook with papermill; returns the executed notebook node.

    ``while_stopping`` runs once the notebook has run (or failed), while the kernel exits.
    """
    os.environ["RUNBOOK_RECORD"] = str(record)
    os.environ["RUNBOOK_HEADLESS"] = "1"
    from runbook_lib.kernel import KERNEL_NAME, Kernel

    kernel = Kernel(NOTEBOOK.parents[1])  # boots while papermill is imported
    interrupted = True
    try:
        _import_jsonschema_without_iri_checks()
        import papermill as pm

        hooks: dict[str, Any] = {}
        if progress is not None:
            hooks = {"on_cell_start": progress.start, "on_cell_executed": progress.done}
        nb = pm.execute_notebook(
            str(NOTEBOOK),
            str(output),
            parameters=parameters if inject else None,
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            cwd=str(NOTEBOOK.parents[1]),
            km=kernel.manager,
            **hooks,
        )
        interrupted = False
        return nb
    except Exception:
        interrupted = False
        raise
    finally:
        kernel.shut_down(meanwhile=None if interrupted else while_stopping)


def _import_jsonschema_without_iri_checks() -> None:
    """Import jsonschema (nbformat's validator) without its IRI format checkers.

    With the ``rfc3987-syntax`` package installed (jupyter-events pulls it in), importing
    jsonschema builds its Earley parsers for the ``iri`` and ``iri-reference`` formats: about
    0.7 s of this command's start-up, for formats no notebook schema uses. A ``None`` entry in
    ``sys.modules`` makes that optional import fail, so jsonschema skips them; the entry is removed
    again at once, so only jsonschema's format checker (in this process) goes without them.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("jsonschema")
    finally:
        if sys.modules.get("rfc3987_syntax") is None:
            del sys.modules["rfc3987_syntax"]


class HtmlWriter:
    """Renders the executed notebook as HTML (nbconvert, the JupyterLab template).

    nbconvert's first rendering costs more than later ones together (imports, templates, the
    theme's CSS, the code highlighter): about 0.3 s here. :meth:`warm_up` pays it in a thread
    while the kernel waits (the watch step waits on ECS), when this process has nothing to do.
    """

    def __init__(self) -> None:
        self._exporter: Any = None
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._warm, name="html-warm-up", daemon=True)
            self._thread.start()

    def _warm(self) -> None:
        import nbformat

        try:
            exporter = _html_exporter()
            exporter.from_notebook_node(nbformat.read(str(NOTEBOOK), as_version=4))
        except Exception:  # write() renders afresh and reports any error
            return
        self._exporter = exporter

    def write(self, notebook_path: Path, html_path: Path) -> None:
        import nbformat

        if self._thread is not None:
            self._thread.join()
        exporter = self._exporter if self._exporter is not None else _html_exporter()
        nb = nbformat.read(str(notebook_path), as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        html_path.write_text(body, encoding="utf-8")


def _html_exporter() -> Any:
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab")


def scan_outputs(paths: list[Path]) -> list[str]:
    """Complaints for any output file that holds something shaped like a credential."""
    from runbook_lib.record import find_secrets

    problems = []
    for p in paths:
        if p.exists():
            hits = find_secrets(p.read_text(encoding="utf-8", errors="replace"))
            if hits:
                problems.append(f"{p} contains what looks like a credential ({hits[0]})")
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    try:
        values = load_params_file(args.params) if args.params else {}
        for item in args.parameter or []:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ParameterError("-p", f"option -p takes NAME=VALUE; got {item!r}.")
            values[key] = _parse_value(raw)
        params = Params.from_mapping(values, source=args.params or "the command line")
    except ParameterError as exc:
        print(f"carts-runbook: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    nb_path, html_path, record_path = (
        out / f"{STEM}.ipynb",
        out / f"{STEM}.html",
        out / f"{STEM}.record.json",
    )
    record_path.unlink(missing_ok=True)
    where = params.endpoint_url or ("an embedded lab" if params.is_lab else f"AWS {params.region}")
    print(
        f"carts-runbook: running {NOTEBOOK.name} against {where} ({params.source})", file=sys.stderr
    )
    failed: str | None = None
    failed_cell: str | None = None
    t0 = time.monotonic()
    html = HtmlWriter()

    def warm_up(step: str) -> None:
        if step == "watch":
            html.warm_up()

    def render() -> None:
        if nb_path.exists():
            html.write(nb_path, html_path)

    try:
        execute(
            params.public_dict(),
            nb_path,
            record_path,
            Progress(on_step=None if args.no_html else warm_up),
            while_stopping=None if args.no_html else render,
        )
    except Exception as exc:
        # Imported only now: papermill is imported while the kernel starts (see execute).
        from papermill.exceptions import PapermillExecutionError

        if not isinstance(exc, PapermillExecutionError):
            raise
        failed = f"{exc.ename}: {exc.evalue}"
        failed_cell = _failed_step(nb_path, exc.cell_index)
    leaks = scan_outputs([nb_path, html_path, record_path])
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.exists() else {}
    print(file=sys.stderr)
    for line in _summary_lines(record, nb_path, html_path, record_path, time.monotonic() - t0):
        print(line)
    for leak in leaks:
        print(f"carts-runbook: SECURITY: {leak}", file=sys.stderr)
    if failed is not None:
        step = record.get("failed_step") or failed_cell or "unknown"
        print(f"carts-runbook: FAILED at step '{step}': {failed}", file=sys.stderr)
        if record.get("undo"):
            print(f"carts-runbook: to undo what this run wrote: {record['undo']}", file=sys.stderr)
        return 1
    return 1 if leaks else 0


def _failed_step(notebook: Path, cell_index: int) -> str | None:
    """The step tag of the cell papermill stopped at (for failures before the record exists)."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
        return _step_of(nb.cells[cell_index])
    except (OSError, IndexError, ValueError):
        return None


def _summary_lines(
    record: dict[str, Any], nb: Path, html: Path, rec: Path, seconds: float
) -> list[str]:
    lines = [f"outcome:  {record.get('outcome', 'no record written')}"]
    steps = record.get("steps", {})
    if "diagnose" in steps:
        d = steps["diagnose"]
        lines.append(f"cause:    {d.get('cause')} ({d.get('denied_action') or '-'})")
    if "plan" in steps:
        p = steps["plan"]
        lines.append(
            f"policy:   {p.get('policy_name')} on {p.get('role')}: {p.get('action')}, written={p.get('written')}"
        )
    if "watch" in steps:
        lines.append(f"watch:    {steps['watch'].get('message', steps['watch'].get('outcome'))}")
    if "aws_call_count" in record:
        lines.append(f"aws calls: {record['aws_call_count']}")
    lines.append(f"time:     {seconds:.1f} s")
    lines += [f"notebook: {nb}", f"html:     {html}", f"record:   {rec}"]
    return lines


def strip_run_metadata(path: Path) -> None:
    """Remove papermill's per-run metadata (timings, paths) and join consecutive stream outputs,
    so that the golden notebook diffs cleanly.

    How a cell's printed lines are cut into stream messages depends on when the kernel flushed
    them, not on what was printed; nbval joins them the same way before it compares.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _join_streams(cell.outputs)
    nbformat.write(nb, str(path))


def _join_streams(outputs: list[Any]) -> list[Any]:
    joined: list[Any] = []
    for out in outputs:
        last = joined[-1] if joined else None
        if (
            last is not None
            and out.get("output_type") == "stream"
            and last.get("output_type") == "stream"
            and out.get("name") == last.get("name")
        ):
            last["text"] = last["text"] + out["text"]
        else:
            joined.append(out)
    return joined


def cmd_golden(args: argparse.Namespace) -> int:
    """Re-execute the committed notebook with its own defaults against a fresh lab, in place
    (or into ``--to``)."""
    import tempfile

    # The lab runs on a stepped clock: time moves only while the runbook waits, so the same
    # notebook always tells the same history (see runbook_lib.lab.clock).
    from runbook_lib.session import LAB_CLOCK_ENV

    os.environ[LAB_CLOCK_ENV] = "stepped"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_nb = Path(tmp) / f"{STEM}.ipynb"
        execute({}, tmp_nb, Path(tmp) / f"{STEM}.record.json", Progress(), inject=False)
        strip_run_metadata(tmp_nb)
        leaks = scan_outputs([tmp_nb])
        if leaks:
            print(f"carts-runbook: {leaks[0]}", file=sys.stderr)
            return 1
        target = Path(args.to).resolve() if args.to else NOTEBOOK
        target.write_text(tmp_nb.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"carts-runbook: golden outputs written to {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carts-runbook", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the runbook headless (papermill)")
    run.add_argument("--params", help="a params/*.yaml file (keys: the notebook's parameters)")
    run.add_argument(
        "-p",
        dest="parameter",
        action="append",
        metavar="NAME=VALUE",
        help="override one parameter (YAML value)",
    )
    run.add_argument(
        "--out", default="out", help="folder for the notebook, HTML and record (default: out)"
    )
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.set_defaults(func=cmd_run)
    golden = sub.add_parser(
        "golden", help="regenerate the committed notebook's outputs against a fresh lab"
    )
    golden.add_argument(
        "--to", metavar="PATH", help="write the notebook there instead of over the committed one"
    )
    golden.set_defaults(func=cmd_golden)
    args = parser.parse_args(argv)
    # At exit, Python's finalisation runs full garbage collections over everything papermill and
    # nbconvert loaded (about 0.1 s); frozen objects are skipped, and the process is ending.
    atexit.register(gc.freeze)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
