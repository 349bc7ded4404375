"""Bad input on a real control plane: accepted by the API server, reported by the operator, never fatal.

Two kinds: a selector that the schema accepts but that can only match protected namespaces, and
SecurityBaselines stored before a CRD upgrade that the current schema would refuse. The second kind is
made for real: the CRD's spec schema is swapped for a permissive one for as long as it takes to write
them, then restored (the session shares the CRD, so the window is short and always closed).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import FULL_SET, GROUP, PLURAL, PSA, VERSION, Cluster, eventually, full_spec, writes

from localcluster.binaries import KUBERNETES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from support import OperatorProcess

    from localcluster import LocalCluster

pytestmark = pytest.mark.usefixtures("operator")

CRD_NAME = f"{PLURAL}.{GROUP}"


def condition_reason(kube: Cluster, name: str, kind: str) -> str | None:
    condition = kube.condition(name, kind)
    return condition["reason"] if condition else None


def operator_writes_in(cluster: LocalCluster, namespaces: set[str], since: float) -> list[str]:
    """The operator's writes since `since` to objects in, or to the Namespace objects of, `namespaces`."""
    found = []
    for write in writes(cluster.audit_log, since=since):
        namespace, _, name = write.rsplit(" ", 1)[1].partition("/")
        if namespace in namespaces or (write.split(" ")[1] == "namespaces" and name in namespaces):
            found.append(write)
    return found


def test_a_selector_matching_only_protected_namespaces_is_reported_and_writes_nothing_there(
    kube: Cluster,
    cluster: LocalCluster,
    make_baseline: Callable[..., dict[str, Any]],
) -> None:
    protected = {"kube-system", "kube-public"}
    since = time.time()
    spec = full_spec("unused")
    spec["namespaceSelector"] = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(protected)}
        ]
    }
    name = make_baseline(spec, prefix="protected")["metadata"]["name"]

    eventually(
        lambda: condition_reason(kube, name, "NamespacesSelected") == "OnlyProtectedNamespaces",
        what="the selection is reported",
    )
    condition = kube.condition(name, "NamespacesSelected")
    assert condition is not None
    assert condition["status"] == "False"
    assert "(kube-public, kube-system)" in condition["message"]
    assert "never manages" in condition["message"]
    # Nothing to reconcile is not a failure: Ready stays True, and the count says 0.
    eventually(lambda: kube.ready(name), what="Ready")
    assert kube.baseline(name)["status"]["matchedNamespaces"] == 0
    kubectl = [str(KUBERNETES.cache_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    wide = subprocess.run(
        [*kubectl, "get", "securitybaseline", name, "--output=wide"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "OnlyProtectedNamespaces" in wide
    time.sleep(1)  # any write the operator would make there has had its chance
    for namespace in protected:
        assert kube.managed(namespace) == set()
        assert PSA not in kube.labels(namespace)
    assert operator_writes_in(cluster, protected, since) == []


# --- SecurityBaselines stored before a CRD upgrade -----------------------------------------------

# name -> (spec, the field path the operator must name)
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "np-string": ({"networkPolicy": "deny-all"}, "spec.networkPolicy"),
    "bad-cidr": (
        {"networkPolicy": {"metadataAPI": {"extraCIDRs": ["169.254.169.254/16"]}}},
        "spec.networkPolicy.metadataAPI.extraCIDRs[0]",
    ),
    "negative-quota": ({"resourceQuota": {"hard": {"pods": "-5"}}}, "spec.resourceQuota.hard[pods]"),
    "unknown-mode": ({"mode": "Enforcing", "resourceQuota": {"hard": {"pods": "5"}}}, "spec.mode"),
    "limits-inverted": (
        {"limitRange": {"min": {"memory": "1Gi"}, "max": {"memory": "512Mi"}}},
        "spec.limitRange.min[memory]",
    ),
    "no-subjects": (
        {"rbac": {"roleBindings": [{"name": "team", "clusterRole": "view"}]}},
        "spec.rbac.roleBindings[0].subjects",
    ),
    "priority-string": ({"priority": "high", "podSecurity": {"enforce": "restricted"}}, "spec.priority"),
}


def read_crd(extensions: client.ApiextensionsV1Api) -> dict[str, Any]:
    response = extensions.read_custom_resource_definition(CRD_NAME, _preload_content=False)
    body: dict[str, Any] = json.loads(response.data)
    return body


def set_spec_schema(extensions: client.ApiextensionsV1Api, schema: dict[str, Any]) -> None:
    """Replace the schema of `.spec` (and only that), retrying if the CRD changed meanwhile."""
    for _ in range(10):
        body = read_crd(extensions)
        body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = schema
        try:
            extensions.replace_custom_resource_definition(CRD_NAME, body)
        except client.ApiException as error:
            if error.status == 409:
                continue
            raise
        return
    pytest.fail("could not replace the CRD: it kept changing")


def refuses(custom: client.CustomObjectsApi, spec: dict[str, Any]) -> bool:
    """Whether the API server, as it serves the CRD right now, refuses a baseline with `spec`."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecurityBaseline",
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }
    try:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, dry_run="All")
    except client.ApiException as error:
        if error.status == 422:
            return True
        raise
    return False


PROBE = {"mode": "Enforcing"}


@contextlib.contextmanager
def schema_from_before_the_upgrade(api: client.ApiClient) -> Iterator[None]:
    """While inside, the CRD takes any spec, as an older, looser CRD did; restored on the way out."""
    extensions = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    original = read_crd(extensions)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    try:
        set_spec_schema(
            extensions,
            {
                "type": "object",
                "description": "Anything goes (a CRD from before the upgrade).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        )
        eventually(lambda: not refuses(custom, PROBE), timeout=30, what="the permissive schema is served")
        yield
    finally:
        set_spec_schema(extensions, original)
        eventually(lambda: refuses(custom, PROBE), timeout=30, what="the original schema is served again")
        assert not refuses(custom, full_spec("probe"))


def test_baselines_stored_before_a_crd_upgrade_are_reported_and_nothing_else_suffers(
    api: client.ApiClient,
    kube: Cluster,
    custom: client.CustomObjectsApi,
    cluster: LocalCluster,
    operator: OperatorProcess,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    bad_namespace = make_namespace("bad", {"e2e": f"{label}-bad"})
    good_namespace = make_namespace("good", {"e2e": label})
    kept_namespace = make_namespace("kept", {"e2e": f"{label}-kept"})
    # Applied while it was valid; the upgrade finds it invalid (below): what it wrote must stay.
    was_valid = make_baseline(full_spec(f"{label}-kept"), prefix="was-valid")["metadata"]["name"]
    eventually(lambda: kube.managed(kept_namespace) == FULL_SET, what="the once-valid baseline applied")
    eventually(lambda: kube.ready(was_valid), what="the once-valid baseline Ready")
    log_offset = operator.log.stat().st_size
    since = time.time()

    selector = {"matchLabels": {"e2e": f"{label}-bad"}}
    with schema_from_before_the_upgrade(api):
        malformed = {
            case: make_baseline({"namespaceSelector": selector, **spec}, prefix=case)["metadata"]["name"]
            for case, (spec, _) in MALFORMED.items()
        }
        good = make_baseline(full_spec(label), prefix="good")["metadata"]["name"]
        custom.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, was_valid, {"spec": {"resourceQuota": {"hard": {"pods": "-1"}}}}
        )
    expected = {name: field for case, name in malformed.items() for field in [MALFORMED[case][1]]}
    expected[was_valid] = "spec.resourceQuota.hard[pods]"

    # An edit that leaves the bad field as it is passes the restored schema (validation ratchets), and
    # its new generation makes the operator write each status again, now under the restored schema.
    for name in expected:
        custom.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, {"spec": {"excludeNamespaces": ["x"]}}
        )

    def reported(name: str) -> bool:
        baseline = kube.baseline(name)
        status = baseline.get("status", {})
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        return bool(
            ready
            and ready["reason"] == "InvalidSpec"
            and ready["observedGeneration"] == baseline["metadata"]["generation"]
            and status.get("observedGeneration") == baseline["metadata"]["generation"]
        )

    for name, field in expected.items():
        eventually(lambda name=name: reported(name), what=f"{name} reported as invalid")
        ready = kube.condition(name, "Ready")
        assert ready is not None
        assert ready["status"] == "False"
        assert ready["message"].startswith(f"{field}: "), ready["message"]
        for kind in ("Drifted", "Conflict", "NamespacesSelected"):
            assert condition_reason(kube, name, kind) == "InvalidSpec"
        assert kube.baseline(name)["status"]["matchedNamespaces"] == 0

    # The valid baseline written in the same window is applied as usual.
    eventually(lambda: kube.managed(good_namespace) == FULL_SET, what="the valid baseline applied")
    eventually(lambda: kube.ready(good), what="the valid baseline Ready")
    # Nothing written where only malformed baselines point; nothing removed where one used to apply.
    time.sleep(1)
    assert kube.managed(bad_namespace) == set()
    assert PSA not in kube.labels(bad_namespace)
    assert kube.automount(bad_namespace) is None
    assert operator_writes_in(cluster, {bad_namespace}, since) == []
    assert kube.managed(kept_namespace) == FULL_SET
    assert kube.labels(kept_namespace).get(PSA) == "restricted"
    assert kube.automount(kept_namespace) is False
    assert operator_writes_in(cluster, {kept_namespace}, since) == []
    # And the operator took all of it in its stride: alive, no crash, every status write accepted.
    assert operator.alive()
    with operator.log.open("rb") as log:
        log.seek(log_offset)
        new_lines = log.read().decode(errors="replace")
    assert "Traceback" not in new_lines
    assert "not written" not in new_lines
