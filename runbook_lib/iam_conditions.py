"""Wildcard patterns, policy variables and condition operators for :mod:`runbook_lib.iam_eval`.

Each rule follows the IAM User Guide:

- Patterns: ``*`` matches any run of characters (``/`` and ``:`` included), ``?`` exactly one.
- Policy variables (``Version`` 2012-10-17 only): ``${key}`` takes the request-context value of
  ``key`` (keys are case-insensitive), ``${key, 'default'}`` falls back to ``default``, and
  ``${*}``, ``${?}``, ``${$}`` are the literal characters. A variable that cannot be resolved (key
  absent, or multivalued) has no value, so nothing is equal or like it ("Policy variables with
  no value"): the pattern or condition value holding it matches nothing (and so, under
  ``NotResource`` or a negated operator, excludes nothing).
- Conditions ("Condition operators"): several values for one key are ORed; for a negated
  operator none of them may match. A key absent from the request makes the condition false,
  except that negated operators are then true, ``...IfExists`` is true, ``Null`` tests presence,
  ``ForAllValues`` is true and ``ForAnyValue`` is false. An operator not listed here raises
  :class:`PolicyError`: a condition is never silently true.
- A plain (unqualified) operator given a multivalued request key matches if any request value
  matches; its negated form is the exact complement. Use ``ForAllValues``/``ForAnyValue`` to say
  which is meant, as the IAM User Guide asks for multivalued keys.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any


class PolicyError(ValueError):
    """A policy document IAM would reject, or a construct this evaluator cannot decide."""


# A run of pattern text: (wildcards active, text). Text substituted from a variable or written
# as ${*} / ${?} is literal, so the flag travels with it.
GlobPart = tuple[bool, str]
_MULTI = (list, tuple, set, frozenset)


@lru_cache(maxsize=4096)
def _glob_regex(parts: tuple[GlobPart, ...], ignore_case: bool, arn: bool) -> re.Pattern[str]:
    # arn=True is ArnLike: each of the first five colon-delimited components is matched on its
    # own, so a wildcard there cannot span ':'; the sixth (resource) component may.
    out: list[str] = []
    colons = 0
    for wild, text in parts:
        for ch in text:
            bounded = arn and colons < 5
            if wild and ch == "*":
                out.append("[^:]*" if bounded else ".*")
            elif wild and ch == "?":
                out.append("[^:]" if bounded else ".")
            else:
                out.append(re.escape(ch))
            colons += ch == ":"
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class _Variable:
    key: str
    default: str | None


_VARIABLE = re.compile(r"\$\{((?:[^}']|'(?:[^']|'')*')*)\}")
_VARIABLE_BODY = re.compile(r"\s*([^\s,'{}]+)\s*(?:,\s*'((?:[^']|'')*)'\s*)?")


@dataclass(frozen=True)
class Pattern:
    """A policy string: ``*``/``?`` wildcards and, when enabled, ``${...}`` policy variables."""

    text: str
    parts: tuple[GlobPart | _Variable, ...]

    def resolve(self, ctx: RequestContext) -> tuple[GlobPart, ...] | None:
        """The pattern with its variables replaced, or None if one has no value."""
        out: list[GlobPart] = []
        for part in self.parts:
            if isinstance(part, _Variable):
                value = ctx.variable(part.key)
                if value is None:
                    value = part.default
                if value is None:
                    return None
                out.append((False, value))
            else:
                out.append(part)
        return tuple(out)

    def matches(
        self, value: str, ctx: RequestContext, *, ignore_case: bool = False, arn: bool = False
    ) -> bool:
        """Whether ``value`` matches the whole pattern (case-sensitive unless ``ignore_case``)."""
        parts = self.resolve(ctx)
        if parts is None:
            return False
        return _glob_regex(parts, ignore_case, arn).fullmatch(value) is not None

    def literal(self, ctx: RequestContext) -> str | None:
        """The resolved text with wildcards taken literally (for the ``...Equals`` operators)."""
        parts = self.resolve(ctx)
        return None if parts is None else "".join(text for _, text in parts)


@lru_cache(maxsize=4096)
def parse_pattern(text: str, variables: bool) -> Pattern:
    """Parse ``text`` once; ``variables`` is True under ``Version`` 2012-10-17.

    >>> parse_pattern("table/${aws:username}", True).parts
    ((True, 'table/'), _Variable(key='aws:username', default=None))
    """
    if not variables or "${" not in text:
        return Pattern(text, ((True, text),))
    parts: list[GlobPart | _Variable] = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        if m.start() > pos:
            parts.append((True, text[pos : m.start()]))
        body = m.group(1).strip()
        if body in ("*", "?", "$"):
            parts.append((False, body))
        else:
            var = _VARIABLE_BODY.fullmatch(m.group(1))
            if var is None:
                raise PolicyError(f"malformed policy variable {m.group(0)!r} in {text!r}")
            default = None if var.group(2) is None else var.group(2).replace("''", "'")
            parts.append(_Variable(var.group(1).lower(), default))
        pos = m.end()
    if pos < len(text):
        parts.append((True, text[pos:]))
    return Pattern(text, tuple(parts))


def as_string(value: Any) -> str:
    """A request-context scalar as IAM compares it in string operators (``True`` -> ``"true"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


class RequestContext:
    """The request context: condition keys (case-insensitive) and their values.

    A value is a scalar (str, bool, int, float, datetime, bytes) or, for a multivalued key, a
    list of them. ``None`` or an empty list counts as absent.
    """

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {}
        for key, value in (context or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"context keys are strings, not {key!r}")
            if key.lower() in self._values:
                raise ValueError(f"context key {key!r} appears twice (keys are case-insensitive)")
            self._values[key.lower()] = value

    def values(self, key: str) -> tuple[Any, ...] | None:
        """The key's values, or None when the key is absent, null or an empty list."""
        value = self._values.get(key.lower())
        if value is None:
            return None
        if isinstance(value, _MULTI):
            return tuple(value) or None
        return (value,)

    def variable(self, key: str) -> str | None:
        """The value a policy variable takes; None when absent or multivalued."""
        value = self._values.get(key.lower())
        if value is None or isinstance(value, _MULTI):
            return None
        return as_string(value)


# ---- operator families: parse a policy value once, match one request value against it.

_Matcher = Callable[[Any, Any, RequestContext], bool]


def _scalar(value: Any, op: str) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    raise PolicyError(f"{op}: condition values are strings, numbers or booleans, not {value!r}")


def _parse_string(value: Any, op: str, variables: bool) -> Pattern:
    return parse_pattern(as_string(_scalar(value, op)), variables)


def _str_equals(v: Any, p: Pattern, ctx: RequestContext) -> bool:
    return as_string(v) == p.literal(ctx)


def _str_equals_ic(v: Any, p: Pattern, ctx: RequestContext) -> bool:
    lit = p.literal(ctx)
    return lit is not None and as_string(v).lower() == lit.lower()


def _str_like(v: Any, p: Pattern, ctx: RequestContext) -> bool:
    return p.matches(as_string(v), ctx)


def _arn_like(v: Any, p: Pattern, ctx: RequestContext) -> bool:
    return isinstance(v, str) and p.matches(v, ctx, arn=True)


def _to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _parse_number(value: Any, op: str, variables: bool) -> Decimal:
    number = _to_decimal(_scalar(value, op))
    if number is None:
        raise PolicyError(f"{op}: {value!r} is not a number")
    return number


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_date(value: Any, op: str, variables: bool) -> datetime:
    parsed = _to_datetime(_scalar(value, op))
    if parsed is None:
        raise PolicyError(f"{op}: {value!r} is not an ISO 8601 date or epoch seconds")
    return parsed


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _parse_bool(value: Any, op: str, variables: bool) -> bool:
    parsed = _to_bool(_scalar(value, op))
    if parsed is None:
        raise PolicyError(f"{op}: {value!r} is not true or false")
    return parsed


def _to_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except binascii.Error:
        return None


def _parse_binary(value: Any, op: str, variables: bool) -> bytes:
    parsed = _to_bytes(_scalar(value, op))
    if parsed is None:
        raise PolicyError(f"{op}: {value!r} is not base64")
    return parsed


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_network(value: Any, op: str, variables: bool) -> _Network:
    try:
        return ipaddress.ip_network(str(_scalar(value, op)), strict=False)
    except ValueError:
        raise PolicyError(f"{op}: {value!r} is not an IP address or CIDR range") from None


def _in_network(v: Any, p: _Network, ctx: RequestContext) -> bool:
    try:
        return ipaddress.ip_address(str(v)) in p
    except ValueError:
        return False


def _compare(convert: Callable[[Any], Any], test: Callable[[Any, Any], bool]) -> _Matcher:
    def match(v: Any, p: Any, ctx: RequestContext) -> bool:
        value = convert(v)
        return value is not None and test(value, p)

    return match


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanEquals": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class _Operator:
    parse: Callable[[Any, str, bool], Any]
    match: _Matcher
    negated: bool = False


def _operators() -> dict[str, _Operator]:
    ops = {
        "StringEquals": _Operator(_parse_string, _str_equals),
        "StringNotEquals": _Operator(_parse_string, _str_equals, True),
        "StringEqualsIgnoreCase": _Operator(_parse_string, _str_equals_ic),
        "StringNotEqualsIgnoreCase": _Operator(_parse_string, _str_equals_ic, True),
        "StringLike": _Operator(_parse_string, _str_like),
        "StringNotLike": _Operator(_parse_string, _str_like, True),
        # The IAM User Guide: ArnEquals and ArnLike behave the same (component-wise wildcards).
        "ArnEquals": _Operator(_parse_string, _arn_like),
        "ArnLike": _Operator(_parse_string, _arn_like),
        "ArnNotEquals": _Operator(_parse_string, _arn_like, True),
        "ArnNotLike": _Operator(_parse_string, _arn_like, True),
        "Bool": _Operator(_parse_bool, _compare(_to_bool, _COMPARISONS["Equals"])),
        "BinaryEquals": _Operator(_parse_binary, _compare(_to_bytes, _COMPARISONS["Equals"])),
        "IpAddress": _Operator(_parse_network, _in_network),
        "NotIpAddress": _Operator(_parse_network, _in_network, True),
    }
    for family, parse, convert in (
        ("Numeric", _parse_number, _to_decimal),
        ("Date", _parse_date, _to_datetime),
    ):
        for name, test in _COMPARISONS.items():
            ops[family + name] = _Operator(parse, _compare(convert, test))
        ops[family + "NotEquals"] = _Operator(
            parse, _compare(convert, _COMPARISONS["Equals"]), True
        )
    return ops


_OPERATORS = _operators()
_QUALIFIERS = ("ForAllValues", "ForAnyValue")
#: Every operator name accepted (before the optional ``IfExists`` suffix and set qualifier).
SUPPORTED_OPERATORS: frozenset[str] = frozenset([*_OPERATORS, "Null"])


@dataclass(frozen=True)
class Condition:
    """One key under one operator, e.g. ``"StringEquals": {"aws:PrincipalTag/team": ["a"]}``."""

    operator: str
    key: str
    values: tuple[Any, ...]
    qualifier: str | None
    if_exists: bool
    _op: _Operator | None  # None: the Null operator

    def holds(self, ctx: RequestContext) -> bool:
        """Whether the request context satisfies this condition."""
        present = ctx.values(self.key)
        if self._op is None:  # Null: "true" holds when the key is absent
            return (present is None) in self.values
        op = self._op
        if present is None:
            if self.if_exists or self.qualifier == "ForAllValues":
                return True
            return op.negated and self.qualifier is None

        def one(value: Any) -> bool:
            return any(op.match(value, p, ctx) for p in self.values) != op.negated

        if self.qualifier == "ForAllValues":
            return all(one(v) for v in present)
        if self.qualifier == "ForAnyValue":
            return any(one(v) for v in present)
        # A plain operator over a multivalued key: any value matching counts as a match.
        hit = any(op.match(v, p, ctx) for v in present for p in self.values)
        return hit != op.negated


def _parse_operator(operator: str) -> tuple[str | None, bool, _Operator | None]:
    qualifier, _, name = operator.rpartition(":")
    if qualifier and qualifier not in _QUALIFIERS:
        raise PolicyError(f"unsupported condition operator {operator!r}")
    if_exists = name.endswith("IfExists")
    base = name.removesuffix("IfExists")
    if base == "Null" and not if_exists and not qualifier:
        return None, False, None
    if base not in _OPERATORS:
        raise PolicyError(f"unsupported condition operator {operator!r}")
    return qualifier or None, if_exists, _OPERATORS[base]


def parse_conditions(block: Any, variables: bool) -> tuple[Condition, ...]:
    """Parse a statement's ``Condition`` block; every condition in it must hold (AND)."""
    if not isinstance(block, Mapping):
        raise PolicyError(f"Condition must be an object, not {block!r}")
    out: list[Condition] = []
    for operator, keys in block.items():
        if not isinstance(operator, str):
            raise PolicyError(f"unsupported condition operator {operator!r}")
        qualifier, if_exists, op = _parse_operator(operator)
        if not isinstance(keys, Mapping) or not keys:
            raise PolicyError(f"{operator}: expected an object of condition keys, not {keys!r}")
        for key, raw in keys.items():
            if not isinstance(key, str) or ":" not in key.strip(":"):
                raise PolicyError(f"{operator}: condition key {key!r} needs a prefix (aws:...)")
            listed = list(raw) if isinstance(raw, list) else [raw]
            if not listed:
                raise PolicyError(f"{operator}: {key} has an empty list of values")
            if op is None:
                values: tuple[Any, ...] = tuple(_parse_bool(v, operator, False) for v in listed)
            else:
                values = tuple(op.parse(v, operator, variables) for v in listed)
            out.append(Condition(operator, key, values, qualifier, if_exists, op))
    return tuple(out)
