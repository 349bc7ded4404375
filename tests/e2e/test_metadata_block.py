"""The metadata block on the NetworkPolicy path: it moves off the pods a user's egress policy restricts.

On the real control plane, with the real operator: the block's NetworkPolicies follow the namespace's own
egress policies as they come and go, and a policy of the user's that opens a metadata API is reported.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client, watch
from support import MANAGED, Cluster, eventually

if TYPE_CHECKING:
    from collections.abc import Callable

    from support import OperatorProcess

OPEN_EGRESS = {
    "networkPolicy": {"defaultDeny": {"ingress": True, "egress": False}, "metadataAPI": {"block": True}},
}


def blocks(kube: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """The block's policies: name -> podSelector."""
    found = kube.networking.list_namespaced_network_policy(namespace, label_selector=MANAGED).items
    return {
        policy.metadata.name: client.ApiClient().sanitize_for_serialization(policy.spec.pod_selector)
        for policy in found
        if policy.metadata.name.startswith("baseline-block-metadata")
    }


def user_policy(name: str, app: str, egress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"], "egress": egress},
    }


def test_a_users_new_egress_policy_takes_its_pods_out_of_the_block_and_the_delay_is_measured(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("mdblock", {"e2e": label})
    make_baseline({"namespaceSelector": {"matchLabels": {"e2e": label}}, **OPEN_EGRESS})
    eventually(
        lambda: blocks(kube, namespace) == {"baseline-block-metadata": {}}, what="the block for every pod"
    )
    events: list[tuple[float, str, str]] = []
    stream = watch.Watch()

    def record() -> None:
        with contextlib.suppress(Exception):  # a stopped watch's connection may end any way it likes
            for event in stream.stream(
                kube.networking.list_namespaced_network_policy,
                namespace,
                timeout_seconds=60,
                _request_timeout=70,
            ):
                events.append((time.monotonic(), event["type"], event["object"].metadata.name))  # noqa: PERF401

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    time.sleep(0.5)
    kube.networking.create_namespaced_network_policy(
        namespace,
        user_policy(
            "db-egress", "db", [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]}]
        ),
    )
    expected = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}
    eventually(
        lambda: list(blocks(kube, namespace).values()) == [expected], what="the block off the database's pods"
    )
    eventually(
        lambda: any(kind == "DELETED" and name == "baseline-block-metadata" for _, kind, name in events),
        what="the watch saw the old block go",
    )
    stream.stop()
    created = next(at for at, kind, name in events if kind == "ADDED" and name == "db-egress")
    replaced = next(
        at for at, kind, name in events if kind == "DELETED" and name == "baseline-block-metadata"
    )
    print(f"the old block selected the new policy's pods for {replaced - created:.3f} s")  # noqa: T201
    assert replaced - created < 5.0
    # The user's policy goes: the block selects every pod again.
    kube.networking.delete_namespaced_network_policy("db-egress", namespace)
    eventually(
        lambda: blocks(kube, namespace) == {"baseline-block-metadata": {}},
        what="the block for every pod again",
    )


def test_a_users_policy_that_opens_the_metadata_api_is_reported_in_status_and_metrics(
    operator: OperatorProcess,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("mdaudit", {"e2e": label})
    name = make_baseline({"namespaceSelector": {"matchLabels": {"e2e": label}}, **OPEN_EGRESS})["metadata"][
        "name"
    ]
    eventually(lambda: kube.ready(name), what="ready")
    kube.networking.create_namespaced_network_policy(
        namespace, user_policy("web-out", "web", [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    )

    def reported() -> list[dict[str, Any]]:
        return [
            p for p in kube.problems(name) if p["reason"] == "MetadataReachable" and p["name"] == "web-out"
        ]

    [problem] = eventually(reported, what="the opening reported")
    assert "169.254.169.254/32" in problem["message"]
    series = f'baseline_operator_metadata_reachable{{baseline="{name}",namespace="{namespace}"}} 1.0'
    eventually(lambda: series in operator.metrics(), what="the gauge")
    # Fixed by its owners (the metadata addresses excepted): the report and the series go.
    kube.networking.patch_namespaced_network_policy(
        "web-out",
        namespace,
        {
            "spec": {
                "egress": [
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "0.0.0.0/0",
                                    "except": ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"],
                                }
                            }
                        ]
                    }
                ]
            }
        },
    )
    eventually(lambda: not reported(), what="the report gone")
    eventually(lambda: series not in operator.metrics(), what="the series gone")
