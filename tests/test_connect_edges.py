"""The connect step against endpoints that fail at the edge, each a real server on loopback:
one sentence naming the endpoint and what went wrong, never a botocore traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from edge_servers import NGINX_PAGE, TAG_SOUP_PAGE, XHTML_PAGE, page, serving

from runbook_lib.errors import EndpointNotAws, EndpointTlsError, EndpointUnreachable
from runbook_lib.notebook import short_message
from runbook_lib.params import Params
from runbook_lib.session import connect


def lab_at(url: str) -> Params:
    return Params.from_mapping({"endpoint_url": url})


@pytest.mark.parametrize(
    ("body", "content_type", "status", "botocore_raised"),
    [
        (NGINX_PAGE, "text/html", 200, "KeyError"),
        (TAG_SOUP_PAGE, "text/html", 200, "ResponseParserError"),
        (XHTML_PAGE, "text/html", 403, "ClientError"),
        (NGINX_PAGE, "text/html", 503, "ClientError"),
        (b'{"ok": true}', "application/json", 200, "ResponseParserError"),
        (b'{"message": "no"}', "application/json", 404, "ResponseParserError"),
    ],
    ids=["html", "html-not-xml", "html-403", "html-503", "json", "json-404"],
)
def test_an_endpoint_that_is_not_aws_is_one_sentence(
    body: bytes, content_type: str, status: int, botocore_raised: str
) -> None:
    with serving(page(body, content_type, status)) as url, pytest.raises(EndpointNotAws) as err:
        connect(lab_at(url))
    assert type(err.value.__cause__).__name__ == botocore_raised
    assert str(err.value) == (
        f"{url} is not an AWS endpoint: it answered sts get-caller-identity with something else "
        f"(HTTP {status}, {content_type}); check that endpoint_url is a lab's address "
        "(python -m runbook_lib.lab serve)."
    )
    line = short_message(err.value)
    assert line.startswith("EndpointNotAws: ") and "\n" not in line


def test_a_bad_certificate_keeps_the_tls_reason(tmp_path: Path) -> None:
    with serving(page(NGINX_PAGE), tls_dir=tmp_path) as url, pytest.raises(EndpointTlsError) as err:
        connect(lab_at(url))
    assert str(err.value) == (
        f"TLS with {url} failed: certificate verify failed: self-signed certificate; "
        "a lab serves plain http://, so check endpoint_url."
    )
    assert isinstance(err.value, EndpointUnreachable)


def test_https_to_a_plain_http_server_keeps_the_tls_reason() -> None:
    with serving(page(NGINX_PAGE)) as url:
        https = url.replace("http://", "https://")
        with pytest.raises(EndpointTlsError, match=r"failed: (wrong version number|record layer)"):
            connect(lab_at(https))


def test_a_closed_port_says_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(EndpointUnreachable) as err:
            connect(lab_at(url))
    assert str(err.value) == (
        f"cannot reach {url}: connection refused. Is the lab still serving there?"
    )


@pytest.mark.notebook
@pytest.mark.parametrize("tls", [False, True], ids=["html", "self-signed-tls"])
def test_the_cli_stops_in_connect_with_the_sentence(tmp_path: Path, tls: bool) -> None:
    """The whole path: papermill, the notebook's one-line error display, the CLI's summary."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    with serving(page(NGINX_PAGE), tls_dir=tmp_path if tls else None) as url:
        cmd = [sys.executable, "-m", "runbook_lib", "run", "--no-html"]
        proc = subprocess.run(
            [*cmd, "--out", str(tmp_path / "out"), "-p", f"endpoint_url={url}"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    failed = [line for line in proc.stderr.splitlines() if "FAILED at step" in line]
    expected = (
        f"FAILED at step 'connect': EndpointTlsError: TLS with {url} failed: certificate verify "
        "failed: self-signed certificate;"
        if tls
        else f"FAILED at step 'connect': EndpointNotAws: {url} is not an AWS endpoint:"
    )
    assert len(failed) == 1 and expected in failed[0], proc.stderr
