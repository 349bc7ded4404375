"""Fields the operator takes over on objects it does not own, and how they are given back.

The Namespace and its `default` ServiceAccount belong to their users. The operator sets a few fields
of them (the Pod Security labels, `automountServiceAccountToken`) by a forced server-side apply, which
takes such a field over from whoever set it before. Dropping the field on release would then leave
the namespace weaker than it was before the operator came: an admin's `enforce: baseline` would be
gone, not back. So the first time the operator sets a field it writes down what was there, in an
annotation of the same object, in the same apply:

    baseline.dev/previous-values: {"pod-security.kubernetes.io/enforce": {"value": "baseline",
                                   "manager": "kubectl-label"}, "pod-security.kubernetes.io/warn": null}

`null` means the field was absent (or already ours, before this annotation existed): releasing it
removes it. A value means releasing it gives that value back, applied under the manager that had set
it, before the operator's own apply lets go of the field.

The record is written at the first takeover only. A field the record already names is never recorded
again: if a tenant changes it later, that is drift to repair, not a value to restore on release (or a
tenant could choose what the release leaves behind).

Pure functions: the planner calls them with what the watch observed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.pod_security import POD_SECURITY_LABEL_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from baseline_operator.compare import Path

PREVIOUS_VALUES_ANNOTATION: Final = "baseline.dev/previous-values"
AUTOMOUNT_FIELD: Final = "automountServiceAccountToken"
_LABELS: Final = ("metadata", "labels")


@dataclass(frozen=True)
class PreviousValue:
    """What a field held before the operator took it over, and which field manager had set it."""

    value: Any
    manager: str


Record = dict[str, PreviousValue | None]
"""Per taken field (a label key on a Namespace, a field name on a ServiceAccount): its previous value."""


def tracked_fields(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `body` whose previous values are kept, with their values in `body`."""
    if kind == "Namespace":
        labels = (body.get("metadata") or {}).get("labels") or {}
        return {key: value for key, value in labels.items() if key.startswith(POD_SECURITY_LABEL_PREFIX)}
    if kind == "ServiceAccount" and AUTOMOUNT_FIELD in body:
        return {AUTOMOUNT_FIELD: body[AUTOMOUNT_FIELD]}
    return {}


def field_path(kind: str, field: str) -> Path:
    """Where a tracked field lives in the object, as `compare` spells paths."""
    return (*_LABELS, field) if kind == "Namespace" else (field,)


def read_record(live: Mapping[str, Any]) -> Record:
    """The record kept on a live object; an unreadable one counts as empty (nothing to give back)."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(PREVIOUS_VALUES_ANNOTATION)
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    record: Record = {}
    for field, entry in raw.items():
        if entry is None:
            record[str(field)] = None
        elif isinstance(entry, dict) and isinstance(entry.get("manager"), str) and "value" in entry:
            record[str(field)] = PreviousValue(entry["value"], entry["manager"])
    return record


def write_record(record: Mapping[str, PreviousValue | None]) -> str:
    """The annotation's text: compact, keys sorted, so equal records are equal strings."""
    return json.dumps(
        {
            field: None if entry is None else {"value": entry.value, "manager": entry.manager}
            for field, entry in sorted(record.items())
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Takeover:
    """What to apply with the desired fields, and what to give back first."""

    record: Record
    """The record to keep on the object after this apply (empty: no annotation)."""
    give_back: dict[str, dict[str, Any]]
    """Per field manager, the fields to give back to it (field -> previous value), before our apply."""


def plan_takeover(
    kind: str,
    wanted: Mapping[str, Any],
    live: Mapping[str, Any],
    owned: Iterable[Path],
    owners: Mapping[Path, str],
) -> Takeover:
    """Record what the fields of `wanted` (field -> value) replace; give back recorded fields not wanted.

    `owned` are the paths our field manager owns on the live object; `owners` the other managers owning
    tracked fields of it.
    """
    owned = frozenset(owned)
    live_values = tracked_fields(kind, live)
    record = read_record(live)
    for field, value in wanted.items():
        if field in record:
            continue
        path = field_path(kind, field)
        previous = live_values.get(field)
        if previous is None or path in owned or previous == value:
            # Absent before, already ours (set before records were kept), or the same value: shared
            # ownership keeps it after our release anyway. Nothing to give back, but remember the field
            # as taken, so that a later change by someone else is never mistaken for a previous value.
            record[field] = None
        else:
            record[field] = PreviousValue(previous, owners.get(path, "before-baseline-operator"))
    give_back: dict[str, dict[str, Any]] = {}
    for field in [field for field in record if field not in wanted]:
        entry = record.pop(field)
        if entry is not None:
            give_back.setdefault(entry.manager, {})[field] = entry.value
    return Takeover(record, give_back)


def with_record(body: Mapping[str, Any], record: Mapping[str, PreviousValue | None]) -> dict[str, Any]:
    """`body` carrying the record annotation (a fresh copy; `body` is not changed)."""
    metadata = dict(body["metadata"])
    if record:
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            PREVIOUS_VALUES_ANNOTATION: write_record(record),
        }
    return {**body, "metadata": metadata}


def give_back_body(
    kind: str, name: str, namespace: str | None, uid: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The apply, under the previous manager's name, that sets `fields` back to their previous values."""
    metadata: dict[str, Any] = {"name": name, "uid": uid}
    body: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if namespace is not None:
        metadata["namespace"] = namespace
    if kind == "Namespace":
        metadata["labels"] = dict(fields)
    else:
        body.update(fields)
    return body
