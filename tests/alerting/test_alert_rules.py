"""The alert rules, tested by the real promtool (built from the official Prometheus module, cached).

A tier of its own: no cluster, but a Go-built tool (minutes to build the first time on a machine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from localcluster import binaries

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "prometheus" / "rules.yaml"


def promtool() -> Path:
    return binaries.ensure_built(binaries.PROMETHEUS) / "promtool"


def test_the_rules_file_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", RULES], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_when_it_should_and_not_otherwise() -> None:
    tests = Path(__file__).with_name("rules_test.yaml")
    result = subprocess.run(
        [promtool(), "test", "rules", tests], capture_output=True, text=True, check=False, cwd=tests.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load(tests.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert tested == alerts
    for test in yaml.safe_load(tests.read_text())["tests"]:
        expectations = [bool(case["exp_alerts"]) for case in test["alert_rule_test"]]
        assert True in expectations, f"{test['name']}: no firing case"
        assert False in expectations, f"{test['name']}: no silent case"


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            annotations = rule["annotations"]
            assert annotations["summary"]
            assert "{{ $labels." in annotations["description"] or rule["alert"] == "BaselineOperatorAbsent"
            anchor = annotations["runbook"].partition("#")[2]
            assert f"## {rule['alert']}\n" in runbook
            assert anchor == rule["alert"].lower()


def test_the_prometheus_rule_manifest_is_generated_from_the_rules_file() -> None:
    result = subprocess.run(
        [sys.executable, REPO / "hack" / "gen-prometheusrule.py", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
