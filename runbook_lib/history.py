"""Run history under the output folder: one folder per run, never touched by a later run.

Each run gets a run id (its UTC start time, then a few random letters so two runs started in the
same second still differ) and writes its notebook, HTML and record under ``OUT/<run id>/``.
``OUT/latest`` points at the newest run: a relative symbolic link, or, on a file system without
them, a small file holding the run id. :func:`latest_run` reads either.

Keeping every run is what lets a later run, or a person, find what an earlier run replaced and
the command that restores it, even after a run was cut off.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

LATEST = "latest"
_ID_TIME = "%Y%m%dT%H%M%SZ"


def new_run_id(now: datetime | None = None) -> str:
    """``20261130T045512Z-a3f9``: sorts by start time, unique enough with the suffix."""
    stamp = (now or datetime.now(UTC)).strftime(_ID_TIME)
    return f"{stamp}-{secrets.token_hex(2)}"


def create_run(out: Path) -> Path:
    """Create ``out`` if needed and a new, empty run folder in it; point ``latest`` at it.

    Raises OSError (with ``strerror``) when ``out`` cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run = out / new_run_id()
        try:
            run.mkdir()
        except FileExistsError:
            continue
        point_latest(out, run)
        return run
    raise FileExistsError(17, "no free run id", str(out))


def point_latest(out: Path, run: Path) -> None:
    """Make ``out/latest`` point at ``run`` (replaced atomically: a reader never finds none)."""
    target = out / LATEST
    tmp = out / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(run.name, target_is_directory=True)
    except OSError:
        tmp.write_text(run.name + "\n", encoding="utf-8")
    os.replace(tmp, target)


def latest_run(out: Path) -> Path | None:
    """The newest run's folder under ``out`` (through ``latest``), or None."""
    target = out / LATEST
    if target.is_symlink() or target.is_dir():
        return target.resolve() if target.exists() else None
    if target.is_file():
        run = out / target.read_text(encoding="utf-8").strip()
        return run if run.is_dir() else None
    return None


def runs(out: Path) -> list[Path]:
    """Every run folder under ``out``, oldest first."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and _is_id(p.name))


def _is_id(name: str) -> bool:
    stamp, _, suffix = name.partition("-")
    try:
        datetime.strptime(stamp, _ID_TIME)
    except ValueError:
        return False
    return bool(suffix)
