"""The command's own behaviour: edge failures of its input, clean output, run history, Ctrl-C, the
private kernel, and the speed-ups' off switch. Each run is the real CLI (papermill, a kernel)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import history, speedups
from runbook_lib.kernel import Kernel
from runbook_lib.params import Params

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "runbook_lib"]
STEM = "fix-iam-permissions"
OTHER_ACCOUNT = "210987654321"
UNDO = (
    "aws iam delete-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy"
)

#: Every line a run prints itself: its start line, one line per step, the summary, blank lines.
OWN_STDERR = re.compile(
    r"^(carts-runbook: running \S+ against .+|  [a-z]+ +(ok|FAILED|interrupted) \(\d+\.\d s\)|)$"
)
OWN_STDOUT = re.compile(
    r"^(outcome|earlier|iam|cause|policy|watch|aws calls|time|notebook|html|record|latest): +\S.*$"
)


def cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


# --- bad input to the command: one sentence, exit 2, before a kernel or a run folder -------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user can reach (pytest's own is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="carts-cli-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def assert_one_sentence(proc: subprocess.CompletedProcess[str], phrase: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("carts-runbook: "), proc.stderr
    assert phrase in lines[0] and lines[0].endswith("."), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_out_that_is_a_file(shared_tmp: Path) -> None:
    taken = shared_tmp / "taken"
    taken.write_text("somebody's file\n")
    proc = cli("run", "--out", str(taken))
    assert_one_sentence(proc, f"--out {str(taken)!r} is a file, not a folder")
    assert taken.read_text() == "somebody's file\n"


@pytest.fixture
def read_only_folder(shared_tmp: Path) -> Iterator[Path]:
    """A folder nobody may add to: mode 0555, and immutable as root (root ignores the mode)."""
    folder = shared_tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"root, and cannot make a folder immutable: {made.stderr.strip()}")
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_out_in_a_read_only_folder(read_only_folder: Path) -> None:
    proc = cli("run", "--out", str(read_only_folder))
    assert_one_sentence(proc, f"--out {str(read_only_folder)!r} cannot be written (")
    assert "give a folder you can write to" in proc.stderr
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda tmp: Path("/bin/ls"), "is binary, not a YAML text file"),
        (lambda tmp: tmp, "cannot read params file"),
        (lambda tmp: tmp / "missing.yaml", "cannot read params file"),
    ],
    ids=["binary", "a-folder", "missing"],
)
def test_params_file_that_cannot_be_used(shared_tmp: Path, make: Any, phrase: str) -> None:
    out = shared_tmp / "out"
    proc = cli("run", "--params", str(make(shared_tmp)), "--out", str(out))
    assert_one_sentence(proc, phrase)
    assert "params file" in proc.stderr and not out.exists()


def test_params_file_without_read_permission(shared_tmp: Path) -> None:
    if os.geteuid() == 0:
        # Root reads through any mode bit; this kernel file refuses reading to everyone.
        unreadable = Path("/proc/sys/vm/compact_memory")
        if not unreadable.exists():
            pytest.skip("root, and no file here that root may not read")
    else:
        unreadable = shared_tmp / "private.yaml"
        unreadable.write_text("backend: lab\n")
        unreadable.chmod(0o000)
    out = shared_tmp / "out"
    proc = cli("run", "--params", str(unreadable), "--out", str(out))
    assert_one_sentence(proc, f"cannot read params file {str(unreadable)!r}: Permission denied")
    assert not out.exists()


# --- a whole run: clean output, run history, --no-html, the speed-ups switched off ---------------


def test_clean_output_run_history_and_the_speed_ups_off(tmp_path: Path) -> None:
    """Two runs into one --out: the first as `make run` (speed-ups on), the second with the
    speed-ups off and --no-html. Each prints only its own lines; each keeps its own folder;
    `latest` points at the second."""
    out = tmp_path / "out"
    first = cli("run", "--out", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run1 = history.latest_run(out)
    assert run1 is not None
    record1 = (run1 / f"{STEM}.record.json").read_bytes()

    env = {**os.environ, speedups.ENV: "0"}
    second = cli("run", "--out", "out", "--no-html", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    run2 = history.latest_run(out)
    assert run2 is not None and run2 != run1

    for proc in (first, second):
        assert [line for line in proc.stderr.splitlines() if not OWN_STDERR.match(line)] == []
        assert [line for line in proc.stdout.splitlines() if not OWN_STDOUT.match(line)] == []
        assert "outcome:  fixed: carts is RUNNING" in proc.stdout
        assert "(the notebook's defaults)" in proc.stderr  # no --params
    assert "\nhtml:" in first.stdout and "html:" not in second.stdout
    # Paths as the caller gave them: absolute for the first, relative to its cwd for the second.
    assert f"record:   {run1 / f'{STEM}.record.json'}" in first.stdout
    assert f"record:   out/{run2.name}/{STEM}.record.json" in second.stdout

    assert history.runs(out) == sorted([run1, run2])
    assert (run1 / f"{STEM}.record.json").read_bytes() == record1  # untouched by the second
    assert (run1 / f"{STEM}.html").stat().st_size > 0
    assert not (run2 / f"{STEM}.html").exists()
    for run in (run1, run2):
        record = json.loads((run / f"{STEM}.record.json").read_text())
        assert record["outcome"] == "fixed: carts is RUNNING"
        nb = json.loads((run / f"{STEM}.ipynb").read_text())
        assert not [
            o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"
        ]
        assert not (run / "kernel.log").exists()  # the kernel printed nothing of its own


# --- Ctrl-C ----------------------------------------------------------------------------------------


@pytest.fixture
def slow_lab() -> Iterator[Any]:
    """A lab at AWS's pace: the carts health check's start period makes the watch last a minute."""
    from runbook_lib.lab import Lab, LabConfig

    with Lab.start(Params(account_id=OTHER_ACCOUNT), LabConfig(time_scale=1.0)) as lab:
        yield lab


def test_ctrl_c_in_the_watch_stops_cleanly_with_the_undo(slow_lab: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [*CLI, "run", "--out", str(out), "-p", f"endpoint_url={slow_lab.endpoint_url}"]
    cmd += ["-p", f"account_id='{OTHER_ACCOUNT}'"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen: list[str] = []
    in_watch = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read(1):
            seen.append(chunk)
            if "  watch" in "".join(seen[-40:]):
                in_watch.set()
        in_watch.set()  # the process ended: do not wait for a watch that never came

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert in_watch.wait(timeout=120), "".join(seen)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)  # its stdout is a few lines: no pipe fills up meanwhile
    reader.join(timeout=30)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    stderr = "".join(seen)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    said = [line for line in stderr.splitlines() if "interrupted in" in line]
    assert len(said) == 1, stderr
    assert said[0].startswith("carts-runbook: interrupted in step 'watch'")
    assert said[0].endswith(f"to undo what it wrote: {UNDO}")
    assert re.search(r"^  watch +interrupted \(", stderr, re.M), stderr
    assert stdout == ""

    run = history.latest_run(out)
    assert run is not None
    record = json.loads((run / f"{STEM}.record.json").read_text())
    assert record["outcome"] == "interrupted"
    assert record["failed_step"] == "watch" and record["undo"] == UNDO
    assert "verify" not in record["steps"]  # no further cell started
    assert slow_lab.iam_writes == ["PutRolePolicy"]
    nb = json.loads((run / f"{STEM}.ipynb").read_text())
    failed = [
        c for c in nb["cells"] if c["metadata"].get("papermill", {}).get("status") == "failed"
    ]
    assert [c["metadata"]["tags"] for c in failed] == [["step:watch"]]
    later = [
        c
        for c in nb["cells"]
        if c.get("execution_count") and nb["cells"].index(c) > nb["cells"].index(failed[0])
    ]
    assert later == []  # the notebook, written at the stop, shows no cell after the watch ran


# --- the kernel ------------------------------------------------------------------------------------


def test_the_kernel_listens_on_local_sockets_in_a_private_folder(tmp_path: Path) -> None:
    from jupyter_core.utils import run_sync

    kernel = Kernel(tmp_path)
    try:
        folder = kernel.folder
        client = kernel.manager.client()
        client.start_channels()
        run_sync(client.wait_for_ready)(timeout=120)  # the kernel has bound its sockets
        assert kernel.manager.transport == "ipc"
        assert stat.S_IMODE(folder.stat().st_mode) & 0o777 == 0o700
        info = json.loads(Path(kernel.manager.connection_file).read_text())
        assert info["transport"] == "ipc" and info["ip"].startswith(str(folder))
        sockets = [p for p in folder.iterdir() if p.is_socket()]
        assert len(sockets) == 5  # shell, iopub, stdin, control, heartbeat
        assert kernel.manager.kernel_spec.argv[0] == sys.executable
        said: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                said.append(msg["content"]["text"])

        probe = "import sys, os; print(sys.executable, os.getcwd(), 'debugpy' in sys.modules)"
        reply = run_sync(client.execute_interactive)(probe, output_hook=hook, timeout=60)
        assert reply["content"]["status"] == "ok"
        # This interpreter, the caller's directory, and no debugger (a speed-up).
        assert "".join(said).split() == [sys.executable, str(tmp_path), "False"]
    finally:
        printed = kernel.shut_down()
    assert not folder.exists()
    assert printed == ""  # nothing outside a cell, no TCP warning


# --- the speed-ups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_speed_ups_do_what_they_say_and_the_switch_turns_them_off(switch: str) -> None:
    """With them on, jsonschema and papermill come without the optional modules they skip, which
    later imports still get; off, the libraries import as they always do."""
    probe = (
        "import sys, json\n"
        "from runbook_lib import speedups\n"
        "speedups.import_papermill()\n"
        "skipped = {m: m in sys.modules for m in ('rfc3987_syntax', 'papermill.s3', 'boto3')}\n"
        "import papermill.s3, rfc3987_syntax\n"  # still importable afterwards
        "print(json.dumps(skipped))\n"
    )
    env = {**os.environ, speedups.ENV: switch}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout)
    assert imported == dict.fromkeys(imported, switch == "0")
