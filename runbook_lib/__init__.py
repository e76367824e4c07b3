"""Runbook for ECS Immersion Day step 3.2 "Fix IAM Permissions".

Importing this package is cheap and never imports the embedded lab (moto, Flask): the lab lives in
:mod:`runbook_lib.lab` and is imported only when the ``lab`` backend is used.
"""

from runbook_lib.params import ParameterError, Params

__all__ = ["ParameterError", "Params"]
__version__ = "0.1.0"
