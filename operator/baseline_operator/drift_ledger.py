"""The engine's memory of drift: what was brought about where, what drifted since, who fights over what.

- Settled generations: per namespace and baseline, the generation last fully brought about there. What a
  baseline finds at that generation is drift; what it finds before is its roll-out (drift.established).
- Fights: repairs that may be a revert war (a named field manager's modification of an object that does not
  keep the namespace isolated) go to the fight tracker, which may pause the next one; everything else is
  repaired every time (see `may_be_fought`).
- Recent drift: the last few drift records per baseline, for `status.recentDrift`.

No I/O and no clock of its own: the engine passes the times in, so it is tested without waiting.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from baseline_operator.drift import MAX_RECENT_DRIFT, DriftAction, DriftRecord, established, finding_key
from baseline_operator.fights import Fight, FightSettings, FightTracker
from baseline_operator.observed import thaw
from baseline_operator.planner import Apply, Reason, restores_isolation
from baseline_operator.spec import Mode

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable, Mapping

    from baseline_operator.drift import FindingKey
    from baseline_operator.fights import Key
    from baseline_operator.observed import ObservedBaseline
    from baseline_operator.planner import Action, Finding, NamespacePlan, NamespaceView, Problem

logger = logging.getLogger(__name__)


def may_be_fought(finding: Finding) -> bool:
    """Only a modification by a named field manager of something that is not the floor can be a fight.

    A deletion never counts (re-creating costs one write, as much as deleting), and neither does any change
    to what keeps the namespace isolated: those are repaired every time, whoever makes them.
    """
    return finding.reason is Reason.MODIFIED and bool(finding.changed_by) and not restores_isolation(finding)


def finding_key_of(finding: Finding) -> Key:
    return (finding.kind, finding.namespace, finding.name)


class DriftLedger:
    """Settled generations, fights and recent drift, for the namespaces the engine reconciles."""

    def __init__(self, fights: FightSettings, now: Callable[[], dt.datetime]) -> None:
        self._now = now
        self._settled: dict[str, dict[str, int]] = {}
        self._fights = FightTracker(fights)
        self._fight_owners: dict[Key, str] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._window = fights.window
        self._last_sweep = 0.0

    # -- drift or roll-out ----------------------------------------------------------------------------

    def drifting(self, plan: NamespacePlan, view: NamespaceView) -> dict[str, ObservedBaseline]:
        """Baselines, by name, whose findings here are drift, not roll-out."""
        settled = self._settled.get(plan.namespace, {})
        return {
            baseline.name: baseline
            for baseline in view.baselines
            if baseline.name in plan.outcomes and established(baseline, view, settled.get(baseline.name))
        }

    def settle(self, plan: NamespacePlan, failures: Mapping[str, list[Problem]]) -> None:
        """Remember which baselines are fully brought about here now; what they write later is no drift."""
        settled = self._settled.setdefault(plan.namespace, {})
        for baseline in list(settled):
            if baseline not in plan.outcomes:
                del settled[baseline]
        for baseline, outcome in plan.outcomes.items():
            if not outcome.failed and not outcome.waiting and baseline not in failures:
                settled[baseline] = outcome.generation
        if not settled:
            del self._settled[plan.namespace]

    # -- fights ---------------------------------------------------------------------------------------

    def hold_fought(
        self, actions: Iterable[Action], now: float
    ) -> tuple[list[Action], list[tuple[Action, Fight]]]:
        """Split writes into those to make and those held back by a paused fight."""
        going: list[Action] = []
        held: list[tuple[Action, Fight]] = []
        for action in actions:
            fight = self._fights.fight(finding_key_of(action.finding), now)
            if fight is not None and fight.paused(now):
                held.append((action, fight))
            else:
                going.append(action)
        return going, held

    def repairs(
        self, done: Iterable[Action], drifting: Mapping[str, ObservedBaseline], now: float
    ) -> list[DriftRecord]:
        """A record per drift repaired; the fight tracker hears of those that may be a fight."""
        records: list[DriftRecord] = []
        for action in done:
            if action.baseline not in drifting or (isinstance(action, Apply) and action.gives_back):
                continue
            finding = action.finding
            if not may_be_fought(finding):
                records.append(DriftRecord(action.baseline, finding, DriftAction.REPAIRED, self._now()))
                continue
            key = finding_key_of(finding)
            fight = self._fights.repaired(key, now, finding.changed_by)
            self._fight_owners[key] = action.baseline
            if fight is None:
                records.append(DriftRecord(action.baseline, finding, DriftAction.REPAIRED, self._now()))
                continue
            logger.warning(
                "%s %s/%s repaired too often; repairs paused for %.0f s",
                finding.kind,
                finding.namespace,
                finding.name,
                fight.backoff,
            )
            records.append(
                DriftRecord(
                    action.baseline,
                    finding,
                    DriftAction.PAUSED,
                    self._now(),
                    other_writer=fight.other_writer,
                    paused_for=fight.backoff,
                )
            )
        return records

    def fights_in(self, namespace: str, now: float) -> tuple[dict[str, list[str]], list[float]]:
        """Per baseline, the fights over objects of this namespace; and when each changes state next."""
        found: dict[str, list[str]] = {}
        wake: list[float] = []
        for fight in self._fights.fights(now):
            if fight.key[1] != namespace:
                continue
            owner = self._fight_owners.get(fight.key)
            if owner is None:
                continue
            kind, _, name = fight.key
            found.setdefault(owner, []).append(
                f"{kind} {namespace}/{name} with {fight.other_writer or 'an unnamed writer'}"
            )
            wake.append(fight.paused_until if fight.paused(now) else fight.probation_until)
        return found, wake

    def sweep(self, now: float) -> None:
        """Forget fights quiet for long enough (at most once per fight window)."""
        if now - self._last_sweep <= self._window:
            return
        self._last_sweep = now
        self._fights.sweep(now)
        self._fight_owners = {key: owner for key, owner in self._fight_owners.items() if key in self._fights}

    # -- reported drift -------------------------------------------------------------------------------

    def reports(
        self,
        plan: NamespacePlan,
        drifting: Mapping[str, ObservedBaseline],
        reported: Callable[[ObservedBaseline, str], frozenset[FindingKey]],
    ) -> list[DriftRecord]:
        """A record per drift newly found that is only reported (Audit mode, or not ours to repair)."""
        records: list[DriftRecord] = []
        for name, baseline in drifting.items():
            outcome = plan.outcomes[name]
            known = reported(baseline, plan.namespace)
            found = [*outcome.unrepairable, *(outcome.findings if outcome.mode is Mode.AUDIT else ())]
            records += [
                DriftRecord(name, finding, DriftAction.REPORTED, self._now())
                for finding in found
                if finding_key(finding) not in known
            ]
        return records

    def remember(self, baseline: ObservedBaseline, record: DriftRecord) -> None:
        """Into the baseline's recent drift (continuing from its stored status after a restart)."""
        recent = self._recent.get(baseline.name)
        if recent is None:
            stored = thaw(baseline.status.get("recentDrift") or [])
            recent = self._recent[baseline.name] = deque(stored, maxlen=MAX_RECENT_DRIFT)
        recent.appendleft(record.as_status())

    def recent(self, baseline: ObservedBaseline) -> list[dict[str, Any]]:
        recent = self._recent.get(baseline.name)
        return list(recent) if recent is not None else thaw(baseline.status.get("recentDrift") or [])

    # -- forgetting -----------------------------------------------------------------------------------

    def forget_namespace(self, name: str) -> None:
        self._settled.pop(name, None)
        self._fights.forget_namespace(name)
        for key in [key for key in self._fight_owners if key[1] == name]:
            del self._fight_owners[key]

    def forget_baseline(self, name: str) -> None:
        self._recent.pop(name, None)
        for per_baseline in self._settled.values():
            per_baseline.pop(name, None)

    def namespaces(self) -> set[str]:
        """The namespaces the ledger remembers something of."""
        return set(self._settled) | {key[1] for key in self._fight_owners}
