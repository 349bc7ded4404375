"""Stopping a node leaves nothing on the host: namespaces, links, mounts, cgroups, paths and sysctls."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from conftest import start_node
from kubernetes import client, config
from node_pods import Pods

from localcluster import host

if TYPE_CHECKING:
    import pytest


def comparable(snapshot: dict[str, Any], base: str) -> dict[str, Any]:
    # Mounts of other nodes of this session (under pytest's folder) come and go with their Pods; this
    # node's own mounts are checked by `leftovers()`.
    return {**snapshot, "mounts": [m for m in snapshot["mounts"] if not m.startswith(base)]}


def test_a_stopped_node_leaves_nothing_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = str(tmp_path_factory.getbasetemp())
    before = comparable(host.host_snapshot(), base)
    node = start_node(tmp_path_factory.mktemp("teardown-node"))
    try:
        api = config.new_client_from_config(config_file=str(node.kubeconfig))
        namespace = f"teardown-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        Pods(api, node.kubectl, node.kubeconfig).run_busybox(namespace)
        running = node.leftovers()
        # The check sees what a running node has: its namespaces, Pod mounts, cgroups and processes.
        assert any(item.startswith("/run/netns/") for item in running)
        assert any(item.startswith("mount ") for item in running)
        assert any(item.startswith("cgroup ") for item in running)
        assert any(item.startswith("process ") for item in running)
    finally:
        node.stop()
    assert node.leftovers() == []
    assert comparable(host.host_snapshot(), base) == before
