"""The run record: what the run saw, decided and did, as JSON beside the output notebook.

Saved after every step, so a run that fails half-way still leaves a record that says what it
wrote and the command that undoes it. Nothing secret goes in: parameters hold none, and
:func:`check_no_secrets` refuses anything shaped like an AWS key before writing.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECORD_ENV = "RUNBOOK_RECORD"
DEFAULT_RECORD = Path("out") / "fix-iam-permissions.record.json"

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
        target = Path(path or os.environ.get(RECORD_ENV) or DEFAULT_RECORD)
        rec = cls(target)
        rec.data = {
            "runbook": "fix-iam-permissions",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcome": "in progress",
            "failed_step": None,
            "error": None,
            "undo": None,
            "steps": {},
            "timings_s": {},
        }
        return rec

    def step(self, name: str, payload: dict[str, Any], seconds: float) -> None:
        self.data["steps"][name] = payload
        self.data["timings_s"][name] = round(seconds, 3)
        self.save()

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

    def finish(self, outcome: str, undo: str | None = None) -> None:
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
