"""One target's run, on a Dask worker: the notebook exactly as ``carts-runbook run`` runs it.

:func:`run_target` is the function the fleet submits to Dask. It runs the single-run code path
of :mod:`runbook_lib.cli` (``execute`` with its step progress, the HTML written while the kernel
exits, the scan of every output for credentials) into ``DIR/<target>/``, then adds the fleet's
part to the record. Around that it does what only the process that runs the target can do:

- one target at a time per worker process (a run's record path reaches the kernel through the
  process's environment);
- a second attempt after a lost worker only when the record allows it
  (:func:`runbook_lib.fleet.records.retry_allowed`), whoever starts it: the fleet, or a Dask
  scheduler that reschedules the tasks of a worker that died; the first attempt's files are
  kept in ``attempt-1/``;
- the fleet's stop requests (Ctrl-C), read from a control file in DIR: ``after-step`` lets the
  running step finish and starts no other; ``now`` interrupts the kernel (as JupyterLab's
  "interrupt the kernel" does), and the step records where it stopped and the undo;
- a bound on a run's whole time (``deadline_s``), enforced the same way, so that one stuck
  target never holds a worker for ever.

Every path the function is given is absolute: with ``--scheduler``, workers must see DIR at the
same path (a shared file system), which :func:`check_worker` checks before anything runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib import cli
from runbook_lib.fleet import records
from runbook_lib.fleet.records import HTML, NOTEBOOK, RECORD

#: A run of one target is tried at most this often (a first run and one retry).
MAX_ATTEMPTS = 2
#: The fleet's marker in a target's folder: which fleet run and attempt is (or was) there.
ATTEMPT_FILE = "fleet-attempt.json"
#: The step lines and summary a ``carts-runbook run`` prints, for this target.
LOG_FILE = "run.log"
#: The control file in DIR through which the fleet asks its running targets to stop.
CONTROL_FILE = ".fleet-stop"
STOP_AFTER_STEP = "after-step"
STOP_NOW = "now"
#: How often a running target looks at the control file and its deadline (seconds).
POLL_S = 0.25

# One run per worker process: ``execute`` hands the record path to the kernel through the
# process's environment.
_ONE_RUN = threading.Lock()


@dataclass(frozen=True)
class Job:
    """What a worker needs to run one target (plain values: it travels to the worker)."""

    target: str
    #: The run's parameters: the target's, and for a target in the fleet's lab, the lab's
    #: endpoint and the role its run assumes there (:mod:`runbook_lib.fleet.lab`).
    parameters: dict[str, Any]
    lab_scenario: str
    parameters_sha256: str
    folder: str
    control: str
    fleet_run: str
    deadline_s: float


@dataclass
class Outcome:
    """What a worker reports back for one target."""

    target: str
    #: ``ran``, ``not started`` (the fleet was stopping) or ``not retried`` (see the message).
    status: str
    exit: int | None
    seconds: float
    attempt: int
    record: dict[str, Any] | None = None
    message: str = ""
    worker: str = ""
    leaks: list[str] = field(default_factory=list)


def stop_request(control: str | Path) -> str:
    """The fleet's stop request ("" when none)."""
    try:
        return Path(control).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def run_target(job: Job) -> Outcome:
    """Run ``job``'s target into its folder; never raises for a failed run (its exit says)."""
    with _ONE_RUN:
        return _run_target(job)


def _run_target(job: Job) -> Outcome:
    folder = Path(job.folder)
    who = _worker_name()
    if stop_request(job.control):
        return Outcome(
            job.target, "not started", None, 0.0, 0, message="the fleet was stopping", worker=who
        )
    folder.mkdir(parents=True, exist_ok=True)
    earlier = attempts_so_far(folder, job.fleet_run)
    attempt = earlier + 1
    if earlier:
        record = records.load(folder / RECORD)
        ok, why = records.retry_allowed(record)
        if attempt > MAX_ATTEMPTS or not ok:
            why = why if not ok else "it was already run again once"
            marked = records.mark_stopped(
                folder / RECORD,
                "worker lost",
                records.last_step(record),
                f"the worker running it was lost; {why}.",
            )
            return Outcome(
                job.target, "not retried", 1, 0.0, earlier, marked, f"not run again: {why}", who
            )
        _wait_for_orphan(folder)
        records.mark_stopped(
            folder / RECORD,
            "worker lost",
            records.last_step(record),
            f"the worker running it was lost; it was run again because {why}.",
        )
        _keep_attempt(folder, earlier)
    _write_attempt(folder, job, attempt, who)
    t0 = time.monotonic()
    failed, stopped_before, leaks = _execute(job, folder)
    seconds = round(time.monotonic() - t0, 3)
    record_path = folder / RECORD
    request = stop_request(job.control)
    if stopped_before is not None or (failed and request == STOP_NOW):
        where = f"before step '{stopped_before}'" if stopped_before else "during its step"
        records.mark_stopped(
            record_path,
            "interrupted",
            stopped_before,
            f"KeyboardInterrupt: the fleet was stopped (Ctrl-C) {where}",
        )
    elif failed and failed.startswith(_DEADLINE):
        records.mark_stopped(record_path, "failed", None, failed)
    record = _add_fleet_part(record_path, job, attempt, seconds, who)
    if record is not None and record.get("outcome") == "interrupted":
        code: int | None = 130
    elif failed is not None or leaks or record is None:
        code = 1
    else:
        code = 0
    message = failed or ""
    return Outcome(job.target, "ran", code, seconds, attempt, record, message, who, leaks)


_DEADLINE = "the run took longer than"


def _execute(job: Job, folder: Path) -> tuple[str | None, str | None, list[str]]:
    """Run the notebook as ``carts-runbook run`` does; returns (the failure, the step it was
    stopped before, the credential leaks found)."""
    from runbook_lib import shipped

    nb_path, html_path, record_path = folder / NOTEBOOK, folder / HTML, folder / RECORD
    for stale in (nb_path, html_path, record_path, folder / cli.KERNEL_LOG):
        stale.unlink(missing_ok=True)
    log = io.StringIO()
    html = cli.HtmlWriter()
    # The single run's interrupt logic, without its SIGINT handler (a worker thread has none):
    # the guard below calls it as Ctrl-C would.
    interrupts = cli.Interrupts()
    progress = _Progress(job.control, log, html, interrupts)
    guard = _Guard(job.control, job.deadline_s, folder, interrupts)
    failed: str | None = None
    t0 = time.monotonic()

    def render() -> None:
        if nb_path.exists():
            html.write(nb_path, html_path)

    guard.start()
    try:
        with shipped.shipped_path(shipped.NOTEBOOK) as notebook:
            cli.execute(
                notebook,
                job.parameters,
                nb_path,
                record_path,
                progress,
                while_stopping=render,
                interrupts=interrupts,
            )
    except Exception as exc:
        from papermill.exceptions import PapermillExecutionError

        if isinstance(exc, PapermillExecutionError):
            failed = f"{exc.ename}: {exc.evalue}".rstrip(": ")
        else:
            failed = f"{type(exc).__name__}: {exc}"
    finally:
        guard.stop()
    if guard.expired:
        failed = f"{_DEADLINE} {job.deadline_s:g} s and was stopped"
    leaks = cli.scan_outputs([nb_path, html_path, record_path])
    record = records.load(record_path) or {}
    print(file=log)
    for line in cli._summary_lines(record, time.monotonic() - t0):
        print(line, file=log)
    print(f"notebook: {nb_path}\nhtml:     {html_path}\nrecord:   {record_path}", file=log)
    for leak in leaks:
        print(f"carts-runbook: SECURITY: {leak}", file=log)
    if failed is not None:
        step = record.get("failed_step") or progress.refused or progress.step or "unknown"
        print(f"carts-runbook: FAILED at step '{step}': {failed}", file=log)
    (folder / LOG_FILE).write_text(log.getvalue(), encoding="utf-8")
    return failed, progress.refused, leaks


class _Progress(cli.Progress):
    """``carts-runbook run``'s step lines (into the target's log), and the fleet's "stop after
    this step": at a stop request no further cell starts (papermill stops there as at a failed
    cell and writes the notebook)."""

    def __init__(
        self, control: str, stream: Any, html: cli.HtmlWriter, interrupts: cli.Interrupts
    ) -> None:
        super().__init__(stream, on_step=self._on_step, interrupts=interrupts)
        self._control = control
        self._html = html
        self.refused: str | None = None

    def _on_step(self, step: str) -> None:
        if step == "connect":  # as carts-runbook run: the kernel works, this process waits
            self._html.warm_up()

    def start(self, cell: Any, cell_index: int, **kw: Any) -> None:
        # nbclient calls this hook for markdown cells too: refuse the next code cell.
        if cell.get("cell_type") == "code" and stop_request(self._control):
            from nbclient.exceptions import CellExecutionError

            self.refused = cli._step_of(cell) or "parameters"
            raise CellExecutionError(
                "stopped", "KeyboardInterrupt", "the fleet was stopped (Ctrl-C)"
            )
        super().start(cell, cell_index, **kw)


class _Guard:
    """Interrupts the run's kernel when the fleet asks to stop now or the run's deadline passes,
    as a Ctrl-C reaches ``carts-runbook run`` (:class:`runbook_lib.cli.Interrupts`: the running
    step records where it stopped; a second one, 30 s later, kills a kernel that did not stop).
    It also notes the kernel's pid in the attempt marker for a retry after a lost worker."""

    def __init__(
        self, control: str, deadline_s: float, folder: Path, interrupts: cli.Interrupts
    ) -> None:
        self._control = control
        self._folder = folder
        self._interrupts = interrupts
        self._deadline = time.monotonic() + deadline_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fleet-guard", daemon=True)
        self.expired = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        sent_at: float | None = None
        noted = False
        while not self._done.wait(POLL_S):
            kernel = self._interrupts.kernel
            if not noted and kernel is not None and kernel.pid:
                noted = _note_kernel(self._folder, kernel.pid)
            now = stop_request(self._control) == STOP_NOW
            late = time.monotonic() > self._deadline
            if (now or late) and sent_at is None:
                self.expired = late and not now
                self._interrupts._on_sigint(signal.SIGINT, None)
                sent_at = time.monotonic()
            elif sent_at is not None and time.monotonic() > sent_at + 30:
                self._interrupts._on_sigint(signal.SIGINT, None)  # the second: kill it
                return


def _note_kernel(folder: Path, pid: int) -> bool:
    """Write the kernel's pid into the attempt marker: if this worker dies, the retry waits for
    that kernel to go before it moves the files the kernel may still write."""
    try:
        data = json.loads((folder / ATTEMPT_FILE).read_text(encoding="utf-8"))
        data["kernel_pid"] = pid
        _write_json(folder / ATTEMPT_FILE, data)
    except (OSError, ValueError):
        pass
    return True


def _wait_for_orphan(folder: Path, timeout_s: float = 15.0) -> None:
    """Wait until the kernel of a lost worker has exited (ipykernel exits within a second or
    two of losing its parent); kill it when it outlives ``timeout_s``. Only on the same host."""
    import psutil

    try:
        data = json.loads((folder / ATTEMPT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    pid = data.get("kernel_pid")
    if not isinstance(pid, int) or data.get("host") != socket.gethostname():
        return
    try:
        kernel = psutil.Process(pid)
        command = " ".join(kernel.cmdline())
        if "ipykernel" not in command and "runbook_lib.kernel" not in command:
            return  # the pid was reused by another program
        kernel.wait(timeout_s)
    except psutil.TimeoutExpired:
        kernel.kill()
    except psutil.Error:
        return


def attempts_so_far(folder: Path, fleet_run: str) -> int:
    """How many times fleet run ``fleet_run`` has started this target (its marker file)."""
    try:
        data = json.loads((folder / ATTEMPT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict) or data.get("fleet_run") != fleet_run:
        return 0
    return int(data.get("attempt", 0))


def _write_attempt(folder: Path, job: Job, attempt: int, worker: str) -> None:
    data = {
        "fleet_run": job.fleet_run,
        "target": job.target,
        "attempt": attempt,
        "worker": worker,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json(folder / ATTEMPT_FILE, data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _keep_attempt(folder: Path, attempt: int) -> None:
    """Move attempt ``attempt``'s files into ``attempt-N/`` (its record keeps its undo)."""
    keep = folder / f"attempt-{attempt}"
    keep.mkdir(exist_ok=True)
    for name in (RECORD, NOTEBOOK, HTML, LOG_FILE, cli.KERNEL_LOG):
        if (folder / name).exists():
            shutil.move(str(folder / name), str(keep / name))


def earlier_undo(folder: Path) -> list[str]:
    """Undo commands kept from earlier attempts and runs of this target (oldest first)."""
    found = []
    for kept in sorted(folder.glob("attempt-*/" + RECORD)) + sorted(
        folder.glob("earlier-*/" + RECORD)
    ):
        undo = records.undo_of(records.load(kept))
        if undo and undo not in found:
            found.append(undo)
    return found


def _add_fleet_part(
    path: Path, job: Job, attempt: int, seconds: float, worker: str
) -> dict[str, Any] | None:
    data = records.load(path)
    if data is None:
        return None
    data["fleet"] = {
        "target": job.target,
        "fleet_run": job.fleet_run,
        "parameters_sha256": job.parameters_sha256,
        "lab_scenario": job.lab_scenario or None,
        "attempt": attempt,
        "seconds": seconds,
        "worker": worker,
        "earlier_undo": earlier_undo(path.parent),
    }
    records.save(path, data)
    return data


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def check_worker(folder: str, token: str, lab_url: str = "") -> str:
    """Run on every worker before the fleet starts: "" when this worker can run targets, else
    why not (it cannot see DIR at the same path, cannot import the runbook's dependencies, or
    cannot reach the fleet's lab at ``lab_url``, which listens on this machine's loopback)."""
    try:
        seen = (Path(folder) / ".fleet-run").read_text(encoding="utf-8")
    except OSError:
        return f"cannot read {folder} (give workers the output folder at the same path)"
    if token not in seen:
        return f"sees another {folder} (give workers the output folder at the same path)"
    try:
        import papermill  # noqa: F401

        from runbook_lib import cli  # noqa: F401
    except ImportError as exc:
        return f"cannot import {exc.name} (install the project on the workers)"
    if lab_url:
        from urllib.parse import urlsplit

        where = urlsplit(lab_url)
        try:
            with socket.create_connection((where.hostname or "", where.port or 80), timeout=5):
                pass
        except OSError as exc:
            return (
                f"cannot reach the fleet's lab at {lab_url} ({exc.strerror or exc}); the lab "
                "listens on the fleet command's machine only: run a lab fleet's workers there"
            )
    return ""
