"""Conflicts: a user changes an object between the operator's read and its write (fault scenario 4).

The race window is a few milliseconds in the running operator, too short to hit on purpose from outside.
So these tests open it wide and deterministically: they stop the session's operator and drive the
operator's own reconcile engine in-process, with its real API layer and the operator's ServiceAccount,
from a cache filled by the operator's own code and then left stale on purpose while the test changes the
cluster. Everything the engine writes goes to the real API server, which decides about the conflict.

What must hold: the user's change survives (same resourceVersion, or their fields still there); the
operator says what it could not do; and once its view catches up it does not fight the user's object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import FULL_SET, OPERATOR_USER, Cluster, audit_events, eventually, full_spec

from baseline_operator import kube as kube_api
from baseline_operator.cache import ClusterCache
from baseline_operator.engine import Engine
from baseline_operator.planner import Policy
from baseline_operator.selection import protected_namespaces

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from support import OperatorProcess

    from localcluster import LocalCluster

MakeNamespace = Callable[..., str]
MakeBaseline = Callable[..., dict[str, Any]]
USER = "a-user"


@pytest.fixture
def operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """No running operator: the in-process engine is the only writer; the session's one restarts after."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


class InProcessOperator:
    """The operator's reconcile engine and cache, driven step by step by the test."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = kube_api.KubeApi.connect(kubeconfig=str(kubeconfig), max_in_flight=4)
        policy = Policy(protected_namespaces(None), allowed_cluster_roles=frozenset({"view", "edit"}))
        self.engine = Engine(self.api, policy)
        self.cache = ClusterCache()

    def read(self) -> ClusterCache:
        """A fresh view of the cluster (the operator's start-up lists); it goes stale as the test acts."""
        self.cache = ClusterCache()
        asyncio.run(self.cache.fill(self.api))
        self.engine.attach(self.cache)
        return self.cache

    def reconcile(self, namespace: str) -> None:
        asyncio.run(self.engine.reconcile(namespace))

    def problems(self, baseline: str, namespace: str) -> list[str]:
        result = self.engine.namespace_results(baseline).get(namespace)
        return [f"{entry.reason}: {entry.message}" for entry in result.problems] if result else []


@pytest.fixture
def in_process(operator_stopped: None, operator_kubeconfig: Path) -> Iterator[InProcessOperator]:
    operator = InProcessOperator(operator_kubeconfig)
    try:
        yield operator
    finally:
        operator.api.close()


def converged(
    in_process: InProcessOperator, kube_: Cluster, make_namespace: MakeNamespace, spec: dict[str, Any]
) -> str:
    namespace = make_namespace("conflict", {"e2e": spec["namespaceSelector"]["matchLabels"]["e2e"]})
    eventually(lambda: default_account_exists(kube_, namespace), what="the default ServiceAccount")
    in_process.read()
    in_process.reconcile(namespace)
    assert kube_.managed(namespace) == FULL_SET
    return namespace


def default_account_exists(kube_: Cluster, namespace: str) -> bool:
    try:
        kube_.core.read_namespaced_service_account("default", namespace)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def answers_to_deletes(cluster: LocalCluster, namespace: str, name: str, since: float) -> list[int]:
    """HTTP codes the API server gave the operator's DELETEs of one NetworkPolicy, from the audit log."""
    return [
        event["responseStatus"]["code"]
        for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
        if event["verb"] == "delete"
        and event["objectRef"].get("resource") == "networkpolicies"
        and event["objectRef"].get("namespace") == namespace
        and event["objectRef"].get("name") == name
    ]


def user_network_policy(namespace: str, name: str) -> client.V1NetworkPolicy:
    """Someone else's NetworkPolicy under one of the operator's names, with other content."""
    return client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels={"owner": "team"}),
        spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector(match_labels={"app": "web"}), policy_types=["Ingress"]
        ),
    )


def test_a_repair_racing_a_user_update_keeps_the_users_fields(
    in_process: InProcessOperator,
    kube: Cluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    spec = full_spec(label)
    make_baseline(spec)
    namespace = converged(in_process, kube, make_namespace, spec)
    kube.core.patch_namespaced_resource_quota(
        "baseline-quota", namespace, {"spec": {"hard": {"pods": "500"}}}, field_manager=USER
    )
    in_process.read()  # the operator reads the drift...
    # ...and before it writes, the user changes the object again, elsewhere.
    kube.core.patch_namespaced_resource_quota(
        "baseline-quota",
        namespace,
        {"metadata": {"annotations": {"team/contact": "ops"}}, "spec": {"hard": {"services": "7"}}},
        field_manager=USER,
    )
    in_process.reconcile(namespace)
    quota = kube.core.read_namespaced_resource_quota("baseline-quota", namespace)
    assert quota.spec.hard["pods"] == "20"  # the baseline's value, repaired
    assert quota.spec.hard["services"] == "7"  # the user's later update, kept
    assert quota.metadata.annotations["team/contact"] == "ops"


def test_a_create_racing_a_users_create_leaves_their_object_alone(
    in_process: InProcessOperator,
    kube: Cluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    spec = full_spec(label)
    baseline = make_baseline(spec)["metadata"]["name"]
    namespace = make_namespace("conflict", {"e2e": label})
    eventually(lambda: default_account_exists(kube, namespace), what="the default ServiceAccount")
    in_process.read()  # the namespace is empty: the operator will create everything...
    # ...and the user creates one of those names first.
    created = kube.networking.create_namespaced_network_policy(
        namespace, user_network_policy(namespace, "baseline-default-deny"), field_manager=USER
    )
    in_process.reconcile(namespace)

    theirs = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert theirs.metadata.resource_version == created.metadata.resource_version
    assert kube.managed(namespace) == FULL_SET - {"NetworkPolicy/baseline-default-deny"}
    problems = in_process.problems(baseline, namespace)
    assert any("baseline-default-deny" in problem and "409" in problem for problem in problems), problems

    in_process.read()  # once the view has caught up, the name is reported as taken, and nothing is written
    in_process.reconcile(namespace)
    theirs = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert theirs.metadata.resource_version == created.metadata.resource_version
    assert any("baseline-default-deny" in problem for problem in in_process.problems(baseline, namespace))


def test_a_prune_racing_a_users_replacement_deletes_only_the_operators_objects(
    in_process: InProcessOperator,
    cluster: LocalCluster,
    kube: Cluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    spec = full_spec(label)
    make_baseline(spec)
    namespace = converged(in_process, kube, make_namespace, spec)
    since = time.time()
    cache = in_process.read()
    # The user takes the namespace out of the baseline and, before the operator prunes, replaces one of
    # its NetworkPolicies by their own under the same name; the operator hears of the label first.
    moved = kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": "elsewhere"}}})
    kube.networking.delete_namespaced_network_policy("baseline-allow-dns", namespace)
    replaced = kube.networking.create_namespaced_network_policy(
        namespace, user_network_policy(namespace, "baseline-allow-dns"), field_manager=USER
    )
    cache.observe(kube_api.NAMESPACE, client.ApiClient().sanitize_for_serialization(moved))
    in_process.reconcile(namespace)

    theirs = kube.networking.read_namespaced_network_policy("baseline-allow-dns", namespace)
    assert theirs.metadata.uid == replaced.metadata.uid
    assert theirs.metadata.resource_version == replaced.metadata.resource_version
    assert kube.managed(namespace) == set()  # the operator's own objects are gone
    # It was the API server that refused the operator's delete (its uid precondition), not luck.
    assert answers_to_deletes(cluster, namespace, "baseline-allow-dns", since) == [409]

    in_process.read()  # once the view has caught up: nothing more to do, and their object is untouched
    in_process.reconcile(namespace)
    assert answers_to_deletes(cluster, namespace, "baseline-allow-dns", since) == [409]
    theirs = kube.networking.read_namespaced_network_policy("baseline-allow-dns", namespace)
    assert theirs.metadata.resource_version == replaced.metadata.resource_version


def test_a_repair_racing_a_users_delete_and_recreate_leaves_their_new_object_alone(
    in_process: InProcessOperator,
    kube: Cluster,
    make_namespace: MakeNamespace,
    make_baseline: MakeBaseline,
    label: str,
) -> None:
    spec = full_spec(label)
    baseline = make_baseline(spec)["metadata"]["name"]
    namespace = converged(in_process, kube, make_namespace, spec)
    kube.networking.patch_namespaced_network_policy(
        "baseline-default-deny", namespace, {"spec": {"policyTypes": ["Ingress"]}}, field_manager=USER
    )
    in_process.read()  # the operator reads the drift...
    # ...and before it repairs, the user replaces the object by one of their own under the same name.
    kube.networking.delete_namespaced_network_policy("baseline-default-deny", namespace)
    created = kube.networking.create_namespaced_network_policy(
        namespace, user_network_policy(namespace, "baseline-default-deny"), field_manager=USER
    )
    in_process.reconcile(namespace)

    theirs = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert theirs.metadata.uid == created.metadata.uid
    assert theirs.metadata.resource_version == created.metadata.resource_version  # not taken over
    problems = in_process.problems(baseline, namespace)
    assert any("baseline-default-deny" in problem and "uid" in problem for problem in problems), problems

    in_process.read()  # once the view has caught up, the name is reported as taken, and nothing is written
    in_process.reconcile(namespace)
    theirs = kube.networking.read_namespaced_network_policy("baseline-default-deny", namespace)
    assert theirs.metadata.resource_version == created.metadata.resource_version
    assert any("NameTaken" in problem for problem in in_process.problems(baseline, namespace))
