"""The operator on a real control plane: what a platform engineer sees after applying baselines."""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import (
    FULL_SET,
    GROUP,
    MANAGED,
    PLURAL,
    PSA,
    VERSION,
    Cluster,
    eventually,
    full_spec,
    writes,
)

from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from collections.abc import Callable

    from support import OperatorProcess

    from localcluster import LocalCluster

pytestmark = pytest.mark.usefixtures("operator")


def test_selected_namespaces_get_the_baseline_and_others_nothing(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    selected = [make_namespace("sel", {"e2e": label}) for _ in range(3)]
    other = make_namespace("other", {"e2e": "no"})
    # A selector that also names kube-system: protected namespaces are never selected.
    spec = full_spec(label)
    spec["namespaceSelector"] = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [*selected, "kube-system"]}
        ]
    }
    baseline = make_baseline(spec)

    for namespace in selected:
        eventually(lambda ns=namespace: kube.managed(ns) == FULL_SET, what=f"objects in {namespace}")
        eventually(lambda ns=namespace: kube.labels(ns).get(PSA) == "restricted")
        eventually(lambda ns=namespace: kube.automount(ns) is False)
    binding = kube.rbac.read_namespaced_role_binding("baseline-team-view", selected[0])
    assert binding.subjects[0].name == f"team-{selected[0]}"
    assert binding.metadata.owner_references[0].name == baseline["metadata"]["name"]
    eventually(lambda: kube.ready(baseline["metadata"]["name"]), what="Ready")
    status = kube.baseline(baseline["metadata"]["name"])["status"]
    assert status["matchedNamespaces"] == 3
    assert status["compliantNamespaces"] == 3
    assert kube.managed(other) == set()
    assert kube.managed("kube-system") == set()
    assert PSA not in kube.labels("kube-system")


def test_new_namespace_gets_objects_and_relabelled_one_is_pruned(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    make_baseline(full_spec(label))
    namespace = make_namespace("late", {"e2e": label})
    started = time.monotonic()
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.automount(namespace) is False)
    assert time.monotonic() - started < 10

    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": "moved"}}})
    eventually(lambda: kube.managed(namespace) == set(), what="pruned after the label change")
    eventually(lambda: PSA not in kube.labels(namespace), what="Pod Security labels released")
    eventually(lambda: kube.automount(namespace) is None, what="automount field released")


def test_spec_edits_are_reflected(
    kube: Cluster,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("edit", {"e2e": label})
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET)

    custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"spec": {"resourceQuota": {"hard": {"pods": "40", "requests.cpu": "4"}}}},
    )
    eventually(
        lambda: (
            kube.core.read_namespaced_resource_quota("baseline-quota", namespace).spec.hard.get("pods")
            == "40"
        )
    )

    spec = full_spec(label)
    del spec["limitRange"]
    spec["networkPolicy"] = {
        "defaultDeny": {"ingress": True, "egress": False},
        "metadataAPI": {"block": True},
    }
    current = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    current["spec"] = spec
    custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, name, current)
    expected = {
        "NetworkPolicy/baseline-default-deny",
        "NetworkPolicy/baseline-block-metadata",
        "ResourceQuota/baseline-quota",
        "RoleBinding/baseline-team-view",
    }
    eventually(
        lambda: kube.managed(namespace) == expected, what="section removed and network policy re-rendered"
    )
    deny = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert deny.spec.policy_types == ["Ingress"]
    eventually(lambda: kube.ready(name))


def test_overlapping_baselines_compose_by_section(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("compose", {"e2e": label})
    selector = {"matchLabels": {"e2e": label}}
    org = make_baseline({"namespaceSelector": selector, "priority": 10, "networkPolicy": {}}, prefix="org")
    team = make_baseline(
        {"namespaceSelector": selector, "resourceQuota": {"hard": {"pods": "7"}}}, prefix="team"
    )
    loser = make_baseline(
        {"namespaceSelector": selector, "priority": -5, "resourceQuota": {"hard": {"pods": "1"}}},
        prefix="loser",
    )

    eventually(
        lambda: (
            {"NetworkPolicy/baseline-default-deny", "ResourceQuota/baseline-quota"} <= kube.managed(namespace)
        )
    )
    eventually(
        lambda: (
            kube.core.read_namespaced_resource_quota("baseline-quota", namespace).spec.hard == {"pods": "7"}
        )
    )
    quota = kube.core.read_namespaced_resource_quota("baseline-quota", namespace)
    assert quota.metadata.labels["baseline.dev/baseline"] == team["metadata"]["name"]
    deny = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert deny.metadata.labels["baseline.dev/baseline"] == org["metadata"]["name"]

    loser_name = loser["metadata"]["name"]
    eventually(
        lambda: (kube.condition(loser_name, "Conflict") or {}).get("status") == "True",
        what="Conflict on the loser",
    )
    problems = kube.baseline(loser_name)["status"]["problems"]
    assert any(
        p["reason"] == "SectionConflict" and team["metadata"]["name"] in p["message"] for p in problems
    )


def test_users_objects_are_never_touched(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("users", {"e2e": label})
    own_policy = kube.networking.create_namespaced_network_policy(
        namespace,
        client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name="allow-web"),
            spec=client.V1NetworkPolicySpec(
                pod_selector=client.V1LabelSelector(match_labels={"app": "web"}), policy_types=["Ingress"]
            ),
        ),
    )
    # Same name as ours, not labelled: someone else's, whatever its name says.
    squatter = kube.core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="baseline-quota"),
            spec=client.V1ResourceQuotaSpec(hard={"configmaps": "99"}),
        ),
    )
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET - {"ResourceQuota/baseline-quota"})
    eventually(
        lambda: any(
            p["reason"] == "NameTaken" for p in kube.baseline(name).get("status", {}).get("problems", [])
        ),
        what="the taken name is reported",
    )
    time.sleep(1)
    after_policy = kube.networking.read_namespaced_network_policy("allow-web", namespace)
    after_quota = kube.core.read_namespaced_resource_quota("baseline-quota", namespace)
    assert after_policy.metadata.resource_version == own_policy.metadata.resource_version
    assert after_quota.spec.hard == {"configmaps": "99"}
    assert after_quota.metadata.labels is None
    assert after_quota.metadata.uid == squatter.metadata.uid


def test_deleted_baseline_leaves_nothing_and_namespaces_still_delete(
    kube: Cluster,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespaces = [make_namespace("gone", {"e2e": label}) for _ in range(2)]
    name = make_baseline(full_spec(label))["metadata"]["name"]
    for namespace in namespaces:
        eventually(lambda ns=namespace: kube.managed(ns) == FULL_SET)
    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    for namespace in namespaces:
        eventually(lambda ns=namespace: kube.managed(ns) == set(), what=f"objects gone from {namespace}")
        eventually(lambda ns=namespace: PSA not in kube.labels(ns))
    kube.core.delete_namespace(namespaces[0])

    def deleted() -> bool:
        try:
            kube.core.read_namespace(namespaces[0])
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(deleted, timeout=60, what="the namespace finishes deleting")


def test_namespace_under_a_baseline_deletes_cleanly(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("bye", {"e2e": label})
    make_baseline(full_spec(label))
    eventually(lambda: kube.managed(namespace) == FULL_SET)
    kube.core.delete_namespace(namespace)

    def deleted() -> bool:
        try:
            kube.core.read_namespace(namespace)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(deleted, timeout=60, what="the namespace finishes deleting")


def test_no_kopf_annotations_or_finalizers_on_namespaces_or_baselines(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("clean", {"e2e": label})
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET)
    eventually(lambda: kube.ready(name))
    for metadata in (
        kube.core.read_namespace(namespace).metadata,
        client.V1ObjectMeta(
            **{k: v for k, v in kube.baseline(name)["metadata"].items() if k in {"annotations", "finalizers"}}
        ),
    ):
        assert not any("kopf" in key for key in (metadata.annotations or {}))
        assert not metadata.finalizers
    assert kube.core.read_namespace(namespace).spec.finalizers == ["kubernetes"]


def test_a_second_reconcile_writes_nothing(
    kube: Cluster,
    cluster: LocalCluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespaces = [make_namespace("idle", {"e2e": label}) for _ in range(3)]
    name = make_baseline(full_spec(label))["metadata"]["name"]
    for namespace in namespaces:
        eventually(lambda ns=namespace: kube.managed(ns) == FULL_SET and kube.automount(ns) is False)
    eventually(lambda: kube.ready(name))
    time.sleep(1.5)  # let the last status write and the watch events of our own writes settle
    since = time.time()
    # An unrelated label change makes the operator reconcile each namespace again.
    for namespace in namespaces:
        kube.core.patch_namespace(namespace, {"metadata": {"labels": {"touched": "yes"}}})
    time.sleep(3)
    ours = [
        write for write in writes(cluster.audit_log, since=since) if any(ns in write for ns in namespaces)
    ]
    assert ours == []


def test_kubectl_wait_for_ready_works(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    cluster: LocalCluster,
    label: str,
) -> None:
    make_namespace("wait", {"e2e": label})
    name = make_baseline(full_spec(label))["metadata"]["name"]
    kubectl = KUBERNETES.cache_dir() / "kubectl"
    result = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
            "wait",
            "--for=condition=Ready",
            f"securitybaseline/{name}",
            "--timeout=60s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "condition met" in result.stdout


def test_operator_is_alive(operator: OperatorProcess) -> None:
    assert operator.alive()


def test_a_cluster_role_off_the_allow_list_is_reported_and_nothing_is_bound(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("rbac", {"e2e": label})
    spec = {
        "namespaceSelector": {"matchLabels": {"e2e": label}},
        "rbac": {
            "roleBindings": [
                {
                    "name": "admins",
                    "clusterRole": "cluster-admin",
                    "subjects": [{"kind": "Group", "name": "x"}],
                }
            ]
        },
        "resourceQuota": {"hard": {"pods": "3"}},
    }
    name = make_baseline(spec)["metadata"]["name"]
    eventually(
        lambda: any(
            p["reason"] == "ClusterRoleNotAllowed" and "cluster-admin" in p["message"]
            for p in kube.problems(name)
        ),
        what="the refused role is reported",
    )
    ready = kube.condition(name, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert ready["reason"] == "ReconcileError"
    # All or nothing: not even the quota of that baseline is written in that namespace.
    assert kube.managed(namespace) == set()
    assert kube.automount(namespace) is None


def test_a_changed_role_reference_recreates_the_binding(
    kube: Cluster,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("roleref", {"e2e": label})
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET)
    before = kube.rbac.read_namespaced_role_binding("baseline-team-view", namespace)
    current = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    current["spec"]["rbac"]["roleBindings"][0]["clusterRole"] = "edit"
    custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, name, current)

    def bound_to_edit() -> bool:
        # Between the delete and the create, the binding is briefly not there at all.
        bindings = kube.rbac.list_namespaced_role_binding(namespace, label_selector=MANAGED).items
        return any(b.metadata.name == "baseline-team-view" and b.role_ref.name == "edit" for b in bindings)

    eventually(bound_to_edit, what="the binding re-created with the new role")
    after = kube.rbac.read_namespaced_role_binding("baseline-team-view", namespace)
    assert after.metadata.uid != before.metadata.uid
    eventually(lambda: kube.ready(name))


def test_a_quota_below_current_usage_is_reported(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("usage", {"e2e": label})
    for index in range(3):
        kube.core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{index}"))
        )
    spec = {
        "namespaceSelector": {"matchLabels": {"e2e": label}},
        "resourceQuota": {"hard": {"count/configmaps": "2"}},
    }
    name = make_baseline(spec)["metadata"]["name"]
    eventually(
        lambda: any(
            p["reason"] == "QuotaBelowUsage" and "count/configmaps" in p["message"]
            for p in kube.problems(name)
        ),
        timeout=60,
        what="the quota below usage is reported",
    )
    assert kube.managed(namespace) == {"ResourceQuota/baseline-quota"}


def test_a_baseline_selecting_nothing_yet_is_ready_and_says_so_until_a_namespace_comes(
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(
        lambda: (kube.condition(name, "NamespacesSelected") or {}).get("reason") == "NoNamespaceMatches",
        what="the empty selection is reported",
    )
    assert (kube.condition(name, "NamespacesSelected") or {}).get("status") == "False"
    assert kube.ready(name)

    namespace = make_namespace("first", {"e2e": label})
    eventually(lambda: kube.managed(namespace) == FULL_SET)
    eventually(
        lambda: (kube.condition(name, "NamespacesSelected") or {}).get("status") == "True",
        what="the namespace is counted",
    )
    selected = kube.condition(name, "NamespacesSelected")
    assert selected is not None
    assert (selected["reason"], selected["message"]) == ("Matched", "1 namespaces selected")
    eventually(lambda: kube.ready(name))
