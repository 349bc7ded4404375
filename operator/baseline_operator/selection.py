"""Which baselines select a namespace, and which baseline wins each section there.

Protected namespaces (`kube-system`, `kube-public`, `kube-node-lease` and the operator's own) are
never selected, whatever a selector says: the list is fixed at install time, so a tenant cannot
exempt or capture them. Several baselines may select one namespace; per section the highest
`priority` wins and, on a tie, the name that sorts first, so an org-wide network baseline and a team's
quota baseline compose.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baseline_operator.spec import (
    LABEL_PLACEHOLDER_PREFIX,
    PLACEHOLDER_PATTERN,
    BaselineSpec,
    LabelSelector,
    Mode,
    Section,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from baseline_operator.observed import ObservedBaseline

ALWAYS_PROTECTED = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def protected_namespaces(operator_namespace: str | None) -> frozenset[str]:
    return ALWAYS_PROTECTED | ({operator_namespace} if operator_namespace else set())


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Standard LabelSelector semantics; an empty selector matches everything."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        match requirement.operator:
            case "In":
                ok = present and value in requirement.values
            case "NotIn":
                ok = not present or value not in requirement.values
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
            case _:
                ok = False  # an operator the schema should have refused selects nothing
        if not ok:
            return False
    return True


def selects(spec: BaselineSpec, namespace: str, labels: Mapping[str, str], protected: frozenset[str]) -> bool:
    return namespace not in protected and asked_for(spec, namespace, labels)


def asked_for(spec: BaselineSpec, namespace: str, labels: Mapping[str, str]) -> bool:
    """What the baseline's own author asked for: the selector minus excludeNamespaces."""
    if any(fnmatch.fnmatchcase(namespace, pattern) for pattern in spec.exclude_namespaces):
        return False
    return selector_matches(spec.namespace_selector, labels)


@dataclass(frozen=True)
class Selection:
    """The namespaces a baseline selects, and the protected ones its selector asks for but never gets.

    A protected namespace that excludeNamespaces also names is in neither list: its author already
    left it out, so there is nothing to tell them.
    """

    selected: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()


def select_namespaces(
    spec: BaselineSpec,
    namespaces: Iterable[tuple[str, Mapping[str, str]]],
    protected: frozenset[str],
    wanted: Callable[[BaselineSpec, str, Mapping[str, str]], bool] = asked_for,
) -> Selection:
    """Split `(name, labels)` pairs into the selected namespaces and the protected ones skipped."""
    selected: list[str] = []
    skipped: list[str] = []
    for name, labels in namespaces:
        if wanted(spec, name, labels):
            (skipped if name in protected else selected).append(name)
    return Selection(tuple(sorted(selected)), tuple(sorted(skipped)))


class SelectionMemo:
    """`select_namespaces` for one baseline, again and again, judging only what changed since last time.

    Namespace records are immutable and replaced when a namespace changes, so a verdict stays right while
    its labels mapping is the very same object (held here, so its identity cannot be reused). A status
    write judges every namespace: at 10 000 namespaces the selector and `excludeNamespaces` patterns
    cost about 35 ms per write, looking verdicts up a tenth of that. Only the namespaces of the last
    call are kept, so deleted ones leave with the next call.
    """

    def __init__(self) -> None:
        self._spec: BaselineSpec | None = None
        self._verdicts: dict[str, tuple[Mapping[str, str], bool]] = {}

    def select(
        self,
        spec: BaselineSpec,
        namespaces: Iterable[tuple[str, Mapping[str, str]]],
        protected: frozenset[str],
    ) -> Selection:
        # Every stored change of the baseline (its status writes too) parses the spec anew: equal specs
        # select alike.
        previous = self._verdicts if spec is self._spec or spec == self._spec else {}
        verdicts: dict[str, tuple[Mapping[str, str], bool]] = {}

        def wanted(spec: BaselineSpec, namespace: str, labels: Mapping[str, str]) -> bool:
            known = previous.get(namespace)
            verdict = (
                known[1] if known is not None and known[0] is labels else asked_for(spec, namespace, labels)
            )
            verdicts[namespace] = (labels, verdict)
            return verdict

        selection = select_namespaces(spec, namespaces, protected, wanted)
        self._spec, self._verdicts = spec, verdicts
        return selection


@dataclass(frozen=True)
class SectionAssignment:
    """The baseline that writes a section in one namespace, and those that set it too but lose."""

    section: Section
    winner: ObservedBaseline
    losers: tuple[ObservedBaseline, ...]


def precedence(baseline: ObservedBaseline) -> tuple[int, str]:
    priority = baseline.spec.priority if baseline.spec is not None else 0
    return (-priority, baseline.name)


def assign_sections(
    selecting: Iterable[ObservedBaseline],
    lifted: Callable[[ObservedBaseline, Section], bool] = lambda _baseline, _section: False,
) -> dict[Section, SectionAssignment]:
    """Which baseline sets each section; one whose section an exemption `lifted` here does not set it."""
    ordered = sorted((baseline for baseline in selecting if baseline.spec is not None), key=precedence)
    assignments: dict[Section, SectionAssignment] = {}
    for section in Section:
        if section is Section.WORKLOADS:
            continue  # every selecting baseline's workload rules apply: the strictest holds, nothing to win
        setting = [
            baseline
            for baseline in ordered
            if baseline.spec is not None and baseline.spec.section(section) and not lifted(baseline, section)
        ]
        if setting:
            assignments[section] = SectionAssignment(section, setting[0], tuple(setting[1:]))
    return assignments


def protected_label_keys(baselines: Iterable[ObservedBaseline]) -> tuple[str, ...]:
    """The namespace label keys whose change would change what an Enforce baseline does, sorted.

    Those its selector reads (a change selects or unselects, or moves a namespace to another baseline)
    and those its `${label:<key>}` placeholders read (a change names another subject). Admission
    protection (manifests/admission/selection-labels.yaml) keeps them on enforced namespaces.
    """
    keys: set[str] = set()
    for baseline in baselines:
        spec = baseline.spec
        if spec is None or spec.mode is not Mode.ENFORCE:
            continue
        keys.update(spec.namespace_selector.match_labels)
        keys.update(requirement.key for requirement in spec.namespace_selector.match_expressions)
        for binding in spec.rbac.role_bindings if spec.rbac is not None else ():
            for subject in binding.subjects:
                for text in (subject.name, subject.namespace or ""):
                    keys.update(
                        match["body"].removeprefix(LABEL_PLACEHOLDER_PREFIX)
                        for match in PLACEHOLDER_PATTERN.finditer(text)
                        if match["body"].startswith(LABEL_PLACEHOLDER_PREFIX)
                    )
    return tuple(sorted(keys))
