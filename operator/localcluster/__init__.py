"""A real Kubernetes control plane on loopback, built from the official Go modules; for tests and demos.

Development tooling only: the operator (`baseline_operator`) never imports it.
"""

from localcluster.cluster import ClusterError, LocalCluster

__all__ = ["ClusterError", "LocalCluster"]
