"""The floor at admission: tenants cannot open what the operator keeps (manifests/admission).

Each test acts as the people of docs/threat-model.md, through impersonation: a tenant with the `edit` role
in the namespace (the role baselines hand out), a label editor allowed to patch namespaces, the operator's
ServiceAccount, the break-glass group. The API server itself evaluates the ValidatingAdmissionPolicies;
nothing here re-implements them.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from conftest import install_admission_protection, kubectl, remove_admission_protection
from impersonation import BREAK_GLASS, as_user
from kubernetes import client
from support import FULL_SET, PSA, Cluster, eventually, full_spec

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

    from support import OperatorProcess

    from localcluster import LocalCluster

TENANT = "tenant"
LABELER = "namespace-labeler"


@pytest.fixture(scope="module")
def protection(cluster: LocalCluster, api: client.ApiClient) -> Iterator[None]:
    """manifests/admission installed (Deny) for this module; the label editor's and break-glass roles."""
    rbac = client.RbacAuthorizationV1Api(api)
    labeler = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "e2e-namespace-labeler"},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "patch", "update"]}
        ],
    }
    objects = install_admission_protection(cluster)
    rbac.create_cluster_role(labeler)
    rbac.create_cluster_role_binding(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "e2e-namespace-labeler"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "e2e-namespace-labeler",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": LABELER},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BREAK_GLASS},
            ],
        }
    )
    try:
        yield
    finally:
        remove_admission_protection(cluster, objects)
        rbac.delete_cluster_role_binding("e2e-namespace-labeler")
        rbac.delete_cluster_role("e2e-namespace-labeler")


def grant_edit(
    api: client.ApiClient, namespace: str, *, user: str = TENANT, group: str | None = None
) -> None:
    """`edit` in the namespace, plus writing LimitRanges and ResourceQuotas (which `edit` may only read)
    and deleting RoleBindings: a namespace owner, so that what refuses their writes is admission, not RBAC.
    """
    rbac = client.RbacAuthorizationV1Api(api)
    owner_role = f"e2e-owner-{uuid.uuid4().hex[:6]}"
    rbac.create_namespaced_role(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": owner_role},
            "rules": [
                {"apiGroups": [""], "resources": ["limitranges", "resourcequotas"], "verbs": ["*"]},
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["rolebindings"],
                    "verbs": ["delete"],
                },
            ],
        },
    )
    subject = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Group" if group else "User",
        "name": group or user,
    }
    for kind, role in (("ClusterRole", "edit"), ("Role", owner_role)):
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"e2e-{role}-{uuid.uuid4().hex[:6]}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                "subjects": [subject],
            },
        )


def refused(call: Callable[[], Any]) -> str:
    """The API server's refusal message of `call`; fails the test if it was let through."""
    with pytest.raises(client.ApiException) as refusal:
        call()
    assert refusal.value.status == 403, refusal.value.body
    return str(refusal.value.body)


def enforced(
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    kube: Cluster,
    label: str,
    **overrides: Any,
) -> tuple[str, str]:
    namespace = make_namespace("floor", {"e2e": label})
    name = make_baseline(full_spec(label, **overrides))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name), what="the baseline applied")
    eventually(
        lambda: kube.labels(namespace).get("baseline.dev/enforced") == "true", what="the namespace marked"
    )
    return namespace, name


def wait_until_protected(api: client.ApiClient, namespace: str) -> None:
    """Policies take effect a moment after they are created: probe with a dry run that must be refused."""
    admin = client.NetworkingV1Api(api)  # not exempt: only the operator and the break-glass group are

    def denied() -> bool:
        try:
            admin.delete_namespaced_network_policy("baseline-default-deny", namespace, dry_run="All")
        except client.ApiException as error:
            return error.status == 403 and "ValidatingAdmissionPolicy" in str(error.body)
        return False

    eventually(denied, timeout=30, what="admission protection in effect")


# Warn mode is switched to and back in place (server-side apply over the Deny objects): deleting the policies
# and their bindings and creating them again at once can leave a binding's ConfigMap parameter unresolved in
# the API server (kubernetes/kubernetes#133827), which, with `parameterNotFoundAction: Allow`, silently lets
# label changes through (docs/threat-model.md).
def test_in_warn_mode_a_tenants_write_goes_through_with_a_warning(
    protection: None,
    cluster: LocalCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, _ = enforced(make_namespace, make_baseline, kube, label)
    grant_edit(api, namespace)
    install_admission_protection(cluster, "warn")
    try:
        # The same write Deny refuses: taken, with a warning, once the bindings are in effect.
        def warned() -> subprocess.CompletedProcess[str] | None:
            result = kubectl(
                cluster,
                *("--as", TENANT, "-n", namespace, "annotate", "--overwrite", "networkpolicy"),
                *("baseline-default-deny", f"probe={time.monotonic()}"),
            )
            return result if result.returncode == 0 and "Warning" in result.stderr else None

        result = eventually(warned, timeout=30, interval=0.5, what="a warning")
        assert "is managed by SecurityBaseline" in result.stderr, result.stderr
    finally:
        install_admission_protection(cluster)  # Deny again, for the rest of the module


def test_a_tenant_with_edit_can_neither_delete_nor_change_what_the_baseline_keeps(
    protection: None,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, name = enforced(make_namespace, make_baseline, kube, label)
    grant_edit(api, namespace)
    wait_until_protected(api, namespace)
    tenant = as_user(api, TENANT)
    core, networking, rbac = (
        client.CoreV1Api(tenant),
        client.NetworkingV1Api(tenant),
        client.RbacAuthorizationV1Api(tenant),
    )
    attempts = {
        "delete default deny": lambda: networking.delete_namespaced_network_policy(
            "baseline-default-deny", namespace
        ),
        "delete all network policies": lambda: networking.delete_collection_namespaced_network_policy(
            namespace
        ),
        "empty the default deny": lambda: networking.patch_namespaced_network_policy(
            "baseline-default-deny", namespace, {"spec": {"policyTypes": []}}
        ),
        "unlabel the default deny": lambda: networking.patch_namespaced_network_policy(
            "baseline-default-deny",
            namespace,
            {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}},
        ),
        "delete the limits": lambda: core.delete_namespaced_limit_range("baseline-limits", namespace),
        "raise the quota": lambda: core.patch_namespaced_resource_quota(
            "baseline-quota", namespace, {"spec": {"hard": {"pods": "1000"}}}
        ),
        "delete the binding": lambda: rbac.delete_namespaced_role_binding("baseline-team-view", namespace),
        "mount the token": lambda: core.patch_namespaced_service_account(
            "default", namespace, {"automountServiceAccountToken": True}
        ),
        "delete the default ServiceAccount": lambda: core.delete_namespaced_service_account(
            "default", namespace
        ),
    }
    for what, attempt in attempts.items():
        message = refused(attempt)
        assert "SecurityBaseline" in message, (what, message)
        if what not in {"mount the token", "delete the default ServiceAccount"}:
            assert name in message, (what, message)  # the message names the baseline to change
    # Spoofing: the operator's label on an object of the tenant's own.
    spoof = client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(
            name="allow-all", labels={"app.kubernetes.io/managed-by": "baseline-operator"}
        ),
        spec=client.V1NetworkPolicySpec(pod_selector={}, ingress=[{}], policy_types=["Ingress"]),
    )
    assert "only the baseline-operator creates" in refused(
        lambda: networking.create_namespaced_network_policy(namespace, spoof)
    )
    # What is the tenant's own stays theirs: create, change and delete their own NetworkPolicy.
    spoof.metadata.labels = {"app": "web"}
    networking.create_namespaced_network_policy(namespace, spoof)
    networking.patch_namespaced_network_policy("allow-all", namespace, {"metadata": {"labels": {"x": "y"}}})
    networking.delete_namespaced_network_policy("allow-all", namespace)
    core.patch_namespaced_service_account("default", namespace, {"metadata": {"annotations": {"team": "a"}}})
    assert kube.managed(namespace) == FULL_SET
    assert kube.automount(namespace) is False


def test_a_label_editor_cannot_change_pod_security_nor_the_labels_baselines_read(
    protection: None,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, _ = enforced(make_namespace, make_baseline, kube, label)
    wait_until_protected(api, namespace)
    labeler = client.CoreV1Api(as_user(api, LABELER))
    # The keys the operator wrote on the namespace for the policy: this baseline selects by `e2e`.
    eventually(
        lambda: "e2e" in kube.annotations(namespace).get("baseline.dev/protected-labels", "").split(","),
        what="the selection key written",
    )
    attempts = {
        "weaken enforce": {PSA: "privileged"},
        "drop enforce": {PSA: None},
        "drop the enforced mark": {"baseline.dev/enforced": None},
        "leave the baseline": {"e2e": None},
        "move to another baseline": {"e2e": "elsewhere"},
    }
    annotation_attempts = {
        "forget the keys": {"baseline.dev/protected-labels": None},
        "rewrite the keys": {"baseline.dev/protected-labels": "cost-center"},
    }
    for what, labels in attempts.items():

        def attempt(labels: dict[str, Any] = labels, dry_run: str | None = None) -> None:
            labeler.patch_namespace(namespace, {"metadata": {"labels": labels}}, dry_run=dry_run)

        # A policy created a moment ago may not be in effect yet: a dry run (same admission) says when.
        eventually(lambda: _refusal(lambda: attempt(dry_run="All")), timeout=30, what=what)
        message = refused(attempt)
        assert "baseline-operator" in message, (what, message)
    refused(
        lambda: labeler.patch_namespace(
            namespace, {"metadata": {"annotations": {"baseline.dev/previous-values": "{}"}}}
        )
    )
    for what, change in annotation_attempts.items():
        message = refused(
            lambda change=change: labeler.patch_namespace(namespace, {"metadata": {"annotations": change}})
        )
        assert "baseline-operator" in message, (what, message)
    labeler.patch_namespace(
        namespace, {"metadata": {"labels": {"cost-center": "42"}}}
    )  # other labels: theirs
    labels = kube.labels(namespace)
    assert labels[PSA] == "restricted"
    assert labels["e2e"] == label
    assert labels["cost-center"] == "42"


def _refusal(attempt: Callable[[], None]) -> str | None:
    try:
        attempt()
    except client.ApiException as error:
        return str(error.body) if error.status == 403 else None
    return None


def test_the_operator_and_the_break_glass_group_still_write(
    protection: None,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, name = enforced(make_namespace, make_baseline, kube, label)
    grant_edit(api, namespace, group=BREAK_GLASS)
    wait_until_protected(api, namespace)
    oncall = as_user(api, "oncall", BREAK_GLASS)
    before = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace).metadata.uid
    client.NetworkingV1Api(oncall).delete_namespaced_network_policy("baseline-default-deny", namespace)
    # ...and the operator, as its ServiceAccount, puts it back: its own writes pass the policy.
    eventually(
        lambda: _uid(kube, namespace) not in {None, before}, timeout=15, what="the default deny re-created"
    )
    # The break-glass group may move a namespace out of its baseline; the operator then releases it.
    client.CoreV1Api(oncall).patch_namespace(namespace, {"metadata": {"labels": {"e2e": "moved"}}})
    eventually(lambda: kube.managed(namespace) == set(), what="the operator released the namespace")
    eventually(lambda: "baseline.dev/enforced" not in kube.labels(namespace), what="the mark removed")
    assert PSA not in kube.labels(namespace)
    assert not kube.ready(name) or namespace not in str(kube.baseline(name).get("status"))


def _uid(kube: Cluster, namespace: str) -> str | None:
    try:
        return str(
            kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace).metadata.uid
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_with_the_operator_down_the_garbage_collector_and_the_namespace_controller_still_clean_up(
    protection: None,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    custom: client.CustomObjectsApi,
    label: str,
) -> None:
    collected = make_namespace("gc", {"e2e": label})
    terminated = make_namespace("term", {"e2e": label})
    name = make_baseline(full_spec(label))["metadata"]["name"]
    for namespace in (collected, terminated):
        eventually(lambda namespace=namespace: kube.managed(namespace) == FULL_SET, what="applied")
    wait_until_protected(api, collected)
    operator.stop()
    try:
        kube.core.delete_namespace(terminated)
        custom.delete_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)
        # The garbage collector deletes a deleted baseline's objects (ownerReferences)...
        eventually(
            lambda: kube.managed(collected) == set(), timeout=60, what="the garbage collector's deletes"
        )
        # ...and a namespace with managed objects and a protected ServiceAccount finishes terminating.
        eventually(lambda: _gone(kube, terminated), timeout=60, what="the namespace terminated")
    finally:
        operator.start()


def _gone(kube: Cluster, namespace: str) -> bool:
    try:
        kube.core.read_namespace(namespace)
    except client.ApiException as error:
        return error.status == 404
    return False
