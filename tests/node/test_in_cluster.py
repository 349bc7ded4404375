"""The operator's image, run as the Deployment of manifests/ on the real node.

`make image` builds the image (`localcluster.operator_image`); here it is imported into the node's
containerd and `kubectl kustomize manifests/` is applied as it is but for one thing: the Deployment names
the imported image by its digest with `imagePullPolicy: Never`, where the manifests pin a registry digest
with `Always` (nothing can be pulled here). The operator then runs as users run it: two replicas, the
in-cluster ServiceAccount token, the NetworkPolicies of its own namespace, Pod Security `restricted`.

The operator of the other node tests (on the host, or this same Deployment with
`BASELINE_NODE_OPERATOR=in-cluster`) is stopped meanwhile (the `session_operators` fixture): it would
contend for the same Lease. That the in-cluster replicas did the work is read from the API server's
audit log, which names the Pod whose bound token made each request.

What the egress policy means on this node (measured here, and asserted below so that a change shows):
the API server listens on the node's own address, on a port chosen at start, and the `kubernetes` Service
(10.0.0.1:443) is translated to it before routing. Traffic to the node itself is delivered locally, where
the enforcer does not look (it polices forwarded traffic), so the policy's 443/6443 rule is never what
lets the operator reach the API server here: it would reach it on any port. On a cluster whose API server
is off the node, the rule sees the translated port (443 or 6443 are allowed; another port would be
refused). The rule names no address, so any address on 443/6443 is open to the operator: a Pod listening
on 6443 in another namespace answers it (pinned to the API server's addresses, it does not:
test_in_cluster_helm.py).

Only a real container shows how each replica handles SIGTERM: as its container's PID 1, a process gets no
signal it has no handler for. The standby used to have none before it led (kopf installs its own once it
runs): a deleted standby Pod went only when its grace period ended (30 s), and a standby being stopped took
the Lease the leader released. It now handles SIGTERM while it waits (cli.py), which the test below checks
for both replicas.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from in_cluster import (
    NAMESPACE,
    InCluster,
    ManifestsDeployment,
    a_new_baseline,
    assert_each_replica_runs_the_image_as_15555_with_a_read_only_root,
    assert_reconciled_by_its_pods,
    audited_writes,
    baseline_ready,
    leader,
    ready_pods,
)
from kubernetes import client
from test_floor_packets import wait_for
from test_node_smoke import until_blocked

from localcluster import netns
from localcluster.node import CLUSTER_DNS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from node_pods import Pods

    from localcluster.node import LocalNode

METRICS_SERVICE = f"baseline-operator-metrics.{NAMESPACE}.svc:8080"
RESOLVE = "import socket, sys; print(socket.getaddrinfo(sys.argv[1], 443)[0][4][0])"


@pytest.fixture(scope="module")
def in_cluster(
    node: LocalNode, api: client.ApiClient, imported_image: str, no_session_operator: None
) -> Iterator[InCluster]:
    deployment = ManifestsDeployment(node, api, imported_image)
    try:
        yield deployment.start()
    finally:
        deployment.stop()


def test_the_replicas_run_the_built_image_as_15555_with_a_read_only_root(
    in_cluster: InCluster, api: client.ApiClient
) -> None:
    assert_each_replica_runs_the_image_as_15555_with_a_read_only_root(in_cluster, api)


def test_the_in_cluster_operator_reconciles_a_baseline_applied_from_outside(
    in_cluster: InCluster,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    custom: client.CustomObjectsApi,
) -> None:
    with a_new_baseline(make_namespace, custom) as (namespace, name):
        assert_reconciled_by_its_pods(in_cluster, api, custom, namespace, name)


def test_its_egress_reaches_the_api_server_and_dns_and_nothing_else(
    in_cluster: InCluster, api: client.ApiClient, pods: Pods, make_namespace: Callable[..., str]
) -> None:
    operator_pod = leader(api)
    elsewhere = make_namespace("probe")
    web = pods.run_busybox(
        elsewhere,
        command=(
            "sh",
            "-c",
            (
                "mkdir -p /tmp/www && echo hello > /tmp/www/index.html"
                " && httpd -p 6443 -h /tmp/www && exec httpd -f -p 8080 -h /tmp/www"
            ),
        ),
    ).status.pod_ip
    client_pod = pods.run_busybox(elsewhere).metadata.name
    coredns = client.CoreV1Api(api).list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns")
    coredns_ip = coredns.items[0].status.pod_ip
    api_server = (in_cluster.node.network.node_address, in_cluster.node.cluster.apiserver_port)

    # Allowed: the API server through the `kubernetes` Service, and DNS.
    assert in_cluster.connect(operator_pod, "10.0.0.1", 443).ok
    resolved = in_cluster.exec_python(operator_pod, RESOLVE, "kubernetes.default.svc.cluster.local")
    assert resolved.stdout.strip() == "10.0.0.1", resolved
    assert in_cluster.connect(operator_pod, CLUSTER_DNS, 53).ok

    # Refused, each answered from a namespace without policies (the positive controls).
    refusals = {
        "the metadata API": (netns.METADATA_IP, 80),
        "CoreDNS on another port": (coredns_ip, 9153),
        "a Pod in another namespace": (web, 8080),
    }
    for what, (host, port) in refusals.items():
        assert pods.tcp_connect(elsewhere, client_pod, host, port).ok, f"{what} must answer its control"
        probe = until_blocked(lambda host=host, port=port: in_cluster.connect(operator_pod, host, port))
        assert not probe.ok, f"{what} ({host}:{port}) answered the operator: {probe}"

    # What the port-only rule and the node's own API server mean here (see the module docstring).
    assert in_cluster.connect(operator_pod, web, 6443).ok, "any address on 6443 is open to it"
    assert in_cluster.connect(operator_pod, *api_server).ok, "the node's own address is not policed"


def test_metrics_answer_through_its_service_and_only_the_metrics_port_is_open(
    in_cluster: InCluster, api: client.ApiClient, pods: Pods, make_namespace: Callable[..., str]
) -> None:
    elsewhere = make_namespace("scrape")
    scraper = pods.run_busybox(elsewhere).metadata.name
    through_service = pods.http_get(elsewhere, scraper, f"http://{METRICS_SERVICE}/metrics")
    assert through_service.ok, through_service
    assert "baseline_operator_leader" in through_service.stdout
    working = leader(api)
    for pod in ready_pods(api):
        metrics = pods.http_get(elsewhere, scraper, f"http://{pod.status.pod_ip}:8080/metrics")
        assert metrics.ok, metrics
        expected = "1.0" if pod.metadata.name == working else "0.0"
        assert f"baseline_operator_leader {expected}" in metrics.stdout, pod.metadata.name
    # The health port listens (the kubelet's probes, which no policy governs, keep the Pods Ready) but
    # only the metrics port is open to other Pods: the same scraper, the same Pod, refused.
    health = pods.http_get(elsewhere, scraper, f"http://{ready_pods(api)[0].status.pod_ip}:8081/healthz")
    assert not health.ok, health


SIGTERM_CAUGHT = """
fields = dict(line.split(":\\t", 1) for line in open("/proc/1/status").read().splitlines() if ":\\t" in line)
print(int(fields["SigCgt"], 16) >> 14 & 1)
"""


@pytest.mark.parametrize("role", ["leader", "standby"])
def test_each_replica_handles_sigterm_as_the_containers_pid_1(
    in_cluster: InCluster, api: client.ApiClient, role: str
) -> None:
    # A process that is PID 1 of its namespace receives no signal it does not handle: SIGTERM's default
    # action (exit) never happens. The e2e tests, where the operator is an ordinary process, cannot see it.
    working = leader(api)
    (pod,) = [
        pod.metadata.name for pod in ready_pods(api) if (pod.metadata.name == working) == (role == "leader")
    ]
    probe = in_cluster.exec_python(pod, SIGTERM_CAUGHT)
    assert probe.ok, probe
    assert probe.stdout.strip() == "1", f"the {role} ({pod}) does not handle SIGTERM"


def test_deleting_the_leaders_pod_hands_the_lease_to_the_other(
    in_cluster: InCluster,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    custom: client.CustomObjectsApi,
) -> None:
    first = leader(api)
    assert len({pod.metadata.name for pod in ready_pods(api)} - {first}) == 1, "a standby is waiting"
    started = time.monotonic()
    client.CoreV1Api(api).delete_namespaced_pod(first, NAMESPACE)

    def new_holder() -> str | None:
        holder = leader(api)
        return holder if holder and holder != first else None

    second = wait_for(new_holder, "a new holder of the Lease")
    handed_over = time.monotonic() - started
    print(f"Lease handed from {first} to {second} {handed_over:.1f} s after its Pod was deleted")  # noqa: T201
    # A released Lease goes to the first candidate that asks: the standby, or (seen once) the Pod that
    # replaces the deleted one, when it starts within the standby's 2 s retry period.
    replicas = {pod.metadata.name for pod in client.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items}
    assert second in replicas - {first}
    # A graceful stop releases the Lease, and a candidate retries every 2 s: no wait for its expiry (15 s).
    assert handed_over < 10
    wait_for(lambda: len(ready_pods(api)) == 2, "the Deployment's second replica back", timeout=120)
    # The new leader works: a namespace selected now gets its objects.
    with a_new_baseline(make_namespace, custom) as (namespace, name):
        wait_for(lambda: baseline_ready(custom, name), "the baseline Ready under the new leader")
        writes = wait_for(lambda: audited_writes(in_cluster.node, namespace), "writes in the new namespace")
        assert {event["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] for event in writes} == {
            second
        }
