"""Which of a namespace's own NetworkPolicies let pods reach a cloud metadata API.

NetworkPolicies only add: for the pods a user's egress policy selects, nothing the baseline renders can take
an allowed destination away (that needs the Admin tier). So the operator says where it happens instead: an
egress rule with no `to` (every destination), or an ipBlock whose range holds a metadata address that its
`except` does not, on a port the metadata API answers on (HTTP 80, HTTPS 443) or on every port. Pod and
namespace peers never reach a metadata address.

Pure: the planner calls it with the observed policies and the baseline's metadata CIDRs.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baseline_operator.observed import EgressRule, ObservedPolicy, PortSpan

METADATA_PORTS: Final = (80, 443)
"""Where metadata APIs answer (AWS, GCP, Azure, OpenStack: HTTP 80; some also on 443)."""


@dataclass(frozen=True)
class MetadataOpening:
    """A user's egress policy that allows the pods it selects to reach metadata CIDRs."""

    policy: str
    cidrs: tuple[str, ...]
    everywhere: bool
    """Through a rule with no `to` at all (rather than an ipBlock)."""

    def describe(self) -> str:
        how = "a rule without `to`" if self.everywhere else "an ipBlock without them in its `except`"
        return f"NetworkPolicy {self.policy} lets the pods it selects reach {', '.join(self.cidrs)} ({how})"


def metadata_openings(policies: Iterable[ObservedPolicy], cidrs: Iterable[str]) -> list[MetadataOpening]:
    """Each policy some egress rule of which allows a metadata CIDR, by policy name."""
    ordered = sorted(policies, key=lambda policy: policy.name)
    if not ordered:  # most namespaces: asked on every reconcile, nothing to parse
        return []
    networks = _networks(tuple(cidrs))
    found: list[MetadataOpening] = []
    for policy in ordered:
        reached = [(network, _reached(policy, network)) for network in networks]
        opened = [str(network) for network, how in reached if how is not None]
        if opened:
            everywhere = any(how == "everywhere" for _, how in reached)
            found.append(MetadataOpening(policy.name, tuple(opened), everywhere=everywhere))
    return found


@functools.lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The baseline's metadata CIDRs, parsed once per set (they are a baseline's, not a namespace's)."""
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def _reached(policy: ObservedPolicy, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """How the policy lets its pods reach `network`: "everywhere", "ipBlock", or None."""
    for rule in policy.egress or ():
        if not _metadata_ports(rule):
            continue
        if rule.everywhere:
            return "everywhere"
        if any(_block_holds(cidr, excepted, network) for cidr, excepted in rule.ip_blocks):
            return "ipBlock"
    return None


def _metadata_ports(rule: EgressRule) -> bool:
    return not rule.ports or any(_span_holds(span) for span in rule.ports)


def _span_holds(span: PortSpan) -> bool:
    if span.protocol != "TCP":
        return False
    if span.named is not None:
        return True  # a named port may be 80 on some pod: count it
    if span.start is None:
        return True
    end = span.end if span.end is not None else span.start
    return any(span.start <= port <= end for port in METADATA_PORTS)


def _block_holds(
    cidr: str, excepted: tuple[str, ...], network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    """Whether the ipBlock allows some address of `network`: its range overlaps it, not all excepted."""
    try:
        block = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    if block.version != network.version or not block.overlaps(network):
        return False
    for text in excepted:
        try:
            hole = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if hole.version == network.version and network.subnet_of(hole):  # type: ignore[arg-type]
            return False
    return True
