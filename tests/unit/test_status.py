import datetime as dt

from baseline_operator.status import (
    MAX_PROBLEMS,
    NamespaceResult,
    ProblemEntry,
    State,
    build_status,
    same_status,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def conditions(status: dict) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_when_every_selected_namespace_is_reconciled_at_this_generation() -> None:
    results = {"a": NamespaceResult(2, State.COMPLIANT), "b": NamespaceResult(2, State.COMPLIANT)}
    status = build_status(
        generation=2, spec_error=None, matched=["a", "b"], results=results, previous={}, now=NOW
    )
    assert conditions(status)["Ready"] == ("True", "Reconciled")
    assert status["compliantNamespaces"] == 2
    assert status["observedGeneration"] == 2


def test_progressing_while_a_namespace_has_an_older_result() -> None:
    results = {"a": NamespaceResult(2, State.COMPLIANT), "b": NamespaceResult(1, State.COMPLIANT)}
    status = build_status(
        generation=2, spec_error=None, matched=["a", "b"], results=results, previous={}, now=NOW
    )
    assert conditions(status)["Ready"] == ("False", "Progressing")


def test_drift_and_conflict_conditions_and_bounded_problems() -> None:
    problem = ProblemEntry("a", "NetworkPolicy", "baseline-default-deny", "networkPolicy", "Missing", "gone")
    results = {f"n{i}": NamespaceResult(1, State.DRIFTED, (problem,)) for i in range(30)}
    results["c"] = NamespaceResult(1, State.CONFLICT)
    status = build_status(
        generation=1, spec_error=None, matched=results, results=results, previous={}, now=NOW
    )
    assert conditions(status)["Drifted"] == ("True", "DriftFound")
    assert conditions(status)["Conflict"] == ("True", "SectionConflict")
    assert len(status["problems"]) == MAX_PROBLEMS
    assert status["driftedNamespaces"] == 30


def test_invalid_spec_is_not_ready_and_names_the_error() -> None:
    status = build_status(
        generation=1, spec_error="spec.mode: bad", matched=[], results={}, previous={}, now=NOW
    )
    assert conditions(status)["Ready"] == ("False", "InvalidSpec")


def test_transition_time_is_kept_while_the_condition_holds() -> None:
    results = {"a": NamespaceResult(1, State.COMPLIANT)}
    first = build_status(generation=1, spec_error=None, matched=["a"], results=results, previous={}, now=NOW)
    later = build_status(
        generation=1,
        spec_error=None,
        matched=["a"],
        results=results,
        previous=first,
        now=NOW + dt.timedelta(hours=1),
    )
    assert later == first
    assert same_status(later, first)


def test_a_fight_raises_conflict_naming_the_other_writer_and_recent_drift_is_kept() -> None:
    fight = "NetworkPolicy a/baseline-default-deny with argocd-controller"
    results = {
        "a": NamespaceResult(1, State.DRIFTED, fights=(fight,)),
        "c": NamespaceResult(1, State.CONFLICT),
    }
    recent = [{"namespace": "a", "kind": "NetworkPolicy", "action": "RepairPaused"}]
    status = build_status(
        generation=1,
        spec_error=None,
        matched=results,
        results=results,
        previous={},
        now=NOW,
        recent_drift=recent,
    )
    conflict = next(c for c in status["conditions"] if c["type"] == "Conflict")
    assert (conflict["status"], conflict["reason"]) == ("True", "DriftFight")
    assert fight in conflict["message"]
    assert status["recentDrift"] == recent
