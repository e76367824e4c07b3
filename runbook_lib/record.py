"""The run record: what the run saw, decided and did, as JSON beside the output notebook.

Saved after every step, and before every write is sent (with the undo and the document the write
replaces), so a run that fails or is killed half-way still leaves a record that says what it may
have written and the command that undoes it. :func:`earlier_records` finds the records of the
runs before this one, where a later run looks for a half-done write. Nothing secret goes in:
parameters hold none, and :func:`check_no_secrets` refuses anything shaped like an AWS key
before writing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECORD_ENV = "RUNBOOK_RECORD"
RECORD_NAME = "fix-iam-permissions.record.json"
#: Where a run keeps its record when nobody says (JupyterLab): a run folder of its own under
#: ``out/``, as ``carts-runbook run`` makes them, so no run overwrites an earlier one's undo.
DEFAULT_OUT = Path("out")

# Access key ids, and 40-character base64 strings next to a word that names a secret.
_SECRET_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"(?i)(secret|session)[_ -]?(access[_ -]?)?(key|token)\W{1,5}[A-Za-z0-9/+=]{40,}"),
)


class SecretInOutput(RuntimeError):
    """Something shaped like an AWS credential was about to be written."""


def find_secrets(text: str) -> list[str]:
    """Substrings of ``text`` that look like AWS credentials (masked, for messages)."""
    hits = []
    for pattern in _SECRET_PATTERNS:
        for m in pattern.finditer(text):
            hits.append(m.group(0)[:8] + "…")
    return hits


def check_no_secrets(text: str, where: str) -> None:
    hits = find_secrets(text)
    if hits:
        raise SecretInOutput(
            f"refusing to write {where}: it contains what looks like a credential ({hits[0]})."
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


@dataclass
class RunRecord:
    """Accumulates the record; :meth:`save` writes it (atomically) after each step."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls, path: str | Path | None = None) -> RunRecord:
        """A new record at ``path``, else at ``$RUNBOOK_RECORD`` (the CLI sets it), else in a
        new run folder under ``out/`` (``out/latest`` pointing at it)."""
        given = path or os.environ.get(RECORD_ENV)
        if given:
            where = Path(given)
        else:
            from runbook_lib.history import create_run

            where = create_run(DEFAULT_OUT) / RECORD_NAME
        rec = cls(where)
        now = datetime.now(UTC)
        rec.data = {
            "runbook": "fix-iam-permissions",
            "run_id": run_id_of(where),
            "started_at": now.isoformat(timespec="seconds"),
            "started_epoch": now.timestamp(),
            # Which process writes the record: a later run can tell a run still going from one
            # that was cut off (both say "in progress").
            "process": {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": _process_start(os.getpid()),
            },
            "outcome": "in progress",
            "failed_step": None,
            "error": None,
            "undo": None,
            "target": None,
            "writes": [],
            "steps": {},
            "timings_s": {},
        }
        return rec

    def writes(self, writes: list[dict[str, Any]], undo: str | None) -> None:
        """Every write of the run with its state, and the command that undoes them, saved now:
        called before a write is sent, so the undo is on disk whatever happens next."""
        self.data["writes"] = writes
        self.data["undo"] = undo
        self.save()

    def step(self, name: str, payload: dict[str, Any], seconds: float) -> None:
        self.data["steps"][name] = payload
        self.data["timings_s"][name] = round(seconds, 3)
        self.save()

    @property
    def finished(self) -> bool:
        return self.data.get("outcome") not in ("in progress", "failed", "interrupted")

    def fail(self, step: str, error: BaseException, undo: str | None) -> None:
        self.data["outcome"] = "failed"
        self.data["failed_step"] = step
        self.data["error"] = f"{type(error).__name__}: {error}"
        self.data["undo"] = undo
        self.save()

    def interrupt(self, step: str, undo: str | None) -> None:
        """The run was stopped (Ctrl-C, a kernel interrupt) during ``step``: outcome
        ``interrupted``, the step in ``failed_step``, and the undo of what it wrote."""
        self.data["outcome"] = "interrupted"
        self.data["failed_step"] = step
        self.data["error"] = "KeyboardInterrupt: the run was interrupted"
        self.data["undo"] = undo
        self.save()

    def finish(self, outcome: str | None, undo: str | None = None) -> None:
        """Close the record with ``outcome`` (None: keep the failure it holds)."""
        if outcome is not None:
            self.data["outcome"] = outcome
        self.data["undo"] = undo
        self.data["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.data["elapsed_s"] = round(time.monotonic() - self._t0, 3)
        self.save()

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, default=_json_default, sort_keys=False) + "\n"

    def save(self) -> Path:
        text = self.to_json()
        check_no_secrets(text, f"the run record {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)
        return self.path


# --- earlier runs ---------------------------------------------------------------------------------


def run_id_of(record_path: Path) -> str | None:
    """The run id of a record kept in a run's own folder (``OUT/<run id>/…``, see
    :mod:`runbook_lib.history`), else None."""
    from runbook_lib.history import runs

    folder = record_path.parent
    return folder.name if folder in runs(folder.parent) else None


def earlier_records(record_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The records of the runs that started before this one under the same ``--out``, newest
    first, as (run id, record): with :mod:`runbook_lib.history`, the one place that knows where
    runs keep their records.

    A record "in progress" whose process still runs on this machine gets ``alive: true``: that
    run is going on beside this one, not cut off.

    Empty when this record is not in a run's own folder (then no history is kept beside it). A
    record that cannot be read (a run killed while writing it leaves only the previous complete
    one, thanks to the atomic save) is skipped.
    """
    from runbook_lib.history import runs

    mine = run_id_of(record_path)
    if mine is None:
        return []
    here = _read(record_path)
    my_start = float(here.get("started_epoch") or 0.0) if here else float("inf")
    found: list[tuple[tuple[str, float], str, dict[str, Any]]] = []
    for folder in runs(record_path.parent.parent):
        if folder.name == mine:
            continue
        data = _read(folder / record_path.name)
        if not data:
            continue
        started = float(data.get("started_epoch") or 0.0)
        stamp = folder.name.split("-", 1)[0]
        if (stamp, started) > (mine.split("-", 1)[0], my_start):
            continue  # a run that started after this one
        data["alive"] = data.get("outcome") == "in progress" and _alive(data.get("process"))
        found.append(((stamp, started), folder.name, data))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [(run_id, data) for _, run_id, data in found]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(process: Any) -> bool:
    """Whether the process that wrote a record still runs here. A pid can be reused: where
    ``/proc`` tells a process's start, a different start is another process; a zombie (an ended
    process nobody reaped, as a killed command's kernel can be) has ended."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False
    pid = process.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _proc_stat(pid)
    if state is None:
        return True  # no /proc here: the pid is all there is to go by
    if state[0] == "Z":
        return False
    started = process.get("started")
    return started is None or started == state[19]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command's name (state first), if any."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 19 else None


def _process_start(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (``/proc``), where that is known."""
    state = _proc_stat(pid)
    return state[19] if state is not None else None
