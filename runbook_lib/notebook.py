"""Notebook set-up: errors a person can act on show as one line, not a traceback wall.

papermill still sees an error output and stops the run there; only the rendering is shorter.
"""

from __future__ import annotations

from typing import Any

from runbook_lib.errors import RunbookError
from runbook_lib.params import ParameterError
from runbook_lib.record import SecretInOutput

#: How much of an error's text from botocore a line shows.
FOREIGN_TEXT_LIMIT = 300


def _known_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    # BotoCoreError: no credentials or region, an unknown profile, an endpoint that does not
    # answer, a connection closed mid-answer; each says so in a line. ResponseParserError (an
    # answer that is not AWS's, in a step after connect) is no BotoCoreError: named on its own.
    return (
        RunbookError,
        ParameterError,
        SecretInOutput,
        BotoCoreError,
        ClientError,
        ResponseParserError,
    )


def short_message(exc: BaseException) -> str:
    """One line for a known error: its class name and its own sentence."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    text = str(exc)
    if not isinstance(exc, RunbookError | ParameterError | SecretInOutput):
        # botocore's own text can hold a whole answer body (ResponseParserError): one line, cut.
        text = " ".join(text.split())
        if len(text) > FOREIGN_TEXT_LIMIT:
            text = text[: FOREIGN_TEXT_LIMIT - 1] + "…"
    if isinstance(exc, ConnectionError | HTTPClientError):
        text += " (is the endpoint up? a lab started elsewhere may have stopped)"
    return f"{type(exc).__name__}: {text}"


def setup() -> None:
    """Install the short error display in the running IPython kernel (no-op elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(
        self: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None
    ) -> list[str]:
        stb = [f"\x1b[1;31m{short_message(value)}\x1b[0m"]
        self._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc(_known_errors(), handler)
