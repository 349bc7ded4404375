"""Label selectors as sets of label maps: reading them, and the complement of a union of them.

The metadata block on a cluster without the Admin tier is a NetworkPolicy that allows all egress but the
metadata addresses. NetworkPolicies only add: if it selected a pod that another egress policy already
restricts, it would open everything that policy closed. So it must select exactly the pods no other egress
policy of the namespace selects: the complement of the union of their pod selectors.

A selector is a conjunction of requirements. The complement of one is the disjunction of the negated
requirements (NOT `a=1` is `a NotIn [1]`, which also holds where `a` is absent; NOT `a Exists` is `a
DoesNotExist`). The complement of a union is the intersection of those disjunctions; multiplied out, it
is a disjunction of conjunctions, each of them again a selector: one NetworkPolicy per term. Terms that
cannot match (`a In [x]` with `a NotIn [x]`) and terms implied by others are dropped, and requirements on
one key are merged, so common sets of policies (one label each) give one term.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from baseline_operator.spec import LabelSelector, LabelSelectorRequirement, SelectorOperator


@dataclass(frozen=True)
class _KeyConstraint:
    """What a conjunction asks of one key: present or absent, and allowed or refused values."""

    present: bool | None = None
    """True: must exist; False: must not; None: either."""
    allowed: frozenset[str] | None = None
    """When set, the value must be one of these (implies present)."""
    refused: frozenset[str] = frozenset()

    def satisfiable(self) -> bool:
        if self.allowed is not None:
            return self.present is not False and bool(self.allowed - self.refused)
        return True

    def requirements(self, key: str) -> list[LabelSelectorRequirement]:
        if self.allowed is not None:
            values = tuple(sorted(self.allowed - self.refused))
            return [LabelSelectorRequirement(key, SelectorOperator.IN, values)]
        if self.present is False:
            return [LabelSelectorRequirement(key, SelectorOperator.DOES_NOT_EXIST)]
        found: list[LabelSelectorRequirement] = []
        if self.refused:
            found.append(LabelSelectorRequirement(key, SelectorOperator.NOT_IN, tuple(sorted(self.refused))))
        if self.present:
            found.append(LabelSelectorRequirement(key, SelectorOperator.EXISTS))
        return found

    def implies(self, other: _KeyConstraint) -> bool:
        """Every label value satisfying self satisfies other (None stands for absent)."""
        return all(other.admits(value) for value in self._witnesses(other))

    def admits(self, value: str | None) -> bool:
        if value is None:
            return self.present is not True and self.allowed is None
        if self.present is False:
            return False
        if self.allowed is not None and value not in self.allowed:
            return False
        return value not in self.refused

    def _witnesses(self, other: _KeyConstraint) -> list[str | None]:
        # Values that tell the two apart if anything does: absent, every value either names, and one
        # value neither names.
        named = set(self.allowed or ()) | self.refused | set(other.allowed or ()) | other.refused
        fresh = "x" + "".join(sorted(named))
        candidates: list[str | None] = [None, fresh, *sorted(named)]
        return [value for value in candidates if self.admits(value)]


def _and(first: _KeyConstraint, second: _KeyConstraint) -> _KeyConstraint:
    present = first.present if second.present is None else second.present
    if first.present is not None and second.present is not None and first.present != second.present:
        return _KeyConstraint(present=True, allowed=frozenset())  # contradiction: never satisfiable
    allowed = first.allowed
    if second.allowed is not None:
        allowed = second.allowed if allowed is None else allowed & second.allowed
    return _KeyConstraint(present, allowed, first.refused | second.refused)


Term = Mapping[str, _KeyConstraint]


def _constraint(requirement: LabelSelectorRequirement, *, negated: bool) -> _KeyConstraint:
    values = frozenset(requirement.values)
    operator = requirement.operator
    if negated:
        operator = {
            SelectorOperator.IN: SelectorOperator.NOT_IN,
            SelectorOperator.NOT_IN: SelectorOperator.IN,
            SelectorOperator.EXISTS: SelectorOperator.DOES_NOT_EXIST,
            SelectorOperator.DOES_NOT_EXIST: SelectorOperator.EXISTS,
        }[operator]
    match operator:
        case SelectorOperator.IN:
            return _KeyConstraint(present=True, allowed=values)
        case SelectorOperator.NOT_IN:
            return _KeyConstraint(refused=values)
        case SelectorOperator.EXISTS:
            return _KeyConstraint(present=True)
        case SelectorOperator.DOES_NOT_EXIST:
            return _KeyConstraint(present=False)


def _requirements(selector: LabelSelector) -> list[LabelSelectorRequirement]:
    found = [
        LabelSelectorRequirement(key, SelectorOperator.IN, (value,))
        for key, value in selector.match_labels.items()
    ]
    return found + list(selector.match_expressions)


def _conjoin(term: Term, key: str, constraint: _KeyConstraint) -> dict[str, _KeyConstraint] | None:
    merged = _and(term[key], constraint) if key in term else constraint
    if not merged.satisfiable():
        return None
    return {**term, key: merged}


def _implies(term: Term, other: Term) -> bool:
    """Every label set matching `term` matches `other`."""
    return all(key in term and term[key].implies(constraint) for key, constraint in other.items()) or (
        not other
    )


class TooComplexError(ValueError):
    """The complement needs more selectors than allowed."""


def complement_of_union(selectors: list[LabelSelector], max_terms: int) -> list[LabelSelector]:
    """Selectors whose union matches exactly the label sets that none of `selectors` matches.

    Empty list: nothing is left (some selector matches everything). No selectors at all: `[{}]`, all.
    Raises TooComplexError when more than `max_terms` selectors would be needed.
    """
    terms: list[dict[str, _KeyConstraint]] = [{}]
    for selector in selectors:
        requirements = _requirements(selector)
        if not requirements:
            return []  # the empty selector matches every pod: nothing left over
        grown: list[dict[str, _KeyConstraint]] = []
        for term, requirement in itertools.product(terms, requirements):
            conjoined = _conjoin(term, requirement.key, _constraint(requirement, negated=True))
            if conjoined is not None:
                grown.append(conjoined)
        terms = _minimal(grown)
        if len(terms) > max_terms:
            raise TooComplexError(
                f"the pods no egress policy selects need {len(terms)} or more selectors (at most {max_terms})"
            )
    return [_selector(term) for term in terms]


def _minimal(terms: list[dict[str, _KeyConstraint]]) -> list[dict[str, _KeyConstraint]]:
    """Drop duplicate terms and those implied by another (a subset of it adds nothing to the union)."""
    kept: list[dict[str, _KeyConstraint]] = []
    for term in sorted(terms, key=len):
        if not any(_implies(term, other) for other in kept):
            kept.append(term)
    return kept


def _selector(term: Term) -> LabelSelector:
    return LabelSelector(
        match_expressions=tuple(
            requirement for key in sorted(term) for requirement in term[key].requirements(key)
        )
    )


def selector_from_json(raw: Any) -> LabelSelector:
    """A LabelSelector as the API returns it (`{}` or null: everything); unknown operators match nothing.

    Objects in the API were validated already; anything odd is read as the API server would: an unknown
    operator never matches, which here means the selector selects nothing.
    """
    if not isinstance(raw, Mapping):
        return LabelSelector()
    labels = raw.get("matchLabels") or {}
    expressions: list[LabelSelectorRequirement] = []
    for item in raw.get("matchExpressions") or ():
        values = tuple(map(str, item.get("values") or ()))
        try:
            operator = SelectorOperator(item.get("operator"))
        except ValueError:
            operator, values = SelectorOperator.IN, ()
        expressions.append(LabelSelectorRequirement(str(item.get("key", "")), operator, values))
    return LabelSelector(
        match_labels={str(key): str(value) for key, value in labels.items()},
        match_expressions=tuple(expressions),
    )


def selector_to_json(selector: LabelSelector) -> dict[str, Any]:
    """The API's form; `{}` for the empty selector."""
    result: dict[str, Any] = {}
    if selector.match_labels:
        result["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        result["matchExpressions"] = [
            {"key": r.key, "operator": r.operator.value, **({"values": list(r.values)} if r.values else {})}
            for r in selector.match_expressions
        ]
    return result
