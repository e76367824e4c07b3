"""The headless command's start-up and exit speed-ups, in one place, with an off switch.

Each one leans on how a library behaves today (an optional import it tolerates missing, the order
of jupyter_client's readiness check), so an upgrade may break one. ``RUNBOOK_SPEEDUPS=0`` in the
environment turns every one of them off and the command runs the libraries' plain way; the test
suite runs the command both ways, so a broken speed-up shows up as a failure of the run with
them on only. What each buys is measured in BENCHMARKS.md.

- :func:`import_jsonschema`: jsonschema (nbformat's validator) imported without its format
  checkers' packages (no notebook schema uses a format).
- :func:`import_papermill`: papermill imported without its S3 handler (which imports boto3);
  the command never reads or writes ``s3://`` paths.
- :func:`in_kernel`: the headless kernel started without debugpy (no debugger is attached to a
  headless run).
- :func:`freeze_gc`: the garbage collector frozen at exit, so finalisation does not walk every
  object left (papermill's and nbconvert's in the command, moto's in a kernel holding a lab).
- The kernel's readiness check without its final IOPub silence, and its exit polled every
  10 ms (:mod:`runbook_lib.kernel`); the HTML exporter warmed up from the connect step on
  (:mod:`runbook_lib.cli`). Both ask :func:`enabled`.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from types import ModuleType

ENV = "RUNBOOK_SPEEDUPS"


def enabled() -> bool:
    """False when ``RUNBOOK_SPEEDUPS=0`` (or ``off``, ``false``, ``no``) is set."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def import_without(module: str, *optional: str) -> ModuleType:
    """Import ``module`` while the ``optional`` modules it tries to import count as missing.

    A ``None`` entry in ``sys.modules`` makes an import of that name raise ImportError, which
    these libraries catch (the feature goes without). The entries are removed again at once, so
    only the module imported here goes without them; anything importing them later gets them.
    Does nothing special when the speed-ups are off or ``module`` is already imported.
    """
    if not enabled() or module in sys.modules:
        return importlib.import_module(module)
    blocked = [name for name in optional if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        return importlib.import_module(module)
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


#: The optional packages behind jsonschema's format checkers (``iri``, ``duration``, ``color``,
#: ``uri-template``, ...). No notebook schema uses a format, and with ``rfc3987_syntax`` installed
#: (jupyter-events pulls it in) importing jsonschema builds Earley parsers for the ``iri`` formats.
JSONSCHEMA_FORMAT_PACKAGES = (
    "rfc3987_syntax",
    "rfc3987",
    "rfc3986_validator",
    "rfc3339_validator",
    "fqdn",
    "idna",
    "webcolors",
    "jsonpointer",
    "uri_template",
    "isoduration",
)


def import_jsonschema() -> None:
    """jsonschema (nbformat's validator) without the packages of its format checkers."""
    import_without("jsonschema", *JSONSCHEMA_FORMAT_PACKAGES)


def in_kernel() -> None:
    """The headless kernel's own: ipykernel without debugpy, whose import and protocol schema
    are a good part of a kernel's start, for a debugger nobody attaches to a headless run
    (ipykernel then offers none, as when debugpy is not installed)."""
    import_without("ipykernel.debugger", "debugpy")


def import_papermill() -> ModuleType:
    """papermill without its S3 handler (``papermill.s3`` imports boto3 at once, for ``s3://``
    paths this command never uses). jsonschema first (see above)."""
    import_jsonschema()
    return import_without("papermill", "papermill.s3")


def freeze_gc() -> None:
    """Move every object alive now out of the collector's sight, for a process that is ending:
    Python's finalisation then skips full collections over them (papermill's and nbconvert's
    objects in the command, moto's in a kernel holding a lab). Call it at exit only."""
    if enabled():
        gc.freeze()
