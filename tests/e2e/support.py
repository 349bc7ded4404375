"""Helpers for the e2e tier: waiting for outcomes, reading the audit log, running the operator."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client

from localcluster.operator_process import (
    OPERATOR_NAMESPACE,
    OperatorExitedError,
    OperatorProcess,
    new_operator,
)

__all__ = ["OPERATOR_NAMESPACE", "OperatorExitedError", "OperatorProcess", "new_operator"]

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:baseline-operator"
"""The operator runs as its own ServiceAccount, with the RBAC from manifests/ (not system:masters)."""
GROUP, VERSION, PLURAL = "baseline.dev", "v1alpha1", "securitybaselines"


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or check.__name__} (last: {last!r})")
        time.sleep(interval)


def audit_events(audit_log: Path, *, user: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
    """Audit events (ResponseComplete) of `user` whose request was received after `since` (epoch s)."""
    with audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != user:
                continue
            received = event.get("requestReceivedTimestamp", "")
            if _epoch(received) >= since:
                yield event


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def writes(audit_log: Path, *, user: str = OPERATOR_USER, since: float = 0.0) -> list[str]:
    """`verb resource namespace/name` of each write by `user` (status writes included)."""
    return [
        f"{event['verb']} {event['objectRef'].get('resource')}"
        f"{'/' + event['objectRef']['subresource'] if event['objectRef'].get('subresource') else ''} "
        f"{event['objectRef'].get('namespace', '')}/{event['objectRef'].get('name', '')}"
        for event in audit_events(audit_log, user=user, since=since)
        if event.get("verb") in WRITE_VERBS
    ]


MANAGED = "app.kubernetes.io/managed-by=baseline-operator"
PSA = "pod-security.kubernetes.io/enforce"


def full_spec(label: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"e2e": label}},
        "networkPolicy": {"defaultDeny": {"ingress": True, "egress": True}, "allowDNS": True},
        "limitRange": {
            "default": {"cpu": "500m", "memory": "512Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        },
        "resourceQuota": {"hard": {"pods": "20", "requests.cpu": "4"}},
        "rbac": {
            "roleBindings": [
                {
                    "name": "team-view",
                    "clusterRole": "view",
                    "subjects": [{"kind": "Group", "name": "team-${namespace}"}],
                }
            ],
            "defaultServiceAccount": {"automountToken": False},
        },
        "podSecurity": {"enforce": "restricted", "warn": "restricted"},
    }
    spec.update(overrides)
    return spec


class Cluster:
    """Reads of what a user checks with kubectl."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def managed(self, namespace: str) -> set[str]:
        """`Kind/name` of every object labelled as ours in the namespace."""
        found = {
            f"NetworkPolicy/{o.metadata.name}"
            for o in self.networking.list_namespaced_network_policy(namespace, label_selector=MANAGED).items
        }
        found |= {
            f"LimitRange/{o.metadata.name}"
            for o in self.core.list_namespaced_limit_range(namespace, label_selector=MANAGED).items
        }
        found |= {
            f"ResourceQuota/{o.metadata.name}"
            for o in self.core.list_namespaced_resource_quota(namespace, label_selector=MANAGED).items
        }
        found |= {
            f"RoleBinding/{o.metadata.name}"
            for o in self.rbac.list_namespaced_role_binding(namespace, label_selector=MANAGED).items
        }
        return found

    def annotations(self, namespace: str) -> dict[str, str]:
        return dict(self.core.read_namespace(namespace).metadata.annotations or {})

    def labels(self, namespace: str) -> dict[str, str]:
        return self.core.read_namespace(namespace).metadata.labels or {}

    def default_service_account(self, namespace: str) -> Any:
        """The namespace's default ServiceAccount, or None while its controller (or the operator) has not
        created it yet."""
        try:
            return self.core.read_namespaced_service_account("default", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def automount(self, namespace: str) -> bool | None:
        """The default ServiceAccount's automount flag; None also while there is no such ServiceAccount."""
        account = self.default_service_account(namespace)
        return None if account is None else account.automount_service_account_token

    def baseline(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        return result

    def problems(self, name: str) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = self.baseline(name).get("status", {}).get("problems", [])
        return problems

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        conditions = self.baseline(name).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), None)

    def events(self, name: str, reason: str | None = None) -> list[Any]:
        """Events about the SecurityBaseline `name` (in `default`, as for any cluster-scoped object)."""
        found = self.core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
        return [event for event in found if reason is None or event.reason == reason]

    def recent_drift(self, name: str) -> list[dict[str, Any]]:
        drift: list[dict[str, Any]] = self.baseline(name).get("status", {}).get("recentDrift", [])
        return drift

    def ready(self, name: str) -> bool:
        condition = self.condition(name, "Ready")
        status = self.baseline(name).get("status", {})
        return bool(
            condition
            and condition["status"] == "True"
            and status.get("observedGeneration") == self.baseline(name)["metadata"]["generation"]
        )


FULL_SET = {
    "NetworkPolicy/baseline-default-deny",
    "NetworkPolicy/baseline-allow-dns",
    "LimitRange/baseline-limits",
    "ResourceQuota/baseline-quota",
    "RoleBinding/baseline-team-view",
}


def remove_lease(api: client.ApiClient) -> None:
    """Delete the leader-election Lease an earlier test left, so that the next replica creates and leads."""
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease("baseline-operator", OPERATOR_NAMESPACE)
    except client.ApiException as error:
        if error.status != 404:
            raise


# -- user-owned objects: there before, unchanged after ------------------------------------------------


class UserObjects:
    """Objects of the user's own in a selected namespace: each must be byte-for-byte unchanged at the end."""

    def __init__(self, kube: Cluster, api: client.ApiClient, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.serializer = api
        core, networking, rbac = kube.core, kube.networking, kube.rbac
        meta = client.V1ObjectMeta(name="user-owned", labels={"team": "payments"})
        networking.create_namespaced_network_policy(
            namespace, client.V1NetworkPolicy(metadata=meta, spec=client.V1NetworkPolicySpec(pod_selector={}))
        )
        core.create_namespaced_limit_range(
            namespace,
            client.V1LimitRange(
                metadata=meta,
                spec=client.V1LimitRangeSpec(
                    limits=[client.V1LimitRangeItem(type="Container", max={"cpu": "8"})]
                ),
            ),
        )
        core.create_namespaced_resource_quota(
            namespace,
            client.V1ResourceQuota(metadata=meta, spec=client.V1ResourceQuotaSpec(hard={"secrets": "50"})),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=meta,
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
                ),
                subjects=[
                    client.RbacV1Subject(kind="User", name="auditor", api_group="rbac.authorization.k8s.io")
                ],
            ),
        )
        core.patch_namespace(
            namespace, {"metadata": {"labels": {"cost-center": "42"}, "annotations": {"owner": "payments"}}}
        )
        eventually(
            lambda: kube.default_service_account(namespace) is not None, what="the default ServiceAccount"
        )
        core.patch_namespaced_service_account(
            "default",
            namespace,
            {"metadata": {"annotations": {"team": "payments"}}, "imagePullSecrets": [{"name": "r"}]},
        )
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        core, networking, rbac, ns = self.kube.core, self.kube.networking, self.kube.rbac, self.namespace
        serialize = self.serializer.sanitize_for_serialization
        quota = serialize(core.read_namespaced_resource_quota("user-owned", ns))
        namespace = core.read_namespace(ns).metadata
        account = core.read_namespaced_service_account("default", ns)
        return {
            # Untouched objects: resourceVersion and content.
            "NetworkPolicy": serialize(networking.read_namespaced_network_policy("user-owned", ns)),
            "LimitRange": serialize(core.read_namespaced_limit_range("user-owned", ns)),
            "RoleBinding": serialize(rbac.read_namespaced_role_binding("user-owned", ns)),
            # The quota controller writes the quota's status: its spec and metadata are the user's.
            "ResourceQuota": {"spec": quota["spec"], "labels": quota["metadata"].get("labels")},
            # Objects the operator shares with the user: everything but the operator's own fields.
            "Namespace": {
                "labels": _users(namespace.labels, "pod-security.kubernetes.io/", "baseline.dev/"),
                "annotations": _users(namespace.annotations, "baseline.dev/"),
            },
            "ServiceAccount": {
                "annotations": _users(account.metadata.annotations, "baseline.dev/"),
                "imagePullSecrets": serialize(account.image_pull_secrets),
            },
        }

    def unchanged(self) -> list[str]:
        after = self.snapshot()
        return [kind for kind in self.before if self.before[kind] != after[kind]]


def _users(values: dict[str, str] | None, *operators_prefixes: str) -> dict[str, str]:
    """Labels or annotations without the operator's own (the Pod Security labels, its mark and record)."""
    return {key: value for key, value in (values or {}).items() if not key.startswith(operators_prefixes)}
