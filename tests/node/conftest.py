"""The real-node tier: one control plane with a real node per test session; Pods run, packets are policed.

Skipped only where the machine lacks root. Anything else missing (a Debian package, a binary that does
not build) fails the session loudly: `make node` installs and builds what the node needs.

The tests that need an operator (the `operator` fixture; the packet tests of the floor) run it where
`BASELINE_NODE_OPERATOR` says: `host` (the default) as a process on the host, as the e2e tier does;
`in-cluster` as the Deployment of `manifests/` on the image `make image` built (`make node-test-in-cluster`).
No node test inspects the operator's process itself (its log, a host port), so each runs either way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from in_cluster import ManifestsDeployment
from kubernetes import client, config
from node_pods import Pods

from localcluster import binaries, host, operator_image
from localcluster.node import LocalNode, reap_slot
from localcluster.operator_process import OperatorProcess, new_operator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NODE_TESTS = str(Path(__file__).parent)
# The modules that run the operator's image in the cluster, from manifests/ and from the Helm chart.
IN_CLUSTER_TESTS = frozenset(
    str(Path(__file__).parent / name) for name in ("test_in_cluster.py", "test_in_cluster_helm.py")
)
HELM_TESTS = str(Path(__file__).parent / "test_in_cluster_helm.py")
NO_ROOT = "the real node needs root (network namespaces, cgroups, mounts); this run is not root"
# Where the `operator` fixture runs the operator: "host" (a process) or "in-cluster" (the Deployment).
NODE_OPERATOR = os.environ.get("BASELINE_NODE_OPERATOR", "host")
NODE_OPERATORS = ("host", "in-cluster")


def pytest_configure(config: pytest.Config) -> None:
    if NODE_OPERATOR not in NODE_OPERATORS:
        raise pytest.UsageError(
            f"BASELINE_NODE_OPERATOR={NODE_OPERATOR!r}: one of {', '.join(NODE_OPERATORS)}"
        )
    # A node of an earlier run killed with SIGKILL still has its mounts under pytest's old folders, which
    # pytest removes when it makes this run's: unmount them first (a Pod's volume may be a host folder).
    if os.geteuid() == 0 and host.LEDGER_DIR.exists():
        host.reap_dead(reap_slot)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(NODE_TESTS):
            item.add_marker(pytest.mark.node)


def pytest_collection_finish(session: pytest.Session) -> None:
    # A cold build takes minutes: do it before the first test, outside any test's timeout.
    if os.geteuid() == 0 and any(str(item.path).startswith(NODE_TESTS) for item in session.items):
        helm = (binaries.HELM,) if any(str(item.path) == HELM_TESTS for item in session.items) else ()
        binaries.ensure_control_plane(tools=(*binaries.CONTROL_PLANE, *binaries.NODE, *helm))
    # The operator's image too, when a test runs it (`make image` has usually built it: then this only
    # checks that its inputs did not change). A machine that cannot build it fails in the test instead.
    if any(runs_the_image(item) for item in session.items) and not operator_image.missing_prerequisites():
        with contextlib.suppress(operator_image.ImageBuildError):  # the test's fixture says why
            operator_image.ensure_image()


def runs_the_image(item: pytest.Item) -> bool:
    """Whether the node test `item` runs the operator's image in the cluster."""
    if str(item.path) in IN_CLUSTER_TESTS:
        return True
    needs_an_operator = "operator" in getattr(item, "fixturenames", ())
    return NODE_OPERATOR == "in-cluster" and str(item.path).startswith(NODE_TESTS) and needs_an_operator


def start_node(state_dir: Path) -> LocalNode:
    if os.geteuid() != 0:
        pytest.skip(NO_ROOT)
    node = LocalNode(state_dir)
    node.start()
    return node


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """A control plane and a real node in a network namespace; torn down (and checked) at the end."""
    local = start_node(tmp_path_factory.mktemp("node"))
    try:
        yield local
    finally:
        local.stop()
    leftovers = local.leftovers()
    assert not leftovers, f"the node's teardown left: {leftovers}"


@pytest.fixture(scope="session")
def api(node: LocalNode) -> client.ApiClient:
    """An admin API client (system:masters), reaching the API server over the host's veth."""
    return config.new_client_from_config(config_file=str(node.kubeconfig))


@pytest.fixture(scope="session")
def pods(node: LocalNode, api: client.ApiClient) -> Pods:
    return Pods(api, node.kubectl, node.kubeconfig)


@pytest.fixture
def make_namespace(api: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Create uniquely named namespaces; delete them after the test (without waiting)."""
    core = client.CoreV1Api(api)
    created: list[str] = []

    def make(prefix: str = "n", labels: dict[str, str] | None = None) -> str:
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


REPO = Path(__file__).resolve().parents[2]
OPERATOR_SERVICE_ACCOUNT = ("baseline-system", "baseline-operator")
RBAC_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)


SessionOperator = OperatorProcess | ManifestsDeployment


@pytest.fixture(scope="session")
def session_operators() -> list[SessionOperator]:
    """The operator this session runs for its tests (the `operator` fixture's), while it runs.

    Tests that install the operator in the cluster themselves stop it for their duration: both would
    contend for the one Lease, and a write by the session's operator could pass for theirs.
    """
    return []


def grant_operator_access(node: LocalNode, api: client.ApiClient, kubeconfig: Path) -> Path:
    """Install the CRD and the operator's ServiceAccount and RBAC from manifests/; write a kubeconfig with a
    new token of that ServiceAccount (a token dies with the ServiceAccount it was issued for)."""
    rendered = subprocess.run(
        [str(node.kubectl), "kustomize", str(REPO / "manifests")], check=True, capture_output=True, text=True
    ).stdout
    wanted = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and (d["kind"] in RBAC_KINDS or d["kind"] == "CustomResourceDefinition")
    ]
    subprocess.run(
        node.kubectl_command("apply", "--server-side", "-f", "-"),
        input=yaml.safe_dump_all(wanted),
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        node.kubectl_command(
            "wait", "--for=condition=Established", "crd/securitybaselines.baseline.dev", "--timeout=60s"
        ),
        check=True,
        capture_output=True,
    )
    namespace, name = OPERATOR_SERVICE_ACCOUNT
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=6 * 3600)
    )
    token = (
        client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request).status.token
    )
    return node.cluster.write_token_kubeconfig(kubeconfig, token=token)


@pytest.fixture(scope="module")
def no_session_operator(
    node: LocalNode, api: client.ApiClient, session_operators: list[SessionOperator]
) -> Iterator[None]:
    """The session's operator stopped for a module that installs the operator in the cluster itself.

    It comes back with its access granted again: an install and uninstall in between (Helm's) may have
    deleted and re-created its ServiceAccount, and with it invalidated a host process's token (the
    in-cluster one applies the whole of manifests/ again, RBAC included).
    """
    paused = list(session_operators)
    for running in paused:
        running.stop()
    yield
    for running in paused:
        if isinstance(running, OperatorProcess):
            grant_operator_access(node, api, running.kubeconfig)
        running.start()


@pytest.fixture(scope="session")
def imported_image(node: LocalNode) -> str:
    """The operator's image (`make image`), imported into the node's containerd; its reference by digest."""
    # Built (or found current) before the first test, by pytest_collection_finish; built here only if that
    # failed, to say why. Not rebuilt when the sources changed since: the session tests one image.
    report = operator_image.last_build()
    if report is None:
        missing = operator_image.missing_prerequisites()
        if missing:
            pytest.fail("the operator's image cannot be built here: " + "; ".join(missing))
        report = operator_image.ensure_image()
    return operator_image.import_into_containerd(report, node.binaries["ctr"], node.containerd_socket)


@pytest.fixture(scope="session")
def operator(
    request: pytest.FixtureRequest,
    node: LocalNode,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    session_operators: list[SessionOperator],
) -> Iterator[SessionOperator]:
    """The real operator on the node's control plane, as its ServiceAccount with the RBAC of manifests/.

    With `BASELINE_NODE_OPERATOR=host` (the default) it runs on the host and reaches the API server over
    the host's veth, as the tests do. With `in-cluster` it is the Deployment of manifests/ (two replicas,
    the imported image by digest, `imagePullPolicy: Never`), returned once its leader has done its first
    pass, removed at the end (its RBAC and the CRD left, as test_in_cluster.py leaves them).
    """
    running: SessionOperator
    if NODE_OPERATOR == "in-cluster":
        running = ManifestsDeployment(node, api, request.getfixturevalue("imported_image"))
    else:
        folder = tmp_path_factory.mktemp("node-operator")
        kubeconfig = grant_operator_access(node, api, folder / "operator.kubeconfig")
        running = new_operator(folder, kubeconfig)
    running.start()
    session_operators.append(running)
    try:
        yield running
    finally:
        session_operators.remove(running)
        running.stop()


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def make_baseline(api: client.ApiClient, operator: SessionOperator) -> Iterator[Callable[..., str]]:
    """Create SecurityBaselines (unique names); delete them after the test."""
    custom = client.CustomObjectsApi(api)
    created: list[str] = []

    def make(spec: dict[str, Any]) -> str:
        name = f"sbl-{uuid.uuid4().hex[:8]}"
        body = {
            "apiVersion": "baseline.dev/v1alpha1",
            "kind": "SecurityBaseline",
            "metadata": {"name": name},
            "spec": spec,
        }
        custom.create_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", body)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            custom.delete_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)
        except client.ApiException as error:
            if error.status != 404:
                raise
