"""The runbook's parameters: one contract for the notebook, ``params/*.yaml`` and the lab.

Values are validated once, here, before anything talks to AWS. Every mistake gets one sentence
that names the parameter and says what is allowed.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

#: The account the lab seeds when ``account_id`` is empty (moto's default account).
LAB_DEFAULT_ACCOUNT = "123456789012"

#: Where the runbook's AWS calls go: the embedded (or a served) lab, or AWS.
Backend = Literal["lab", "aws"]
BACKENDS: tuple[Backend, ...] = ("lab", "aws")
SCOPES = ("workshop", "least-privilege")
MAX_TIMEOUT_S = 3600.0

# Whole strings, ASCII only: re.fullmatch leaves no trailing newline past "$", and re.ASCII keeps
# \w and \d from accepting other scripts' letters and digits (fullwidth digits are \d otherwise).
# Region names are lower case ASCII; each partition's regionRegex (partitions.py) decides the rest.
_REGION_CHARS = re.compile(r"[a-z0-9-]{1,50}", re.ASCII)
_ACCOUNT = re.compile(r"[0-9]{12}", re.ASCII)
_PROFILE = re.compile(r"[A-Za-z0-9_.@+=,-]{1,128}", re.ASCII)
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?", re.ASCII)
# AWS-FACTS §10: ECS clusterName/serviceName "up to 255 letters, numbers, underscores, hyphens";
# IAM roleNameType [\w+=,.@-]{1,64} and policyNameType {1,128}; DynamoDB TableName and
# IndexName [a-zA-Z0-9_.-]{3,255}.
_ECS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}", re.ASCII)
_IAM_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_DDB_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}", re.ASCII)
# An IAM role ARN (AWS-FACTS §9, §10): a partition, IAM's empty region, a 12-digit account, an
# optional path ("/" ... "/", printable ASCII) and a role name (roleNameType).
_ROLE_ARN = re.compile(
    r"arn:(aws(?:-[a-z]+)*):iam::([0-9]{12}):role/(?:[!-~]{0,510}/)?[\w+=,.@-]{1,64}", re.ASCII
)

#: How much of a bad value a message echoes (a value can be any size: a YAML alias bomb, a file).
ECHO_LIMIT = 200
#: The largest params file read (the real ones are under 1 KiB).
MAX_PARAMS_FILE_BYTES = 64 * 1024
#: Names papermill itself injects with ``--inject-paths``; not parameters of ours, not mistakes.
PAPERMILL_NAMES = frozenset({"PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH"})


class ParameterError(ValueError):
    """A parameter has a value the runbook cannot use. The message is one sentence."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Params:
    """Validated runbook parameters (defaults: the workshop's names, the embedded lab)."""

    backend: Backend = "lab"
    region: str = "us-west-2"
    account_id: str = ""
    profile: str = ""
    assume_role_arn: str = ""
    endpoint_url: str = ""
    cluster: str = "retail-store-ecs-cluster"
    service: str = "carts"
    task_role: str = "retailStoreEcsTaskRole"
    execution_role: str = "retailStoreEcsTaskExecutionRole"
    policy_name: str = "CartsDynamoPolicy"
    table: str = "retail-store-ecs-carts"
    index: str = "idx_global_customerId"
    policy_scope: str = "workshop"
    apply: bool | None = None
    rollback: bool = False
    timeout_s: float = 300.0
    # Not a parameter: where the values came from, for messages.
    source: str = field(default="defaults", compare=False, repr=False)

    @property
    def is_lab(self) -> bool:
        return self.backend == "lab"

    @property
    def lab_account_id(self) -> str:
        """The account a lab seeded from these parameters uses (``account_id``, else the account
        of ``assume_role_arn``, else the lab's default)."""
        return self.account_id or role_account(self.assume_role_arn) or LAB_DEFAULT_ACCOUNT

    @property
    def writes(self) -> bool:
        """Whether the run may write to IAM: ``apply`` if set, else only on the lab."""
        return self.apply if self.apply is not None else self.is_lab

    def public_dict(self) -> dict[str, Any]:
        """The parameters as the run record keeps them (none of them is a secret)."""
        return {name: getattr(self, name) for name in PARAMETER_NAMES}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "parameters") -> Params:
        """Validate ``values`` (missing keys take defaults) and build :class:`Params`.

        Raises :class:`ParameterError` on the first mistake, in the order of the contract.
        """
        unknown = sorted((k for k in values if k not in PARAMETER_NAMES), key=str)
        if unknown:
            raise unknown_parameter(unknown[0], source)
        merged = {**{n: getattr(_DEFAULTS, n) for n in PARAMETER_NAMES}, **values}
        for name in PARAMETER_NAMES:
            _check(name, merged[name], merged)
        clean = dict(merged)
        clean["timeout_s"] = float(merged["timeout_s"])
        clean["endpoint_url"] = merged["endpoint_url"].rstrip("/")
        return cls(**clean, source=source)


def unknown_parameter(name: Any, source: str) -> ParameterError:
    """The sentence for a name the contract does not have, with the nearest one it does."""
    import difflib

    text = str(name)
    near = difflib.get_close_matches(text[:ECHO_LIMIT], PARAMETER_NAMES, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ParameterError(
        text,
        f"unknown parameter {echo(text)} in {echo_text(source)}{hint}; "
        f"allowed: {', '.join(PARAMETER_NAMES)}.",
    )


def echo(value: Any) -> str:
    """``repr(value)`` for a message, at most :data:`ECHO_LIMIT` characters, with bounded work.

    A value can be huge (a long string, a structure built from YAML aliases that shares itself
    thousands of times): :mod:`reprlib` looks at a few items per level only.
    """
    import reprlib

    shorter = reprlib.Repr()
    shorter.maxlevel = 3
    shorter.maxlist = shorter.maxtuple = shorter.maxset = shorter.maxfrozenset = 6
    shorter.maxdict = 6
    shorter.maxstring = shorter.maxother = ECHO_LIMIT + 2
    shorter.maxlong = 40
    if isinstance(value, str):
        text = repr(value[: ECHO_LIMIT + 1])
    elif type(value) in (_YamlInt, _YamlFloat):
        text = repr(type(value).__mro__[1](value))  # the number, not the subclass's name
    else:
        text = shorter.repr(value)
    return echo_text(text)


def echo_text(text: str) -> str:
    """``text`` cut to :data:`ECHO_LIMIT` characters (the cut marked with an ellipsis)."""
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 1] + "…"


def _fail(name: str, allowed: str, value: Any) -> ParameterError:
    return ParameterError(name, f"parameter {name!r} must be {allowed}; got {echo(value)}.")


def _number_hint(value: Any) -> str:
    """How to keep a value text when YAML (or papermill's ``-p``) made it a number."""
    text = getattr(value, "yaml_text", None)
    if text is None:
        return "quote it in YAML; papermill's -p makes digits a number, -r keeps them text"
    plain = text.lstrip("+-")
    if isinstance(value, int) and len(plain) > 1 and plain.startswith("0") and plain.isdigit():
        read = f"as the octal number {int(value)}"
    elif isinstance(value, float):
        read = f"as the number {float(value)!r}"
    elif str(int(value)) != text:
        read = f"as the number {int(value)}"
    else:
        read = "as a number"
    return f"YAML reads {echo_text(text)} {read}; quote it: '{echo_text(text)}'"


def _check(name: str, value: Any, all_values: Mapping[str, Any]) -> None:
    spec = _RULES[name]
    allowed, pattern, optional = spec
    if name == "apply":
        if value is not None and not isinstance(value, bool):
            raise _fail(
                name, "true, false or null (null: write on the lab, plan only on AWS)", value
            )
        return
    if name == "rollback":
        if not isinstance(value, bool):
            raise _fail(name, "true or false", value)
        return
    if name == "timeout_s":
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 < value <= MAX_TIMEOUT_S
        )
        if not ok:
            raise _fail(
                name, f"a number of seconds greater than 0 and at most {MAX_TIMEOUT_S:g}", value
            )
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        # YAML reads 123456789012 as a number, 012345670123 as an octal one, 1.10 as 1.1.
        raise ParameterError(
            name,
            f"parameter {name!r} must be {allowed}, as text; got the number {echo(value)} "
            f"({_number_hint(value)}).",
        )
    if not isinstance(value, str):
        raise _fail(name, f"{allowed}, as text", value)
    if value == "" and optional:
        pass
    elif name == "backend":
        if value not in BACKENDS:
            raise _fail(name, allowed, value)
    elif name == "policy_scope":
        if value not in SCOPES:
            raise _fail(name, allowed, value)
    elif name == "region":
        _check_region(value, all_values.get("backend"))
    elif pattern is not None and not pattern.fullmatch(value):
        raise _fail(name, allowed, value)
    if name == "endpoint_url" and value:
        _check_port(value)
    if name == "profile" and value and all_values.get("backend") == "lab":
        raise ParameterError(
            name, "parameter 'profile' is only used with backend 'aws'; leave it empty for the lab."
        )
    if name == "endpoint_url" and value and all_values.get("backend") == "aws":
        # The aws backend signs with real credentials: only AWS's own endpoints get the requests.
        raise ParameterError(
            name,
            "parameter 'endpoint_url' is only used with backend 'lab'; leave it empty for AWS.",
        )
    if name == "assume_role_arn" and value:
        _check_role_partition(value, all_values.get("region"))
        account = all_values.get("account_id")
        if isinstance(account, str) and account and account != role_account(value):
            # The run acts in the role's account; the account check in connect would stop it.
            raise ParameterError(
                name,
                f"parameter 'assume_role_arn' names a role in account {role_account(value)} but "
                f"'account_id' is {account}; they must name the same account.",
            )
    if name == "execution_role" and value and value == all_values.get("task_role"):
        raise ParameterError(
            name,
            "parameter 'execution_role' must name a role other than 'task_role' "
            f"(both are {value!r}); the workshop uses two roles.",
        )


def _check_port(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise _fail("endpoint_url", "an http(s) URL with a port from 0 to 65535", url) from None


def _check_role_partition(arn: str, region: Any) -> None:
    """The role must live in the region's partition (AWS-FACTS §9): STS in ``us-west-2`` cannot
    hand out an ``arn:aws-cn:`` role."""
    from runbook_lib.partitions import UnknownRegion, partition_for_region, partition_of_arn

    try:
        expected = partition_for_region(str(region))
    except UnknownRegion:
        return  # the region's own check has spoken
    found = partition_of_arn(arn)
    if found != expected:
        raise ParameterError(
            "assume_role_arn",
            f"parameter 'assume_role_arn' is a role in partition {found} but region "
            f"{region!r} is in partition {expected}; give a role ARN that starts with "
            f"'arn:{expected}:iam::'.",
        )


def _check_region(region: str, backend: Any) -> None:
    """A region AWS lists (botocore's partitions), and for the lab one it can hold.

    A lower-case ASCII name in some partition's shape (its ``regionRegex``, AWS-FACTS §9,
    :mod:`runbook_lib.partitions`) that the partition also lists: a well-formed name AWS does not
    have (``us-west-3``) stops here rather than in the HTTP signer or the lab (see
    :mod:`runbook_lib.regions`).
    """
    import difflib

    from runbook_lib import regions
    from runbook_lib.partitions import UnknownRegion, partition_for_region

    allowed = _RULES["region"][0]
    if not _REGION_CHARS.fullmatch(region):
        raise _fail("region", allowed, region)
    try:
        partition = partition_for_region(region)
    except UnknownRegion:
        raise _fail("region", allowed, region) from None
    known = regions.aws_regions()
    if region not in known:
        near = difflib.get_close_matches(region, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ParameterError(
            "region",
            f"parameter 'region' must be a region AWS has, such as 'us-west-2'; got {echo(region)}, "
            f"shaped like a region of partition {partition} but not in botocore's list of "
            f"regions{hint}.",
        )
    if backend != "lab" or region in regions.lab_regions():
        return
    if partition not in regions.LAB_PARTITIONS:
        held = " and ".join(regions.LAB_PARTITIONS)
        why = f"it is in partition {partition}, and the lab holds partitions {held}"
    else:
        why = "botocore has no ECS, DynamoDB, CloudWatch Logs or EC2 endpoint there yet"
    raise ParameterError(
        "region",
        f"parameter 'region' must be a region the lab can hold for backend 'lab', such as "
        f"'us-west-2'; got {echo(region)}: {why}.",
    )


# name -> (what is allowed, pattern, empty allowed)
_RULES: dict[str, tuple[str, re.Pattern[str] | None, bool]] = {
    "backend": ("'lab' or 'aws'", None, False),
    "region": ("an AWS region name such as 'us-west-2'", None, False),
    "account_id": ("empty or a 12-digit AWS account id", _ACCOUNT, True),
    "profile": ("empty or an AWS profile name (letters, digits, _.@+=,-)", _PROFILE, True),
    "assume_role_arn": (
        "empty or an IAM role ARN such as "
        "'arn:aws:iam::111122223333:role/OrganizationAccountAccessRole'",
        _ROLE_ARN,
        True,
    ),
    "endpoint_url": ("empty or an http(s) URL such as 'http://127.0.0.1:5000'", _ENDPOINT, True),
    "cluster": ("an ECS cluster name (1-255 letters, digits, - or _)", _ECS_NAME, False),
    "service": ("an ECS service name (1-255 letters, digits, - or _)", _ECS_NAME, False),
    "task_role": ("an IAM role name (1-64 letters, digits, _+=,.@-)", _IAM_NAME, False),
    "execution_role": ("an IAM role name (1-64 letters, digits, _+=,.@-)", _IAM_NAME, False),
    "policy_name": ("an IAM policy name (1-128 letters, digits, _+=,.@-)", _POLICY_NAME, False),
    "table": ("a DynamoDB table name (3-255 letters, digits, _.-)", _DDB_NAME, False),
    "index": ("a DynamoDB index name (3-255 letters, digits, _.-)", _DDB_NAME, False),
    "policy_scope": ("'workshop' or 'least-privilege'", None, False),
    "apply": ("", None, False),
    "rollback": ("", None, False),
    "timeout_s": ("", None, False),
}

PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Params) if f.name != "source")
_DEFAULTS = Params()
assert set(_RULES) == set(PARAMETER_NAMES)


def role_account(arn: str) -> str:
    """The account of an IAM role ARN ("" when ``arn`` is not one).

    >>> role_account("arn:aws:iam::111122223333:role/OrganizationAccountAccessRole")
    '111122223333'
    """
    m = _ROLE_ARN.fullmatch(arn)
    return m.group(2) if m else ""


# --- YAML ------------------------------------------------------------------------------------


class _YamlInt(int):
    """An int read from YAML, with the text it was read from (for the quote-it hint)."""

    yaml_text: str


class _YamlFloat(float):
    """A float read from YAML, with the text it was read from."""

    yaml_text: str


class _Refused(Exception):
    """A YAML construct a params file may not use: what, where, and what to write instead."""

    def __init__(self, what: str, line: int, instead: str) -> None:
        super().__init__(f"{what} at line {line}; {instead}")


def _loader(text: str) -> Any:
    """A safe YAML loader that refuses duplicate keys, aliases and merge keys.

    PyYAML keeps the last of two equal keys without a word; an alias (``*name``) can build a value
    of any size from a few bytes (the "billion laughs"); a params file needs neither.
    """
    import yaml
    from yaml.nodes import MappingNode

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused("an alias (*name)", mark.line + 1, "write the value out instead")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    line = key_node.start_mark.line + 1
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        raise _Refused("a merge key (<<)", line, "write each key out instead")
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: PyYAML's own error says so
                        break
                    if first is not None:
                        raise _Refused(
                            f"the key {echo(key)} twice", line, f"keep one (line {first})"
                        )
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            number = _YamlInt(super().construct_yaml_int(node))
            number.yaml_text = str(node.value)
            return number

        def construct_yaml_float(self, node: Any) -> Any:
            number = _YamlFloat(super().construct_yaml_float(node))
            number.yaml_text = str(node.value)
            return number

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_value(text: str) -> Any:
    """One ``-p NAME=VALUE`` value, read as YAML the way a params file is.

    Raises :class:`ParameterError` for what a params file may not hold either (an alias).
    """
    import yaml

    try:
        return _loader(text)
    except _Refused as exc:
        raise ParameterError("-p", f"a -p value holds {exc}.") from None
    except yaml.YAMLError:
        return text  # not YAML: the text itself (the parameter's check decides)


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a ``params/*.yaml`` file into a mapping (not yet validated).

    Raises :class:`ParameterError` with one sentence when the file cannot be used: unreadable,
    too large, binary or not UTF-8, not YAML, empty, not a mapping, keys that are not names, a key
    twice, an alias or a merge key.
    """
    import yaml

    p = Path(path)
    where = echo(str(p))

    def refuse(problem: str) -> ParameterError:
        return ParameterError("params", f"params file {where} {problem}.")

    try:
        with p.open("rb") as f:
            raw = f.read(MAX_PARAMS_FILE_BYTES + 1)
    except OSError as exc:
        raise ParameterError(
            "params", f"cannot read params file {where}: {exc.strerror or exc}."
        ) from None
    if b"\0" in raw:
        raise refuse("is binary, not a YAML text file")
    if len(raw) > MAX_PARAMS_FILE_BYTES:
        raise refuse(
            f"is larger than {MAX_PARAMS_FILE_BYTES // 1024} KiB, too large for a params file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("is not UTF-8 text; save it as UTF-8") from None
    try:
        data = _loader(text)
    except _Refused as exc:
        raise refuse(f"holds {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise refuse(f"is not valid YAML{at}") from None
    if data is None:
        raise refuse(
            "is empty; write the parameters it sets (for example 'backend: lab'), "
            "or leave out --params for every default"
        )
    if not isinstance(data, dict):
        raise refuse("must hold a mapping of parameter names to values")
    for key in data:
        if not isinstance(key, str):
            raise refuse(f"has the key {echo(key)}, which is not a parameter name")
    return dict(data)


def params_from_file(path: str | Path, **overrides: Any) -> Params:
    """Load and validate a params file; ``overrides`` win over the file's values."""
    values = {**load_params_file(path), **overrides}
    return Params.from_mapping(values, source=str(path))


def replace(params: Params, **changes: Any) -> Params:
    """A validated copy of ``params`` with ``changes`` applied."""
    values = {**params.public_dict(), **changes}
    return Params.from_mapping(values, source=params.source)


# --- the notebook ------------------------------------------------------------------------------

#: papermill's injected cell starts with this line (``PythonTranslator.comment("Parameters")``,
#: papermill/translators.py; ``parameterize_notebook``'s default comment).
INJECTED_HEADER = "# Parameters"


def injected_names(history: Sequence[Any]) -> list[str]:
    """The names papermill's injected-parameters cell assigned, from the kernel's input history.

    papermill adds a cell tagged ``injected-parameters`` after the ``parameters`` cell: the
    line :data:`INJECTED_HEADER`, then one ``name = literal`` per ``-p``/``-y``/``-f`` value
    (black-formatted when black is installed). The kernel sees no tags, only the cells it ran
    (IPython's ``_ih``), so the newest cell of exactly that shape is the injected one: a comment
    header, then only assignments of literals to plain names. Empty when there is none (a
    JupyterLab session, a run without parameters).
    """
    for source in reversed(history):
        if not isinstance(source, str):
            continue
        lines = source.lstrip().splitlines()
        if not lines or lines[0].strip() != INJECTED_HEADER:
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        names: list[str] = []
        for stmt in tree.body:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and _is_literal(stmt.value)
            ):
                names = []
                break
            names.append(stmt.targets[0].id)
        if names:
            return names
    return []


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def notebook_values(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter values a notebook's namespace holds, plus every name papermill injected.

    An injected name the contract does not know (a typo in ``-p``) is kept, so that
    :meth:`Params.from_mapping` refuses it with the nearest known name.
    """
    values = {n: namespace[n] for n in PARAMETER_NAMES if n in namespace}
    history = namespace.get("_ih")
    if isinstance(history, list):
        for name in injected_names(history):
            if name not in values and name not in PAPERMILL_NAMES:
                values[name] = namespace.get(name)
    return values


__all__ = [
    "BACKENDS",
    "ECHO_LIMIT",
    "LAB_DEFAULT_ACCOUNT",
    "PARAMETER_NAMES",
    "SCOPES",
    "ParameterError",
    "Params",
    "echo",
    "injected_names",
    "load_params_file",
    "notebook_values",
    "params_from_file",
    "parse_value",
    "replace",
    "role_account",
    "unknown_parameter",
]
