"""The embedded workshop lab: a local AWS on loopback that holds the broken account of ECS
Immersion Day step 3.2, closely enough that its API answers read like AWS's.

moto (in server mode) stores the state; the lab seeds the workshop, plays the ECS service
scheduler and the carts app, and offers fault knobs::

    from runbook_lib.lab import Lab, LabConfig

    with Lab.start(config=LabConfig(time_scale=0.005)) as lab:
        os.environ.update(lab.env())      # boto3 and the aws CLI now talk to the lab

Only this package imports moto and Flask; ``import runbook_lib`` does not.
"""

from runbook_lib.lab.config import SERVE_TIME_SCALE, TEST_TIME_SCALE, LabConfig
from runbook_lib.lab.errors import LabConfigError, LabError, PortInUse
from runbook_lib.lab.faults import START_FAILURES, Faults
from runbook_lib.lab.lab import Lab

__all__ = [
    "SERVE_TIME_SCALE",
    "START_FAILURES",
    "TEST_TIME_SCALE",
    "Faults",
    "Lab",
    "LabConfig",
    "LabConfigError",
    "LabError",
    "PortInUse",
]
