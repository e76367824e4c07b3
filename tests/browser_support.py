"""Harness for the browser test: a throw-away JupyterLab server, a headless Chromium, and a
failure hook so a fixture can screenshot the page of a failed test.

The server runs from this interpreter's environment (the project's venv) with its own config,
data, settings, workspace and runtime folders, so nothing from the user's JupyterLab (old tabs,
kernels, settings) leaks into a run, and the kernel it starts is the venv's ``python3``.

The test module loads this one as a plugin too (for the report hook), after importing it, so
pytest is told not to rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Flags that keep Debian's chromium quiet and working as root in a container (see LAB-NOTES).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: JupyterLab user settings for a quiet, predictable page: no news toast or update check, no
#: kernel-selection dialog, and every cell attached to the DOM (the default windowing skips
#: painting cells out of view, which a screenshot of a scrolled notebook would show as blanks).
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}

#: Variables that would make the kernel believe nobody is looking, or point Jupyter elsewhere.
_DROPPED_ENV = (
    "RUNBOOK_HEADLESS",
    "RUNBOOK_LIVE",
    "JUPYTER_PATH",
    "JUPYTER_PREFER_ENV_PATH",
    "JUPYTER_PLATFORM_DIRS",
)


def browser_required() -> bool:
    """CI sets ``REQUIRE_BROWSER=1``: a missing browser is then a failure, not a skip."""
    return os.environ.get("REQUIRE_BROWSER") == "1"


def require_chromium() -> None:
    """Skip (or, with ``REQUIRE_BROWSER=1``, fail) when Debian's chromium is not installed."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = (
        f"{CHROMIUM} is missing: install Debian's chromium "
        "(`apt-get install -y chromium`, or `make browser-deps` as root)"
    )
    if browser_required():
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterServer:
    """One JupyterLab server on loopback, isolated under ``home``, serving ``root_dir``."""

    root_dir: Path
    home: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "jupyter-server.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython",
        }
        for var, name in dirs.items():
            path = self.home / name
            path.mkdir(parents=True, exist_ok=True)
            env[var] = str(path)
        # The venv's scripts first, so anything the server spawns by name is the venv's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def write_settings(self) -> None:
        settings = self.home / "settings"
        for rel, values in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))

    def kernelspec(self, name: str = "python3") -> dict[str, Any]:
        """The kernelspec ``name`` as this server will resolve it."""
        out = subprocess.run(
            [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        specs: dict[str, Any] = json.loads(out)["kernelspecs"]
        if name not in specs:
            return {}
        spec: dict[str, Any] = specs[name]
        return spec

    def start(self, timeout_s: float = 30.0) -> None:
        self.write_settings()
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                env=self.env(),
                cwd=self.root_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the finalizer kills it whole
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if self.api("GET", "/api/status") is not None:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"jupyter lab did not answer in {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def api(self, method: str, path: str, timeout_s: float = 5.0) -> Any:
        """Call the server's REST API with the token; the decoded JSON answer (None if empty)."""
        req = urllib.request.Request(
            self.base_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "DELETE") else None,
        )
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
        return json.loads(body) if body else {}

    def kernels(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("GET", "/api/kernels")
        return found

    def sessions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("GET", "/api/sessions")
        return found

    def stop(self) -> list[int]:
        """Shut kernels down through the API, stop the server, kill its process group.

        Kernels run in process groups of their own, so killing the server's group would leave
        them behind: they are asked to stop first. Returns the pids of processes that still
        carried this server's folders on their command line and had to be killed.
        """
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                for kernel in self.kernels():
                    with contextlib.suppress(OSError, urllib.error.URLError):
                        self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout_s=10)
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                self.api("POST", "/api/shutdown", timeout_s=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
                break
        return kill_processes_mentioning(str(self.home))


def processes_mentioning(marker: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def kill_processes_mentioning(marker: str) -> list[int]:
    """Kill, by pid, what a run left behind: kernels carry the runtime folder in their argv."""
    pids = processes_mentioning(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1400, 2200)) -> Iterator[Any]:
    """A page in headless Debian chromium, driven by Playwright for Python."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(
                viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1
            )
            page = context.new_page()
            yield page
        finally:
            browser.close()


# --- screenshot of a failed test ---------------------------------------------------------------
# The test module names this module in ``pytest_plugins``, so the hook below sees every phase's
# report and a fixture's teardown can tell whether its test failed.

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


def failed(item: pytest.Item) -> bool:
    """Whether a phase of ``item`` (set-up or the test itself) has failed so far."""
    reports = item.stash.get(PHASE_REPORTS, {})
    return any(r.failed for r in reports.values())
