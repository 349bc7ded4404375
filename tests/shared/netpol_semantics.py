"""NetworkPolicy semantics, written from the Kubernetes API reference, to judge what the builders render.

Independent of the operator's code on purpose (its own selector matching, CIDR handling, defaulting): the
property tests ask this evaluator whether a packet may leave a pod, with and without the baseline's
policies. From the reference (networking.k8s.io/v1, "NetworkPolicy"):

- A pod is isolated for egress when any NetworkPolicy in its namespace selects it (`podSelector`) and has
  `Egress` in `policyTypes`. A pod that is not isolated may send anything.
- An isolated pod may send a packet when some policy that selects it and isolates egress has an egress
  rule whose `ports` match (empty: all ports; a port without protocol is TCP; `endPort` makes a range) and
  whose `to` matches (empty: every destination). Rules and policies are OR-ed: they only add.
- A peer is an `ipBlock` (the address is in `cidr` and in none of `except`), or pods: `namespaceSelector`
  (absent: the policy's own namespace; `{}`: every namespace) together with `podSelector` (absent: every
  pod), both required when both are given.
- Whether an ipBlock matches a pod's own IP is left to the implementation ("may or may not"): checked both
  ways.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ip: str

    def __hash__(self) -> int:
        return hash((self.namespace, tuple(sorted(self.labels.items())), self.ip))


@dataclass(frozen=True)
class Destination:
    """An external address, or a pod (which has an address too)."""

    ip: str
    pod: Pod | None = None


@dataclass
class World:
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    ipblock_matches_pods: bool = True


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression_holds(expression, labels) for expression in selector.get("matchExpressions") or [])


def _expression_holds(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    present = key in labels
    return {
        "In": present and labels.get(key) in values,
        "NotIn": not present or labels.get(key) not in values,
        "Exists": present,
        "DoesNotExist": not present,
    }[operator]


def _policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    # The API server's default: Ingress always, Egress when there are egress rules.
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _selects(policy: dict[str, Any], pod: Pod) -> bool:
    return policy["metadata"]["namespace"] == pod.namespace and label_selector_matches(
        policy["spec"].get("podSelector") or {}, pod.labels
    )


def _port_matches(ports: list[dict[str, Any]] | None, protocol: str, port: int) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        end = entry.get("endPort", number)
        if number <= port <= end:
            return True
    return False


def _in_block(block: dict[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    cidr = ipaddress.ip_network(block["cidr"])
    if address.version != cidr.version or address not in cidr:
        return False
    return not any(
        address in ipaddress.ip_network(hole)
        for hole in block.get("except") or []
        if ipaddress.ip_network(hole).version == address.version
    )


def _peer_matches(
    peer: dict[str, Any], policy_namespace: str, destination: Destination, world: World
) -> bool:
    if "ipBlock" in peer:
        if destination.pod is not None and not world.ipblock_matches_pods:
            return False
        return _in_block(peer["ipBlock"], destination.ip)
    pod = destination.pod
    if pod is None:
        return False
    if "namespaceSelector" in peer:
        if not label_selector_matches(
            peer["namespaceSelector"], world.namespace_labels.get(pod.namespace, {})
        ):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return label_selector_matches(peer.get("podSelector"), pod.labels)


def egress_allowed(
    policies: list[dict[str, Any]], pod: Pod, destination: Destination, protocol: str, port: int, world: World
) -> bool:
    isolating = [p for p in policies if _selects(p, pod) and "Egress" in _policy_types(p)]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("egress") or []:
            if not _port_matches(rule.get("ports"), protocol, port):
                continue
            peers = rule.get("to") or []
            if not peers or any(
                _peer_matches(peer, policy["metadata"]["namespace"], destination, world) for peer in peers
            ):
                return True
    return False


def explicitly_allowed(
    policies: list[dict[str, Any]], pod: Pod, destination: Destination, protocol: str, port: int, world: World
) -> bool:
    """Allowed by a rule of a policy that selects the pod (not merely because nothing isolates it)."""
    isolating = [p for p in policies if _selects(p, pod) and "Egress" in _policy_types(p)]
    return bool(isolating) and egress_allowed(isolating, pod, destination, protocol, port, world)
