"""Faults survived: the operator killed, the API server and etcd gone, the operator down during changes.

Each scenario ends with the exact expected state: every selected namespace has exactly the managed objects,
labels and ServiceAccount setting of its baseline (no missing, extra or duplicated objects), the baseline
says so, user-owned objects are unchanged, and no namespace is stuck Terminating.

`make test` runs a fast subset (fewer namespaces, trials and shorter outages); `make test-faults` runs them
all at the sizes of the reliability issue (BASELINE_FAULTS=all).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import (
    FULL_SET,
    GROUP,
    MANAGED,
    PLURAL,
    PSA,
    VERSION,
    Cluster,
    OperatorProcess,
    UserObjects,
    eventually,
    full_spec,
    new_operator,
    writes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from localcluster import LocalCluster

ALL = os.environ.get("BASELINE_FAULTS") == "all"
"""`make test-faults`: the full sizes. Otherwise the fast subset that `make test` runs."""


def sized(fast: Any, full: Any) -> Any:
    return full if ALL else fast


# -- the exact expected state -------------------------------------------------------------------------


def managed_by_namespace(kube: Cluster) -> Counter[tuple[str, str]]:
    """(namespace, Kind/name) of every object labelled as ours, counted: a count above 1 is a duplicate."""
    found: Counter[tuple[str, str]] = Counter()
    listings = (
        ("NetworkPolicy", kube.networking.list_network_policy_for_all_namespaces),
        ("LimitRange", kube.core.list_limit_range_for_all_namespaces),
        ("ResourceQuota", kube.core.list_resource_quota_for_all_namespaces),
        ("RoleBinding", kube.rbac.list_role_binding_for_all_namespaces),
    )
    for kind, listing in listings:
        for item in listing(label_selector=MANAGED).items:
            found[(item.metadata.namespace, f"{kind}/{item.metadata.name}")] += 1
    return found


def exact_state_problems(kube: Cluster, baseline: str, namespaces: list[str]) -> list[str]:
    """What differs from the exact expected state of `baseline` over `namespaces` (empty: all is right)."""
    problems: list[str] = []
    found = managed_by_namespace(kube)
    for namespace in namespaces:
        objects = {obj for (ns, obj), count in found.items() if ns == namespace}
        if objects != FULL_SET:
            problems.append(f"{namespace}: objects {sorted(objects ^ FULL_SET)} differ")
        duplicated = [obj for (ns, obj), count in found.items() if ns == namespace and count > 1]
        if duplicated:
            problems.append(f"{namespace}: duplicated {duplicated}")
        if kube.labels(namespace).get(PSA) != "restricted":
            problems.append(f"{namespace}: no PSA label")
        try:
            if kube.automount(namespace) is not False:
                problems.append(f"{namespace}: default ServiceAccount still mounts its token")
        except client.ApiException as error:
            problems.append(f"{namespace}: default ServiceAccount: {error.reason}")
    status = kube.baseline(baseline).get("status", {})
    if status.get("matchedNamespaces") != len(namespaces) or status.get("compliantNamespaces") != len(
        namespaces
    ):
        matched, compliant = status.get("matchedNamespaces"), status.get("compliantNamespaces")
        problems.append(f"status: matched {matched}, compliant {compliant}, expected {len(namespaces)}")
    if not kube.ready(baseline):
        problems.append("status: not Ready")
    return problems


def converged(kube: Cluster, baseline: str, namespaces: list[str]) -> bool:
    return not exact_state_problems(kube, baseline, namespaces)


def no_namespace_terminating(kube: Cluster, prefix: str) -> bool:
    return not [
        ns.metadata.name
        for ns in kube.core.list_namespace().items
        if ns.metadata.name.startswith(prefix) and ns.status.phase == "Terminating"
    ]


# -- fixtures -----------------------------------------------------------------------------------------


def create_namespaces(kube: Cluster, prefix: str, label: str, count: int) -> list[str]:
    names = [f"{prefix}-{uuid.uuid4().hex[:6]}-{i}" for i in range(count)]
    body = lambda name: client.V1Namespace(  # noqa: E731
        metadata=client.V1ObjectMeta(name=name, labels={"e2e": label})
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: kube.core.create_namespace(body(name)), names))
    return names


def delete_namespaces(kube: Cluster, names: list[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: _delete_namespace(kube, name), names))


def _delete_namespace(kube: Cluster, name: str) -> None:
    try:
        kube.core.delete_namespace(name)
    except client.ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def own_operator(
    operator: OperatorProcess, operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Stop the session's operator; hand out fresh ones (killed and restarted at will); restore after."""
    operator.stop()
    started: list[OperatorProcess] = []

    def start(*args: str) -> OperatorProcess:
        process = new_operator(tmp_path / f"op{len(started)}", operator_kubeconfig, *args)
        (tmp_path / f"op{len(started)}").mkdir()
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
        operator.start()


# -- the scenarios ------------------------------------------------------------------------------------


@pytest.mark.timeout(sized(300, 2400))
def test_sigkill_at_random_points_during_cold_convergence(
    own_operator: Callable[..., OperatorProcess],
    api: client.ApiClient,
    kube: Cluster,
    make_baseline: Callable[..., dict[str, Any]],
) -> None:
    # One set of namespaces for every trial: each trial ends with its baseline deleted and the namespaces
    # released by the operator, so the next one is a cold convergence again. (New namespaces per trial
    # would leave thousands deleting behind, and the namespace controller at 20 requests/s would still be
    # at it when the next tests check that nothing is stuck Terminating.)
    trials, count = sized((2, 60), (10, 300))
    rng = random.Random(8)  # noqa: S311 - reproducible kill points, not cryptography
    label = uuid.uuid4().hex[:10]
    namespaces = create_namespaces(kube, "kill", label, count)
    user = UserObjects(kube, api, namespaces[0])
    recoveries, released = [], []
    for trial in range(trials):
        process = own_operator()
        name = make_baseline(full_spec(label))["metadata"]["name"]
        time.sleep(rng.uniform(0.1, 2.5))
        process.stop(signal.SIGKILL)
        restarted = time.monotonic()
        process = own_operator()
        eventually(
            lambda name=name: converged(kube, name, namespaces),
            timeout=sized(60, 180),
            what=f"trial {trial}",
        )
        recoveries.append(round(time.monotonic() - restarted, 1))
        assert not exact_state_problems(kube, name, namespaces)
        assert not user.unchanged(), f"user-owned objects changed: {user.unchanged()}"
        deleted = time.monotonic()
        kube.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        eventually(lambda: not release_problems(kube, namespaces), timeout=sized(60, 180), what="released")
        released.append(round(time.monotonic() - deleted, 1))
        process.stop()
    assert not user.unchanged(), f"user-owned objects changed: {user.unchanged()}"
    delete_namespaces(kube, namespaces)
    eventually(
        lambda: no_namespace_terminating(kube, "kill-"), timeout=sized(120, 600), what="namespaces gone"
    )
    print(  # noqa: T201
        f"SIGKILL trials: {trials} x {count} namespaces, converged after restart in {recoveries} s; "
        f"released after the baseline's deletion in {released} s"
    )


def release_problems(kube: Cluster, namespaces: list[str]) -> list[str]:
    """What a deleted baseline left behind in `namespaces` (empty: all released)."""
    wanted = set(namespaces)
    problems = [f"{ns}: {obj} left" for (ns, obj) in managed_by_namespace(kube) if ns in wanted]
    problems += [
        f"{ns.metadata.name}: PSA label left"
        for ns in kube.core.list_namespace().items
        if ns.metadata.name in wanted and PSA in (ns.metadata.labels or {})
    ]
    accounts = kube.core.list_service_account_for_all_namespaces(field_selector="metadata.name=default")
    problems += [
        f"{account.metadata.namespace}: token setting left"
        for account in accounts.items
        if account.metadata.namespace in wanted and account.automount_service_account_token is not None
    ]
    return problems


@pytest.mark.timeout(sized(300, 900))
def test_the_operator_recovers_on_its_own_when_the_api_server_and_etcd_come_back(
    cluster: LocalCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespaces = [make_namespace("outage", {"e2e": label}) for _ in range(3)]
    user = UserObjects(kube, api, namespaces[0])
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: converged(kube, name, namespaces), what="converged before the outage")
    assert operator.popen is not None
    pid = operator.popen.pid
    outages = [("kube-apiserver", sized(10, 30)), ("etcd", 5)]
    if ALL:
        outages.append(("kube-apiserver", 120))
    recoveries = {}
    for component, seconds in outages:
        cluster.stop_process(component)
        time.sleep(seconds)
        cluster.start_process(component)
        eventually(cluster.apiserver_ready, timeout=60, what="the API server is back")
        back = time.monotonic()
        # Something to do once it is back: a deleted object, repaired by the operator alone. (A new
        # namespace also needs kube-controller-manager, whose informers take up to a minute to return:
        # its default ServiceAccount comes late, not the operator's objects.)
        kube.networking.delete_namespaced_network_policy("baseline-default-deny", namespaces[1])
        eventually(
            lambda: kube.managed(namespaces[1]) == FULL_SET, timeout=30, what=f"repaired after {component}"
        )
        recoveries[f"{component} {seconds}s"] = round(time.monotonic() - back, 1)
        namespaces.append(make_namespace("outage", {"e2e": label}))
        eventually(
            lambda: converged(kube, name, namespaces), timeout=120, what=f"converged after {component}"
        )
        assert operator.popen is not None
        assert operator.popen.pid == pid, "recovered without a restart"
        assert operator.popen.poll() is None
    assert not user.unchanged()
    # Leave the control plane as the next test expects it: kube-controller-manager's informers return up
    # to a minute after the API server, and only it gives a namespace that no baseline selects its
    # default ServiceAccount.
    probe = make_namespace("probe")
    eventually(
        lambda: kube.default_service_account(probe) is not None,
        timeout=120,
        what="the controller-manager is back",
    )
    print(f"repair after the API returned: {recoveries}")  # noqa: T201


def test_changes_made_while_the_operator_was_down_are_converged_once(
    own_operator: Callable[..., OperatorProcess],
    cluster: LocalCluster,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    kept = [make_namespace("down", {"e2e": label}) for _ in range(3)]
    leaving = make_namespace("down", {"e2e": label})
    deleted = make_namespace("down", {"e2e": label})
    user = UserObjects(kube, api, kept[0])
    process = own_operator()
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: converged(kube, name, [*kept, leaving, deleted]), what="converged before")
    process.stop()
    since = time.time()
    created = [make_namespace("down", {"e2e": label}) for _ in range(2)]
    kube.core.patch_namespace(leaving, {"metadata": {"labels": {"e2e": "elsewhere"}}})
    kube.core.delete_namespace(deleted)
    started = time.monotonic()
    own_operator()
    eventually(lambda: converged(kube, name, [*kept, *created]), what="converged after the restart")
    eventually(lambda: kube.managed(leaving) == set(), what="the namespace that left is cleaned")
    took = time.monotonic() - started
    time.sleep(3)  # anything written twice would show up by now
    done = writes(cluster.audit_log, since=since)
    per_new = [w for w in done if any(f" {ns}/" in w for ns in created)]
    # Per new namespace: five objects, the PSA labels, the ServiceAccount: seven writes, once each.
    assert len(per_new) == 7 * len(created), per_new
    # The namespace that left: its five objects deleted, the PSA labels and the token setting given back.
    left = [w for w in done if f" {leaving}/" in w]
    assert len([w for w in left if w.startswith("delete ")]) == len(FULL_SET), left
    assert len(left) == len(FULL_SET) + 2, left
    assert not [w for w in done if any(f" {ns}/" in w for ns in kept)], "nothing written to unchanged ones"
    eventually(lambda: no_namespace_terminating(kube, "down-"), timeout=60, what="no namespace stuck")
    assert not user.unchanged()
    print(f"converged {took:.1f} s after the restart")  # noqa: T201


@pytest.mark.timeout(sized(300, 900))
def test_namespace_churn_while_baselines_change_ends_exact_without_memory_growth(
    own_operator: Callable[..., OperatorProcess],
    api: client.ApiClient,
    kube: Cluster,
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    duration = sized(20.0, 180.0)
    process = own_operator()
    stable = create_namespaces(kube, "churn", label, 5)
    user = UserObjects(kube, api, stable[0])
    name = make_baseline(full_spec(label))["metadata"]["name"]
    eventually(lambda: converged(kube, name, stable), what="converged before the churn")
    rss = [_rss_mib(process)]
    alive: list[str] = []
    rng = random.Random(6)  # noqa: S311
    end = time.monotonic() + duration
    step = 0
    while time.monotonic() < end:
        alive += create_namespaces(kube, "churn", label, 3)
        if len(alive) > 6:
            gone, alive = alive[:3], alive[3:]
            delete_namespaces(kube, gone)
        step += 1
        if step % 5 == 0:  # the baseline changes under the churn: quota up and down
            pods = str(rng.choice([10, 20, 30]))
            kube.custom.patch_cluster_custom_object(
                "baseline.dev",
                "v1alpha1",
                "securitybaselines",
                name,
                {"spec": {"resourceQuota": {"hard": {"pods": pods}}}},
            )
            rss.append(_rss_mib(process))
        time.sleep(0.5)
    kube.custom.patch_cluster_custom_object(
        "baseline.dev",
        "v1alpha1",
        "securitybaselines",
        name,
        {"spec": {"resourceQuota": {"hard": {"pods": "20"}}}},
    )
    eventually(lambda: converged(kube, name, [*stable, *alive]), timeout=60, what="exact after the churn")
    assert not user.unchanged()
    eventually(lambda: no_namespace_terminating(kube, "churn-"), timeout=90, what="no namespace stuck")
    rss.append(_rss_mib(process))
    # No leak trend: the last samples are not far above the early ones (caches hold live objects only).
    assert rss[-1] <= max(rss[: max(2, len(rss) // 3)]) + 25, rss
    print(f"churn RSS samples (MiB): {rss}")  # noqa: T201


def _rss_mib(process: OperatorProcess) -> float:
    assert process.popen is not None
    for line in open(f"/proc/{process.popen.pid}/status").read().splitlines():  # noqa: PTH123, SIM115
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
