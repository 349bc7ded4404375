"""Which namespaces a baseline selects, and which protected ones its selector asks for in vain."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from baseline_operator import selection
from baseline_operator.selection import Selection, SelectionMemo, protected_namespaces, select_namespaces
from baseline_operator.spec import parse_spec

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

    from baseline_operator.spec import BaselineSpec

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


def test_the_memo_judges_a_namespace_again_only_when_its_labels_or_the_spec_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    judged: list[str] = []
    judge = selection.asked_for

    def counted(spec: BaselineSpec, namespace: str, labels: Mapping[str, str]) -> bool:
        judged.append(namespace)
        return judge(spec, namespace, labels)

    monkeypatch.setattr(selection, "asked_for", counted)
    spec = parse_spec({"namespaceSelector": {"matchLabels": {"tier": "a"}}})
    memo = SelectionMemo()
    labels = MappingProxyType({"tier": "a"})
    for _ in range(2):
        assert memo.select(spec, [("team-a", labels)], PROTECTED) == Selection(("team-a",))
    assert judged == ["team-a"], "the same labels object: the verdict is looked up"
    same_again = parse_spec({"namespaceSelector": {"matchLabels": {"tier": "a"}}})
    assert memo.select(same_again, [("team-a", labels)], PROTECTED) == Selection(("team-a",))
    assert judged == ["team-a"], "an equal spec parsed anew keeps the verdicts"
    relabelled = MappingProxyType({"tier": "b"})
    assert memo.select(spec, [("team-a", relabelled)], PROTECTED) == Selection()
    other = parse_spec({"namespaceSelector": {"matchLabels": {"tier": "b"}}})
    assert memo.select(other, [("team-a", relabelled)], PROTECTED) == Selection(("team-a",))
    assert judged == ["team-a"] * 3, "new labels and another spec are judged again"
    # A namespace gone from one call is forgotten: back with the same labels, it is judged anew.
    assert memo.select(other, [], PROTECTED) == Selection()
    assert memo.select(other, [("team-a", relabelled)], PROTECTED) == Selection(("team-a",))
    assert judged == ["team-a"] * 4
