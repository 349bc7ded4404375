"""The CRD and the baseline corpus, checked without a cluster.

The API server decides what is valid (tests/e2e/test_crd_admission.py); these checks keep the schema
documented and bounded as it grows: a field without a description is blank in `kubectl explain`, and a
list or string without a bound makes the API server refuse the CRD once a CEL rule reaches it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "securitybaseline.yaml"
CONTRACT = REPO_ROOT / "docs" / "api-contract.md"
INVALID = sorted((REPO_ROOT / "tests" / "baselines" / "invalid").glob("*.yaml"))
VALID = sorted((REPO_ROOT / "tests" / "baselines" / "valid").glob("*.yaml"))
# Set by the API server, never stored as written: apiVersion and kind are checked while decoding, and
# the root metadata schema may not hold anything but name and generateName.
SERVER_OWNED = {"apiVersion", "kind", "metadata"}


def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return loaded


def root_schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `schema`, with a path such as spec.rbac.roleBindings[].name."""
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        yield child_path, child
        yield from walk(child, child_path)
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def nodes() -> list[tuple[str, dict[str, Any]]]:
    return [(path, node) for path, node in walk(root_schema()) if path.split(".")[0] not in SERVER_OWNED]


def contract_example() -> dict[str, Any]:
    block = re.search(r"```yaml\n(.*?)```", CONTRACT.read_text(), re.DOTALL)
    assert block is not None, "docs/api-contract.md has no yaml example"
    example: dict[str, Any] = yaml.safe_load(block.group(1))
    return example


def test_crd_names_the_contract_resource() -> None:
    definition = crd()
    assert definition["metadata"]["name"] == "securitybaselines.baseline.dev"
    assert definition["spec"]["scope"] == "Cluster"
    assert definition["spec"]["names"]["kind"] == "SecurityBaseline"
    assert definition["spec"]["names"]["shortNames"] == ["sbl"]


def test_every_field_has_a_description() -> None:
    undocumented = [path for path, node in nodes() if not node.get("description", "").strip()]
    assert not undocumented


def test_every_list_has_max_items() -> None:
    unbounded = [path for path, node in nodes() if node.get("type") == "array" and "maxItems" not in node]
    assert not unbounded


def test_every_free_form_string_has_max_length() -> None:
    # Strings limited to an enum or to a date-time format are bounded already.
    unbounded = [
        path
        for path, node in nodes()
        if node.get("type") == "string"
        and "enum" not in node
        and node.get("format") != "date-time"
        and "maxLength" not in node
    ]
    assert not unbounded


def test_every_map_has_max_properties() -> None:
    unbounded = [
        path
        for path, node in nodes()
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node
    ]
    assert not unbounded


def test_every_rule_says_what_is_wrong() -> None:
    silent = [
        f"{path}: {rule['rule']}"
        for path, node in [("<root>", root_schema()), *walk(root_schema())]
        for rule in node.get("x-kubernetes-validations", [])
        if not (rule.get("message") or rule.get("messageExpression"))
    ]
    assert not silent


def test_provider_default_is_the_contract_list() -> None:
    metadata_api = root_schema()["properties"]["spec"]["properties"]["networkPolicy"]["properties"][
        "metadataAPI"
    ]
    providers = metadata_api["properties"]["providers"]
    assert providers["default"] == contract_example()["spec"]["networkPolicy"]["metadataAPI"]["providers"]
    assert set(providers["default"]) <= set(providers["items"]["enum"])
    assert set(providers["items"]["enum"]) - set(providers["default"]) == {"aws-ecs", "aws-pod-identity"}


def test_valid_corpus_holds_the_contract_example() -> None:
    written = yaml.safe_load(
        (REPO_ROOT / "tests" / "baselines" / "valid" / "contract-example.yaml").read_text()
    )
    assert written == contract_example()


def test_invalid_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    assert len(INVALID) >= 30
    expectations = [path.read_text().splitlines()[0] for path in INVALID]
    missing = [
        path.name
        for path, line in zip(INVALID, expectations, strict=True)
        if not line.startswith("# expect: ")
    ]
    assert not missing
    assert all(len(line.removeprefix("# expect: ").strip()) >= 10 for line in expectations)


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_file_is_one_baseline(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    assert (body["apiVersion"], body["kind"]) == ("baseline.dev/v1alpha1", "SecurityBaseline")
    # Named after the file, so that a leftover object in a cluster says which case created it.
    assert body["metadata"]["name"] in {path.stem, "a" * 64}


@pytest.mark.parametrize("path", VALID, ids=[path.stem for path in VALID])
def test_valid_file_is_one_baseline_without_expectation(path: Path) -> None:
    assert not path.read_text().startswith("# expect:")
    body = yaml.safe_load(path.read_text())
    assert (body["apiVersion"], body["kind"]) == ("baseline.dev/v1alpha1", "SecurityBaseline")
    assert isinstance(body["spec"], dict)


def test_generated_too_many_files_exceed_their_bound_by_one() -> None:
    spec = root_schema()["properties"]["spec"]["properties"]
    folder = REPO_ROOT / "tests" / "baselines" / "invalid"
    exclude = yaml.safe_load((folder / "excludenamespaces-too-many.yaml").read_text())["spec"]
    assert len(exclude["excludeNamespaces"]) == spec["excludeNamespaces"]["maxItems"] + 1 == 101
    cidrs = yaml.safe_load((folder / "extracidrs-too-many.yaml").read_text())["spec"]
    metadata_api = spec["networkPolicy"]["properties"]["metadataAPI"]["properties"]
    assert (
        len(cidrs["networkPolicy"]["metadataAPI"]["extraCIDRs"]) == metadata_api["extraCIDRs"]["maxItems"] + 1
    )
    subjects = yaml.safe_load((folder / "subjects-too-many.yaml").read_text())["spec"]
    binding = spec["rbac"]["properties"]["roleBindings"]["items"]["properties"]
    assert len(subjects["rbac"]["roleBindings"][0]["subjects"]) == binding["subjects"]["maxItems"] + 1
