"""The files the package ships beside its code: the notebook and the example parameters.

They live in ``runbook_lib/data/`` and are found with :mod:`importlib.resources`, so an installed
wheel (pip, pipx, a container) runs the runbook from any directory, with no checkout. In a
checkout, ``runbook_lib/data/`` holds links to ``notebooks/`` and ``params/``: those stay the one
source that learners open and nbval checks, and the build copies what the links point at
(``tests/test_install.py`` checks the wheel's copies are the same bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

NOTEBOOK = "fix-iam-permissions.ipynb"
#: The example that runs the embedded lab, as ``make run`` does (``carts-runbook notebook`` names it).
DEFAULT_PARAMS = "lab.yaml"
#: What ``carts-runbook notebook DIR`` copies beside the notebook.
EXAMPLE_PARAMS = ("lab.yaml", "aws.example.yaml")


def shipped(name: str) -> Traversable:
    """One shipped file, by name."""
    return files("runbook_lib").joinpath("data", name)


@contextmanager
def shipped_path(name: str) -> Iterator[Path]:
    """A file-system path to a shipped file for the duration of the block (a real path for an
    installed package; a temporary copy if the package were imported from a zip)."""
    with as_file(shipped(name)) as path:
        yield Path(path)


def source_notebook() -> Path | None:
    """The repository's ``notebooks/`` copy that the shipped notebook links to, in a checkout;
    None in an installed package (it has no source to regenerate)."""
    link = Path(str(shipped(NOTEBOOK)))
    if not link.is_symlink():
        return None
    return link.resolve()
