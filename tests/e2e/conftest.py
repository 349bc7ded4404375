"""The e2e tier: one real control plane per test session; each test works in namespaces of its own."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from kubernetes import client, config

from localcluster import LocalCluster

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
