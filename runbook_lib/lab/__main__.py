"""``python -m runbook_lib.lab`` (see :mod:`runbook_lib.lab.cli`)."""

from runbook_lib.lab.cli import main

raise SystemExit(main())
