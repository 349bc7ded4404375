"""The floor without admission protection: what the operator itself guarantees (docs/threat-model.md).

Where manifests/admission is not installed (or in Warn mode), tenants can change what the operator keeps.
Then the operator must repair every time, never leave the namespace weaker because of what it was asked or
tricked into, and write in an order that opens no gap. Measured here, from watches and the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client, watch
from support import FULL_SET, OPERATOR_USER, PSA, Cluster, audit_events, eventually, full_spec

if TYPE_CHECKING:
    from collections.abc import Callable

    from support import OperatorProcess

    from localcluster import LocalCluster

DENY = "baseline-default-deny"
TENANT_MANAGER = "tenant-script"


class DenyWatch:
    """Every event of one namespace's default deny, with when it arrived: the namespace's real exposure."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _run(self, api: client.ApiClient, namespace: str) -> None:
        networking = client.NetworkingV1Api(api)
        try:
            for event in self._watch.stream(
                networking.list_namespaced_network_policy,
                namespace,
                field_selector=f"metadata.name={DENY}",
                timeout_seconds=300,
                _request_timeout=310,
            ):
                body = api.sanitize_for_serialization(event["object"])
                self.events.append((time.monotonic(), event["type"], body))
                if self._stop.is_set():
                    break
        except Exception:
            if not self._stop.is_set():  # a stopped watch's connection may end any way it likes
                raise

    def stop(self, closed: Callable[[dict[str, Any] | None], bool]) -> None:
        """Stop once the watch has seen the deny closed again (its last event may still be on its way)."""
        eventually(
            lambda: self.events and closed(None if self.events[-1][1] == "DELETED" else self.events[-1][2]),
            timeout=10,
            what="the watch saw the deny back",
        )
        self._stop.set()
        self._watch.stop()

    def exposures(self, closed: Callable[[dict[str, Any] | None], bool]) -> list[float]:
        """How long the deny was not in force, each time it was not: from the event that opened it to the
        event that closed it again."""
        gaps: list[float] = []
        opened: float | None = None
        for at, kind, body in self.events:
            state = None if kind == "DELETED" else body
            if not closed(state) and opened is None:
                opened = at
            elif closed(state) and opened is not None:
                gaps.append(at - opened)
                opened = None
        assert opened is None, "the deny was still open when the watch ended"
        return gaps


def full_deny(body: dict[str, Any] | None) -> bool:
    return body is not None and sorted(body["spec"].get("policyTypes") or []) == ["Egress", "Ingress"]


def converged(
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    kube: Cluster,
    label: str,
    labels: dict[str, str] | None = None,
    **overrides: Any,
) -> tuple[str, str]:
    namespace = make_namespace("floor", {"e2e": label, **(labels or {})})
    name = make_baseline(full_spec(label, **overrides))["metadata"]["name"]
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name), what="the baseline applied")
    return namespace, name


def no_fight(kube: Cluster, name: str) -> None:
    problems = kube.problems(name)
    assert not [p for p in problems if p["reason"] == "Fighting"], problems
    assert not kube.condition(name, "Conflict") or kube.condition(name, "Conflict")["status"] == "False"


def present(kube: Cluster, namespace: str) -> Any:
    try:
        return kube.networking.read_namespaced_network_policy(DENY, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_a_delete_loop_gets_the_default_deny_back_every_time_and_never_pauses_the_repair(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, name = converged(make_namespace, make_baseline, kube, label)
    watcher = DenyWatch(api, namespace)
    started = time.monotonic()
    try:
        for _ in range(30):
            eventually(lambda: present(kube, namespace), timeout=10, interval=0.02, what="the deny back")
            kube.networking.delete_namespaced_network_policy(DENY, namespace)
            time.sleep(0.5)
        eventually(lambda: full_deny(_body(api, present(kube, namespace))), timeout=10, what="the deny back")
    finally:
        watcher.stop(full_deny)
    assert time.monotonic() - started < 60  # 30 deletions within a minute: a fight, by the old rules
    gaps = watcher.exposures(full_deny)
    assert len(gaps) == 30
    print(f"30 deletions: without the deny at most {max(gaps):.3f} s, median {_median(gaps):.3f} s")  # noqa: T201
    assert max(gaps) < 5.0  # a paused repair would leave it open for 60 s and more
    no_fight(kube, name)


def test_a_patch_loop_that_empties_the_deny_is_repaired_every_time(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace, name = converged(make_namespace, make_baseline, kube, label)
    watcher = DenyWatch(api, namespace)
    try:
        for _ in range(30):
            eventually(
                lambda: full_deny(_body(api, present(kube, namespace))),
                timeout=10,
                interval=0.02,
                what="repaired",
            )
            # Empty policyTypes: the API server defaults it to Ingress, and egress is open.
            kube.networking.patch_namespaced_network_policy(
                DENY, namespace, {"spec": {"policyTypes": []}}, field_manager=TENANT_MANAGER
            )
            time.sleep(0.5)
        eventually(lambda: full_deny(_body(api, present(kube, namespace))), timeout=10, what="repaired")
    finally:
        watcher.stop(full_deny)
    gaps = watcher.exposures(full_deny)
    assert len(gaps) == 30
    print(f"30 patches: without the full deny at most {max(gaps):.3f} s, median {_median(gaps):.3f} s")  # noqa: T201
    assert max(gaps) < 5.0
    no_fight(kube, name)


def _body(api: client.ApiClient, policy: Any) -> dict[str, Any] | None:
    return None if policy is None else api.sanitize_for_serialization(policy)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def test_a_removed_placeholder_label_keeps_the_whole_floor_and_says_why_and_its_return_writes_nothing(
    operator: OperatorProcess,
    cluster: LocalCluster,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    rbac = {
        "roleBindings": [
            {
                "name": "team-view",
                "clusterRole": "view",
                "subjects": [{"kind": "Group", "name": "team-${label:team}"}],
            }
        ],
        "defaultServiceAccount": {"automountToken": False},
    }
    namespace, name = converged(make_namespace, make_baseline, kube, label, {"team": "payments"}, rbac=rbac)
    eventually(lambda: kube.automount(namespace) is False, what="the token setting applied")
    before = {key: value for key, value in kube.labels(namespace).items() if key != "team"}
    since = time.time()
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"team": None}}})

    def reported() -> bool:
        return any(
            p["reason"] == "PlaceholderUnresolved" and p["namespace"] == namespace
            for p in kube.problems(name)
        )

    eventually(reported, what="the unresolved placeholder reported")
    ready = kube.condition(name, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    time.sleep(2)  # time enough for a wrong release to happen
    assert kube.labels(namespace) == before
    assert kube.labels(namespace)[PSA] == "restricted"
    assert kube.managed(namespace) == FULL_SET
    assert kube.automount(namespace) is False
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "payments"}}})
    eventually(lambda: kube.ready(name), what="healed")
    time.sleep(1)
    written = [
        f"{event['verb']} {event['objectRef'].get('resource')}/{event['objectRef'].get('subresource', '')}"
        for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
        if event["verb"] in {"create", "patch", "update", "delete"}
    ]
    assert set(written) <= {"patch securitybaselines/status"}, written


def test_an_admins_pod_security_level_is_given_back_when_the_namespace_leaves(
    operator: OperatorProcess,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("takeover")
    # An admin set `enforce: baseline` before the operator came.
    kube.core.patch_namespace(
        namespace, {"metadata": {"labels": {PSA: "baseline"}}}, field_manager="kubectl-label"
    )
    make_baseline(full_spec(label))
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": label}}})
    eventually(lambda: kube.labels(namespace).get(PSA) == "restricted", what="restricted while selected")
    record = json.loads(
        kube.core.read_namespace(namespace).metadata.annotations["baseline.dev/previous-values"]
    )
    assert record[PSA] == {"value": "baseline", "manager": "kubectl-label"}
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": None}}})
    eventually(lambda: "baseline.dev/enforced" not in kube.labels(namespace), what="released")
    stored = kube.core.read_namespace(namespace).metadata
    assert stored.labels.get(PSA) == "baseline"  # back to the admin's level, not removed
    assert "baseline.dev/previous-values" not in (stored.annotations or {})
    owners = {entry.manager for entry in stored.managed_fields if PSA in json.dumps(entry.fields_v1)}
    assert owners == {"kubectl-label"}


def test_writes_come_in_order_allows_before_the_deny_and_out_the_deny_first(
    operator: OperatorProcess,
    cluster: LocalCluster,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    since = time.time()
    namespace, _ = converged(make_namespace, make_baseline, kube, label)
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {"e2e": None}}})
    eventually(lambda: kube.managed(namespace) == set(), what="released")
    time.sleep(1)
    policies = {
        (event["verb"], event["objectRef"]["name"]): event
        for event in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
        if event["objectRef"].get("resource") == "networkpolicies"
        and event["objectRef"].get("namespace") == namespace
    }
    allow_in, deny_in = policies["patch", "baseline-allow-dns"], policies["patch", DENY]
    # The deny's request was sent after the API server had answered the allow's: no moment without DNS.
    assert _at(deny_in["requestReceivedTimestamp"]) >= _at(allow_in["stageTimestamp"])
    deny_out, allow_out = policies["delete", DENY], policies["delete", "baseline-allow-dns"]
    assert _at(allow_out["requestReceivedTimestamp"]) >= _at(deny_out["stageTimestamp"])


def _at(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()
