"""The NetworkPolicies of the networkPolicy section, with the semantics spelled out.

NetworkPolicies only ever allow, and all policies selecting a pod are OR-ed. Two consequences shape
everything here:

- When egress is denied by default, the metadata API is already unreachable. Any egress allow we
  render must then not reach it; ours are the cluster DNS pods (a selector, never an IP range) and
  the configured `dnsIPs`, as single addresses, on port 53 only.
- When egress is open, the only way to block the metadata API with NetworkPolicies is a policy that
  isolates egress and allows everything else: `0.0.0.0/0` except the IPv4 metadata CIDRs, `::/0`
  except the IPv6 ones, and all pods (for CNIs whose ipBlocks never match pods). Never render that
  policy next to a default deny: it would re-open egress to the whole internet. And never let it
  select a pod that another egress policy of the namespace selects: for that pod it would open
  everything the other policy closed (a database allowed only 10.0.0.0/8:5432 would reach the whole
  internet). So it selects exactly the pods no other egress policy selects, the complement of their
  selectors (label_selectors.py): one policy per term of that complement, none when an egress policy
  selects every pod. A configured resolver that is itself a metadata address (GKE Cloud DNS) is
  allowed back in the same policy, on port 53 only.

`except` entries must be of the same family as their `cidr` and strictly inside it, or the API server
refuses the object. Every port names its protocol, so nothing depends on the TCP default.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from baseline_operator.builders.common import BuildError, managed_metadata
from baseline_operator.label_selectors import TooComplexError, complement_of_union, selector_to_json
from baseline_operator.spec import METADATA_API_PROVIDERS, Section

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import IPAddress, IPNetwork, LabelSelector, NetworkPolicySpec

DEFAULT_DENY_NAME: Final = "baseline-default-deny"
ALLOW_DNS_NAME: Final = "baseline-allow-dns"
ALLOW_SAME_NAMESPACE_NAME: Final = "baseline-allow-same-namespace"
BLOCK_METADATA_NAME: Final = "baseline-block-metadata"

ALL_IPV4: Final = "0.0.0.0/0"
ALL_IPV6: Final = "::/0"
DNS_PORT: Final = 53
# `kubernetes.io/metadata.name` is set on every namespace by the API server; `name: kube-system`
# is a label nobody sets by default.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
CLUSTER_DNS_NAMESPACE: Final = "kube-system"
CLUSTER_DNS_POD_LABELS: Final = MappingProxyType({"k8s-app": "kube-dns"})
MAX_BLOCK_POLICIES: Final = 16
"""At most this many metadata-block policies per namespace (terms of the complement, see above)."""


class MetadataCIDRs(NamedTuple):
    """The CIDRs to block, per family, deduplicated and in address order."""

    ipv4: list[str]
    ipv6: list[str]


def metadata_cidrs(providers: Iterable[str], extra: Iterable[IPNetwork | str] = ()) -> MetadataCIDRs:
    """The metadata-API CIDRs of `providers` plus `extra`; KeyError for an unknown provider.

    A CIDR inside another one in the list is dropped: it adds nothing to an `except`.
    """
    # Every plan of every namespace asks this of the same few settings: parsing the CIDRs each time was
    # 5 % of the operator's CPU in a roll-out. The lists are copied: callers may keep or change theirs.
    found = _metadata_cidrs(tuple(providers), tuple(str(cidr) for cidr in extra))
    return MetadataCIDRs(list(found.ipv4), list(found.ipv6))


@functools.lru_cache(maxsize=64)
def _metadata_cidrs(providers: tuple[str, ...], extra: tuple[str, ...]) -> MetadataCIDRs:
    networks: set[IPNetwork] = {
        ipaddress.ip_network(cidr) for provider in providers for cidr in METADATA_API_PROVIDERS[provider]
    }
    for cidr in extra:
        network = ipaddress.ip_network(cidr)
        if network.prefixlen == 0:
            raise ValueError(f"{cidr} cannot be an `except` entry: it is not strictly inside {network}")
        networks.add(network)
    kept = [
        network for network in networks if not any(_strictly_inside(network, other) for other in networks)
    ]
    ipv4 = sorted(network for network in kept if isinstance(network, ipaddress.IPv4Network))
    ipv6 = sorted(network for network in kept if isinstance(network, ipaddress.IPv6Network))
    return MetadataCIDRs([str(network) for network in ipv4], [str(network) for network in ipv6])


def _strictly_inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    if inner == outer:
        return False
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def build_network_policies(spec: NetworkPolicySpec, context: BuildContext) -> list[dict[str, Any]]:
    """The section's NetworkPolicies, sorted by name.

    By name happens to be the safe apply order too: the allows come before `baseline-default-deny`,
    so applying in list order never leaves a window where DNS is denied but not yet allowed.
    """
    deny = spec.default_deny
    policies: list[dict[str, Any]] = []
    if deny.ingress or deny.egress:
        policies.append(_default_deny(context, ingress=deny.ingress, egress=deny.egress))
    if deny.egress and spec.allow_dns:
        policies.append(_allow_dns(spec.dns_ips, context))
    if spec.allow_same_namespace and (deny.ingress or deny.egress):
        policies.append(_allow_same_namespace(context, ingress=deny.ingress, egress=deny.egress))
    if spec.metadata_api.block and not deny.egress and not context.metadata_blocked_above:
        policies += _block_metadata(spec, context)
    return sorted(policies, key=lambda policy: str(policy["metadata"]["name"]))


def _policy(
    name: str, context: BuildContext, spec: dict[str, Any], pods: LabelSelector | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": managed_metadata(name, Section.NETWORK_POLICY, context),
        # An empty podSelector selects every pod of the namespace, including pods created later.
        "spec": {"podSelector": {} if pods is None else selector_to_json(pods), **spec},
    }


def _policy_types(*, ingress: bool, egress: bool) -> list[str]:
    return [kind for kind, wanted in (("Ingress", ingress), ("Egress", egress)) if wanted]


def _default_deny(context: BuildContext, *, ingress: bool, egress: bool) -> dict[str, Any]:
    # A policy type listed without any rule denies that direction entirely.
    return _policy(DEFAULT_DENY_NAME, context, {"policyTypes": _policy_types(ingress=ingress, egress=egress)})


def _dns_ports() -> list[dict[str, Any]]:
    # Fresh dicts on every call: no two objects we return may share a mutable part.
    return [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]


def _host_block(address: IPAddress) -> dict[str, Any]:
    return {"ipBlock": {"cidr": str(ipaddress.ip_network(address))}}


def _address_order(address: IPAddress) -> tuple[int, IPAddress]:
    # IPv4 and IPv6 addresses do not compare with each other; order by family first.
    return (address.version, address)


def _allow_dns(dns_ips: Iterable[IPAddress], context: BuildContext) -> dict[str, Any]:
    # Namespace and pod selector in ONE peer mean "kube-dns pods in kube-system". As two list items
    # they would be OR-ed: every pod of kube-system, or kube-dns-labelled pods in our own namespace.
    cluster_dns = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: CLUSTER_DNS_NAMESPACE}},
        "podSelector": {"matchLabels": dict(CLUSTER_DNS_POD_LABELS)},
    }
    resolvers = [_host_block(address) for address in sorted(set(dns_ips), key=_address_order)]
    rule = {"to": [cluster_dns, *resolvers], "ports": _dns_ports()}
    return _policy(ALLOW_DNS_NAME, context, {"policyTypes": ["Egress"], "egress": [rule]})


def _allow_same_namespace(context: BuildContext, *, ingress: bool, egress: bool) -> dict[str, Any]:
    # Only the denied directions are listed: a policy type in a policy isolates the selected pods
    # for that direction, so listing an open direction would turn this allow into a restriction.
    # A bare podSelector peer means pods of this policy's own namespace.
    spec: dict[str, Any] = {"policyTypes": _policy_types(ingress=ingress, egress=egress)}
    if ingress:
        spec["ingress"] = [{"from": [{"podSelector": {}}]}]
    if egress:
        spec["egress"] = [{"to": [{"podSelector": {}}]}]
    return _policy(ALLOW_SAME_NAMESPACE_NAME, context, spec)


def _block_metadata(spec: NetworkPolicySpec, context: BuildContext) -> list[dict[str, Any]]:
    try:
        terms = complement_of_union(list(context.other_egress_selectors), MAX_BLOCK_POLICIES)
    except TooComplexError as error:
        raise BuildError(
            f"the metadata API cannot be blocked without opening what the namespace's own egress policies "
            f"close: {error}; give those policies simpler pod selectors, deny egress by default "
            "(networkPolicy.defaultDeny.egress), or use a cluster with the Admin network policy tier"
        ) from None
    rules = _block_rules(spec)
    if len(terms) == 1 and not terms[0].match_labels and not terms[0].match_expressions:
        return [_policy(BLOCK_METADATA_NAME, context, {"policyTypes": ["Egress"], "egress": rules})]
    return [
        _policy(_block_name(term), context, {"policyTypes": ["Egress"], "egress": _block_rules(spec)}, term)
        for term in terms
    ]


def _block_name(pods: LabelSelector) -> str:
    # Named after the pods it selects: the same term keeps its name as other policies come and go.
    digest = hashlib.sha256(json.dumps(selector_to_json(pods), sort_keys=True).encode()).hexdigest()
    return f"{BLOCK_METADATA_NAME}-{digest[:10]}"


def _block_rules(spec: NetworkPolicySpec) -> list[dict[str, Any]]:
    blocked = metadata_cidrs(spec.metadata_api.providers, spec.metadata_api.extra_cidrs)
    everything_else = {
        "to": [
            _ip_block_except(ALL_IPV4, blocked.ipv4),
            _ip_block_except(ALL_IPV6, blocked.ipv6),
            # Some CNIs (Cilium among them) never match pods by ipBlock, only external addresses;
            # without this peer, isolating egress would cut pods off from every other pod. Pods are
            # never metadata endpoints, so this opens nothing that is blocked.
            {"namespaceSelector": {}},
        ]
    }
    rules: list[dict[str, Any]] = [everything_else]
    # A resolver that is itself a metadata address (GKE Cloud DNS answers on 169.254.169.254:53)
    # would lose DNS to the block above; allow it back on port 53 only.
    blocked_networks = [ipaddress.ip_network(cidr) for cidr in (*blocked.ipv4, *blocked.ipv6)]
    shadowed = sorted(
        {address for address in spec.dns_ips if any(address in network for network in blocked_networks)},
        key=_address_order,
    )
    if spec.allow_dns and shadowed:
        rules.append({"to": [_host_block(address) for address in shadowed], "ports": _dns_ports()})
    return rules


def _ip_block_except(cidr: str, excluded: list[str]) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excluded:
        block["except"] = list(excluded)
    return {"ipBlock": block}
