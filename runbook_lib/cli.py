"""``carts-runbook``: the runbook as a command, from a checkout or an installed package.

    carts-runbook run [--params FILE] [-p NAME=VALUE ...] [--out DIR] [--no-html]
    carts-runbook notebook DIR        # copy the notebook and example parameters into DIR
    carts-runbook jupyter [DIR]       # JupyterLab on that copy (loopback, with a token)
    carts-runbook golden              # in a checkout: regenerate the committed outputs
    carts-runbook fleet --targets FILE --out DIR   # many accounts on Dask: runbook_lib.fleet
    carts-runbook --version           # also: python -m runbook_lib ...

``run`` checks the parameters and the output folder before it starts a kernel, shows one line per
step, writes the executed notebook, an HTML rendering and the JSON record under
``OUT/<run id>/`` (``OUT/latest`` points at the newest run; no run deletes another's), prints a
short summary, and exits 0 when the run succeeded, 1 naming the failing step, 2 for bad input,
and 130 when Ctrl-C stopped it (after one line with the step and the undo command). Without
``--params`` it runs the shipped ``lab.yaml``: the embedded lab, as ``make run`` does. Relative
paths are the caller's: the kernel runs in the caller's working directory.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from runbook_lib import __version__, history, shipped, speedups
from runbook_lib.params import ParameterError, Params, load_params_file

if TYPE_CHECKING:
    from runbook_lib.kernel import Kernel

STEM = "fix-iam-permissions"
KERNEL_LOG = "kernel.log"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command Ctrl-C stopped


class UsageError(Exception):
    """Bad input to the command itself (a path): one sentence, exit 2, nothing started."""


def _parse_value(text: str) -> Any:
    from runbook_lib.params import parse_value

    return parse_value(text)  # YAML as in a params file: no alias, numbers keep their text


def _step_of(cell: Any) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag.startswith("step:"):
            return str(tag[5:])
    return None


class Interrupts:
    """Ctrl-C (SIGINT) while a run executes.

    The first asks the kernel to stop, as JupyterLab's "interrupt the kernel" does. The kernel
    takes it in a step (:mod:`runbook_lib.gate`): the running step, or the next one to start,
    marks the record ``interrupted`` with the undo command, and no further cell starts. A kernel
    that has not ended its cell :attr:`GRACE_S` after the first Ctrl-C is stopped, as a second
    Ctrl-C stops it at once: the record, saved before and after every write, says what was
    written. The handler only sends signals: it never raises into papermill's event loop, so no
    traceback reaches the terminal.
    """

    GRACE_S = 30.0

    def __init__(self) -> None:
        self.count = 0
        self.kernel: Kernel | None = None
        self.in_cell = False
        #: The kernel was stopped for not ending its cell in time (not by a second Ctrl-C).
        self.forced = False
        self._done = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        kernel = self.kernel
        if kernel is None:
            return
        if self.count == 1:
            kernel.interrupt()
            threading.Thread(target=self._stop_late, args=(kernel,), daemon=True).start()
        else:
            self._done.set()
            kernel.kill()

    def _stop_late(self, kernel: Kernel) -> None:
        """Stop a kernel still in its cell :attr:`GRACE_S` after the interrupt."""
        if self._done.wait(self.GRACE_S):
            return
        if self.in_cell and self.kernel is kernel:
            self.forced = True
            kernel.kill()

    def finished(self) -> None:
        """The notebook has run (or failed): nothing is left to stop."""
        self._done.set()

    @property
    def interrupted(self) -> bool:
        return self.count > 0


class Progress:
    """One line per step on stderr: name, time, ok, FAILED or interrupted (and ``on_step(name)``
    as each step starts); :attr:`step` is the step that started last."""

    def __init__(
        self,
        stream: Any = sys.stderr,
        on_step: Callable[[str], None] | None = None,
        interrupts: Interrupts | None = None,
    ) -> None:
        self.stream = stream
        self.on_step = on_step
        self.interrupts = interrupts
        self.step: str | None = None
        self.t: float = 0.0

    def start(self, cell: Any, cell_index: int, **_: Any) -> None:
        if self.interrupts is not None and self.interrupts.interrupted:
            # Between two cells the kernel has nothing to interrupt: start no further cell.
            # papermill stops at this error as at a failed cell and writes the notebook.
            from nbclient.exceptions import CellExecutionError

            raise CellExecutionError("interrupted", "KeyboardInterrupt", "the run was interrupted")
        if self.interrupts is not None:
            self.interrupts.in_cell = True
        step = _step_of(cell)
        if step:
            self.step = step
            if self.on_step is not None:
                self.on_step(step)
            self.t = time.monotonic()
            print(f"  {step:<11}", end="", file=self.stream, flush=True)

    def done(self, cell: Any, cell_index: int, execute_reply: Any = None, **_: Any) -> None:
        if self.interrupts is not None:
            self.interrupts.in_cell = False
        step = _step_of(cell)
        if step:
            # An interrupted cell has no error output (IPython prints "KeyboardInterrupt"): its
            # execute reply says "error" all the same.
            reply = (execute_reply or {}).get("content", {}).get("status", "ok")
            failed = reply != "ok" or any(
                o.get("output_type") == "error" for o in cell.get("outputs", [])
            )
            status = "FAILED" if failed else "ok"
            if failed and self.interrupts is not None and self.interrupts.interrupted:
                status = "interrupted"
            print(f" {status} ({time.monotonic() - self.t:.1f} s)", file=self.stream, flush=True)


def execute(
    notebook: Path,
    parameters: dict[str, Any],
    output: Path,
    record: Path,
    progress: Progress | None = None,
    inject: bool = True,
    while_stopping: Callable[[], None] | None = None,
    interrupts: Interrupts | None = None,
) -> Any:
    """Execute ``notebook`` with papermill in the caller's working directory; returns the
    executed notebook node.

    ``while_stopping`` runs once the notebook has run (or failed), while the kernel exits. The
    output notebook is written once, at the end (or at the failing cell): the record, which the
    kernel saves after every step, is what survives a run that is killed. What the kernel process
    printed outside any cell (usually nothing) goes to ``kernel.log`` beside ``output``.
    """
    os.environ["RUNBOOK_RECORD"] = str(record)
    os.environ["RUNBOOK_HEADLESS"] = "1"
    from runbook_lib.kernel import KERNEL_NAME, Kernel

    cwd = Path.cwd()
    kernel = Kernel(cwd)  # boots while papermill is imported
    if interrupts is not None:
        interrupts.kernel = kernel
    nb: Any = None
    finished = False
    try:
        pm = speedups.import_papermill()
        hooks: dict[str, Any] = {}
        if progress is not None:
            hooks = {"on_cell_start": progress.start, "on_cell_executed": progress.done}
        if interrupts is not None and interrupts.interrupted:
            raise KeyboardInterrupt
        nb = pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters if inject else None,
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            request_save_on_cell_execute=False,
            cwd=str(cwd),
            km=kernel.manager,
            **hooks,
        )
        finished = True
    except Exception:
        finished = True  # a failed cell: the kernel is alive and can exit while we render
        raise
    finally:
        if interrupts is not None:
            interrupts.finished()
        log = kernel.shut_down(meanwhile=while_stopping if finished else None)
        if interrupts is not None:
            interrupts.kernel = None
        if log.strip():
            (output.parent / KERNEL_LOG).write_text(log, encoding="utf-8")
    return nb


class HtmlWriter:
    """Renders the executed notebook as HTML (nbconvert, the JupyterLab template).

    nbconvert's first rendering costs more than later ones together (imports, templates, the
    theme's CSS, the code highlighter, the CSS selectors it compiles). :meth:`warm_up` pays it in
    a thread while the kernel works (from the connect step on), when this process has nothing
    to do; it renders a small notebook with the kinds of cells and outputs the runbook has.
    BENCHMARKS.md has the figures.
    """

    def __init__(self) -> None:
        self._exporter: Any = None
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        if self._thread is None and speedups.enabled():
            self._thread = threading.Thread(target=self._warm, name="html-warm-up", daemon=True)
            self._thread.start()

    def _warm(self) -> None:
        try:
            exporter = _html_exporter()
            exporter.from_notebook_node(_warm_up_notebook())
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


def _warm_up_notebook() -> Any:
    """A notebook with one of each: markdown, Python code, text, HTML, a table and an error."""
    from nbformat import v4

    code = v4.new_code_cell(
        "run.watch()",
        execution_count=1,
        outputs=[
            v4.new_output("stream", name="stdout", text="[watch] 0.5 s\n"),
            v4.new_output(
                "execute_result",
                data={"text/plain": "ok", "text/html": "<table><tr><td>ok</td></tr></table>"},
                execution_count=1,
            ),
            v4.new_output("error", ename="RunbookError", evalue="x", traceback=["x"]),
        ],
    )
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# A *title*\n\n`code`"), code])
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


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


# --- run ----------------------------------------------------------------------------------------


def read_params(args: argparse.Namespace) -> Params:
    """The parameters: ``--params``, then each ``-p``; without ``--params``, the notebook's own
    defaults (its parameters cell: the embedded lab, which it fixes as ``make run`` does).

    Not the shipped ``lab.yaml``: its ``apply: true`` would make ``-p backend=aws`` write to a
    real account, where the notebook's default (``apply`` null) only plans.
    """
    if args.params:
        values = load_params_file(Path(args.params))
        source = args.params
    else:
        values = {}
        source = "the notebook's defaults"
    for item in args.parameter or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ParameterError("-p", f"option -p takes NAME=VALUE; got {item!r}.")
        values[key] = _parse_value(raw)
    return Params.from_mapping(values, source=source)


def prepare_out(out_arg: str) -> Path:
    """Check ``--out`` and create this run's folder in it (``latest`` pointing at it).

    Raises :class:`UsageError` with one sentence when it cannot be used.
    """
    out = Path(out_arg)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out_arg!r} is a file, not a folder; give a folder (it is created if missing)."
        )
    try:
        return history.create_run(out)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(
            f"--out {out_arg!r} cannot be written ({reason}); give a folder you can write to."
        ) from None


def cmd_run(args: argparse.Namespace) -> int:
    try:
        params = read_params(args)
        run_dir = prepare_out(args.out)
    except (ParameterError, UsageError) as exc:
        print(f"carts-runbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = Path(args.out) / run_dir.name  # paths as the caller gave them
    nb_path, html_path, record_path = (
        run_dir / f"{STEM}.ipynb",
        run_dir / f"{STEM}.html",
        run_dir / f"{STEM}.record.json",
    )
    where = params.endpoint_url or ("an embedded lab" if params.is_lab else f"AWS {params.region}")
    print(f"carts-runbook: running {STEM}.ipynb against {where} ({params.source})", file=sys.stderr)
    failed: str | None = None
    failed_cell: str | None = None
    t0 = time.monotonic()
    html = HtmlWriter()

    def warm_up(step: str) -> None:
        if step == "connect":  # the kernel starts a lab or reaches AWS: this process is idle
            html.warm_up()

    def render() -> None:
        if nb_path.exists():
            html.write(nb_path, html_path)

    with (
        Interrupts() as interrupts,
        shipped.shipped_path(shipped.NOTEBOOK) as notebook,
    ):
        progress = Progress(on_step=None if args.no_html else warm_up, interrupts=interrupts)
        try:
            execute(
                notebook,
                params.public_dict(),
                nb_path.absolute(),
                record_path.absolute(),
                progress,
                while_stopping=None if args.no_html else render,
                interrupts=interrupts,
            )
        except KeyboardInterrupt:
            pass  # interrupted before the first cell: reported below
        except Exception as exc:
            # Imported only now: papermill is imported while the kernel starts (see execute).
            from nbclient.exceptions import DeadKernelError
            from papermill.exceptions import PapermillExecutionError

            if isinstance(exc, PapermillExecutionError):
                failed = f"{exc.ename}: {exc.evalue}"
                failed_cell = _failed_step(nb_path, exc.cell_index)
            elif interrupts.interrupted:
                failed = f"{type(exc).__name__}: {exc}"
            elif isinstance(exc, DeadKernelError | RuntimeError):
                # The kernel died, or never answered: its own output says why.
                return _report_kernel_failure(exc, run_dir / KERNEL_LOG, shown)
            else:
                raise
        stopped = interrupts.interrupted and (failed is not None or not nb_path.exists())
    kernel_log = run_dir / KERNEL_LOG
    if interrupts.forced:
        print(
            f"\ncarts-runbook: the kernel had not stopped {interrupts.GRACE_S:g} s after Ctrl-C:"
            " it was stopped",
            file=sys.stderr,
        )
    if stopped:
        return _report_interrupted(record_path, shown, progress.step or failed_cell)

    leaks = scan_outputs([nb_path, html_path, record_path])
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.exists() else {}
    print(file=sys.stderr)
    lines = _summary_lines(record, time.monotonic() - t0)
    lines += [f"notebook: {shown / nb_path.name}"]
    if not args.no_html:
        lines += [f"html:     {shown / html_path.name}"]
    lines += [f"record:   {shown / record_path.name}"]
    if kernel_log.exists():
        lines += [f"kernel:   {shown / KERNEL_LOG} (what the kernel printed outside the notebook)"]
    lines += [f"latest:   {Path(args.out) / history.LATEST} -> {run_dir.name}"]
    for line in lines:
        print(line)
    for leak in leaks:
        print(f"carts-runbook: SECURITY: {leak}", file=sys.stderr)
    if failed is not None:
        step = record.get("failed_step") or failed_cell or "unknown"
        print(f"carts-runbook: FAILED at step '{step}': {failed}", file=sys.stderr)
        if record.get("undo"):
            print(f"carts-runbook: to undo what this run wrote: {record['undo']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if leaks else 0


def _report_kernel_failure(exc: Exception, log: Path, shown: Path) -> int:
    """One sentence for a kernel that died or never answered, and where its own output is."""
    tail = ""
    if log.exists():
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        tail = (
            f" Its last line: {lines[-1][:200]!r}; all of it: {shown / KERNEL_LOG}."
            if lines
            else ""
        )
    print(
        f"carts-runbook: the kernel stopped ({type(exc).__name__}: {exc}).{tail}", file=sys.stderr
    )
    return EXIT_FAILED


def _report_interrupted(record_path: Path, shown: Path, step: str | None) -> int:
    """One line for a run Ctrl-C stopped; the record says ``interrupted``, the step and the undo.

    The step marks the record itself when the interrupt reached it in a cell; between cells (or
    when a second Ctrl-C killed the kernel) this does, from the undo the apply step recorded.
    """
    from runbook_lib.record import RunRecord

    data: dict[str, Any] = {}
    if record_path.exists():
        try:
            data = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
    if data and data.get("outcome") != "interrupted":
        undo = data.get("undo") or data.get("steps", {}).get("apply", {}).get("undo")
        record = RunRecord(record_path, data)
        record.interrupt(str(data.get("failed_step") or step or "unknown"), undo)
    where = f"in step '{data.get('failed_step') or step}'" if (data or step) else "before any step"
    undo = data.get("undo")
    then = f"to undo what it wrote: {undo}" if undo else "it wrote nothing to undo"
    record_note = f" (record: {shown / record_path.name})" if data else ""
    print(file=sys.stderr)
    print(f"carts-runbook: interrupted {where}{record_note}; {then}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _failed_step(notebook: Path, cell_index: int) -> str | None:
    """The step tag of the cell papermill stopped at (for failures before the record exists)."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
        return _step_of(nb.cells[cell_index])
    except (OSError, IndexError, ValueError):
        return None


def _summary_lines(record: dict[str, Any], seconds: float) -> list[str]:
    lines = [f"outcome:  {record.get('outcome', 'no record written')}"]
    earlier = record.get("earlier_runs") or {}
    if earlier.get("first_writer"):
        # A run on the same policy wrote and did not finish: what it replaced, and its undo.
        replaced = (earlier.get("replaced") or {}).get("sha256")
        what = f"sha256 {str(replaced)[:12]}" if replaced else "no policy"
        lines.append(
            f"earlier:  run {earlier['first_writer']} wrote and did not finish; it replaced "
            f"{what}; to undo it: {earlier.get('undo')}"
        )
    if record.get("iam_now"):
        lines.append(f"iam:      {record['iam_now'].get('sentence')}")
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
    return lines


# --- notebook, jupyter, golden -------------------------------------------------------------------


def copy_notebook(folder: Path) -> list[Path]:
    """Copy the notebook and the example parameters into ``folder`` (created if missing).

    Raises :class:`UsageError` when ``folder`` is a file, cannot be written, or already holds one
    of those files (nothing is overwritten).
    """
    names = (shipped.NOTEBOOK, *shipped.EXAMPLE_PARAMS)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is a file, not a folder; give a folder.")
    clashes = [n for n in names if (folder / n).exists()]
    if clashes:
        raise UsageError(
            f"{str(folder)!r} already holds {clashes[0]}; nothing was copied (remove it or give "
            "another folder)."
        )
    copied = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            with shipped.shipped_path(name) as source:
                shutil.copyfile(source, folder / name)
            copied.append(folder / name)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"cannot write to {str(folder)!r} ({reason}).") from None
    return copied


def cmd_notebook(args: argparse.Namespace) -> int:
    try:
        copied = copy_notebook(Path(args.dir))
    except UsageError as exc:
        print(f"carts-runbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for path in copied:
        print(path)
    print(
        f"carts-runbook: open it with `carts-runbook jupyter {args.dir}`, or run it headless with "
        f"`carts-runbook run --params {Path(args.dir) / shipped.DEFAULT_PARAMS}`.",
        file=sys.stderr,
    )
    return 0


def jupyter_argv(folder: Path, extra: list[str]) -> list[str]:
    """``make jupyter``'s command for the notebook in ``folder``: JupyterLab with its defaults
    (loopback only, a token), run by this interpreter; ``--allow-root`` as root, because
    jupyter_server refuses root without it (containers, CI images)."""
    argv = [sys.executable, "-m", "jupyterlab"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    return [*argv, *extra, str(folder / shipped.NOTEBOOK)]


def cmd_jupyter(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not (folder / shipped.NOTEBOOK).is_file():
        try:
            copy_notebook(folder)
        except UsageError as exc:
            print(f"carts-runbook: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"carts-runbook: copied the notebook into {args.dir}", file=sys.stderr)
    argv = jupyter_argv(Path("."), list(args.jupyter_args))
    os.chdir(folder)  # JupyterLab's root: the folder with the notebook and its parameters
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


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

    target = Path(args.to).resolve() if args.to else shipped.source_notebook()
    if target is None:
        print(
            "carts-runbook: golden regenerates a checkout's notebooks/; this is an installed copy "
            "(give --to PATH to write it elsewhere).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # The lab runs on a stepped clock: time moves only while the runbook waits, so the same
    # notebook always tells the same history (see runbook_lib.lab.clock).
    from runbook_lib.session import LAB_CLOCK_ENV

    os.environ[LAB_CLOCK_ENV] = "stepped"
    with shipped.shipped_path(shipped.NOTEBOOK) as source, tempfile.TemporaryDirectory() as tmp:
        tmp_nb = Path(tmp) / f"{STEM}.ipynb"
        execute(source, {}, tmp_nb, Path(tmp) / f"{STEM}.record.json", Progress(), inject=False)
        strip_run_metadata(tmp_nb)
        leaks = scan_outputs([tmp_nb])
        if leaks:
            print(f"carts-runbook: {leaks[0]}", file=sys.stderr)
            return EXIT_FAILED
        target.write_text(tmp_nb.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"carts-runbook: golden outputs written to {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carts-runbook",
        description="Runbook for ECS Immersion Day step 3.2 'Fix IAM Permissions'.",
    )
    parser.add_argument("--version", action="version", version=f"carts-runbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the runbook headless (papermill)")
    run.add_argument(
        "--params",
        help="a YAML file of the notebook's parameters (default: the notebook's own defaults, "
        "the embedded lab)",
    )
    run.add_argument(
        "-p",
        dest="parameter",
        action="append",
        metavar="NAME=VALUE",
        help="override one parameter (YAML value)",
    )
    run.add_argument(
        "--out",
        default="out",
        help="folder for the runs: each writes OUT/<run id>/, OUT/latest points at the newest "
        "(default: out)",
    )
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.set_defaults(func=cmd_run)
    notebook = sub.add_parser(
        "notebook", help="copy the notebook and example parameters into a folder"
    )
    notebook.add_argument("dir", metavar="DIR", help="the folder (created if missing)")
    notebook.set_defaults(func=cmd_notebook)
    jupyter = sub.add_parser(
        "jupyter",
        help="open JupyterLab on the notebook in DIR (copied there first if missing)",
    )
    jupyter.add_argument("dir", metavar="DIR", nargs="?", default=".", help="default: here")
    jupyter.add_argument(
        "jupyter_args",
        metavar="-- JUPYTER_OPTION",
        nargs=argparse.REMAINDER,
        help="options passed on to `jupyter lab` after --, e.g. -- --no-browser --port 8890",
    )
    jupyter.set_defaults(func=cmd_jupyter)
    golden = sub.add_parser(
        "golden", help="regenerate the committed notebook's outputs against a fresh lab (checkout)"
    )
    golden.add_argument(
        "--to", metavar="PATH", help="write the notebook there instead of over the committed one"
    )
    golden.set_defaults(func=cmd_golden)
    perms = sub.add_parser(
        "permissions",
        help="print the least-privilege IAM policy a participant needs to run the runbook",
        description="Print the identity policy (JSON) that allows every AWS call the runbook "
        "makes with these parameters: plan only, or with --apply the writes too (put-role-policy, "
        "its rollback). Scoped to the parameters' account, region, role, cluster, service and "
        "table wherever IAM takes a resource for the action.",
    )
    perms.add_argument("--params", help="a YAML file of the notebook's parameters")
    perms.add_argument(
        "-p",
        dest="parameter",
        action="append",
        metavar="NAME=VALUE",
        help="override one parameter (YAML value)",
    )
    perms.add_argument(
        "--apply", action="store_true", help="include the writes (default: plan only)"
    )
    perms.add_argument(
        "--log-group",
        default="*",
        metavar="NAME",
        help="the carts task definition's awslogs group, to scope the log reads (default: any; "
        "the workshop's is retail-store-ecs-tasks)",
    )
    perms.set_defaults(func=cmd_permissions)
    from runbook_lib.fleet.command import add_parser as add_fleet_parser

    add_fleet_parser(sub)
    return parser


def cmd_permissions(args: argparse.Namespace) -> int:
    """The policy on stdout (pipe it into a file); what it is scoped to on stderr."""
    from runbook_lib.permissions import Scope, policy_text

    try:
        params = read_params(args)
    except ParameterError as exc:
        print(f"carts-runbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    scope = Scope(params, params.account_id or "*", args.log_group)
    kind = "plan and apply" if args.apply else "plan only (no write)"
    print(
        f"carts-runbook: {kind}, account {scope.account}, region {params.region}, role "
        f"{params.task_role}, service {params.cluster}/{params.service}, table {params.table}",
        file=sys.stderr,
    )
    sys.stdout.write(policy_text(scope, writes=args.apply))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jupyter_args", None) and args.jupyter_args[0] == "--":
        args.jupyter_args = args.jupyter_args[1:]
    # At exit, Python's finalisation runs full garbage collections over everything papermill and
    # nbconvert loaded; frozen objects are skipped, and the process is ending.
    atexit.register(speedups.freeze_gc)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("\ncarts-runbook: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
