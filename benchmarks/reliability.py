"""``make reliability``: the bad-input and fault matrix, printed as a table.

Each case says what the runbook must do, what it did, and how many IAM writes the lab saw (every
mutating IAM call that reached the lab's HTTP layer: ``Lab.iam_writes``). The last line counts the
cases, those handled, and the IAM writes made by runs that had to stop before writing.

- Bad parameter values go through what the CLI and the notebook's first cell run
  (``Params.from_mapping``, ``load_params_file``) in this process; a few go through the real CLI,
  which must exit 2 with one line before a kernel starts.
- Names that do not exist, and every fault, run the real CLI (papermill) against a lab started
  here, with the fault knob set (``Lab.set_faults``) or the failure staged.
- Every CLI run has credentials in its environment; no output file, stdout or stderr may hold
  them or anything shaped like one.
- Strict inputs and edge failures: values with a trailing newline, other scripts' digits, regions
  AWS or the lab does not have, YAML's numbers, duplicate keys and aliases, binary files, a
  papermill ``-p`` typo (the real papermill), an endpoint that is not AWS (a real HTML server, a
  self-signed TLS certificate), and requests signed for a region the lab cannot hold.
- Requests a web page could send to the lab (a forged Host, a foreign Origin, an unsigned form,
  a ``text/plain`` POST to ``/_lab/reset``, no token) must be refused and change nothing.
- Safe writes in a shared account (another writer, cells out of order, a FAILED deployment, the
  races and the read-to-write window): ``benchmarks/reliability_writes.py``.

    .venv/bin/python benchmarks/reliability.py            # or: make reliability
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from runbook_lib.history import latest_run
from runbook_lib.history import runs as run_folders
from runbook_lib.lab import Lab
from runbook_lib.params import LAB_DEFAULT_ACCOUNT, ParameterError, Params, params_from_file
from runbook_lib.policy import render_policy, same_policy
from runbook_lib.record import find_secrets

ROOT = Path(__file__).resolve().parents[1]
# The test suite's real non-AWS servers (HTML, self-signed TLS) serve the edge-failure rows too.
sys.path.insert(0, str(ROOT / "tests"))
STEM = "fix-iam-permissions"
ROLE = Params().task_role
POLICY = Params().policy_name
OTHER_ACCOUNT = "210987654321"
FAKE_KEY_ID = "AKIAQ3EGRELIABILITY7"
FAKE_SECRET = "m8Kq2vT9xLr4Wn7Bz1Yc5Hd0Jf6Gp3Se8Ua2Vb4X"
FAKE_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKENforTHEreliabilityMATRIX0123456789abcdefABCDEF=="
SECRETS = (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN)
OBSERVED_WIDTH = 200


@dataclass
class Case:
    name: str
    expected: str
    observed: str
    writes: int
    handled: bool
    refused: bool  # the run had to stop before writing (failed validation)


@dataclass
class CliRun:
    proc: subprocess.CompletedProcess[str]
    record: dict[str, Any]
    out: Path

    @property
    def stderr(self) -> str:
        return self.proc.stderr

    def error_outputs(self) -> list[dict[str, Any]]:
        path = self.out / f"{STEM}.ipynb"
        if not path.exists():
            return []
        nb = json.loads(path.read_text())
        return [
            o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]

    def leaks(self) -> list[str]:
        """Where a credential (or something shaped like one) shows up."""
        texts = [(self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")]
        texts += [
            (p.read_text(errors="replace"), p.name) for p in self.out.iterdir() if p.is_file()
        ]
        return [
            where for text, where in texts if find_secrets(text) or any(s in text for s in SECRETS)
        ]

    def short_failure(self) -> bool:
        """Exit 1 with sentences: no traceback in stderr, one one-line error in the notebook."""
        errors = self.error_outputs()
        return (
            self.proc.returncode == 1
            and "Traceback" not in self.stderr
            and len(errors) == 1
            and len(errors[0]["traceback"]) == 1
        )

    def failure_line(self) -> str:
        for line in self.stderr.splitlines():
            if "FAILED at step" in line:
                return line.removeprefix("carts-runbook: ")
        return self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""


class Matrix:
    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.cases: list[Case] = []
        self.runs = 0
        import boto3

        self.iam = boto3.client(
            "iam",
            endpoint_url=lab.endpoint_url,
            region_name=lab.region,
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
        )

    # --- running ------------------------------------------------------------------------------

    def env(self, aws_endpoint: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=FAKE_KEY_ID,
            AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
            AWS_SESSION_TOKEN=FAKE_TOKEN,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        if aws_endpoint:
            env["AWS_ENDPOINT_URL"] = aws_endpoint
        return env

    def cli(self, *overrides: str, aws_endpoint: str | None = None) -> CliRun:
        self.runs += 1
        out = self.workdir / f"run{self.runs:02d}"
        cmd = [sys.executable, "-m", "runbook_lib", "run", "--out", str(out)]
        for item in overrides:
            cmd += ["-p", item]
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=self.env(aws_endpoint)
        )
        out.mkdir(exist_ok=True)
        return CliRun(proc, _record(out), _run_dir(out))

    def inline(self) -> dict[str, Any]:
        names = self.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
        return {
            n: self.iam.get_role_policy(RoleName=ROLE, PolicyName=n)["PolicyDocument"]
            for n in names
        }

    def add(self, case: Case) -> None:
        self.cases.append(case)
        mark = "ok" if case.handled else "NOT HANDLED"
        print(f"  {len(self.cases):>2} {case.name:<58} {mark}", file=sys.stderr, flush=True)

    def fresh(self) -> None:
        self.lab.reset()

    # --- bad input ----------------------------------------------------------------------------

    def bad_value(self, name: str, values: dict[str, Any], param: str, phrase: str = "") -> None:
        """Refused naming ``param``, in one short sentence that holds ``phrase``."""
        before = len(self.lab.iam_writes)
        try:
            Params.from_mapping(values, source="the matrix")
        except ParameterError as exc:
            msg = str(exc)
            handled = (
                exc.name == param
                and repr(param) in msg
                and phrase in msg
                and msg.endswith(".")
                and "\n" not in msg
                and len(msg) < 600
            )
            observed = f"ParameterError: {msg}"
        else:
            handled, observed = False, "accepted"
        writes = len(self.lab.iam_writes) - before
        self.add(Case(name, f"refused, naming '{param}'", observed, writes, handled, True))

    def bad_file(
        self, name: str, content: str | bytes | Path | None, param: str, phrase: str = ""
    ) -> None:
        """A params file (written from ``content``, or an existing path; None: missing)."""
        path = (
            content
            if isinstance(content, Path)
            else self.workdir / f"params-{len(self.cases)}.yaml"
        )
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        before = len(self.lab.iam_writes)
        try:
            params_from_file(path)
        except ParameterError as exc:
            handled = exc.name == param and phrase in str(exc) and "\n" not in str(exc)
            observed = f"ParameterError: {exc}".replace(str(self.workdir), "…")
        else:
            handled, observed = False, "accepted"
        writes = len(self.lab.iam_writes) - before
        self.add(Case(name, f"refused, naming '{param}'", observed, writes, handled, True))

    def bad_cli(self, name: str, overrides: list[str], phrase: str) -> None:
        self.fresh()
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}", *overrides)
        lines = run.stderr.strip().splitlines()
        handled = (
            run.proc.returncode == 2
            and len(lines) == 1
            and phrase in run.stderr
            # refused before a run folder (or a kernel) existed
            and run_folders(self.workdir / f"run{self.runs:02d}") == []
            and not run.leaks()
        )
        observed = f"exit {run.proc.returncode}: {lines[-1] if lines else ''}"
        self.add(
            Case(
                name,
                "exit 2, one line, no kernel",
                observed,
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    def missing_name(self, name: str, override: str, param: str, phrase: str) -> None:
        self.fresh()
        before = self.inline()
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}", override)
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "connect"
            and f"parameter '{param}'" in run.stderr
            and phrase in run.stderr
            and run.record.get("undo") is None
            and self.inline() == before
            and not run.leaks()
        )
        self.add(
            Case(
                name,
                f"stops in connect, naming '{param}'",
                run.failure_line(),
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    # --- faults -------------------------------------------------------------------------------

    def throttling(self) -> None:
        self.fresh()
        self.lab.set_faults(throttle_rate=0.3)
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}")
        self.lab.set_faults(throttle_rate=0.0)
        watch = run.record.get("steps", {}).get("watch", {})
        handled = (
            run.proc.returncode == 0
            and run.record.get("outcome") == "fixed: carts is RUNNING"
            and watch.get("propagation_delay_seen") is False
            and not run.leaks()
        )
        observed = f"{run.record.get('outcome')} after {run.record.get('elapsed_s')} s"
        self.add(
            Case(
                "throttling: 30% of calls answered 'Throttling'",
                "retries back off; fixed",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def propagation(self) -> None:
        self.fresh()
        self.lab.set_faults(propagation_delay_s=120)
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}", "timeout_s=60")
        watch = run.record.get("steps", {}).get("watch", {})
        handled = (
            run.proc.returncode == 0
            and watch.get("outcome") == "running"
            and watch.get("propagation_delay_seen") is True
            and not run.leaks()
        )
        observed = (
            f"{run.record.get('outcome')}; {watch.get('tasks_denied_after_change')} task(s) "
            f"denied after the change; propagation_delay_seen={watch.get('propagation_delay_seen')}"
        )
        self.add(
            Case(
                "IAM propagation delay: 120 s (simulated)",
                "watch goes on; delay on record",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def execution_role(self, fault: str) -> None:
        self.fresh()
        before = self.inline()
        self.lab.set_faults(execution_role_fault=fault)
        deadline = time.monotonic() + 10
        while not _newest_failed_to_start(self.lab) and time.monotonic() < deadline:
            time.sleep(0.01)
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}")
        diag = run.record.get("steps", {}).get("diagnose", {})
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "diagnose"
            and diag.get("cause") == {"pull": "image-pull"}.get(fault, "execution-role")
            and "execution role" in run.stderr
            and self.inline() == before
            and not run.leaks()
        )
        observed = f"{diag.get('cause')}: {diag.get('stopped_reason', '')}"
        self.add(
            Case(
                f"execution role fails ({fault})",
                "stops in diagnose; IAM unchanged",
                observed,
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    def lab_dies_in_watch(self) -> None:
        dying = Lab.start(Params(account_id=OTHER_ACCOUNT))
        self.runs += 1
        out = self.workdir / f"run{self.runs:02d}"
        try:
            dying.set_faults(propagation_delay_s=5000)  # keeps the watch waiting
            cmd = [sys.executable, "-m", "runbook_lib", "run", "--out", str(out)]
            cmd += ["-p", f"endpoint_url={dying.endpoint_url}"]
            cmd += ["-p", f"account_id='{OTHER_ACCOUNT}'", "-p", "timeout_s=120"]
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env(),
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if "apply" in _record(out).get("steps", {}):
                    break
                time.sleep(0.02)
            endpoint = dying.endpoint_url
        finally:
            dying.stop()
        stdout, stderr = proc.communicate(timeout=120)
        run = CliRun(
            subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr),
            _record(out),
            _run_dir(out),
        )
        undo = f"aws iam delete-role-policy --role-name {ROLE} --policy-name {POLICY}"
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "watch"
            and endpoint in run.stderr
            and run.record.get("undo") == undo
            and not run.leaks()
        )
        self.add(
            Case(
                "the lab dies while the run watches",
                "stops in watch naming the endpoint; undo on record",
                f"{run.failure_line()}; record undo: {run.record.get('undo')}",
                len(dying.iam_writes),
                handled,
                False,
            )
        )

    def closed_port(self) -> None:
        before = len(self.lab.iam_writes)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
            run = self.cli(f"endpoint_url={endpoint}")
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "connect"
            and endpoint in run.stderr
            and not run.leaks()
        )
        self.add(
            Case(
                "endpoint_url: a closed port",
                "stops in connect naming the endpoint",
                run.failure_line(),
                len(self.lab.iam_writes) - before,
                handled,
                True,
            )
        )

    def rerun_after_interruption(self) -> None:
        self.fresh()
        policy = render_policy(Params(), LAB_DEFAULT_ACCOUNT)
        # What a run cut off right after its write leaves behind.
        self.iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=policy.text)
        before = len(self.lab.iam_writes)
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}")
        steps = run.record.get("steps", {})
        plan = steps.get("plan", {})
        handled = (
            run.proc.returncode == 0
            and plan.get("action") == "unchanged"
            and plan.get("written") is False
            and steps.get("watch", {}).get("outcome") == "running"
            and "verify" in steps
            and not run.leaks()
        )
        observed = (
            f"plan {plan.get('action')}, written={plan.get('written')}, "
            f"watch {steps.get('watch', {}).get('outcome')}, verify {'verify' in steps}"
        )
        self.add(
            Case(
                "run again after a run cut off after its write",
                "sees the policy; writes nothing; verifies",
                observed,
                len(self.lab.iam_writes) - before,
                handled,
                False,
            )
        )

    def same_named_policy(self) -> None:
        self.fresh()
        theirs = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TheirsNotOurs",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": "arn:aws:s3:::carts-assets/*",
                }
            ],
        }
        self.iam.put_role_policy(
            RoleName=ROLE, PolicyName=POLICY, PolicyDocument=json.dumps(theirs)
        )
        before, writes = self.inline(), len(self.lab.iam_writes)
        run = self.cli(f"endpoint_url={self.lab.endpoint_url}", "rollback=true")
        steps = run.record.get("steps", {})
        plan = steps.get("plan", {})
        after = self.inline()
        restored = after.keys() == before.keys() and all(
            same_policy(after[n], before[n]) for n in before
        )
        handled = (
            run.proc.returncode == 0
            and plan.get("action") == "replace"
            and same_policy(plan.get("before") or {}, theirs)
            and steps.get("rollback", {}).get("matches_before") is True
            and restored
            and not run.leaks()
        )
        observed = (
            f"plan {plan.get('action')} (before kept: {same_policy(plan.get('before') or {}, theirs)}); "
            f"rollback {steps.get('rollback', {}).get('done')}; role as before: {restored}"
        )
        self.add(
            Case(
                "a same-named inline policy is already there, rollback: true",
                "replace shown; restored exactly",
                observed,
                len(self.lab.iam_writes) - writes,
                handled,
                False,
            )
        )

    def wrong_account(self, backend: str) -> None:
        self.fresh()
        before = self.inline()
        overrides = [f"account_id='{OTHER_ACCOUNT}'", "apply=true"]
        if backend == "lab":
            run = self.cli(f"endpoint_url={self.lab.endpoint_url}", *overrides)
        else:
            run = self.cli("backend=aws", *overrides, aws_endpoint=self.lab.endpoint_url)
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "connect"
            and "WrongAccount" in run.stderr
            and self.inline() == before
            and not run.leaks()
        )
        self.add(
            Case(
                f"account_id of another account (backend {backend}, apply: true)",
                "stops in connect; nothing written",
                run.failure_line(),
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    def plan_only(self, backend: str) -> None:
        self.fresh()
        before = self.inline()
        if backend == "lab":
            run = self.cli(f"endpoint_url={self.lab.endpoint_url}", "apply=false")
            label = "backend lab, apply: false"
        else:
            run = self.cli(
                "backend=aws",
                f"account_id='{LAB_DEFAULT_ACCOUNT}'",
                aws_endpoint=self.lab.endpoint_url,
            )
            label = "backend aws, apply: null (credentials in the environment)"
        handled = (
            run.proc.returncode == 0
            and run.record.get("outcome") == "planned: nothing written"
            and self.inline() == before
            and not run.leaks()
        )
        observed = f"{run.record.get('outcome')}; outputs scanned: {_scan_note(run.leaks())}"
        self.add(
            Case(
                label,
                "plan only; nothing written",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def aws_writes_and_rolls_back(self) -> None:
        self.fresh()
        before = self.inline()
        run = self.cli(
            "backend=aws",
            f"account_id='{LAB_DEFAULT_ACCOUNT}'",
            "apply=true",
            "rollback=true",
            aws_endpoint=self.lab.endpoint_url,
        )
        leaks = run.leaks()
        handled = (
            run.proc.returncode == 0
            and run.record.get("outcome") == "fixed, then rolled back"
            and self.inline() == before
            and not leaks
        )
        observed = f"{run.record.get('outcome')}; outputs scanned: {_scan_note(leaks)}"
        self.add(
            Case(
                "backend aws, apply: true, rollback: true (credentials in the environment)",
                "fixed, rolled back; no credential in any output",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    # --- strict inputs, edge failures, a lab closed to the browser ---------------------------

    def cli_params_file(self, name: str, path: str, phrase: str) -> None:
        """``carts-runbook run --params PATH``: exit 2, one line, no kernel."""
        self.runs += 1
        out = self.workdir / f"run{self.runs:02d}"
        cmd = [sys.executable, "-m", "runbook_lib", "run", "--params", path, "--out", str(out)]
        before = len(self.lab.iam_writes)
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=self.env()
        )
        lines = proc.stderr.strip().splitlines()
        handled = (
            proc.returncode == 2
            and len(lines) == 1
            and phrase in proc.stderr
            and run_folders(out) == []  # refused before a run folder (or a kernel) existed
        )
        observed = f"exit {proc.returncode}: {lines[-1] if lines else ''}"
        writes = len(self.lab.iam_writes) - before
        self.add(Case(name, "exit 2, one line, no kernel", observed, writes, handled, True))

    def papermill_typo(self) -> None:
        """``papermill ... -p polcy_scope least-privilege``: papermill only warns; the runbook's
        first cell stops the run with the nearest known name, before any AWS call."""
        self.fresh()
        self.runs += 1
        out = self.workdir / f"papermill{self.runs:02d}.ipynb"
        before = self.inline()
        cmd = [str(Path(sys.executable).parent / "papermill"), f"notebooks/{STEM}.ipynb", str(out)]
        cmd += ["-p", "polcy_scope", "least-privilege", "-p", "endpoint_url", self.lab.endpoint_url]
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=self.env()
        )
        errors = _notebook_errors(out)
        first = errors[0] if errors else {}
        line = str(first.get("evalue", ""))
        handled = (
            proc.returncode != 0
            and len(errors) == 1
            and first.get("tags") == ["step:parameters"]
            and len(first.get("traceback", [])) == 1
            and "unknown parameter 'polcy_scope'" in line
            and "did you mean 'policy_scope'?" in line
            and self.inline() == before
        )
        self.add(
            Case(
                "papermill -p polcy_scope least-privilege (a typo)",
                "stops in the first cell, naming policy_scope",
                f"{first.get('ename', '')}: {line}",
                len(self.lab.iam_writes),
                handled,
                True,
            )
        )

    def unheld_region_on_the_wire(self) -> None:
        """boto3 and the aws CLI signed for us-west-3 against the served lab: AWS's 403
        sentence from every service, never a 500."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        session = boto3.Session(
            aws_access_key_id="lab", aws_secret_access_key="lab", region_name="us-west-3"
        )
        config = Config(retries={"mode": "standard", "max_attempts": 1})
        before = len(self.lab.iam_writes)
        seen: list[str] = []
        calls = {
            "sts": lambda c: c.get_caller_identity(),
            "iam": lambda c: c.put_role_policy(
                RoleName=ROLE,
                PolicyName=POLICY,
                PolicyDocument=render_policy(Params(), LAB_DEFAULT_ACCOUNT).text,
            ),
            "ecs": lambda c: c.list_clusters(),
            "dynamodb": lambda c: c.list_tables(),
            "logs": lambda c: c.describe_log_groups(),
        }
        for service, call in calls.items():
            client = session.client(service, endpoint_url=self.lab.endpoint_url, config=config)
            try:
                call(client)
                seen.append(f"{service}: answered")
            except ClientError as exc:
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                seen.append(f"{service}: {status} {exc.response['Error']['Code']}")
        env = {**self.env(), **self.lab.env(), "AWS_DEFAULT_REGION": "us-west-3"}
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "aws"), "ecs", "list-clusters"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        sentence = "Credential should be scoped to a valid region, not 'us-west-3'."
        handled = (
            all(" 403 " in s for s in seen)
            and cli.returncode != 0
            and sentence in cli.stderr
            and len(self.lab.iam_writes) == before
        )
        self.add(
            Case(
                "boto3 and the aws CLI signed for us-west-3, against the served lab",
                "AWS's 403 region sentence, no 500",
                "; ".join(seen) + f"; aws CLI: {cli.stderr.strip().splitlines()[-1:]}",
                len(self.lab.iam_writes) - before,
                handled,
                True,
            )
        )

    def not_aws_endpoint(self, tls: bool) -> None:
        """endpoint_url pointing at a web server (HTML), or at https with a self-signed
        certificate: one sentence in connect, with the reason."""
        from edge_servers import NGINX_PAGE, page, serving

        tls_dir = Path(tempfile.mkdtemp(dir=self.workdir)) if tls else None
        before = len(self.lab.iam_writes)
        with serving(page(NGINX_PAGE), tls_dir=tls_dir) as url:
            run = self.cli(f"endpoint_url={url}")
        kind = "EndpointTlsError" if tls else "EndpointNotAws"
        reason = "certificate verify failed" if tls else "is not an AWS endpoint"
        handled = (
            run.short_failure()
            and run.record.get("failed_step") == "connect"
            and kind in run.stderr
            and reason in run.stderr
            and url in run.stderr
        )
        self.add(
            Case(
                "endpoint_url: https with a self-signed certificate"
                if tls
                else "endpoint_url: a web server that answers HTML",
                "stops in connect, one sentence with the reason",
                run.failure_line(),
                len(self.lab.iam_writes) - before,
                handled,
                True,
            )
        )

    def browser_request(
        self, name: str, path: str, headers: dict[str, str], body: bytes, host: str = ""
    ) -> None:
        """A request a web page could send: refused, nothing written, the lab not reset."""
        import http.client

        self.fresh()
        self.iam.put_role_policy(
            RoleName=ROLE,
            PolicyName="Sentinel",
            PolicyDocument=render_policy(Params(), LAB_DEFAULT_ACCOUNT).text,
        )
        before = len(self.lab.iam_writes)
        conn = http.client.HTTPConnection("127.0.0.1", self.lab.port, timeout=30)
        try:
            conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", (host or "127.0.0.1:{port}").format(port=self.lab.port))
            for key, value in headers.items():
                conn.putheader(key, value.replace("{token}", self.lab.token))
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            answer = conn.getresponse()
            status, text = answer.status, answer.read().decode("utf-8", "replace")
            cors = [k for k, _ in answer.getheaders() if k.lower().startswith("access-control")]
        finally:
            conn.close()
        kept = "Sentinel" in self.inline()
        writes = len(self.lab.iam_writes) - before
        handled = status in (403, 404, 415) and not cors and kept and writes == 0
        self.add(
            Case(
                name,
                "refused; nothing written, lab not reset",
                f"HTTP {status}: {text}; lab state kept: {kept}",
                writes,
                handled,
                True,
            )
        )

    # --- the command's own edges -----------------------------------------------------------------

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real CLI with these arguments (no ``-p`` added), credentials in its environment."""
        cmd = [sys.executable, "-m", "runbook_lib", "run", *args]
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=self.env()
        )

    def bad_path(self, name: str, args: list[str], phrase: str, out: Path) -> None:
        """``--out`` or ``--params`` unusable: exit 2, one sentence, before a kernel or a run
        folder exists."""
        before = len(self.lab.iam_writes)
        made_before = sorted(out.iterdir()) if out.is_dir() else None
        proc = self.command(*args, "-p", f"endpoint_url={self.lab.endpoint_url}")
        lines = proc.stderr.strip().splitlines()
        handled = (
            proc.returncode == 2
            and len(lines) == 1
            and phrase in lines[0]
            and "Traceback" not in proc.stderr
            and (sorted(out.iterdir()) if out.is_dir() else None) == made_before
        )
        observed = f"exit {proc.returncode}: {lines[-1] if lines else ''}"
        observed = observed.replace(str(self.workdir), "…")
        self.add(
            Case(
                name,
                "exit 2, one sentence, no kernel",
                observed,
                len(self.lab.iam_writes) - before,
                handled,
                True,
            )
        )

    def command_edges(self) -> None:
        taken = self.workdir / "a-file"
        taken.write_text("somebody's file\n")
        self.bad_path("CLI --out is an existing file", ["--out", str(taken)], "is a file", taken)
        locked = self.workdir / "read-only"
        locked.mkdir()
        locked.chmod(0o555)
        immutable = os.geteuid() == 0 and (
            subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
        )
        try:
            self.bad_path(
                "CLI --out is a read-only folder",
                ["--out", str(locked)],
                "cannot be written",
                locked,
            )
        finally:
            if immutable:
                subprocess.run(["chattr", "-i", str(locked)], check=True)
        out = self.workdir / "never"
        for name, params, phrase in (
            ("CLI --params /bin/ls (a binary file)", "/bin/ls", "is binary"),
            ("CLI --params is a folder", str(self.workdir), "cannot read params file"),
        ):
            self.bad_path(name, ["--params", params, "--out", str(out)], phrase, out)

    def history_and_no_html(self) -> None:
        """Two runs into one --out, the second with --no-html: both kept, latest the second."""
        self.fresh()
        out = self.workdir / "history"
        endpoint = ["-p", f"endpoint_url={self.lab.endpoint_url}"]
        first = self.command("--out", str(out), *endpoint)
        run1 = latest_run(out)
        record1 = (run1 / f"{STEM}.record.json").read_bytes() if run1 else b""
        second = self.command("--out", str(out), "--no-html", *endpoint)
        run2 = latest_run(out)
        kept = (
            run1 is not None
            and run2 is not None
            and run1 != run2
            and (run1 / f"{STEM}.record.json").read_bytes() == record1
            and (run1 / f"{STEM}.html").exists()
        )
        no_html = (
            run2 is not None
            and not (run2 / f"{STEM}.html").exists()
            and "html:" not in second.stdout
        )
        handled = first.returncode == 0 and second.returncode == 0 and kept and no_html
        observed = (
            f"exits {first.returncode}, {second.returncode}; first run kept: {kept}; "
            f"second: no HTML file or path: {no_html}; latest -> the second: "
            f"{run2 is not None and run2 != run1}"
        )
        self.add(
            Case(
                "a second run into the same --out, with --no-html",
                "both runs kept; latest the second; no HTML path",
                observed,
                len(self.lab.iam_writes),
                handled,
                False,
            )
        )

    def ctrl_c_in_watch(self) -> None:
        """SIGINT to the CLI while it watches a lab at AWS's pace (the watch lasts a minute)."""
        from runbook_lib.lab import LabConfig

        slow = Lab.start(Params(account_id=OTHER_ACCOUNT), LabConfig(time_scale=1.0))
        out = self.workdir / "interrupted"
        try:
            cmd = [sys.executable, "-m", "runbook_lib", "run", "--out", str(out)]
            cmd += [
                "-p",
                f"endpoint_url={slow.endpoint_url}",
                "-p",
                f"account_id='{OTHER_ACCOUNT}'",
            ]
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env(),
            )
            seen: list[str] = []
            in_watch = threading.Event()

            def read_stderr() -> None:
                assert proc.stderr is not None
                while chunk := proc.stderr.read(1):
                    seen.append(chunk)
                    if "  watch" in "".join(seen[-40:]):
                        in_watch.set()
                in_watch.set()

            reader = threading.Thread(target=read_stderr, daemon=True)
            reader.start()
            in_watch.wait(timeout=120)  # the progress line of the watch step is out
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
            reader.join(timeout=30)
            stderr = "".join(seen)
            writes = list(slow.iam_writes)
        finally:
            slow.stop()
        record = _record(out)
        undo = f"aws iam delete-role-policy --role-name {ROLE} --policy-name {POLICY}"
        said = [line for line in stderr.splitlines() if "interrupted in" in line]
        handled = (
            proc.returncode == 130
            and "Traceback" not in stderr
            and len(said) == 1
            and undo in said[0]
            and record.get("outcome") == "interrupted"
            and record.get("failed_step") == "watch"
            and record.get("undo") == undo
            and writes == ["PutRolePolicy"]
        )
        observed = (
            f"exit {proc.returncode}; record {record.get('outcome')} in "
            f"{record.get('failed_step')}, undo {'kept' if record.get('undo') == undo else 'missing'}"
            f"; {said[0].removeprefix('carts-runbook: ').split(' (record')[0] if said else stderr[-120:]}"
        )
        self.add(
            Case(
                "Ctrl-C while the run watches",
                "exit 130, one line, record interrupted with the undo",
                observed,
                len(writes),
                handled,
                False,
            )
        )


def _run_dir(out: Path) -> Path:
    """The newest run's folder under ``--out`` (``out/latest``); ``out`` when no run started."""
    return latest_run(out) or out


def _record(out: Path) -> dict[str, Any]:
    path = _run_dir(out) / f"{STEM}.record.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}


def _notebook_errors(path: Path) -> list[dict[str, Any]]:
    """The error outputs of an executed notebook, each with its cell's tags."""
    if not path.exists():
        return []
    nb = json.loads(path.read_text())
    return [
        {**o, "tags": c.get("metadata", {}).get("tags", [])}
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def _scan_note(leaks: list[str]) -> str:
    return f"credential-like text in {', '.join(leaks)}" if leaks else "clean"


def _newest_failed_to_start(lab: Lab) -> bool:
    stopped = [t for t in lab.state()["tasks"] if t["lastStatus"] == "STOPPED"]
    return bool(stopped) and stopped[-1]["stopCode"] == "TaskFailedToStart"


ARN = f"arn:aws:iam::{LAB_DEFAULT_ACCOUNT}"

#: (case, values, the parameter the message must name)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("backend: 'localstack'", {"backend": "localstack"}, "backend"),
    ("backend: '' (empty)", {"backend": ""}, "backend"),
    ("backend: 1 (a number)", {"backend": 1}, "backend"),
    ("region: 'us_west_2' (malformed)", {"region": "us_west_2"}, "region"),
    ("region: '' (empty)", {"region": ""}, "region"),
    ("region: 5 (a number)", {"region": 5}, "region"),
    ("account_id: '12345' (too short)", {"account_id": "12345"}, "account_id"),
    ("account_id: 123456789012 (a YAML number)", {"account_id": 123456789012}, "account_id"),
    ("account_id: an ARN", {"account_id": f"{ARN}:root"}, "account_id"),
    ("profile: 'has space' (backend aws)", {"backend": "aws", "profile": "has space"}, "profile"),
    ("profile: set with backend lab", {"profile": "workshop"}, "profile"),
    (
        "endpoint_url: '127.0.0.1:5000' (no scheme)",
        {"endpoint_url": "127.0.0.1:5000"},
        "endpoint_url",
    ),
    (
        "endpoint_url with backend aws",
        {"backend": "aws", "endpoint_url": "http://127.0.0.1:5000"},
        "endpoint_url",
    ),
    ("cluster: '' (empty)", {"cluster": ""}, "cluster"),
    (
        "cluster: an ARN",
        {"cluster": "arn:aws:ecs:us-west-2:123456789012:cluster/retail-store-ecs-cluster"},
        "cluster",
    ),
    ("service: 'a/b' (malformed)", {"service": "a/b"}, "service"),
    ("service: null", {"service": None}, "service"),
    ("task_role: an ARN", {"task_role": f"{ARN}:role/retailStoreEcsTaskRole"}, "task_role"),
    ("task_role: 65 characters", {"task_role": "r" * 65}, "task_role"),
    ("execution_role: '' (empty)", {"execution_role": ""}, "execution_role"),
    (
        "execution_role: the task role's name",
        {"execution_role": "retailStoreEcsTaskRole"},
        "execution_role",
    ),
    ("policy_name: 'Carts Policy' (a space)", {"policy_name": "Carts Policy"}, "policy_name"),
    ("policy_name: an ARN", {"policy_name": f"{ARN}:policy/CartsDynamoPolicy"}, "policy_name"),
    ("table: 'ab' (too short)", {"table": "ab"}, "table"),
    (
        "table: an ARN",
        {"table": "arn:aws:dynamodb:us-west-2:123456789012:table/retail-store-ecs-carts"},
        "table",
    ),
    ("index: 'idx global' (a space)", {"index": "idx global"}, "index"),
    ("index: ['idx'] (a list)", {"index": ["idx"]}, "index"),
    ("policy_scope: 'admin'", {"policy_scope": "admin"}, "policy_scope"),
    ("apply: 'yes' (text)", {"apply": "yes"}, "apply"),
    ("apply: 1 (a number)", {"apply": 1}, "apply"),
    ("rollback: null", {"rollback": None}, "rollback"),
    ("rollback: 'false' (text)", {"rollback": "false"}, "rollback"),
    ("timeout_s: -1", {"timeout_s": -1}, "timeout_s"),
    ("timeout_s: '300' (text)", {"timeout_s": "300"}, "timeout_s"),
    ("timeout_s: NaN", {"timeout_s": float("nan")}, "timeout_s"),
    ("timeout_s: 99999 (over an hour)", {"timeout_s": 99999}, "timeout_s"),
    ("unknown parameter 'regoin'", {"regoin": "us-west-2"}, "regoin"),
]

BAD_FILES: list[tuple[str, str | None]] = [
    ("params file: not YAML", "backend: [lab\n"),
    ("params file: a list, not a mapping", "- backend\n"),
    ("params file: missing", None),
]

BAD_CLI: list[tuple[str, list[str], str]] = [
    (
        "CLI -p account_id=123456789012 (a YAML number)",
        ["account_id=123456789012"],
        "parameter 'account_id'",
    ),
    (
        "CLI -p backend=aws with endpoint_url",
        ["backend=aws"],
        "parameter 'endpoint_url' is only used with backend 'lab'",
    ),
    (
        "CLI -p task_role=<an ARN>",
        [f"task_role={ARN}:role/retailStoreEcsTaskRole"],
        "parameter 'task_role'",
    ),
    ("CLI -p timeout_s=soon", ["timeout_s=soon"], "parameter 'timeout_s'"),
    ("CLI -p apply (no value)", ["apply"], "option -p takes NAME=VALUE"),
]

#: (case, override, the parameter the message must name, a phrase it must hold)
MISSING: list[tuple[str, str, str, str]] = [
    ("task_role that does not exist", "task_role=noSuchRole", "task_role", "'noSuchRole'"),
    (
        "execution_role that does not exist",
        "execution_role=noSuchExecRole",
        "execution_role",
        "'noSuchExecRole'",
    ),
    ("cluster that does not exist", "cluster=no-such-cluster", "cluster", "'no-such-cluster'"),
    ("service that does not exist", "service=no-such-service", "service", "'no-such-service'"),
    ("table that does not exist", "table=no-such-table", "table", "'no-such-table'"),
    ("index that does not exist", "index=no_such_index", "index", "no index 'no_such_index'"),
    ("region where nothing was set up", "region=eu-west-1", "cluster", "region eu-west-1"),
]


def _alias_bomb() -> list[Any]:
    """What ``a: &a [x, x]`` then ``b: [*a, *a]`` ... builds: shared, 10**30 leaves in print."""
    bomb: list[Any] = ["lol"]
    for _ in range(30):
        bomb = [bomb] * 10
    return bomb


#: (case, values, the parameter the message must name, a phrase it must hold)
STRICT_VALUES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "policy_name: 'CartsDynamoPolicy\\n' (a trailing newline)",
        {"policy_name": "CartsDynamoPolicy\n"},
        "policy_name",
        "'CartsDynamoPolicy\\n'",
    ),
    ("region: 'us-west-2\\n' (a trailing newline)", {"region": "us-west-2\n"}, "region", "region"),
    (
        "account_id: fullwidth digits",
        {"account_id": "１２３４５６７８９０１２"},
        "account_id",
        "12-digit",
    ),
    ("task_role: 'rôle' (not ASCII)", {"task_role": "rôle"}, "task_role", "IAM role name"),
    ("cluster: 256 characters", {"cluster": "c" * 256}, "cluster", "1-255"),
    (
        "region: 'us-west-3' (well-formed, AWS has none)",
        {"region": "us-west-3"},
        "region",
        "not in botocore's list of regions (did you mean 'us-west-2'?)",
    ),
    (
        "region: 'us-west-3', backend aws",
        {"backend": "aws", "region": "us-west-3"},
        "region",
        "must be a region AWS has",
    ),
    (
        "region: 'us-gov-west-1' for the lab",
        {"region": "us-gov-west-1"},
        "region",
        "must be a region the lab can hold",
    ),
    (
        "region: 'me-west-1' (announced in partitions.json, no endpoint yet)",
        {"backend": "aws", "region": "me-west-1"},
        "region",
        "not in botocore's list of regions",
    ),
    ("table: 10 MB of text", {"table": "t" * 10_000_000}, "table", "…."),
    ("index: a value built from YAML aliases", {"index": _alias_bomb()}, "index", "as text"),
    (
        "unknown parameter 'polcy_scope' (a typo)",
        {"polcy_scope": "least-privilege"},
        "polcy_scope",
        "did you mean 'policy_scope'?",
    ),
    (
        "account_id: 12345670123 (papermill's -p made it a number)",
        {"account_id": 12345670123},
        "account_id",
        "-r keeps them text",
    ),
]

#: (case, file content or an existing path, the parameter named, a phrase)
STRICT_FILES: list[tuple[str, bytes | Path, str, str]] = [
    ("params file: empty", b"", "params", "is empty"),
    ("params file: only a comment", b"# nothing yet\n", "params", "is empty"),
    (
        "params file: a key twice",
        b"policy_scope: least-privilege\nregion: us-west-2\npolicy_scope: workshop\n",
        "params",
        "holds the key 'policy_scope' twice at line 3",
    ),
    (
        "params file: YAML aliases (billion laughs)",
        b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        b"b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"index: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "params",
        "holds an alias (*name) at line 2",
    ),
    ("params file: /bin/ls", Path("/bin/ls"), "params", "is binary, not a YAML text file"),
    ("params file: not UTF-8", b"region: caf\xe9\n", "params", "is not UTF-8 text"),
    (
        "params file: account_id: 012345670123 (YAML octal)",
        b"account_id: 012345670123\n",
        "account_id",
        "YAML reads 012345670123 as the octal number 1402433619; quote it",
    ),
]

#: (case, -p items, a phrase stderr must hold)
STRICT_CLI: list[tuple[str, list[str], str]] = [
    (
        "CLI -p account_id=012345670123 (YAML octal)",
        ["account_id=012345670123"],
        "YAML reads 012345670123 as the octal number",
    ),
    ("CLI -p region=us-west-3", ["region=us-west-3"], "parameter 'region' must be a region AWS"),
]

#: (case, path, headers ({token}: the lab's), body, Host ({port}: the lab's; empty: its own))
BROWSER: list[tuple[str, str, dict[str, str], bytes, str]] = [
    (
        "forged Host (DNS rebinding) on IAM DeleteRolePolicy",
        "/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=lab/20260101/us-east-1/iam/aws4_request",
        },
        b"Action=DeleteRolePolicy&Version=2010-05-08&RoleName=retailStoreEcsTaskRole"
        b"&PolicyName=Sentinel",
        "evil.example:{port}",
    ),
    (
        "foreign Origin on IAM DeleteRolePolicy",
        "/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=lab/20260101/us-east-1/iam/aws4_request",
            "Origin": "http://evil.example",
        },
        b"Action=DeleteRolePolicy&Version=2010-05-08&RoleName=retailStoreEcsTaskRole"
        b"&PolicyName=Sentinel",
        "",
    ),
    (
        "unsigned form POST to IAM (a cross-site form)",
        "/",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"Action=DeleteRolePolicy&Version=2010-05-08&RoleName=retailStoreEcsTaskRole"
        b"&PolicyName=Sentinel",
        "",
    ),
    (
        "text/plain POST to /_lab/reset (with the token)",
        "/_lab/reset",
        {"Content-Type": "text/plain", "X-Lab-Token": "{token}"},
        b"{}",
        "",
    ),
    (
        "POST /_lab/reset without the token",
        "/_lab/reset",
        {"Content-Type": "application/json"},
        b"{}",
        "",
    ),
    ("POST /moto-api/reset (moto's own reset)", "/moto-api/reset", {}, b"", ""),
]


def table(cases: list[Case]) -> list[str]:
    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "/")
        return text if len(text) <= OBSERVED_WIDTH else text[: OBSERVED_WIDTH - 1] + "…"

    lines = [
        "| # | case | expected | observed | AWS writes made | handled |",
        "| ---: | --- | --- | --- | ---: | --- |",
    ]
    for i, c in enumerate(cases, 1):
        lines.append(
            f"| {i} | {cell(c.name)} | {cell(c.expected)} | {cell(c.observed)} | {c.writes} | "
            f"{'yes' if c.handled else '**NO**'} |"
        )
    return lines


def main() -> int:
    t0 = time.monotonic()
    print("reliability matrix: starting a lab", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp, Lab.start(Params()) as lab:
        m = Matrix(lab, Path(tmp))
        for name, values, param in BAD_VALUES:
            m.bad_value(name, values, param)
        for name, text in BAD_FILES:
            m.bad_file(name, text, "params")
        for name, overrides, phrase in BAD_CLI:
            m.bad_cli(name, overrides, phrase)
        for name, override, param, phrase in MISSING:
            m.missing_name(name, override, param, phrase)
        steps: list[Callable[[], None]] = [
            m.throttling,
            m.propagation,
            lambda: m.execution_role("pull"),
            lambda: m.execution_role("logs"),
            m.lab_dies_in_watch,
            m.closed_port,
            m.rerun_after_interruption,
            m.same_named_policy,
            lambda: m.wrong_account("lab"),
            lambda: m.wrong_account("aws"),
            lambda: m.plan_only("lab"),
            lambda: m.plan_only("aws"),
            m.aws_writes_and_rolls_back,
            m.command_edges,
            m.history_and_no_html,
            m.ctrl_c_in_watch,
        ]
        for name, values, param, phrase in STRICT_VALUES:
            steps.append(partial(m.bad_value, name, values, param, phrase))
        for name, content, param, phrase in STRICT_FILES:
            steps.append(partial(m.bad_file, name, content, param, phrase))
        steps.append(partial(m.cli_params_file, "CLI --params /bin/ls", "/bin/ls", "is binary"))
        for name, overrides, phrase in STRICT_CLI:
            steps.append(partial(m.bad_cli, name, overrides, phrase))
        steps += [
            m.papermill_typo,
            m.unheld_region_on_the_wire,
            partial(m.not_aws_endpoint, tls=False),
            partial(m.not_aws_endpoint, tls=True),
        ]
        for name, path, headers, body, host in BROWSER:
            steps.append(partial(m.browser_request, name, path, headers, body, host))
        for step in steps:
            step()
        cases = m.cases
    # Safe writes in a shared account: their own lab, on a stepped clock (benchmarks/
    # reliability_writes.py); a lab of the same account cannot run beside the matrix's.
    from reliability_writes import safe_write_rows

    safe_write_rows(lambda row: m.add(Case(**asdict(row))))
    handled = sum(c.handled for c in cases)
    refused_writes = sum(c.writes for c in cases if c.refused)
    print(f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    for line in table(cases):
        print(line)
    print()
    print(f"{len(cases)} cases, {handled} handled, {refused_writes} writes on failed validation")
    return 0 if handled == len(cases) and refused_writes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
