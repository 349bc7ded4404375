"""The metadata block in the Admin tier: one cluster-scoped policy per baseline, above every NetworkPolicy.

NetworkPolicies only add, so with them the block can only be placed where no other egress policy selects a
pod (network_policy.py), and a namespace's own policy can open the metadata API again. The network policy
API (sigs.k8s.io/network-policy-api) has cluster-scoped policies whose `Deny` is evaluated before any
NetworkPolicy: `ClusterNetworkPolicy` (policy.networking.k8s.io/v1alpha2, `tier: Admin`) and the older
`AdminNetworkPolicy` (v1alpha1). Where the cluster serves one, the block is such a policy, named
`baseline-<baseline>-metadata`:

- its subject is the namespaces the operator labels `baseline.dev/metadata-block: <baseline>` (those where
  this baseline wins the networkPolicy section and blocks the metadata API);
- a resolver that is itself a metadata address (GKE Cloud DNS on 169.254.169.254:53) is passed on port 53 to
  the NetworkPolicies below (`Pass`, never an allow: it must not open what the namespace's policies close);
- then `Deny` to every metadata CIDR, IPv4 and IPv6, on every port.

Its priority (0..1000, lower first) is an install-time setting, `--admin-policy-priority`, default 20: below
the first numbers, which platform teams keep for their own emergency rules, and the same for every
baseline's policy (their subjects never overlap: a namespace carries one baseline's label).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import METADATA_BLOCK_LABEL, managed_labels, owner_reference
from baseline_operator.builders.network_policy import DNS_PORT, metadata_cidrs
from baseline_operator.spec import MetadataEnforcement, Section

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baseline_operator.spec import BaselineRef, NetworkPolicySpec

DEFAULT_ADMIN_POLICY_PRIORITY: Final = 20
ADMIN_TIERS: Final = (MetadataEnforcement.CLUSTER_NETWORK_POLICY, MetadataEnforcement.ADMIN_NETWORK_POLICY)
"""In the order Auto prefers them: the current API first."""
API_VERSIONS: Final = {
    MetadataEnforcement.CLUSTER_NETWORK_POLICY: "policy.networking.k8s.io/v1alpha2",
    MetadataEnforcement.ADMIN_NETWORK_POLICY: "policy.networking.k8s.io/v1alpha1",
}
_MAX_NETWORKS_PER_PEER: Final = 25


def effective_enforcement(
    requested: MetadataEnforcement, served: Iterable[MetadataEnforcement]
) -> MetadataEnforcement:
    """The API that enforces the block: the one asked for if served, Auto's choice, else NetworkPolicy."""
    available = set(served)
    if requested is MetadataEnforcement.AUTO:
        return next((tier for tier in ADMIN_TIERS if tier in available), MetadataEnforcement.NETWORK_POLICY)
    if requested in ADMIN_TIERS and requested not in available:
        return MetadataEnforcement.NETWORK_POLICY
    return requested


def admin_block_name(baseline: str) -> str:
    return f"baseline-{baseline}-metadata"


def build_admin_metadata_block(
    spec: NetworkPolicySpec, baseline: BaselineRef, tier: MetadataEnforcement, priority: int
) -> dict[str, Any]:
    """The cluster-scoped policy of `tier` that denies the metadata CIDRs to the baseline's namespaces."""
    blocked = metadata_cidrs(spec.metadata_api.providers, spec.metadata_api.extra_cidrs)
    cidrs = [*blocked.ipv4, *blocked.ipv6]
    networks = [
        {"networks": cidrs[start : start + _MAX_NETWORKS_PER_PEER]}
        for start in range(0, len(cidrs), _MAX_NETWORKS_PER_PEER)
    ]
    rules: list[dict[str, Any]] = []
    shadowed = sorted(
        {
            f"{address}/{address.max_prefixlen}"
            for address in spec.dns_ips
            if any(address in ipaddress.ip_network(cidr) for cidr in cidrs)
        }
    )
    if spec.allow_dns and shadowed:
        rules.append(
            {
                "name": "pass-dns-to-resolvers-on-metadata-addresses",
                "action": "Pass",
                "to": [{"networks": shadowed}],
            }
            | _dns_ports(tier)
        )
    rules.append({"name": "deny-cloud-metadata-apis", "action": "Deny", "to": networks})
    body_spec: dict[str, Any] = {
        "priority": priority,
        "subject": {"namespaces": {"matchLabels": {METADATA_BLOCK_LABEL: baseline.name}}},
        "egress": rules,
    }
    if tier is MetadataEnforcement.CLUSTER_NETWORK_POLICY:
        body_spec = {"tier": "Admin", **body_spec}
    return {
        "apiVersion": API_VERSIONS[tier],
        "kind": tier.value,
        "metadata": {
            "name": admin_block_name(baseline.name),
            "labels": managed_labels(baseline, Section.NETWORK_POLICY),
            "ownerReferences": [owner_reference(baseline)],
        },
        "spec": body_spec,
    }


def _dns_ports(tier: MetadataEnforcement) -> dict[str, Any]:
    if tier is MetadataEnforcement.CLUSTER_NETWORK_POLICY:
        return {
            "protocols": [
                {"udp": {"destinationPort": {"number": DNS_PORT}}},
                {"tcp": {"destinationPort": {"number": DNS_PORT}}},
            ]
        }
    return {
        "ports": [
            {"portNumber": {"protocol": "UDP", "port": DNS_PORT}},
            {"portNumber": {"protocol": "TCP", "port": DNS_PORT}},
        ]
    }
