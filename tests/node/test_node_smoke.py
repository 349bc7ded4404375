"""The real node works: it is Ready, Pods resolve names through CoreDNS, and NetworkPolicies are enforced.

Each "blocked" probe is paired in the same test with the same probe succeeding where nothing blocks it.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from kubernetes import client

from localcluster import netns
from localcluster.node import CLUSTER_DNS, METADATA_MARKER, NODE_NAME, LocalNode

if TYPE_CHECKING:
    from collections.abc import Callable

    from node_pods import Pods, Probe

KUBERNETES_FQDN = "kubernetes.default.svc.cluster.local"


def deny(api: client.ApiClient, namespace: str, *policy_types: str) -> None:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-" + "-".join(t.lower() for t in policy_types)},
        "spec": {"podSelector": {}, "policyTypes": list(policy_types)},
    }
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, body)


def until_blocked(probe: Callable[[], Probe], timeout: float = 15.0) -> Probe:
    """Probe until it fails: the enforcer applies a new policy within a moment, not instantly."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if not result.ok or time.monotonic() > deadline:
            return result


def test_node_is_ready_with_the_enforcer_and_coredns(node: LocalNode, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ready_node = core.read_node(NODE_NAME)
    conditions = {c.type: c.status for c in ready_node.status.conditions}
    assert conditions["Ready"] == "True"
    addresses = {a.type: a.address for a in ready_node.status.addresses}
    assert addresses["InternalIP"] == node.network.node_address
    assert ready_node.status.node_info.kubelet_version == "v1.36.3"
    assert ready_node.status.node_info.container_runtime_version == "containerd://2.4.2"
    assert not ready_node.spec.taints
    system = core.list_namespaced_pod("kube-system").items
    running = {p.metadata.labels.get("k8s-app") for p in system if p.status.phase == "Running"}
    assert {"kube-dns", "kube-network-policies"} <= running
    assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == CLUSTER_DNS


def test_the_node_namespace_has_no_way_off_the_machine(node: LocalNode) -> None:
    # A route lookup only, no packet: whatever a Pod sends to an outside address dies in the node.
    for family in ("-4", "-6"):
        routes = subprocess.run(
            node.network.in_node("ip", family, "route", "show", "default"),
            capture_output=True,
            text=True,
            check=True,
        )
        assert routes.stdout.strip() == ""
    lookup = subprocess.run(
        node.network.in_node("ip", "route", "get", "192.0.2.1"), capture_output=True, text=True, check=False
    )
    assert lookup.returncode != 0
    assert "unreachable" in lookup.stderr


def test_a_pod_resolves_the_kubernetes_service_over_udp_and_tcp(
    pods: Pods, make_namespace: Callable[..., str]
) -> None:
    namespace = make_namespace("dns")
    pod = pods.run_busybox(namespace).metadata.name
    assert pods.resolve_udp(namespace, pod, KUBERNETES_FQDN) == ["10.0.0.1"]
    assert pods.resolve_tcp(namespace, pod, KUBERNETES_FQDN) == ["10.0.0.1"]
    # The short name through the Pod's search list, then the API server through kube-proxy's Service rules.
    resolv_conf = pods.exec(namespace, pod, "cat /etc/resolv.conf").stdout
    assert f"nameserver {CLUSTER_DNS}" in resolv_conf
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in resolv_conf
    assert pods.tcp_connect(namespace, pod, "kubernetes.default.svc", 443).ok
    # ServiceAccount tokens are projected as usual.
    assert pods.exec(namespace, pod, "test -s /var/run/secrets/kubernetes.io/serviceaccount/token").ok


def test_the_metadata_emulation_answers_until_egress_is_denied(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str]
) -> None:
    open_namespace, closed_namespace = make_namespace("md-open"), make_namespace("md-closed")
    open_pod = pods.run_busybox(open_namespace).metadata.name
    closed_pod = pods.run_busybox(closed_namespace).metadata.name
    for url in (f"http://{netns.METADATA_IP}/", f"http://[{netns.METADATA_IP_V6}]/"):
        # Positive control: with no NetworkPolicy, both Pods reach the emulation.
        assert METADATA_MARKER in pods.http_get(closed_namespace, closed_pod, url).stdout
    deny(api, closed_namespace, "Egress")
    for url in (f"http://{netns.METADATA_IP}/", f"http://[{netns.METADATA_IP_V6}]/"):
        blocked = until_blocked(lambda url=url: pods.http_get(closed_namespace, closed_pod, url))
        assert not blocked.ok, f"{url} still answers under a default-deny egress policy: {blocked}"
        assert METADATA_MARKER not in blocked.stdout
        # The same request from a namespace without policy still succeeds: the network is fine.
        assert METADATA_MARKER in pods.http_get(open_namespace, open_pod, url).stdout


def test_an_ingress_deny_is_enforced_between_pods(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str]
) -> None:
    server_namespace, client_namespace = make_namespace("server"), make_namespace("client")
    server = pods.run_web_server(server_namespace, "web")
    client_pod = pods.run_busybox(client_namespace).metadata.name
    for address in server.status.pod_ips:
        host = f"[{address.ip}]" if ":" in address.ip else address.ip
        assert "hello from web" in pods.http_get(client_namespace, client_pod, f"http://{host}:8080/").stdout
    deny(api, server_namespace, "Ingress")
    for address in server.status.pod_ips:
        host = f"[{address.ip}]" if ":" in address.ip else address.ip
        url = f"http://{host}:8080/"
        blocked = until_blocked(lambda url=url: pods.http_get(client_namespace, client_pod, url))
        assert not blocked.ok, f"{url} still answers another namespace under a default-deny ingress policy"
    # The server is up all along: it still answers itself.
    assert "hello from web" in pods.http_get(server_namespace, "web", "http://127.0.0.1:8080/").stdout
