"""Runbook for ECS Immersion Day step 3.2 "Fix IAM Permissions".

Importing this package is cheap and never imports the embedded lab (moto, Flask), boto3 or
pandas: the lab lives in :mod:`runbook_lib.lab` and is imported only when the ``lab`` backend is
used; the rest is imported when a step needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook_lib.params import ParameterError, Params

if TYPE_CHECKING:
    from runbook_lib.runbook import Runbook

__all__ = ["ParameterError", "Params", "Runbook", "notebook_setup"]
__version__ = "0.1.0"


def notebook_setup() -> None:
    """Short, actionable error display in a notebook (see :mod:`runbook_lib.notebook`)."""
    from runbook_lib.notebook import setup

    setup()


def __getattr__(name: str) -> Any:
    if name == "Runbook":
        from runbook_lib.runbook import Runbook

        return Runbook
    raise AttributeError(f"module 'runbook_lib' has no attribute {name!r}")
