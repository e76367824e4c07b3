"""The runbook's parameters: one contract for the notebook, ``params/*.yaml`` and the lab.

Values are validated once, here, before anything talks to AWS. Every mistake gets one sentence
that names the parameter and says what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: The account the lab seeds when ``account_id`` is empty (moto's default account).
LAB_DEFAULT_ACCOUNT = "123456789012"

BACKENDS = ("lab", "aws")
SCOPES = ("workshop", "least-privilege")
MAX_TIMEOUT_S = 3600.0

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_PROFILE = re.compile(r"^[A-Za-z0-9_.@+=,-]{1,128}$")
_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?$")
_ECS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_IAM_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}$")
_POLICY_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,128}$")
_DDB_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
# An IAM role ARN (AWS-FACTS §9, §10): a partition, IAM's empty region, a 12-digit account, an
# optional path ("/" ... "/", printable ASCII) and a role name (roleNameType).
_ROLE_ARN = re.compile(
    r"^arn:(aws(?:-[a-z]+)*):iam::([0-9]{12}):role/(?:[!-~]{0,510}/)?[\w+=,.@-]{1,64}$", re.ASCII
)


class ParameterError(ValueError):
    """A parameter has a value the runbook cannot use. The message is one sentence."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Params:
    """Validated runbook parameters (defaults: the workshop's names, the embedded lab)."""

    backend: str = "lab"
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
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise ParameterError(
                unknown[0],
                f"unknown parameter {unknown[0]!r} in {source}; "
                f"allowed: {', '.join(PARAMETER_NAMES)}.",
            )
        merged = {**{n: getattr(_DEFAULTS, n) for n in PARAMETER_NAMES}, **values}
        for name in PARAMETER_NAMES:
            _check(name, merged[name], merged)
        clean = dict(merged)
        clean["timeout_s"] = float(merged["timeout_s"])
        clean["endpoint_url"] = merged["endpoint_url"].rstrip("/")
        return cls(**clean, source=source)


def _fail(name: str, allowed: str, value: Any) -> ParameterError:
    return ParameterError(name, f"parameter {name!r} must be {allowed}; got {value!r}.")


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
    if not isinstance(value, str):
        # YAML reads 123456789012 or true as a number or a boolean: say how to keep it text.
        raise _fail(name, f"{allowed}, as text (in YAML, quote it)", value)
    if value == "" and optional:
        pass
    elif name == "backend":
        if value not in BACKENDS:
            raise _fail(name, allowed, value)
    elif name == "policy_scope":
        if value not in SCOPES:
            raise _fail(name, allowed, value)
    elif pattern is not None and not pattern.match(value):
        raise _fail(name, allowed, value)
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


# name -> (what is allowed, pattern, empty allowed)
_RULES: dict[str, tuple[str, re.Pattern[str] | None, bool]] = {
    "backend": ("'lab' or 'aws'", None, False),
    "region": ("an AWS region name such as 'us-west-2'", _REGION, False),
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


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a ``params/*.yaml`` file into a mapping (not yet validated).

    Raises :class:`ParameterError` with one sentence when the file cannot be used.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(
            "params", f"cannot read params file {str(p)!r}: {exc.strerror}."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParameterError(
            "params", f"params file {str(p)!r} is not valid YAML{where}."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(
            "params", f"params file {str(p)!r} must hold a mapping of parameter names to values."
        )
    return {str(k): v for k, v in data.items()}


def params_from_file(path: str | Path, **overrides: Any) -> Params:
    """Load and validate a params file; ``overrides`` win over the file's values."""
    values = {**load_params_file(path), **overrides}
    return Params.from_mapping(values, source=str(path))


def replace(params: Params, **changes: Any) -> Params:
    """A validated copy of ``params`` with ``changes`` applied."""
    values = {**params.public_dict(), **changes}
    return Params.from_mapping(values, source=params.source)


__all__ = [
    "BACKENDS",
    "LAB_DEFAULT_ACCOUNT",
    "PARAMETER_NAMES",
    "SCOPES",
    "ParameterError",
    "Params",
    "load_params_file",
    "params_from_file",
    "replace",
    "role_account",
]
