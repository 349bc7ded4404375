"""CustomResourceDefinitions the tests install that the control plane does not serve by itself.

The network policy API (sigs.k8s.io/network-policy-api) is a set of CRDs: its AdminNetworkPolicy
(v1alpha1, last shipped in v0.1.7, which kube-network-policies v0.8.0 enforces) and its ClusterNetworkPolicy
(v1alpha2, tier Admin; v0.3.0). Each is pinned by a Go module in `tools/network-policy-api/` (go.mod and
go.sum, checked against the Go checksum database), and `go mod download` fetches that exact source.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from localcluster.binaries import TOOLS_DIR

_NETWORK_POLICY_API = "sigs.k8s.io/network-policy-api"
_CRDS = {
    "AdminNetworkPolicy": ("adminnetworkpolicy", "policy.networking.k8s.io_adminnetworkpolicies.yaml"),
    "ClusterNetworkPolicy": ("clusternetworkpolicy", "policy.networking.k8s.io_clusternetworkpolicies.yaml"),
}


def network_policy_api_crd(kind: str) -> Path:
    """The standard-channel CRD file of `kind` (AdminNetworkPolicy or ClusterNetworkPolicy), pinned."""
    module_dir, file_name = _CRDS[kind]
    downloaded = subprocess.run(
        ["go", "mod", "download", "-json", _NETWORK_POLICY_API],
        cwd=TOOLS_DIR / "network-policy-api" / module_dir,
        env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"},
        check=True,
        capture_output=True,
        text=True,
    )
    source = Path(json.loads(downloaded.stdout)["Dir"])
    return source / "config" / "crd" / "standard" / file_name
