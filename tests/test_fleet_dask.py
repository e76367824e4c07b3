"""The same lab fleet on a real Dask cluster on loopback: a ``dask scheduler`` and two
``dask worker`` processes started here, the fleet given ``--scheduler``; and a worker killed
under it, which that scheduler reschedules itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_support import (
    FLEET,
    LAB_FLEET,
    check_lab_fleet,
    fleet,
    read_json,
    record,
    rows_by_target,
    summary,
    wait_until,
)
from helpers import BIN, ROOT, clean_env

from runbook_lib.fleet.records import RECORD

pytestmark = [pytest.mark.fleet, pytest.mark.notebook]


@dataclass
class Cluster:
    address: str
    processes: list[subprocess.Popen[bytes]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker`` processes (one thread each) on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("dask")
    env = clean_env(tmp)
    address = f"tcp://127.0.0.1:{_free_port()}"
    log = (tmp / "cluster.log").open("wb")
    common = {"cwd": ROOT, "env": env, "stdout": log, "stderr": subprocess.STDOUT}
    processes = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                address.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
            start_new_session=True,
            **common,
        )
    ]
    try:
        for n in (1, 2):
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        f"w{n}",
                    ],
                    start_new_session=True,
                    **common,
                )
            )
        wait_until("two Dask workers", lambda: _probe(address) == 2, timeout=180)
        yield Cluster(address, processes)
    finally:
        for p in reversed(processes):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()


def _probe(address: str) -> int:
    try:
        return _workers(address)
    except OSError:
        return 0


def test_the_lab_fleet_on_a_dask_cluster_gives_the_same_rows(
    cluster: Cluster, tmp_path: Path
) -> None:
    wait_until("two Dask workers", lambda: _probe(cluster.address) == 2, timeout=180)
    targets = tmp_path / "targets.yaml"
    targets.write_text(LAB_FLEET, encoding="utf-8")
    out = tmp_path / "out"
    done = fleet(
        tmp_path, "--targets", str(targets), "--out", str(out), "--scheduler", cluster.address
    )
    assert done.returncode == 1, done.stderr[-3000:]
    check_lab_fleet(out)  # the rows the embedded cluster gives (tests/test_fleet_lab.py)
    data = summary(out)
    assert (data["scheduler"], data["workers"]) == (cluster.address, 2)
    workers = {record(out, name)["fleet"]["worker"] for name in rows_by_target(out)}
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)


def test_a_worker_killed_under_a_dask_cluster_is_run_again_by_its_scheduler(
    cluster: Cluster, tmp_path: Path
) -> None:
    wait_until("two Dask workers", lambda: _probe(cluster.address) == 2, timeout=180)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "defaults:\n  backend: lab\n  timeout_s: 120\ntargets:\n"
        "  - name: slow\n    account_id: '444444444401'\n    lab_scenario: slow-propagation\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            *FLEET,
            "--targets",
            str(targets),
            "--out",
            str(out),
            "--scheduler",
            cluster.address,
            "--no-progress",
        ],
        cwd=ROOT,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            "the write of target 'slow' to land",
            lambda: (
                (read_json(out / "slow" / RECORD) or {}).get("steps", {}).get("apply") or {}
            ).get("written"),
        )
        marker = read_json(out / "slow" / "fleet-attempt.json")
        assert marker is not None
        os.kill(marker["pid"], signal.SIGKILL)  # the worker process; its nanny starts another
        _stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    row = rows_by_target(out)["slow"]
    # This scheduler allows failures (Dask's default): it ran the task again itself, and the
    # worker function applied the fleet's rule (the write had landed, so once more).
    assert (row["outcome"], row["attempts"]) == ("fixed", 2)
    first = read_json(out / "slow" / "attempt-1" / RECORD)
    assert first is not None and first["outcome"] == "worker lost" and first["undo"]
