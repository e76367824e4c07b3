"""``python -m runbook_lib.lab``: the standalone lab a learner or a shell script talks to."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import BIN, ROOT, WORKSHOP_POLICY, Clients, Served, clean_env, wait_for

pytestmark = pytest.mark.lab


def lab_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook_lib.lab", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_prints_the_export_lines_first(served: Served) -> None:
    """The lab: the first five lines are shell exports for the endpoint, dummy keys, region and
    the lab's token for its control routes."""
    names = [line.split("=", 1)[0] for line in served.exports]
    assert names == [
        "export AWS_ENDPOINT_URL",
        "export AWS_ACCESS_KEY_ID",
        "export AWS_SECRET_ACCESS_KEY",
        "export AWS_DEFAULT_REGION",
        "export RUNBOOK_LAB_TOKEN",
    ]
    assert served.endpoint.startswith("http://127.0.0.1:")
    assert served.exports[3] == "export AWS_DEFAULT_REGION=us-west-2"


def test_serve_binds_loopback_only_and_sigint_frees_the_port(served: Served) -> None:
    """The lab: it listens on 127.0.0.1 alone; SIGINT ends it with status 0 and frees the port."""
    import psutil

    listening = [
        c.laddr
        for c in psutil.Process(served.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", served.port)]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", served.port), timeout=2):
        pass
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(timeout=20) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", served.port))


@pytest.mark.cli
def test_the_workshop_commands_fix_carts(served: Served, tmp_path: Path) -> None:
    """WORKSHOP.md 3.2, as typed: the account from STS, the heredoc policy with $AWS_REGION and
    $ACCOUNT_ID, aws iam put-role-policy; then a carts task reaches RUNNING and stays."""
    (tmp_path / "lab.env").write_text("\n".join(served.exports) + "\n")
    script = textwrap.dedent(
        """\
        set -euo pipefail
        eval "$(head -5 lab.env)"
        export ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
        export AWS_REGION=us-west-2
        cat > carts-dynamodb-policy.json << EOF
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "dynamodb:*",
                    "Resource": "arn:aws:dynamodb:$AWS_REGION:$ACCOUNT_ID:table/*"
                }
            ]
        }
        EOF
        aws iam put-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy --policy-document file://carts-dynamodb-policy.json
        aws iam get-role-policy --role-name retailStoreEcsTaskRole --policy-name CartsDynamoPolicy --query PolicyDocument.Statement[0].Resource --output text
        """
    )
    time.time()
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "arn:aws:dynamodb:us-west-2:123456789012:table/*"
    aws = Clients(served.endpoint)
    task = wait_for("a healthy carts task", lambda: aws.healthy_task())
    listed = subprocess.run(
        [
            str(BIN / "aws"),
            "ecs",
            "list-tasks",
            "--cluster",
            "retail-store-ecs-cluster",
            "--service-name",
            "carts",
            "--query",
            "taskArns",
            "--output",
            "text",
        ],
        env={
            **clean_env(tmp_path),
            **dict(line.split(" ", 1)[1].split("=", 1) for line in served.exports),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [task["taskArn"]]


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    """The lab: a busy port is one line on stderr and status 2."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = lab_cli("serve", "--port", str(port), env=clean_env(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"lab: port {port} on 127.0.0.1 is in use; pick another with --port, or 0 for a free one"
    ]


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["--params", "missing.yaml"], None, "lab: cannot read params file 'missing.yaml'"),
        (["--params", "p.yaml"], "colour: red\n", "lab: unknown parameter 'colour' in p.yaml"),
        (["--params", "p.yaml"], "region: mars\n", "lab: parameter 'region' must be"),
        (["--time-scale", "-1"], None, "lab: time_scale must be"),
        (["--port", "http"], None, "lab: argument --port: invalid int value"),
    ],
    ids=["unreadable-params", "unknown-key", "bad-region", "bad-time-scale", "bad-port"],
)
def test_serve_errors_are_one_line(
    tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    """The lab: a bad file, key or value is one clear line on stderr, status 2, no traceback."""
    if content is not None:
        (tmp_path / "p.yaml").write_text(content)
    env = clean_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "runbook_lib.lab", "serve", *args],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


def test_reset_command_resets_a_served_lab(served: Served, tmp_path: Path) -> None:
    """The lab: 'reset' posts /_lab/reset to $AWS_ENDPOINT_URL with $RUNBOOK_LAB_TOKEN."""
    aws = Clients(served.endpoint)
    aws.iam.put_role_policy(
        RoleName="retailStoreEcsTaskRole",
        PolicyName="CartsDynamoPolicy",
        PolicyDocument=WORKSHOP_POLICY,
    )
    exports = dict(line.split(" ", 1)[1].split("=", 1) for line in served.exports)
    done = lab_cli("reset", env={**clean_env(tmp_path), **exports})
    assert done.returncode == 0, done.stderr
    names = aws.iam.list_role_policies(RoleName="retailStoreEcsTaskRole")["PolicyNames"]
    assert "CartsDynamoPolicy" not in names
    nowhere = lab_cli("reset", env=clean_env(tmp_path))
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("lab: no lab endpoint")
    endpoint_only = {**clean_env(tmp_path), "AWS_ENDPOINT_URL": served.endpoint}
    tokenless = lab_cli("reset", env=endpoint_only)
    assert tokenless.returncode == 2
    assert tokenless.stderr.startswith("lab: no lab token")
    wrong = lab_cli("state", "--token", "0" * 32, env=endpoint_only)
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines() == [
        f"lab: {served.endpoint} answered HTTP 403 for /_lab/state: a wrong lab token: send the "
        "X-Lab-Token header with the lab's token (RUNBOOK_LAB_TOKEN in the export lines of "
        "'python -m runbook_lib.lab serve')"
    ]
