"""The SecurityBaseline CRD on a real API server: what it refuses, what it accepts, and what it fills in.

Every file in tests/baselines/invalid must be refused, for exactly one field, with a message containing
its `# expect:` line; every file in tests/baselines/valid must be accepted as written, plus defaults.
Requests ask for strict field validation, as kubectl create and kubectl apply do since Kubernetes 1.27:
that is what turns a misspelt field into an error instead of a field silently pruned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import yaml
from kubernetes import client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "securitybaseline.yaml"
INVALID = sorted((REPO_ROOT / "tests" / "baselines" / "invalid").glob("*.yaml"))
VALID = sorted((REPO_ROOT / "tests" / "baselines" / "valid").glob("*.yaml"))
CRD_NAME = "securitybaselines.baseline.dev"
GROUP, VERSION, PLURAL = "baseline.dev", "v1alpha1", "securitybaselines"
# The API server's extra cause when schema errors stop it from running the CEL rules; it names no field.
NO_FIELD = "<nil>"


def expectation(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# expect: "), f"{path.name} does not start with '# expect: '"
    return first_line.removeprefix("# expect: ")


def load(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    return body


def failure(error: client.ApiException) -> dict[str, Any]:
    """The Status object the API server answered a refused request with."""
    return cast("dict[str, Any]", json.loads(error.body or "{}"))


def get_json(api: client.ApiClient, path: str, accept: str = "application/json") -> tuple[int, Any]:
    """GET a path the typed API classes do not cover; (HTTP status, decoded body)."""
    response: Any = api.call_api("GET", f"{api.configuration.host}{path}", header_params={"Accept": accept})
    response.read()
    status = int(response.status)
    return status, json.loads(response.data) if status == 200 else None


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def contains(whole: Any, part: Any) -> bool:
    """Whether `part` is in `whole`: every key of every mapping in `part`, with equal values."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(whole) == len(part)
            and all(contains(w, p) for w, p in zip(whole, part, strict=True))
        )
    return bool(whole == part)


class Baselines:
    """Creates SecurityBaselines the way kubectl does, and deletes whatever it stored.

    Baselines that select namespaces and set sections are only dry-run (validated and defaulted, exactly
    as a create, but never stored): should an operator be running in this session, it never acts on them.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.created: list[str] = []

    def create(
        self, body: dict[str, Any], *, field_validation: str | None = "Strict", dry_run: bool = False
    ) -> dict[str, Any]:
        stored = cast(
            "dict[str, Any]",
            self.custom.create_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                body,
                field_validation=field_validation,
                dry_run="All" if dry_run else None,
            ),
        )
        if not dry_run:
            self.created.append(stored["metadata"]["name"])
        return stored

    def get(self, name: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))

    def delete_created(self) -> None:
        for name in self.created:
            try:
                self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            except client.ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture(scope="module")
def installed_crd(api: client.ApiClient) -> dict[str, Any]:
    """The CRD from crds/, installed (or updated to this version) and serving requests.

    It stays installed after the module: the CRD is cluster-wide state like the cluster itself, and
    deleting it would race with later test modules installing it again.
    """
    # The client takes a plain mapping where its signature names the model class.
    manifest: Any = yaml.safe_load(CRD_FILE.read_text())
    extensions = client.ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(manifest)
    except client.ApiException as error:
        if error.status != 409:
            raise
        current: Any = extensions.read_custom_resource_definition(CRD_NAME)
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(CRD_NAME, manifest)

    def established() -> dict[str, Any] | None:
        installed = cast(
            "dict[str, Any]",
            api.sanitize_for_serialization(extensions.read_custom_resource_definition(CRD_NAME)),  # type: ignore[no-untyped-call]
        )
        conditions = {c["type"]: c["status"] for c in installed.get("status", {}).get("conditions", [])}
        ready = conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
        return installed if ready else None

    installed: dict[str, Any] = wait_for(established, "the CRD becomes Established")
    custom = client.CustomObjectsApi(api)
    probe = load(REPO_ROOT / "tests" / "baselines" / "valid" / "minimal.yaml")

    def served() -> bool:
        try:
            custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, probe, dry_run="All"
            )  # stores nothing
        except client.ApiException as error:
            if error.status == 404:  # Established, but the handler is not installed yet
                return False
            raise
        return True

    wait_for(served, "the API server serves securitybaselines")
    return installed


@pytest.fixture
def baselines(api: client.ApiClient, installed_crd: dict[str, Any]) -> Iterator[Baselines]:
    assert installed_crd["spec"]["group"] == GROUP
    made = Baselines(api)
    yield made
    made.delete_created()


def test_crd_names_scope_and_columns(installed_crd: dict[str, Any]) -> None:
    spec = installed_crd["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"]["shortNames"] == ["sbl"]
    assert spec["names"]["categories"] == ["security"]
    assert installed_crd["status"]["acceptedNames"]["shortNames"] == ["sbl"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Mode"]["jsonPath"] == ".spec.mode"
    assert columns["Matched"]["jsonPath"] == ".status.matchedNamespaces"
    assert columns["Compliant"]["jsonPath"] == ".status.compliantNamespaces"
    assert columns["Drifted"]["jsonPath"] == ".status.driftedNamespaces"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["type"] == "date"


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_baseline_is_refused_for_its_reason(baselines: Baselines, path: Path) -> None:
    expected = expectation(path)
    with pytest.raises(client.ApiException) as refused:
        baselines.create(load(path))
    status = failure(refused.value)
    message = status["message"]
    assert expected in message
    if expected.startswith("unknown field"):
        # Strict field validation refuses unknown fields while decoding, before any schema check.
        assert (refused.value.status, status["reason"]) == (400, "BadRequest"), message
        return
    assert (refused.value.status, status["reason"]) == (422, "Invalid"), message
    fields = [cause["field"] for cause in status["details"]["causes"] if cause["field"] != NO_FIELD]
    assert len(fields) == 1, f"refused for more than one reason: {message}"
    assert expected.startswith(f"{fields[0]}:"), f"the refusal names {fields[0]}, not the expected field"


@pytest.mark.parametrize("path", VALID, ids=[path.stem for path in VALID])
def test_valid_baseline_is_accepted_as_written(baselines: Baselines, path: Path) -> None:
    body = load(path)
    stored = baselines.create(body, dry_run=True)
    assert contains(stored["spec"], body["spec"]), f"stored as {stored['spec']}"
    assert stored["spec"]["mode"] == body["spec"].get("mode", "Enforce")
    assert stored["spec"]["priority"] == body["spec"].get("priority", 0)


def test_minimal_baseline_gets_mode_and_priority(baselines: Baselines) -> None:
    stored = baselines.create(load(REPO_ROOT / "tests" / "baselines" / "valid" / "minimal.yaml"))
    assert baselines.get(stored["metadata"]["name"])["spec"] == {"mode": "Enforce", "priority": 0}


def test_empty_sections_get_every_default(baselines: Baselines) -> None:
    body = load(REPO_ROOT / "tests" / "baselines" / "valid" / "sections-defaulted.yaml")
    assert baselines.create(body, dry_run=True)["spec"] == {
        "mode": "Enforce",
        "priority": 0,
        "networkPolicy": {
            "defaultDeny": {"ingress": True, "egress": True},
            "allowDNS": True,
            "allowSameNamespace": False,
            "metadataAPI": {
                "block": True,
                "enforcement": "Auto",
                "providers": [
                    "aws",
                    "gcp",
                    "azure",
                    "alibaba",
                    "openstack",
                    "oracle",
                    "scaleway",
                    "tencent",
                    "digitalocean",
                    "hetzner",
                    "linode",
                    "upcloud",
                    "outscale",
                ],
            },
        },
        "rbac": {"defaultServiceAccount": {"automountToken": False}},
        "podSecurity": {"enforce": "restricted", "version": "latest"},
    }


def test_unknown_field_is_pruned_when_not_strict(baselines: Baselines) -> None:
    # Clients that do not ask for strict validation get the field dropped (and a warning): the schema
    # preserves no unknown field anywhere, so the operator never sees one.
    body = load(REPO_ROOT / "tests" / "baselines" / "invalid" / "unknown-field-under-spec.yaml")
    stored = baselines.create(body, field_validation=None)
    assert stored["spec"] == {"mode": "Enforce", "priority": 0}


def _status(problems: int) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "3 namespaces reconciled",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "matchedNamespaces": 3,
        "compliantNamespaces": 2,
        "driftedNamespaces": 1,
        "conflictNamespaces": 0,
        "problems": [
            {
                "namespace": f"team-{index}",
                "kind": "NetworkPolicy",
                "name": "baseline-default-deny",
                "section": "networkPolicy",
                "reason": "Drifted",
                "message": "spec.policyTypes differs from the baseline",
                "fields": ["spec.policyTypes"],
                "changedBy": "kubectl-edit",
                "since": "2026-01-01T00:00:00Z",
            }
            for index in range(problems)
        ],
    }


def test_status_is_stored_and_shown_in_columns(api: client.ApiClient, baselines: Baselines) -> None:
    custom = client.CustomObjectsApi(api)
    stored = baselines.create(load(REPO_ROOT / "tests" / "baselines" / "valid" / "minimal.yaml"))
    name = stored["metadata"]["name"]
    custom.replace_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, stored | {"status": _status(1)})
    assert baselines.get(name)["status"] == _status(1)

    # The table kubectl get prints: the API server evaluates the printer columns.
    _, table = get_json(
        api, f"/apis/{GROUP}/{VERSION}/{PLURAL}/{name}", accept="application/json;as=Table;v=v1;g=meta.k8s.io"
    )
    (row,) = table["rows"]
    cells = dict(zip([column["name"] for column in table["columnDefinitions"]], row["cells"], strict=True))
    assert {key: cells[key] for key in ("Mode", "Matched", "Compliant", "Drifted", "Ready")} == {
        "Mode": "Enforce",
        "Matched": 3,
        "Compliant": 2,
        "Drifted": 1,
        "Ready": "True",
    }


def test_status_holds_at_most_20_problems(api: client.ApiClient, baselines: Baselines) -> None:
    custom = client.CustomObjectsApi(api)
    stored = baselines.create(load(REPO_ROOT / "tests" / "baselines" / "valid" / "minimal.yaml"))
    name = stored["metadata"]["name"]
    custom.replace_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, name, stored | {"status": _status(20)}
    )
    current = baselines.get(name)
    with pytest.raises(client.ApiException) as refused:
        custom.replace_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, name, current | {"status": _status(21)}
        )
    assert refused.value.status == 422
    assert "status.problems: Too many: 21: must have at most 20 items" in failure(refused.value)["message"]


def test_openapi_carries_the_descriptions_kubectl_explain_shows(
    api: client.ApiClient, installed_crd: dict[str, Any]
) -> None:
    assert installed_crd["metadata"]["name"] == CRD_NAME

    def published() -> dict[str, Any] | None:
        # kubectl explain reads this document; the API server publishes it shortly after the CRD.
        status, document = get_json(api, f"/openapi/v3/apis/{GROUP}/{VERSION}")
        if status != 200:
            return None
        schemas: dict[str, Any] = document["components"]["schemas"]
        return schemas.get("dev.baseline.v1alpha1.SecurityBaseline")

    schema = wait_for(published, "the OpenAPI v3 document holds SecurityBaseline")
    metadata_api = schema["properties"]["spec"]["properties"]["networkPolicy"]["properties"]["metadataAPI"]
    assert "metadata APIs" in metadata_api["description"]
    assert "IPv4 or IPv6" in metadata_api["properties"]["extraCIDRs"]["description"]
