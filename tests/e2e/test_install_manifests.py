"""`kubectl apply -k manifests/` as the real API server sees it: admitted, and restricted-compliant."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from conftest import REPO, render_manifests
from kubernetes import client

from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from localcluster import LocalCluster


def test_the_installation_is_accepted_by_the_api_server(cluster: LocalCluster, operator_rbac: object) -> None:
    applied = subprocess.run(
        [
            str(KUBERNETES.cache_dir() / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "apply",
            "-k",
            str(REPO / "manifests"),
            "--dry-run=server",
            "--server-side",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert "Warning" not in applied.stderr, applied.stderr  # e.g. a Pod Security warning on the Deployment
    assert "deployment.apps/baseline-operator serverside-applied (server dry run)" in applied.stdout


def test_the_operator_pod_is_admitted_under_pod_security_restricted(
    api: client.ApiClient, operator_rbac: object
) -> None:
    # Deployments are only warned about; Pods are refused. A Pod from the template, dry-run, in the
    # operator's namespace (enforce: restricted) is what the ReplicaSet controller would create.
    deployment: dict[str, Any] = next(o for o in render_manifests() if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "admission-check", **template["metadata"]},
        "spec": template["spec"],
    }
    namespace = deployment["metadata"]["namespace"]
    labels = client.CoreV1Api(api).read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    created = client.CoreV1Api(api).create_namespaced_pod(namespace, pod, dry_run="All")
    assert created.spec.security_context.run_as_user == 15555
