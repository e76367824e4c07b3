"""Project files that must stay in step: environment.yml, pyproject, the notebook's parameters."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from runbook_lib.params import PARAMETER_NAMES, Params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "fix-iam-permissions.ipynb"


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_what_pyproject_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip if not r.startswith("-")}
    assert listed == declared
    assert "-c constraints.txt" in pip and "-e .[dev]" in pip


def test_every_dependency_is_pinned_in_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        _name(line): line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = _name(req)
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert pins["moto"] == "moto==5.2.5"  # the lab relies on this version's internals


def test_notebook_parameters_cell_is_the_contract() -> None:
    import papermill as pm

    found = pm.inspect_notebook(str(NOTEBOOK))
    assert list(found) == list(PARAMETER_NAMES)
    defaults = Params()
    for name, info in found.items():
        assert info["help"], f"parameter {name} has no comment"
        value = eval(info["default"])  # the cell's literal
        assert value == getattr(defaults, name), name


def test_help_notebook_prints_a_useful_page() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOK)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "policy_scope: str" in out and "least-privilege" in out and "timeout_s: float" in out


def test_import_for_the_aws_backend_does_not_import_the_lab() -> None:
    code = (
        "import sys, runbook_lib, runbook_lib.runbook, runbook_lib.session, runbook_lib.cli;"
        "bad=[m for m in ('moto','flask','werkzeug','runbook_lib.lab') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_readme_shows_the_policy_the_permissions_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README's "Permissions it needs" holds `carts-runbook permissions`'s output for the default
    parameters (plan only), so the two cannot drift apart."""
    from runbook_lib import cli

    args = cli.build_parser().parse_args(["permissions"])  # main() less its exit handler
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Permissions it needs\n", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert shown == printed
    assert '"iam:PutRolePolicy"' not in shown  # the plan-only policy
