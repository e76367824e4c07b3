"""Installed like any Python tool: the wheel carries its notebook and runs from any directory.

The wheel is built from a copy of this checkout (tests, benchmarks and an ``out/`` included, so
the build could pick them up) and installed, without an editable link, into a fresh virtual
environment. Its dependencies come from this project's environment: a path file adds its
site-packages after the fresh one's own, and its ``share/jupyter`` (nbconvert's templates,
JupyterLab's assets) is linked in. Every command then runs from a temporary directory that is
not a checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import runbook_lib
from runbook_lib.params import Params

ROOT = Path(__file__).resolve().parents[1]
STEM = "fix-iam-permissions"
SHIPPED = {
    f"runbook_lib/data/{STEM}.ipynb": ROOT / "notebooks" / f"{STEM}.ipynb",
    "runbook_lib/data/fleet-summary.ipynb": ROOT / "notebooks" / "fleet-summary.ipynb",
    "runbook_lib/data/lab.yaml": ROOT / "params" / "lab.yaml",
    "runbook_lib/data/aws.example.yaml": ROOT / "params" / "aws.example.yaml",
}
LEFT_OUT = ("tests/", "benchmarks/", "out/", "notebooks/", "params/", "docs/", ".ci/")

pytestmark = pytest.mark.install


@dataclass
class Installed:
    wheel: Path
    venv: Path
    work: Path  # a directory that is not a checkout

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RUNBOOK_RECORD", "PYTHONPATH")}
        return subprocess.run(
            list(cmd),
            cwd=cwd or self.work,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )


def _copy_checkout(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", ".mypy_cache", ".ruff_cache"
    )
    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    (dest / "out").mkdir(exist_ok=True)
    (dest / "out" / "left-over.txt").write_text("a previous run's output\n")
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    source = _copy_checkout(base / "checkout")
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels)]
    built = subprocess.run(
        [*build, str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("runbook_lib-*.whl")

    venv = base / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr
    fresh = venv / "bin" / "python"
    install = [str(fresh), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps"]
    done = subprocess.run(
        [*install, "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The dependencies: this environment's packages after the fresh environment's own (a plain
    # path line, so this environment's editable link to the checkout is not processed), and its
    # Jupyter data files.
    site = Path(
        subprocess.run(
            [str(fresh), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / "share").mkdir(exist_ok=True)
    (venv / "share" / "jupyter").symlink_to(Path(sys.prefix) / "share" / "jupyter")
    work = base / "elsewhere"
    work.mkdir()
    return Installed(wheel, venv, work)


def test_the_wheel_carries_the_notebook_and_nothing_of_the_checkout(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        for name, source in SHIPPED.items():
            assert wheel.read(name) == source.read_bytes(), name  # the same bytes as the source
    assert [n for n in names if n.startswith(LEFT_OUT)] == []
    assert [n for n in names if re.search(r"(^|/)(test_\w*|conftest)\.py$", n)] == []
    assert [n for n in names if "left-over" in n] == []
    assert "runbook_lib/cli.py" in names and "runbook_lib/lab/lab.py" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(installed.wheel) as wheel:
        version = re.search(r"^Version: (\S+)$", wheel.read(metadata).decode(), re.M)
    assert version is not None and version.group(1) == runbook_lib.__version__


def test_the_installed_package_is_the_one_that_runs(installed: Installed) -> None:
    where = installed.run(
        str(installed.bin / "python"), "-c", "import runbook_lib; print(runbook_lib.__file__)"
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout


def test_run_with_no_params_file_from_any_directory(installed: Installed) -> None:
    proc = installed.run(str(installed.bin / "carts-runbook"), "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(the notebook's defaults)" in proc.stderr and "Traceback" not in proc.stderr
    out = installed.work / "out"  # relative --out: the caller's directory
    run = (out / "latest").resolve()
    assert run.parent == out

    record = json.loads((run / f"{STEM}.record.json").read_text())
    assert record["outcome"] == "fixed: carts is RUNNING"
    assert record["parameters"] == Params().public_dict()  # the notebook's own defaults

    nb = json.loads((run / f"{STEM}.ipynb").read_text())
    assert Path(nb["metadata"]["papermill"]["input_path"]).is_relative_to(installed.venv)
    steps = [c for c in nb["cells"] if any(t.startswith("step:") for t in c["metadata"]["tags"])]
    assert len(steps) == 13
    for cell in steps:
        assert cell["metadata"]["papermill"]["status"] == "completed", cell["metadata"]["tags"]
        assert cell["outputs"], cell["metadata"]["tags"]
    html = (run / f"{STEM}.html").read_text()
    assert "Outcome: fixed: carts is RUNNING" in html and html.rstrip().endswith("</html>")
    assert f"record:   out/{run.name}/{STEM}.record.json" in proc.stdout


def test_notebook_copies_the_notebook_and_example_params(installed: Installed) -> None:
    proc = installed.run(str(installed.bin / "carts-runbook"), "notebook", "mine")
    assert proc.returncode == 0, proc.stderr
    copied = {n: s for n, s in SHIPPED.items() if not n.endswith("fleet-summary.ipynb")}
    for name, source in copied.items():
        copy = installed.work / "mine" / Path(name).name
        if name.endswith("fleet-summary.ipynb"):
            # The fleet's summary notebook is shipped for `carts-runbook fleet`, not copied.
            assert not copy.exists()
            continue
        assert copy.read_bytes() == source.read_bytes(), copy
    # The fleet's summary notebook ships for `carts-runbook fleet`, not for a learner's folder.
    assert sorted(p.name for p in (installed.work / "mine").iterdir()) == sorted(
        Path(n).name for n in copied
    )
    again = installed.run(str(installed.bin / "carts-runbook"), "notebook", "mine")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"carts-runbook: 'mine' already holds {STEM}.ipynb; nothing was copied (remove it or "
        "give another folder)."
    )


def test_python_m_runbook_lib_is_the_command(installed: Installed) -> None:
    for cmd in (
        [str(installed.bin / "python"), "-m", "runbook_lib"],
        [str(installed.bin / "carts-runbook")],
    ):
        proc = installed.run(*cmd, "--version")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"carts-runbook {runbook_lib.__version__}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def jupyter(installed: Installed) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    port = _free_port()
    cmd = [str(installed.bin / "carts-runbook"), "jupyter", "learner", "--"]
    cmd += ["--no-browser", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    proc = subprocess.Popen(
        cmd, cwd=installed.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    yield proc, lines
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def test_jupyter_opens_the_copy_on_loopback_with_a_token(
    installed: Installed, jupyter: tuple[subprocess.Popen[str], list[str]]
) -> None:
    proc, lines = jupyter
    url = None
    deadline = time.monotonic() + 120
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"(http://(localhost|127\.0\.0\.1):\d+)/lab\?token=(\w+)", "".join(lines))
        if found:
            url = found
        else:
            time.sleep(0.2)
    assert url is not None, "".join(lines)[-3000:]
    base, token = url.group(1), url.group(3)
    assert (installed.work / "learner" / f"{STEM}.ipynb").is_file()  # copied there first

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/contents/{STEM}.ipynb", timeout=30)
    assert refused.value.code == 403  # no token, no access
    with urllib.request.urlopen(
        f"{base}/api/contents/{STEM}.ipynb?content=0&token={token}", timeout=30
    ) as answer:
        model = json.loads(answer.read())
    assert model["path"] == f"{STEM}.ipynb"  # the server's root is the copy's folder
