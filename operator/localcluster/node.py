"""A real node for the local control plane: Pods run, and NetworkPolicies are enforced on real packets.

`LocalNode` starts, inside a network namespace with no default route (see `localcluster.netns`):
the control plane (a `LocalCluster` moved into the namespace, plus kube-scheduler), containerd with
Debian's runc and the CNI bridge, the kubelet, kube-proxy (nftables mode: the `kubernetes` Service
works from Pods), kube-network-policies as the NetworkPolicy (and AdminNetworkPolicy) enforcer, CoreDNS
behind the `kube-dns` Service, and an emulation of the cloud metadata endpoint (169.254.169.254:80 and
[fd00:ec2::254]:80) in a namespace of its own, one forwarding hop from the Pods. Images come from
`localcluster.images`; nothing is pulled.

Teardown takes everything away again: every process in the node's cgroup (containers, shims,
containerd), the mounts under the state folder, the cgroups, both namespaces (and with them every link,
bridge and nft table), the host paths and sysctls recorded by `localcluster.host`.
`leftovers()` says what of it is still there.

Measured on 2 cores, binaries built: from nothing to a Ready node with CoreDNS and the enforcer running
takes about 13 s (control plane 5 s, containerd and images 3 s, kubelet 1 s, add-ons 3-4 s); teardown
about 2 s.
"""

from __future__ import annotations

import contextlib
import http
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from localcluster import binaries, crds, host, images, netns
from localcluster.cluster import ClusterError, LocalCluster, Process

NODE_NAME = "baseline-node"
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
METADATA_MARKER = "baseline-metadata-emulation"
"""The body of the metadata emulation's `/`; a probe that reads it reached the emulation."""
NFQUEUE_ID = 98
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_RUNC = Path("/usr/sbin/runc")
_CNI_PLUGINS = Path("/usr/lib/cni")
_SOCKET_PATH_MAX = 107
"""Unix socket paths are limited to 108 bytes with the final NUL; containerd adds `.ttrpc` to its own."""


def _say(message: str) -> None:
    binaries._say(message)  # noqa: SLF001 - one voice for the whole package


class NodeError(ClusterError):
    """The node could not be started, or a piece of it stopped working."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks for a node (root, Debian packages); empty when it can run one."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, cgroups and mounts need it)")
    packages = (
        (_RUNC, "runc"),
        (_CNI_PLUGINS / "bridge", "containernetworking-plugins"),
        (images.BUSYBOX_PATH, "busybox-static"),
        (Path("/usr/sbin/nft"), "nftables"),
    )
    missing += [
        f"{path} (Debian package {package}; `hack/install-node-packages.sh` installs it)"
        for path, package in packages
        if not path.exists()
    ]
    missing += [f"the `{command}` command" for command in ("nsenter", "ip") if shutil.which(command) is None]
    return missing


@dataclass
class LocalNode:
    """A control plane and one real node, all state in `state_dir`, all packets in a namespace."""

    state_dir: Path
    kubeconfig_path: Path | None = None
    """Where the admin kubeconfig goes; `state_dir/cluster/kubeconfig` unless given."""
    admin_network_policy: bool = True
    """Run the enforcer with `--admin-network-policy` and `--baseline-admin-network-policy` (it then
    needs their CRDs, which the node installs)."""
    binaries: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the last start took (build, network, control plane, runtime, node, addons)."""
    xtables_nfqueue: bool | None = None
    """Whether the enforcer queues with the xtables NFQUEUE target (kernel without nft `queue`); decided
    at start by trying the nft expression in the node's namespace."""
    _cluster: LocalCluster | None = field(default=None, init=False, repr=False)
    _slot: host.Slot | None = field(default=None, init=False, repr=False)
    _last_slot: int | None = field(default=None, init=False, repr=False)
    _processes: dict[str, Process] = field(default_factory=dict, init=False, repr=False)

    # -- what tests and tools use ------------------------------------------------------------------

    @property
    def cluster(self) -> LocalCluster:
        if self._cluster is None:
            raise NodeError("the node has not been started")
        return self._cluster

    @property
    def network(self) -> netns.NodeNetwork:
        if self._slot is None:
            raise NodeError("the node has not been started")
        return netns.NodeNetwork(self._slot.number)

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def kubectl(self) -> Path:
        return self.binaries["kubectl"]

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    @property
    def cgroup_name(self) -> str:
        """The kubelet's cgroupRoot; the node's daemons run in its `daemons` child."""
        return f"baseline-node-{self.network.slot}"

    @property
    def metadata_url(self) -> str:
        return f"http://{netns.METADATA_IP}/"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def kubectl_command(self, *args: str) -> list[str]:
        return [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 300.0) -> None:
        """Build or find every binary, then bring the whole node up; return once Pods can run."""
        missing = missing_prerequisites()
        if missing:
            raise NodeError("this machine cannot run the node; it lacks: " + "; ".join(missing))
        self.state_dir = self.state_dir.resolve()
        if len(str(self.containerd_socket)) + len(".ttrpc") > _SOCKET_PATH_MAX:
            raise NodeError(f"state folder path too long for containerd's socket: {self.containerd_socket}")
        phase = time.monotonic()
        if not self.binaries:
            self.binaries = binaries.ensure_control_plane(tools=(*binaries.CONTROL_PLANE, *binaries.NODE))
        phase = self._timed("build", phase)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._slot = host.claim(self.state_dir, reap=reap_slot, slots=netns.SLOTS)
        self._last_slot = self._slot.number
        deadline = time.monotonic() + timeout
        try:
            self.network.create()
            self._make_cgroups()
            phase = self._timed("network", phase)
            self._cluster = LocalCluster(
                self.state_dir / "cluster",
                binaries=dict(self.binaries),
                kubeconfig_path=self.kubeconfig_path,
                netns=self.network.node_netns_path,
                address=self.network.node_address,
                scheduler=True,
            )
            self._cluster.start(timeout=max(deadline - time.monotonic(), 1.0))
            phase = self._timed("control plane", phase)
            self._start_metadata_emulation()
            self._start_containerd(deadline)
            phase = self._timed("containerd and images", phase)
            self._start_kubelet(deadline)
            self._start_kube_proxy()
            phase = self._timed("kubelet (node Ready)", phase)
            self._install_addons(deadline)
            self._timed("enforcer and CoreDNS", phase)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything and remove what the node made; safe to call twice, or after a failed start."""
        for name in ("kube-proxy", "kubelet"):
            if name in self._processes:
                self._processes[name].stop(grace=10)
        if self._slot is not None:
            _kill_cgroup(self.cgroup_name)
        for process in self._processes.values():
            process.stop(grace=5)
        self._processes.clear()
        if self._cluster is not None:
            self._cluster.stop()
        if self._slot is not None:
            _clean_slot(self._slot.number, self.state_dir)
            host.release(self._slot)
            self._slot = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def processes(self) -> dict[str, Process]:
        """The node's own processes (the control plane's are `cluster.processes`)."""
        return dict(self._processes)

    def _timed(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - since, 1)
        _say(f"{name}: {self.timings[name]:.1f} s")
        return now

    def _spawn(
        self, name: str, args: list[str], *, netns_path: Path | None = None, in_cgroup: bool = True
    ) -> Process:
        process = Process(
            name, args, self.logs / f"{name}.log", netns=netns_path or self.network.node_netns_path
        )
        process.start()
        if in_cgroup and process.popen is not None:
            _join_cgroup(f"{self.cgroup_name}/daemons", process.popen.pid)
        self._processes[name] = process
        return process

    def _wait(self, deadline: float, what: str, check: Any, *, process: str | None = None) -> None:
        while time.monotonic() < deadline:
            if process is not None and not self._processes[process].running():
                raise NodeError(f"{process} exited; its log ends with:\n{self._processes[process].tail()}")
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, KeyError):
                if check():
                    return
            time.sleep(0.2)
        tail = self._processes[process].tail() if process is not None else ""
        raise NodeError(f"{what}: not in time" + (f"; {process}'s log ends with:\n{tail}" if tail else ""))

    # -- cgroups -----------------------------------------------------------------------------------

    def _make_cgroups(self) -> None:
        # The kubelet's cgroupRoot must exist in every hierarchy; the node's daemons (and so the runc
        # shims containerd starts) go in a child of it, so that one walk finds every process to stop.
        for hierarchy in _hierarchies():
            for relative in (self.cgroup_name, f"{self.cgroup_name}/daemons"):
                path = hierarchy / relative
                path.mkdir(exist_ok=True)
                if hierarchy.name == "cpuset":
                    # A cpuset cgroup v1 takes no process before it has CPUs and memory nodes.
                    for setting in ("cpuset.cpus", "cpuset.mems"):
                        (path / setting).write_text((path.parent / setting).read_text())

    # -- metadata endpoint emulation ---------------------------------------------------------------

    def _start_metadata_emulation(self) -> None:
        www = self.state_dir / "metadata" / "www"
        for relative, body in (
            ("index.html", f"{METADATA_MARKER}\n"),
            ("latest/meta-data/index.html", "ami-id\ninstance-id\niam/\n"),
            ("latest/meta-data/instance-id", "i-0baseline0emulated\n"),
            ("latest/meta-data/iam/security-credentials/index.html", "baseline-emulated-role\n"),
        ):
            (www / relative).parent.mkdir(parents=True, exist_ok=True)
            (www / relative).write_text(body)
        # busybox httpd on port 80 of every address of its namespace, IPv4 and IPv6.
        self._spawn(
            "metadata-emulation",
            [str(images.BUSYBOX_PATH), "httpd", "-f", "-vv", "-p", "80", "-h", str(www)],
            netns_path=self.network.metadata_netns_path,
            in_cgroup=False,
        )

    # -- containerd and images ---------------------------------------------------------------------

    def _start_containerd(self, deadline: float) -> None:
        folder = self.state_dir / "containerd"
        cni = self.state_dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-baseline.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = folder / "config.toml"
        folder.mkdir(parents=True, exist_ok=True)
        config.write_text(self._containerd_config())
        self._spawn("containerd", [str(self.binaries["containerd"]), f"--config={config}"])
        ctr = [str(self.binaries["ctr"]), "--address", str(self.containerd_socket)]
        self._wait(
            deadline,
            "containerd answering",
            lambda: subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode == 0,
            process="containerd",
        )
        archives = []
        for image in images.node_images(self.binaries):
            archive = self.state_dir / "images" / (image.name.replace("/", "_").replace(":", "_") + ".tar")
            images.write_oci_archive(image, archive)
            archives.append(archive)
        images.import_archives(self.binaries["ctr"], self.containerd_socket, archives)

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            # Unique per node: libcni keeps its results in /var/lib/cni/results under this name.
            "name": f"baseline-node-{self.network.slot}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.state_dir / "cni" / "ipam"),
                        "ranges": [
                            [{"subnet": netns.POD_CIDR, "gateway": netns.POD_GATEWAY}],
                            [{"subnet": netns.POD_CIDR_V6, "gateway": netns.POD_GATEWAY_V6}],
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _containerd_config(self) -> str:
        folder = self.state_dir / "containerd"
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        return f"""\
# Written by localcluster.node: containerd for the real node, with nothing at containerd's default paths.
version = 3
root = '{folder / "root"}'
state = '{folder / "state"}'

[grpc]
  address = '{self.containerd_socket}'

[plugins.'io.containerd.internal.v1.opt']
  path = '{folder / "opt"}'

[plugins.'io.containerd.nri.v1.nri']
  # NRI would listen on /var/run/nri/nri.sock, a fixed host path; the enforcer works without it.
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{images.PAUSE_IMAGE}'

[{runtime}]
  # No CAP_SYS_RESOURCE here: containerd may not lower oom_score_adj below its own (runc fails with
  # "can't get final child's PID from pipe: EOF" otherwise).
  restrict_oom_score_adj = true
  # Pod network namespaces are bind-mounted here instead of /var/run/netns.
  netns_mounts_under_state_dir = true
  [{runtime}.containerd]
    default_runtime_name = 'runc'
    [{runtime}.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      runtime_path = '{self.binaries["containerd-shim-runc-v2"]}'
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = '{_RUNC}'
        Root = '{folder / "runc"}'
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ['{_CNI_PLUGINS}']
    conf_dir = '{self.state_dir / "cni" / "net.d"}'
"""

    # -- kubelet and kube-proxy --------------------------------------------------------------------

    def _start_kubelet(self, deadline: float) -> None:
        cluster = self.cluster
        folder = self.state_dir / "kubelet"
        kubeconfig = cluster.write_kubeconfig(
            self.state_dir / "kubelet.kubeconfig", user=f"system:node:{NODE_NAME}", groups=("system:nodes",)
        )
        serving = cluster.ca.issue(
            "kubelet-serving",
            common_name=f"system:node:{NODE_NAME}",
            server_hosts=(self.network.node_address, NODE_NAME),
        )
        resolv_conf = self.state_dir / "resolv.conf"
        # Pods with dnsPolicy Default (CoreDNS itself) get this: no resolver off the node exists.
        resolv_conf.write_text("nameserver 127.0.0.1\n")
        for sub in ("root", "pod-logs", "volume-plugins"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.node_address,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cluster.ca.files.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # init is not systemd here, and the host mounts cgroup v1 hierarchies, which 1.36 refuses
            # unless told otherwise.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_name}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv_conf),
            "podLogsDir": str(folder / "pod-logs"),
            "volumePluginDir": str(folder / "volume-plugins"),
            # The images cannot be pulled again: never collect them. Nor evict for a full shared disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            # The kubelet rewrites global sysctls (kernel.panic...) unless this is set, and with it set
            # refuses to start on a host that differs; localcluster.host gives the old values back.
            "protectKernelDefaults": False,
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
        }
        config_path = self.state_dir / "kubelet-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={folder / 'root'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.network.node_address}",
                "--v=1",
            ],
        )
        self._wait(deadline, f"node {NODE_NAME} Ready", self._node_ready, process="kubelet")

    def _node_ready(self) -> bool:
        status, body = self.cluster.request(f"/api/v1/nodes/{NODE_NAME}")
        if status != http.HTTPStatus.OK:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_kube_proxy(self) -> None:
        kubeconfig = self.cluster.write_kubeconfig(
            self.state_dir / "kube-proxy.kubeconfig", user="system:kube-proxy"
        )
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": f"{netns.POD_CIDR},{netns.POD_CIDR_V6}",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Zero leaves the conntrack sysctls alone: they are global, and not kube-proxy's to change.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }
        path = self.state_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.binaries["kube-proxy"]), f"--config={path}"])

    # -- add-ons: the enforcer and CoreDNS ---------------------------------------------------------

    def _install_addons(self, deadline: float) -> None:
        self.xtables_nfqueue = not self._kernel_has_nft_queue()
        if self.admin_network_policy:
            anp = crds.network_policy_api_crd("AdminNetworkPolicy")
            banp = anp.with_name("policy.networking.k8s.io_baselineadminnetworkpolicies.yaml")
            self._kubectl("apply", "--server-side", "-f", str(anp), "-f", str(banp))
            self._kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/adminnetworkpolicies.policy.networking.k8s.io",
                "crd/baselineadminnetworkpolicies.policy.networking.k8s.io",
            )
        manifests = self.state_dir / "addons.yaml"
        manifests.write_text(yaml.safe_dump_all(self._addon_manifests(), sort_keys=False))
        self._kubectl("apply", "--server-side", "-f", str(manifests))
        self._wait(deadline, "kube-network-policies' nftables rules", self._enforcer_installed)
        self._wait(deadline, "CoreDNS ready behind kube-dns", self._dns_ready)

    def _kubectl(self, *args: str) -> str:
        result = subprocess.run(self.kubectl_command(*args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _kernel_has_nft_queue(self) -> bool:
        # Tried in a scratch table of the node's namespace: nothing outside it is touched.
        probe = (
            "table inet baseline-probe {\n"
            "  chain c {\n    type filter hook postrouting priority 0; policy accept;\n"
            "    meta l4proto udp udp dport 9 queue num 9 bypass\n  }\n}\n"
        )
        result = subprocess.run(
            self.network.in_node("nft", "-f", "-"), input=probe.encode(), capture_output=True, check=False
        )
        subprocess.run(
            self.network.in_node("nft", "delete", "table", "inet", "baseline-probe"),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            _say(
                "this kernel has no nftables `queue` expression: the enforcer uses the xtables NFQUEUE target"
            )
        return result.returncode == 0

    def _enforcer_installed(self) -> bool:
        tables = subprocess.run(
            self.network.in_node("nft", "list", "tables"), capture_output=True, text=True, check=True
        ).stdout
        return "kube-network-policies" in tables

    def _dns_ready(self) -> bool:
        status, body = self.cluster.request("/apis/apps/v1/namespaces/kube-system/deployments/coredns")
        if status != http.HTTPStatus.OK:
            return False
        if json.loads(body).get("status", {}).get("readyReplicas", 0) < 1:
            return False
        status, body = self.cluster.request(
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkube-dns"
        )
        slices = json.loads(body).get("items", []) if status == http.HTTPStatus.OK else []
        return any(
            endpoint.get("conditions", {}).get("ready")
            for item in slices
            for endpoint in item.get("endpoints") or []
        )

    def _addon_manifests(self) -> list[dict[str, Any]]:
        return [*self._enforcer_manifests(), *self._coredns_manifests()]

    def _enforcer_manifests(self) -> list[dict[str, Any]]:
        name = "kube-network-policies"
        labels = {"app": name, "k8s-app": name}
        command = [
            "/bin/kube-network-policies",
            "--hostname-override=$(NODE_NAME)",
            f"--nfqueue-id={NFQUEUE_ID}",
            f"--admin-network-policy={str(self.admin_network_policy).lower()}",
            f"--baseline-admin-network-policy={str(self.admin_network_policy).lower()}",
            "--metrics-bind-address=127.0.0.1:9080",
            "--v=2",
        ]
        if self.xtables_nfqueue:
            command.append("--nfqueue-xtables-target")
        rules = [
            {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["policy.networking.k8s.io"],
                "resources": ["adminnetworkpolicies", "baselineadminnetworkpolicies"],
                "verbs": ["list", "watch"],
            },
        ]
        return [
            _object("v1", "ServiceAccount", name, "kube-system"),
            {**_object("rbac.authorization.k8s.io/v1", "ClusterRole", name), "rules": rules},
            _cluster_role_binding(name, name, "kube-system"),
            {
                **_object("apps/v1", "DaemonSet", name, "kube-system", labels),
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "hostNetwork": True,
                            "serviceAccountName": name,
                            "priorityClassName": "system-node-critical",
                            "tolerations": [{"operator": "Exists"}],
                            "containers": [
                                {
                                    "name": name,
                                    "image": images.KUBE_NETWORK_POLICIES_IMAGE,
                                    "imagePullPolicy": "Never",
                                    "command": command,
                                    "env": [
                                        {
                                            "name": "NODE_NAME",
                                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                        },
                                        # Straight to the API server: the enforcer must not depend on
                                        # kube-proxy's Service rules being in place first.
                                        {
                                            "name": "KUBERNETES_SERVICE_HOST",
                                            "value": self.network.node_address,
                                        },
                                        {
                                            "name": "KUBERNETES_SERVICE_PORT",
                                            "value": str(self.cluster.apiserver_port),
                                        },
                                    ],
                                    "securityContext": {"privileged": True},
                                    "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
                                }
                            ],
                        },
                    },
                },
            },
        ]

    def _coredns_manifests(self) -> list[dict[str, Any]]:
        corefile = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    cache 30
    loadbalance
}}
"""
        labels = {"k8s-app": "kube-dns"}
        rules = [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]
        probe = {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2}
        return [
            _object("v1", "ServiceAccount", "coredns", "kube-system"),
            {**_object("rbac.authorization.k8s.io/v1", "ClusterRole", "system:coredns"), "rules": rules},
            _cluster_role_binding("system:coredns", "coredns", "kube-system"),
            {**_object("v1", "ConfigMap", "coredns", "kube-system"), "data": {"Corefile": corefile}},
            {
                **_object("apps/v1", "Deployment", "coredns", "kube-system", labels),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": "coredns",
                            "priorityClassName": "system-cluster-critical",
                            "dnsPolicy": "Default",
                            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                            "containers": [
                                {
                                    "name": "coredns",
                                    "image": images.COREDNS_IMAGE,
                                    "imagePullPolicy": "Never",
                                    "args": ["-conf", "/etc/coredns/Corefile"],
                                    "ports": [
                                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                        {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                    ],
                                    "readinessProbe": probe,
                                    "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                    "resources": {"requests": {"cpu": "50m", "memory": "70Mi"}},
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                        "readOnlyRootFilesystem": True,
                                    },
                                    "volumeMounts": [
                                        {"name": "config", "mountPath": "/etc/coredns", "readOnly": True}
                                    ],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                        },
                    },
                },
            },
            {
                **_object(
                    "v1", "Service", "kube-dns", "kube-system", {**labels, "kubernetes.io/name": "CoreDNS"}
                ),
                "spec": {
                    "clusterIP": CLUSTER_DNS,
                    "selector": labels,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                        {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                    ],
                },
            },
        ]

    def leftovers(self) -> list[str]:
        """What of this node is still on the host (after `stop`, empty when teardown was complete)."""
        if self._last_slot is None:
            return []
        return node_leftovers(self._last_slot, self.state_dir)


def _object(
    api_version: str, kind: str, name: str, namespace: str | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def _cluster_role_binding(role: str, service_account: str, namespace: str) -> dict[str, Any]:
    return {
        **_object("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", role),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


# -- teardown, shared with the reaping of a node whose owner died -----------------------------------


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, the unified v2 one)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found = []
    for line in mounts:
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] in {"cgroup", "cgroup2"}:
            point = Path(fields[4])
            if _CGROUP_ROOT in {point.parent, point}:
                found.append(point)
    return sorted(set(found))


def _join_cgroup(relative: str, pid: int) -> None:
    for hierarchy in _hierarchies():
        with contextlib.suppress(OSError):
            (hierarchy / relative / "cgroup.procs").write_text(str(pid))


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _kill_cgroup(name: str, timeout: float = 15.0) -> None:
    """SIGKILL every process in the node's cgroup tree (containers, runc shims, containerd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _cgroup_pids(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    raise NodeError(f"processes of cgroup {name} would not die: {sorted(_cgroup_pids(name))}")


def _remove_cgroup(name: str) -> None:
    for hierarchy in _hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        # Deepest first: a cgroup folder goes with rmdir once it has no child and no process.
        for folder in sorted(
            (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(folder):
            points.append(point)
    return points


def _unmount_under(folder: Path) -> None:
    # Deepest first; lazily, so that a mount still busy for a moment does not stop the teardown.
    for _ in range(5):
        points = _mounts_under(folder)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _clean_slot(number: int, state_dir: Path) -> None:
    """Remove what a node in slot `number` made: processes, mounts, cgroups, namespaces, host files."""
    name = f"baseline-node-{number}"
    _kill_cgroup(name)
    _unmount_under(state_dir)
    _remove_cgroup(name)
    netns.NodeNetwork(number).delete()
    # What libcni and the kubelet leave at fixed host paths, for this node only.
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for entry in results.glob(f"baseline-node-{number}-*"):
            entry.unlink(missing_ok=True)
    pod_logs = str(state_dir / "kubelet" / "pod-logs")
    containers = Path("/var/log/containers")
    if containers.is_dir():
        for link in containers.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(link.readlink()).startswith(pod_logs):
                    link.unlink()


def reap_slot(slot: host.Slot) -> None:
    """Clean up after a node whose owner died without stopping it (the ledger calls this)."""
    _say(f"cleaning up after node slot {slot.number}, whose process {slot.pid} is gone")
    _clean_slot(slot.number, Path(slot.state_dir))


def node_leftovers(number: int, state_dir: Path) -> list[str]:
    """What of the node in slot `number` is still on the host."""
    name = f"baseline-node-{number}"
    found = netns.NodeNetwork(number).leftovers()
    found += [f"mount {point}" for point in _mounts_under(state_dir)]
    found += [f"cgroup {hierarchy / name}" for hierarchy in _hierarchies() if (hierarchy / name).exists()]
    found += [f"process {pid} in cgroup {name}" for pid in _cgroup_pids(name)]
    return found
