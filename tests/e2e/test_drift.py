"""Drift on a real control plane: what a platform engineer sees when someone changes a managed object."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import FULL_SET, GROUP, PLURAL, PSA, VERSION, Cluster, eventually, full_spec, writes

if TYPE_CHECKING:
    from support import OperatorProcess

    from localcluster import LocalCluster

pytestmark = pytest.mark.usefixtures("operator")

MakeNamespace = Callable[..., str]
MakeBaseline = Callable[..., dict[str, Any]]


def converged_baseline(
    kube: Cluster, make_namespace: MakeNamespace, make_baseline: MakeBaseline, label: str, **overrides: Any
) -> tuple[str, str]:
    """A namespace under a fully applied baseline: (namespace, baseline name)."""
    namespace = make_namespace("drift", {"e2e": label})
    name = make_baseline(full_spec(label, **overrides))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.automount(namespace) is False)
    eventually(lambda: kube.ready(name), what="Ready")
    return namespace, name


def object_writes(cluster: LocalCluster, namespace: str, since: float) -> list[str]:
    """The operator's writes to objects in `namespace` (its Events and status writes left out)."""
    return [
        write
        for write in writes(cluster.audit_log, since=since)
        if f" {namespace}/" in write and not write.startswith("create events")
    ]


def raise_quota(kube: Cluster, namespace: str, *, manager: str) -> None:
    """What a user does to drift: `pods: 500` on the managed quota, as field manager `manager`."""
    kube.core.patch_namespaced_resource_quota(
        "baseline-quota", namespace, {"spec": {"hard": {"pods": "500"}}}, field_manager=manager
    )


def quota_hard(kube: Cluster, namespace: str) -> dict[str, str]:
    hard: dict[str, str] = kube.core.read_namespaced_resource_quota("baseline-quota", namespace).spec.hard
    return hard


def test_a_deleted_network_policy_is_restored_reported_and_recorded(
    kube: Cluster, make_namespace: MakeNamespace, make_baseline: MakeBaseline, label: str
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    old = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    kube.networking.delete_namespaced_network_policy("baseline-default-deny", namespace)

    def restored() -> bool:
        try:
            found = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return bool(found.metadata.uid != old.metadata.uid)

    eventually(restored, timeout=10, interval=0.05, what="the NetworkPolicy is back")
    event = eventually(lambda: kube.events(name, "DriftRepaired"), what="a DriftRepaired Event")[0]
    assert event.type == "Warning"
    assert f"NetworkPolicy {namespace}/baseline-default-deny was deleted" in event.message
    drift = eventually(lambda: kube.recent_drift(name), what="status.recentDrift")[0]
    assert drift["namespace"] == namespace
    assert (drift["kind"], drift["name"]) == ("NetworkPolicy", "baseline-default-deny")
    assert (drift["reason"], drift["action"]) == ("Missing", "Repaired")
    assert kube.condition(name, "Drifted")["status"] == "False"  # repaired: nothing drifted any more


def test_an_edited_quota_is_restored_and_the_editor_named(
    kube: Cluster, make_namespace: MakeNamespace, make_baseline: MakeBaseline, label: str
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    raise_quota(kube, namespace, manager="e2e-editor")
    eventually(lambda: quota_hard(kube, namespace).get("pods") == "20", timeout=10, what="hard.pods restored")
    drift = eventually(lambda: kube.recent_drift(name), what="status.recentDrift")[0]
    assert (drift["reason"], drift["action"], drift["changedBy"]) == ("Modified", "Repaired", "e2e-editor")
    assert any(field.startswith("spec.hard.pods: expected '20', found '500'") for field in drift["fields"])
    [event] = eventually(lambda: kube.events(name, "DriftRepaired"))
    assert "was modified by e2e-editor" in event.message
    assert "spec.hard.pods" in event.message


def test_an_annotation_we_do_not_own_is_not_drift(
    kube: Cluster,
    cluster: LocalCluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    time.sleep(1)  # our own writes' watch events settle
    since = time.time()
    kube.networking.patch_namespaced_network_policy(
        "baseline-default-deny",
        namespace,
        {"metadata": {"annotations": {"team.example/owner": "payments"}, "labels": {"extra": "yes"}}},
    )
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"cost-center": "42"}}})
    time.sleep(3)
    assert object_writes(cluster, namespace, since) == []
    policy = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert policy.metadata.annotations["team.example/owner"] == "payments"
    assert kube.recent_drift(name) == []
    assert kube.events(name) == []


def test_a_removed_pod_security_label_is_restored(
    kube: Cluster, make_namespace: MakeNamespace, make_baseline: MakeBaseline, label: str
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {PSA: None}}})
    eventually(lambda: kube.labels(namespace).get(PSA) == "restricted", timeout=10, what="label restored")
    kube.core.patch_namespaced_service_account(
        "default", namespace, {"automountServiceAccountToken": True}, field_manager="e2e-editor"
    )
    eventually(lambda: kube.automount(namespace) is False, timeout=10, what="token mount restored")
    reasons = eventually(lambda: len(kube.recent_drift(name)) >= 2 and kube.recent_drift(name))
    assert {(d["kind"], d["action"]) for d in reasons} == {
        ("Namespace", "Repaired"),
        ("ServiceAccount", "Repaired"),
    }


def test_audit_mode_reports_drift_with_fields_and_writes_nothing(
    kube: Cluster,
    cluster: LocalCluster,
    custom: client.CustomObjectsApi,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"spec": {"mode": "Audit"}})
    eventually(lambda: kube.ready(name), what="Ready at the Audit generation")
    since = time.time()
    kube.networking.delete_namespaced_network_policy("baseline-allow-dns", namespace)
    raise_quota(kube, namespace, manager="e2e-editor")

    def reported() -> dict[str, dict[str, Any]]:
        problems = kube.baseline(name).get("status", {}).get("problems", [])
        found = {p["kind"]: p for p in problems if p["namespace"] == namespace}
        return found if {"NetworkPolicy", "ResourceQuota"} <= set(found) else {}

    problems = eventually(reported, timeout=10, what="both drifts in status.problems")
    assert problems["NetworkPolicy"]["reason"] == "Missing"
    assert problems["ResourceQuota"]["reason"] == "Modified"
    assert problems["ResourceQuota"]["changedBy"] == "e2e-editor"
    assert "spec.hard.pods: expected '20', found '500'" in problems["ResourceQuota"]["fields"][0]
    assert kube.condition(name, "Drifted")["status"] == "True"
    assert kube.baseline(name)["status"]["driftedNamespaces"] == 1
    detected = eventually(lambda: len(kube.events(name, "DriftDetected")) >= 2 and kube.events(name))
    assert all("reported only (Audit mode)" in event.message for event in detected)
    time.sleep(2)
    assert object_writes(cluster, namespace, since) == []
    assert quota_hard(kube, namespace)["pods"] == "500"
    # Reported once: another look at the same drift posts no second Event.
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"nudge": "1"}}})
    time.sleep(2)
    assert len(kube.events(name, "DriftDetected")) == len(detected)


def test_a_revert_war_is_stopped_and_the_other_writer_named(
    kube: Cluster,
    cluster: LocalCluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    since = time.time()
    stop = threading.Event()
    edits = 0

    def keep_changing() -> None:
        nonlocal edits
        while not stop.is_set():
            raise_quota(kube, namespace, manager="fight-e2e")
            edits += 1
            stop.wait(0.3)

    fighter = threading.Thread(target=keep_changing)
    fighter.start()
    try:
        conflict = eventually(
            lambda: (c := kube.condition(name, "Conflict")) and c["status"] == "True" and c,
            timeout=20,
            what="Conflict raised",
        )
        time.sleep(8)  # the war goes on; the operator must have stepped back
    finally:
        stop.set()
        fighter.join()
    assert conflict["reason"] == "DriftFight"
    assert "fight-e2e" in conflict["message"]
    repairs = [w for w in object_writes(cluster, namespace, since) if "resourcequotas" in w]
    assert edits >= 25
    assert 3 <= len(repairs) <= 4, repairs  # three repairs, then a pause of 60 s
    [event] = kube.events(name, "DriftFight")
    assert "fight-e2e" in event.message
    problems = kube.baseline(name)["status"]["problems"]
    assert any(p["reason"] == "Fighting" and p.get("changedBy") == "fight-e2e" for p in problems)
    assert kube.condition(name, "Drifted")["status"] == "True"


def test_drift_made_while_the_operator_is_down_is_repaired_once_after_restart(
    kube: Cluster,
    cluster: LocalCluster,
    operator: OperatorProcess,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    namespace, name = converged_baseline(kube, make_namespace, make_baseline, label)
    untouched = make_namespace("still", {"e2e": label})
    eventually(lambda: kube.managed(untouched) == FULL_SET and kube.ready(name))
    operator.stop()
    try:
        kube.core.delete_namespaced_limit_range("baseline-limits", namespace)
        raise_quota(kube, namespace, manager="e2e-editor")
        since = time.time()
    finally:
        operator.start()
    eventually(lambda: kube.managed(namespace) == FULL_SET, timeout=30, what="LimitRange back")
    eventually(lambda: quota_hard(kube, namespace).get("pods") == "20", what="quota restored")
    time.sleep(2)
    repairs = object_writes(cluster, namespace, since)
    assert sorted(w.split()[1] for w in repairs) == ["limitranges", "resourcequotas"], repairs
    assert object_writes(cluster, untouched, since) == []
    actions = {(d["namespace"], d["kind"], d["action"]) for d in kube.recent_drift(name)}
    assert {(namespace, "LimitRange", "Repaired"), (namespace, "ResourceQuota", "Repaired")} <= actions


def test_a_storm_of_200_deletions_is_repaired(
    kube: Cluster, make_namespace: MakeNamespace, make_baseline: MakeBaseline, label: str
) -> None:
    namespaces = [make_namespace("storm", {"e2e": label}) for _ in range(40)]
    name = make_baseline(full_spec(label))["metadata"]["name"]
    for namespace in namespaces:
        eventually(lambda ns=namespace: kube.managed(ns) == FULL_SET, timeout=60)
    eventually(lambda: kube.ready(name), timeout=30)
    selector = "app.kubernetes.io/managed-by=baseline-operator"

    def delete_all(namespace: str) -> None:
        kube.networking.delete_collection_namespaced_network_policy(namespace, label_selector=selector)
        kube.core.delete_collection_namespaced_limit_range(namespace, label_selector=selector)
        kube.core.delete_collection_namespaced_resource_quota(namespace, label_selector=selector)
        kube.rbac.delete_collection_namespaced_role_binding(namespace, label_selector=selector)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(delete_all, namespaces))
    for namespace in namespaces:
        eventually(
            lambda ns=namespace: kube.managed(ns) == FULL_SET, timeout=60, what=f"{namespace} repaired"
        )
    eventually(lambda: kube.ready(name) and kube.condition(name, "Drifted")["status"] == "False")
    # The Events are rate-limited: a burst, then a summary of what was held back.
    time.sleep(1)
    repaired = kube.events(name, "DriftRepaired")
    assert 20 <= len(repaired) < 100
    [summary] = eventually(lambda: kube.events(name, "DriftEventsSuppressed"), timeout=20)
    assert "further drift Events were not posted" in summary.message
