"""Fixtures the test modules share: a lab per module, clients on it, a lab served by the CLI.

A module chooses its lab with module-level names:

- ``LAB_CLOCK = "stepped"`` (the default): the lab stands still between two calls of a test and
  moves only when the test waits (``aws.wait``), so comparing two reads never races a scheduler.
- ``LAB_CLOCK = "real"``: the lab lives on the wall clock; for tests whose runbook runs in another
  process (the CLI, papermill), which cannot move a stepped lab in this one.
- ``LAB_SEED = N``: the seed of the lab's made-up ids.

Every lab the suite starts, here or in another process (a papermill kernel's, a served one),
holds its answers to botocore's output shapes: the module's lab through ``validate_responses``,
every other through ``RUNBOOK_LAB_VALIDATE`` (set for the whole session). A test during which any
lab answered something AWS could not send fails, naming the answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, Clients, Served, clean_env

from runbook_lib.lab import Lab, LabConfig
from runbook_lib.lab.lab import VALIDATE_ENV
from runbook_lib.params import Params

# --- the order of the modules --------------------------------------------------------------------

#: Markers of the modules whose runs take longest (a fleet of runs, the CLI's papermill runs, the
#: wheel, JupyterLab), heaviest first; ``--heavy-first`` starts them before the others.
HEAVY = ("fleet", "notebook", "install", "browser")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--heavy-first",
        action="store_true",
        help="start the modules that take longest first (for two or more xdist workers)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--heavy-first`` (``make test``): the modules marked fleet go first, then those
    marked notebook, install or browser, then the rest; each band keeps pytest-randomly's
    shuffled order (this stable sort runs after it), so the seed still gives the order.

    xdist's ``--dist loadscope --no-loadscope-reorder`` hands out whole modules in this order as
    workers come free (without that flag, xdist hands out the modules with the most tests first:
    the fleets' few long tests came last). A module that runs minutes, handed out last, would
    keep one worker busy alone at the end."""
    if not config.getoption("heavy_first"):
        return

    def band(item: pytest.Item) -> int:
        names = {m.name for m in item.iter_markers()}
        return next((n for n, marker in enumerate(HEAVY) if marker in names), len(HEAVY))

    module_band: dict[str, int] = {}
    for item in items:  # a module's band is its heaviest test's: it stays in one piece
        module = item.nodeid.split("::", 1)[0]
        module_band[module] = min(module_band.get(module, len(HEAVY)), band(item))
    items.sort(key=lambda item: module_band[item.nodeid.split("::", 1)[0]])


@pytest.fixture(scope="session", autouse=True)
def shape_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The file where every lab of the session (in this process or another) writes the answers
    it sent that AWS could not have sent (see runbook_lib/lab/shapes.py)."""
    path = tmp_path_factory.mktemp("shapes") / "shape-errors.jsonl"
    path.touch()
    saved = os.environ.get(VALIDATE_ENV)
    os.environ[VALIDATE_ENV] = str(path)
    yield path
    if saved is None:
        os.environ.pop(VALIDATE_ENV, None)
    else:
        os.environ[VALIDATE_ENV] = saved


@pytest.fixture(autouse=True)
def no_shape_errors(shape_log: Path) -> Iterator[None]:
    """Fail a test during which a lab answered what AWS could not send."""
    before = shape_log.stat().st_size
    yield
    with shape_log.open("rb") as found:
        found.seek(before)
        new = [json.loads(line) for line in found.read().splitlines() if line.strip()]
    if new:
        shown = "\n".join(
            f"  {p['service']}:{p['operation']} (HTTP {p['status']}): {p['problem']}"
            for p in new[:10]
        )
        pytest.fail(f"a lab answered {len(new)} time(s) what AWS could not send:\n{shown}")


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One lab for the module (the workshop's broken account), checked for scheduler errors
    and for answers that AWS could not send."""
    clock = getattr(request.module, "LAB_CLOCK", "stepped")
    seed = getattr(request.module, "LAB_SEED", 0)
    config = LabConfig(time_scale=0.005, seed=seed, clock=clock, validate_responses=True)
    with Lab.start(Params(), config) as running:
        yield running
        state = running.state()
        assert state["process_errors"] == []
        assert state["shape_errors"] == [], "the lab answered what AWS could not send"


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Clients:
    return Clients(lab.endpoint_url, lab=lab)


@pytest.fixture
def aws(lab: Lab, clients: Clients) -> Iterator[Clients]:
    """Clients on the module's lab, freshly reset to the broken state (no fault knob left set)."""
    lab.reset()
    yield clients
    lab.set_faults(propagation_delay_s=0.0, throttle_rate=0.0, execution_role_fault=None)


@pytest.fixture
def fresh(lab: Lab, aws: Clients) -> Lab:
    """The module's lab, freshly reset (for tests that hand its endpoint to a run)."""
    return lab


@pytest.fixture(scope="module")
def one_botocore_loader() -> Iterator[None]:
    """For modules that make a new boto3 session per run (``Runbook`` in this process): let them
    share botocore's data loader, which only reads and caches botocore's model files, so no
    answer changes (see ``lab/moto_patches.py``) and each run starts in less time."""
    from runbook_lib.lab.moto_patches import shared_botocore_loader

    with shared_botocore_loader():
        yield


# --- a lab served by `python -m runbook_lib.lab serve` --------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A lab served in its own process (as a learner starts one), stopped after the test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.lab", "serve", "--time-scale", "0.005"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    exports = [process.stdout.readline().rstrip("\n") for _ in range(5)]
    try:
        yield Served(process, exports)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start_lab() -> Iterator[Callable[..., Lab]]:
    """Start labs of one's own (a scenario, other knobs) on a stepped clock, answers validated;
    each is stopped after the test and checked for scheduler errors and off-shape answers."""
    started: list[Lab] = []

    def start(params: Params | None = None, **config: Any) -> Lab:
        settings: dict[str, Any] = {"clock": "stepped", "validate_responses": True, **config}
        running = Lab.start(params or Params(), LabConfig(**settings))
        started.append(running)
        return running

    yield start
    for running in started:
        state = running.state()
        running.stop()
        assert state["process_errors"] == []
        assert state["shape_errors"] == [], "the lab answered what AWS could not send"
