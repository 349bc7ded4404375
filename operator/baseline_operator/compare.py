"""Is a live object what we want? Compare only what we own, normalised, and say who changed it.

The API server adds defaults, status and other managers' fields to every object, and normalises
quantities (`1000m` comes back as `1`). A naive comparison would see drift everywhere and re-apply
forever. So a live object differs from the desired one only where:

- a field we set has another value (quantities compared by value, not by spelling);
- a list we set differs in length or in an item (lists are compared item by item, each item again
  only on the fields we set, so server defaults inside items are no drift);
- a field our field manager owns (from `managedFields`) is no longer in the desired object: the spec
  dropped it and one apply will remove it.

Labels and annotations of others, ownerReferences of others and fields we never set are not ours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal  # noqa: TC003 - used at run time by the comparison
from typing import TYPE_CHECKING, Any

import orjson

from baseline_operator.quantity import parse_quantity

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

Path = tuple[str, ...]
_MAX_VALUE_TEXT = 120


@dataclass(frozen=True)
class FieldDifference:
    """One field that is not as desired; `actual` None means absent."""

    path: str
    expected: Any
    actual: Any

    def describe(self) -> str:
        return f"{self.path}: expected {_short(self.expected)}, found {_short(self.actual)}"


@dataclass(frozen=True)
class ManagerEntry:
    """Who wrote an object, from one `managedFields` entry."""

    manager: str
    operation: str
    time: str | None


def _short(value: Any) -> str:
    text = "absent" if value is None else repr(value)
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 3] + "..."


def _dotted(path: Path) -> str:
    return ".".join(path)


def differences(
    desired: Mapping[str, Any], live: Mapping[str, Any], owned: Iterable[Path] = ()
) -> list[FieldDifference]:
    """Fields of `desired` that `live` does not match, plus owned fields the desired object dropped."""
    found: list[FieldDifference] = []
    for key, value in desired.items():
        if key in {"apiVersion", "kind"}:
            continue
        if key == "metadata":
            found += _metadata_differences(value, live.get("metadata", {}))
        else:
            found += _value_differences((key,), value, live.get(key))
    desired_paths = set(leaf_paths(desired))
    for path in sorted(set(owned)):
        if path[:1] in {("apiVersion",), ("kind",)} or path[:2] in {
            ("metadata", "name"),
            ("metadata", "namespace"),
        }:
            continue
        if not any(_covers(candidate, path) for candidate in desired_paths):
            found.append(FieldDifference(_dotted(path), None, _get(live, path)))
    return found


def _covers(desired_path: Path, owned_path: Path) -> bool:
    # An owned path is still wanted when the desired object sets it, or a field inside it, or the
    # list or map that contains it.
    shorter = min(len(desired_path), len(owned_path))
    return desired_path[:shorter] == owned_path[:shorter]


def _get(body: Mapping[str, Any], path: Path) -> Any:
    value: Any = body
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _metadata_differences(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[FieldDifference]:
    found: list[FieldDifference] = []
    for field in ("labels", "annotations"):
        live_values = live.get(field) or {}
        for key, value in (desired.get(field) or {}).items():
            if live_values.get(key) != value:
                found.append(FieldDifference(f"metadata.{field}.{key}", value, live_values.get(key)))
    live_owners = {reference.get("uid"): reference for reference in live.get("ownerReferences") or []}
    for reference in desired.get("ownerReferences") or []:
        live_reference = live_owners.get(reference.get("uid"))
        if live_reference is None or _value_differences((), reference, live_reference):
            found.append(FieldDifference("metadata.ownerReferences", reference, live_reference))
    return found


def _value_differences(path: Path, desired: Any, live: Any) -> list[FieldDifference]:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [FieldDifference(_dotted(path), desired, live)]
        found: list[FieldDifference] = []
        for key, value in desired.items():
            found += _value_differences((*path, key), value, live.get(key))
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [FieldDifference(_dotted(path), desired, live)]
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            if _value_differences((*path, str(index)), want, have):
                return [FieldDifference(_dotted(path), desired, live)]
        return []
    return [] if _scalars_equal(desired, live) else [FieldDifference(_dotted(path), desired, live)]


def _scalars_equal(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str | int):
        return _quantity(desired) is not None and _quantity(desired) == _quantity(str(live))
    return False


def _quantity(text: str) -> Decimal | None:
    try:
        return parse_quantity(text)
    except ValueError:
        return None


def leaf_paths(body: Mapping[str, Any], prefix: Path = ()) -> Iterator[Path]:
    """Paths of the fields a body sets; a list counts as one field (we compare lists whole)."""
    for key, value in body.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, path)
        else:
            yield path


def owned_paths(managed_fields: Iterable[Mapping[str, Any]], manager: str) -> frozenset[Path]:
    """The fields `manager` owns through server-side apply, in the same shape as `leaf_paths`."""
    paths: frozenset[Path] = frozenset()
    for entry in managed_fields:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            # Every watch event of ours carries one of a handful of shapes (one per kind and baseline
            # spec): the C encoder names the shape faster than walking it again in Python.
            found = _paths_of(orjson.dumps(entry.get("fieldsV1") or {}))
            paths = found if not paths else paths | found
    return paths


@functools.lru_cache(maxsize=1024)
def _paths_of(fields_v1: bytes) -> frozenset[Path]:
    return frozenset(_fields_v1_paths(orjson.loads(fields_v1), ()))


def _fields_v1_paths(fields: Mapping[str, Any], prefix: Path) -> Iterator[Path]:
    # fieldsV1 names a field `f:<name>`; `k:`/`v:`/`i:` address list items, where we stop because
    # lists are compared whole; `.` marks the field itself.
    children = [(key, value) for key, value in fields.items() if key != "."]
    if not children or any(not key.startswith("f:") for key, _ in children):
        if prefix:
            yield prefix
        return
    for key, value in children:
        yield from _fields_v1_paths(value or {}, (*prefix, key[2:]))


def field_owners(
    managed_fields: Iterable[Mapping[str, Any]], paths: Iterable[Path], *, other_than: str
) -> dict[Path, str]:
    """For each of `paths`, a field manager other than `other_than` that owns it (if any does)."""
    wanted = set(paths)
    owners: dict[Path, str] = {}
    for entry in managed_fields:
        manager = str(entry.get("manager", ""))
        if not wanted or manager == other_than or entry.get("subresource"):
            continue
        found = _paths_of(orjson.dumps(entry.get("fieldsV1") or {})) & wanted
        for path in found:
            owners[path] = manager
        wanted -= found
    return owners


def managers(managed_fields: Iterable[Mapping[str, Any]]) -> tuple[ManagerEntry, ...]:
    """Every writer of the object's main resource, newest first.

    Writes to a subresource (the quota controller updating `status.used`, say) change nothing we set,
    so they are left out: they would otherwise be named as the author of every drift.
    """
    entries = [
        ManagerEntry(str(entry.get("manager", "unknown")), str(entry.get("operation", "")), entry.get("time"))
        for entry in managed_fields
        if not entry.get("subresource")
    ]
    return tuple(sorted(entries, key=lambda entry: entry.time or "", reverse=True))


def last_writer_other_than(entries: Iterable[ManagerEntry], manager: str) -> ManagerEntry | None:
    """The most recent writer that is not us: who most likely caused a difference."""
    return next((entry for entry in entries if entry.manager != manager), None)
