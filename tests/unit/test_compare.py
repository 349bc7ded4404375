from baseline_operator.compare import (
    ManagerEntry,
    differences,
    last_writer_other_than,
    managers,
    owned_paths,
)

QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {
        "name": "baseline-quota",
        "namespace": "a",
        "labels": {"app.kubernetes.io/managed-by": "baseline-operator"},
    },
    "spec": {"hard": {"requests.cpu": "1000m", "limits.memory": "1024Mi"}},
}


def live_quota(**hard: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "baseline-quota",
            "namespace": "a",
            "uid": "u",
            "labels": {"app.kubernetes.io/managed-by": "baseline-operator", "team": "added-by-someone"},
            "annotations": {"note": "added by a user"},
        },
        "spec": {"hard": hard},
        "status": {"used": {"pods": "3"}},
    }


def test_normalised_quantities_and_foreign_fields_are_not_differences() -> None:
    assert differences(QUOTA, live_quota(**{"requests.cpu": "1", "limits.memory": "1Gi"})) == []


def test_a_changed_value_is_a_difference_naming_the_field() -> None:
    found = differences(QUOTA, live_quota(**{"requests.cpu": "2", "limits.memory": "1Gi"}))
    assert [d.path for d in found] == ["spec.hard.requests.cpu"]
    assert "expected '1000m', found '2'" in found[0].describe()


def test_a_missing_label_of_ours_is_a_difference() -> None:
    live = live_quota(**{"requests.cpu": "1", "limits.memory": "1Gi"})
    del live["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert [d.path for d in differences(QUOTA, live)] == ["metadata.labels.app.kubernetes.io/managed-by"]


def test_an_owned_field_the_desired_object_dropped_is_a_difference() -> None:
    owned = owned_paths(
        [
            {
                "manager": "baseline-operator",
                "operation": "Apply",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}},
                    "f:spec": {"f:hard": {"f:requests.cpu": {}, "f:limits.memory": {}, "f:pods": {}}},
                },
            }
        ],
        "baseline-operator",
    )
    live = live_quota(**{"requests.cpu": "1", "limits.memory": "1Gi", "pods": "10"})
    assert [d.path for d in differences(QUOTA, live, owned)] == ["spec.hard.pods"]


def test_lists_are_compared_item_by_item_on_our_fields_only() -> None:
    desired = {"spec": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}}
    with_default = {"spec": {"egress": [{"ports": [{"port": 53, "protocol": "UDP", "endPort": None}]}]}}
    extra_rule = {"spec": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}, {}]}}
    assert differences(desired, with_default) == []
    assert [d.path for d in differences(desired, extra_rule)] == ["spec.egress"]


def test_owner_references_of_others_are_not_differences() -> None:
    ours = {"apiVersion": "x/v1", "kind": "SecurityBaseline", "name": "b", "uid": "1", "controller": True}
    theirs = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "2"}
    desired = {"metadata": {"ownerReferences": [ours]}}
    assert differences(desired, {"metadata": {"ownerReferences": [theirs, ours]}}) == []
    assert [d.path for d in differences(desired, {"metadata": {"ownerReferences": [theirs]}})] == [
        "metadata.ownerReferences"
    ]


def test_owned_paths_stop_at_list_items() -> None:
    owned = owned_paths(
        [
            {
                "manager": "baseline-operator",
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {"f:egress": {}, "f:podSelector": {}, "f:policyTypes": {}},
                    "f:metadata": {"f:ownerReferences": {'k:{"uid":"1"}': {}}},
                },
            },
            {
                "manager": "kubectl",
                "operation": "Update",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:x": {}}}},
            },
        ],
        "baseline-operator",
    )
    assert owned == {
        ("spec", "egress"),
        ("spec", "podSelector"),
        ("spec", "policyTypes"),
        ("metadata", "ownerReferences"),
    }


def test_attribution_names_the_newest_other_writer() -> None:
    entries = managers(
        [
            {"manager": "baseline-operator", "operation": "Apply", "time": "2026-01-01T00:00:05Z"},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:03Z"},
            {"manager": "argocd-controller", "operation": "Apply", "time": "2026-01-01T00:00:01Z"},
        ]
    )
    assert last_writer_other_than(entries, "baseline-operator") == ManagerEntry(
        "kubectl-edit", "Update", "2026-01-01T00:00:03Z"
    )
