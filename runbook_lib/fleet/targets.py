"""The targets file: which accounts a fleet run visits, checked whole before anything runs.

::

    defaults:                 # any runbook parameter, for every target
      backend: aws
      region: us-west-2
      policy_scope: least-privilege
    targets:
      - name: team-01         # unique; the folder DIR/team-01/ holds its run
        assume_role_arn: arn:aws:iam::111122223333:role/OrganizationAccountAccessRole
      - name: team-02
        account_id: "444455556666"
        assume_role_arn: arn:aws:iam::444455556666:role/OrganizationAccountAccessRole

A target's parameters are ``defaults`` overridden by its own keys, validated by the same contract
as a single run (:class:`~runbook_lib.params.Params`). Besides the runbook's parameters a target
(or ``defaults``) may set ``lab_scenario``: which state the lab a lab target starts in its kernel
holds (``already-fixed``, ``execution-role``, ...; see :mod:`runbook_lib.lab.fleet_states`). It is
a key of the targets file, not a runbook parameter: a real account is in whatever state it is in.

Every mistake is one sentence naming the file, the target and the parameter; the first one found
stops the command (exit 2) before any target runs. Nothing here imports boto3, Dask or the lab
(the lab's scenario names are read only when a target names one).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.params import PARAMETER_NAMES, ParameterError, Params, role_account

#: The keys of a targets file.
TOP_KEYS = ("defaults", "targets")
#: Keys a target (or ``defaults``) may have besides the runbook's parameters.
FLEET_KEYS = ("lab_scenario",)
#: A target's name is its folder's name: letters, digits, ``_ . -``, not starting with ``.``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
#: Names the summary's own files use in DIR.
RESERVED = frozenset(
    {"fleet-summary.json", "fleet-summary.csv", "fleet-summary.html", "fleet-summary.ipynb"}
)
#: The largest targets file read (1 MiB holds thousands of targets).
MAX_FILE_BYTES = 1024 * 1024


class TargetsError(ValueError):
    """The targets file cannot be used; the message is one sentence naming target and parameter."""

    def __init__(self, message: str, target: str | None = None, parameter: str | None = None):
        super().__init__(message)
        self.target = target
        self.parameter = parameter


@dataclass(frozen=True)
class Target:
    """One run of the fleet: a name, validated parameters and, for a lab target, its scenario."""

    name: str
    params: Params
    lab_scenario: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the run: every parameter and the scenario (resume compares these)."""
        values = self.params.public_dict()
        if self.lab_scenario:
            values["lab_scenario"] = self.lab_scenario
        return values

    @property
    def parameters_sha256(self) -> str:
        """A hash of :attr:`settings` (canonical JSON): a run with the same hash ran the same."""
        text = json.dumps(self.settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def account(self) -> str:
        """The account the target names (``account_id``, else its role's), or ""."""
        p = self.params
        if p.is_lab and not p.endpoint_url:
            return p.lab_account_id
        return p.account_id or role_account(p.assume_role_arn)

    @property
    def account_key(self) -> str:
        """What shares AWS's per-account API rates with this target (the throttling bound).

        A lab started in the target's kernel is its own world; a served lab and AWS are shared
        by every target that reaches the same account through them. Without a known account, the
        credentials decide it (the profile).
        """
        p = self.params
        if p.is_lab and not p.endpoint_url:
            return f"lab in the kernel of {self.name}"
        where = p.endpoint_url or "aws"
        who = self.account or f"profile {p.profile or '(default chain)'}"
        return f"{where} {who}"

    @property
    def region_key(self) -> str:
        """What shares AWS's per-region API rates with this target (the per-region bound)."""
        return f"{self.params.endpoint_url or 'aws'} {self.params.region}"


@dataclass(frozen=True)
class FleetTargets:
    """A checked targets file."""

    path: Path
    targets: tuple[Target, ...]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]


def load_targets(path: str | Path, allow_aws_apply: bool = False) -> FleetTargets:
    """Read and check the whole targets file at ``path``.

    ``allow_aws_apply`` is the command's ``--apply``: without it a target with backend ``aws`` and
    ``apply: true`` is refused (the fleet writes to real accounts only when asked twice).
    Raises :class:`TargetsError` with one sentence for the first mistake.
    """
    p = Path(path)
    return parse_targets(_read(p), str(p), p, allow_aws_apply)


def parse_targets(
    data: Any, where: str, path: Path | None = None, allow_aws_apply: bool = False
) -> FleetTargets:
    """Check ``data`` (the file's YAML, read) as a targets file called ``where`` in messages."""
    if not isinstance(data, dict):
        raise TargetsError(
            f"targets file {where!r} must hold a mapping with 'defaults' and 'targets'."
        )
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise TargetsError(
            f"targets file {where!r} has the unknown key {unknown[0]!r}; "
            f"allowed: {', '.join(TOP_KEYS)}."
        )
    defaults = data.get("defaults")
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        raise TargetsError(
            f"targets file {where!r}: 'defaults' must be a mapping of parameter names to values."
        )
    for key in defaults:
        _check_key(key, where, "defaults", allow_name=False)
    items = data.get("targets")
    if not isinstance(items, list) or not items:
        raise TargetsError(
            f"targets file {where!r} must list its targets under 'targets' "
            "(each a mapping with a 'name')."
        )
    targets: list[Target] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(items, start=1):
        target = _target(item, index, defaults, where, allow_aws_apply)
        folded = target.name.lower()
        if folded in seen:
            raise TargetsError(
                f"targets file {where!r}: target #{index} has the name {target.name!r}, already "
                f"used by another target ({seen[folded]!r}); each target needs its own name "
                "(it names the target's folder).",
                target.name,
                "name",
            )
        seen[folded] = target.name
        targets.append(target)
    _check_scenarios(targets, where)
    return FleetTargets(path or Path(where), tuple(targets))


def _target(
    item: Any, index: int, defaults: Mapping[str, Any], where: str, allow_aws_apply: bool
) -> Target:
    if not isinstance(item, dict):
        raise TargetsError(
            f"targets file {where!r}: target #{index} must be a mapping with a 'name' and its "
            "parameters.",
            parameter="name",
        )
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED:
        label = f"target #{index}"
        shown = "no name" if name is None else f"the name {name!r}"
        raise TargetsError(
            f"targets file {where!r}: {label} has {shown}; parameter 'name' must be 1-64 "
            "letters, digits, '_', '.' or '-', starting with a letter or digit (it names the "
            "target's folder).",
            parameter="name",
        )
    for key in item:
        _check_key(key, where, f"target {name!r}", allow_name=True)
    merged = {**defaults, **{k: v for k, v in item.items() if k != "name"}}
    scenario = merged.pop("lab_scenario", "")
    try:
        params = Params.from_mapping(merged, source=f"target {name!r}")
    except ParameterError as exc:
        origin = "" if exc.name in item or exc.name not in defaults else " (from 'defaults')"
        raise TargetsError(
            f"targets file {where!r}, target {name!r}{origin}: {exc}", name, exc.name
        ) from None
    if not params.is_lab and params.apply is True and not allow_aws_apply:
        raise TargetsError(
            f"targets file {where!r}, target {name!r}: parameter 'apply' is true for backend "
            "'aws', which writes to a real account; give the command --apply to allow it, or "
            "set apply to false to plan only.",
            name,
            "apply",
        )
    if scenario != "" and (
        not isinstance(scenario, str) or not params.is_lab or params.endpoint_url
    ):
        raise TargetsError(
            f"targets file {where!r}, target {name!r}: 'lab_scenario' chooses the state of the "
            "lab a target starts in its kernel (backend 'lab', empty 'endpoint_url'); got "
            f"{scenario!r} for backend {params.backend!r}"
            + (f" and endpoint_url {params.endpoint_url!r}" if params.endpoint_url else "")
            + ".",
            name,
            "lab_scenario",
        )
    return Target(name=name, params=params, lab_scenario=scenario)


def _check_key(key: Any, where: str, owner: str, allow_name: bool) -> None:
    allowed = (*(("name",) if allow_name else ()), *PARAMETER_NAMES, *FLEET_KEYS)
    if key not in allowed:
        import difflib

        near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        target = owner[len("target ") :].strip("'") if owner.startswith("target ") else None
        raise TargetsError(
            f"targets file {where!r}, {owner}: unknown parameter {key!r}{hint}; allowed: "
            f"{', '.join(allowed)}.",
            target,
            str(key),
        )


def _check_scenarios(targets: list[Target], where: str) -> None:
    named = [t for t in targets if t.lab_scenario]
    if not named:
        return
    from runbook_lib.lab.fleet_states import LAB_STATES  # imports the lab: lab targets only

    for t in named:
        if t.lab_scenario not in LAB_STATES:
            raise TargetsError(
                f"targets file {where!r}, target {t.name!r}: 'lab_scenario' must be one of "
                f"{', '.join(LAB_STATES)}; got {t.lab_scenario!r}.",
                t.name,
                "lab_scenario",
            )


def _read(path: Path) -> Any:
    """The file's YAML, refusing what a targets file cannot mean (a key given twice)."""
    import yaml

    where = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TargetsError(
            f"cannot read targets file {where!r}: {exc.strerror or exc}.", parameter="--targets"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise TargetsError(
            f"targets file {where!r} is larger than {MAX_FILE_BYTES // 1024} KiB.",
            parameter="--targets",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetsError(
            f"targets file {where!r} is not UTF-8 text; save it as UTF-8.", parameter="--targets"
        ) from None
    try:
        return _load_yaml(text)
    except _TwiceError as exc:
        raise TargetsError(f"targets file {where!r} {exc}.", parameter=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise TargetsError(
            f"targets file {where!r} is not valid YAML{at}.", parameter="--targets"
        ) from None


class _TwiceError(Exception):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"has the key {key!r} twice at line {line} (first at line {first})")
        self.key = key


def _load_yaml(text: str) -> Any:
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently: a target would run with a value nobody meant)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error says so
                    break
                if first is not None:
                    raise _TwiceError(str(key), line, first)
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
