"""Figures for the embedded lab (a benchmark, not a test): prints a small table.

- lab start to ready (seeded, scheduler running, first STS answer), cold and after reset;
- put_role_policy (the workshop's fix) to the first carts task that stays RUNNING, at the
  default test speed (time scale 0.005): when it is first seen RUNNING, and HEALTHY;
- HTTP latency of describe_tasks (median, p90 over 200 calls).

Run: ``.venv/bin/python benchmarks/bench_lab.py``
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

ROUNDS = 5
CALLS = 200


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def clients(endpoint: str) -> tuple[Any, Any, Any]:
    import boto3

    session = boto3.Session(
        aws_access_key_id="lab", aws_secret_access_key="lab", region_name="us-west-2"
    )
    return tuple(session.client(s, endpoint_url=endpoint) for s in ("sts", "iam", "ecs"))  # type: ignore[return-value]


def fix_to_running(lab: Any, iam: Any, ecs: Any) -> tuple[float, float]:
    """Seconds from put_role_policy until the task that stays is seen RUNNING, and HEALTHY.

    A task already starting when the policy lands queries after it and stays: it may be seen
    RUNNING at once.
    """
    doc = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "dynamodb:*",
                    "Resource": "arn:aws:dynamodb:us-west-2:123456789012:table/*",
                }
            ],
        }
    )
    cluster = "retail-store-ecs-cluster"
    iam.put_role_policy(
        RoleName="retailStoreEcsTaskRole", PolicyName="CartsDynamoPolicy", PolicyDocument=doc
    )
    fixed = time.perf_counter()
    seen_running: dict[str, float] = {}
    deadline = fixed + 30
    while time.perf_counter() < deadline:
        arns = ecs.list_tasks(cluster=cluster, serviceName="carts")["taskArns"]
        for task in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []:
            now = time.perf_counter()
            if task["lastStatus"] == "RUNNING":
                seen_running.setdefault(task["taskArn"], now)
            if task["healthStatus"] == "HEALTHY":
                return seen_running[task["taskArn"]] - fixed, now - fixed
        time.sleep(0.002)
    raise RuntimeError("no carts task turned healthy within 30 s")


def main() -> None:
    t0 = time.perf_counter()
    from runbook_lib.lab import Lab, LabConfig

    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    lab = Lab.start(config=LabConfig(time_scale=0.005))
    sts, iam, ecs = clients(lab.endpoint_url)
    sts.get_caller_identity()
    cold = time.perf_counter() - t0
    rows: list[tuple[str, str]] = [
        ("import runbook_lib.lab", f"{imported * 1000:.0f} ms"),
        ("Lab.start to first STS answer (cold: moto import, EC2 set-up)", f"{cold:.2f} s"),
    ]
    try:
        resets, starts, healthies = [], [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            lab.reset()
            resets.append(time.perf_counter() - t0)
            time.sleep(0.3)  # let the broken service fail a couple of times, as a learner sees it
            started, healthy = fix_to_running(lab, iam, ecs)
            starts.append(started)
            healthies.append(healthy)
        rows.append(("Lab.reset (median of 5)", f"{statistics.median(resets) * 1000:.0f} ms"))
        rows.append(
            (
                "put_role_policy to first RUNNING task that stays (median of 5)",
                f"{statistics.median(starts) * 1000:.0f} ms",
            )
        )
        rows.append(
            (
                "put_role_policy to that task HEALTHY (median of 5)",
                f"{statistics.median(healthies) * 1000:.0f} ms",
            )
        )
        arns = ecs.list_tasks(cluster="retail-store-ecs-cluster", desiredStatus="STOPPED")[
            "taskArns"
        ][:5]
        latencies = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            ecs.describe_tasks(cluster="retail-store-ecs-cluster", tasks=arns)
            latencies.append(time.perf_counter() - t0)
        rows.append(
            (
                f"describe_tasks over HTTP, {len(arns)} tasks (median / p90 of {CALLS})",
                f"{statistics.median(latencies) * 1000:.1f} / {percentile(latencies, 0.9) * 1000:.1f} ms",
            )
        )
    finally:
        lab.stop()
    width = max(len(name) for name, _ in rows)
    print(f"{'embedded lab (time scale 0.005)':<{width}}  figure")
    print(f"{'-' * width}  {'-' * 12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
