"""A real Prometheus scrapes the real operator: exposition, metric names, alert rules and dashboard agree.

Prometheus is built from the official module like the control plane. It loads the project's alert rules
with every `for:` shortened to a few seconds, so that the alert a user would get after 10 minutes of drift
shows up here within seconds, through Prometheus's own API.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import FULL_SET, GROUP, PLURAL, VERSION, Cluster, eventually, full_spec

from localcluster import binaries
from localcluster.cluster import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from kubernetes import client
    from support import OperatorProcess

pytestmark = pytest.mark.usefixtures("operator")

REPO_RULES = binaries.REPO_ROOT / "manifests" / "prometheus" / "rules.yaml"
DASHBOARD = binaries.REPO_ROOT / "manifests" / "grafana" / "baseline-operator-dashboard.json"
SHORT_FOR = "3s"


class Prometheus:
    """A Prometheus server on loopback and its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **query: str) -> Any:
        address = f"{self.url}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(address, timeout=5) as response:  # noqa: S310 - http://127.0.0.1 only
            return json.loads(response.read())

    def query(self, expr: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/api/v1/query", query=expr)
        return answer

    def alerts(self, name: str) -> list[dict[str, Any]]:
        alerts = self.get("/api/v1/alerts")["data"]["alerts"]
        return [alert for alert in alerts if alert["labels"]["alertname"] == name]


@pytest.fixture(scope="module")
def prometheus(operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    folder: Path = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(REPO_RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "baseline-operator",
                "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}],
            }
        ],
    }
    (folder / "prometheus.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = binaries.ensure_built(binaries.PROMETHEUS) / "prometheus"
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                server,
                f"--config.file={folder / 'prometheus.yaml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            try:
                return bool(api.query('up{job="baseline-operator"} == 1')["data"]["result"])
            except OSError:
                return False

        eventually(ready, timeout=60, what="Prometheus scrapes the operator")
        yield api
    finally:
        process.terminate()
        process.wait(20)


def test_drift_in_audit_mode_raises_the_drift_alert_through_prometheus(
    prometheus: Prometheus,
    kube: Cluster,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    name = make_baseline(full_spec(label))["metadata"]["name"]
    namespace = make_namespace("prom", {"e2e": label})
    eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name))
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"spec": {"mode": "Audit"}})
    eventually(lambda: kube.ready(name), what="Ready in Audit mode")
    assert not [
        a for a in prometheus.alerts("BaselineDriftPersisting") if a["labels"]["namespace"] == namespace
    ]

    kube.core.delete_namespaced_resource_quota("baseline-quota", namespace)

    def alert(state: str) -> dict[str, Any] | None:
        return next(
            (
                found
                for found in prometheus.alerts("BaselineDriftPersisting")
                if found["labels"]["namespace"] == namespace and found["state"] == state
            ),
            None,
        )

    pending = eventually(lambda: alert("pending"), timeout=20, interval=0.25, what="the alert is pending")
    firing = eventually(lambda: alert("firing"), timeout=20, what="the alert fires")
    assert pending["labels"]["baseline"] == name
    assert (
        firing["annotations"]["summary"]
        == f"Namespace {namespace} has drifted from baseline {name} for 10 minutes"
    )
    assert firing["annotations"]["runbook"] == "docs/runbook.md#baselinedriftpersisting"


def exposed_names(operator: OperatorProcess) -> set[str]:
    """Every sample name the operator's exposition can carry (families listed even without samples)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names: set[str] = set()
    for family in text_string_to_metric_families(operator.metrics()):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def test_every_dashboard_query_uses_real_metric_names_and_evaluates(
    prometheus: Prometheus, operator: OperatorProcess
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    names = exposed_names(operator)
    for expr in exprs:
        used = set(re.findall(r"baseline_operator_[a-z_]+", expr))
        assert used, expr
        assert used <= names, f"{expr}: {sorted(used - names)} not exposed by the operator"
        answer = prometheus.query(expr)
        assert answer["status"] == "success", (expr, answer)


def test_the_alert_rules_use_real_metric_names(operator: OperatorProcess) -> None:
    names = exposed_names(operator)
    for group in yaml.safe_load(REPO_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert set(re.findall(r"baseline_operator_[a-z_]+", rule["expr"])) <= names, rule["alert"]
