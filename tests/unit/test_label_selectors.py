"""The complement of a union of label selectors, checked against brute force over every label set."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline_operator.label_selectors import (
    TooComplexError,
    complement_of_union,
    selector_from_json,
    selector_to_json,
)
from baseline_operator.selection import selector_matches
from baseline_operator.spec import LabelSelector, LabelSelectorRequirement, SelectorOperator

KEYS = ("app", "tier", "team")
VALUES = ("a", "b", "c")
# Every label set over the small universe: each key absent or one of the values (4^3 = 64 sets).
UNIVERSE = [
    {key: value for key, value in zip(KEYS, choice, strict=True) if value is not None}
    for choice in itertools.product((None, *VALUES), repeat=len(KEYS))
]

requirements = st.builds(
    LabelSelectorRequirement,
    key=st.sampled_from(KEYS),
    operator=st.sampled_from(list(SelectorOperator)),
    values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True).map(tuple),
).map(
    lambda r: (
        r
        if r.operator in {SelectorOperator.IN, SelectorOperator.NOT_IN}
        else LabelSelectorRequirement(r.key, r.operator)
    )
)
selectors = st.builds(
    LabelSelector,
    match_labels=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2),
    match_expressions=st.lists(requirements, max_size=2).map(tuple),
)


def brute_force_holds(given_selectors: list[LabelSelector], complement: list[LabelSelector]) -> None:
    for labels in UNIVERSE:
        selected = any(selector_matches(selector, labels) for selector in given_selectors)
        left_over = any(selector_matches(term, labels) for term in complement)
        assert selected != left_over, (labels, given_selectors, complement)


@settings(max_examples=400, deadline=None)
@given(st.lists(selectors, max_size=4))
def test_the_complement_matches_exactly_the_label_sets_no_selector_matches(
    given_selectors: list[LabelSelector],
) -> None:
    complement = complement_of_union(given_selectors, max_terms=10_000)
    brute_force_holds(given_selectors, complement)
    # Each term is a valid selector the API accepts (In/NotIn with values, Exists/DoesNotExist without).
    for term in complement:
        for requirement in term.match_expressions:
            with_values = requirement.operator in {SelectorOperator.IN, SelectorOperator.NOT_IN}
            assert bool(requirement.values) == with_values


@pytest.mark.parametrize(
    ("given_selectors", "expected"),
    [
        ([], [{}]),
        ([LabelSelector()], []),
        (
            [LabelSelector({"app": "db"})],
            [{"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}],
        ),
        # One label each, on one key: still one term (values merged).
        (
            [LabelSelector({"app": "db"}), LabelSelector({"app": "cache"})],
            [{"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["cache", "db"]}]}],
        ),
        (
            [LabelSelector(match_expressions=(LabelSelectorRequirement("app", SelectorOperator.EXISTS),))],
            [{"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}],
        ),
        # a=1, b In [x,y]  ->  a NotIn [1]  OR  b NotIn [x,y]
        (
            [
                LabelSelector(
                    {"a": "1"},
                    (LabelSelectorRequirement("b", SelectorOperator.IN, ("x", "y")),),
                )
            ],
            [
                {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
                {"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x", "y"]}]},
            ],
        ),
    ],
)
def test_named_cases(given_selectors: list[LabelSelector], expected: list[dict]) -> None:
    assert [selector_to_json(term) for term in complement_of_union(given_selectors, max_terms=10)] == expected


def test_too_many_terms_is_refused_with_the_count() -> None:
    two_keys = [LabelSelector({f"k{index}": "1", f"j{index}": "1"}) for index in range(6)]  # 2^6 terms
    with pytest.raises(TooComplexError, match="32 or more selectors"):
        complement_of_union(two_keys, max_terms=16)


def test_selectors_read_from_the_api_round_trip() -> None:
    raw = {"matchLabels": {"app": "db"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert selector_to_json(selector_from_json(raw)) == raw
    assert selector_from_json(None) == LabelSelector()
