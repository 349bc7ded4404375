"""The floor on real packets: what the README's "What it creates" says about traffic, seen from inside Pods.

The real operator keeps namespaces at their baselines on the real node (kube-network-policies enforcing):
a process on the host, or with `BASELINE_NODE_OPERATOR=in-cluster` (`make node-test-in-cluster`) the
Deployment of manifests/ on the built image, its admission policies included (the `operator` fixture).
Every "refused" probe has its positive control in the same test: the same probe from (or to) a namespace no
baseline selects succeeds, so a broken network cannot pass for a closed one.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from impersonation import BREAK_GLASS, allowed, as_user
from kubernetes import client
from test_node_smoke import until_blocked

from localcluster import netns
from localcluster.node import CLUSTER_DNS, METADATA_MARKER

if TYPE_CHECKING:
    from collections.abc import Callable

    from node_pods import Pods, Probe

KUBERNETES_FQDN = "kubernetes.default.svc.cluster.local"
METADATA_URLS = (f"http://{netns.METADATA_IP}/", f"http://[{netns.METADATA_IP_V6}]/")
# What Pod Security `restricted` asks of a container; the busybox image runs as root otherwise.
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def spec(label: str, **network: Any) -> dict[str, Any]:
    """A baseline like the shipped sample: default deny with DNS, the metadata block, restricted Pods."""
    return {
        "namespaceSelector": {"matchLabels": {"floor": label}},
        "networkPolicy": {
            "defaultDeny": {"ingress": True, "egress": True},
            "allowDNS": True,
            "allowSameNamespace": False,
            **network,
        },
        "limitRange": {
            "default": {"cpu": "200m", "memory": "64Mi"},
            "defaultRequest": {"cpu": "50m", "memory": "32Mi"},
        },
        "resourceQuota": {"hard": {"pods": "6"}},
        "rbac": {"defaultServiceAccount": {"automountToken": False}},
        "podSecurity": {"enforce": "restricted"},
    }


def selected(
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., str],
    api: client.ApiClient,
    **network: Any,
) -> str:
    """A namespace under a fresh baseline, once its NetworkPolicies are in place."""
    label = uuid.uuid4().hex[:8]
    namespace = make_namespace("floor", {"floor": label})
    make_baseline(spec(label, **network))
    networking = client.NetworkingV1Api(api)

    core = client.CoreV1Api(api)
    managed = "app.kubernetes.io/managed-by=baseline-operator"

    def applied() -> bool:
        labels = core.read_namespace(namespace).metadata.labels or {}
        default = "metadata.name=default"
        account = core.list_namespaced_service_account(namespace, field_selector=default).items
        return (
            bool(networking.list_namespaced_network_policy(namespace, label_selector=managed).items)
            and bool(core.list_namespaced_limit_range(namespace, label_selector=managed).items)
            and bool(core.list_namespaced_resource_quota(namespace, label_selector=managed).items)
            and labels.get("pod-security.kubernetes.io/enforce") == "restricted"
            and bool(account)
            and account[0].automount_service_account_token is False
        )

    wait_for(applied, "the whole baseline applied")
    return namespace


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def restricted_busybox(pods: Pods, namespace: str, **kwargs: Any) -> str:
    return str(pods.run_busybox(namespace, security_context=RESTRICTED, **kwargs).metadata.name)


def url_of(ip: str, port: int) -> str:
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


def refused(probe: Callable[[], Probe]) -> Probe:
    result = until_blocked(probe)
    assert not result.ok, f"answered though it must be refused: {result}"
    return result


def test_dns_works_under_the_default_deny_and_nothing_else_in_kube_system_is_reachable(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str], make_baseline: Callable[..., str]
) -> None:
    namespace = selected(make_namespace, make_baseline, api)
    pod = restricted_busybox(pods, namespace)
    open_namespace = make_namespace("open")
    open_pod = pods.run_busybox(open_namespace).metadata.name
    # DNS to the cluster DNS, over UDP and over TCP: what the baseline opens on purpose.
    assert pods.resolve_udp(namespace, pod, KUBERNETES_FQDN) == ["10.0.0.1"]
    assert pods.resolve_tcp(namespace, pod, KUBERNETES_FQDN) == ["10.0.0.1"]
    # Another kube-system Pod listening on port 53, and kube-dns on another port: refused; reachable from
    # a namespace no baseline selects (the positive control).
    other = pods.run_web_server("kube-system", f"not-dns-{uuid.uuid4().hex[:6]}", port=53)
    other_ip = other.status.pod_ip
    assert pods.tcp_connect(open_namespace, open_pod, other_ip, 53).ok
    refused(lambda: pods.tcp_connect(namespace, pod, other_ip, 53))
    dns_pod = next(
        p
        for p in client.CoreV1Api(api)
        .list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns")
        .items
    )
    health = url_of(dns_pod.status.pod_ip, 8080) + "health"
    assert pods.http_get(open_namespace, open_pod, health).ok
    refused(lambda: pods.http_get(namespace, pod, health))
    assert CLUSTER_DNS == "10.0.0.10"
    client.CoreV1Api(api).delete_namespaced_pod(other.metadata.name, "kube-system", grace_period_seconds=0)


@pytest.mark.parametrize(
    ("variant", "network"),
    [
        ("egress denied", {}),
        (
            "egress open, NetworkPolicy block",
            {
                "defaultDeny": {"ingress": True, "egress": False},
                "metadataAPI": {"enforcement": "NetworkPolicy"},
            },
        ),
        ("egress open, Admin-tier block", {"defaultDeny": {"ingress": True, "egress": False}}),
    ],
)
def test_the_metadata_api_is_unreachable_in_every_variant_and_reachable_where_no_baseline_is(
    pods: Pods,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., str],
    variant: str,
    network: dict[str, Any],
) -> None:
    namespace = selected(make_namespace, make_baseline, api, **network)
    pod = restricted_busybox(pods, namespace)
    open_namespace = make_namespace("open")
    open_pod = pods.run_busybox(open_namespace).metadata.name
    if variant == "egress open, Admin-tier block":
        # The node serves AdminNetworkPolicy (kube-network-policies enforces it): Auto puts the block there,
        # where even a policy of the namespace's own that allows all egress cannot open it.
        wait_for(
            lambda: (
                client.CoreV1Api(api)
                .read_namespace(namespace)
                .metadata.labels.get("baseline.dev/metadata-block")
            ),
            "the namespace under the Admin-tier block",
        )
        allow_all = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all-egress"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
        }
        client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, allow_all)
    for url in METADATA_URLS:
        assert METADATA_MARKER in pods.http_get(open_namespace, open_pod, url).stdout, (
            f"positive control {url}"
        )
        result = refused(lambda url=url: pods.http_get(namespace, pod, url))
        assert METADATA_MARKER not in result.stdout, (variant, url)


def test_ingress_from_another_namespace_is_refused_and_same_namespace_follows_allow_same_namespace(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str], make_baseline: Callable[..., str]
) -> None:
    together = selected(make_namespace, make_baseline, api, allowSameNamespace=True)
    apart = selected(make_namespace, make_baseline, api, allowSameNamespace=False)
    open_namespace = make_namespace("open")
    open_client = pods.run_busybox(open_namespace).metadata.name
    open_web = pods.run_web_server(open_namespace)
    # Positive control: the open client reaches a web server where no baseline is.
    assert pods.http_get(open_namespace, open_client, url_of(open_web.status.pod_ip, 8080)).ok
    for namespace, same_namespace_allowed in ((together, True), (apart, False)):
        web = pods.run_web_server(namespace, security_context=RESTRICTED)
        neighbour = restricted_busybox(pods, namespace)
        url = url_of(web.status.pod_ip, 8080)
        refused(lambda url=url: pods.http_get(open_namespace, open_client, url))
        answer = pods.http_get(namespace, neighbour, url)
        if same_namespace_allowed:
            assert answer.ok, answer
        else:
            refused(
                lambda url=url, namespace=namespace, neighbour=neighbour: pods.http_get(
                    namespace, neighbour, url
                )
            )


def test_a_users_restrictive_egress_policy_still_restricts_after_the_baseline(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str], make_baseline: Callable[..., str]
) -> None:
    # Issue #15's reproduction, on packets: egress open, the metadata block as NetworkPolicies, and a database
    # its owners allow only 10.0.0.0/8:5432.
    namespace = selected(
        make_namespace,
        make_baseline,
        api,
        defaultDeny={"ingress": False, "egress": False},
        metadataAPI={"enforcement": "NetworkPolicy"},
    )
    database_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-egress"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 5432}]}
            ],
        },
    }
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, database_policy)
    elsewhere = make_namespace("elsewhere")
    web = pods.run_web_server(elsewhere)
    url = url_of(web.status.pod_ip, 8080)
    database = restricted_busybox(pods, namespace, labels={"app": "db"})
    frontend = restricted_busybox(pods, namespace, labels={"app": "frontend"})
    # Positive control: a Pod of the namespace that no user policy restricts reaches the web server...
    wait_for(lambda: pods.http_get(namespace, frontend, url).ok, "the frontend reaches the web server")
    # ...and the database, restricted by its owners, still does not (the block did not widen its egress).
    refused(lambda: pods.http_get(namespace, database, url))
    for metadata in METADATA_URLS:
        refused(lambda metadata=metadata: pods.http_get(namespace, frontend, metadata))


def test_deleting_the_default_deny_opens_the_namespace_only_for_the_moment_of_the_repair(
    pods: Pods,
    api: client.ApiClient,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., str],
    custom: client.CustomObjectsApi,
) -> None:
    # Only the default deny isolates these Pods (no DNS, no same-namespace allow): deleting it opens egress
    # until the operator re-creates it and the enforcer applies it again. Probed continuously from inside.
    # Deleted by the break-glass group: where manifests/admission is installed (the in-cluster operator),
    # nobody else may (an admin's delete is refused); with the host-run operator, the same way.
    label = uuid.uuid4().hex[:8]
    namespace = make_namespace("floor", {"floor": label})
    baseline = make_baseline(spec(label, allowDNS=False))
    networking = client.NetworkingV1Api(api)
    wait_for(lambda: deny_of(networking, namespace), "the default deny")
    elsewhere = make_namespace("elsewhere")
    web = pods.run_web_server(elsewhere)
    prober = restricted_busybox(pods, namespace)
    target = web.status.pod_ip
    refused(lambda: pods.http_get(namespace, prober, url_of(target, 8080)))
    # Ten probe loops a tenth of a second apart: a new connection each (established ones would pass), every
    # answer logged with the Pod's uptime; a refused probe waits out its 1 s timeout.
    loop = (
        f"while true; do if echo | timeout 1 nc {target} 8080 >/dev/null 2>&1; then "
        "echo ok $(cut -d' ' -f1 /proc/uptime) >> /tmp/answers; fi; sleep 0.1; done"
    )
    # Detached from the exec's output, or kubectl would wait for the loops to end.
    script = " ".join(f"(sleep 0.{index}; {loop}) >/dev/null 2>&1 &" for index in range(10)) + " echo started"
    assert pods.exec(namespace, prober, script, timeout=15).ok

    def answers() -> list[float]:
        logged = pods.exec(namespace, prober, "cat /tmp/answers 2>/dev/null").stdout
        return sorted(float(value) for value in re.findall(r"ok ([0-9.]+)", logged))

    time.sleep(3)
    assert answers() == []  # closed all along
    oncall = break_glass_in(api, namespace)
    deleted = deny_of(networking, namespace)
    oncall.delete_namespaced_network_policy("baseline-default-deny", namespace)
    wait_for(lambda: deny_of(networking, namespace) not in {None, deleted}, "the default deny re-created")
    time.sleep(5)  # the enforcer applies it; the loops keep probing
    window = answers()
    exposure = window[-1] - window[0] + 0.1 if window else 0.0
    print(f"default deny deleted: traffic got through for {exposure:.2f} s ({len(window)} answers)")  # noqa: T201
    assert exposure < 3.0
    time.sleep(2)
    assert answers() == window, "traffic still got through after the repair"
    # The positive control: released (its baseline deleted), the namespace lets the same probes through.
    custom.delete_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", baseline)
    wait_for(lambda: len(answers()) > len(window), "the probes answered once the namespace was released")


def break_glass_in(api: client.ApiClient, namespace: str) -> client.NetworkingV1Api:
    """NetworkPolicies of `namespace` as an on-call member of the break-glass group, granted `edit` there."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "node-test-break-glass"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BREAK_GLASS}],
    }
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, binding)
    oncall = client.NetworkingV1Api(as_user(api, "oncall", BREAK_GLASS))
    # RBAC's cache takes the binding in a moment later.
    wait_for(
        lambda: allowed(lambda: oncall.list_namespaced_network_policy(namespace)), "the binding in force"
    )
    return oncall


def deny_of(networking: client.NetworkingV1Api, namespace: str) -> str | None:
    """The uid of the namespace's default deny, if it has one."""
    found = [
        p
        for p in networking.list_namespaced_network_policy(namespace).items
        if p.metadata.name == "baseline-default-deny"
    ]
    return str(found[0].metadata.uid) if found else None


def test_the_rest_of_the_floor_on_real_pods(
    pods: Pods, api: client.ApiClient, make_namespace: Callable[..., str], make_baseline: Callable[..., str]
) -> None:
    namespace = selected(make_namespace, make_baseline, api)
    open_namespace = make_namespace("open")
    core = client.CoreV1Api(api)
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "baseline.test/busybox:1",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "60"],
                }
            ]
        },
    }
    # Pod Security `restricted` refuses a root Pod here, and admits it where no baseline is.
    with pytest.raises(client.ApiException) as refusal:
        core.create_namespaced_pod(namespace, root_pod)
    assert refusal.value.status == 403
    assert "restricted" in str(refusal.value.body)
    core.create_namespaced_pod(open_namespace, root_pod)
    # The LimitRange's defaults in a running Pod's resources.
    pod = pods.run_busybox(namespace, security_context=RESTRICTED)
    resources = pod.spec.containers[0].resources
    assert resources.limits == {"cpu": "200m", "memory": "64Mi"}
    assert resources.requests == {"cpu": "50m", "memory": "32Mi"}
    # No ServiceAccount token in the container; there is one where no baseline is.
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert not pods.exec(namespace, pod.metadata.name, f"ls {token_dir}").ok
    open_pod = pods.run_busybox(open_namespace).metadata.name
    assert pods.exec(open_namespace, open_pod, f"ls {token_dir}/token").ok
    # The ResourceQuota (6 Pods) stops the seventh.
    for _ in range(5):
        restricted_busybox(pods, namespace)
    with pytest.raises(client.ApiException) as over_quota:
        restricted_busybox(pods, namespace)
    assert over_quota.value.status == 403
    assert "exceeded quota" in str(over_quota.value.body)
