"""The lab is closed to web pages and never answers a 500 for a region it cannot hold.

A page in the learner's browser can send requests to 127.0.0.1 too: through DNS rebinding (a
foreign Host), as a cross-site form or fetch (a foreign Origin, ``Sec-Fetch-Site: cross-site``,
a ``text/plain`` body), or unsigned. Each is refused here against a real served lab and writes
nothing; the same request with the lab's own Host and no Origin goes through, so the refusal is
the header's doing. boto3 and the real aws CLI keep working.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.exceptions import ClientError
from helpers import BIN, ROLE, WORKSHOP_POLICY, Clients, clean_env

from runbook_lib.lab import Lab

pytestmark = pytest.mark.lab

#: Nothing here waits on the lab's time: the default stepped clock holds it still.
LAB_SEED = 11
#: A SigV4 header as botocore writes it (the lab reads the scope; it checks no signature).
SIGNED_IAM = (
    "AWS4-HMAC-SHA256 Credential=lab/20260101/us-east-1/iam/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
)
PUT_POLICY = urlencode(
    {
        "Action": "PutRolePolicy",
        "Version": "2010-05-08",
        "RoleName": ROLE,
        "PolicyName": "FromAWebPage",
        "PolicyDocument": WORKSHOP_POLICY,
    }
).encode()
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data

    @property
    def cors(self) -> list[str]:
        return [k for k in self.headers if k.lower().startswith("access-control-")]


def send(
    running: Lab,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str | None = None,
) -> Answer:
    """One raw HTTP request to the lab, with exactly the headers given (Host included)."""
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{running.port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        return Answer(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        conn.close()


def put_policy(running: Lab, **extra: str) -> Answer:
    host = extra.pop("host", None)
    headers = {"Content-Type": FORM, "Authorization": SIGNED_IAM, **extra}
    return send(running, "POST", "/", headers, PUT_POLICY, host=host)


def inline_names(clients: Clients) -> list[str]:
    names: list[str] = clients.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    return names


def test_the_same_request_with_the_labs_own_host_goes_through(lab: Lab, aws: Clients) -> None:
    """The control case for the refusals below: the request itself is one the lab serves."""
    answer = put_policy(lab)
    assert answer.status == 200, answer.body
    assert "FromAWebPage" in inline_names(aws)
    assert lab.iam_writes == ["PutRolePolicy"]
    assert send(lab, "GET", "/_lab/state", {"X-Lab-Token": lab.token}).status == 200
    assert put_policy(lab, host=f"localhost:{lab.port}").status == 200
    assert put_policy(lab, Origin=f"http://127.0.0.1:{lab.port}").status == 200


@pytest.mark.parametrize(
    ("what", "headers", "phrase"),
    [
        ("forged Host (DNS rebinding)", {"host": "evil.example:{port}"}, "DNS rebinding guard"),
        ("Host of another port", {"host": "127.0.0.1:1"}, "DNS rebinding guard"),
        ("Host 0.0.0.0", {"host": "0.0.0.0:{port}"}, "DNS rebinding guard"),
        ("foreign Origin", {"Origin": "http://evil.example"}, "refuses cross-origin requests"),
        ("Origin null (sandboxed page)", {"Origin": "null"}, "refuses cross-origin requests"),
        ("cross-site fetch", {"Sec-Fetch-Site": "cross-site"}, "requests from other sites"),
        ("same-site page, other port", {"Sec-Fetch-Site": "same-site"}, "from other sites"),
    ],
)
def test_a_request_a_web_page_could_send_is_refused_and_writes_nothing(
    lab: Lab, aws: Clients, what: str, headers: dict[str, str], phrase: str
) -> None:
    extra = {k: v.format(port=lab.port) for k, v in headers.items()}
    answer = put_policy(lab, **extra)
    assert answer.status == 403, what
    assert phrase in str(answer.json()["error"])
    assert answer.cors == []
    assert lab.iam_writes == [] and "FromAWebPage" not in inline_names(aws)


def test_control_routes_want_json_and_the_token(lab: Lab, aws: Clients) -> None:
    aws.iam.put_role_policy(RoleName=ROLE, PolicyName="Kept", PolicyDocument=WORKSHOP_POLICY)
    token = {"X-Lab-Token": lab.token}
    cases = [
        ("text/plain POST (a cross-site form)", {"Content-Type": "text/plain", **token}, 415),
        ("form POST", {"Content-Type": FORM, **token}, 415),
        ("no token", {"Content-Type": "application/json"}, 403),
        ("wrong token", {"Content-Type": "application/json", "X-Lab-Token": "0" * 32}, 403),
        (
            "token, but a foreign Origin",
            {"Content-Type": "application/json", "Origin": "http://evil.example", **token},
            403,
        ),
    ]
    for what, headers, status in cases:
        answer = send(lab, "POST", "/_lab/reset", headers, b"{}")
        assert answer.status == status, what
        assert "Kept" in inline_names(aws), f"{what}: the lab was reset"
    answer = send(lab, "POST", "/_lab/faults", {"Content-Type": "text/plain"}, b'{"x": 1}')
    assert answer.status == 403 and lab.faults.throttle_rate == 0.0
    assert send(lab, "GET", "/_lab/state").status == 403
    done = send(lab, "POST", "/_lab/reset", {"Content-Type": "application/json", **token}, b"{}")
    assert done.status == 200 and "Kept" not in inline_names(aws)


def test_no_answer_carries_a_cors_header(lab: Lab) -> None:
    """moto's server allows any origin (AWS-FACTS §11); the lab passes none of it on."""
    preflight = send(
        lab,
        "OPTIONS",
        "/",
        {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 403 and preflight.cors == []
    for answer in (
        put_policy(lab),
        send(lab, "OPTIONS", "/", {"Authorization": SIGNED_IAM}),
        send(lab, "GET", "/_lab/state", {"X-Lab-Token": lab.token}),
    ):
        assert answer.cors == [], answer.headers


def test_unsigned_requests_and_moto_api_are_refused(lab: Lab, aws: Clients) -> None:
    """IAM API Reference, Common Errors: MissingAuthenticationToken, HTTP 403."""
    unsigned = send(lab, "POST", "/", {"Content-Type": FORM}, PUT_POLICY)
    assert unsigned.status == 403
    assert b"<Code>MissingAuthenticationToken</Code>" in unsigned.body
    in_url = send(lab, "GET", "/?" + PUT_POLICY.decode() + "&X-Amz-Credential=lab%2F20260101")
    assert in_url.status == 403
    json_unsigned = send(
        lab,
        "POST",
        "/",
        {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
        },
        b"{}",
    )
    assert json_unsigned.status == 403
    assert json_unsigned.json()["__type"] == "MissingAuthenticationToken"
    assert send(lab, "POST", "/moto-api/reset").status == 404
    assert send(lab, "GET", "/moto-api/data.json").status == 404
    assert lab.iam_writes == [] and "FromAWebPage" not in inline_names(aws)


@pytest.mark.parametrize(
    ("service", "call", "code"),
    [
        ("sts", lambda c: c.get_caller_identity(), "SignatureDoesNotMatch"),
        ("iam", lambda c: c.list_roles(), "SignatureDoesNotMatch"),
        ("ecs", lambda c: c.list_clusters(), "InvalidSignatureException"),
        ("dynamodb", lambda c: c.list_tables(), "InvalidSignatureException"),
        ("logs", lambda c: c.describe_log_groups(), "InvalidSignatureException"),
    ],
)
@pytest.mark.parametrize("region", ["us-west-3", "me-west-1"])
def test_a_region_aws_does_not_have_gets_awss_answer_not_a_500(
    lab: Lab,
    capfd: pytest.CaptureFixture[str],
    region: str,
    service: str,
    call: Callable[[Any], Any],
    code: str,
) -> None:
    """us-west-3 no partition lists; me-west-1 only botocore's partitions.json announces. moto
    would answer IAM and STS for them and fail the regional services with a 500."""
    assert_region_refused(
        lambda: call(getattr(Clients(lab.endpoint_url, region=region), service)), code, region
    )
    assert "Traceback" not in capfd.readouterr().err


def test_a_real_region_moto_has_no_backend_for_is_not_a_500(
    lab: Lab, capfd: pytest.CaptureFixture[str]
) -> None:
    """botocore lists mx-central-1, but has no CodeBuild endpoint there, so moto has no
    CodeBuild backend for it (KeyError inside moto): the same 403, not a 500."""
    import boto3

    codebuild = boto3.Session(
        aws_access_key_id="lab", aws_secret_access_key="lab", region_name="mx-central-1"
    ).client("codebuild", endpoint_url=lab.endpoint_url)
    assert_region_refused(codebuild.list_projects, "InvalidSignatureException", "mx-central-1")
    assert "Traceback" not in capfd.readouterr().err


def assert_region_refused(call: Callable[[], Any], code: str, region: str) -> None:
    with pytest.raises(ClientError) as err:
        call()
    error = err.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == code
    assert error["Error"]["Message"] == (
        f"Credential should be scoped to a valid region, not '{region}'."
    )


def aws_cli(running: Lab, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(tmp_path), **running.env()}
    return subprocess.run(
        [str(BIN / "aws"), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.cli
def test_the_aws_cli_works_unchanged_and_gets_the_region_sentence(
    lab: Lab, aws: Clients, tmp_path: Path
) -> None:
    who = aws_cli(
        lab,
        "sts",
        "get-caller-identity",
        "--query",
        "Account",
        "--output",
        "text",
        tmp_path=tmp_path,
    )
    assert who.returncode == 0 and who.stdout.strip() == lab.account_id, who.stderr
    put = aws_cli(
        lab,
        "iam",
        "put-role-policy",
        "--role-name",
        ROLE,
        "--policy-name",
        "CartsDynamoPolicy",
        "--policy-document",
        WORKSHOP_POLICY,
        tmp_path=tmp_path,
    )
    assert put.returncode == 0, put.stderr
    assert "CartsDynamoPolicy" in inline_names(aws)
    wrong = aws_cli(lab, "ecs", "list-clusters", "--region", "us-west-3", tmp_path=tmp_path)
    assert wrong.returncode != 0
    assert (
        "An error occurred (InvalidSignatureException) when calling the ListClusters operation: "
        "Credential should be scoped to a valid region, not 'us-west-3'." in wrong.stderr
    )


def test_the_guard_decides_on_headers_alone() -> None:
    """The pure checks: a person's typed URL (Sec-Fetch-Site: none) and same-origin pass; a
    Host with another port, a foreign Origin or another site's fetch do not."""
    from runbook_lib.lab.guard import browser_refusal, control_refusal, own_hosts

    own = {"SERVER_PORT": "5000", "HTTP_HOST": "127.0.0.1:5000"}
    assert own_hosts("5000") == {"127.0.0.1:5000", "localhost:5000"}
    assert browser_refusal(own) is None
    assert browser_refusal({**own, "HTTP_SEC_FETCH_SITE": "none"}) is None
    assert browser_refusal({**own, "HTTP_ORIGIN": "http://localhost:5000"}) is None
    assert browser_refusal({**own, "HTTP_HOST": "127.0.0.1:5001"}) is not None
    assert browser_refusal({**own, "HTTP_HOST": ""}) is not None
    assert browser_refusal({**own, "HTTP_ORIGIN": "http://127.0.0.1:5001"}) is not None
    assert browser_refusal({**own, "HTTP_SEC_FETCH_SITE": "same-site"}) is not None
    token = "t" * 32
    ok = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json; charset=utf-8"}
    assert control_refusal({**ok, "HTTP_X_LAB_TOKEN": token}, token) is None
    assert control_refusal({"REQUEST_METHOD": "GET", "HTTP_X_LAB_TOKEN": token}, token) is None
    missing = control_refusal(ok, token)
    assert missing is not None and missing[0] == 403 and missing[1].startswith("no lab token")
    refused = control_refusal(
        {**ok, "CONTENT_TYPE": "text/plain", "HTTP_X_LAB_TOKEN": token}, token
    )
    assert refused is not None and refused[0] == 415
