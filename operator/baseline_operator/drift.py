"""Tell drift from roll-out, and describe each drift for status, Events and metrics (pure, no I/O).

The planner finds every object that is not as desired; most such findings are simply the baseline
being rolled out (a new namespace, a new baseline, a changed spec). A finding is *drift* only where the
baseline had already been brought about in that namespace, at the same generation: someone or
something changed the result since. The engine remembers, per (baseline, namespace), the generation
it last settled. After a restart that memory is empty, so the stored status stands in for it: its
`observedGeneration` says the generation was rolled out, and an object carrying the baseline's label
(or a Pod Security label or token setting we own) says this namespace got it.

Each drift becomes one `DriftRecord`: what was found, what was done about it (repaired, reported,
or repair paused because of a fight) and who changed the object, as far as the API says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from baseline_operator.planner import Reason
from baseline_operator.spec import Mode
from baseline_operator.status import MAX_FIELD_TEXT, timestamp

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Mapping

    from baseline_operator.observed import ObservedBaseline
    from baseline_operator.planner import Finding, NamespaceView

MAX_RECENT_DRIFT = 10
_MAX_FIELDS_IN_STATUS = 3


class DriftAction(StrEnum):
    """What the operator did about one drift (`action` in status, and part of each Event)."""

    REPAIRED = "Repaired"
    REPORTED = "Reported"
    PAUSED = "RepairPaused"


class EventReason(StrEnum):
    """The `reason` of the Event posted for a drift."""

    DETECTED = "DriftDetected"
    REPAIRED = "DriftRepaired"
    FIGHT = "DriftFight"


@dataclass(frozen=True)
class DriftRecord:
    """One drift of one object, and what became of it."""

    baseline: str
    finding: Finding
    action: DriftAction
    at: dt.datetime
    other_writer: str | None = None
    """For a fight: the field manager that keeps changing the object."""
    paused_for: float = 0.0

    @property
    def changed_by(self) -> str | None:
        return self.other_writer or self.finding.changed_by

    @property
    def event_reason(self) -> EventReason:
        if self.action is DriftAction.PAUSED:
            return EventReason.FIGHT
        if self.action is DriftAction.REPAIRED:
            return EventReason.REPAIRED
        return EventReason.DETECTED

    def message(self) -> str:
        """The Event's message: namespace, object, what changed, who changed it, what was done."""
        finding = self.finding
        subject = f"{finding.kind} {finding.namespace}/{finding.name}"
        what = {
            Reason.MISSING: "was deleted",
            Reason.MODIFIED: "was modified",
            Reason.UNEXPECTED: "is labelled as managed by the baseline but not wanted",
        }.get(finding.reason, f"drifted ({finding.reason.value})")
        text = f"{subject} {what}"
        if self.changed_by:
            text += f" by {self.changed_by}"
            if finding.since and not self.other_writer:
                text += f" at {finding.since}"
        fields = finding.fields()
        if fields:
            text += f" ({'; '.join(fields[:_MAX_FIELDS_IN_STATUS])})"
        done = {
            DriftAction.REPAIRED: "restored",
            DriftAction.REPORTED: "reported only (Audit mode)",
            DriftAction.PAUSED: (
                f"restored, but repaired too often: repairs paused for {self.paused_for:.0f}s"
            ),
        }[self.action]
        if finding.reason is Reason.UNEXPECTED and self.action is DriftAction.REPORTED:
            done = "reported only (not written by the operator, so never deleted)"
        return f"{text}: {done}"

    def as_status(self) -> dict[str, Any]:
        """Return one entry of `status.recentDrift`."""
        finding = self.finding
        entry: dict[str, Any] = {
            "time": timestamp(self.at),
            "namespace": finding.namespace,
            "kind": finding.kind,
            "name": finding.name,
            "reason": finding.reason.value,
            "action": self.action.value,
        }
        if self.changed_by:
            entry["changedBy"] = self.changed_by
        fields = finding.fields()[:_MAX_FIELDS_IN_STATUS]
        if fields:
            entry["fields"] = [text[:MAX_FIELD_TEXT] for text in fields]
        return entry


def established(baseline: ObservedBaseline, view: NamespaceView, settled_generation: int | None) -> bool:
    """Whether this baseline had already been brought about in this namespace, at its generation."""
    if settled_generation is not None:
        return settled_generation == baseline.generation
    if baseline.status.get("observedGeneration") != baseline.generation:
        return False
    if baseline.spec is not None and baseline.spec.mode is Mode.AUDIT:
        return True  # nothing was written to look for; the status already covered this generation
    if any(live.baseline == baseline.name and live.managed_by_us for live in view.objects):
        return True
    namespace, account = view.namespace, view.default_service_account
    return (namespace is not None and namespace.owns_content) or (
        account is not None and account.owns_content
    )


FindingKey = tuple[str, str, str, str]
"""(kind, namespace, name, reason): the same drift, however its fields change."""


def finding_key(finding: Finding) -> FindingKey:
    return (finding.kind, finding.namespace, finding.name, finding.reason.value)


def reported_in(entries: Iterable[Mapping[str, Any]], namespace: str) -> frozenset[FindingKey]:
    """Findings of `namespace` already shown in a status problem list (after a restart)."""
    return frozenset(
        (str(entry.get("kind")), namespace, str(entry.get("name")), str(entry.get("reason")))
        for entry in entries
        if entry.get("namespace") == namespace
    )
