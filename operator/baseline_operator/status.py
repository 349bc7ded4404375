"""A SecurityBaseline's status, computed from its per-namespace results (pure, no I/O).

Follows the Kubernetes API conventions (kstatus): `observedGeneration`; conditions `Ready`, `Drifted`,
`Conflict` and `NamespacesSelected` with reason, message and `lastTransitionTime` (kept when the status
does not change); counts; and a bounded list of problems, so a baseline selecting thousands of
namespaces still has a small status. The engine writes the status only when this function's result
differs from the stored one.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

MAX_PROBLEMS = 20
# The field comes first in an InvalidSpec message, so that truncation never cuts it off.
_INVALID_SPEC_CONSEQUENCE = (
    "the stored spec fails the operator's checks, perhaps written before a CRD upgrade; "
    "this baseline applies and removes nothing until it is fixed"
)
_MAX_MESSAGE = 300
_MAX_FIELDS = 10
MAX_FIELD_TEXT = 256  # the CRD's limit on status.problems[].fields and status.recentDrift[].fields
_FIGHTS_NAMED = 3


class State(StrEnum):
    """A namespace's state for one baseline (also the `state` label of the namespaces gauge)."""

    COMPLIANT = "compliant"
    DRIFTED = "drifted"
    CONFLICT = "conflict"
    ERROR = "error"


@dataclass(frozen=True)
class ProblemEntry:
    """One line of `status.problems`."""

    namespace: str
    kind: str
    name: str
    section: str
    reason: str
    message: str
    fields: tuple[str, ...] = ()
    changed_by: str | None = None
    since: str | None = None
    rule: str = ""
    controls: tuple[str, ...] = ()

    def as_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "section": self.section,
            "reason": self.reason,
            "message": self.message[:_MAX_MESSAGE],
        }
        if self.fields:
            entry["fields"] = [text[:MAX_FIELD_TEXT] for text in self.fields[:_MAX_FIELDS]]
        if self.changed_by:
            entry["changedBy"] = self.changed_by
        if self.since:
            entry["since"] = self.since
        if self.rule:
            entry["rule"] = self.rule
        if self.controls:
            entry["controls"] = list(self.controls)
        return entry


@dataclass(frozen=True)
class NamespaceResult:
    """What reconciling one namespace left for one baseline."""

    generation: int
    state: State
    problems: tuple[ProblemEntry, ...] = ()
    fights: tuple[str, ...] = ()
    """Objects fought over with another writer, e.g. `NetworkPolicy team-a/x with argocd-controller`."""
    workload_violations: tuple[tuple[str, int], ...] = ()
    """(rule, workloads breaking it), all of them, for the gauge."""


def build_status(
    *,
    generation: int,
    spec_error: str | None,
    matched: Iterable[str],
    results: Mapping[str, NamespaceResult],
    previous: Mapping[str, Any],
    now: dt.datetime,
    recent_drift: Sequence[Mapping[str, Any]] = (),
    protected_skipped: Iterable[str] = (),
    exemptions: Sequence[Mapping[str, Any]] = (),
    minor_reasons: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The full status object for a baseline; `recent_drift` is newest first, already bounded.

    `protected_skipped` are the protected namespaces the selector matches, which are never selected;
    problems of `minor_reasons` are listed after the others.
    """
    matched_names = sorted(matched)
    current = {
        name: results[name]
        for name in matched_names
        if name in results and results[name].generation == generation
    }
    pending = len(matched_names) - len(current)
    tally = Counter(result.state for result in current.values())
    counts = {state: tally[state] for state in State}
    problems = [problem for name in sorted(current) for problem in current[name].problems]
    # What stops a baseline first: findings (running workloads, a namespace's own policies) must not
    # crowd a failure out of the bounded list.
    problems.sort(key=lambda problem: problem.reason in minor_reasons)

    if spec_error is not None:
        ready = ("False", "InvalidSpec", f"{spec_error} ({_INVALID_SPEC_CONSEQUENCE})")
    elif pending:
        ready = (
            "False",
            "Progressing",
            f"{pending} of {len(matched_names)} selected namespaces not reconciled yet",
        )
    elif counts[State.ERROR]:
        ready = (
            "False",
            "ReconcileError",
            f"{counts[State.ERROR]} namespaces could not be brought to the baseline",
        )
    else:
        ready = ("True", "Reconciled", _summary(len(matched_names), counts))
    drifted = (
        ("True", "DriftFound", f"{counts[State.DRIFTED]} namespaces differ from the baseline")
        if counts[State.DRIFTED]
        else ("False", "NoDrift", "every reconciled namespace matches the baseline")
    )
    fights = [fight for name in sorted(current) for fight in current[name].fights]
    conflict = _conflict(fights, counts[State.CONFLICT])
    selected = _selected(len(matched_names), sorted(protected_skipped))
    if spec_error is not None:
        # Nothing was compared or selected: "no drift" would be a claim the operator cannot make.
        drifted = conflict = selected = ("Unknown", "InvalidSpec", "not evaluated while the spec is invalid")
    previous_conditions = {condition.get("type"): condition for condition in previous.get("conditions") or []}
    conditions = [
        _condition(kind, values, generation, previous_conditions.get(kind), now)
        for kind, values in (
            ("Ready", ready),
            ("Drifted", drifted),
            ("Conflict", conflict),
            ("NamespacesSelected", selected),
        )
    ]
    return {
        "observedGeneration": generation,
        "matchedNamespaces": len(matched_names),
        "compliantNamespaces": counts[State.COMPLIANT],
        "driftedNamespaces": counts[State.DRIFTED],
        "conflictNamespaces": counts[State.CONFLICT],
        "errorNamespaces": counts[State.ERROR],
        "conditions": conditions,
        "problems": [problem.as_status() for problem in problems[:MAX_PROBLEMS]],
        "recentDrift": [dict(entry) for entry in recent_drift],
        **({"exemptions": [dict(entry) for entry in exemptions]} if exemptions else {}),
    }


def _conflict(fights: Sequence[str], contested: int) -> tuple[str, str, str]:
    if fights:
        listed = "; ".join(fights[:_FIGHTS_NAMED]) + ("; ..." if len(fights) > _FIGHTS_NAMED else "")
        return (
            "True",
            "DriftFight",
            (
                f"another writer keeps changing {len(fights)} objects, so their repairs are paused or "
                f"on probation: {listed}"
            ),
        )
    if contested:
        return (
            "True",
            "SectionConflict",
            f"{contested} namespaces: a section is set by a baseline of higher precedence",
        )
    return ("False", "NoConflict", "no section is contested and no object is fought over")


def _selected(matched: int, protected: Sequence[str]) -> tuple[str, str, str]:
    # An empty selection keeps Ready True: a baseline written ahead of the namespaces it is meant for
    # is legitimate, and there is nothing left to reconcile. It still deserves a condition of its own,
    # or a selector that can never match looks exactly like a baseline at work.
    skipped = ", ".join(protected)
    if matched:
        note = f"; protected namespaces match too and are skipped: {skipped}" if protected else ""
        return ("True", "Matched", f"{matched} namespaces selected{note}")
    if protected:
        message = (
            f"the selector matches only protected namespaces ({skipped}); the operator never manages "
            "those, because the control plane and the operator itself run there and no baseline may "
            "change them: nothing is applied"
        )
        return ("False", "OnlyProtectedNamespaces", message)
    return (
        "False",
        "NoNamespaceMatches",
        "no namespace matches namespaceSelector (after excludeNamespaces); nothing is applied until one does",
    )


def _summary(matched: int, counts: Mapping[State, int]) -> str:
    return (
        f"{matched} namespaces selected: {counts[State.COMPLIANT]} compliant, "
        f"{counts[State.DRIFTED]} drifted, {counts[State.CONFLICT]} with a contested section"
    )


def _condition(
    kind: str,
    values: tuple[str, str, str],
    generation: int,
    previous: Mapping[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    status, reason, message = values
    unchanged = previous is not None and previous.get("status") == status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "observedGeneration": generation,
        "lastTransitionTime": previous.get("lastTransitionTime")
        if unchanged and previous
        else timestamp(now),
    }


def timestamp(now: dt.datetime) -> str:
    """RFC 3339 in UTC, whole seconds: the form of every time the API shows."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def same_status(left: Mapping[str, Any], right: Mapping[str, Any]) -> bool:
    """Equal for the purpose of writing: everything but transition times."""
    return bool(_comparable(left) == _comparable(right))


def _comparable(status: Mapping[str, Any]) -> Any:
    result = dict(status)
    result["conditions"] = [
        {key: value for key, value in condition.items() if key != "lastTransitionTime"}
        for condition in status.get("conditions") or []
    ]
    result.setdefault("problems", [])
    result.setdefault("recentDrift", [])
    return result
