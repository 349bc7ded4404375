"""The operator's image running in the node's cluster: what both ways to install it are checked with.

`test_in_cluster.py` installs it from `kubectl kustomize manifests/` (`ManifestsDeployment`, which the
`operator` fixture uses too when `BASELINE_NODE_OPERATOR=in-cluster`), `test_in_cluster_helm.py` from the Helm
chart; both run the image `make image` built, imported into the node's containerd (the `imported_image`
fixture), and judge the result with these helpers: what the Pods run as, and who made the writes, read from
the API server's audit log (which names the Pod whose bound token made each request).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client
from node_pods import Probe
from test_floor_packets import wait_for

from localcluster import netns

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from localcluster.node import LocalNode

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "baseline-system"
DEPLOYMENT = "baseline-operator"
LEASE = "baseline-operator"
SELECTOR = "app.kubernetes.io/name=baseline-operator"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:baseline-operator"
RUNTIME_UID = 15555
WRITES = frozenset({"create", "update", "patch", "delete"})
KEPT = frozenset(
    # What a host-run operator needs (its RBAC and the CRD): left in place when the Deployment goes.
    {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "CustomResourceDefinition",
    }
)
# A TCP connection from inside the operator's container: the image has Python and no other client.
CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=3).close()
except OSError as error:
    sys.exit(f"{host}:{port}: {error}")
"""


@dataclass
class InCluster:
    """The operator's Deployment running the built image, however it was installed."""

    image: str
    """The reference the Pods run, `baseline.test/baseline-operator@sha256:...`."""
    ready_seconds: float
    """From the install command to every replica Ready."""
    node: LocalNode

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.node.kubectl_command(*args),
            input=input_text,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def exec_python(self, pod: str, code: str, *args: str) -> Probe:
        result = self.kubectl("exec", "-n", NAMESPACE, pod, "--", "python", "-c", code, *args, check=False)
        return Probe(result.returncode, result.stdout, result.stderr)

    def connect(self, pod: str, host: str, port: int) -> Probe:
        return self.exec_python(pod, CONNECT, host, str(port))


def ready_pods(api: client.ApiClient) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def leader(api: client.ApiClient) -> str:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, NAMESPACE)
    return str(lease.spec.holder_identity or "")


def leading_after_its_first_pass(api: client.ApiClient, replicas: int = 2) -> bool:
    """Every replica Ready, one of them holding the Lease.

    A standby is Ready as it waits; the replica that leads only once its first pass over every namespace
    is done (`/readyz`, cli.py): so the leader's Pod Ready means that pass is done.
    """
    ready = {pod.metadata.name for pod in ready_pods(api)}
    if len(ready) != replicas:
        return False
    with contextlib.suppress(client.ApiException):  # no Lease yet: nobody leads
        return leader(api) in ready
    return False


def rendered_manifests(node: LocalNode, image: str) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/`, with the Deployment on the imported image; nothing else changed."""
    rendered = subprocess.run(
        node.kubectl_command("kustomize", str(REPO / "manifests")), capture_output=True, text=True, check=True
    ).stdout
    documents = [document for document in yaml.safe_load_all(rendered) if document]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The manifests pin the published image by digest with `Always`; this one can only be found locally.
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    return documents


class ManifestsDeployment:
    """The operator installed from `kubectl kustomize manifests/` on the imported image, and removed again.

    `start` applies the manifests as they are (two replicas) and returns once the leader has done its first
    pass; `stop` removes the Deployment and what else is the operator's alone, leaving its RBAC and the CRD
    (a host-run operator may need them next).
    """

    def __init__(self, node: LocalNode, api: client.ApiClient, image: str) -> None:
        self.node, self.api, self.image = node, api, image
        self.documents = rendered_manifests(node, image)

    def start(self) -> InCluster:
        started = time.monotonic()
        subprocess.run(
            self.node.kubectl_command("apply", "--server-side", "-f", "-"),
            input=yaml.safe_dump_all(self.documents),
            capture_output=True,
            text=True,
            check=True,
        )
        wait_for(
            lambda: leading_after_its_first_pass(self.api),
            "both replicas Ready, the leader after its first pass",
            timeout=180,
        )
        deployed = InCluster(self.image, round(time.monotonic() - started, 1), self.node)
        ready = f"both replicas Ready {deployed.ready_seconds} s after apply"
        print(f"in-cluster operator: {self.image}; {ready}")  # noqa: T201
        return deployed

    def stop(self) -> None:
        stop_replicas(self.api)
        removed = [d for d in self.documents if d["kind"] not in KEPT]
        subprocess.run(
            self.node.kubectl_command("delete", "--ignore-not-found", "--wait=true", "-f", "-"),
            input=yaml.safe_dump_all(removed),
            capture_output=True,
            text=True,
            check=False,
        )


def stop_replicas(api: client.ApiClient) -> None:
    """Stop the Deployment's Pods and leave the Lease free, before another operator comes in.

    In an order that leaves no candidate behind to take the Lease the leader releases: the Pods are
    orphaned (no controller replaces them), the standby is stopped first (it holds nothing), and only then
    the leader, gracefully, so that it releases the Lease. Nothing to do where nothing is deployed.
    """
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    with contextlib.suppress(client.ApiException):  # already gone (a test removed it)
        apps.delete_namespaced_deployment(DEPLOYMENT, NAMESPACE, propagation_policy="Orphan")
    for replica_set in apps.list_namespaced_replica_set(NAMESPACE, label_selector=SELECTOR).items:
        apps.delete_namespaced_replica_set(replica_set.metadata.name, NAMESPACE, propagation_policy="Orphan")

    def replicas() -> set[str]:
        return {
            pod.metadata.name for pod in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
        }

    if not replicas():
        return
    holder = leader(api)
    standbys = replicas() - {holder}
    for pod in standbys:
        # A grace period of 1 s rather than a forced deletion: the Pod then leaves the API only once the
        # kubelet has seen its container die, and cannot take the Lease after that.
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=1)
    wait_for(lambda: not replicas() & standbys, "the standby Pods gone", timeout=60)
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_pod(holder, NAMESPACE)
    wait_for(lambda: not replicas(), "the leader's Pod gone", timeout=60)
    assert leader(api) == "", "the leader released the Lease as it stopped"


def assert_each_replica_runs_the_image_as_15555_with_a_read_only_root(
    deployed: InCluster, api: client.ApiClient, replicas: int = 2
) -> None:
    pods = ready_pods(api)
    assert len(pods) == replicas
    digest = deployed.image.split("@", 1)[1]
    for pod in pods:
        (status,) = pod.status.container_statuses
        assert status.image_id.endswith(digest), status.image_id
        assert status.restart_count == 0
        context = pod.spec.containers[0].security_context
        assert context.read_only_root_filesystem is True
        assert (context.run_as_user, context.run_as_group) == (RUNTIME_UID, RUNTIME_UID)
        # What the process is, and what it may write, seen from inside.
        probe = deployed.exec_python(
            pod.metadata.name,
            "import json, os\n"
            "def writable(path):\n"
            "    try:\n"
            "        open(path, 'w').close()\n"
            "    except OSError as error:\n"
            "        return error.errno\n"
            "    return 0\n"
            "print(json.dumps({'ids': [os.getuid(), os.getgid(), os.geteuid()],"
            " 'root': writable('/probe'), 'venv': writable('/opt/venv/probe'),"
            " 'tmp': writable('/tmp/probe')}))",
        )
        assert probe.ok, probe
        seen = json.loads(probe.stdout)
        assert seen["ids"] == [RUNTIME_UID, RUNTIME_UID, RUNTIME_UID]
        erofs = 30
        assert seen["root"] == seen["venv"] == erofs, "the root file system is read-only"
        assert seen["tmp"] == 0, "the emptyDir on /tmp is the one writable place"


@contextlib.contextmanager
def a_new_baseline(
    make_namespace: Callable[..., str], custom: client.CustomObjectsApi
) -> Iterator[tuple[str, str]]:
    """A new namespace, and a SecurityBaseline applied from outside that selects it (deleted after)."""
    label = uuid.uuid4().hex[:8]
    namespace = make_namespace("incluster", {"incluster": label})
    name = create_baseline(custom, label)
    try:
        yield namespace, name
    finally:
        delete_baseline(custom, name)


def assert_reconciled_by_its_pods(
    deployed: InCluster, api: client.ApiClient, custom: client.CustomObjectsApi, namespace: str, name: str
) -> None:
    """The baseline `name` is applied to `namespace` by the Deployment's Pods, with their bound tokens."""
    networking = client.NetworkingV1Api(api)
    managed = "app.kubernetes.io/managed-by=baseline-operator"
    expected = {"baseline-default-deny", "baseline-allow-dns"}

    def policies() -> set[str]:
        found = networking.list_namespaced_network_policy(namespace, label_selector=managed).items
        return {policy.metadata.name for policy in found}

    # Until both are there: the operator writes them one after the other (seen: the first alone).
    wait_for(lambda: policies() >= expected, "the baseline's NetworkPolicies in the selected namespace")
    wait_for(lambda: baseline_ready(custom, name), "the baseline's status Ready")
    # Who wrote them: the ServiceAccount's token bound to one of the Deployment's Pods, from its Pod IP.
    writes = wait_for(lambda: audited_writes(deployed.node, namespace), "the writes in the audit log")
    pods = {pod.metadata.name for pod in client.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items}
    for event in writes:
        # A token bound to a Pod says which; the host-run operator's TokenRequest token would not.
        (pod,) = event["user"].get("extra", {}).get("authentication.kubernetes.io/pod-name", [None])
        assert pod in pods
        assert all(ip_address(ip) in ip_network(netns.POD_CIDR) for ip in event["sourceIPs"]), event


def create_baseline(custom: client.CustomObjectsApi, label: str) -> str:
    name = f"incluster-{label}"
    body = {
        "apiVersion": "baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"incluster": label}},
            "networkPolicy": {"defaultDeny": {"ingress": True, "egress": True}, "allowDNS": True},
            "rbac": {"defaultServiceAccount": {"automountToken": False}},
            "podSecurity": {"enforce": "restricted"},
        },
    }
    custom.create_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", body)
    return name


def delete_baseline(custom: client.CustomObjectsApi, name: str) -> None:
    try:
        custom.delete_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)
    except client.ApiException as error:
        if error.status != 404:
            raise


def baseline_ready(custom: client.CustomObjectsApi, name: str) -> bool:
    baseline = custom.get_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)
    conditions = baseline.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def audited_writes(node: LocalNode, namespace: str) -> list[dict[str, Any]]:
    """The writes into `namespace` the audit log recorded as made by the operator's ServiceAccount."""
    events = []
    for line in node.cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        target = event.get("objectRef", {})
        if (
            event.get("stage") == "ResponseComplete"
            and event.get("verb") in WRITES
            and target.get("namespace") == namespace
            and event["user"]["username"] == SERVICE_ACCOUNT
        ):
            events.append(event)
    return events
