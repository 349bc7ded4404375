"""kube-score, an independent second opinion on the operator's manifests, run next to the Rego policies.

Its checks are written by others, from another angle, so they catch what our own rules never thought of.
It scores what is applied, the kustomize output, and must find nothing: no CRITICAL, no WARNING. A
deliberate exception sits on the object it excuses, as a `kube-score/ignore` annotation under a YAML comment
giving the reason, and is listed in EXCEPTIONS below, so that a new one is a reviewed change and a stale one
fails. A negative control proves the check can fail. Built from the official Go module, cached.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.binaries import KUBE_SCORE, KUBERNETES, ensure_built

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
INSECURE = Path(__file__).with_name("fixtures") / "insecure-deployment.yaml"

OPTIONAL_CHECKS = (
    # Every container under a seccomp profile; kube-score reports a missing one as a WARNING only.
    "container-seccomp-profile",
    # Container ports named uniquely and validly: the Service and NetworkPolicy refer to `metrics` by name.
    "container-ports-check",
)
"""The optional checks worth having. Left off: the four `*-requests-equal(s)-limit(s)` checks, which ask for
Guaranteed QoS; the operator's requests and limits are deliberately apart (measured by `make bench`: it idles
far below the memory limit it needs at 1000 namespaces), and limits equal to requests would waste the
difference on every node. No `--ignore-test` either: every default check applies to what we ship or skips
itself (the HorizontalPodAutoscaler checks, say, skip a Deployment that no autoscaler targets)."""

CHECKS_THAT_MUST_RUN = {
    *OPTIONAL_CHECKS,
    "container-security-context-user-group-id",
    "container-security-context-privileged",
    "container-security-context-readonlyrootfilesystem",
    "container-resources",
    "container-ephemeral-storage-request-and-limit",
    "container-image-tag",
    "container-image-pull-policy",
    "pod-networkpolicy",
    "pod-probes",
    "deployment-has-poddisruptionbudget",
    "deployment-has-host-podantiaffinity",
}
"""Graded, not skipped, on the Deployment: a misspelt flag or a check that skips itself passes silently."""

EXCEPTIONS: set[tuple[str, str]] = set()
"""(object, check) pairs excused by a `kube-score/ignore` annotation; the reasons are next to them.

None today: liveness (/healthz) and readiness (/readyz) ask different questions, the operator serves both.
"""

CRITICAL, WARNING = 1, 5
"""kube-score's grades: 1 CRITICAL, 5 WARNING, 7 almost OK (shown as OK), 10 OK."""


def kube_score_flags() -> list[str]:
    # The stable-version check judges apiVersions against this release (kube-score's default is v1.18):
    # the Kubernetes the e2e tests run on.
    major_minor = ".".join(KUBERNETES.version().split(".")[:2])
    return [
        f"--kubernetes-version={major_minor}",
        *(f"--enable-optional-test={check}" for check in OPTIONAL_CHECKS),
        "--output-format=json",
    ]


@pytest.fixture(scope="module")
def kube_score() -> Path:
    return ensure_built(KUBE_SCORE) / "kube-score"


@pytest.fixture(scope="module")
def rendered() -> str:
    kubectl = ensure_built(KUBERNETES) / "kubectl"
    result = run(kubectl, "kustomize", MANIFESTS)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run(*command: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], input=stdin, capture_output=True, text=True, check=False, cwd=REPO
    )


def score(kube_score: Path, documents: str, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    """kube-score's exit code and its scored objects, for a YAML stream read from stdin (`-`)."""
    result = run(kube_score, "score", *kube_score_flags(), *extra, "-", stdin=documents)
    # 0: nothing at or below the failing grade; 1: something is. Anything else is kube-score failing to run.
    assert result.returncode in {0, 1}, result.stdout + result.stderr
    objects: list[dict[str, Any]] = json.loads(result.stdout)
    return result.returncode, objects


def object_ref(scored: dict[str, Any]) -> str:
    return f"{scored['type_meta']['kind']}/{scored['object_meta']['name']}"


def findings(objects: list[dict[str, Any]]) -> list[str]:
    """Every CRITICAL and WARNING, as `<Kind>/<name>: <check>: <grade>: (<container>) <what>`."""
    found = []
    for scored in objects:
        for check in scored.get("checks") or []:
            if check["skipped"] or check["grade"] > WARNING:
                continue
            grade = "CRITICAL" if check["grade"] <= CRITICAL else "WARNING"
            comments = check.get("comments") or [{"path": "", "summary": check["check"]["name"]}]
            found += [
                f"{object_ref(scored)}: {check['check']['id']}: {grade}: "
                + (f"({comment['path']}) " if comment["path"] else "")
                + comment["summary"]
                for comment in comments
            ]
    return found


def check_of(finding: str) -> tuple[str, str]:
    ref, check = finding.split(": ")[:2]
    return ref, check


def test_kube_score_finds_nothing_in_the_operator_manifests(kube_score: Path, rendered: str) -> None:
    exit_code, objects = score(kube_score, rendered, "--exit-one-on-warning")
    assert findings(objects) == []
    assert exit_code == 0


def test_the_checks_that_matter_ran_on_the_deployment(kube_score: Path, rendered: str) -> None:
    _, objects = score(kube_score, rendered)
    scored = {object_ref(obj): obj for obj in objects}
    assert {
        "Deployment/baseline-operator",
        "Service/baseline-operator-metrics",
        "NetworkPolicy/baseline-operator",
        "NetworkPolicy/default-deny",
        "PodDisruptionBudget/baseline-operator",
    } <= set(scored), "kube-score would have nothing to check"
    graded = {
        check["check"]["id"]
        for check in scored["Deployment/baseline-operator"]["checks"]
        if not check["skipped"]
    }
    assert graded >= CHECKS_THAT_MUST_RUN, f"skipped or unknown: {sorted(CHECKS_THAT_MUST_RUN - graded)}"


def test_every_exception_is_listed_explained_and_still_needed(kube_score: Path, rendered: str) -> None:
    annotated = {
        (f"{doc['kind']}/{doc['metadata']['name']}", check.strip())
        for doc in yaml.safe_load_all(rendered)
        if doc
        for annotations in (
            doc["metadata"].get("annotations") or {},
            ((doc.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {},
        )
        for check in (annotations.get("kube-score/ignore") or "").split(",")
        if check.strip()
    }
    assert annotated == EXCEPTIONS
    # With the annotations switched off, exactly the excused checks fail: none is stale, none hides another.
    _, objects = score(kube_score, rendered, "--disable-ignore-checks-annotations")
    assert {check_of(finding) for finding in findings(objects)} == EXCEPTIONS
    # Each annotation is under a comment that gives its reason.
    for manifest in sorted(MANIFESTS.glob("*.yaml")):
        lines = manifest.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("kube-score/ignore:"):
                assert number > 0, f"{manifest.name}:{number + 1}: kube-score/ignore without a reason"
                assert lines[number - 1].strip().startswith("#"), (
                    f"{manifest.name}:{number + 1}: kube-score/ignore without a reason"
                )


def test_kube_score_fails_the_insecure_fixture(kube_score: Path) -> None:
    exit_code, objects = score(kube_score, INSECURE.read_text())
    assert exit_code == 1
    found = findings(objects)
    graded = {
        tuple(finding.split(": ")[1:3]) for finding in found if finding.startswith("Deployment/insecure: ")
    }
    critical = {
        "container-security-context-privileged",
        "container-security-context-user-group-id",
        "container-security-context-readonlyrootfilesystem",
        "container-image-tag",
        "container-image-pull-policy",
        "container-resources",
        "container-ephemeral-storage-request-and-limit",
        "pod-networkpolicy",
    }
    assert graded >= {(check, "CRITICAL") for check in critical} | {("container-seccomp-profile", "WARNING")}
    # The messages name the object, the check and the container: a reader can go straight to the line.
    privileged = "container-security-context-privileged: CRITICAL: (app) The container is privileged"
    assert f"Deployment/insecure: {privileged}" in found
