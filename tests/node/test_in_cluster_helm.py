"""The operator's image installed with the Helm chart on the real node, and uninstalled.

The chart renders what `manifests/` holds (tests/chart/test_chart.py keeps its default rendering equal to
`kubectl kustomize manifests/`), so the Deployment's own behaviour (Lease hand-over, SIGTERM as PID 1, the
metrics Service) is tested once, in test_in_cluster.py. What this module adds is the way Helm users take:
`helm install` with values (the imported image by digest with `image.pullPolicy=Never`, and the egress
to the API server pinned with `networkPolicy.apiServerCIDRs` to the endpoints of the `kubernetes`
Service, as the docs tell users to find them), every replica Ready, the operator working from inside the
cluster (read from the audit log, as for the kustomize install), and `helm uninstall`.

What the pinned egress shows here, and what it cannot: the API server listens on the node's own address,
which the enforcer does not police (traffic to the node is delivered locally; see test_in_cluster.py),
so that the operator still works proves only that the pinned policy is valid and breaks nothing here, not
that its `ipBlock` is what lets the operator through. What is measured on real packets is the other side:
with the rule pinned, a Pod listening on 6443 in another namespace is refused, where the unpinned rule of
the kustomize install lets the operator reach it.

What `helm uninstall` leaves (measured): the CRD and so every SecurityBaseline (Helm never deletes a CRD
from crds/), the objects each baseline wrote in tenant namespaces, unchanged, and in the release namespace
the Lease, usually still naming the stopped leader until it expires (15 s): Helm deletes the operator's Role
and ServiceAccount 10 to 80 ms after the Deployment, before the Pods stop, so the leader's release of the
Lease is refused (403); when the release wins that race, it is released at once. Everything the release
rendered is gone.

The objects of the chart's kinds left by the modules before (the host-run operator's ServiceAccount and
RBAC, from manifests/) are deleted first: Helm installs only what it owns. `no_session_operator` gives the
session's operator its access back afterwards.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from in_cluster import (
    LEASE,
    NAMESPACE,
    SELECTOR,
    InCluster,
    a_new_baseline,
    assert_each_replica_runs_the_image_as_15555_with_a_read_only_root,
    assert_reconciled_by_its_pods,
    leader,
    ready_pods,
)
from kubernetes import client
from test_floor_packets import wait_for
from test_node_smoke import until_blocked

from localcluster.binaries import HELM, ensure_built

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from node_pods import Pods

    from localcluster.node import LocalNode

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "baseline-operator"
RELEASE = "baseline-operator"
KUBERNETES_SERVICE = "kubernetes.io/service-name=kubernetes"


@dataclass
class Release:
    """The chart installed on the node, running the built image."""

    deployed: InCluster
    helm: Path
    api_server_cidrs: list[str]
    installed: bool = True

    def run(self, *args: str) -> str:
        command = [str(self.helm), f"--kubeconfig={self.deployed.node.kubeconfig}", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def uninstall(self) -> None:
        self.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout=120s")
        self.installed = False


def objects(rendered: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(rendered) if document]


def api_server_cidrs(api: client.ApiClient) -> list[str]:
    """The addresses of the `kubernetes` Service's endpoints, as single-address CIDRs (what the docs say)."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector=KUBERNETES_SERVICE
    )
    addresses = sorted({a for s in slices.items for e in s.endpoints or [] for a in e.addresses})
    assert addresses, "the kubernetes Service has endpoints"
    return [f"{a}/{ip_address(a).max_prefixlen}" for a in addresses]


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_built(HELM) / "helm"


@pytest.fixture(scope="module")
def release(
    node: LocalNode, api: client.ApiClient, imported_image: str, no_session_operator: None, helm: Path
) -> Iterator[Release]:
    repository, digest = imported_image.split("@", 1)
    cidrs = api_server_cidrs(api)
    values = [
        *("--set", f"image.repository={repository}"),
        *("--set", f"image.digest={digest}"),
        *("--set", "image.pullPolicy=Never"),
        *("--set", "networkPolicy.apiServerCIDRs={" + ",".join(cidrs) + "}"),
    ]
    deployed = InCluster(imported_image, 0.0, node)
    installed = Release(deployed, helm, cidrs, installed=False)
    # Clear the way: what the chart renders and an earlier module left (not Helm's, so Helm would refuse).
    rendered = installed.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values)
    deployed.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", "-", input_text=rendered)
    # The namespace first, labelled for Pod Security `restricted` (values.yaml: Helm's --create-namespace
    # would leave it unlabelled); the one of manifests/ is that.
    deployed.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "namespace.yaml"))
    started = time.monotonic()
    installed.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait=false", *values)
    installed.installed = True
    try:
        wait_for(lambda: len(ready_pods(api)) == 2, "both replicas Ready", timeout=180)
        deployed.ready_seconds = round(time.monotonic() - started, 1)
        print(f"helm install: {imported_image}; both replicas Ready {deployed.ready_seconds} s after it")  # noqa: T201
        yield installed
    finally:
        if installed.installed:
            installed.uninstall()
        wait_for(
            lambda: not client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items,
            "the release's Pods gone",
            timeout=60,
        )
        # The Lease the release's leader could not release (see the uninstall test): the host-run operator
        # that comes back next need not wait for it to expire.
        with contextlib.suppress(client.ApiException):
            client.CoordinationV1Api(api).delete_namespaced_lease(LEASE, NAMESPACE)


def test_the_chart_runs_the_imported_image_as_15555_with_a_read_only_root(
    release: Release, api: client.ApiClient
) -> None:
    deployment = client.AppsV1Api(api).read_namespaced_deployment("baseline-operator", NAMESPACE)
    (container,) = deployment.spec.template.spec.containers
    assert (container.image, container.image_pull_policy) == (release.deployed.image, "Never")
    assert deployment.metadata.annotations["meta.helm.sh/release-name"] == RELEASE
    assert_each_replica_runs_the_image_as_15555_with_a_read_only_root(release.deployed, api)


def test_the_operator_installed_by_helm_reconciles_a_baseline_applied_from_outside(
    release: Release,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    custom: client.CustomObjectsApi,
) -> None:
    with a_new_baseline(make_namespace, custom) as (namespace, name):
        assert_reconciled_by_its_pods(release.deployed, api, custom, namespace, name)


def test_with_its_egress_pinned_to_the_api_server_another_address_on_6443_is_refused(
    release: Release, api: client.ApiClient, pods: Pods, make_namespace: Callable[..., str]
) -> None:
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy("baseline-operator", NAMESPACE)
    pinned = [rule for rule in policy.spec.egress if {p.port for p in rule.ports} == {443, 6443}]
    assert [[peer.ip_block.cidr for peer in rule.to] for rule in pinned] == [release.api_server_cidrs]

    operator_pod = leader(api)
    elsewhere = make_namespace("probe")
    web = pods.run_web_server(elsewhere, port=6443).status.pod_ip
    client_pod = pods.run_busybox(elsewhere).metadata.name
    # The API server through the `kubernetes` Service still answers (the node's own address: not policed).
    assert release.deployed.connect(operator_pod, "10.0.0.1", 443).ok
    assert pods.tcp_connect(elsewhere, client_pod, web, 6443).ok, "the Pod on 6443 answers its control"
    probe = until_blocked(lambda: release.deployed.connect(operator_pod, web, 6443))
    assert not probe.ok, f"a Pod on 6443 answered the operator despite the pinned egress: {probe}"


def test_helm_uninstall_removes_the_release_and_weakens_no_tenant_namespace(
    release: Release,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    custom: client.CustomObjectsApi,
) -> None:
    core, networking = client.CoreV1Api(api), client.NetworkingV1Api(api)
    managed = "app.kubernetes.io/managed-by=baseline-operator"
    with a_new_baseline(make_namespace, custom) as (namespace, name):
        assert_reconciled_by_its_pods(release.deployed, api, custom, namespace, name)
        policies = {
            p.metadata.name: p.metadata.uid
            for p in networking.list_namespaced_network_policy(namespace, label_selector=managed).items
        }
        labels = core.read_namespace(namespace).metadata.labels
        assert (
            core.read_namespaced_service_account("default", namespace).automount_service_account_token
            is False
        )

        released = [
            (o["kind"], o["metadata"]["name"])
            for o in objects(release.run("get", "manifest", RELEASE, "-n", NAMESPACE))
        ]
        assert {
            "Deployment",
            "ServiceAccount",
            "ClusterRole",
            "NetworkPolicy",
            "ValidatingAdmissionPolicy",
        } <= {kind for kind, _ in released}
        replicas = {pod.metadata.name for pod in ready_pods(api)}
        release.uninstall()
        wait_for(
            lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items,
            "the release's Pods gone",
        )
        # Everything the release installed is gone: the Deployment, the RBAC, the admission policies...
        left = release.deployed.kubectl(
            "get",
            "--ignore-not-found",
            "-o",
            "name",
            "-n",
            NAMESPACE,
            *(f"{kind.lower()}/{object_name}" for kind, object_name in released),
        ).stdout
        assert left.strip() == "", left
        # ...but the CRD (Helm never deletes one it installed from crds/) and so every SecurityBaseline,
        assert baseline_exists(custom, name)
        # The Lease is usually left to expire: Helm deletes the Role that lets the leader update it in the
        # same moment as the Deployment (measured: 10 ms after it, before the Pods got SIGTERM), so the
        # leader's release as it stops is refused (403). It is a race: in one run of four the release came
        # first. Either way no live Pod holds it, and a new install leads once it is released or expired.
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, NAMESPACE)
        assert lease.spec.holder_identity in {"", *replicas}, lease.spec.holder_identity
        # A tenant namespace keeps its floor: the same objects, labels and token setting as before.
        after = {
            p.metadata.name: p.metadata.uid
            for p in networking.list_namespaced_network_policy(namespace, label_selector=managed).items
        }
        assert after == policies
        assert core.read_namespace(namespace).metadata.labels == labels
        assert (
            core.read_namespaced_service_account("default", namespace).automount_service_account_token
            is False
        )


def baseline_exists(custom: client.CustomObjectsApi, name: str) -> bool:
    return bool(custom.get_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name))
