"""The operator's /metrics, scraped from the real process while it works on a real control plane."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import FULL_SET, GROUP, PLURAL, VERSION, Cluster, eventually, full_spec

if TYPE_CHECKING:
    from collections.abc import Callable

    from kubernetes import client
    from support import OperatorProcess

pytestmark = pytest.mark.usefixtures("operator")


def samples(
    operator: OperatorProcess, baseline: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if baseline is None or sample.labels.get("baseline") == baseline:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def sample(operator: OperatorProcess, name: str, **labels: str) -> float | None:
    return samples(operator).get((name, frozenset(labels.items())))


def test_drift_and_state_show_in_metrics_and_go_away_with_the_baseline(
    kube: Cluster,
    operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    name = make_baseline(full_spec(label))["metadata"]["name"]
    namespace = make_namespace("metrics", {"e2e": label})
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name))
    eventually(
        lambda: sample(operator, "baseline_operator_namespaces", baseline=name, state="compliant") == 1,
        what="one compliant namespace",
    )
    assert sample(operator, "baseline_operator_baseline_ready", baseline=name) == 1
    ready_latency = sample(operator, "baseline_operator_namespace_ready_latency_seconds_count")
    assert ready_latency is not None
    assert ready_latency >= 1

    kube.networking.delete_namespaced_network_policy("baseline-default-deny", namespace)
    eventually(
        lambda: (
            sample(operator, "baseline_operator_drift_repairs_total", baseline=name, kind="NetworkPolicy")
            == 1
        ),
        what="the repair is counted",
    )
    assert (
        sample(
            operator,
            "baseline_operator_drift_detected_total",
            baseline=name,
            kind="NetworkPolicy",
            reason="Missing",
        )
        == 1
    )
    assert (sample(operator, "baseline_operator_drift_repair_latency_seconds_count") or 0) >= 1
    assert (sample(operator, "baseline_operator_api_requests_total", verb="PATCH", code="200") or 0) > 0

    # Audit mode: an unrepaired drift is a current state, by namespace and kind.
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"spec": {"mode": "Audit"}})
    eventually(lambda: kube.ready(name))
    kube.core.delete_namespaced_limit_range("baseline-limits", namespace)
    eventually(
        lambda: (
            sample(
                operator,
                "baseline_operator_drifted_objects",
                baseline=name,
                namespace=namespace,
                kind="LimitRange",
            )
            == 1
        ),
        what="the drifted object is a gauge",
    )
    eventually(lambda: sample(operator, "baseline_operator_namespaces", baseline=name, state="drifted") == 1)

    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    eventually(lambda: samples(operator, baseline=name) == {}, what="every series of the baseline removed")
