"""What the operator takes over on a Namespace or ServiceAccount, and what it gives back on release."""

from __future__ import annotations

import json

from baseline_operator.takeover import (
    PREVIOUS_VALUES_ANNOTATION,
    PreviousValue,
    give_back_body,
    plan_takeover,
    read_record,
    with_record,
    write_record,
)

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
ENFORCE_PATH = ("metadata", "labels", ENFORCE)


def namespace(labels: dict[str, str], record: dict | None = None) -> dict:
    metadata: dict = {"name": "team-a", "labels": labels}
    if record is not None:
        metadata["annotations"] = {PREVIOUS_VALUES_ANNOTATION: json.dumps(record)}
    return {"metadata": metadata}


def test_a_label_an_admin_had_set_is_recorded_with_its_value_and_manager_at_the_first_takeover() -> None:
    live = namespace({ENFORCE: "baseline"})
    takeover = plan_takeover(
        "Namespace", {ENFORCE: "restricted", WARN: "restricted"}, live, (), {ENFORCE_PATH: "kubectl-label"}
    )
    assert takeover.record == {ENFORCE: PreviousValue("baseline", "kubectl-label"), WARN: None}
    assert takeover.give_back == {}


def test_a_label_already_ours_or_equal_is_remembered_as_taken_with_nothing_to_give_back() -> None:
    live = namespace({ENFORCE: "restricted", WARN: "baseline"})
    takeover = plan_takeover(
        "Namespace",
        {ENFORCE: "restricted", WARN: "restricted"},
        live,
        [("metadata", "labels", WARN)],
        {ENFORCE_PATH: "kubectl-label"},
    )
    assert takeover.record == {ENFORCE: None, WARN: None}


def test_a_change_by_someone_else_after_the_takeover_is_drift_never_a_previous_value() -> None:
    # The tenant set `privileged` after the operator took the label over: releasing must not restore that.
    live = namespace({ENFORCE: "privileged"}, {ENFORCE: {"value": "baseline", "manager": "admin"}})
    takeover = plan_takeover("Namespace", {ENFORCE: "restricted"}, live, (), {ENFORCE_PATH: "tenant"})
    assert takeover.record == {ENFORCE: PreviousValue("baseline", "admin")}
    live = namespace({ENFORCE: "privileged"}, {ENFORCE: None})
    assert plan_takeover("Namespace", {ENFORCE: "restricted"}, live, (), {}).record == {ENFORCE: None}


def test_a_field_no_longer_wanted_is_given_back_to_its_previous_manager_and_leaves_the_record() -> None:
    live = namespace(
        {ENFORCE: "restricted", WARN: "restricted"},
        {ENFORCE: {"value": "baseline", "manager": "kubectl-label"}, WARN: None},
    )
    takeover = plan_takeover("Namespace", {WARN: "restricted"}, live, [ENFORCE_PATH], {})
    assert takeover.record == {WARN: None}
    assert takeover.give_back == {"kubectl-label": {ENFORCE: "baseline"}}
    released = plan_takeover("Namespace", {}, live, [ENFORCE_PATH], {})
    assert released.record == {}
    assert released.give_back == {"kubectl-label": {ENFORCE: "baseline"}}


def test_the_service_account_token_setting_is_tracked_too() -> None:
    live = {"metadata": {"name": "default"}, "automountServiceAccountToken": False}
    owners = {("automountServiceAccountToken",): "kubectl-edit"}
    takeover = plan_takeover("ServiceAccount", {"automountServiceAccountToken": True}, live, (), owners)
    assert takeover.record == {
        "automountServiceAccountToken": PreviousValue(value=False, manager="kubectl-edit")
    }
    body = give_back_body(
        "ServiceAccount", "default", "team-a", "uid-1", {"automountServiceAccountToken": False}
    )
    assert body == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "uid": "uid-1", "namespace": "team-a"},
        "automountServiceAccountToken": False,
    }


def test_the_record_round_trips_and_an_unreadable_one_counts_as_empty() -> None:
    record = {ENFORCE: PreviousValue("baseline", "kubectl-label"), WARN: None}
    body = with_record({"metadata": {"name": "team-a"}}, record)
    assert read_record(body) == record
    assert write_record(record) == body["metadata"]["annotations"][PREVIOUS_VALUES_ANNOTATION]
    for garbage in ("{", "[]", '{"x": {"value": 1}}'):
        assert read_record({"metadata": {"annotations": {PREVIOUS_VALUES_ANNOTATION: garbage}}}) == {}
    assert with_record({"metadata": {"name": "team-a"}}, {}) == {"metadata": {"name": "team-a"}}
