"""The rooms of runbook_lib and the directions their imports may take, read from the source: a
wrong arrow fails here, not in a review.

The rules are this file's data (``ROOMS``, ``MAY_IMPORT``, ``THIRD_PARTY``, ``LAB_DOORS``);
ARCHITECTURE.md's "Import directions" table is written from them (:func:`rooms_table`) and a test
checks that the document holds exactly that table, so the two cannot say different things.
Every import counts: at the top, inside a function, under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "runbook_lib"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"

#: Every module of runbook_lib belongs to one room (a package: every module under it).
ROOMS: dict[str, tuple[str, ...]] = {
    "shared": ("blocks", "shows", "errors", "lab_keys", "speedups", "gate"),
    "core": (
        "params",
        "regions",
        "partitions",
        "carts",
        "access_denied",
        "policy",
        "iam_eval",
        "iam_conditions",
        "permissions",
    ),
    "display": ("display",),
    "record": ("record", "history"),
    "client factory": ("session",),
    "AWS edges": (
        "exists",
        "iam",
        "writes",
        "plan",
        "ecs",
        "logs",
        "diagnose",
        "stopped",
        "watch",
        "dynamo",
        "preflight",
    ),
    "steps": ("__init__", "runbook", "notebook"),
    "entry points": ("cli", "__main__", "kernel", "shipped"),
    "the fleet": ("fleet",),
    "the lab": ("lab",),
}

#: The rooms each room's modules may import from (besides its own room).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "shared": (),
    "core": ("shared",),
    "display": ("shared",),
    "record": ("shared",),
    "client factory": ("core", "shared", "the lab"),
    "AWS edges": ("core", "shared", "display"),
    "steps": ("core", "shared", "display", "record", "client factory", "AWS edges"),
    "entry points": ("core", "shared", "record", "client factory", "the fleet"),
    "the fleet": ("core", "shared", "record", "entry points", "the lab"),
    "the lab": ("core", "shared"),
}

#: The only modules outside the lab that import it: a run's lab in its kernel (``session``), and
#: the fleet, which starts one lab for all its lab targets before any kernel runs (``fleet.lab``),
#: checks a target's scenario against the lab's list (``fleet.targets``) and reports the lab's
#: start-up error (``fleet.engine``).
LAB_DOORS = frozenset(
    {
        "runbook_lib.session",
        "runbook_lib.fleet.lab",
        "runbook_lib.fleet.targets",
        "runbook_lib.fleet.engine",
    }
)


@dataclass(frozen=True)
class ThirdParty:
    package: str
    only_in: tuple[str, ...]  # modules or packages (``runbook_lib.x``)
    why: str


#: Third-party packages only some modules may import.
THIRD_PARTY = (
    ThirdParty("ipywidgets", ("runbook_lib.display",), "the live views and the Apply button"),
    ThirdParty(
        "boto3",
        ("runbook_lib.session", "runbook_lib.lab"),
        "clients are made by the client factory and passed in; the lab's scenarios set up "
        "accounts through its own API",
    ),
)

#: What the core may import besides the standard library and its own room and ``shared``: PyYAML
#: (params files), and pandas only lazily (a result's table, built when shown; type hints).
CORE_THIRD_PARTY = frozenset({"yaml"})
CORE_LAZY_THIRD_PARTY = frozenset({"pandas"})


@dataclass(frozen=True)
class Import:
    name: str  # the module imported (``a.b`` for ``from a import b`` when ``a.b`` is a module)
    lazy: bool  # inside a function or under ``if TYPE_CHECKING:``: not run when the module is


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    as_path = PACKAGE.parent / Path(*dotted.split("."))
    return as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists()


def imports_of(path: Path) -> list[Import]:
    """Every module ``path`` imports, marked lazy when the import is inside a function or for
    the type checker only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (
                lazy
                or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                or (isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING")
            )
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    module = f"{base}.{child.module}" if child.module else base
                else:
                    module = child.module or ""
                found.append(Import(module, lazy))
                for alias in child.names:
                    if _is_module(f"{module}.{alias.name}"):
                        found.append(Import(f"{module}.{alias.name}", lazy))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> dict[str, list[Import]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def is_ours(name: str) -> bool:
    return name == "runbook_lib" or name.startswith("runbook_lib.")


def room_of(module: str) -> str:
    """The room of ``runbook_lib.x[.y]``; the package itself is ``__init__``."""
    rest = module.split(".")[1] if "." in module else "__init__"
    for room, names in ROOMS.items():
        if rest in names:
            return room
    raise AssertionError(f"{module} is in no room: add it to ROOMS (and ARCHITECTURE.md follows)")


def top(name: str) -> str:
    return name.split(".")[0]


def wrong_arrows(may_import: dict[str, tuple[str, ...]] = MAY_IMPORT) -> list[str]:
    wrong = []
    for module, imported in graph().items():
        room = room_of(module)
        allowed = {room, *may_import[room]}
        for imp in imported:
            if is_ours(imp.name):
                if imp.name == "runbook_lib":
                    continue  # ``from runbook_lib import x`` is counted as ``runbook_lib.x``
                target = room_of(imp.name)
                if target not in allowed:
                    wrong.append(f"{module} ({room}) -> {imp.name} ({target})")
                elif target == "the lab" and room != "the lab" and module not in LAB_DOORS:
                    wrong.append(f"{module} -> {imp.name}: only {sorted(LAB_DOORS)} import the lab")
            elif room == "core" and top(imp.name) not in sys.stdlib_module_names:
                if top(imp.name) in CORE_THIRD_PARTY:
                    continue
                if top(imp.name) in CORE_LAZY_THIRD_PARTY and imp.lazy:
                    continue
                wrong.append(f"{module} (core) -> {imp.name}{'' if imp.lazy else ' at the top'}")
    return wrong


def third_party_users(package: str) -> set[str]:
    return {m for m, imported in graph().items() if any(top(i.name) == package for i in imported)}


def allowed_users(rule: ThirdParty) -> set[str]:
    users = set()
    for module in graph():
        for where in rule.only_in:
            if module == where or module.startswith(f"{where}."):
                users.add(module)
    return users


def _file(module: str) -> str:
    """``runbook_lib.fleet.lab`` -> ``fleet/lab.py``; a package -> ``fleet/``."""
    dotted = module.removeprefix("runbook_lib.")
    if (PACKAGE / Path(*dotted.split("."))).is_dir():
        return f"`{dotted.replace('.', '/')}/`"
    return f"`{dotted.replace('.', '/')}.py`"


def rooms_table() -> str:
    """ARCHITECTURE.md's import-directions table, written from the rules above."""
    lines = [
        "| room | modules | may import from (besides its own room) |",
        "| --- | --- | --- |",
    ]
    for room in ROOMS:
        modules = ", ".join(_file(f"runbook_lib.{n}") for n in ROOMS[room])
        deps = ", ".join(MAY_IMPORT[room]) or "nothing of ours"
        if room == "core":
            deps += "; of the rest, the standard library, PyYAML, and pandas only lazily"
        lines.append(f"| {room} | {modules} | {deps} |")
    lines.append("")
    doors = ", ".join(_file(d) for d in sorted(LAB_DOORS))
    lines.append(f"- Only {doors} may import the lab from outside it.")
    for rule in THIRD_PARTY:
        where = " and ".join(_file(w) for w in rule.only_in)
        lines.append(f"- Only {where} may import {rule.package}: {rule.why}.")
    lines.append(
        "- Lazily means inside a function or under `if TYPE_CHECKING:`; every other rule counts "
        "those imports too."
    )
    return "\n".join(lines) + "\n"


BEGIN = "<!-- import directions: written from tests/test_layers.py's rules -->\n"
END = "<!-- end of import directions -->\n"


def test_every_module_has_a_room() -> None:
    for module in graph():
        room_of(module)


def test_no_import_goes_the_wrong_way() -> None:
    """The core imports no boto3, session, display or lab; an edge never imports a step; the
    lab imports nothing from the steps or display; only the doors import the lab."""
    assert wrong_arrows() == []


def test_third_party_packages_stay_in_their_modules() -> None:
    for rule in THIRD_PARTY:
        extra = third_party_users(rule.package) - allowed_users(rule)
        assert extra == set(), f"{rule.package} is imported by {sorted(extra)}"
    assert third_party_users("ipywidgets") == {"runbook_lib.display"}


def test_the_architecture_document_holds_these_rules() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"ARCHITECTURE.md lacks the markers {BEGIN!r}, {END!r}"
    held = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert held == rooms_table(), "ARCHITECTURE.md's table is out of date; write:\n" + rooms_table()


def test_the_reader_sees_real_arrows() -> None:
    """The checks above can fail: the reader finds the arrows that exist, lazy ones included,
    and a wrong one is reported."""
    g = graph()
    assert any(i.name.startswith("runbook_lib.lab") and i.lazy for i in g["runbook_lib.session"])
    assert Import("runbook_lib.iam_eval", False) in g["runbook_lib.lab.policies"]
    assert any(top(i.name) == "ipywidgets" for i in g["runbook_lib.display"])
    assert any(i.name == "pandas" and i.lazy for i in g["runbook_lib.iam_eval"])
    assert room_of("runbook_lib.fleet.lab") == "the fleet"
    stricter = {**MAY_IMPORT, "core": ()}
    assert "runbook_lib.policy (core) -> runbook_lib.shows (shared)" in wrong_arrows(stricter)


#: Type stubs: for mypy only, never imported when the runbook runs (they are dev dependencies).
STUB_PACKAGES = ("mypy_boto3_",)


def stub_imports_outside_type_checking(path: Path) -> list[str]:
    """Imports of a stub package in ``path`` that are not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            guarded.update(id(n) for child in node.body for n in ast.walk(child))
    wrong = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith(STUB_PACKAGES) and id(node) not in guarded:
                wrong.append(f"{module_name(path)}:{node.lineno} imports {name}")
    return wrong


def test_type_stubs_are_imported_for_the_type_checker_only() -> None:
    """The AWS edges take clients typed by the mypy_boto3 stubs; running needs none of them."""
    wrong = [
        w for p in sorted(PACKAGE.rglob("*.py")) for w in stub_imports_outside_type_checking(p)
    ]
    assert wrong == []
    users = {
        m
        for m, imported in graph().items()
        if any(i.name.startswith("mypy_boto3_") for i in imported)
    }
    assert {"runbook_lib.ecs", "runbook_lib.iam", "runbook_lib.session"} <= users
