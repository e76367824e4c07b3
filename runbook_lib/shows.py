"""Results that show themselves: ``_repr_html_`` in JupyterLab, ``__str__`` everywhere else."""

from __future__ import annotations

from typing import Any


class Shows:
    """Mixin: IPython's text/plain is the object's ``__str__`` (a readable log line, not a repr)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # IPython walks the MRO and takes a class's own __repr__ (dataclasses make one) before a
        # base class's _repr_pretty_: put _repr_pretty_ on every subclass itself.
        cls._repr_pretty_ = Shows._repr_pretty_  # type: ignore[method-assign]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))
