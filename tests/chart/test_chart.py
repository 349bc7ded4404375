"""The Helm chart: generated from manifests/, equal to them with its defaults, linted, and installable.

Helm is built from its official Go module (tools/helm), cached like the control plane.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from netpol_semantics import Destination, Pod, World, egress_allowed

from localcluster import LocalCluster
from localcluster.binaries import HELM, KUBERNETES, ensure_built

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "baseline-operator"
NAMESPACE = "baseline-system"
PINNED_EGRESS = REPO / "manifests" / "components" / "pinned-apiserver-egress"
PLACEHOLDER_CIDR = "192.0.2.10/32"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_built(HELM) / "helm"


def run(*command: str | Path) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def objects(rendered: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    found = {}
    for document in yaml.safe_load_all(rendered):
        if document:
            metadata = document["metadata"]
            found[(document["kind"], metadata.get("namespace", ""), metadata["name"])] = document
    return found


def test_the_templates_are_what_the_generator_writes_from_manifests() -> None:
    result = subprocess.run(
        [sys.executable, REPO / "hack" / "gen-chart.py", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_with_its_defaults_the_chart_renders_exactly_the_manifests(helm: Path) -> None:
    kustomized = objects(run(KUBERNETES.cache_dir() / "kubectl", "kustomize", REPO / "manifests"))
    render = ("template", "baseline-operator", CHART, "--namespace", NAMESPACE, "--include-crds")
    charted = objects(run(helm, *render))
    # `helm install` needs the namespace first: by default the chart leaves it out, and only it.
    assert set(kustomized) - set(charted) == {("Namespace", "", NAMESPACE)}
    charted = objects(run(helm, *render, "--set", "namespace.create=true"))
    assert sorted(charted) == sorted(kustomized)
    for key, manifest in kustomized.items():
        assert charted[key] == manifest, key


def test_the_values_change_what_they_name(helm: Path) -> None:
    rendered = objects(
        run(
            helm,
            "template",
            "baseline-operator",
            CHART,
            "--namespace",
            "platform",
            *("--set", "replicas=3"),
            *("--set", "image.digest=sha256:" + "1" * 64),
            *("--set", "image.pullPolicy=Never"),
            *("--set", "allowedClusterRoles={view}"),
            *("--set", "extraProtectedNamespaces={legacy,billing}"),
            *("--set", "admissionProtection.validationActions={Warn,Audit}"),
            *("--set", "admissionProtection.selectionLabels=false"),
            *("--set", "metrics.serviceMonitor=true"),
        )
    )
    deployment = rendered["Deployment", "platform", "baseline-operator"]
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@sha256:" + "1" * 64)
    assert container["imagePullPolicy"] == "Never"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["BASELINE_ALLOWED_CLUSTER_ROLES"] == "view"
    assert env["BASELINE_EXTRA_PROTECTED_NAMESPACES"] == "legacy,billing"
    bind = next(
        rule
        for rule in rendered["ClusterRole", "", "baseline-operator"]["rules"]
        if rule["verbs"] == ["bind"]
    )
    assert bind["resourceNames"] == ["view"]
    binding = rendered["ValidatingAdmissionPolicyBinding", "", "baseline-operator-managed-objects"]
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    assert ("ValidatingAdmissionPolicy", "", "baseline-operator-selection-labels") not in rendered
    policy = rendered["ValidatingAdmissionPolicy", "", "baseline-operator-managed-objects"]
    assert "system:serviceaccount:platform:baseline-operator" in str(policy)
    assert ("ServiceMonitor", "platform", "baseline-operator") in rendered


def kustomize_with_components(folder: Path, *components: Path) -> str:
    """`kubectl kustomize` of an overlay of manifests/ with `components`, as a user's overlay would be."""
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Relative: kustomize refuses an absolute path to a kustomization.
        "resources": [os.path.relpath(REPO / "manifests", folder)],
        "components": [os.path.relpath(component, folder) for component in components],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return run(KUBERNETES.cache_dir() / "kubectl", "kustomize", folder)


def test_the_pinned_egress_value_renders_what_the_kustomize_component_does(
    helm: Path, tmp_path: Path
) -> None:
    kustomized = objects(kustomize_with_components(tmp_path, PINNED_EGRESS))
    charted = objects(
        run(
            helm,
            *("template", "baseline-operator", CHART, "--namespace", NAMESPACE, "--include-crds"),
            *("--set", "namespace.create=true"),
            *("--set", f"networkPolicy.apiServerCIDRs={{{PLACEHOLDER_CIDR}}}"),
        )
    )
    assert sorted(charted) == sorted(kustomized)
    for key, manifest in kustomized.items():
        assert charted[key] == manifest, key
    # Nothing but that one rule differs from the manifests.
    plain = objects(run(KUBERNETES.cache_dir() / "kubectl", "kustomize", REPO / "manifests"))
    assert [key for key in plain if plain[key] != kustomized[key]] == [
        ("NetworkPolicy", NAMESPACE, "baseline-operator")
    ]


def operator_policies(helm: Path, *values: str) -> list[dict[str, Any]]:
    """The NetworkPolicies of the operator's namespace, as the chart renders them with `values`."""
    rendered = run(helm, "template", "baseline-operator", CHART, "--namespace", NAMESPACE, *values)
    return [p for p in objects(rendered).values() if p["kind"] == "NetworkPolicy"]


OPERATOR_POD = Pod(NAMESPACE, {"app.kubernetes.io/name": "baseline-operator"}, "10.244.0.10")
COREDNS = Destination("10.244.0.2", Pod("kube-system", {"k8s-app": "kube-dns"}, "10.244.0.2"))
WORLD = World(namespace_labels={"kube-system": {"kubernetes.io/metadata.name": "kube-system"}})


def test_with_api_server_cidrs_the_operator_reaches_only_those_addresses_on_443_and_6443(helm: Path) -> None:
    pinned = operator_policies(helm, "--set", "networkPolicy.apiServerCIDRs={172.18.0.2/32,fd00:10::/120}")

    def allowed(ip: str, port: int, protocol: str = "TCP", pod: Pod | None = None) -> bool:
        return egress_allowed(pinned, OPERATOR_POD, Destination(ip, pod), protocol, port, WORLD)

    for address in ("172.18.0.2", "fd00:10::1", "fd00:10::ff"):
        assert allowed(address, 443)
        assert allowed(address, 6443)
        for port, protocol in ((80, "TCP"), (8443, "TCP"), (10250, "TCP"), (443, "UDP"), (6443, "UDP")):
            assert not allowed(address, port, protocol), (address, port, protocol)
    # Next to them, the Service's ClusterIP, the metadata API, a Pod listening on 6443: refused.
    for address in ("172.18.0.3", "10.96.0.1", "169.254.169.254", "fd00:10::100", "fd00::1"):
        for port in (443, 6443):
            assert not allowed(address, port), (address, port)
    assert not allowed("10.244.0.7", 6443, pod=Pod("tenant", {"app": "web"}, "10.244.0.7"))
    # DNS as before.
    assert egress_allowed(pinned, OPERATOR_POD, COREDNS, "UDP", 53, WORLD)
    assert egress_allowed(pinned, OPERATOR_POD, COREDNS, "TCP", 53, WORLD)


def test_without_api_server_cidrs_any_address_is_open_on_443_and_6443(helm: Path) -> None:
    # Today's default, documented in manifests/networkpolicy.yaml and measured on the real node.
    default = operator_policies(helm)
    for address in ("172.18.0.2", "10.96.0.1", "203.0.113.9", "fd00::1"):
        for port in (443, 6443):
            assert egress_allowed(default, OPERATOR_POD, Destination(address), "TCP", port, WORLD)
        assert not egress_allowed(default, OPERATOR_POD, Destination(address), "TCP", 80, WORLD)


def test_helm_lint_finds_nothing(helm: Path) -> None:
    output = run(helm, "lint", "--strict", CHART, "--namespace", NAMESPACE)
    assert "0 chart(s) failed" in output, output


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of its own: the e2e tier's has the same objects installed from manifests/."""
    cluster = LocalCluster(tmp_path_factory.mktemp("chart-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_chart_installs_and_uninstalls_on_a_control_plane(
    helm: Path, control_plane: LocalCluster
) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    run(
        helm,
        *("--kubeconfig", kubeconfig),
        "install",
        "baseline-operator",
        CHART,
        *("--namespace", NAMESPACE),
        "--create-namespace",
        "--wait=false",
    )
    kubectl = KUBERNETES.cache_dir() / "kubectl"
    installed = run(
        kubectl,
        *("--kubeconfig", kubeconfig),
        "get",
        "deployment/baseline-operator",
        "validatingadmissionpolicybinding/baseline-operator-managed-objects",
        "crd/securitybaselines.baseline.dev",
        *("-n", NAMESPACE, "-o", "name"),
    )
    assert "deployment.apps/baseline-operator" in installed
    assert (
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/baseline-operator-managed-objects"
        in installed
    )
    run(helm, *("--kubeconfig", kubeconfig), "uninstall", "baseline-operator", *("--namespace", NAMESPACE))
    left = run(
        kubectl,
        *("--kubeconfig", kubeconfig),
        "get",
        "validatingadmissionpolicybinding,clusterrole",
        *("-l", "app.kubernetes.io/name=baseline-operator", "-o", "name"),
    )
    assert left.strip() == ""
