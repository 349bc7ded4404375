"""The metadata block in the Admin tier, on the real control plane with the network policy API's CRDs.

The CRDs come from the pinned `sigs.k8s.io/network-policy-api` modules (tools/network-policy-api/). With them
installed, Auto puts the block into one cluster-scoped policy per baseline; without them, NetworkPolicies.
Switching either way leaves no moment without a block and no orphan, seen by watches of both kinds.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client
from support import MANAGED, OPERATOR_USER, Cluster, audit_events, eventually

from localcluster.crds import network_policy_api_crd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from support import OperatorProcess

    from localcluster import LocalCluster

GROUP = "policy.networking.k8s.io"
OPEN_EGRESS = {"networkPolicy": {"defaultDeny": {"ingress": True, "egress": False}}}


@contextlib.contextmanager
def served(api: client.ApiClient, kind: str) -> Iterator[dict[str, Any]]:
    """The CRD of `kind` installed and established; deleted after (and gone) when the block ends."""
    extensions = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(network_policy_api_crd(kind).read_text())
    name = body["metadata"]["name"]
    extensions.create_custom_resource_definition(body)
    try:
        eventually(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions or []
            ),
            what=f"{kind} served",
        )
        yield body
    finally:
        extensions.delete_custom_resource_definition(name)
        eventually(lambda: not _exists(extensions, name), timeout=60, what=f"{kind} CRD gone")


def _exists(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    try:
        extensions.read_custom_resource_definition(name)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def admin_policies(api: client.ApiClient, version: str, plural: str) -> dict[str, dict[str, Any]]:
    try:
        items = client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, version, plural, label_selector=MANAGED
        )
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return {item["metadata"]["name"]: item for item in items["items"]}


def block_policies(kube: Cluster, namespace: str) -> set[str]:
    found = kube.networking.list_namespaced_network_policy(namespace, label_selector=MANAGED).items
    return {p.metadata.name for p in found if p.metadata.name.startswith("baseline-block-metadata")}


def operator_writes(cluster: LocalCluster, since: float) -> list[dict[str, Any]]:
    """The operator's writes since `since`, in the order the API server received them (its audit log)."""
    found = [
        event
        for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
        if event["verb"] in {"create", "patch", "delete"}
    ]
    return sorted(found, key=lambda event: event["requestReceivedTimestamp"])


def answered_before_asked(
    writes: list[dict[str, Any]], first: tuple[str, str, str], then: tuple[str, str, str]
) -> bool:
    """The API server answered write `first` (verb, resource, name) before it received write `then`."""

    def find(verb: str, resource: str, name: str) -> dict[str, Any]:
        return next(
            e
            for e in writes
            if e["verb"] == verb
            and e["objectRef"].get("resource") == resource
            and e["objectRef"].get("name") == name
        )

    return bool(find(*first)["stageTimestamp"] <= find(*then)["requestReceivedTimestamp"])


def test_with_the_admin_tier_served_the_block_moves_there_and_back_without_a_gap(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    custom: client.CustomObjectsApi,
    cluster: LocalCluster,
    label: str,
) -> None:
    namespace = make_namespace("admintier", {"e2e": label})
    name = make_baseline({"namespaceSelector": {"matchLabels": {"e2e": label}}, **OPEN_EGRESS})["metadata"][
        "name"
    ]
    policy = f"baseline-{name}-metadata"
    eventually(
        lambda: block_policies(kube, namespace) == {"baseline-block-metadata"}, what="the NetworkPolicy block"
    )
    since = time.time()
    with served(api, "AdminNetworkPolicy"):
        # Auto: the AdminNetworkPolicy, selecting the namespace by the label the operator puts on it.
        eventually(lambda: policy in admin_policies(api, "v1alpha1", "adminnetworkpolicies"), what="the ANP")
        eventually(lambda: kube.labels(namespace).get("baseline.dev/metadata-block") == name, what="labelled")
        eventually(lambda: block_policies(kube, namespace) == set(), what="the NetworkPolicy block gone")
        anp = admin_policies(api, "v1alpha1", "adminnetworkpolicies")[policy]
        assert anp["spec"]["subject"] == {
            "namespaces": {"matchLabels": {"baseline.dev/metadata-block": name}}
        }
        assert anp["spec"]["egress"][-1]["action"] == "Deny"
        assert "169.254.169.254/32" in anp["spec"]["egress"][-1]["to"][0]["networks"]
        # No gap: the ANP was in place before the NetworkPolicy block went.
        assert answered_before_asked(
            operator_writes(cluster, since),
            ("patch", "adminnetworkpolicies", policy),
            ("delete", "networkpolicies", "baseline-block-metadata"),
        )
        # Tampering with it is repaired like any managed object.
        opened = {
            "spec": {"egress": [{"name": "x", "action": "Pass", "to": [{"networks": ["192.0.2.0/24"]}]}]}
        }
        custom.patch_cluster_custom_object(GROUP, "v1alpha1", "adminnetworkpolicies", policy, opened)

        def repaired() -> bool:
            egress = admin_policies(api, "v1alpha1", "adminnetworkpolicies")[policy]["spec"]["egress"]
            return bool(egress[-1]["action"] == "Deny")

        eventually(repaired, what="the ANP repaired")
        # Switched to NetworkPolicies in the spec: the NetworkPolicy block first, then the ANP goes.
        spec = custom.get_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)["spec"]
        spec["networkPolicy"]["metadataAPI"] = {
            **spec["networkPolicy"].get("metadataAPI", {}),
            "enforcement": "NetworkPolicy",
        }
        custom.patch_cluster_custom_object(
            "baseline.dev", "v1alpha1", "securitybaselines", name, {"spec": spec}
        )
        eventually(
            lambda: policy not in admin_policies(api, "v1alpha1", "adminnetworkpolicies"),
            what="the ANP pruned",
        )
        assert block_policies(kube, namespace) == {"baseline-block-metadata"}
        assert "baseline.dev/metadata-block" not in kube.labels(namespace)
        # No gap the other way either: the NetworkPolicy block was back before the ANP went.
        switched = [
            e
            for e in operator_writes(cluster, since)
            if e["verb"] != "delete" or e["objectRef"].get("name") == policy
        ]
        last_block = [e for e in switched if e["objectRef"].get("name") == "baseline-block-metadata"][-1]
        deleted = next(e for e in switched if e["verb"] == "delete")
        assert last_block["stageTimestamp"] <= deleted["requestReceivedTimestamp"]
    # The API gone: NetworkPolicies only, and nothing of ours left behind.
    eventually(
        lambda: block_policies(kube, namespace) == {"baseline-block-metadata"}, what="the NetworkPolicy block"
    )


def test_auto_prefers_the_cluster_network_policy_and_hands_over_from_the_admin_network_policy(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("admintier", {"e2e": label})
    name = make_baseline({"namespaceSelector": {"matchLabels": {"e2e": label}}, **OPEN_EGRESS})["metadata"][
        "name"
    ]
    policy = f"baseline-{name}-metadata"
    with served(api, "AdminNetworkPolicy"):
        eventually(lambda: policy in admin_policies(api, "v1alpha1", "adminnetworkpolicies"), what="the ANP")
        eventually(lambda: block_policies(kube, namespace) == set(), what="the NetworkPolicy block gone")
        with served(api, "ClusterNetworkPolicy"):
            eventually(
                lambda: policy in admin_policies(api, "v1alpha2", "clusternetworkpolicies"), what="the CNP"
            )
            cnp = admin_policies(api, "v1alpha2", "clusternetworkpolicies")[policy]
            assert cnp["spec"]["tier"] == "Admin"
            eventually(
                lambda: policy not in admin_policies(api, "v1alpha1", "adminnetworkpolicies"),
                what="the ANP pruned",
            )
            assert block_policies(kube, namespace) == set()
            assert kube.labels(namespace).get("baseline.dev/metadata-block") == name
    eventually(
        lambda: block_policies(kube, namespace) == {"baseline-block-metadata"}, what="NetworkPolicies again"
    )
