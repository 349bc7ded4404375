"""What the benchmark puts on the cluster: the baseline, the objects it means per namespace, namespaces.

The desired objects come from the operator's own pure builders (what `baseline-operator render`
prints), so the calibration client writes exactly the bodies the operator writes, byte for byte.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from baseline_operator.builders import BuildContext, build_all
from baseline_operator.spec import BaselineRef, NamespaceInfo, Section, parse_spec
from bench.harness import (
    MANAGED_RESOURCES,
    MANAGED_SELECTOR,
    NAMESPACES,
    SERVICE_ACCOUNTS,
    ApiClient,
    Key,
    Watched,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

BASELINE_FILE = Path(__file__).with_name("baseline.yaml")
LOAD_LABELS = {"bench": "load"}
"""The label the baseline selects namespaces by."""
DEFAULT_SERVICE_ACCOUNT_CREATED = "DefaultServiceAccountCreated"
"""Key prefix of the watch that sees the controller-manager create each namespace's `default` SA."""
NAMESPACE_CREATED = "NamespaceCreated"
"""Key prefix of the watch that sees each selected namespace appear."""


@dataclass
class Workload:
    """The benchmark's SecurityBaseline and, per namespace, the objects the operator must write for it."""

    document: Mapping[str, Any]
    _keys: dict[str, list[Key]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.name = str(self.document["metadata"]["name"])
        self.spec = parse_spec(self.document["spec"])
        self.sections = [section for section in Section if self.spec.section(section)]
        sample = {body["kind"]: body for body in self.objects("sample", "uid")}
        self.pod_security_labels: dict[str, str] = dict(sample["Namespace"]["metadata"]["labels"])
        self.automount: bool = bool(sample["ServiceAccount"]["automountServiceAccountToken"])

    @classmethod
    def load(cls, path: Path = BASELINE_FILE) -> Workload:
        return cls(yaml.safe_load(path.read_text()))

    def objects(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The server-side apply bodies for one namespace, owned by the baseline with this uid."""
        context = BuildContext(
            baseline=BaselineRef(name=self.name, uid=uid),
            namespace=NamespaceInfo(
                name=namespace, labels={"kubernetes.io/metadata.name": namespace, **LOAD_LABELS}
            ),
        )
        return build_all(self.spec, context, self.sections)

    def keys(self, namespace: str) -> list[Key]:
        """What must be watched into place for the namespace to be compliant."""
        keys = self._keys.get(namespace)
        if keys is None:
            keys = self._keys[namespace] = [
                (body["kind"], body["metadata"].get("namespace", ""), body["metadata"]["name"])
                for body in self.objects(namespace, "uid")
            ]
        return keys

    def all_keys(self, namespaces: Iterable[str]) -> list[Key]:
        return [key for namespace in namespaces for key in self.keys(namespace)]

    @staticmethod
    def released(namespace: str) -> list[dict[str, Any]]:
        """Apply bodies that give up the fields the baseline sets on the Namespace and its default SA."""
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": namespace},
            },
        ]

    def watches(self) -> list[Watched]:
        """The watches that tell when a namespace's objects are all in place."""
        labels = self.pod_security_labels
        automount = self.automount

        def namespace_labelled(body: Mapping[str, Any]) -> bool:
            found = body["metadata"].get("labels") or {}
            return all(found.get(key) == value for key, value in labels.items())

        def account_set(body: Mapping[str, Any]) -> bool:
            return body.get("automountServiceAccountToken") is automount

        default_account = {"fieldSelector": "metadata.name=default"}
        load_selector = ",".join(f"{key}={value}" for key, value in LOAD_LABELS.items())
        return [
            *(
                Watched(resource.kind, resource, {"labelSelector": MANAGED_SELECTOR})
                for resource in MANAGED_RESOURCES
            ),
            Watched("Namespace", NAMESPACES, {"labelSelector": load_selector}, namespace_labelled),
            Watched("ServiceAccount", SERVICE_ACCOUNTS, default_account, account_set),
            Watched(DEFAULT_SERVICE_ACCOUNT_CREATED, SERVICE_ACCOUNTS, default_account),
            Watched(NAMESPACE_CREATED, NAMESPACES, {"labelSelector": load_selector}),
        ]


def namespace_body(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(LOAD_LABELS)}}


def create_namespace(api: ApiClient, name: str) -> float:
    """Create a namespace the baseline selects; when (monotonic) the API server answered."""
    api.create(namespace_body(name)).ok()
    return time.monotonic()


def create_namespaces(api: ApiClient, names: Iterable[str], *, threads: int) -> dict[str, float]:
    """Create namespaces in parallel; per name, when (monotonic) its creation was answered."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        names = list(names)
        return dict(zip(names, pool.map(lambda name: create_namespace(api, name), names), strict=True))


def default_account_keys(namespaces: Iterable[str]) -> list[Key]:
    return [(DEFAULT_SERVICE_ACCOUNT_CREATED, namespace, "default") for namespace in namespaces]
