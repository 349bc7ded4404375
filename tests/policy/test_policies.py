"""The Rego policies in policy/, run by the real conftest (built from the official Go module, cached).

They hold the operator's own manifests to the rules it asks of tenants, and check that what it renders for
the sample baselines breaks none of them. A negative control proves the checks can fail. A tier of its own,
like the alert rules: no cluster, but Go-built tools (minutes to build the first time on a machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.binaries import CONFTEST, KUBERNETES, ensure_built

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policy"
MANIFESTS = REPO / "manifests"
SAMPLES = MANIFESTS / "samples"
INSECURE = Path(__file__).with_name("fixtures") / "insecure-deployment.yaml"
OPERATOR = Path(sys.executable).with_name("baseline-operator")

EVERY_RULE = {
    "run-as-non-root",
    "run-as-user",
    "run-as-group",
    "fs-group",
    "read-only-root-filesystem",
    "no-privilege-escalation",
    "not-privileged",
    "drop-all-capabilities",
    "no-added-capabilities",
    "seccomp-profile",
    "image-digest",
    "image-not-latest",
    "image-pull-always",
    "resources",
    "no-host-namespaces",
    "no-host-path",
    "rbac-no-wildcard",
    "rbac-no-escalate-impersonate",
    "rbac-no-secrets",
    "rbac-bind-resource-names",
    "rbac-no-wildcard-non-resource-urls",
}
"""Every rule name the policies report; a message reads `<Kind>/<name>: <where>: <rule>: <explanation>`."""


@pytest.fixture(scope="module")
def conftest_binary() -> Path:
    return ensure_built(CONFTEST) / "conftest"


def run(*command: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], input=stdin, capture_output=True, text=True, check=False, cwd=REPO
    )


def conftest_failures(conftest: Path, documents: str) -> list[str]:
    """The messages of every denial for a YAML stream, read from stdin (`-`)."""
    result = run(
        conftest, "test", "--policy", POLICY, "--parser", "yaml", "--output", "json", "-", stdin=documents
    )
    # Exit code 1 means "denials found"; anything else but 0 is conftest failing to run.
    assert result.returncode in {0, 1}, result.stdout + result.stderr
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return [failure["msg"] for report in reports for failure in report.get("failures") or []]


def rule_of(message: str) -> str:
    return message.split(": ")[2]


def test_the_rego_unit_tests_pass(conftest_binary: Path) -> None:
    result = run(conftest_binary, "verify", "--policy", POLICY, "--strict", "--output", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(outcomes) >= 2 * len(EVERY_RULE), "every rule needs a passing and a failing test"
    assert all(outcome.get("successes") == 1 for outcome in outcomes)


def test_the_operator_manifests_break_no_rule(conftest_binary: Path) -> None:
    if not (MANIFESTS / "kustomization.yaml").exists():
        pytest.skip("manifests/kustomization.yaml does not exist yet: nothing to render with kustomize")
    kubectl = ensure_built(KUBERNETES) / "kubectl"
    rendered = run(kubectl, "kustomize", MANIFESTS)
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"Deployment", "ClusterRole", "Role"} <= kinds, "the policies would have nothing to check"
    assert conftest_failures(conftest_binary, rendered.stdout) == []


def test_the_insecure_fixture_breaks_every_rule(conftest_binary: Path) -> None:
    failures = conftest_failures(conftest_binary, INSECURE.read_text())
    assert {rule_of(message) for message in failures} == EVERY_RULE
    # The messages name the object, where in it, and the rule: a reader can go straight to the line.
    deployment, container, role = "Deployment/insecure", 'containers[0] "app"', "ClusterRole/insecure"
    expected = {
        ": ".join(parts)
        for parts in (
            (
                deployment,
                container,
                "run-as-non-root",
                "runAsNonRoot must be true (container or pod securityContext)",
            ),
            (deployment, "pod securityContext", "run-as-user", "runAsUser is 0; it must be above 10000"),
            (deployment, container, "image-not-latest", 'image "nginx:latest" must not use the latest tag'),
            (deployment, container, "not-privileged", "securityContext.privileged must not be true"),
            (deployment, "pod spec", "no-host-namespaces", "hostNetwork must not be true"),
            (
                deployment,
                'volumes[0] "docker"',
                "no-host-path",
                "hostPath volumes are not allowed (path /var/run/docker.sock)",
            ),
            (role, "rules[0]", "rbac-no-wildcard", 'verbs must not contain "*"'),
            (role, "rules[1]", "rbac-no-secrets", 'resource "secrets" grants access to Secrets'),
            (
                role,
                "rules[2]",
                "rbac-bind-resource-names",
                'verb "bind" needs resourceNames listing the roles that may be bound',
            ),
        )
    }
    assert expected <= set(failures)


def demo_namespaces() -> list[tuple[str, dict[str, str]]]:
    documents = yaml.safe_load_all((SAMPLES / "demo-namespaces.yaml").read_text())
    return [
        (doc["metadata"]["name"], doc["metadata"].get("labels") or {})
        for doc in documents
        if doc and doc["kind"] == "Namespace"
    ]


def sample_baselines() -> list[Path]:
    return sorted(
        path
        for path in SAMPLES.glob("*.yaml")
        if any(doc and doc.get("kind") == "SecurityBaseline" for doc in yaml.safe_load_all(path.read_text()))
    )


def test_what_the_operator_renders_for_the_samples_breaks_no_rule(conftest_binary: Path) -> None:
    rendered: dict[str, list[dict[str, Any]]] = {}
    for sample in sample_baselines():
        for namespace, labels in demo_namespaces():
            label_arg = ",".join(f"{key}={value}" for key, value in labels.items())
            result = run(OPERATOR, "render", "-f", sample, "--namespace", namespace, "--labels", label_arg)
            assert result.returncode == 0, result.stderr
            objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
            rendered.setdefault(sample.name, []).extend(objects)
    assert rendered, "no SecurityBaseline among the samples"
    for sample, objects in rendered.items():
        assert objects, f"{sample} selects none of the demo namespaces: the check would be empty"
    stream = yaml.safe_dump_all([obj for objects in rendered.values() for obj in objects])
    assert conftest_failures(conftest_binary, stream) == []
