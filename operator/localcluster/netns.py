"""Network namespaces for the real node: where its packets live, with no way off the machine.

Everything the node runs (its control plane, containerd, the kubelet, kube-proxy, the enforcer, the Pod
bridge) lives in one network namespace that has no default route, so a packet sent by mistake fails as
"network is unreachable" instead of leaving the machine, and the host's own nftables rules and sysctls
stay untouched. A veth pair joins it to the host on a private /30, so that the test process (in the
host's namespace) reaches the API server; a second namespace behind another veth holds the metadata
endpoint emulation, one forwarding hop away from the Pods (traffic to an address of the node itself is
not policed by the enforcer).

Namespaces are named (`/run/netns/NAME`, created with `ip netns add`) and entered with
`nsenter --net=...`; `ip netns exec` would remount /sys and hide the cgroup mounts. The kernel here has
no `dummy` link type, which is why every extra address sits on a veth.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
SLOTS = 64
"""How many nodes may run on one machine at once; each takes one /30 of `HOST_LINKS`."""
HOST_LINKS = "10.201.0.0/24"
"""The private range the host-to-node /30s are cut from (10.201.0.4*slot/30)."""
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
POD_CIDR_V6 = "fd00:10:244::/64"
POD_GATEWAY_V6 = "fd00:10:244::1"
METADATA_IP = "169.254.169.254"
METADATA_IP_V6 = "fd00:ec2::254"
_METADATA_LINK = ("169.254.169.253", 30)
"""The node's end of the metadata veth; the emulation's end is METADATA_IP in the same /30."""
_METADATA_LINK_V6 = ("fd00:ec2::1", 64)


class NetworkError(RuntimeError):
    """A namespace, link or address could not be set up."""


@dataclass(frozen=True)
class NodeNetwork:
    """Names and addresses of one node's namespaces and links, all derived from its slot."""

    slot: int

    @property
    def node_netns(self) -> str:
        return f"baseline-node-{self.slot}"

    @property
    def metadata_netns(self) -> str:
        return f"baseline-md-{self.slot}"

    @property
    def host_link(self) -> str:
        """The host's end of the host-to-node veth (the node's end is `eth0` in its namespace)."""
        return f"bnode{self.slot}"

    @property
    def metadata_link(self) -> str:
        """The node's end of the veth to the metadata namespace (the other end is its `eth0`)."""
        return "metadata0"

    @property
    def host_address(self) -> str:
        return str(ipaddress.ip_network(HOST_LINKS)[4 * self.slot + 1])

    @property
    def node_address(self) -> str:
        """The node's InternalIP; the API server listens and advertises here."""
        return str(ipaddress.ip_network(HOST_LINKS)[4 * self.slot + 2])

    @property
    def node_netns_path(self) -> Path:
        return NETNS_DIR / self.node_netns

    @property
    def metadata_netns_path(self) -> Path:
        return NETNS_DIR / self.metadata_netns

    def in_node(self, *command: str) -> list[str]:
        """`command` run inside the node's network namespace."""
        return nsenter(self.node_netns_path, *command)

    def in_metadata(self, *command: str) -> list[str]:
        return nsenter(self.metadata_netns_path, *command)

    # -- lifecycle ---------------------------------------------------------------------------------

    def create(self) -> None:
        """Create both namespaces and their links; leave the node namespace without a default route."""
        self.delete()  # leftovers of a run that was killed before it could clean up
        _ip("netns", "add", self.node_netns)
        _ip("netns", "add", self.metadata_netns)
        node, metadata = self.node_netns, self.metadata_netns
        # Host <-> node: the tests reach the API server over this /30, nothing else uses it.
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "eth0", "netns", node)
        # No IPv6 on the host's end: no router or neighbour solicitations from the host into the node.
        _write_sysctl(f"net/ipv6/conf/{self.host_link}/disable_ipv6", "1")
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        for setting, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            # Pod-to-Pod traffic on one bridge goes through netfilter only with this set; it is per
            # namespace, so the host's own value does not change.
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
        ):
            self._node_sysctl(setting, value)
        _ip("-n", node, "link", "set", "lo", "up")
        _ip("-n", node, "addr", "add", f"{self.node_address}/30", "dev", "eth0")
        _ip("-n", node, "link", "set", "eth0", "up")
        # Node <-> metadata emulation: a forwarding hop, so that the enforcer polices Pods' traffic to it.
        _ip(
            "-n",
            node,
            "link",
            "add",
            self.metadata_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            metadata,
        )
        _ip("-n", node, "addr", "add", f"{_METADATA_LINK[0]}/{_METADATA_LINK[1]}", "dev", self.metadata_link)
        _ip(
            "-n",
            node,
            "addr",
            "add",
            f"{_METADATA_LINK_V6[0]}/{_METADATA_LINK_V6[1]}",
            "dev",
            self.metadata_link,
            "nodad",
        )
        _ip("-n", node, "link", "set", self.metadata_link, "up")
        _ip("-n", metadata, "link", "set", "lo", "up")
        _ip("-n", metadata, "addr", "add", f"{METADATA_IP}/{_METADATA_LINK[1]}", "dev", "eth0")
        _ip("-n", metadata, "addr", "add", f"{METADATA_IP_V6}/{_METADATA_LINK_V6[1]}", "dev", "eth0", "nodad")
        _ip("-n", metadata, "link", "set", "eth0", "up")
        # Answers go back to the Pods (and the node) only; the emulation has no other route either.
        _ip("-n", metadata, "route", "add", POD_CIDR, "via", _METADATA_LINK[0])
        _ip("-n", metadata, "route", "add", POD_CIDR_V6, "via", _METADATA_LINK_V6[0])
        self._forbid_forwarding_to_host()

    def _node_sysctl(self, name: str, value: str) -> None:
        subprocess.run(
            self.in_node("sh", "-c", f"echo {value} > /proc/sys/{name}"), check=True, capture_output=True
        )

    def _forbid_forwarding_to_host(self) -> None:
        # A Pod's packet to the host's end of the veth would reach the host with a Pod source address the
        # host has no route back to; its answer would follow the host's default route off the machine.
        # Nothing the node forwards may go to the host: only the node's own processes talk to it.
        ruleset = (
            "table inet baseline-node {\n"
            "  chain forward {\n"
            "    type filter hook forward priority -200; policy accept;\n"
            '    oifname "eth0" drop\n'
            "  }\n"
            "}\n"
        )
        subprocess.run(
            self.in_node("nft", "-f", "-"), input=ruleset.encode(), check=True, capture_output=True
        )

    def delete(self) -> None:
        """Delete both namespaces (and so every link, address, route and nft table in them)."""
        for name in (self.metadata_netns, self.node_netns):
            if (NETNS_DIR / name).exists():
                _ip("netns", "delete", name)
        # Deleting the node namespace deletes the host's end of the veth too; this is for a half-made one.
        if Path(f"/sys/class/net/{self.host_link}").exists():
            _ip("link", "delete", self.host_link)

    def leftovers(self) -> list[str]:
        """What of this network still exists on the host (for the teardown check)."""
        found = [
            str(NETNS_DIR / name)
            for name in (self.node_netns, self.metadata_netns)
            if (NETNS_DIR / name).exists()
        ]
        if Path(f"/sys/class/net/{self.host_link}").exists():
            found.append(f"link {self.host_link}")
        return found


def nsenter(netns: Path, *command: str) -> list[str]:
    """`command` prefixed to run in the network namespace `netns` (mount namespace unchanged)."""
    return ["nsenter", f"--net={netns}", "--", *command]


@contextlib.contextmanager
def entered(netns: Path) -> Iterator[None]:
    """Run the body with the calling thread inside `netns`: sockets it opens live there for good.

    setns(2) changes only the calling thread, so other threads of this process stay on the host.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise NetworkError(f"setns({netns}): {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise NetworkError(f"could not return to the host's network namespace: {ctypes.get_errno()}")
    finally:
        os.close(own)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name).write_text(value)
