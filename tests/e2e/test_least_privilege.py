"""The operator's own permissions: manifests/rbac.yaml is enough for everything it does, and no more.

Every e2e test already runs the operator as its ServiceAccount with exactly that RBAC (conftest's
`operator_kubeconfig`), so the whole suite is the proof that the rules are enough. Here: what it must not
be able to do, and that each rule is needed, checked two ways. Requests the operator makes are matched
against the rules in the API server's audit log; the two permissions that are checked *inside* a request
and never appear as a verb of their own (`create` on an apply that creates, `bind` on a RoleBinding) are
each removed in turn, and the operator must then fail, visibly, in its status.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
from conftest import render_manifests
from kubernetes import client, config
from support import (
    FULL_SET,
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    Cluster,
    OperatorProcess,
    audit_events,
    eventually,
    full_spec,
    new_operator,
    remove_lease,
)

from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from localcluster import LocalCluster

KUBECTL = KUBERNETES.cache_dir() / "kubectl"


def rbac_objects(kind: str) -> list[dict[str, Any]]:
    return [
        o for o in render_manifests() if o["kind"] == kind and o["metadata"]["name"].startswith("baseline")
    ]


@contextlib.contextmanager
def operator_instead(
    operator: OperatorProcess, tmp_path: Path, kubeconfig: Path, *args: str
) -> Iterator[OperatorProcess]:
    """Replace the session's operator by one with other arguments for the test; put it back after."""
    operator.stop()
    own = new_operator(tmp_path, kubeconfig, *args)
    try:
        own.start()
        yield own
    finally:
        own.stop()
        operator.start()


@contextlib.contextmanager
def cluster_role_without(api: client.ApiClient, *, verb: str) -> Iterator[None]:
    """The operator's ClusterRole with `verb` removed from every rule, restored afterwards."""
    rbac = client.RbacAuthorizationV1Api(api)
    original = rbac.read_cluster_role("baseline-operator")
    reduced = copy.deepcopy(original)
    reduced.rules = [rule for rule in reduced.rules if rule.verbs != [verb]]
    for rule in reduced.rules:
        rule.verbs = [v for v in rule.verbs if v != verb]
    rbac.replace_cluster_role("baseline-operator", reduced)
    try:
        yield
    finally:
        current = rbac.read_cluster_role("baseline-operator")
        original.metadata.resource_version = current.metadata.resource_version
        rbac.replace_cluster_role("baseline-operator", original)


def operator_api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def test_the_operator_cannot_read_secrets(operator_kubeconfig: Path, namespace: str) -> None:
    core = client.CoreV1Api(operator_api(operator_kubeconfig))
    for attempt in (
        lambda: core.list_namespaced_secret(namespace),
        core.list_secret_for_all_namespaces,
        lambda: core.read_namespaced_secret("anything", "kube-system"),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403


def test_the_only_service_account_the_operator_may_create_is_default(
    operator_kubeconfig: Path, namespace: str
) -> None:
    # An apply that creates is authorized as `create` with the object's name, so resourceNames holds.
    reviews = client.AuthorizationV1Api(operator_api(operator_kubeconfig))

    def may_create(name: str) -> bool:
        attributes = client.V1ResourceAttributes(
            namespace=namespace, verb="create", resource="serviceaccounts", name=name
        )
        spec = client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        review = reviews.create_self_subject_access_review(client.V1SelfSubjectAccessReview(spec=spec))
        return bool(review.status.allowed)

    assert may_create("default")
    assert not may_create("other")
    assert not may_create("")  # a plain POST, whose name is not known when it is authorized


def test_what_the_operator_may_do_has_no_wildcard(operator_kubeconfig: Path) -> None:
    for namespace in (OPERATOR_NAMESPACE, "default", "kube-system"):
        listing = subprocess.run(
            [
                str(KUBECTL),
                "--kubeconfig",
                str(operator_kubeconfig),
                "auth",
                "can-i",
                "--list",
                "-n",
                namespace,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
        for row in rows:
            resource, verbs = row[0], " ".join(row[1:])
            if resource.startswith("["):  # a non-resource URL: the built-in discovery roles of every user
                continue
            assert "*" not in resource, row
            assert "[*]" not in verbs, row
            assert "*," not in verbs, row
            assert not resource.startswith("secrets"), row
            for forbidden in ("escalate", "impersonate"):
                assert forbidden not in verbs, row


def test_each_verb_granted_is_a_request_the_operator_makes(
    operator: OperatorProcess,
    api: client.ApiClient,
    cluster: LocalCluster,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    remove_lease(api)
    since = time.time()
    # One replica with leader election: the Lease verbs are part of the job.
    with operator_instead(operator, tmp_path, operator_kubeconfig, "--leader-election-id", "rbac-check"):
        namespace = make_namespace("priv", {"e2e": label})
        name = make_baseline(full_spec(label, workloads={}))["metadata"]["name"]
        eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name), what="compliant")
        kube.networking.delete_namespaced_network_policy("baseline-default-deny", namespace)
        eventually(lambda: kube.events(name, "DriftRepaired"), what="a DriftRepaired Event")
        kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": "left"}}})
        eventually(lambda: kube.managed(namespace) == set(), what="objects removed after the namespace left")
        # The workload policy: written above, deleted once the baseline drops its workloads section.
        registration = client.AdmissionregistrationV1Api(api)
        policies = f"baseline.dev/baseline={name}"
        assert registration.list_validating_admission_policy(label_selector=policies).items
        kube.custom.patch_cluster_custom_object(
            "baseline.dev", "v1alpha1", "securitybaselines", name, {"spec": {"workloads": None}}
        )
        eventually(
            lambda: not registration.list_validating_admission_policy(label_selector=policies).items,
            what="the workload policy deleted",
        )
    used = {
        (event["verb"], _resource(event["objectRef"]), event["objectRef"].get("namespace", ""))
        for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
        if "objectRef" in event  # discovery (/apis...) has none
        and event.get("annotations", {}).get("authorization.k8s.io/decision") == "allow"
    }
    # Checked inside another request, never a request of their own: proven by removal, below.
    inner = {("create", "limitranges"), ("create", "resourcequotas"), ("create", "networkpolicies")}
    inner |= {("create", "rolebindings"), ("create", "serviceaccounts"), ("bind", "clusterroles")}
    inner |= {("create", "validatingadmissionpolicies"), ("create", "validatingadmissionpolicybindings")}
    # Only where the cluster serves the network policy API's Admin tier: exercised in test_admin_tier.py.
    inner |= {
        (verb, resource)
        for verb in ("list", "watch", "create", "patch", "delete")
        for resource in ("clusternetworkpolicies", "adminnetworkpolicies")
    }
    unused = []
    for kind in ("ClusterRole", "Role"):
        for role in rbac_objects(kind):
            scope = role["metadata"].get("namespace", "")
            for rule in role["rules"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        if (verb, resource) in inner:
                            continue
                        if not any(u[0] == verb and u[1] == resource and scope in {"", u[2]} for u in used):
                            unused.append(f"{kind}/{role['metadata']['name']}: {verb} {resource}")
    assert not unused, f"granted but never used: {unused}"


def _resource(reference: dict[str, Any]) -> str:
    subresource = reference.get("subresource")
    return f"{reference.get('resource')}/{subresource}" if subresource else str(reference.get("resource"))


def test_without_create_a_new_namespace_cannot_get_its_objects_and_the_status_says_forbidden(
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    with cluster_role_without(api, verb="create"):
        namespace = make_namespace("nocreate", {"e2e": label})
        name = make_baseline(full_spec(label))["metadata"]["name"]
        eventually(
            lambda: any(p["reason"] == "Forbidden" for p in kube.problems(name)),
            what="a Forbidden problem in the status",
        )
        assert kube.managed(namespace) == set()
    eventually(
        lambda: kube.managed(namespace) == FULL_SET and kube.ready(name), what="healed with the rule back"
    )


def test_binding_a_role_the_rbac_does_not_allow_is_refused_by_the_api_server_and_reported(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    # The operator is told `admin` is allowed, but its `bind` permission (resourceNames view, edit) says
    # otherwise: the API server refuses, the operator reports it and carries on.
    with operator_instead(
        operator, tmp_path, operator_kubeconfig, "--allowed-cluster-roles", "view,edit,admin"
    ) as own:
        namespace = make_namespace("nobind", {"e2e": label})
        spec = full_spec(label)
        spec["rbac"]["roleBindings"][0]["clusterRole"] = "admin"
        name = make_baseline(spec)["metadata"]["name"]
        eventually(
            lambda: any(
                p["reason"] == "Forbidden" and "RoleBinding" in p["message"] for p in kube.problems(name)
            ),
            what="the refused binding reported",
        )
        assert own.popen is not None
        assert own.popen.poll() is None, "the operator must not crash"
        assert not any(o.startswith("RoleBinding/") for o in kube.managed(namespace))
        # Binding an allowed role still works in the same operator.
        spec["rbac"]["roleBindings"][0]["clusterRole"] = "view"
        other = make_baseline({**spec, "namespaceSelector": {"matchLabels": {"e2e": f"{label}-2"}}})
        second = make_namespace("bind", {"e2e": f"{label}-2"})
        eventually(lambda: kube.managed(second) == FULL_SET and kube.ready(other["metadata"]["name"]))
