"""Run busybox Pods on the real node and probe the network from inside them.

Every probe runs in a Pod (`kubectl exec`), never from the host's network namespace. A probe that is
expected to fail must be paired, in the same test, with the same probe succeeding where nothing blocks
it: a broken network would otherwise pass every "blocked" test.
"""

from __future__ import annotations

import re
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes import client

from localcluster.images import BUSYBOX_IMAGE
from localcluster.node import CLUSTER_DNS

if TYPE_CHECKING:
    from pathlib import Path

# busybox's `timeout` kills with SIGTERM: the probe's shell reports 143.
TIMED_OUT = 143


@dataclass(frozen=True)
class Probe:
    """What a command run in a Pod printed, and how it ended."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Pods:
    """Busybox Pods on the node, and probes run inside them."""

    api: client.ApiClient
    kubectl: Path
    kubeconfig: Path

    def run_busybox(
        self,
        namespace: str,
        name: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        command: tuple[str, ...] = ("sleep", "3600"),
        security_context: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> client.V1Pod:
        """Start a busybox Pod (`imagePullPolicy: Never`) and return it once it is Running and Ready."""
        name = name or f"bb-{uuid.uuid4().hex[:6]}"
        container: dict[str, Any] = {
            "name": "main",
            "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": list(command),
        }
        if security_context:
            container["securityContext"] = security_context
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            # Deleted at once at the end of a test: the namespace goes without waiting for `sleep`.
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 0},
        }
        core = client.CoreV1Api(self.api)
        core.create_namespaced_pod(namespace, body)
        deadline = time.monotonic() + timeout
        while True:
            pod = core.read_namespaced_pod(name, namespace)
            conditions = pod.status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {namespace}/{name} not Ready in {timeout} s: {pod.status}")
            time.sleep(0.2)

    def run_web_server(
        self, namespace: str, name: str | None = None, *, port: int = 8080, **kwargs: Any
    ) -> client.V1Pod:
        """A busybox httpd Pod answering `hello from <name>` on `port`."""
        name = name or f"web-{uuid.uuid4().hex[:6]}"
        script = (
            f"mkdir -p /tmp/www && echo hello from {name} > /tmp/www/index.html"
            f" && exec httpd -f -p {port} -h /tmp/www"
        )
        return self.run_busybox(namespace, name, command=("sh", "-c", script), **kwargs)

    def exec(self, namespace: str, pod: str, script: str, *, timeout: float = 30.0) -> Probe:
        """Run a shell script in the Pod's container."""
        result = subprocess.run(
            [
                str(self.kubectl),
                f"--kubeconfig={self.kubeconfig}",
                "exec",
                "-n",
                namespace,
                pod,
                "--",
                "sh",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Probe(result.returncode, result.stdout, result.stderr)

    def http_get(self, namespace: str, pod: str, url: str, *, seconds: int = 3) -> Probe:
        """GET `url` over a new connection; busybox 1.35's `wget -T` segfaults, so `timeout` bounds it."""
        return self.exec(namespace, pod, f"timeout {seconds} wget -q -O - '{url}'")

    def tcp_connect(self, namespace: str, pod: str, host: str, port: int, *, seconds: int = 3) -> Probe:
        """Open a TCP connection (and close it at once)."""
        target = f"[{host}]" if ":" in host else host
        return self.exec(namespace, pod, f"echo | timeout {seconds} nc {target.strip('[]')} {port}")

    def resolve_udp(self, namespace: str, pod: str, name: str, *, server: str = CLUSTER_DNS) -> list[str]:
        """The A records busybox's nslookup (UDP) gets for `name` from `server`; empty when none."""
        probe = self.exec(namespace, pod, f"timeout 5 nslookup -type=a {name} {server}")
        # After the server's own "Address:" line come the answers' "Address:" lines.
        answers = probe.stdout.split("Name:", 1)[1] if "Name:" in probe.stdout else ""
        return re.findall(r"Address:\s*([0-9.]+)", answers)

    def resolve_tcp(self, namespace: str, pod: str, name: str, *, server: str = CLUSTER_DNS) -> list[str]:
        """The A records a DNS query over TCP (RFC 7766 framing, sent with nc) gets for `name`."""
        query = dns_query(name)
        octal = "".join(f"\\{byte:03o}" for byte in struct.pack(">H", len(query)) + query)
        # Stdin stays open a moment so that nc reads the answer before it sees end of input.
        script = f"(printf '{octal}'; sleep 2) | timeout 5 nc -w 3 {server} 53 | od -An -v -tx1"
        probe = self.exec(namespace, pod, script)
        response = bytes(int(byte, 16) for byte in probe.stdout.split())
        return a_records(response[2:]) if len(response) > 2 else []


def dns_query(name: str, query_id: int = 0x5EED) -> bytes:
    """A recursive DNS query for the A records of `name`."""
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack(">HH", 1, 1)


def a_records(message: bytes) -> list[str]:
    """The IPv4 addresses in the answer section of a DNS response."""
    _, flags, questions, answers, _, _ = struct.unpack(">HHHHHH", message[:12])
    if flags & 0x000F:  # RCODE: anything but NOERROR has no usable answer
        return []
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        record_type, _, _, length = struct.unpack(">HHIH", message[offset : offset + 10])
        offset += 10
        if record_type == 1 and length == 4:
            found.append(".".join(str(byte) for byte in message[offset : offset + 4]))
        offset += length
    return found


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length
