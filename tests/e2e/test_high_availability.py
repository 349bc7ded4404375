"""Two replicas with leader election: one works, the other takes over; never two writers at once."""

from __future__ import annotations

import base64
import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from conftest import operator_token_kubeconfig
from kubernetes import client
from support import (
    FULL_SET,
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    WRITE_VERBS,
    Cluster,
    OperatorProcess,
    UserObjects,
    audit_events,
    eventually,
    full_spec,
    new_operator,
    remove_lease,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from localcluster import LocalCluster

LEASE_DURATION = 15.0  # ElectionSettings' default, as deployed


def holder(api: client.ApiClient) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease("baseline-operator", OPERATOR_NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def credential(kubeconfig: Path) -> str:
    """The id the audit log records for requests made with this kubeconfig's token."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def leader_gauge(process: OperatorProcess) -> float:
    line = next(
        line for line in process.metrics().splitlines() if line.startswith("baseline_operator_leader ")
    )
    return float(line.split()[1])


def object_writes(cluster: LocalCluster, since: float) -> list[tuple[float, str]]:
    """(time, credential) of each write by the operator to a managed object or status, in order."""
    found = []
    for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since):
        reference: dict[str, Any] = event.get("objectRef", {})
        if event.get("verb") in WRITE_VERBS and reference.get("resource") not in {"leases", "events"}:
            received = event["requestReceivedTimestamp"]
            extra = event["user"].get("extra", {}).get("authentication.kubernetes.io/credential-id", [""])
            found.append((_epoch(received), extra[0]))
    return sorted(found)


def _epoch(timestamp: str) -> float:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromisoformat(timestamp).timestamp()


def test_the_standby_takes_over_when_the_leader_dies_and_at_once_when_it_stops(
    operator: OperatorProcess,
    cluster: LocalCluster,
    api: client.ApiClient,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    operator.stop()  # the session's operator runs without election: it would be a third writer
    configs = {
        name: operator_token_kubeconfig(cluster, api, tmp_path / f"{name}.kubeconfig") for name in ("a", "b")
    }
    replicas = {
        name: new_operator(tmp_path / name, configs[name], "--leader-election-id", f"replica-{name}")
        for name in configs
    }
    for name in configs:
        (tmp_path / name).mkdir()
    since = time.time()
    try:
        replicas["a"].start()
        eventually(lambda: holder(api) == "replica-a", what="replica a leads")
        replicas["b"].start()  # its liveness answers while it waits
        assert leader_gauge(replicas["a"]) == 1
        assert leader_gauge(replicas["b"]) == 0
        first = make_namespace("ha", {"e2e": label})
        user = UserObjects(kube, api, first)
        name = make_baseline(full_spec(label))["metadata"]["name"]
        eventually(lambda: kube.managed(first) == FULL_SET and kube.ready(name), what="a made it compliant")

        replicas["a"].stop(signal.SIGKILL)
        killed = time.time()
        second = make_namespace("ha", {"e2e": label})
        eventually(lambda: holder(api) == "replica-b", timeout=3 * LEASE_DURATION, what="b takes over")
        took_over = time.time()
        eventually(lambda: kube.managed(second) == FULL_SET, what="b made the new namespace compliant")
        assert took_over - killed <= LEASE_DURATION + 5, (
            f"takeover after a crash took {took_over - killed:.1f} s"
        )
        assert leader_gauge(replicas["b"]) == 1
        print(f"takeover after SIGKILL: {took_over - killed:.1f} s")  # noqa: T201 - shown with -s

        # Never two writers: every write of a's token came before it died, every one of b's after a's Lease
        # had expired on b's clock.
        writes = object_writes(cluster, since)
        by_a = [at for at, who in writes if who == credential(configs["a"])]
        by_b = [at for at, who in writes if who == credential(configs["b"])]
        assert by_a, "a wrote the first namespace"
        assert by_b, "b wrote the second namespace"
        assert max(by_a) <= killed < min(by_b), (max(by_a), killed, min(by_b))

        # A graceful stop releases the Lease: the next replica does not wait for it to expire.
        replicas["a"] = new_operator(tmp_path / "a", configs["a"], "--leader-election-id", "replica-a")
        replicas["a"].start()
        replicas["b"].stop(signal.SIGTERM)
        stopped = time.time()
        eventually(lambda: holder(api) == "replica-a", timeout=LEASE_DURATION, what="a takes over")
        handover = time.time() - stopped
        print(f"handover after SIGTERM: {handover:.1f} s")  # noqa: T201
        assert handover < 5, f"handover after a graceful stop took {handover:.1f} s"
        third = make_namespace("ha", {"e2e": label})
        eventually(lambda: kube.managed(third) == FULL_SET, what="a works again")
        assert user.unchanged() == [], "a user's objects changed through the hand-overs"
    finally:
        for replica in replicas.values():
            replica.stop()
        operator.start()


@pytest.fixture(autouse=True)
def _no_lease_left(api: client.ApiClient) -> None:
    remove_lease(api)
