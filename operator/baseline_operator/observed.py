"""What the operator keeps of each watched object: small, typed, immutable records.

The cluster cache holds these (one per object), so they are the operator's whole view of the cluster:
reconciling reads them and never LISTs. Each record keeps only what comparison, pruning and
attribution need; `managedFields`, status and everything else of the raw body is dropped, which is
most of an object's size.

Memory is what bounds the operator at scale, so a managed object's body is kept as compact JSON and
decoded when a reconcile reads it (a few per reconcile, microseconds each): nothing for the garbage
collector to walk. Its identity (name, namespace, uid) is kept beside it, not in it, so objects built
alike have equal documents, and equal documents, labels, sets of owned fields and writer lists are one
shared copy: the same baseline's default deny in 10 000 namespaces is one document. At 10 000 namespaces
x 7 objects that is 0.45 KB per record instead of 1.2 KB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import orjson

from baseline_operator.builders.common import (
    BASELINE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PROTECTED_LABELS_ANNOTATION,
)
from baseline_operator.compare import ManagerEntry, Path, field_owners, managers, owned_paths
from baseline_operator.identity import FIELD_MANAGER
from baseline_operator.label_selectors import selector_from_json
from baseline_operator.spec import BaselineSpec, LabelSelector, NamespaceInfo, SpecError, parse_spec
from baseline_operator.takeover import PREVIOUS_VALUES_ANNOTATION, field_path, tracked_fields

_DROPPED_KEYS = frozenset({"status"})
# What every apply names; owning only these means owning nothing of the object's content.
_IDENTITY_PATHS = frozenset({("metadata", "name"), ("metadata", "namespace"), ("apiVersion",), ("kind",)})
_DROPPED_METADATA = frozenset(
    {"managedFields", "resourceVersion", "generation", "selfLink", "creationTimestamp"}
)
_IDENTITY = ("name", "namespace", "uid")
"""Metadata kept in the record's own fields, not in its document (see the module docstring)."""

_Value = TypeVar("_Value")


class _Shared(Generic[_Value]):
    """One copy of equal values: the first one seen is handed out for every equal one after it.

    Bounded: when full the table starts afresh, so an unforeseen variety of values costs sharing, never
    unbounded memory (the copies already handed out stay shared by their holders).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._copies: dict[Any, _Value] = {}
        self._limit = limit

    def get(self, key: Any, make: Callable[[Any], _Value] | None = None) -> _Value:
        """The copy kept for `key`; a new one (`make(key)`, or `key` itself) when there is none."""
        found = self._copies.get(key)
        if found is not None:
            return found
        if len(self._copies) >= self._limit:
            self._copies.clear()
        value: _Value = key if make is None else make(key)
        self._copies[key] = value
        return value


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable JSON value from a frozen record (for comparison and for the API)."""
    if isinstance(value, MappingProxyType | dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ObservedObject:
    """A managed object (or the default ServiceAccount) as last seen by the watch."""

    kind: str
    namespace: str
    name: str
    uid: str
    document: bytes
    """The kept body as compact JSON (see the module docstring); `body` decodes it."""
    labels: Mapping[str, str]
    owned: frozenset[Path] = frozenset()
    """Fields our field manager owns through server-side apply."""
    writers: tuple[ManagerEntry, ...] = ()
    resource_version: str = ""
    field_owners: Mapping[Path, str] = field(default_factory=dict)
    """Other managers owning fields the operator may take over (see takeover.py); usually empty."""

    @classmethod
    def from_body(
        cls,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        body: Mapping[str, Any],
        *,
        owned: frozenset[Path] = frozenset(),
        writers: tuple[ManagerEntry, ...] = (),
        resource_version: str = "",
        field_owners: Mapping[Path, str] | None = None,
    ) -> ObservedObject:
        metadata = dict(body.get("metadata") or {})
        identity = {"name": name, "namespace": namespace, "uid": uid}
        for key in _IDENTITY:
            if key in metadata and metadata[key] == identity[key]:
                del metadata[key]
        document = orjson.dumps({**body, "metadata": metadata})
        return cls(
            # One copy of each name: a namespace's seven records, every namespace's objects of one name.
            kind=sys.intern(kind),
            namespace=sys.intern(namespace),
            name=sys.intern(name),
            uid=uid,
            document=_DOCUMENTS.get(document),
            labels=_LABELS.get(tuple((metadata.get("labels") or {}).items()), _frozen_labels),
            owned=_OWNED.get(owned),
            writers=_WRITERS.get(writers),
            resource_version=resource_version,
            field_owners=MappingProxyType(dict(field_owners)) if field_owners else _NO_OWNERS,
        )

    @property
    def body(self) -> dict[str, Any]:
        """A fresh, mutable copy of the kept body, its identity put back."""
        decoded: dict[str, Any] = orjson.loads(self.document)
        identity = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        decoded["metadata"] = {
            **{key: value for key, value in identity.items() if value},
            **decoded.get("metadata", {}),
        }
        return decoded

    @property
    def owns_content(self) -> bool:
        """Our field manager owns some field beyond the object's name (on objects that are not ours)."""
        return bool(self.owned - _IDENTITY_PATHS)

    @property
    def labelled_ours(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE

    @property
    def managed_by_us(self) -> bool:
        """Labelled as ours and written by us: the only objects the operator ever deletes."""
        return self.labelled_ours and bool(self.owned)

    @property
    def baseline(self) -> str | None:
        return self.labels.get(BASELINE_LABEL)


@dataclass(frozen=True, slots=True)
class ObservedNamespace:
    """A Namespace: its labels, whether it is going away, and which labels we own."""

    name: str
    uid: str
    labels: Mapping[str, str]
    terminating: bool
    created: str | None = None
    owned: frozenset[Path] = frozenset()
    """Label fields our field manager owns (the Pod Security labels we set)."""
    writers: tuple[ManagerEntry, ...] = ()
    resource_version: str = ""
    previous_values: str | None = None
    """The operator's record of the labels it took over (takeover.py), as written."""
    field_owners: Mapping[Path, str] = field(default_factory=dict)
    """Other managers owning Pod Security labels; only kept for labels not owned by us."""
    protected_labels: str | None = None
    """The label keys the operator wrote for admission protection (PROTECTED_LABELS_ANNOTATION)."""

    @property
    def owns_content(self) -> bool:
        """Our field manager owns some label or annotation of the namespace."""
        return bool(self.owned - _IDENTITY_PATHS)

    @property
    def info(self) -> NamespaceInfo:
        return NamespaceInfo(name=self.name, labels=self.labels)

    @property
    def body(self) -> Mapping[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "labels": dict(self.labels)}
        annotations = {
            key: value
            for key, value in (
                (PREVIOUS_VALUES_ANNOTATION, self.previous_values),
                (PROTECTED_LABELS_ANNOTATION, self.protected_labels),
            )
            if value is not None
        }
        if annotations:
            metadata["annotations"] = annotations
        return {"metadata": metadata}


@dataclass(frozen=True)
class ObservedBaseline:
    """A SecurityBaseline, its spec parsed once per change, and its last written status."""

    name: str
    uid: str
    generation: int
    spec: BaselineSpec | None
    error: SpecError | None = None
    """Set when the stored spec is malformed (written before a CRD upgrade, say): reported, never fatal."""
    status: Mapping[str, Any] = field(default_factory=dict)
    resource_version: str = ""


_NO_OWNERS: Mapping[Path, str] = MappingProxyType({})


def _foreign_owners(
    kind: str, body: Mapping[str, Any], managed_fields: list[Any], owned: frozenset[Path]
) -> Mapping[Path, str]:
    """Who owns the fields the operator may take over, where that is not (only) the operator.

    Usually nothing to find: the operator's own objects have no such field, and where it set them it
    owns them. So the walk over other managers' fields happens only when it can find something.
    """
    paths = [field_path(kind, name) for name in tracked_fields(kind, body)]
    foreign = [path for path in paths if path not in owned]
    if not foreign:
        return _NO_OWNERS
    return MappingProxyType(field_owners(managed_fields, foreign, other_than=FIELD_MANAGER))


def observe_object(body: Mapping[str, Any]) -> ObservedObject:
    metadata = body.get("metadata", {})
    managed_fields = metadata.get("managedFields") or []
    owned = owned_paths(managed_fields, FIELD_MANAGER)
    kind = str(body.get("kind"))
    kept = {key: value for key, value in body.items() if key not in _DROPPED_KEYS}
    if body.get("kind") == "ResourceQuota":
        # Usage is how the planner tells that a quota is below what the namespace already uses.
        kept["status"] = {"used": (body.get("status") or {}).get("used") or {}}
    kept["metadata"] = {key: value for key, value in metadata.items() if key not in _DROPPED_METADATA}
    return ObservedObject.from_body(
        kind=kind,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        body=kept,
        owned=owned,
        writers=managers(managed_fields),
        resource_version=str(metadata.get("resourceVersion", "")),
        field_owners=_foreign_owners(kind, body, managed_fields, owned),
    )


# Ownership, labels and documents come in a handful of shapes (one per kind and baseline spec); writer
# lists differ by the second of the write; annotation texts are mostly the same record.
_OWNED: _Shared[frozenset[Path]] = _Shared()
_WRITERS: _Shared[tuple[ManagerEntry, ...]] = _Shared()
_DOCUMENTS: _Shared[bytes] = _Shared()
_LABELS: _Shared[Mapping[str, str]] = _Shared()
_TEXTS: _Shared[str] = _Shared()


def _frozen_labels(items: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def _shared_text(text: str | None) -> str | None:
    return None if text is None else _TEXTS.get(text)


def observe_namespace(body: Mapping[str, Any]) -> ObservedNamespace:
    metadata = body.get("metadata", {})
    managed_fields = metadata.get("managedFields") or []
    owned = owned_paths(managed_fields, FIELD_MANAGER)
    return ObservedNamespace(
        name=sys.intern(str(metadata.get("name"))),
        uid=str(metadata.get("uid")),
        labels=MappingProxyType(dict(metadata.get("labels") or {})),
        terminating=bool(metadata.get("deletionTimestamp"))
        or body.get("status", {}).get("phase") == "Terminating",
        created=metadata.get("creationTimestamp"),
        owned=_OWNED.get(owned),
        writers=_WRITERS.get(managers(managed_fields)),
        resource_version=str(metadata.get("resourceVersion", "")),
        previous_values=_shared_text((metadata.get("annotations") or {}).get(PREVIOUS_VALUES_ANNOTATION)),
        field_owners=_foreign_owners("Namespace", body, managed_fields, owned),
        protected_labels=_shared_text((metadata.get("annotations") or {}).get(PROTECTED_LABELS_ANNOTATION)),
    )


def observe_baseline(body: Mapping[str, Any]) -> ObservedBaseline:
    metadata = body.get("metadata", {})
    spec: BaselineSpec | None = None
    error: SpecError | None = None
    try:
        spec = parse_spec(thaw(body.get("spec") or {}))
    except SpecError as failure:
        error = failure
    return ObservedBaseline(
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        generation=int(metadata.get("generation") or 0),
        spec=spec,
        error=error,
        status=_frozen(thaw(body.get("status") or {})),
        resource_version=str(metadata.get("resourceVersion", "")),
    )


@dataclass(frozen=True)
class PortSpan:
    """Ports an egress rule allows: one protocol, a port, a range, a named port, or all its ports."""

    protocol: str = "TCP"
    start: int | None = None
    """None: every port of the protocol (or a named port, see `named`)."""
    end: int | None = None
    named: str | None = None


@dataclass(frozen=True)
class EgressRule:
    """What one egress rule of a user's NetworkPolicy allows that could be a metadata address."""

    everywhere: bool
    """No `to`: every destination."""
    ip_blocks: tuple[tuple[str, tuple[str, ...]], ...]
    """(cidr, except) of each ipBlock peer; pod and namespace peers never reach a metadata address."""
    ports: tuple[PortSpan, ...]
    """Empty: every port and protocol."""


@dataclass(frozen=True)
class ObservedPolicy:
    """A NetworkPolicy that is not the operator's: only which pods it isolates for egress, and where to.

    The metadata block must never select a pod another egress policy selects (it would open what that
    policy closed), and the audit reports policies that open a metadata address: that is all we keep.
    """

    namespace: str
    name: str
    uid: str
    pod_selector: LabelSelector
    egress: tuple[EgressRule, ...] | None
    """None when the policy does not isolate egress (not in its policyTypes)."""
    resource_version: str = ""


def observe_policy(body: Mapping[str, Any]) -> ObservedPolicy:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    egress: tuple[EgressRule, ...] | None = None
    if "Egress" in (spec.get("policyTypes") or ()):
        egress = tuple(_egress_rule(rule or {}) for rule in spec.get("egress") or ())
    return ObservedPolicy(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        pod_selector=selector_from_json(spec.get("podSelector")),
        egress=egress,
        resource_version=str(metadata.get("resourceVersion", "")),
    )


def _egress_rule(rule: Mapping[str, Any]) -> EgressRule:
    peers = rule.get("to") or []
    blocks = tuple(
        (str(peer["ipBlock"].get("cidr", "")), tuple(map(str, peer["ipBlock"].get("except") or ())))
        for peer in peers
        if isinstance(peer, Mapping) and isinstance(peer.get("ipBlock"), Mapping)
    )
    ports = tuple(_port_span(port or {}) for port in rule.get("ports") or ())
    return EgressRule(everywhere=not peers, ip_blocks=blocks, ports=ports)


def _port_span(port: Mapping[str, Any]) -> PortSpan:
    protocol = str(port.get("protocol") or "TCP")
    value = port.get("port")
    if isinstance(value, str):
        return PortSpan(protocol, named=value)
    if value is None:
        return PortSpan(protocol)
    end = port.get("endPort")
    return PortSpan(protocol, int(value), int(end) if end is not None else None)
