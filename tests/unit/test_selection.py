"""Which namespaces a baseline selects, and which protected ones its selector asks for in vain."""

from __future__ import annotations

from types import MappingProxyType

from baseline_operator.selection import Selection, SelectionMemo, protected_namespaces, select_namespaces
from baseline_operator.spec import parse_spec

PROTECTED = protected_namespaces("baseline-system")


def cluster(*names: str) -> list[tuple[str, dict[str, str]]]:
    return [(name, {"kubernetes.io/metadata.name": name}) for name in names]


def by_name(*names: str) -> dict:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}
            ]
        }
    }


NAMESPACES = cluster("kube-system", "kube-public", "kube-node-lease", "baseline-system", "team-b", "team-a")


def test_a_selector_naming_only_protected_namespaces_selects_none_and_names_them() -> None:
    spec = parse_spec(by_name("kube-system", "kube-public"))
    assert select_namespaces(spec, NAMESPACES, PROTECTED) == Selection((), ("kube-public", "kube-system"))


def test_the_empty_selector_selects_every_unprotected_namespace_in_name_order() -> None:
    selection = select_namespaces(parse_spec({}), NAMESPACES, PROTECTED)
    assert selection.selected == ("team-a", "team-b")
    assert selection.protected == ("baseline-system", "kube-node-lease", "kube-public", "kube-system")


def test_a_protected_namespace_its_author_excluded_is_not_reported() -> None:
    spec = parse_spec({**by_name("kube-system", "team-a"), "excludeNamespaces": ["kube-*"]})
    assert select_namespaces(spec, NAMESPACES, PROTECTED) == Selection(("team-a",), ())


def test_a_selector_matching_nothing_selects_nothing() -> None:
    spec = parse_spec({"namespaceSelector": {"matchLabels": {"team": "nobody"}}})
    assert select_namespaces(spec, NAMESPACES, PROTECTED) == Selection()


def test_the_memo_judges_a_namespace_again_only_when_its_labels_or_the_spec_change() -> None:
    spec = parse_spec({"namespaceSelector": {"matchLabels": {"tier": "a"}}})
    memo = SelectionMemo()
    labels = MappingProxyType({"tier": "a"})
    assert select_namespaces(spec, [("team-a", labels)], PROTECTED, memo) == Selection(("team-a",))
    # The same labels object: the verdict is looked up (a verdict planted to prove it is not recomputed).
    memo._verdicts["team-a"] = (labels, False)
    assert select_namespaces(spec, [("team-a", labels)], PROTECTED, memo) == Selection()
    # An equal spec parsed anew keeps the verdicts; new labels (a new record) are judged again.
    assert (
        select_namespaces(
            parse_spec({"namespaceSelector": {"matchLabels": {"tier": "a"}}}),
            [("team-a", labels)],
            PROTECTED,
            memo,
        )
        == Selection()
    )
    assert select_namespaces(spec, [("team-a", MappingProxyType({"tier": "a"}))], PROTECTED, memo) == (
        Selection(("team-a",))
    )
    # Another spec forgets every verdict.
    memo._verdicts["team-a"] = (labels, True)
    other = parse_spec({"namespaceSelector": {"matchLabels": {"tier": "b"}}})
    assert select_namespaces(other, [("team-a", labels)], PROTECTED, memo) == Selection()
