"""The metadata block in the Admin tier, on the real control plane with the network policy API's CRDs.

The CRDs come from the pinned `sigs.k8s.io/network-policy-api` modules (tools/network-policy-api/). With them
installed, Auto puts the block into one cluster-scoped policy per baseline; without them, NetworkPolicies.
Switching either way leaves no moment without a block and no orphan, seen by watches of both kinds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client, watch
from support import MANAGED, Cluster, eventually

from localcluster.crds import network_policy_api_crd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from support import OperatorProcess

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


class Events:
    """Every ADDED and DELETED of the namespace's NetworkPolicies and of one Admin-tier kind, timed."""

    def __init__(self, api: client.ApiClient, namespace: str, version: str, plural: str) -> None:
        self.seen: list[tuple[float, str, str]] = []
        self._watches: list[watch.Watch] = []
        networking = client.NetworkingV1Api(api)
        custom = client.CustomObjectsApi(api)
        self._follow(networking.list_namespaced_network_policy, namespace)
        self._follow(custom.list_cluster_custom_object, GROUP, version, plural)
        time.sleep(0.5)

    def _follow(self, lister: Any, *args: str) -> None:
        stream = watch.Watch()
        self._watches.append(stream)

        def run() -> None:
            with contextlib.suppress(Exception):
                for event in stream.stream(lister, *args, timeout_seconds=120, _request_timeout=130):
                    item = event["object"]
                    name = item["metadata"]["name"] if isinstance(item, dict) else item.metadata.name
                    self.seen.append((time.monotonic(), event["type"], name))

        threading.Thread(target=run, daemon=True).start()

    def first(self, kind: str, name: str) -> float:
        return next(at for at, event, seen in self.seen if event == kind and seen == name)

    def stop(self) -> None:
        for stream in self._watches:
            stream.stop()


def test_with_the_admin_tier_served_the_block_moves_there_and_back_without_a_gap(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    custom: client.CustomObjectsApi,
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
    with served(api, "AdminNetworkPolicy"):
        events = Events(api, namespace, "v1alpha1", "adminnetworkpolicies")
        try:
            # Auto: the AdminNetworkPolicy, selecting the namespace by the label the operator puts on it.
            eventually(
                lambda: policy in admin_policies(api, "v1alpha1", "adminnetworkpolicies"), what="the ANP"
            )
            eventually(
                lambda: kube.labels(namespace).get("baseline.dev/metadata-block") == name, what="labelled"
            )
            eventually(lambda: block_policies(kube, namespace) == set(), what="the NetworkPolicy block gone")
            anp = admin_policies(api, "v1alpha1", "adminnetworkpolicies")[policy]
            assert anp["spec"]["subject"] == {
                "namespaces": {"matchLabels": {"baseline.dev/metadata-block": name}}
            }
            assert anp["spec"]["egress"][-1]["action"] == "Deny"
            assert "169.254.169.254/32" in anp["spec"]["egress"][-1]["to"][0]["networks"]
            eventually(
                lambda: any(e[1] == "DELETED" and e[2] == "baseline-block-metadata" for e in events.seen),
                what="seen",
            )
            assert events.first("ADDED", policy) < events.first("DELETED", "baseline-block-metadata")
            # Tampering with it is repaired like any managed object.
            custom.patch_cluster_custom_object(
                GROUP,
                "v1alpha1",
                "adminnetworkpolicies",
                policy,
                {
                    "spec": {
                        "egress": [anp["spec"]["egress"][0]]
                        if len(anp["spec"]["egress"]) > 1
                        else [{"name": "x", "action": "Pass", "to": [{"networks": ["192.0.2.0/24"]}]}]
                    }
                },
            )
            eventually(
                lambda: (
                    admin_policies(api, "v1alpha1", "adminnetworkpolicies")[policy]["spec"]["egress"][-1][
                        "action"
                    ]
                    == "Deny"
                ),
                what="the ANP repaired",
            )
            # Switched to NetworkPolicies in the spec: the NetworkPolicy block first, then the ANP goes.
            spec = custom.get_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)[
                "spec"
            ]
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
            eventually(lambda: any(e[1] == "DELETED" and e[2] == policy for e in events.seen), what="seen")
            added_again = [
                at
                for at, event, seen in events.seen
                if event == "ADDED" and seen == "baseline-block-metadata"
            ]
            assert added_again
            assert added_again[-1] < events.first("DELETED", policy)
        finally:
            events.stop()
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
