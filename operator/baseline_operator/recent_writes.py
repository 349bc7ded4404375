"""Read-your-writes: what the operator just wrote, shown in place of the watch cache until it catches up.

A watch event for our own write arrives some milliseconds after the write returns. A namespace
reconciled again in between (another event for it arrived) would still see the old object, or none,
and write the same thing again. So the API's answer to each write is kept here and laid over the
cache until the cache holds that object at the same or a newer resourceVersion (or, for a delete,
until the object is gone from it). Entries also expire, so nothing here can outlive its use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from baseline_operator.observed import ObservedNamespace, ObservedObject

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

_EXPIRY_SECONDS = 30.0

Key = tuple[str, str, str]
"""(kind, namespace, name)"""
_Record = TypeVar("_Record", ObservedObject, ObservedNamespace)


@dataclass(frozen=True)
class _Entry:
    written: ObservedObject | ObservedNamespace | None
    """What the API answered; None for a deletion."""
    uid: str
    at: float


def _newer_or_same(cached: str, written: str) -> bool:
    # resourceVersions are opaque to clients in principle; in practice they are etcd revisions. When
    # they are not numbers, trust the cache.
    try:
        return int(cached) >= int(written)
    except ValueError:
        return True


class RecentWrites:
    """Our writes the watch has not delivered yet, by (kind, namespace, name)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._by_namespace: dict[str, dict[Key, None]] = {}
        """The keys of `_entries` per namespace, in the order written: a reconcile looks up its own, not
        every entry (at 10 000 namespaces a roll-out has tens of thousands in flight)."""
        self._clock = clock

    def wrote(self, key: Key, written: ObservedObject | ObservedNamespace) -> None:
        self._remember(key, _Entry(written, written.uid, self._clock()))

    def deleted(self, key: Key, uid: str) -> None:
        self._remember(key, _Entry(None, uid, self._clock()))

    def _remember(self, key: Key, entry: _Entry) -> None:
        self._entries[key] = entry
        self._by_namespace.setdefault(key[1], {})[key] = None

    def _forget(self, key: Key) -> None:
        del self._entries[key]
        keys = self._by_namespace[key[1]]
        keys.pop(key, None)
        if not keys:
            del self._by_namespace[key[1]]

    def __len__(self) -> int:
        return len(self._entries)

    def written(self, key: Key, uid: str, resource_version: str) -> ObservedObject | ObservedNamespace | None:
        """Our last write of `key` when it is this very version: what a watch event of it would record.

        An object's version never changes content, so the cache can keep this record instead of
        building the same one again from the event (managedFields and all), once for every object written.
        """
        entry = self._entries.get(key)
        if entry is None or entry.written is None:
            return None
        written = entry.written
        return written if written.uid == uid and written.resource_version == resource_version else None

    def echo(self, key: Key, uid: str, resource_version: str) -> bool:
        """Is this watch event our own last write coming back, and nothing newer? Then forget the write.

        Such an event brings nothing the reconcile that wrote it did not already know, so it needs no
        reconcile of its own: during a roll-out that would be one more pass per object written.
        """
        entry = self._entries.get(key)
        if entry is None or entry.written is None:
            return False
        same = entry.written.uid == uid and entry.written.resource_version == resource_version
        if same:
            self._forget(key)
        return same

    def _current(self, key: Key, cached: ObservedObject | ObservedNamespace | None) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.at > _EXPIRY_SECONDS:
            self._forget(key)
            return None
        if entry.written is None:
            caught_up = cached is None or cached.uid != entry.uid
        else:
            caught_up = cached is not None and (
                cached.uid != entry.uid
                or _newer_or_same(cached.resource_version, entry.written.resource_version)
            )
        if caught_up:
            self._forget(key)
            return None
        return entry

    def objects(self, namespace: str, cached: Iterable[ObservedObject]) -> list[ObservedObject]:
        """The namespace's objects as the cache has them, with our newer writes laid over."""
        by_key: dict[Key, ObservedObject | None] = {(o.kind, namespace, o.name): o for o in cached}
        for key in list(self._by_namespace.get(namespace, ())):
            entry = self._current(key, by_key.get(key))
            if entry is not None and key[0] not in {"Namespace", "ServiceAccount"}:
                by_key[key] = cast("ObservedObject | None", entry.written)
        return [observed for observed in by_key.values() if observed is not None]

    def one(self, key: Key, cached: _Record | None) -> _Record | None:
        """One object (the Namespace, the default ServiceAccount) as we last know it."""
        entry = self._current(key, cached)
        return cached if entry is None else cast("_Record | None", entry.written)
