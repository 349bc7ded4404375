import datetime as dt
import re

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


def selected(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "NamespacesSelected")


def test_a_selector_matching_only_protected_namespaces_says_so_and_stays_ready() -> None:
    status = build_status(
        generation=1,
        spec_error=None,
        matched=[],
        results={},
        previous={},
        now=NOW,
        protected_skipped=["kube-system", "kube-public"],
    )
    condition = selected(status)
    assert (condition["status"], condition["reason"]) == ("False", "OnlyProtectedNamespaces")
    assert "kube-public, kube-system" in condition["message"]
    assert "never manages" in condition["message"]
    # Nothing is left to reconcile: the selection, not the reconcile, is what is wrong.
    assert conditions(status)["Ready"] == ("True", "Reconciled")
    assert status["matchedNamespaces"] == 0


def test_a_selector_matching_nothing_is_visible_but_ready() -> None:
    status = build_status(generation=1, spec_error=None, matched=[], results={}, previous={}, now=NOW)
    assert conditions(status)["NamespacesSelected"] == ("False", "NoNamespaceMatches")
    assert conditions(status)["Ready"] == ("True", "Reconciled")


def test_selected_namespaces_name_the_protected_ones_skipped_beside_them() -> None:
    results = {"a": NamespaceResult(1, State.COMPLIANT)}
    status = build_status(
        generation=1,
        spec_error=None,
        matched=["a"],
        results=results,
        previous={},
        now=NOW,
        protected_skipped=["kube-system"],
    )
    condition = selected(status)
    assert (condition["status"], condition["reason"]) == ("True", "Matched")
    assert condition["message"] == (
        "1 namespaces selected; protected namespaces match too and are skipped: kube-system"
    )


def test_an_invalid_spec_names_the_field_first_and_evaluates_nothing_else() -> None:
    status = build_status(
        generation=3,
        spec_error="spec.networkPolicy: must be an object, not string",
        matched=[],
        results={},
        previous={},
        now=NOW,
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("spec.networkPolicy: must be an object, not string (")
    assert ready["observedGeneration"] == 3
    for kind in ("Drifted", "Conflict", "NamespacesSelected"):
        assert conditions(status)[kind] == ("Unknown", "InvalidSpec")


def test_every_condition_fits_the_crds_condition_schema() -> None:
    # The status subresource is validated against the CRD: a reason that breaks its pattern, or a
    # message over the limit, would make the status write itself fail and leave nothing reported.
    reason = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    cases = [
        {"spec_error": "spec.x: " + "y" * 5000, "matched": [], "protected_skipped": []},
        {"spec_error": None, "matched": [], "protected_skipped": ["kube-system"]},
        {"spec_error": None, "matched": [], "protected_skipped": []},
        {"spec_error": None, "matched": ["a"], "protected_skipped": ["kube-public"]},
    ]
    for case in cases:
        status = build_status(generation=1, results={}, previous={}, now=NOW, **case)
        for condition in status["conditions"]:
            assert reason.fullmatch(condition["reason"])
            assert condition["status"] in {"True", "False", "Unknown"}
            assert len(condition["message"]) <= 32768
