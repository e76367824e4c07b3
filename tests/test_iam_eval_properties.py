"""Properties of IAM evaluation that hold for every policy set and request (hypothesis)."""

from __future__ import annotations

import fnmatch
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_lib.access_denied import parse_access_denied
from runbook_lib.iam_conditions import RequestContext, parse_pattern
from runbook_lib.iam_eval import PolicyType, evaluate, explain

# Per test, not a global profile: other test modules keep their own settings.
fast = settings(max_examples=200, deadline=None)

# Small alphabets so that generated patterns and requests often meet.
SERVICES = ("dynamodb", "s3", "DynamoDB")
NAME_CHARS = "aAbB"
ARN_CHARS = "ab/:-."
WILD = "*?"
TEAMS = ("carts", "orders", "Carts")
TEAM_KEY = "aws:PrincipalTag/team"

names = st.text(NAME_CHARS, min_size=1, max_size=4)
actions = st.builds(lambda s, n: f"{s}:{n}", st.sampled_from(SERVICES), names)
resources = st.builds(lambda p: "arn:" + p, st.text(ARN_CHARS, max_size=8))
action_patterns = st.one_of(
    st.just("*"),
    st.builds(
        lambda s, n: f"{s}:{n}",
        st.sampled_from(SERVICES),
        st.text(NAME_CHARS + WILD, min_size=1, max_size=4),
    ),
)
resource_patterns = st.one_of(
    st.just("*"), st.builds(lambda p: "arn:" + p, st.text(ARN_CHARS + WILD, max_size=8))
)
contexts = st.one_of(st.just({}), st.builds(lambda t: {TEAM_KEY: t}, st.sampled_from(TEAMS)))


@st.composite
def statements(draw: st.DrawFn, effect: str | None = None) -> dict[str, Any]:
    stmt: dict[str, Any] = {
        "Effect": effect or draw(st.sampled_from(["Allow", "Deny"])),
        draw(st.sampled_from(["Action", "NotAction"])): draw(
            st.lists(action_patterns, min_size=1, max_size=2)
        ),
        draw(st.sampled_from(["Resource", "NotResource"])): draw(
            st.lists(resource_patterns, min_size=1, max_size=2)
        ),
    }
    if draw(st.booleans()):
        operator = draw(st.sampled_from(["StringEquals", "StringNotEquals", "StringLikeIfExists"]))
        stmt["Condition"] = {operator: {TEAM_KEY: draw(st.sampled_from(TEAMS))}}
    return stmt


def documents(effect: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda stmts: {"Version": "2012-10-17", "Statement": stmts},
        st.lists(statements(effect), min_size=1, max_size=3),
    )


policy_lists = st.lists(documents(), max_size=3)


def _named(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"P{i}": doc for i, doc in enumerate(docs)}


# ---------------------------------------------------------------- the decision order


@fast
@given(policy_lists, documents("Deny"), actions, resources, contexts)
def test_adding_a_deny_can_only_turn_a_decision_into_explicit_deny(
    docs: list[dict[str, Any]],
    deny: dict[str, Any],
    action: str,
    resource: str,
    ctx: dict[str, Any],
) -> None:
    before = evaluate(docs, action, resource, ctx)
    after = evaluate([*docs, deny], action, resource, ctx)
    assert after.decision in (before.decision, "explicit_deny")
    if not before.allowed:
        assert not after.allowed


@fast
@given(policy_lists, documents("Allow"), actions, resources, contexts)
def test_adding_an_allow_never_denies_and_never_lifts_an_explicit_deny(
    docs: list[dict[str, Any]],
    allow: dict[str, Any],
    action: str,
    resource: str,
    ctx: dict[str, Any],
) -> None:
    before = evaluate(docs, action, resource, ctx)
    after = evaluate([*docs, allow], action, resource, ctx)
    if before.decision == "implicit_deny":
        assert after.decision in ("implicit_deny", "allowed")
    else:
        assert after.decision == before.decision


@fast
@given(st.lists(documents("Deny"), max_size=3), actions, resources, contexts)
def test_deny_statements_alone_never_allow(
    docs: list[dict[str, Any]], action: str, resource: str, ctx: dict[str, Any]
) -> None:
    assert not evaluate(docs, action, resource, ctx).allowed


@fast
@given(st.text(max_size=20), st.text(max_size=30), contexts)
def test_allow_everything_allows_any_request(
    action: str, resource: str, ctx: dict[str, Any]
) -> None:
    admin = {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"},
    }
    decision = evaluate({"Admin": admin}, action, resource, ctx)
    assert decision.allowed and decision.reason == "allowed by Admin, statement 0"


@fast
@given(policy_lists, st.randoms(use_true_random=False), actions, resources, contexts)
def test_order_of_policies_and_statements_does_not_change_the_decision(
    docs: list[dict[str, Any]], rnd: Any, action: str, resource: str, ctx: dict[str, Any]
) -> None:
    shuffled = [
        dict(doc, Statement=rnd.sample(doc["Statement"], len(doc["Statement"]))) for doc in docs
    ]
    rnd.shuffle(shuffled)
    before = evaluate(docs, action, resource, ctx)
    after = evaluate(shuffled, action, resource, ctx)
    assert after.decision == before.decision
    assert len(after.statements) == len(before.statements)


@fast
@given(policy_lists, st.lists(st.tuples(actions, resources), max_size=4), contexts)
def test_explain_decides_each_request_as_evaluate_does(
    docs: list[dict[str, Any]], requests: list[tuple[str, str]], ctx: dict[str, Any]
) -> None:
    result = explain(_named(docs), requests, ctx)
    assert result.rows == tuple(evaluate(_named(docs), a, r, ctx) for a, r in requests)
    assert result.all_allowed == all(d.allowed for d in result.rows)


# ---------------------------------------------------------------- NotAction, NotResource


@fast
@given(st.lists(action_patterns, min_size=1, max_size=3), actions, resources)
def test_action_and_notaction_split_every_action_in_two(
    patterns: list[str], action: str, resource: str
) -> None:
    def allowed(element: str) -> bool:
        doc = {"Statement": {"Effect": "Allow", element: patterns, "Resource": "*"}}
        return evaluate([doc], action, resource).allowed

    assert allowed("Action") != allowed("NotAction")


@fast
@given(st.lists(resource_patterns, min_size=1, max_size=3), actions, resources)
def test_deny_notresource_fences_exactly_the_listed_resources(
    fence: list[str], action: str, resource: str
) -> None:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "NotResource": fence},
        ]
    }
    inside = any(_reference_match(p, resource) for p in fence)
    decision = evaluate([doc], action, resource)
    assert decision.decision == ("allowed" if inside else "explicit_deny")


# ---------------------------------------------------------------- pattern matching


def _reference_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    # fnmatch knows * and ?, but also [...] classes, which IAM does not: escape '['.
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


TEXT = "aAbB:/-.[]^$\\(){}+|"


@fast
@given(st.text(TEXT + WILD, max_size=8), st.text(TEXT, max_size=8))
def test_resource_patterns_agree_with_fnmatch(pattern: str, value: str) -> None:
    compiled = parse_pattern(pattern, False)
    assert compiled.matches(value, RequestContext()) == _reference_match(pattern, value)


@fast
@given(st.text(TEXT + WILD, max_size=8), st.text(TEXT, max_size=8))
def test_action_patterns_agree_with_case_insensitive_fnmatch(pattern: str, value: str) -> None:
    compiled = parse_pattern(pattern, False)
    expected = _reference_match(pattern, value, ignore_case=True)
    assert compiled.matches(value, RequestContext(), ignore_case=True) == expected


@fast
@given(st.text(NAME_CHARS + WILD, min_size=1, max_size=4), actions, resources)
def test_statement_action_match_agrees_with_fnmatch(name: str, action: str, resource: str) -> None:
    pattern = f"dynamodb:{name}"
    doc = {"Statement": {"Effect": "Allow", "Action": pattern, "Resource": "*"}}
    expected = _reference_match(pattern, action, ignore_case=True)
    assert evaluate([doc], action, resource).allowed == expected


@fast
@given(st.text(ARN_CHARS + WILD, max_size=8), resources)
def test_statement_resource_match_is_case_sensitive_fnmatch(path: str, resource: str) -> None:
    pattern = "arn:" + path
    doc = {"Statement": {"Effect": "Allow", "Action": "*", "Resource": pattern}}
    assert evaluate([doc], "s3:GetObject", resource).allowed == _reference_match(pattern, resource)
    assert evaluate([doc], "s3:GetObject", resource.upper()).allowed == _reference_match(
        pattern, resource.upper()
    )


# ---------------------------------------------------------------- condition operators

NEGATIONS = {
    "StringEquals": "StringNotEquals",
    "StringEqualsIgnoreCase": "StringNotEqualsIgnoreCase",
    "StringLike": "StringNotLike",
    "ArnLike": "ArnNotLike",
    "ArnEquals": "ArnNotEquals",
    "NumericEquals": "NumericNotEquals",
}
values = st.text("ab:*?", max_size=6)


def _allowed_by(condition: dict[str, Any], ctx: dict[str, Any] | None) -> bool:
    doc = {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition}}
    return evaluate([doc], "s3:GetObject", "arn:aws:s3:::b", ctx).allowed


@fast
@given(st.sampled_from(sorted(NEGATIONS)), st.lists(values, min_size=1, max_size=3), values)
def test_a_negated_operator_is_the_complement_when_the_key_is_present(
    operator: str, policy_values: list[str], request_value: str
) -> None:
    if operator.startswith("Numeric"):
        policy_values = [str(len(v)) for v in policy_values]
        request_value = str(len(request_value))
    ctx = {"aws:Key": request_value}
    positive = _allowed_by({operator: {"aws:Key": policy_values}}, ctx)
    negative = _allowed_by({NEGATIONS[operator]: {"aws:Key": policy_values}}, ctx)
    assert positive != negative


@fast
@given(
    st.sampled_from(sorted([*NEGATIONS, *NEGATIONS.values()])), values, st.one_of(st.none(), values)
)
def test_if_exists_is_true_without_the_key_and_the_operator_with_it(
    operator: str, policy_value: str, request_value: str | None
) -> None:
    if operator.startswith("Numeric"):
        policy_value = str(len(policy_value))
        request_value = None if request_value is None else str(len(request_value))
    ctx = None if request_value is None else {"aws:Key": request_value}
    with_if_exists = _allowed_by({operator + "IfExists": {"aws:Key": policy_value}}, ctx)
    if request_value is None:
        assert with_if_exists
    else:
        assert with_if_exists == _allowed_by({operator: {"aws:Key": policy_value}}, ctx)


@fast
@given(
    st.sampled_from(["StringLike", "StringNotLike", "StringEquals", "StringNotEquals"]),
    st.lists(values, min_size=1, max_size=3),
    st.lists(values, max_size=4),
)
def test_set_operators_are_all_and_any_of_the_single_value_results(
    operator: str, policy_values: list[str], request_values: list[str]
) -> None:
    cond = {"aws:TagKeys": policy_values}
    each = [_allowed_by({operator: cond}, {"aws:TagKeys": v}) for v in request_values]
    ctx = {"aws:TagKeys": request_values}
    assert _allowed_by({"ForAllValues:" + operator: cond}, ctx) == all(each)
    assert _allowed_by({"ForAnyValue:" + operator: cond}, ctx) == any(each)


@fast
@given(st.dictionaries(st.sampled_from(["aws:A", "aws:B"]), values, max_size=2), values, values)
def test_keys_under_one_operator_are_anded(ctx: dict[str, str], value_a: str, value_b: str) -> None:
    both = _allowed_by({"StringLike": {"aws:A": value_a, "aws:B": value_b}}, ctx)
    one = _allowed_by({"StringLike": {"aws:A": value_a}}, ctx)
    other = _allowed_by({"StringLike": {"aws:B": value_b}}, ctx)
    assert both == (one and other)


# ---------------------------------------------------------------- boundaries, SCPs, sessions

PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/r/s"


@fast
@given(policy_lists, documents(), actions, resources, contexts)
def test_a_boundary_is_an_intersection_and_never_widens(
    docs: list[dict[str, Any]],
    boundary: dict[str, Any],
    action: str,
    resource: str,
    ctx: dict[str, Any],
) -> None:
    """AWS: identity-based policies with a boundary give "the intersection of the two
    categories"; an explicit deny in either wins. So allowed with the boundary exactly when the
    identity-based policies allow and the boundary, read as a policy of its own, allows."""
    alone = evaluate(docs, action, resource, ctx)
    bound_alone = evaluate([boundary], action, resource, ctx)
    both = evaluate(docs, action, resource, ctx, boundary=boundary)
    assert both.allowed == (alone.allowed and bound_alone.allowed)
    if both.allowed:
        assert alone.allowed  # never widens
    explicit = "explicit_deny" in (alone.decision, bound_alone.decision)
    assert (both.decision == "explicit_deny") == explicit
    assert both.allowed_by_boundary == bound_alone.allowed
    if both.decision == "implicit_deny":
        expected = PolicyType.IDENTITY if not alone.allowed else PolicyType.BOUNDARY
        assert both.policy_type == expected


@fast
@given(policy_lists, st.lists(documents(), min_size=1, max_size=2), actions, resources, contexts)
def test_session_policies_intersect_like_a_boundary(
    docs: list[dict[str, Any]],
    session: list[dict[str, Any]],
    action: str,
    resource: str,
    ctx: dict[str, Any],
) -> None:
    alone = evaluate(docs, action, resource, ctx)
    session_alone = evaluate(session, action, resource, ctx)
    both = evaluate(docs, action, resource, ctx, session_policies=session)
    assert both.allowed == (alone.allowed and session_alone.allowed)
    explicit = "explicit_deny" in (alone.decision, session_alone.decision)
    assert (both.decision == "explicit_deny") == explicit


@fast
@given(
    policy_lists,
    st.lists(st.lists(documents(), min_size=1, max_size=2), max_size=3),
    actions,
    resources,
)
def test_every_scp_level_must_allow(
    docs: list[dict[str, Any]],
    levels: list[list[dict[str, Any]]],
    action: str,
    resource: str,
) -> None:
    """AWS Organizations: an Allow at every level from the root to the account, no Deny at
    any; SCPs grant nothing themselves."""
    alone = evaluate(docs, action, resource)
    per_level = [evaluate(level, action, resource) for level in levels]
    decision = evaluate(docs, action, resource, scps=levels)
    assert decision.allowed == (alone.allowed and all(d.allowed for d in per_level))
    if levels:
        assert decision.allowed_by_organizations == all(d.allowed for d in per_level)
    else:
        assert decision.allowed_by_organizations is None
        assert decision == alone
    if any(d.decision == "explicit_deny" for d in per_level):
        assert decision.policy_type == PolicyType.SCP


@fast
@given(policy_lists, documents(), st.lists(documents(), max_size=2), actions, resources, contexts)
def test_the_sentence_of_any_denial_parses_back_to_its_policy_type(
    docs: list[dict[str, Any]],
    boundary: dict[str, Any],
    session: list[dict[str, Any]],
    action: str,
    resource: str,
    ctx: dict[str, Any],
) -> None:
    decision = evaluate(docs, action, resource, ctx, boundary=boundary, session_policies=session)
    if decision.allowed:
        return
    parsed = parse_access_denied(decision.sentence(PRINCIPAL))
    assert parsed is not None
    assert (parsed.policy_type, parsed.kind) == (decision.policy_type, decision.decision)
    assert (parsed.action, parsed.resource) == (action, resource)
