"""Build the control-plane binaries from the official Go modules, once per machine, and find them again.

The Go build modules live in the repository (`tools/kubernetes`, `tools/etcd`: go.mod, go.sum and a
main.go each). Binaries land in a cache outside the repository, in a folder named after the pinned
version and a digest of the build inputs, so a second run (or another checkout on the same machine)
reuses them and a version bump builds afresh. A cold build of kube-apiserver takes minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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

    @property
    def source(self) -> Path:
        return TOOLS_DIR / self.module_dir

    def version(self) -> str:
        """The pinned version, read from go.mod so that the module is the single source of truth."""
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
        return flags

    def cache_dir(self) -> Path:
        """Folder for this exact build: version plus a digest of go.mod, go.sum, main.go and flags."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum", "main.go"):
            digest.update((self.source / name).read_bytes())
        digest.update(" ".join(self.ldflags()).encode())
        digest.update(go_version().encode())
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
TOOLS = (*CONTROL_PLANE, PROMETHEUS, *POLICY_TOOLS)


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
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    try:
        for name, package in tool.commands:
            if log:
                _say(
                    f"building {name} {tool.version()} from the official Go module "
                    f"(first time on this machine: a few minutes; cached in {target})"
                )
            started = time.monotonic()
            subprocess.run(
                [
                    "go",
                    "build",
                    "-trimpath",
                    "-ldflags",
                    " ".join(tool.ldflags()),
                    "-o",
                    str(scratch / name),
                    package,
                ],
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


def _say(message: str) -> None:
    sys.stderr.write(f"[localcluster] {message}\n")


def ensure_control_plane(*, log: bool = True, tools: tuple[GoTool, ...] = CONTROL_PLANE) -> dict[str, Path]:
    """Build (or find) every control-plane binary (or other `tools`); map binary name to its path."""
    paths: dict[str, Path] = {}
    for tool in tools:
        folder = ensure_built(tool, log=log)
        paths.update({name: folder / name for name, _ in tool.commands})
    return paths
