"""The metrics recorder: state gauges, counters, and series that go away with their baseline or namespace."""

from __future__ import annotations

from baseline_operator.metrics import MetricsRecorder
from baseline_operator.status import State


def value(recorder: MetricsRecorder, name: str, **labels: str) -> float | None:
    return recorder.registry.get_sample_value(name, labels)


def test_state_gauges_follow_the_baseline_and_disappear_with_it() -> None:
    recorder = MetricsRecorder()
    recorder.baseline_state("org", {State.COMPLIANT: 7, State.DRIFTED: 1}, ready=True)
    recorder.drifted("org", "team-a", {"NetworkPolicy": 2})
    recorder.drift_found("org", "NetworkPolicy", "Missing")
    recorder.repaired("org", "NetworkPolicy", 0.012)
    recorder.fight("org", "ResourceQuota")
    assert value(recorder, "baseline_operator_namespaces", baseline="org", state="compliant") == 7
    assert value(recorder, "baseline_operator_namespaces", baseline="org", state="error") == 0
    assert value(recorder, "baseline_operator_baseline_ready", baseline="org") == 1
    assert (
        value(
            recorder,
            "baseline_operator_drifted_objects",
            baseline="org",
            namespace="team-a",
            kind="NetworkPolicy",
        )
        == 2
    )
    assert value(recorder, "baseline_operator_drift_repairs_total", baseline="org", kind="NetworkPolicy") == 1
    assert value(recorder, "baseline_operator_drift_repair_latency_seconds_count") == 1

    recorder.forget_baseline("org")
    exposition = [
        sample
        for family in recorder.registry.collect()
        for sample in family.samples
        if sample.labels.get("baseline") == "org"
    ]
    assert exposition == []


def test_a_repaired_namespace_and_a_deleted_one_leave_no_series() -> None:
    recorder = MetricsRecorder()
    recorder.drifted("org", "team-a", {"NetworkPolicy": 1, "ResourceQuota": 1})
    recorder.drifted("org", "team-a", {"ResourceQuota": 1})
    assert (
        value(
            recorder,
            "baseline_operator_drifted_objects",
            baseline="org",
            namespace="team-a",
            kind="NetworkPolicy",
        )
        is None
    )
    recorder.drifted("org", "team-b", {"LimitRange": 3})
    recorder.forget_namespace("team-b")
    assert (
        value(
            recorder,
            "baseline_operator_drifted_objects",
            baseline="org",
            namespace="team-b",
            kind="LimitRange",
        )
        is None
    )
    assert (
        value(
            recorder,
            "baseline_operator_drifted_objects",
            baseline="org",
            namespace="team-a",
            kind="ResourceQuota",
        )
        == 1
    )


def test_without_the_namespace_label_drifted_objects_are_summed_per_baseline_and_kind() -> None:
    recorder = MetricsRecorder(with_namespace=False)
    recorder.drifted("org", "team-a", {"NetworkPolicy": 1})
    recorder.drifted("org", "team-b", {"NetworkPolicy": 2})
    assert value(recorder, "baseline_operator_drifted_objects", baseline="org", kind="NetworkPolicy") == 3
    recorder.drifted("org", "team-b", {})
    assert value(recorder, "baseline_operator_drifted_objects", baseline="org", kind="NetworkPolicy") == 1
    recorder.forget_baseline("org")
    assert value(recorder, "baseline_operator_drifted_objects", baseline="org", kind="NetworkPolicy") is None


def test_api_requests_and_errors_by_verb_and_code() -> None:
    recorder = MetricsRecorder()
    recorder.api_request("PATCH", 200, 0.01)
    recorder.api_request("PATCH", 429, 0.01)
    recorder.api_request("GET", 503, 5.0)
    assert value(recorder, "baseline_operator_api_requests_total", verb="PATCH", code="200") == 1
    assert value(recorder, "baseline_operator_api_errors_total", verb="PATCH", code="429") == 1
    assert value(recorder, "baseline_operator_api_errors_total", verb="GET", code="503") == 1
    assert value(recorder, "baseline_operator_api_errors_total", verb="PATCH", code="200") is None
