"""Drift versus roll-out, and how each drift is told in status and Events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cluster_records import FULL, account, baseline, converged, namespace, view

from baseline_operator.compare import FieldDifference
from baseline_operator.drift import DriftAction, DriftRecord, established, finding_key, reported_in
from baseline_operator.observed import ObservedBaseline
from baseline_operator.planner import Finding, Reason
from baseline_operator.spec import parse_spec

AT = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)


def stored(name: str, spec: dict[str, Any], *, generation: int, observed: int | None) -> ObservedBaseline:
    status = {} if observed is None else {"observedGeneration": observed}
    return ObservedBaseline(f"{name}", f"uid-{name}", generation, parse_spec(spec), status=status)


def test_in_process_memory_decides_when_there_is_one() -> None:
    base = baseline("org", FULL, generation=3)
    bare = view(namespace(), [base])
    assert established(base, bare, settled_generation=3)
    assert not established(base, bare, settled_generation=2)  # the spec changed: a roll-out


def test_after_a_restart_the_stored_status_and_our_objects_stand_in_for_memory() -> None:
    base = stored("org", FULL, generation=2, observed=2)
    objects, ns, sa = converged(namespace(), base)
    # Every object but one still there: the missing one was deleted while we were away.
    assert established(base, view(ns, [base], objects[1:], sa), None)
    # Nothing of ours in a namespace: a namespace created while we were away gets a roll-out.
    assert not established(base, view(namespace(), [base], [], account("team-a")), None)
    # The stored status is of an older generation: a roll-out, whatever is there.
    older = stored("org", FULL, generation=3, observed=2)
    assert not established(older, view(ns, [older], objects, sa), None)


def test_audit_baselines_are_established_once_their_generation_was_reported() -> None:
    spec = {**FULL, "mode": "Audit"}
    assert established(stored("a", spec, generation=1, observed=1), view(namespace(), []), None)
    assert not established(stored("a", spec, generation=1, observed=None), view(namespace(), []), None)


def modified() -> Finding:
    return Finding(
        "ResourceQuota",
        "team-a",
        "baseline-quota",
        "resourceQuota",
        Reason.MODIFIED,
        (
            FieldDifference("spec.hard.pods", "10", "500"),
            *(FieldDifference(f"x{i}", i, None) for i in range(9)),
        ),
        changed_by="kubectl-edit",
        since="2026-11-23T09:29:58Z",
    )


def test_a_repair_names_the_object_what_changed_who_changed_it_and_when() -> None:
    record = DriftRecord("org", modified(), DriftAction.REPAIRED, AT)
    assert record.event_reason == "DriftRepaired"
    assert record.message() == (
        "ResourceQuota team-a/baseline-quota was modified by kubectl-edit at 2026-11-23T09:29:58Z "
        "(spec.hard.pods: expected '10', found '500'; x0: expected 0, found absent; x1: expected 1, "
        "found absent): restored"
    )
    entry = record.as_status()
    assert entry == {
        "time": "2026-11-23T09:30:00Z",
        "namespace": "team-a",
        "kind": "ResourceQuota",
        "name": "baseline-quota",
        "reason": "Modified",
        "action": "Repaired",
        "changedBy": "kubectl-edit",
        "fields": [
            "spec.hard.pods: expected '10', found '500'",
            "x0: expected 0, found absent",
            "x1: expected 1, found absent",
        ],
    }


def test_a_deletion_is_not_attributed_and_a_fight_names_the_other_writer_and_the_pause() -> None:
    deleted = Finding("NetworkPolicy", "team-a", "baseline-default-deny", "networkPolicy", Reason.MISSING)
    record = DriftRecord("org", deleted, DriftAction.REPORTED, AT)
    assert record.event_reason == "DriftDetected"
    assert (
        record.message()
        == "NetworkPolicy team-a/baseline-default-deny was deleted: reported only (Audit mode)"
    )
    assert "changedBy" not in record.as_status()
    fight = DriftRecord("org", deleted, DriftAction.PAUSED, AT, other_writer="argocd", paused_for=120)
    assert fight.event_reason == "DriftFight"
    assert fight.message() == (
        "NetworkPolicy team-a/baseline-default-deny was deleted by argocd: restored, but repaired too "
        "often: repairs paused for 120s"
    )


def test_findings_already_in_a_stored_problem_list_are_not_reported_again() -> None:
    problems = [
        {"namespace": "team-a", "kind": "ResourceQuota", "name": "baseline-quota", "reason": "Modified"},
        {"namespace": "team-b", "kind": "LimitRange", "name": "baseline-limits", "reason": "Missing"},
    ]
    assert reported_in(problems, "team-a") == {finding_key(modified())}
