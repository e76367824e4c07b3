"""What keeps web pages out of the lab: the checks on Host, Origin, Sec-Fetch-Site and the token.

The lab listens on 127.0.0.1 only, but a page in the learner's browser can send requests there
too, in two ways. DNS rebinding: a page on ``evil.example`` makes its name resolve to 127.0.0.1
and then talks to the lab as if it were its own server; its requests still carry
``Host: evil.example``. Cross-site requests: any page can send a form, an image or a ``fetch``
to ``http://127.0.0.1:PORT``; the browser adds ``Origin`` (and ``Sec-Fetch-Site``) to say where
from. boto3 and the aws CLI send the endpoint's own Host and neither header.

Each check returns the sentence a refusal carries, or None. The server also strips every CORS
header from moto's answers and refuses unsigned AWS requests (:mod:`runbook_lib.lab.server`).
"""

from __future__ import annotations

import hmac
from typing import Any

#: The header the control routes want the lab's token in, and the variable that carries it.
TOKEN_HEADER = "X-Lab-Token"
TOKEN_ENV = "RUNBOOK_LAB_TOKEN"
#: What a browser says in ``Sec-Fetch-Site`` for a request a person made (typed URL) or that a
#: page of the same origin made; anything else came from another site.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def own_hosts(port: str) -> frozenset[str]:
    """The Host values the lab answers: its loopback address and ``localhost``, with its port."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    if port == "80":
        hosts |= {"127.0.0.1", "localhost"}
    return frozenset(hosts)


def browser_refusal(environ: dict[str, Any]) -> str | None:
    """Why a request must be refused because a web page may have sent it; None to serve it.

    A page in the learner's browser can reach 127.0.0.1 too. Against DNS rebinding (a page on
    ``evil.example`` whose name now resolves to 127.0.0.1) the Host must be the lab's own
    address; against cross-site requests (a form or a ``fetch`` from any page) a foreign
    ``Origin`` or a ``Sec-Fetch-Site`` other than same-origin is refused. boto3 and the aws CLI
    send the endpoint's own Host and neither header, so they are never refused.
    """
    port = str(environ.get("SERVER_PORT", ""))
    host = str(environ.get("HTTP_HOST", "")).lower()
    if host not in own_hosts(port):
        return (
            f"the lab answers only requests for http://127.0.0.1:{port} or "
            f"http://localhost:{port}; Host {_quote(host)} is refused (DNS rebinding guard)"
        )
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and str(origin).lower() not in {f"http://{h}" for h in own_hosts(port)}:
        return f"the lab refuses cross-origin requests; Origin {_quote(str(origin))} is refused"
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and str(site).lower() not in _OWN_FETCH_SITES:
        return f"the lab refuses requests from other sites; Sec-Fetch-Site {_quote(str(site))}"
    return None


def _quote(text: str) -> str:
    return repr(text[:100] + ("…" if len(text) > 100 else ""))


def control_refusal(environ: dict[str, Any], token: str) -> tuple[int, str] | None:
    """Why a ``/_lab/`` request must be refused (status, sentence); None to serve it.

    The token stops a page that guessed the port; the JSON content type stops an HTML form or a
    ``text/plain`` fetch, which a browser sends cross-site without asking first.
    """
    sent = str(environ.get("HTTP_X_LAB_TOKEN", ""))
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return 403, (
            f"{'a wrong' if sent else 'no'} lab token: send the {TOKEN_HEADER} header with the "
            f"lab's token ({TOKEN_ENV} in the export lines of 'python -m runbook_lib.lab "
            "serve')"
        )
    method = str(environ.get("REQUEST_METHOD", "GET"))
    kind = str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()
    if method in ("POST", "PUT") and kind != "application/json":
        return 415, (
            "the lab's control routes take a JSON body (Content-Type: application/json); "
            f"got {_quote(kind)}"
        )
    return None


__all__ = ["TOKEN_ENV", "TOKEN_HEADER", "browser_refusal", "control_refusal", "own_hosts"]
