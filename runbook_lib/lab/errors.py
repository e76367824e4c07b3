"""What can go wrong when starting or driving a lab, as exceptions a person can act on."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not do what was asked; the message is one sentence."""


class PortInUse(LabError):
    """The requested port on 127.0.0.1 is taken by another program."""


class LabConfigError(LabError, ValueError):
    """A lab setting or fault knob has a value the lab cannot use."""
