"""The lab's dummy credentials, here so that both the client factory (``session.py``) and the lab
(``lab/``) can name them without either importing the other. The lab accepts any keys; these are
no secret, and the lab tells its own keys apart from the ones AssumeRole issued."""

from __future__ import annotations

LAB_ACCESS_KEY = "lab"
LAB_SECRET_KEY = "lab"
