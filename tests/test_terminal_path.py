"""The learner's terminal path and the notebook share one account: the workshop's own commands
against `python -m runbook_lib.lab serve`, then the runbook pointed at the same endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT, Served, clean_env

from runbook_lib.history import latest_run
from runbook_lib.policy import WORKSHOP_POLICY_TEMPLATE

pytestmark = [pytest.mark.cli, pytest.mark.notebook]


def test_policy_put_with_the_aws_cli_is_what_the_notebook_then_sees(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    lab: Served = request.getfixturevalue("served")
    env = clean_env(tmp_path)
    (tmp_path / "lab.env").write_text("\n".join(lab.exports) + "\n")
    # The workshop's heredoc, as runbook_lib renders it (byte for byte the seed's file).
    script = (
        'set -euo pipefail\neval "$(head -5 lab.env)"\n'
        "export ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)\n"
        "export AWS_REGION=us-west-2\n"
        f"cat > carts-dynamodb-policy.json << EOF\n{WORKSHOP_POLICY_TEMPLATE}EOF\n"
        "aws iam put-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy "
        "--policy-document file://carts-dynamodb-policy.json\n"
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "runbook_lib",
            "run",
            "--params",
            "params/lab.yaml",
            "--out",
            str(out),
            "-p",
            f"endpoint_url={lab.endpoint}",
            "--no-html",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run = latest_run(out)
    assert run is not None
    record = json.loads((run / "fix-iam-permissions.record.json").read_text())
    # The policy the learner wrote in the terminal is the one the notebook would write.
    assert record["steps"]["plan"]["action"] == "unchanged"
    assert record["steps"]["plan"]["written"] is False
    assert record["steps"]["watch"]["outcome"] == "running"
    assert record["caller"]["account"] == "123456789012"
    policy_file = (tmp_path / "carts-dynamodb-policy.json").read_text()
    assert json.loads(policy_file) == record["steps"]["plan"]["after"]
    assert textwrap.dedent(policy_file).startswith('{\n    "Version": "2012-10-17"')
