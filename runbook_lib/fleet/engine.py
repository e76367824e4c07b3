"""The fleet's engine: targets onto Dask, within throttling bounds, isolated, stoppable.

- **Dask does the running.** Each target is one future (:func:`runbook_lib.fleet.worker.run_target`)
  on an embedded ``LocalCluster`` (one process per worker, one thread each, sized to the machine)
  or on an existing cluster (``--scheduler tcp://HOST:PORT``). ``as_completed`` hands back each
  result as it ends; the next targets are submitted as bounds allow.
- **Throttling.** AWS limits API rates per account and region (IAM per account). At most
  ``per_account`` targets of one account run at once (default 1), and at most ``per_region`` of
  one region (default: no bound); :class:`Bounds` decides, purely.
- **Isolation.** A target's failure is its own row. A lost worker (``KilledWorker``: the embedded
  scheduler allows no automatic retry, ``allowed-failures: 0``) is retried once, and never after
  the target may have written to IAM unless its record shows the write landed
  (:func:`runbook_lib.fleet.records.retry_allowed`; the worker applies the same rule when a
  scheduler of its own reschedules the task).
- **Ctrl-C.** The first stops scheduling: futures still queued are cancelled, and running targets
  finish their current step and stop there (their records say where and the undo). The second
  interrupts running steps (each kernel, as JupyterLab's "interrupt the kernel"). The summary is
  written either way; ``--resume`` goes on from it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from runbook_lib.fleet import lab as fleet_lab
from runbook_lib.fleet import records
from runbook_lib.fleet.records import RECORD
from runbook_lib.fleet.summary import (
    SUMMARY_CSV,
    SUMMARY_HTML,
    SUMMARY_JSON,
    Row,
    counts_line,
    row_from_record,
    write_csv,
    write_json,
)
from runbook_lib.fleet.targets import FleetTargets, Target
from runbook_lib.fleet.worker import (
    CONTROL_FILE,
    MAX_ATTEMPTS,
    STOP_AFTER_STEP,
    STOP_NOW,
    Job,
    Outcome,
    run_target,
)

#: The fleet's mark in DIR: a fleet run wrote here (its id, when, from which targets file).
RUN_FILE = ".fleet-run"
#: Memory one target needs at its peak (its worker's papermill and its kernel with a lab): the
#: embedded cluster starts no more workers than the available memory holds (BENCHMARKS.md).
MEMORY_PER_WORKER = 700 * 1024 * 1024
#: A target's run may take its watch's ``timeout_s`` plus this (every other step, the kernel).
DEADLINE_MARGIN_S = 900.0


class FleetUsageError(Exception):
    """Bad input to the fleet command (its folder, its cluster): one sentence, exit 2."""


@dataclass(frozen=True)
class Options:
    out: Path
    workers: int | None = None
    scheduler: str | None = None
    resume: bool = False
    per_account: int = 1
    per_region: int = 0
    progress: bool = True
    #: Called once when no target is left to submit (the last ones run): the summary's warm-up.
    on_all_submitted: Callable[[], None] | None = None


@dataclass
class Bounds:
    """How many targets run per account and per region; which pending target may start next."""

    per_account: int = 1
    per_region: int = 0  # 0: no bound
    accounts: Counter[str] = field(default_factory=Counter)
    regions: Counter[str] = field(default_factory=Counter)

    def fits(self, target: Target) -> bool:
        if self.accounts[target.account_key] >= self.per_account:
            return False
        return not (self.per_region and self.regions[target.region_key] >= self.per_region)

    def take(self, target: Target) -> None:
        self.accounts[target.account_key] += 1
        self.regions[target.region_key] += 1

    def give_back(self, target: Target) -> None:
        self.accounts[target.account_key] -= 1
        self.regions[target.region_key] -= 1


@dataclass
class FleetResult:
    rows: list[Row]
    exit_code: int
    seconds: float
    workers: int
    interrupted: bool


# --- the output folder -----------------------------------------------------------------------


def prepare_out(out: Path, targets: FleetTargets, resume: bool) -> str:
    """Check and create ``out``; returns this fleet run's id (written to :data:`RUN_FILE`).

    Without ``--resume`` a folder that holds a fleet run, or a record of one of these targets, is
    refused: its records keep the undo of what those runs wrote.
    """
    if out.exists() and not out.is_dir():
        raise FleetUsageError(f"--out {str(out)!r} is a file, not a folder; give a folder.")
    if not resume:
        held = [n for n in targets.names if (out / n / RECORD).exists()]
        if (out / RUN_FILE).exists() or held:
            what = f"the run of target {held[0]!r}" if held else "a fleet run"
            raise FleetUsageError(
                f"--out {str(out)!r} already holds {what}; give --resume to go on with it, or "
                "another folder (its records keep the undo of what those runs wrote)."
            )
    token = secrets.token_hex(8)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONTROL_FILE).unlink(missing_ok=True)
        run = {
            "fleet_run": token,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "targets_file": str(targets.path),
        }
        (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise FleetUsageError(
            f"--out {str(out)!r} cannot be written ({(exc.strerror or str(exc)).lower()})."
        ) from None
    return token


def _keep_earlier(folder: Path) -> None:
    """Move an earlier fleet run's files of this target into ``earlier-N/`` (kept, not lost)."""
    from runbook_lib.cli import KERNEL_LOG
    from runbook_lib.fleet.records import HTML, NOTEBOOK
    from runbook_lib.fleet.worker import LOG_FILE

    if not (folder / RECORD).exists():
        return
    n = 1
    while (folder / f"earlier-{n}").exists():
        n += 1
    keep = folder / f"earlier-{n}"
    keep.mkdir()
    for name in (RECORD, NOTEBOOK, HTML, LOG_FILE, KERNEL_LOG):
        if (folder / name).exists():
            shutil.move(str(folder / name), str(keep / name))


# --- Dask ------------------------------------------------------------------------------------


def default_workers(n_targets: int) -> int:
    """Workers for the embedded cluster: one per core, no more than the memory holds or the
    targets need, at least one."""
    import psutil

    cores = os.cpu_count() or 1
    by_memory = max(1, int(psutil.virtual_memory().available // MEMORY_PER_WORKER))
    return max(1, min(cores, by_memory, n_targets))


@contextmanager
def dask_client(options: Options, n_targets: int) -> Iterator[tuple[Any, int]]:
    """A Dask client (and, without ``--scheduler``, the embedded cluster it talks to); yields
    it with the number of worker threads."""
    import dask
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
            raise FleetUsageError(
                f"cannot reach the Dask scheduler at {options.scheduler} (--scheduler): "
                f"{reason}; check the address and that it is serving."
            ) from None
        try:
            threads = sum(client.nthreads().values())
            if threads == 0:
                raise FleetUsageError(
                    f"the Dask scheduler at {options.scheduler} has no workers; start some "
                    "(dask worker ADDRESS) where the project is installed."
                )
            yield client, threads
        finally:
            client.close()
        return
    n = options.workers or default_workers(n_targets)
    # Ctrl-C in a terminal reaches the whole process group: the workers ignore it (a signal
    # ignored at start stays ignored in Python), and the command decides what it means.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # Without a dashboard the scheduler still serves its HTTP routes, by default on
                # port 8787 of every interface, and warns on stderr when another cluster holds
                # it (a second fleet on the machine): a free port on loopback instead.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                # A lost worker is the fleet's to report (its row, its record), not the log's.
                silence_logs=logging.CRITICAL,
            )
            client = Client(cluster)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        yield client, n
    finally:
        client.close()
        cluster.close()


def check_workers(client: Any, out: Path, token: str, lab_url: str = "") -> None:
    """Every worker sees ``out`` at the same path, has the project, and reaches the fleet's lab
    (``lab_url``, when it runs one): else one sentence."""
    from runbook_lib.fleet.worker import check_worker

    try:
        answers = client.run(check_worker, str(out), token, lab_url)
    except ImportError as exc:
        raise FleetUsageError(
            f"the Dask workers cannot import {exc.name}; install the project on them."
        ) from None
    for address, problem in sorted(answers.items()):
        if problem:
            raise FleetUsageError(f"Dask worker {address} {problem}.")


# --- the run ---------------------------------------------------------------------------------


class Stopper:
    """Ctrl-C during a fleet run: the first stops scheduling (and each running target after its
    step), the second interrupts running steps, the third gives up at once."""

    def __init__(self, control: Path, on_first: Callable[[], None]) -> None:
        self.control = control
        self.count = 0
        self._on_first = on_first
        self._previous: Any = None

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @property
    def stopping(self) -> bool:
        return self.count > 0

    def request(self, how: str) -> None:
        self.control.write_text(how + "\n", encoding="utf-8")

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            self.request(STOP_AFTER_STEP)
            print(
                "\ncarts-runbook fleet: stopping: no new target starts; running ones stop after "
                "their current step (Ctrl-C again: stop them now)",
                file=sys.stderr,
            )
            threading.Thread(target=self._on_first, name="fleet-cancel", daemon=True).start()
        elif self.count == 2:
            self.request(STOP_NOW)
            print("\ncarts-runbook fleet: interrupting the running steps", file=sys.stderr)
        else:
            raise KeyboardInterrupt


class Fleet:
    """One fleet run: the targets, the bounds, the futures, the rows."""

    def __init__(self, targets: FleetTargets, options: Options, token: str) -> None:
        self.targets = targets
        self.options = options
        self.token = token
        self.out = options.out.resolve()
        self.rows: dict[str, Row] = {}
        self.bounds = Bounds(options.per_account, options.per_region)
        self.attempts: Counter[str] = Counter()
        self._futures: dict[str, Any] = {}  # key -> future
        self._target_of: dict[str, Target] = {}  # key -> target
        self._order = {t.name: i for i, t in enumerate(targets.targets)}
        self._client: Any = None
        #: The lab the lab targets share (:mod:`runbook_lib.fleet.lab`), once started.
        self.lab: Any = None
        self._stopper: Stopper | None = None
        self._bar: Any = None

    # --- before Dask ------------------------------------------------------------------------

    def plan(self) -> list[Target]:
        """The targets to run; with ``--resume``, rows for the ones that need not run again."""
        to_run = []
        for t in self.targets.targets:
            folder = self.out / t.name
            rec = records.load(folder / RECORD) if self.options.resume else None
            if rec is not None and records.finished_with(rec, t.parameters_sha256):
                self.rows[t.name] = self._row(t, rec, resumed=True)
            elif rec is not None and records.write_state(rec) == records.WRITE_UNKNOWN:
                why = (
                    f"not run again: its last run may have sent its IAM write and its record "
                    f"does not show it landed; check the role, then remove {folder} to run it "
                    "again"
                )
                self.rows[t.name] = self._row(
                    t, rec, resumed=True, outcome="not run again", detail=why, exit_code=1
                )
            else:
                if rec is not None:
                    _keep_earlier(folder)
                to_run.append(t)
        return to_run

    # --- with Dask --------------------------------------------------------------------------

    def run(self, client: Any, to_run: list[Target]) -> None:
        from distributed import as_completed

        self._client = client
        control = self.out / CONTROL_FILE
        pending = list(to_run)
        done_before = len(self.rows)
        with (
            Stopper(control, self._cancel_queued) as stopper,
            self._progress(done_before) as bar,
        ):
            self._stopper, self._bar = stopper, bar
            ac = as_completed()
            self._submit_ready(pending, ac)
            for future in ac:
                target = self._target_of.pop(future.key)
                self._futures.pop(future.key, None)
                self.bounds.give_back(target)
                self._settle(target, future, ac)
                if stopper.stopping:
                    for t in pending:
                        self._not_started(t)
                    pending.clear()
                else:
                    self._submit_ready(pending, ac)

    def _submit_ready(self, pending: list[Target], ac: Any) -> None:
        for t in list(pending):
            if self.bounds.fits(t):
                pending.remove(t)
                self._submit(t, ac)
        if not pending and self.options.on_all_submitted is not None:
            self.options.on_all_submitted()

    def _submit(self, t: Target, ac: Any) -> None:
        self.attempts[t.name] += 1
        job = Job(
            target=t.name,
            parameters=fleet_lab.run_parameters(t, self.lab),
            lab_scenario=t.lab_scenario,
            parameters_sha256=t.parameters_sha256,
            folder=str(self.out / t.name),
            control=str(self.out / CONTROL_FILE),
            fleet_run=self.token,
            deadline_s=t.params.timeout_s + DEADLINE_MARGIN_S,
        )
        key = f"fleet-{t.name}-{self.attempts[t.name]}-{self.token}"
        # Dask runs higher priorities first: the targets file's order (a retry goes first).
        order = self._order[t.name] if self.attempts[t.name] == 1 else len(self._order)
        future = self._client.submit(
            run_target, job, key=key, pure=False, priority=len(self._order) - order
        )
        self._futures[key] = future
        self._target_of[key] = t
        self.bounds.take(t)
        ac.add(future)

    def _settle(self, t: Target, future: Any, ac: Any) -> None:
        from distributed import KilledWorker

        if future.cancelled():
            self._not_started(t)
            return
        try:
            outcome: Outcome = future.result()
        except KilledWorker as exc:
            self._worker_lost(t, exc, ac)
            return
        except Exception as exc:  # the run itself raised (a bug, a full disk): its own row
            rec = records.load(self.out / t.name / RECORD)
            self._finish(
                t,
                self._row(
                    t, rec, outcome="failed", exit_code=1, detail=f"{type(exc).__name__}: {exc}"
                ),
            )
            return
        if outcome.status == "not started":
            self._not_started(t)
            return
        if outcome.status == "not retried":
            row = self._row(
                t, outcome.record, outcome="worker lost", exit_code=1, detail=outcome.message
            )
        else:
            row = self._row(t, outcome.record, exit_code=outcome.exit, seconds=outcome.seconds)
            if outcome.record is None:
                row = self._row(
                    t,
                    None,
                    outcome="failed",
                    exit_code=outcome.exit,
                    seconds=outcome.seconds,
                    detail=outcome.message or "the run wrote no record",
                )
        self._finish(t, row)

    def _worker_lost(self, t: Target, exc: BaseException, ac: Any) -> None:
        folder = self.out / t.name
        rec = records.load(folder / RECORD)
        ok, why = records.retry_allowed(rec)
        stopping = self._stopper is not None and self._stopper.stopping
        if ok and self.attempts[t.name] < MAX_ATTEMPTS and not stopping:
            self._say(f"{t.name}: its worker was lost; running it again ({why})")
            self._submit(t, ac)
            return
        if not ok:
            reason = why
        elif stopping:
            reason = "the fleet was stopping, so it was not run again"
        else:
            reason = "it was already run again once"
        marked = records.mark_stopped(
            folder / RECORD,
            "worker lost",
            records.last_step(rec),
            f"the worker running it was lost; {reason}.",
        )
        detail = f"worker lost ({type(exc).__name__}); {reason}"
        self._finish(t, self._row(t, marked, outcome="worker lost", exit_code=1, detail=detail))

    def _cancel_queued(self) -> None:
        """Cancel the futures no worker has started (Ctrl-C); the worker function itself turns
        away any that starts meanwhile (it reads the stop request first)."""
        client = self._client
        if client is None:
            return
        try:
            processing = {k for keys in client.processing().values() for k in keys}
            queued = [f for k, f in list(self._futures.items()) if k not in processing]
            if queued:
                client.cancel(queued)
        except Exception as exc:  # the cluster is going away: the stop request still holds
            self._say(f"could not cancel queued targets: {type(exc).__name__}: {exc}")

    def _not_started(self, t: Target) -> None:
        self._finish(t, self._unfinished_row(t))

    def _unfinished_row(self, t: Target) -> Row:
        """The row of a target whose future ended without a result (cancelled, or the command
        gave up): not started, unless its folder shows this fleet run started it."""
        from runbook_lib.fleet.worker import attempts_so_far

        folder = self.out / t.name
        if attempts_so_far(folder, self.token) == 0:
            return self._row(t, None, outcome="not started", detail="the fleet was stopped")
        rec = records.mark_stopped(
            folder / RECORD,
            "interrupted",
            records.last_step(records.load(folder / RECORD)),
            "KeyboardInterrupt: the fleet stopped while it ran",
        )
        return self._row(t, rec, outcome=None if rec else "interrupted")

    def _finish(self, t: Target, row: Row) -> None:
        self.rows[t.name] = row
        if self._bar is not None:
            self._bar.update(1)
            counts = Counter("ok" if r.good else r.outcome for r in self.rows.values())
            self._bar.set_postfix_str(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        self._say(f"{t.name}: {row.outcome}" + ("" if row.good else f" ({row.detail})"))

    def _row(
        self,
        t: Target,
        record: dict[str, Any] | None,
        *,
        resumed: bool = False,
        outcome: str | None = None,
        detail: str = "",
        exit_code: int | None = None,
        seconds: float | None = None,
    ) -> Row:
        return row_from_record(
            t.name,
            record,
            account=t.account,
            region=t.params.region,
            exit_code=exit_code,
            seconds=seconds,
            attempts=self.attempts[t.name],
            resumed=resumed,
            outcome=outcome,
            detail=detail,
        )

    @contextmanager
    def _progress(self, initial: int) -> Iterator[Any]:
        if not self.options.progress:
            yield None
            return
        from tqdm import tqdm

        with tqdm(
            total=len(self.targets),
            initial=initial,
            unit="target",
            desc="fleet",
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            yield bar

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        elif self.options.progress:
            print(line, file=sys.stderr)

    # --- after ------------------------------------------------------------------------------

    def ordered_rows(self) -> list[Row]:
        """Rows in the targets file's order (a target with no row yet: see
        :meth:`_unfinished_row`)."""
        return [self.rows.get(t.name) or self._unfinished_row(t) for t in self.targets.targets]


def _lab_started(starting: Any) -> Any:
    """The fleet's lab for the lab targets to run (None without any), once started; one
    sentence if it cannot start."""
    from runbook_lib.lab.errors import LabError

    try:
        return starting.result()
    except LabError as exc:
        raise FleetUsageError(f"cannot start the fleet's lab: {str(exc).rstrip('.')}.") from None


def run_fleet(targets: FleetTargets, options: Options) -> FleetResult:
    """Run every target of ``targets`` and write the summary into ``options.out``.

    Raises :class:`FleetUsageError` (exit 2, nothing run) for an unusable folder or cluster.
    """
    import time

    from runbook_lib.fleet.summary import exit_code

    t0 = time.monotonic()
    out = options.out.resolve()
    created = not out.exists()
    token = prepare_out(out, targets, options.resume)
    fleet = Fleet(targets, replace(options, out=out), token)
    to_run = fleet.plan()
    workers = 0
    interrupted = False
    lab_seen: dict[str, Any] | None = None
    starting = fleet_lab.Starting(to_run) if to_run else None
    try:
        if to_run:
            with dask_client(options, len(to_run)) as (client, workers):
                fleet.lab = _lab_started(starting)
                check_workers(client, out, token, fleet.lab.endpoint_url if fleet.lab else "")
                fleet.run(client, to_run)
                interrupted = bool(fleet._stopper and fleet._stopper.stopping)
    except KeyboardInterrupt:
        interrupted = True
    except FleetUsageError:
        # Nothing ran: leave the folder as it was, so the same command can be given again.
        if not options.resume:
            (out / RUN_FILE).unlink(missing_ok=True)
            if created and not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        if fleet.lab is not None:
            lab_seen = fleet_lab.describe(fleet.lab)
        if starting is not None:
            starting.stop()
        (out / CONTROL_FILE).unlink(missing_ok=True)
    rows = fleet.ordered_rows()
    seconds = time.monotonic() - t0
    meta = {
        "fleet_run": token,
        "targets_file": str(targets.path),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "workers": workers,
        "scheduler": options.scheduler or "embedded LocalCluster",
        "interrupted": interrupted,
        "counts": counts_line(rows),
        "lab": lab_seen,
    }
    write_json(rows, out / SUMMARY_JSON, meta)
    write_csv(rows, out / SUMMARY_CSV)
    return FleetResult(rows, exit_code(rows), seconds, workers, interrupted)


__all__ = [
    "SUMMARY_CSV",
    "SUMMARY_HTML",
    "SUMMARY_JSON",
    "Bounds",
    "Fleet",
    "FleetResult",
    "FleetUsageError",
    "Options",
    "run_fleet",
]
