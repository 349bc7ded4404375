"""Notice a revert war over one object, and step back from it.

When another writer (Argo CD with a different manifest, a script) keeps changing an object we keep
repairing, repairing harder only makes a write storm. Only modifications by a named field manager of
objects that do not keep the namespace isolated are reported here (the engine decides, see
`Engine._repairs`): a deletion, or a change to the default deny, the metadata block, the Pod Security
labels or the token setting, is repaired every time and never paused, or a tenant with a loop of
`kubectl delete` could switch the floor off. After `max_repairs` repairs of
the same object within `window` seconds, repairs of that object pause for `initial_backoff`; the
drift is still reported, and the Conflict condition names the other writer. When the pause ends, one
repair is tried; if the object needs another within `window`, the war is still on and the next pause
is twice as long (up to `max_backoff`). An object that needs no repair for `window` after its last
one is no longer fought over, and once quiet for `max_backoff` its back-off starts over.

Pure bookkeeping over a monotonic clock passed in by the caller, so tests need no waiting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

Key = tuple[str, str, str]
"""(kind, namespace, name) of the object fought over."""


@dataclass(frozen=True)
class FightSettings:
    """How many repairs in how long make a fight, and how long repairs then pause."""

    max_repairs: int = 3
    window: float = 60.0
    initial_backoff: float = 60.0
    max_backoff: float = 1800.0


@dataclass
class _History:
    repairs: deque[float] = field(default_factory=deque)
    last_repair: float = 0.0
    paused_until: float = 0.0
    backoff: float = 0.0
    """The last pause's length; 0 while the object has never been, or is forgiven for being, fought over."""
    other_writer: str | None = None


@dataclass(frozen=True)
class Fight:
    """An object repaired too often: `other_writer` keeps changing it; repairs wait until `paused_until`."""

    key: Key
    other_writer: str | None
    paused_until: float
    backoff: float
    probation_until: float
    """Until then, one more repair means the war goes on (and the next pause is longer)."""

    def paused(self, now: float) -> bool:
        return now < self.paused_until


class FightTracker:
    """Remembers recent repairs per object and decides whether the next one may go ahead."""

    def __init__(self, settings: FightSettings | None = None) -> None:
        self.settings = settings or FightSettings()
        self._histories: dict[Key, _History] = {}

    def fight(self, key: Key, now: float) -> Fight | None:
        """The fight over this object, while there is one (paused, or repaired again after a pause)."""
        history = self._histories.get(key)
        if history is None or not self._fighting(history, now):
            return None
        return self._fight(key, history)

    def repaired(self, key: Key, now: float, other_writer: str | None) -> Fight | None:
        """Record a repair; return the fight if this repair starts a pause."""
        settings = self.settings
        history = self._histories.setdefault(key, _History())
        if history.backoff and now - max(history.last_repair, history.paused_until) > settings.max_backoff:
            history.backoff = 0.0  # quiet for long enough: forgiven
        history.last_repair = now
        history.repairs.append(now)
        while now - history.repairs[0] > settings.window:
            history.repairs.popleft()
        if other_writer:
            history.other_writer = other_writer
        # A known fighter gets one try after its pause; a second repair within the window means the
        # war goes on.
        threshold = 2 if history.backoff else settings.max_repairs
        if len(history.repairs) < threshold:
            return None
        history.backoff = (
            min(settings.max_backoff, history.backoff * 2) if history.backoff else settings.initial_backoff
        )
        history.paused_until = now + history.backoff
        history.repairs.clear()
        return self._fight(key, history)

    def fights(self, now: float) -> Iterator[Fight]:
        for key, history in self._histories.items():
            if self._fighting(history, now):
                yield self._fight(key, history)

    def sweep(self, now: float) -> None:
        """Forget objects quiet for longer than any back-off: memory stays bounded by recent repairs."""
        quiet = [
            key
            for key, history in self._histories.items()
            if now - max(history.last_repair, history.paused_until) > self.settings.max_backoff
        ]
        for key in quiet:
            del self._histories[key]

    def forget_namespace(self, namespace: str) -> None:
        for key in [key for key in self._histories if key[1] == namespace]:
            del self._histories[key]

    def __contains__(self, key: object) -> bool:
        return key in self._histories

    def __len__(self) -> int:
        return len(self._histories)

    def _fight(self, key: Key, history: _History) -> Fight:
        return Fight(
            key,
            history.other_writer,
            history.paused_until,
            history.backoff,
            max(history.paused_until, history.last_repair) + self.settings.window,
        )

    def _fighting(self, history: _History, now: float) -> bool:
        # Paused, or within a window after the pause or the repair that followed it: still at war.
        return bool(history.backoff) and now < self._fight(("", "", ""), history).probation_until
