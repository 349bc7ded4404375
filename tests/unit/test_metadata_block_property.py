"""The invariant of the metadata block: the baseline's policies only add what it documents, never more.

Random namespaces of user NetworkPolicies, baselines, pods and destinations; the rendered objects are judged
by `netpol_semantics`, an evaluator written from the API reference (not by the operator's builders):

1. For every pod and destination: what the baseline's policies allow that the user's alone did not is a
   documented opening (DNS to the cluster DNS pods, `dnsIPs` on port 53, same-namespace pods with
   `allowSameNamespace`), or nothing.
2. With the metadata block on, no metadata address is reachable from a pod unless a user's own egress
   policy selecting that pod explicitly allows it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netpol_semantics import Destination, Pod, World, egress_allowed, explicitly_allowed

from baseline_operator.builders import BuildContext, BuildError
from baseline_operator.builders.network_policy import build_network_policies
from baseline_operator.label_selectors import selector_from_json
from baseline_operator.spec import METADATA_API_PROVIDERS, BaselineRef, NamespaceInfo, parse_spec

NAMESPACE = "team"
NAMESPACE_LABELS = {
    "team": {"kubernetes.io/metadata.name": "team", "tier": "prod"},
    "other": {"kubernetes.io/metadata.name": "other"},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
}
CLUSTER_DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "10.96.0.10")
OTHER_KUBE_SYSTEM = Pod("kube-system", {"component": "etcd"}, "10.96.0.11")
OTHER_NAMESPACE = Pod("other", {"app": "web"}, "10.244.9.9")
EXTERNAL = ["8.8.8.8", "10.1.2.3", "169.254.20.10", "2001:db8::1"]
METADATA = sorted(
    {
        str(ipaddress.ip_network(cidr).network_address)
        for cidrs in METADATA_API_PROVIDERS.values()
        for cidr in cidrs
    }
)
PORTS = [("TCP", 80), ("TCP", 443), ("TCP", 5432), ("UDP", 53), ("TCP", 53)]

label_sets = st.dictionaries(
    st.sampled_from(["app", "tier"]), st.sampled_from(["db", "web", "a"]), max_size=2
)
selector_json = st.one_of(
    st.just({}),
    st.dictionaries(
        st.sampled_from(["app", "tier"]), st.sampled_from(["db", "web", "a"]), min_size=1, max_size=2
    ).map(lambda labels: {"matchLabels": labels}),
    st.tuples(
        st.sampled_from(["app", "tier"]), st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"])
    ).map(
        lambda pair: {
            "matchExpressions": [
                {
                    "key": pair[0],
                    "operator": pair[1],
                    **({"values": ["db"]} if pair[1] in {"In", "NotIn"} else {}),
                }
            ]
        }
    ),
)
peers = st.one_of(
    st.sampled_from(
        [
            {"ipBlock": {"cidr": "0.0.0.0/0"}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
            {"ipBlock": {"cidr": "10.0.0.0/8"}},
            {"ipBlock": {"cidr": "169.254.0.0/16"}},
            {"ipBlock": {"cidr": "::/0"}},
            {"namespaceSelector": {}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}},
        ]
    ),
    selector_json.map(lambda selector: {"podSelector": selector}),
)
ports = st.one_of(
    st.just([]),
    st.lists(
        st.sampled_from(
            [
                {"protocol": "TCP", "port": 5432},
                {"protocol": "TCP", "port": 80},
                {"protocol": "UDP", "port": 53},
                {"port": 443},
            ]
        ),
        min_size=1,
        max_size=2,
    ),
)
rules = st.builds(lambda to, ports: {"to": to, "ports": ports}, st.lists(peers, max_size=2), ports)


@st.composite
def user_policy(draw: st.DrawFn, index: int) -> dict[str, Any]:
    types = draw(st.sampled_from([["Egress"], ["Ingress", "Egress"], ["Ingress"]]))
    spec: dict[str, Any] = {"podSelector": draw(selector_json), "policyTypes": types}
    if "Egress" in types:
        spec["egress"] = draw(st.lists(rules, max_size=2))
    return {"metadata": {"name": f"user-{index}", "namespace": NAMESPACE}, "spec": spec}


user_policies = st.integers(0, 3).flatmap(lambda n: st.tuples(*(user_policy(i) for i in range(n))).map(list))
network_specs = st.fixed_dictionaries(
    {
        "defaultDeny": st.fixed_dictionaries({"ingress": st.booleans(), "egress": st.booleans()}),
        "allowDNS": st.booleans(),
        "allowSameNamespace": st.booleans(),
        "dnsIPs": st.lists(st.sampled_from(["169.254.20.10", "169.254.169.254"]), max_size=2, unique=True),
        "metadataAPI": st.fixed_dictionaries(
            {
                "block": st.booleans(),
                "providers": st.lists(
                    st.sampled_from(sorted(METADATA_API_PROVIDERS)), min_size=1, unique=True
                ),
            }
        ),
    }
)
team_pods = st.lists(label_sets, min_size=1, max_size=3).map(
    lambda sets: [Pod(NAMESPACE, labels, f"10.244.0.{index + 1}") for index, labels in enumerate(sets)]
)


def render(spec: dict[str, Any], users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parsed = parse_spec({"networkPolicy": spec}).network_policy
    assert parsed is not None
    egress_selectors = tuple(
        selector_from_json(policy["spec"].get("podSelector"))
        for policy in users
        if "Egress" in policy["spec"]["policyTypes"]
    )
    context = BuildContext(
        BaselineRef("org", "uid-org"), NamespaceInfo(NAMESPACE, NAMESPACE_LABELS[NAMESPACE]), egress_selectors
    )
    return build_network_policies(parsed, context)


def documented(spec: dict[str, Any], destination: Destination, protocol: str, port: int) -> bool:
    """What the baseline opens on purpose (README, "What it creates")."""
    dns_port = port == 53 and protocol in {"UDP", "TCP"}
    if spec["allowDNS"] and dns_port:
        if destination.pod == CLUSTER_DNS and spec["defaultDeny"]["egress"]:
            return True
        if destination.ip in spec["dnsIPs"]:
            return True
    pod = destination.pod
    return (
        spec["allowSameNamespace"]
        and spec["defaultDeny"]["egress"]
        and pod is not None
        and pod.namespace == NAMESPACE
    )


def check_invariants(spec: dict[str, Any], users: list[dict[str, Any]], pods: list[Pod]) -> None:
    try:
        ours = render(spec, users)
    except BuildError:
        return  # too complex a complement is refused and reported: nothing rendered, nothing widened
    destinations = [
        *(Destination(ip) for ip in [*EXTERNAL, *METADATA]),
        *(Destination(pod.ip, pod) for pod in [CLUSTER_DNS, OTHER_KUBE_SYSTEM, OTHER_NAMESPACE, *pods]),
    ]
    for ipblock_matches_pods in (True, False):
        world = World(NAMESPACE_LABELS, ipblock_matches_pods)
        for pod in pods:
            for destination in destinations:
                for protocol, port in PORTS:
                    with_baseline = egress_allowed(users + ours, pod, destination, protocol, port, world)
                    users_alone = egress_allowed(users, pod, destination, protocol, port, world)
                    if with_baseline and not users_alone:
                        assert documented(spec, destination, protocol, port), (
                            f"the baseline widened egress of {pod} to {destination} {protocol}/{port}"
                        )
            if not spec["metadataAPI"]["block"]:
                continue
            blocked = {
                str(ipaddress.ip_network(cidr).network_address)
                for provider in spec["metadataAPI"]["providers"]
                for cidr in METADATA_API_PROVIDERS[provider]
            }
            for address in blocked:
                metadata = Destination(address)
                if egress_allowed(users + ours, pod, metadata, "TCP", 80, world):
                    assert explicitly_allowed(users, pod, metadata, "TCP", 80, world), (
                        f"{address} reachable from {pod} though no policy of the user's allows it"
                    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network_specs, user_policies, team_pods)
def test_the_baseline_never_widens_egress_and_blocks_the_metadata_api(
    spec: dict[str, Any], users: list[dict[str, Any]], pods: list[Pod]
) -> None:
    check_invariants(spec, users, pods)


def test_the_reproduction_a_database_restricted_to_its_network_stays_restricted() -> None:
    # Issue #15: with egress open and the metadata block on, the database, allowed only 10.0.0.0/8:5432 by
    # its owners, could reach the whole internet and every pod of the cluster.
    database = {
        "metadata": {"name": "db-egress", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 5432}]}
            ],
        },
    }
    spec = {
        "defaultDeny": {"ingress": True, "egress": False},
        "allowDNS": True,
        "allowSameNamespace": False,
        "dnsIPs": [],
        "metadataAPI": {"block": True, "providers": ["aws"]},
    }
    db, web = Pod(NAMESPACE, {"app": "db"}, "10.244.0.1"), Pod(NAMESPACE, {"app": "web"}, "10.244.0.2")
    ours = render(spec, [database])
    world = World(NAMESPACE_LABELS)
    assert not egress_allowed([database, *ours], db, Destination("8.8.8.8"), "TCP", 443, world)
    assert not egress_allowed(
        [database, *ours], db, Destination(OTHER_NAMESPACE.ip, OTHER_NAMESPACE), "TCP", 80, world
    )
    assert egress_allowed([database, *ours], db, Destination("10.1.2.3"), "TCP", 5432, world)
    # The web pod, which no policy of the user's restricts, keeps its open egress, but not the metadata API.
    assert egress_allowed([database, *ours], web, Destination("8.8.8.8"), "TCP", 443, world)
    assert not egress_allowed([database, *ours], web, Destination("169.254.169.254"), "TCP", 80, world)
    check_invariants(spec, [database], [db, web])


@pytest.mark.parametrize("ipblock_matches_pods", [True, False])
def test_without_user_policies_the_block_still_lets_pods_talk_to_pods(ipblock_matches_pods: bool) -> None:  # noqa: FBT001
    spec = {
        "defaultDeny": {"ingress": False, "egress": False},
        "allowDNS": True,
        "allowSameNamespace": False,
        "dnsIPs": [],
        "metadataAPI": {"block": True, "providers": ["aws", "gcp"]},
    }
    web = Pod(NAMESPACE, {"app": "web"}, "10.244.0.2")
    ours = render(spec, [])
    world = World(NAMESPACE_LABELS, ipblock_matches_pods)
    assert egress_allowed(ours, web, Destination(OTHER_NAMESPACE.ip, OTHER_NAMESPACE), "TCP", 8080, world)
    assert not egress_allowed(ours, web, Destination("fd00:ec2::254"), "TCP", 80, world)
