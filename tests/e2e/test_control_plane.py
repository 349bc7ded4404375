"""The local control plane behaves like a real cluster where our operator's behaviour depends on it."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest
from impersonation import allowed, as_user
from kubernetes import client
from support import eventually

from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from localcluster import LocalCluster


def test_version_is_the_pinned_release(cluster: LocalCluster) -> None:
    version = cluster.version()
    assert version["gitVersion"] == KUBERNETES.version()
    assert version["major"] == "1"
    assert int(version["minor"]) >= 34


def test_namespace_deletion_completes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content")))
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=60)


def test_orphan_of_a_deleted_owner_is_garbage_collected(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[reference])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        return not any(
            item.metadata.name == "child" for item in core.list_namespaced_config_map(namespace).items
        )

    eventually(child_gone, timeout=60)


def test_resource_quota_is_enforced(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # Our namespace already holds kube-root-ca.crt (root-CA publisher), so two ConfigMaps reach the limit.
    eventually(lambda: core.list_namespaced_config_map(namespace).items)
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="cm-limit"),
            spec=client.V1ResourceQuotaSpec(hard={"count/configmaps": "2"}),
        ),
    )
    # The quota controller must first compute usage; until then creations are refused as well.
    eventually(
        lambda: (
            (core.read_namespaced_resource_quota("cm-limit", namespace).status.used or {}).get(
                "count/configmaps"
            )
            == "1"
        )
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="first"))
    )
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="second"))
        )
    assert refused.value.status == 403
    assert "exceeded quota" in json.loads(refused.value.body)["message"]


def test_builtin_view_role_is_aggregated(api: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    view = eventually(
        lambda: rbac.read_cluster_role("view") if rbac.read_cluster_role("view").rules else None
    )
    resources = {resource for rule in view.rules for resource in (rule.resources or [])}
    assert {"configmaps", "pods", "services"} <= resources
    assert "secrets" not in resources


def test_rbac_is_enforced_for_a_service_account(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="app"))
    )
    user = f"system:serviceaccount:{namespace}:app"
    as_app = client.CoreV1Api(as_user(api, user))
    with pytest.raises(client.ApiException) as denied:
        as_app.list_namespaced_config_map(namespace)
    assert denied.value.status == 403

    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="app-view"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="app", namespace=namespace)],
        ),
    )
    eventually(lambda: allowed(lambda: as_app.list_namespaced_config_map(namespace)), timeout=10)


def test_custom_resource_round_trip(api: client.ApiClient) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions = client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(crd)
    try:
        custom = client.CustomObjectsApi(api)
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}

        def stored() -> bool:
            try:
                custom.create_namespaced_custom_object(group, "v1", "default", "widgets", body)
            except client.ApiException as error:
                if error.status == 404:  # the new resource is not served yet
                    return False
                raise
            return True

        eventually(stored, timeout=30)
        assert custom.get_namespaced_custom_object(group, "v1", "default", "widgets", "w")["spec"] == {
            "size": 3
        }
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")
