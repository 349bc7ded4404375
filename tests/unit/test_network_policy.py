"""Properties of the rendered NetworkPolicies, checked by evaluating what they allow.

`egress_allowed` implements the NetworkPolicy egress semantics for traffic to an address outside
the cluster: if no policy selecting the pods lists Egress, everything is allowed; otherwise the
traffic must match some egress rule of such a policy (an ipBlock holding the address and none of
its excepts, and a matching port). Selector peers never match an external address.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import itertools

import pytest

from baseline_operator.builders import BuildContext, build_all, build_section, metadata_cidrs
from baseline_operator.builders.network_policy import build_network_policies
from baseline_operator.spec import (
    DEFAULT_METADATA_PROVIDERS,
    METADATA_API_PROVIDERS,
    BaselineRef,
    NamespaceInfo,
    Section,
    parse_spec,
)

CONTEXT = BuildContext(
    baseline=BaselineRef("org-default", "0b6e5c1a-4a8e-4c57-9d0e-6f1f2b3c4d5e"),
    namespace=NamespaceInfo("team-a", {"kubernetes.io/metadata.name": "team-a", "team": "a"}),
)
PROVIDERS = sorted(METADATA_API_PROVIDERS)
DENY_COMBINATIONS = [
    {"ingress": ingress, "egress": egress} for ingress in (True, False) for egress in (True, False)
]
DNS_IP_CHOICES = [[], ["169.254.20.10"], ["169.254.169.254", "fd00:ec2::254"], ["10.96.0.10", "fd00:10::a"]]
PROBE_PORTS = [("TCP", 80), ("TCP", 443), ("UDP", 53), ("TCP", 53), ("TCP", 8080)]
INTERNET = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"]


def provider_sets():
    # Every provider alone, every pair, every "all but one", and a deterministic spread of triples.
    sets = [(), tuple(DEFAULT_METADATA_PROVIDERS), tuple(PROVIDERS)]
    sets += [(provider,) for provider in PROVIDERS]
    sets += list(itertools.combinations(PROVIDERS, 2))
    sets += [tuple(other for other in PROVIDERS if other != provider) for provider in PROVIDERS]
    sets += list(itertools.combinations(PROVIDERS, 3))[::11]
    return sets


def network_section(**fields):
    return parse_spec({"networkPolicy": fields}).network_policy


def metadata_addresses(providers, extra=()):
    cidrs = [cidr for provider in providers for cidr in METADATA_API_PROVIDERS[provider]] + list(extra)
    return {ipaddress.ip_network(cidr).network_address for cidr in cidrs}


@functools.cache
def network(cidr):
    return ipaddress.ip_network(cidr)


def port_matches(ports, protocol, port):
    if not ports:
        return True
    return any(item.get("protocol", "TCP") == protocol and item.get("port") == port for item in ports)


def peer_matches(peer, address):
    block = peer.get("ipBlock")
    if block is None:
        return False  # pod and namespace selectors select pods, never an external address
    if address not in network(block["cidr"]):
        return False
    return not any(address in network(excluded) for excluded in block.get("except", []))


def egress_allowed(policies, address, protocol, port):
    address = ipaddress.ip_address(address)
    isolating = [policy for policy in policies if "Egress" in policy["spec"]["policyTypes"]]
    if not isolating:
        return True
    return any(
        port_matches(rule.get("ports"), protocol, port)
        and any(peer_matches(peer, address) for peer in rule["to"])
        for policy in isolating
        for rule in policy["spec"].get("egress", [])
    )


def ip_blocks(policies):
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    yield rule, peer["ipBlock"]
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    yield rule, peer["ipBlock"]


@pytest.mark.parametrize(
    "deny", DENY_COMBINATIONS, ids=lambda deny: f"ingress={deny['ingress']},egress={deny['egress']}"
)
def test_metadata_is_unreachable_except_configured_resolvers_on_port_53(deny):
    for providers, dns_ips in itertools.product(provider_sets(), DNS_IP_CHOICES):
        extra = ["192.0.2.0/24", "2001:db8::/48"]
        spec = network_section(
            defaultDeny=deny, dnsIPs=dns_ips, metadataAPI={"providers": list(providers), "extraCIDRs": extra}
        )
        policies = build_network_policies(spec, CONTEXT)
        resolvers = {ipaddress.ip_address(address) for address in dns_ips}
        for address in metadata_addresses(providers, extra):
            for protocol, port in PROBE_PORTS:
                allowed = egress_allowed(policies, str(address), protocol, port)
                may_be_allowed = address in resolvers and port == 53
                assert not allowed or may_be_allowed, (providers, dns_ips, address, protocol, port)


@pytest.mark.parametrize(
    "deny", DENY_COMBINATIONS, ids=lambda deny: f"ingress={deny['ingress']},egress={deny['egress']}"
)
def test_no_egress_ip_block_holds_a_metadata_address_unless_it_is_a_resolver(deny):
    for providers in provider_sets():
        spec = network_section(defaultDeny=deny, metadataAPI={"providers": list(providers)})
        for _, block in ip_blocks(build_network_policies(spec, CONTEXT)):
            cidr = ipaddress.ip_network(block["cidr"])
            excluded = [ipaddress.ip_network(item) for item in block.get("except", [])]
            for address in metadata_addresses(providers):
                assert address not in cidr or any(address in network for network in excluded), (
                    providers,
                    block,
                )


def test_a_resolver_on_a_metadata_address_answers_on_port_53_only():
    # GKE Cloud DNS: with egress denied (allow-dns) and with egress open (the block's carve-out).
    for deny in DENY_COMBINATIONS:
        spec = network_section(
            defaultDeny=deny, dnsIPs=["169.254.169.254"], metadataAPI={"providers": ["gcp"]}
        )
        policies = build_network_policies(spec, CONTEXT)
        assert egress_allowed(policies, "169.254.169.254", "UDP", 53)
        assert egress_allowed(policies, "169.254.169.254", "TCP", 53)
        assert not egress_allowed(policies, "169.254.169.254", "TCP", 80)


def test_without_allow_dns_no_resolver_is_allowed_back():
    for deny in DENY_COMBINATIONS:
        spec = network_section(
            defaultDeny=deny, allowDNS=False, dnsIPs=["169.254.169.254"], metadataAPI={"providers": ["gcp"]}
        )
        assert not egress_allowed(build_network_policies(spec, CONTEXT), "169.254.169.254", "UDP", 53)


def test_denied_egress_is_never_reopened_to_the_internet():
    for providers, dns_ips in itertools.product(provider_sets(), DNS_IP_CHOICES):
        for same_namespace in (True, False):
            spec = network_section(
                allowSameNamespace=same_namespace, dnsIPs=dns_ips, metadataAPI={"providers": list(providers)}
            )
            policies = build_network_policies(spec, CONTEXT)
            for address in INTERNET:
                for protocol, port in PROBE_PORTS:
                    resolver_on_53 = port == 53 and address in dns_ips
                    assert resolver_on_53 or not egress_allowed(policies, address, protocol, port)


def test_open_egress_with_metadata_block_still_reaches_the_internet():
    for providers in provider_sets():
        spec = network_section(defaultDeny={"egress": False}, metadataAPI={"providers": list(providers)})
        policies = build_network_policies(spec, CONTEXT)
        for address in INTERNET:
            for protocol, port in PROBE_PORTS:
                assert egress_allowed(policies, address, protocol, port)


def test_when_egress_is_denied_our_only_ip_blocks_are_resolvers_on_port_53():
    spec = network_section(dnsIPs=["169.254.20.10", "fd00:10::a"], allowSameNamespace=True)
    blocks = list(ip_blocks(build_network_policies(spec, CONTEXT)))
    assert sorted(block["cidr"] for _, block in blocks) == ["169.254.20.10/32", "fd00:10::a/128"]
    for rule, block in blocks:
        assert "except" not in block
        assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_every_except_is_strictly_inside_its_cidr_and_of_the_same_family():
    for providers, deny in itertools.product(provider_sets(), DENY_COMBINATIONS):
        extra = ["10.0.0.0/8", "fd00::/8", "169.254.0.0/16"]
        spec = network_section(
            defaultDeny=deny, metadataAPI={"providers": list(providers), "extraCIDRs": extra}
        )
        for _, block in ip_blocks(build_network_policies(spec, CONTEXT)):
            cidr = ipaddress.ip_network(block["cidr"])
            assert "except" not in block or block["except"], "an empty except list is left out"
            for item in block.get("except", []):
                excluded = ipaddress.ip_network(item)
                assert excluded.version == cidr.version
                assert excluded.subnet_of(cidr)
                assert excluded.prefixlen > cidr.prefixlen


def test_every_port_names_its_protocol():
    for deny in DENY_COMBINATIONS:
        spec = network_section(
            defaultDeny=deny, dnsIPs=["169.254.169.254"], metadataAPI={"providers": ["gcp"]}
        )
        for policy in build_network_policies(spec, CONTEXT):
            for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
                for port in rule.get("ports", []):
                    assert port["protocol"] in {"TCP", "UDP"}


def test_cluster_dns_peer_selects_kube_dns_pods_in_kube_system_in_one_element():
    [dns] = [
        policy
        for policy in build_network_policies(network_section(), CONTEXT)
        if policy["metadata"]["name"] == "baseline-allow-dns"
    ]
    [rule] = dns["spec"]["egress"]
    assert rule["to"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


@pytest.mark.parametrize(
    ("deny", "allow_dns", "same_namespace", "block", "names"),
    [
        ({}, True, False, True, ["baseline-allow-dns", "baseline-default-deny"]),
        ({}, False, False, True, ["baseline-default-deny"]),
        ({"egress": False}, True, False, True, ["baseline-block-metadata", "baseline-default-deny"]),
        ({"egress": False}, True, False, False, ["baseline-default-deny"]),
        (
            {"ingress": False},
            True,
            True,
            True,
            ["baseline-allow-dns", "baseline-allow-same-namespace", "baseline-default-deny"],
        ),
        ({"ingress": False, "egress": False}, True, True, True, ["baseline-block-metadata"]),
        ({"ingress": False, "egress": False}, True, True, False, []),
    ],
)
def test_which_policies_exist(deny, allow_dns, same_namespace, block, names):
    spec = network_section(
        defaultDeny=deny, allowDNS=allow_dns, allowSameNamespace=same_namespace, metadataAPI={"block": block}
    )
    assert [policy["metadata"]["name"] for policy in build_network_policies(spec, CONTEXT)] == names


def test_default_deny_has_policy_types_and_no_rules():
    for deny in DENY_COMBINATIONS:
        policies = build_network_policies(network_section(defaultDeny=deny), CONTEXT)
        found = [policy for policy in policies if policy["metadata"]["name"] == "baseline-default-deny"]
        expected_types = [kind for kind in ("Ingress", "Egress") if deny[kind.lower()]]
        if not expected_types:
            assert not found
            continue
        assert found[0]["spec"] == {"podSelector": {}, "policyTypes": expected_types}


def test_same_namespace_allow_lists_only_denied_directions():
    policies = build_network_policies(
        network_section(defaultDeny={"egress": False}, allowSameNamespace=True), CONTEXT
    )
    [same] = [policy for policy in policies if policy["metadata"]["name"] == "baseline-allow-same-namespace"]
    assert same["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
    }


def test_metadata_cidrs_are_split_by_family_deduplicated_and_sorted():
    found = metadata_cidrs(["aws", "gcp", "azure", "aws"], ["fd00:ec2::254/128", "10.0.0.0/8", "10.1.0.0/16"])
    assert found.ipv4 == ["10.0.0.0/8", "168.63.129.16/32", "169.254.169.254/32"]
    assert found.ipv6 == ["fd00:ec2::254/128"]
    ipv4, ipv6 = metadata_cidrs([])
    assert (ipv4, ipv6) == ([], [])


def test_metadata_cidrs_of_the_default_providers():
    found = metadata_cidrs(DEFAULT_METADATA_PROVIDERS)
    assert found.ipv4 == [
        "100.100.100.200/32",
        "168.63.129.16/32",
        "169.254.0.23/32",
        "169.254.42.42/32",
        "169.254.169.254/32",
    ]
    assert found.ipv6 == ["fd00:42::42/128", "fd00:ec2::254/128", "fe80::a9fe:a9fe/128"]
    assert "169.254.170.23/32" not in found.ipv4, "EKS Pod Identity is opt-in"


def test_metadata_cidrs_refuse_a_whole_address_family():
    with pytest.raises(ValueError, match="strictly inside"):
        metadata_cidrs([], ["0.0.0.0/0"])


def test_builders_do_not_mutate_inputs_and_share_no_parts():
    raw = {
        "networkPolicy": {
            "dnsIPs": ["169.254.169.254"],
            "allowSameNamespace": True,
            "metadataAPI": {"extraCIDRs": ["10.0.0.0/8"]},
        },
        "limitRange": {"max": {"cpu": "2"}},
        "resourceQuota": {"hard": {"pods": "5"}},
        "rbac": {
            "roleBindings": [
                {
                    "name": "view",
                    "clusterRole": "view",
                    "subjects": [{"kind": "Group", "name": "${label:team}"}],
                }
            ],
            "defaultServiceAccount": {},
        },
        "podSecurity": {"enforce": "restricted"},
    }
    raw_before = copy.deepcopy(raw)
    spec = parse_spec(raw)
    spec_before = copy.deepcopy(spec)
    labels_before = dict(CONTEXT.namespace.labels)
    first = build_all(spec, CONTEXT, spec.sections)
    assert raw == raw_before
    assert spec == spec_before
    assert dict(CONTEXT.namespace.labels) == labels_before
    pristine = copy.deepcopy(first)
    scramble(first)
    assert build_all(spec, CONTEXT, spec.sections) == pristine


def scramble(value):
    """Mutate every container inside `value`, as a careless caller might."""
    if isinstance(value, dict):
        for item in value.values():
            scramble(item)
        value["scrambled"] = True
    elif isinstance(value, list):
        for item in value:
            scramble(item)
        value.append("scrambled")


def test_owned_objects_carry_exactly_our_labels_and_one_controller_owner():
    spec = parse_spec(
        {
            "networkPolicy": {"allowSameNamespace": True},
            "limitRange": {},
            "resourceQuota": {},
            "rbac": {
                "roleBindings": [
                    {"name": "v", "clusterRole": "view", "subjects": [{"kind": "User", "name": "u"}]}
                ]
            },
        }
    )
    for body in build_all(spec, CONTEXT, spec.sections):
        metadata = body["metadata"]
        if body["kind"] == "ServiceAccount":
            # Not ours: only the token field is set, never a label or an owner (the GC would delete it).
            assert set(metadata) == {"name", "namespace"}
            continue
        assert set(metadata) == {"name", "namespace", "labels", "ownerReferences"}
        assert metadata["labels"] == {
            "app.kubernetes.io/managed-by": "baseline-operator",
            "baseline.dev/baseline": "org-default",
            "baseline.dev/section": metadata["labels"]["baseline.dev/section"],
        }
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "baseline.dev/v1alpha1",
                "kind": "SecurityBaseline",
                "name": "org-default",
                "uid": CONTEXT.baseline.uid,
                "controller": True,
            }
        ]


def test_namespace_and_default_service_account_are_never_owned_nor_labelled_by_us():
    spec = parse_spec(
        {
            "rbac": {"defaultServiceAccount": {"automountToken": False}},
            "podSecurity": {"enforce": "baseline", "audit": "restricted"},
        }
    )
    [account] = build_section(Section.RBAC, spec, CONTEXT)
    assert account == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "team-a"},
        "automountServiceAccountToken": False,
    }
    [namespace] = build_section(Section.POD_SECURITY, spec, CONTEXT)
    assert set(namespace["metadata"]) == {"name", "labels"}
    assert all(key.startswith("pod-security.kubernetes.io/") for key in namespace["metadata"]["labels"])
    assert "team" not in namespace["metadata"]["labels"], "the namespace's own labels are not ours to send"
