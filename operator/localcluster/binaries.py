"""Build the control-plane binaries from the official Go modules, once per machine, and find them again.

The Go build modules live in the repository (`tools/kubernetes`, `tools/etcd`: go.mod, go.sum and a
main.go each). Binaries land in a cache outside the repository, in a folder named after the pinned
version and a digest of the build inputs, so a second run (or another checkout on the same machine)
reuses them and a version bump builds afresh. A cold build of kube-apiserver takes minutes on 2 cores.

The optional real node (`NODE`: kubelet, kube-proxy, kube-scheduler, containerd, the NetworkPolicy
enforcer, CoreDNS, a pause program) is built the same way, from modules of its own, so that building it
never changes the control plane's cache keys. Some of its tools need build tags, or a small patch applied
to a copy of the pinned upstream source (never to the module cache itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("BASELINE_TOOLS_DIR", REPO_ROOT / "tools"))


def cache_root() -> Path:
    """Where built binaries are kept: `$BASELINE_CACHE_DIR`, else the XDG cache folder."""
    configured = os.environ.get("BASELINE_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "baseline-operator"


@dataclass(frozen=True)
class GoTool:
    """One Go build module in `tools/` and the commands built from it."""

    module_dir: str
    """Folder under `tools/` holding go.mod, go.sum and main.go."""
    pinned_module: str
    """The requirement whose version names the cache folder (e.g. `k8s.io/kubernetes`)."""
    commands: tuple[tuple[str, str], ...]
    """(binary name, Go package to build) pairs; `.` is the module's own main package."""
    tags: tuple[str, ...] = ()
    """Go build tags (`-tags`)."""
    patches: tuple[str, ...] = ()
    """Patch files in the module folder, applied in order (`git apply`, -p1) to a copy of the pinned
    module's source, which the build then uses through a `replace` in a scratch go.mod."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment for `go build`, over its defaults (CGO_ENABLED=0, GOTOOLCHAIN=local, read-only)."""

    @property
    def source(self) -> Path:
        return TOOLS_DIR / self.module_dir

    def version(self) -> str:
        """The pinned version, read from go.mod so that the module is the single source of truth."""
        if not self.pinned_module:
            # A program of our own (the pause process) pins nothing; its source is the cache key.
            return "v0"
        go_mod = (self.source / "go.mod").read_text()
        match = re.search(
            rf"^\s*(?:require\s+)?{re.escape(self.pinned_module)}\s+(v\S+)", go_mod, re.MULTILINE
        )
        if match is None:
            raise LookupError(f"{self.source / 'go.mod'} does not require {self.pinned_module}")
        return match.group(1)

    def ldflags(self) -> list[str]:
        """Linker flags; Kubernetes needs its version stamped in or `/version` says v0.0.0."""
        flags = ["-s", "-w"]
        if self.pinned_module == "k8s.io/kubernetes":
            version = self.version()
            major, minor = version.lstrip("v").split(".")[:2]
            stamp = {
                "gitVersion": version,
                "gitMajor": major,
                "gitMinor": minor,
                "gitTreeState": "clean",
                "gitCommit": version,
                "buildDate": "1970-01-01T00:00:00Z",
            }
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [f"-X {package}.{key}={value}" for key, value in stamp.items()]
        elif self.pinned_module == "github.com/prometheus/prometheus":
            # Prometheus 3.x is published as module v0.3MM.P: release 3.MM.P (its VERSION file says so).
            version = self.version()
            _, minor, patch = version.lstrip("v").split(".")
            release = f"{int(minor) // 100}.{int(minor) % 100}.{patch}"
            stamp = {
                "Version": release,
                "Revision": version,
                "Branch": "HEAD",
                "BuildUser": "baseline-operator",
                "BuildDate": "19700101-00:00:00",
            }
            flags += [
                f"-X github.com/prometheus/common/version.{key}={value}" for key, value in stamp.items()
            ]
        elif self.pinned_module == "github.com/open-policy-agent/conftest":
            # Its release builds stamp the bare number; unstamped, `conftest --version` says "dev".
            package = "github.com/open-policy-agent/conftest/internal/version"
            flags.append(f"-X {package}.Version={self.version().lstrip('v')}")
        elif self.pinned_module == "github.com/zegl/kube-score":
            # Unstamped, `kube-score version` says "development"; its release builds stamp the bare number.
            flags += [
                f"-X main.version={self.version().lstrip('v')}",
                f"-X main.commit={self.version()}",
                "-X main.date=1970-01-01T00:00:00Z",
            ]
        elif self.pinned_module == "github.com/containerd/containerd/v2":
            # Unstamped, containerd reports "2.x+unknown" to the kubelet and in `ctr version`.
            package = "github.com/containerd/containerd/v2/version"
            flags += [
                f"-X {package}.Version={self.version()}",
                f"-X {package}.Revision={self.version()}",
            ]
        return flags

    def cache_dir(self) -> Path:
        """Folder for this exact build: version plus a digest of go.mod, go.sum, main.go and flags."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum", "main.go"):
            path = self.source / name
            # A module with no requirements (the pause program) has no go.sum.
            digest.update(path.read_bytes() if path.exists() or name != "go.sum" else b"")
        digest.update(" ".join(self.ldflags()).encode())
        digest.update(go_version().encode())
        # Only tools that have tags or patches hash them, so the older tools' cache keys stay as they were.
        if self.tags:
            digest.update(("tags:" + ",".join(self.tags)).encode())
        if self.env:
            digest.update(("env:" + ",".join(f"{key}={value}" for key, value in self.env)).encode())
        for patch in self.patches:
            digest.update(b"patch:" + (self.source / patch).read_bytes())
        return cache_root() / "bin" / f"{self.module_dir}-{self.version()}-{digest.hexdigest()[:12]}"


KUBERNETES = GoTool(
    module_dir="kubernetes",
    pinned_module="k8s.io/kubernetes",
    commands=(
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
        ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ),
)
ETCD = GoTool(module_dir="etcd", pinned_module="go.etcd.io/etcd/server/v3", commands=(("etcd", "."),))
CONTROL_PLANE = (ETCD, KUBERNETES)
PROMETHEUS = GoTool(
    module_dir="prometheus",
    pinned_module="github.com/prometheus/prometheus",
    commands=(
        ("promtool", "github.com/prometheus/prometheus/cmd/promtool"),
        ("prometheus", "github.com/prometheus/prometheus/cmd/prometheus"),
    ),
)
"""The real Prometheus server and promtool: the alert rules are tested with them, and an e2e test scrapes
the operator. Built without the web UI's assets (they come from an npm build); the HTTP API is complete."""
CONFTEST = GoTool(
    module_dir="conftest",
    pinned_module="github.com/open-policy-agent/conftest",
    commands=(("conftest", "github.com/open-policy-agent/conftest"),),
)
"""conftest runs the Rego policies in `policy/` against our own manifests and what the operator renders."""
KUBE_SCORE = GoTool(
    module_dir="kube-score",
    pinned_module="github.com/zegl/kube-score",
    commands=(("kube-score", "github.com/zegl/kube-score/cmd/kube-score"),),
)
"""kube-score, an independent second opinion on our manifests: its own checks, not our Rego rules."""
POLICY_TOOLS = (CONFTEST, KUBE_SCORE)
HELM = GoTool(
    module_dir="helm",
    pinned_module="helm.sh/helm/v3",
    commands=(("helm", "helm.sh/helm/v3/cmd/helm"),),
)
"""Helm lints, renders and installs the chart (charts/baseline-operator) in the tests."""
TEST_TOOLS = (PROMETHEUS, *POLICY_TOOLS, HELM)
"""What the tests need besides the control plane (and, for tests/node, the node); `make demo` needs none."""
TOOLS = (*CONTROL_PLANE, *TEST_TOOLS)

KUBERNETES_NODE = GoTool(
    module_dir="kubernetes-node",
    pinned_module="k8s.io/kubernetes",
    commands=(
        ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
        ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
        ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ),
)
"""The node's kubelet and kube-proxy, and the scheduler the control plane gains when a node runs: the same
release as the control plane, from a build module of their own (kubelet's packages add requirements)."""
CONTAINERD = GoTool(
    module_dir="containerd",
    pinned_module="github.com/containerd/containerd/v2",
    commands=(
        ("containerd", "github.com/containerd/containerd/v2/cmd/containerd"),
        ("containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"),
        ("ctr", "github.com/containerd/containerd/v2/cmd/ctr"),
    ),
    # The snapshotters that need C libraries or kernel features the node does not use (overlayfs does).
    tags=("no_btrfs", "no_devmapper", "no_zfs"),
)
KUBE_NETWORK_POLICIES = GoTool(
    module_dir="kube-network-policies",
    pinned_module="sigs.k8s.io/kube-network-policies",
    commands=(("kube-network-policies", "sigs.k8s.io/kube-network-policies/cmd"),),
    # Kernels without the nftables `queue` expression (CONFIG_NFT_QUEUE) need the xtables NFQUEUE target
    # instead; the patch adds that as an option, off unless `--nfqueue-xtables-target` is given.
    patches=("nfqueue-xtables-target.patch",),
)
"""The NetworkPolicy enforcer kind uses (nftables + NFQUEUE); it also enforces AdminNetworkPolicy v1alpha1."""
COREDNS = GoTool(
    module_dir="coredns",
    pinned_module="github.com/coredns/coredns",
    commands=(("coredns", "."),),
)
"""The cluster DNS, with only the plugins that serve the cluster zone (no forwarding anywhere)."""
PAUSE = GoTool(module_dir="pause", pinned_module="", commands=(("pause", "."),))
"""The process that holds a Pod sandbox's namespaces, for the local sandbox image."""
NODE = (KUBERNETES_NODE, CONTAINERD, KUBE_NETWORK_POLICIES, COREDNS, PAUSE)

BENCH_CLIENT = GoTool(module_dir="bench-client", pinned_module="", commands=(("bench-client", "."),))
"""The benchmark's calibration client (net/http, HTTP/2, N workers): only `make bench` builds it."""


def go_version() -> str:
    """The machine's Go version; part of the cache key because it changes the binaries."""
    go = shutil.which("go")
    if go is None:
        raise FileNotFoundError(
            "`go` is not on PATH: the control plane is built from the official Go modules"
        )
    return subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builds between concurrent runs (say, `make cluster-up` and a test session)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ensure_built(tool: GoTool, *, log: bool = True) -> Path:
    """Return the folder holding the tool's binaries, building them first if the cache lacks them."""
    target = tool.cache_dir()
    if _complete(tool, target):
        return target
    with _exclusive(cache_root() / "locks" / f"{tool.module_dir}.lock"):
        if _complete(tool, target):
            return target
        _build(tool, target, log=log)
    return target


def _complete(tool: GoTool, target: Path) -> bool:
    return all((target / name).is_file() for name, _ in tool.commands)


def _build(tool: GoTool, target: Path, *, log: bool) -> None:
    # Build into a scratch folder and rename at the end, so an interrupted build never looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        **dict(tool.env),
    }
    options = ["-trimpath", "-ldflags", " ".join(tool.ldflags())]
    if tool.tags:
        options += ["-tags", ",".join(tool.tags)]
    with contextlib.ExitStack() as stack:
        if tool.patches:
            options.append(f"-modfile={stack.enter_context(_patched_module(tool, env, log=log))}")
        try:
            for name, package in tool.commands:
                if log:
                    _say(
                        f"building {name} {tool.version()} from the official Go module "
                        f"(first time on this machine: a few minutes; cached in {target})"
                    )
                started = time.monotonic()
                subprocess.run(
                    ["go", "build", *options, "-o", str(scratch / name), package],
                    cwd=tool.source,
                    env=env,
                    check=True,
                )
                if log:
                    _say(f"built {name} in {time.monotonic() - started:.0f} s")
            if target.exists():
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _patched_module(tool: GoTool, env: dict[str, str], *, log: bool) -> Iterator[Path]:
    """A scratch go.mod that replaces the pinned module with a patched copy of its checksummed source."""
    downloaded = subprocess.run(
        ["go", "mod", "download", "-json", f"{tool.pinned_module}@{tool.version()}"],
        cwd=tool.source,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    upstream = Path(json.loads(downloaded.stdout)["Dir"])
    # In the system's temporary folder, never inside a git work tree: `git apply` run inside one
    # would take the patch's paths as relative to that tree.
    with tempfile.TemporaryDirectory(prefix=f"{tool.module_dir}-patched-") as scratch:
        copy = Path(scratch) / "source"
        # The module cache is read-only; the copy must be writable to be patched.
        shutil.copytree(upstream, copy, copy_function=shutil.copyfile)
        for patch in tool.patches:
            if log:
                _say(f"applying {tool.module_dir}/{patch} to {tool.pinned_module} {tool.version()}")
            subprocess.run(["git", "apply", "-p1", str(tool.source / patch)], cwd=copy, check=True)
        go_mod = Path(scratch) / "go.mod"
        go_mod.write_text(
            (tool.source / "go.mod").read_text() + f"\nreplace {tool.pinned_module} => {copy}\n"
        )
        # `-modfile` reads the go.sum next to the go.mod it is given.
        shutil.copyfile(tool.source / "go.sum", Path(scratch) / "go.sum")
        yield go_mod


def _say(message: str) -> None:
    sys.stderr.write(f"[localcluster] {message}\n")


def ensure_control_plane(*, log: bool = True, tools: tuple[GoTool, ...] = CONTROL_PLANE) -> dict[str, Path]:
    """Build (or find) every control-plane binary (or other `tools`); map binary name to its path."""
    paths: dict[str, Path] = {}
    for tool in tools:
        folder = ensure_built(tool, log=log)
        paths.update({name: folder / name for name, _ in tool.commands})
    return paths
