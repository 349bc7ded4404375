"""Drift repair latency on the local control plane: one deletion at a time, then a storm.

Starts its own control plane and operator, puts a baseline on N namespaces, then
1. deletes one managed NetworkPolicy at a time and times delete-returned -> re-created (seen by a
   watch, so the figure is what any client observes);
2. deletes every managed object of `storm / 5` namespaces at once and times until all are back.
Writes per repaired object come from the API server's audit log.

    .venv/bin/python bench/drift_repair.py [--namespaces 40] [--singles 50] [--storm 200]

Not a test: figures depend on the machine. It prints JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

from localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
MANAGED = "app.kubernetes.io/managed-by=baseline-operator"
OPERATOR_USER = "baseline-operator-bench"
KINDS_PER_NAMESPACE = 5  # two NetworkPolicies, a LimitRange, a ResourceQuota, a RoleBinding
BASELINE = {
    "apiVersion": "baseline.dev/v1alpha1",
    "kind": "SecurityBaseline",
    "metadata": {"name": "bench-drift"},
    "spec": {
        "namespaceSelector": {"matchLabels": {"bench": "drift"}},
        "networkPolicy": {"defaultDeny": {"ingress": True, "egress": True}, "allowDNS": True},
        "limitRange": {"default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}},
        "resourceQuota": {"hard": {"pods": "20"}},
        "rbac": {
            "roleBindings": [
                {
                    "name": "team-view",
                    "clusterRole": "view",
                    "subjects": [{"kind": "Group", "name": "t-${namespace}"}],
                }
            ]
        },
        "podSecurity": {"enforce": "restricted"},
    },
}


class Arrivals:
    """Watches managed objects of every kind and notes when each (kind, namespace, name) is ADDED."""

    def __init__(self, api: client.ApiClient) -> None:
        self._lock = threading.Lock()
        self._added: dict[tuple[str, str, str], float] = {}
        self._watches: list[watch.Watch] = []
        lists = [
            ("NetworkPolicy", client.NetworkingV1Api(api).list_network_policy_for_all_namespaces),
            ("LimitRange", client.CoreV1Api(api).list_limit_range_for_all_namespaces),
            ("ResourceQuota", client.CoreV1Api(api).list_resource_quota_for_all_namespaces),
            ("RoleBinding", client.RbacAuthorizationV1Api(api).list_role_binding_for_all_namespaces),
        ]
        for kind, lister in lists:
            threading.Thread(target=self._follow, args=(kind, lister), daemon=True).start()

    def _follow(self, kind: str, lister: Any) -> None:
        stream = watch.Watch()
        self._watches.append(stream)
        version = lister(label_selector=MANAGED).metadata.resource_version
        for event in stream.stream(lister, label_selector=MANAGED, resource_version=version):
            if event["type"] == "ADDED":
                meta = event["object"].metadata
                with self._lock:
                    self._added[(kind, meta.namespace, meta.name)] = time.monotonic()

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._added.pop(key, None)

    def arrived(self, key: tuple[str, str, str]) -> float | None:
        with self._lock:
            return self._added.get(key)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise TimeoutError(what)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespaces", type=int, default=40)
    parser.add_argument("--singles", type=int, default=50)
    parser.add_argument("--storm", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        state = Path(scratch)
        cluster = LocalCluster(state / "cluster")
        cluster.start()
        operator: subprocess.Popen[bytes] | None = None
        try:
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            operator_kubeconfig = cluster.write_kubeconfig(
                state / "operator.kubeconfig", user=OPERATOR_USER, groups=("system:masters",)
            )
            extensions = client.ApiextensionsV1Api(api)
            extensions.create_custom_resource_definition(
                yaml.safe_load((REPO / "crds" / "securitybaseline.yaml").read_text())
            )
            time.sleep(2)
            core = client.CoreV1Api(api)
            networking = client.NetworkingV1Api(api)
            names = [f"drift-{index:04d}" for index in range(args.namespaces)]
            for name in names:
                core.create_namespace({"metadata": {"name": name, "labels": {"bench": "drift"}}})
            client.CustomObjectsApi(api).create_cluster_custom_object(
                "baseline.dev", "v1alpha1", "securitybaselines", BASELINE
            )
            with (state / "operator.log").open("wb") as log:
                operator = subprocess.Popen(
                    [sys.executable, "-m", "baseline_operator", "run", "--liveness", ""],
                    env={**os.environ, "KUBECONFIG": str(operator_kubeconfig)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            rbac = client.RbacAuthorizationV1Api(api)

            def converged() -> bool:
                policies = networking.list_network_policy_for_all_namespaces(label_selector=MANAGED).items
                bindings = rbac.list_role_binding_for_all_namespaces(label_selector=MANAGED).items
                return len(policies) == 2 * len(names) and len(bindings) == len(names)

            wait_for(converged, 120, "the baseline converges")
            time.sleep(3)
            arrivals = Arrivals(api)
            time.sleep(1)

            singles: list[float] = []
            since = time.time()
            for index in range(args.singles):
                namespace = names[index % len(names)]
                key = ("NetworkPolicy", namespace, "baseline-default-deny")
                arrivals.forget(key)
                networking.delete_namespaced_network_policy("baseline-default-deny", namespace)
                deleted = time.monotonic()
                back = wait_for(lambda key=key: arrivals.arrived(key), 30, f"{key} re-created")
                singles.append(back - deleted)
                time.sleep(0.2)
            time.sleep(2)
            single_writes = [
                line
                for line in _operator_writes(cluster, since)
                if "networkpolicies" in line and "create events" not in line
            ]

            storm_namespaces = names[: max(1, args.storm // KINDS_PER_NAMESPACE)]
            keys = [
                (kind, namespace, name)
                for namespace in storm_namespaces
                for kind, name in (
                    ("NetworkPolicy", "baseline-default-deny"),
                    ("NetworkPolicy", "baseline-allow-dns"),
                    ("LimitRange", "baseline-limits"),
                    ("ResourceQuota", "baseline-quota"),
                    ("RoleBinding", "baseline-team-view"),
                )
            ]
            for key in keys:
                arrivals.forget(key)

            def delete_all(namespace: str) -> None:
                networking.delete_collection_namespaced_network_policy(namespace, label_selector=MANAGED)
                core.delete_collection_namespaced_limit_range(namespace, label_selector=MANAGED)
                core.delete_collection_namespaced_resource_quota(namespace, label_selector=MANAGED)
                rbac.delete_collection_namespaced_role_binding(namespace, label_selector=MANAGED)

            since = time.time()
            storm_started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(delete_all, storm_namespaces))
            storm_deleted = time.monotonic()
            wait_for(lambda: all(arrivals.arrived(key) for key in keys), 120, "the storm is repaired")
            storm_done = max(arrivals.arrived(key) or 0.0 for key in keys)
            time.sleep(2)
            storm_writes = [
                line
                for line in _operator_writes(cluster, since)
                if line.split()[1] in {"networkpolicies", "limitranges", "resourcequotas", "rolebindings"}
            ]
            event_writes = [
                line for line in _operator_writes(cluster, since) if line.startswith("create events")
            ]
            repair_latencies = [(arrivals.arrived(key) or 0.0) - storm_started for key in keys]
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(20)
            cluster.stop()

    report = {
        "single_deletions": {
            "count": len(singles),
            "p50_ms": round(1000 * statistics.median(singles), 1),
            "p99_ms": round(1000 * percentile(singles, 0.99), 1),
            "max_ms": round(1000 * max(singles), 1),
            "operator_object_writes": len(single_writes),
            "writes_per_repair": round(len(single_writes) / len(singles), 2),
        },
        "storm": {
            "objects": len(keys),
            "deleting_took_s": round(storm_deleted - storm_started, 2),
            "all_repaired_after_s": round(storm_done - storm_started, 2),
            "p50_ms": round(1000 * statistics.median(repair_latencies), 1),
            "p99_ms": round(1000 * percentile(repair_latencies, 0.99), 1),
            "operator_object_writes": len(storm_writes),
            "writes_per_repair": round(len(storm_writes) / len(keys), 2),
            "events_posted": len(event_writes),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


def _operator_writes(cluster: LocalCluster, since: float) -> list[str]:
    import datetime as dt  # noqa: PLC0415

    found = []
    with cluster.audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            if event.get("verb") not in {"create", "update", "patch", "delete"}:
                continue
            if dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp() < since:
                continue
            ref = event["objectRef"]
            found.append(
                f"{event['verb']} {ref.get('resource')} {ref.get('namespace', '')}/{ref.get('name', '')}"
            )
    return found


if __name__ == "__main__":
    sys.exit(main())
