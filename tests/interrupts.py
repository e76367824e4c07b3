"""Stop the CLI as a step's cell starts (Ctrl-C or SIGKILL), and read what runs left under
``--out``. Used by ``tests/test_interrupted.py`` and ``benchmarks/reliability.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from helpers import CLI, ROOT, STEM, cli_env, policy_states

from runbook_lib.lab import Lab

#: How long (wall seconds) a killed run's kernel may take to notice and end.
KERNEL_GONE_S = 60.0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its kernel), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (its parent, the killed CLI, will not reap it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def stop_at(out: Path, lab: Lab, step: str, sig: signal.Signals) -> subprocess.Popen[str]:
    """Start the CLI and send ``sig`` as the cell of ``step`` starts; returns the ended process.
    After SIGKILL, waits for the kernel the CLI started to end (it notices its parent is gone)."""
    cmd = [*CLI, "--out", str(out), "--no-html", "-p", f"endpoint_url={lab.endpoint_url}"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(1):
            seen.append(chunk)
            if f"  {step:<11}" in "".join(seen[-60:]):
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(timeout=300), "".join(seen)
    kernels = children(proc.pid)
    proc.send_signal(sig)
    proc.wait(timeout=300)
    reader.join(timeout=60)
    if proc.stdout is not None:
        proc.stdout.read()
    deadline = time.monotonic() + KERNEL_GONE_S
    while not all(gone(k) for k in kernels) and time.monotonic() < deadline:
        time.sleep(0.05)
    for k in kernels:  # a kernel the killed CLI started, still there: end it by its id
        if not gone(k):
            os.kill(k, signal.SIGKILL)
    deadline = time.monotonic() + KERNEL_GONE_S
    while not all(gone(k) for k in kernels):  # a rerun must not find it still running
        assert time.monotonic() < deadline, f"kernels {kernels} outlived SIGKILL"
        time.sleep(0.05)
    return proc


def records(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(out.glob(f"*/{STEM}.record.json")):
        if not path.parent.is_symlink():  # out/latest is one of them again
            found.append(json.loads(path.read_text()))
    return found


UNFINISHED = (None, "in progress", "interrupted", "failed")


def recovery_problems(
    out: Path,
    original: str,
    stopped: dict[str, Any],
    rerun: dict[str, Any],
    connect_text: str,
    now: Any,
    stdout: str,
) -> list[str]:
    """What went wrong, if anything, for a run stopped and then run again into ``out`` with
    ``rollback: true``: ``original`` is the policy before the first run, ``stopped`` its record,
    ``rerun`` the rerun's, ``connect_text`` what the rerun's connect cell showed and ``stdout``
    what the command printed, ``now`` the policy after the rerun. Empty when the original survived and the rerun said so."""
    from runbook_lib.policy import policy_hash, same_policy

    problems = []
    kept = [d for r in records(out) for d in policy_states(r) if d is not None]
    if not any(same_policy(d, original) for d in kept):
        problems.append("the original document is in no record under out/")
    wrote = any(w.get("state") in ("sending", "written") for w in stopped.get("writes", []))
    plan = rerun.get("steps", {}).get("plan", {})
    if stopped.get("outcome") not in UNFINISHED:
        # The signal came after the last cell had done its work: a finished run, whose undo is
        # in its record; the rerun finds its policy in place and leaves it.
        first = (stopped.get("writes") or [{}])[0]
        if not same_policy(first.get("before", {}).get("document") or {}, original):
            problems.append("the finished run's record lacks the original")
        if "did not finish" in connect_text or plan.get("action") != "unchanged":
            problems.append("the rerun took a finished run for an unfinished one")
        return problems
    if wrote:
        sha = policy_hash(json.loads(original))[:12]
        if "did not finish" not in connect_text or f"sha256 {sha}" not in connect_text:
            problems.append("the rerun's connect cell does not name the unfinished run's original")
        if "To undo it: aws iam put-role-policy" not in connect_text:
            problems.append("the rerun's connect cell does not show the undo")
        if "wrote and did not finish" not in stdout or f"sha256 {sha}" not in stdout:
            problems.append("the rerun's command output does not name the unfinished run")
        replaced = (rerun.get("earlier_runs") or {}).get("replaced") or {}
        if not same_policy(replaced.get("document") or {}, original):
            problems.append("the rerun's record does not keep the replaced document")
        if not str(rerun.get("outcome")).startswith("restored the state before run"):
            problems.append(f"the rerun ended {rerun.get('outcome')!r}")
    else:
        if plan.get("action") != "replace" or not same_policy(plan.get("before") or {}, original):
            problems.append("the rerun's plan does not show the original as what it replaces")
        if rerun.get("outcome") != "fixed, then rolled back":
            problems.append(f"the rerun ended {rerun.get('outcome')!r}")
    if not same_policy(now, original):
        problems.append("the rerun's rollback did not put the original back")
    return problems
