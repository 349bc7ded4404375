"""The e2e tier: one real control plane per test session; each test works in namespaces of its own."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client, config
from support import GROUP, OPERATOR_USER, PLURAL, VERSION, Cluster, OperatorProcess, eventually, new_operator

from localcluster import LocalCluster
from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # A crashed or killed test run takes the processes with it (PR_SET_PDEATHSIG); a failing or
    # interrupted one stops them here.
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> client.ApiClient:
    """An admin API client (system:masters)."""
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def make_namespace(api: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Create uniquely named namespaces; delete them after the test (without waiting)."""
    core = client.CoreV1Api(api)
    created: list[str] = []

    def make(prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except client.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    return make_namespace()


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crd(api: client.ApiClient) -> None:
    """The SecurityBaseline CRD from crds/, installed and established."""
    extensions = client.ApiextensionsV1Api(api)
    body = yaml.safe_load((REPO / "crds" / "securitybaseline.yaml").read_text())
    try:
        extensions.create_custom_resource_definition(body)
    except client.ApiException as error:
        if error.status != 409:
            raise
    name = body["metadata"]["name"]

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, timeout=30, what="the CRD is established")


RBAC_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)


def render_manifests() -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/`: what `kubectl apply -k manifests/` would install."""
    kubectl = KUBERNETES.cache_dir() / "kubectl"
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(REPO / "manifests")], check=True, capture_output=True, text=True
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


@pytest.fixture(scope="session")
def operator_rbac(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The operator's Namespace, ServiceAccount and RBAC from manifests/, applied as an admin would."""
    kubectl = KUBERNETES.cache_dir() / "kubectl"
    objects = [document for document in render_manifests() if document["kind"] in RBAC_KINDS]
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side", "-f", "-"],
        input=yaml.safe_dump_all(objects),
        check=True,
        capture_output=True,
        text=True,
    )
    return objects


def operator_token_kubeconfig(cluster: LocalCluster, api: client.ApiClient, path: Path) -> Path:
    """A kubeconfig with a fresh token of the operator's ServiceAccount, from the TokenRequest API.

    Each token has its own id, which the audit log records: two replicas can be told apart.
    """
    namespace, _, name = OPERATOR_USER.removeprefix("system:serviceaccount:").partition(":")
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=6 * 3600)
    )
    core = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(name, namespace, request).status.token
    return cluster.write_token_kubeconfig(path, token=token)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: LocalCluster, api: client.ApiClient, operator_rbac: object) -> Path:
    """The operator's own identity: its ServiceAccount, with exactly the RBAC of manifests/.

    Every e2e test therefore runs the operator with the permissions a real installation grants, and the
    audit log tells its requests apart from the tests'.
    """
    return operator_token_kubeconfig(cluster, api, cluster.state_dir / "operator.kubeconfig")


@pytest.fixture(scope="session")
def operator(
    crd: None, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The real operator process, started once for the session (tests that restart it use their own)."""
    process = new_operator(tmp_path_factory.mktemp("operator"), operator_kubeconfig)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def make_baseline(custom: client.CustomObjectsApi, crd: None) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create SecurityBaselines (unique names); delete them after the test."""
    created: list[str] = []

    def make(spec: dict[str, Any], prefix: str = "sbl", name: str | None = None) -> dict[str, Any]:
        name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SecurityBaseline",
            "metadata": {"name": name},
            "spec": spec,
        }
        result: dict[str, Any] = custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        created.append(name)
        return result

    yield make
    for name in created:
        try:
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except client.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def kube(api: client.ApiClient) -> Cluster:
    return Cluster(api)


@pytest.fixture
def label() -> str:
    return uuid.uuid4().hex[:10]


def kubectl(cluster: LocalCluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl of the control plane's release against the test cluster; the caller checks the outcome."""
    return subprocess.run(
        [str(KUBERNETES.cache_dir() / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def install_admission_protection(cluster: LocalCluster, *components: str) -> list[dict[str, Any]]:
    """manifests/admission (with kustomize `components`, e.g. "warn"), applied as an admin would."""
    folder = cluster.state_dir / f"admission-{'-'.join(components) or 'deny'}"
    folder.mkdir(exist_ok=True)
    admission = REPO / "manifests" / "admission"
    # kustomize takes only relative paths to other kustomizations.
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(admission, folder)],
        "components": [os.path.relpath(admission / component, folder) for component in components],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = kubectl(cluster, "kustomize", str(folder))
    assert rendered.returncode == 0, rendered.stderr
    objects = [document for document in yaml.safe_load_all(rendered.stdout) if document]
    applied = kubectl(
        cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=rendered.stdout
    )
    assert applied.returncode == 0, applied.stderr
    return objects


def remove_admission_protection(cluster: LocalCluster, objects: list[dict[str, Any]]) -> None:
    removed = kubectl(
        cluster, "delete", "--ignore-not-found", "--wait", "-f", "-", stdin=yaml.safe_dump_all(objects)
    )
    assert removed.returncode == 0, removed.stderr
