"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

It is what the e2e tests, the demo and the benchmarks run against: RBAC on, Pod Security admission on,
API Priority and Fairness on, an audit log of every request, and the controllers without which the
cluster behaves unlike production (namespace deletion, garbage collection, quota, role aggregation,
ServiceAccounts, root CA). There are no nodes, no scheduler and no CNI: pods are stored, never run.
With a real node (`localcluster.node.LocalNode`) the same control plane runs inside the node's network
namespace instead of on the host's loopback, gains kube-scheduler and the controllers that run workloads
(Deployments, DaemonSets, EndpointSlices), and authorizes kubelets with the Node authorizer.

Every child process is started in its own session (so a Ctrl-C in the terminal reaches us, not them,
and we stop them in order) and with PR_SET_PDEATHSIG, so that if whoever started them dies — a test run
killed with SIGKILL, a crashed supervisor — the kernel kills them too: no orphaned etcd.
"""

from __future__ import annotations

import contextlib
import ctypes
import http
import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import yaml

from localcluster import binaries, netns
from localcluster.pki import CertificateAuthority, CertificateFiles, write_service_account_keys

if TYPE_CHECKING:
    from types import TracebackType

ADMIN_USER = "baseline-admin"
_PR_SET_PDEATHSIG = 1
_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "resourcequota-controller",
    "clusterrole-aggregation-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    # Type-checks ValidatingAdmissionPolicies against the schemas and writes what it finds to their status:
    # the API server's own review of manifests/admission.
    "validatingadmissionpolicy-status-controller",
)
# Metadata for every request except the API server's own loopback traffic and the controller-manager's
# reads, which would drown the log. Writes by anyone, and reads by clients such as the operator, stay.
_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:apiserver"]},
        {"level": "None", "users": ["system:kube-controller-manager"], "verbs": ["get", "list", "watch"]},
        # The controllers, each as its own ServiceAccount (--use-service-account-credentials).
        {
            "level": "None",
            "userGroups": ["system:serviceaccounts:kube-system"],
            "verbs": ["get", "list", "watch"],
        },
        {"level": "Metadata"},
    ],
}
_NODE_CONTROLLERS = (
    # What a cluster that runs Pods needs besides: workloads and the Services' EndpointSlices.
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
    # Takes away the not-ready taint the kubelet registers its Node with, once the Node is Ready.
    "node-lifecycle-controller",
)


class ClusterError(RuntimeError):
    """The control plane could not be started, or stopped answering."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGKILL when the parent goes away.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Process:
    """One long-running component: started in its own session, killed with its parent, logged to a file."""

    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    netns: Path | None = None
    """Run it inside this network namespace (via nsenter, which execs it: the pid stays the same)."""

    def start(self) -> None:
        command = netns.nsenter(self.netns, *self.args) if self.netns is not None else self.args
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no Python state touched
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class LocalCluster:
    """One control plane whose state (certificates, etcd data, logs, kubeconfig) lives in `state_dir`."""

    state_dir: Path
    binaries: dict[str, Path] = field(default_factory=dict)
    kubeconfig_path: Path | None = None
    """Where the admin kubeconfig goes; `state_dir/kubeconfig` unless given."""
    processes: dict[str, Process] = field(default_factory=dict)
    apiserver_port: int = 0
    netns: Path | None = None
    """Run every component inside this network namespace (a real node's); None: on the host's loopback."""
    address: str = "127.0.0.1"
    """The API server's address: loopback, or the node's address in `netns`, which the host reaches too."""
    scheduler: bool = False
    """Also run kube-scheduler (a real node needs Pods scheduled)."""
    controller_manager_qps: int = 0
    """kube-controller-manager's client rate (`--kube-api-qps`, burst twice that); 0 keeps upstream's 20.
    At 20 per second its controllers take minutes to give thousands of new namespaces their default
    ServiceAccount and root CA ConfigMap; the benchmark's scale runs raise it."""
    _ca: CertificateAuthority | None = field(default=None, init=False, repr=False)
    _etcd_url: str = field(default="", init=False)

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user `baseline-admin` in `system:masters`)."""
        return self.kubeconfig_path or self.state_dir / "kubeconfig"

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise ClusterError("the cluster has not been started")
        return self._ca

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def with_node(self) -> bool:
        return self.netns is not None

    @property
    def _controller_manager_kubeconfig(self) -> Path:
        return self.state_dir / "controller-manager.kubeconfig"

    @property
    def _scheduler_kubeconfig(self) -> Path:
        return self.state_dir / "scheduler.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Build or find the binaries, write certificates and start everything; return once usable."""
        if not self.binaries:
            self.binaries = binaries.ensure_control_plane()
        if self.scheduler and "kube-scheduler" not in self.binaries:
            self.binaries.update(binaries.ensure_control_plane(tools=(binaries.KUBERNETES_NODE,)))
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        ca = self._ca = CertificateAuthority(self.pki_dir)
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default")
        hosts += ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "10.0.0.1")
        if self.address not in hosts:
            hosts += (self.address,)
        serving = ca.issue("apiserver", common_name="kube-apiserver", server_hosts=hosts)
        sa_keys = write_service_account_keys(self.pki_dir)
        self.apiserver_port = free_port()
        self.write_kubeconfig(self.kubeconfig, user=ADMIN_USER, groups=("system:masters",))
        # As kubeadm runs it: the controller-manager as itself (not an admin), each controller with the
        # credentials of its own ServiceAccount. Admission policies see who deletes what: the garbage
        # collector and the namespace controller, not "admin".
        self.write_kubeconfig(self._controller_manager_kubeconfig, user="system:kube-controller-manager")
        if self.scheduler:
            self.write_kubeconfig(self._scheduler_kubeconfig, user="system:kube-scheduler")
        self._define_processes(serving, sa_keys, ca.files)
        deadline = time.monotonic() + timeout
        try:
            self.start_process("etcd")
            self._wait(deadline, "etcd", self._etcd_healthy)
            self.start_process("kube-apiserver")
            self._wait(deadline, "kube-apiserver", self.apiserver_ready)
            self.start_process("kube-controller-manager")
            self._wait(deadline, "kube-controller-manager", self._controllers_working)
            if self.scheduler:
                self.start_process("kube-scheduler")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything, newest first, so that etcd outlives its clients."""
        for process in reversed(list(self.processes.values())):
            process.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_process(self, name: str) -> None:
        """(Re)start one component; fault tests stop and start the API server or etcd on purpose."""
        process = self.processes[name]
        if not process.running():
            process.start()

    def stop_process(self, name: str) -> None:
        self.processes[name].stop()

    # -- configuration -----------------------------------------------------------------------------

    def _define_processes(
        self, serving: CertificateFiles, sa_keys: CertificateFiles, ca: CertificateFiles
    ) -> None:
        etcd_client, etcd_peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{etcd_client}"
        audit_policy = self.state_dir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(_AUDIT_POLICY))
        logs = self.state_dir / "logs"
        apiserver_network = [
            "--bind-address=127.0.0.1",
            # A machine with no default route has no address to pick; loopback endpoints are invalid
            # for the `kubernetes` Service, hence no endpoint reconciler.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
        ]
        authorization = ["--authorization-mode=RBAC"]
        controllers: tuple[str, ...] = _CONTROLLERS
        if self.with_node:
            kubelet_client = self.ca.issue(
                "apiserver-kubelet-client",
                common_name="kube-apiserver-kubelet-client",
                organizations=("system:masters",),
            )
            apiserver_network = [
                # In the node's namespace: Pods reach it through the `kubernetes` Service (kube-proxy), the
                # host's tests over the veth to the node's address. The lease reconciler points the
                # Service at that address.
                "--bind-address=0.0.0.0",
                f"--advertise-address={self.address}",
                # The kubelet's hostname resolves nowhere in a namespace without DNS: dial its InternalIP.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={ca.cert}",
                # As kubeadm does: kubelets may touch only their own Node and the Pods bound to it.
                "--enable-admission-plugins=NodeRestriction",
            ]
            authorization = ["--authorization-mode=Node,RBAC"]
            controllers = (*_CONTROLLERS, *_NODE_CONTROLLERS)
        self.processes = {
            "etcd": Process(
                "etcd",
                [
                    str(self.binaries["etcd"]),
                    "--name=default",
                    f"--data-dir={self.state_dir / 'etcd'}",
                    f"--listen-client-urls={self._etcd_url}",
                    f"--advertise-client-urls={self._etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                    f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                    # Test data is thrown away with the cluster; fsync would only make every write slower.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                logs / "etcd.log",
                netns=self.netns,
            ),
            "kube-apiserver": Process(
                "kube-apiserver",
                [
                    str(self.binaries["kube-apiserver"]),
                    f"--etcd-servers={self._etcd_url}",
                    *apiserver_network,
                    f"--secure-port={self.apiserver_port}",
                    f"--cert-dir={self.pki_dir}",
                    f"--tls-cert-file={serving.cert}",
                    f"--tls-private-key-file={serving.key}",
                    f"--client-ca-file={ca.cert}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={sa_keys.cert}",
                    f"--service-account-signing-key-file={sa_keys.key}",
                    *authorization,
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--allow-privileged=true",
                    f"--audit-policy-file={audit_policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-format=json",
                    "--audit-log-maxsize=200",
                    "--audit-log-maxbackup=2",
                    "--profiling=false",
                ],
                logs / "kube-apiserver.log",
                netns=self.netns,
            ),
            "kube-controller-manager": Process(
                "kube-controller-manager",
                [
                    str(self.binaries["kube-controller-manager"]),
                    f"--kubeconfig={self._controller_manager_kubeconfig}",
                    "--use-service-account-credentials=true",
                    f"--controllers={','.join(controllers)}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    f"--root-ca-file={ca.cert}",
                    f"--service-account-private-key-file={sa_keys.key}",
                    # Quota usage and GC must react within a test's patience, not production's minutes.
                    "--resource-quota-sync-period=10s",
                    "--concurrent-namespace-syncs=5",
                    *(
                        [
                            f"--kube-api-qps={self.controller_manager_qps}",
                            f"--kube-api-burst={2 * self.controller_manager_qps}",
                        ]
                        if self.controller_manager_qps
                        else []
                    ),
                ],
                logs / "kube-controller-manager.log",
                netns=self.netns,
            ),
        }
        if self.scheduler:
            self.processes["kube-scheduler"] = Process(
                "kube-scheduler",
                [
                    str(self.binaries["kube-scheduler"]),
                    f"--kubeconfig={self._scheduler_kubeconfig}",
                    f"--authentication-kubeconfig={self._scheduler_kubeconfig}",
                    f"--authorization-kubeconfig={self._scheduler_kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                ],
                logs / "kube-scheduler.log",
                netns=self.netns,
            )

    def write_kubeconfig(self, path: Path, *, user: str, groups: tuple[str, ...] = ()) -> Path:
        """Write a kubeconfig for a client certificate with this user and groups (CN and O)."""
        client = self.ca.issue(_file_stem(user), common_name=user, organizations=groups)
        return self._write_config(
            path, user, {"client-certificate": str(client.cert), "client-key": str(client.key)}
        )

    def write_token_kubeconfig(self, path: Path, *, token: str, user: str = "token") -> Path:
        """Write a kubeconfig for a bearer token (a ServiceAccount's, from the TokenRequest API)."""
        return self._write_config(path, user, {"token": token})

    def _write_config(self, path: Path, user: str, credentials: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca.files.cert)},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- readiness ---------------------------------------------------------------------------------

    def _wait(self, deadline: float, name: str, check: Any) -> None:
        while time.monotonic() < deadline:
            process = self.processes[name]
            if not process.running():
                raise ClusterError(f"{name} exited during start-up; its log ends with:\n{process.tail()}")
            if check():
                return
            time.sleep(0.2)
        raise ClusterError(f"{name} was not ready in time; its log ends with:\n{self.processes[name].tail()}")

    def _etcd_healthy(self) -> bool:
        # With a node, etcd listens on the node namespace's loopback, out of the host's (and Pods') reach.
        with netns.entered(self.netns) if self.netns is not None else contextlib.nullcontext():
            try:
                with urllib.request.urlopen(f"{self._etcd_url}/health", timeout=2) as response:  # noqa: S310
                    return bool(json.load(response).get("health") == "true")
            except (OSError, ValueError):
                return False

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.files.cert))
        admin = self.pki_dir / _file_stem(ADMIN_USER)
        context.load_cert_chain(admin.with_suffix(".crt"), admin.with_suffix(".key"))
        return context

    def request(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET a path as admin; (status, body). Network errors raise OSError."""
        request = urllib.request.Request(f"{self.server}{path}")  # noqa: S310 - our own https server
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl_context()) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def apiserver_ready(self) -> bool:
        """Whether `/readyz` answers ok (bootstrap RBAC roles and priority levels are in place then)."""
        with contextlib.suppress(OSError):
            status, body = self.request("/readyz", timeout=2)
            return status == http.HTTPStatus.OK and body.strip() == b"ok"
        return False

    def _controllers_working(self) -> bool:
        # The ServiceAccount controller creating `default/default` shows the controller-manager is live.
        with contextlib.suppress(OSError):
            status, _ = self.request("/api/v1/namespaces/default/serviceaccounts/default", timeout=2)
            return status == http.HTTPStatus.OK
        return False

    def version(self) -> dict[str, Any]:
        status, body = self.request("/version")
        if status != http.HTTPStatus.OK:
            raise ClusterError(f"/version answered {status}")
        result: dict[str, Any] = json.loads(body)
        return result


def _file_stem(user: str) -> str:
    return "user-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in user)


def pid_alive(pid: int, *, command_contains: str | None = None) -> bool:
    """Whether `pid` runs (a zombie does not), and, if given, its command line contains the text."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and (command_contains is None or command_contains in command)
