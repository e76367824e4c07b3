"""The fleet: one runbook run per target (an account, a region), on Dask, with one summary.

``carts-runbook fleet --targets FILE --out DIR`` reads and checks a whole targets file
(:mod:`~runbook_lib.fleet.targets`), runs each target's notebook exactly as ``carts-runbook run``
does (:mod:`~runbook_lib.fleet.worker`, on a Dask worker), schedules the targets with Dask's
futures within per-account and per-region bounds (:mod:`~runbook_lib.fleet.engine`), and writes
``DIR/fleet-summary.{json,csv,html}`` (:mod:`~runbook_lib.fleet.summary`).

Importing this package imports neither Dask nor papermill: the command imports them when it runs.
"""

from __future__ import annotations

from runbook_lib.fleet.targets import FleetTargets, Target, TargetsError, load_targets

__all__ = ["FleetTargets", "Target", "TargetsError", "load_targets"]
