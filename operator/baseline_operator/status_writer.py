"""The status aggregator: each baseline's per-namespace results, and its status written when it changed.

Workers hand in one result per (baseline, namespace) after each reconcile; a baseline whose results changed
is marked dirty. The writer wakes every `interval`, builds each dirty baseline's status (status.py, pure) and
patches it only when it differs from the stored one. A failed write is never dropped: the baseline stays
dirty and is tried again after a back-off of its own (0.5 s doubling to 60 s), whatever the error was.

Building a status judges every namespace the baseline might select (12 ms of CPU or more at 10 000
namespaces), and a roll-out changes results all the time. So after each build a baseline waits
`1 / STATUS_SHARE` times the CPU time the build took, never more than `MAX_STATUS_WAIT`: a small
baseline is still written every `interval`, one of 10 000 namespaces every 5 s, and builds use about
0.3 % of a CPU where they take less than 15 ms. CPU time, not elapsed time: in a roll-out the event loop
shares the interpreter with the request threads, and a build's elapsed time counts their turns too.

Until every namespace has been reconciled once after start-up, statuses are only partly known: writing them
would flap Ready to Progressing and back on every restart. So nothing is written before the engine's first
pass, or `first_pass_patience` seconds, whichever comes first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from baseline_operator import failpoints, kube
from baseline_operator.exemptions import DEFAULT_LONGEST, status_entries
from baseline_operator.observed import thaw
from baseline_operator.planner import NON_BLOCKING, Reason
from baseline_operator.selection import Selection, SelectionMemo
from baseline_operator.spec import Mode
from baseline_operator.status import (
    NamespaceResult,
    ProblemEntry,
    State,
    build_status,
    same_status,
    timestamp,
)
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from baseline_operator.fights import Fight
    from baseline_operator.metrics import MetricsRecorder
    from baseline_operator.observed import ObservedBaseline, ObservedNamespace
    from baseline_operator.planner import BaselineOutcome, Finding, Problem

logger = logging.getLogger(__name__)

STATUS_SHARE = 0.003
"""The share of a CPU a baseline's status builds may use (see the module docstring)."""
MAX_STATUS_WAIT = 5.0
"""Seconds: the longest a changed status waits for its build's share."""


class BaselinesView(Protocol):
    """What the writer reads of the cluster (the cluster cache)."""

    def baselines(self) -> list[ObservedBaseline]: ...
    def namespaces(self) -> Iterable[ObservedNamespace]: ...


class StatusWriter:
    """Per-baseline results and the loop that writes them out."""

    def __init__(
        self,
        api: kube.KubeApi,
        metrics: MetricsRecorder,
        *,
        protected_namespaces: frozenset[str],
        recent_drift: Callable[[ObservedBaseline], list[dict[str, Any]]],
        now: Callable[[], dt.datetime],
        longest_exemption: dt.timedelta = DEFAULT_LONGEST,
        interval: float = 0.5,
        first_pass_patience: float = 60.0,
        retry_initial: float = 0.5,
        retry_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._protected = protected_namespaces
        self._recent_drift = recent_drift
        self._now = now
        self._longest_exemption = longest_exemption
        self._interval = interval
        self._patience = first_pass_patience
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._results: dict[str, dict[str, NamespaceResult]] = {}
        self._dirty: set[str] = set()
        self._backoff: dict[str, tuple[float, float]] = {}
        """Per baseline whose last write failed: (not before, next delay)."""
        self._selections: dict[str, SelectionMemo] = {}
        self._not_before: dict[str, float] = {}
        """Per baseline: when its next status build is due, after what its last one cost."""

    # -- results --------------------------------------------------------------------------------------

    def record(self, baseline: str, namespace: str, result: NamespaceResult) -> bool:
        """One reconcile's result; whether it changed (the baseline's status is then due)."""
        per_namespace = self._results.setdefault(baseline, {})
        if per_namespace.get(namespace) == result:
            return False
        per_namespace[namespace] = result
        self._dirty.add(baseline)
        return True

    def drop(self, baseline: str, namespace: str) -> bool:
        """The baseline no longer selects the namespace; whether it had a result there."""
        if self._results.get(baseline, {}).pop(namespace, None) is None:
            return False
        self._dirty.add(baseline)
        return True

    def drop_namespace(self, namespace: str) -> list[str]:
        """The namespace is gone: the baselines that had a result there."""
        return [baseline for baseline in list(self._results) if self.drop(baseline, namespace)]

    def previous(self, baseline: str, namespace: str) -> NamespaceResult | None:
        return self._results.get(baseline, {}).get(namespace)

    def results(self, baseline: str) -> Mapping[str, NamespaceResult]:
        return self._results.get(baseline, {})

    def baselines_with_results(self) -> list[str]:
        return list(self._results)

    def mark_dirty(self, baseline: str) -> None:
        self._dirty.add(baseline)

    def forget_baseline(self, baseline: str) -> None:
        self._results.pop(baseline, None)
        self._dirty.discard(baseline)
        self._backoff.pop(baseline, None)
        self._selections.pop(baseline, None)
        self._not_before.pop(baseline, None)

    def namespaces(self) -> set[str]:
        return {namespace for per_namespace in self._results.values() for namespace in per_namespace}

    # -- writing --------------------------------------------------------------------------------------

    async def run(
        self, view: BaselinesView, first_pass_done: Callable[[], bool], heartbeat: Heartbeat = NO_HEARTBEAT
    ) -> None:
        started = self._clock()
        while True:
            await asyncio.sleep(self._interval)
            heartbeat.beat()
            if not self._dirty:
                continue
            if not first_pass_done() and self._clock() - started < self._patience:
                continue
            await self.write_due(view)

    async def write_due(self, view: BaselinesView) -> None:
        """Write every dirty baseline's status that is not waiting out a back-off."""
        now = self._clock()
        due = {
            name
            for name in self._dirty
            if self._backoff.get(name, (0.0, 0.0))[0] <= now and self._not_before.get(name, 0.0) <= now
        }
        self._dirty -= due
        baselines = {baseline.name: baseline for baseline in view.baselines()}
        for name in sorted(due):
            baseline = baselines.get(name)
            if baseline is None:
                continue
            try:
                await failpoints.hit("status.write")
                await self._write(baseline, view)
            except Exception as error:  # noqa: BLE001 - whatever failed, the status is written later
                delay = self._backoff.get(name, (0.0, self._retry_initial))[1]
                logger.warning("status of %s not written (%s); retrying in %.1f s", name, error, delay)
                self._backoff[name] = (self._clock() + delay, min(delay * 2, self._retry_max))
                self._dirty.add(name)
            else:
                self._backoff.pop(name, None)

    def status_of(self, baseline: ObservedBaseline, view: BaselinesView) -> dict[str, Any]:
        selection = Selection()
        if baseline.spec is not None:
            # The records themselves, not a lookup by name each: at 10 000 namespaces in a roll-out the
            # lookups were more than half of a build's CPU.
            selection = self._selections.setdefault(baseline.name, SelectionMemo()).select(
                baseline.spec,
                ((ns.name, ns.labels) for ns in view.namespaces() if not ns.terminating),
                self._protected,
            )
        return build_status(
            generation=baseline.generation,
            spec_error=str(baseline.error) if baseline.error is not None else None,
            matched=selection.selected,
            protected_skipped=selection.protected,
            results=self._results.get(baseline.name, {}),
            previous=baseline.status,
            now=self._now(),
            recent_drift=self._recent_drift(baseline),
            exemptions=self._exemption_entries(baseline),
            minor_reasons=frozenset(reason.value for reason in NON_BLOCKING),
        )

    def _exemption_entries(self, baseline: ObservedBaseline) -> list[dict[str, Any]]:
        if baseline.spec is None:
            return []
        return status_entries(baseline.spec.exemptions, self._now(), self._longest_exemption)

    async def _write(self, baseline: ObservedBaseline, view: BaselinesView) -> None:
        started = self._cpu_clock()
        status = self.status_of(baseline, view)
        cost = self._cpu_clock() - started
        self._not_before[baseline.name] = self._clock() + min(cost / STATUS_SHARE, MAX_STATUS_WAIT)
        counts = {
            State.COMPLIANT: status["compliantNamespaces"],
            State.DRIFTED: status["driftedNamespaces"],
            State.CONFLICT: status["conflictNamespaces"],
            State.ERROR: status["errorNamespaces"],
        }
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
        self._metrics.baseline_state(baseline.name, counts, ready=ready)
        self._metrics.exemptions(
            baseline.name,
            {
                (str(index), entry["state"]): dt.datetime.fromisoformat(entry["expires"]).timestamp()
                for index, entry in enumerate(status.get("exemptions", []))
            },
        )
        # The cached status is frozen (tuples for lists): thaw it, or `[] != ()` writes every time.
        if same_status(status, thaw(baseline.status)):
            return
        await self._api.patch_status(kube.SECURITY_BASELINE, baseline.name, status)


# -- a namespace's result for one baseline, from its plan's outcome (pure) ------------------------------

_DRIFT_REASONS = frozenset(
    {Reason.MISSING.value, Reason.MODIFIED.value, Reason.UNEXPECTED.value, Reason.FIGHTING.value}
)


def drifted_by_kind(result: NamespaceResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in result.problems:
        if entry.reason in _DRIFT_REASONS:
            counts[entry.kind] = counts.get(entry.kind, 0) + 1
    return counts


def namespace_result(
    outcome: BaselineOutcome,
    failures: Iterable[Problem],
    fighting: Iterable[ProblemEntry],
    fights: Iterable[str],
) -> NamespaceResult:
    problems = [*outcome.problems, *failures]
    fighting = list(fighting)
    entries = [
        ProblemEntry(
            p.namespace,
            p.kind,
            p.name,
            p.section,
            p.reason.value,
            p.message,
            rule=p.rule,
            controls=p.controls,
        )
        for p in problems
    ]
    entries += fighting
    entries += [finding_entry(finding) for finding in outcome.unrepairable]
    if outcome.mode is Mode.AUDIT:
        entries += [finding_entry(finding) for finding in outcome.findings]
    if any(problem.reason not in NON_BLOCKING for problem in problems):
        state = State.ERROR
    elif fighting or outcome.unrepairable or (outcome.mode is Mode.AUDIT and outcome.findings):
        state = State.DRIFTED
    elif outcome.lost_sections:
        state = State.CONFLICT
    else:
        state = State.COMPLIANT
    return NamespaceResult(
        outcome.generation,
        state,
        tuple(entries),
        tuple(fights),
        tuple(sorted(outcome.workload_violations.items())),
    )


def fighting_entry(finding: Finding, fight: Fight, wall_now: dt.datetime, now: float) -> ProblemEntry:
    resume = wall_now + dt.timedelta(seconds=max(0.0, fight.paused_until - now))
    writer = fight.other_writer or "another writer"
    return ProblemEntry(
        finding.namespace,
        finding.kind,
        finding.name,
        finding.section,
        Reason.FIGHTING.value,
        f"{finding.kind} {finding.name} keeps being changed by {writer}; repairs are paused until "
        f"{timestamp(resume)} and the drift is only reported",
        finding.fields(),
        fight.other_writer,
        finding.since,
    )


def finding_entry(finding: Finding) -> ProblemEntry:
    message = {
        Reason.MISSING: f"{finding.kind} {finding.name} is missing",
        Reason.MODIFIED: f"{finding.kind} {finding.name} differs from the baseline",
        Reason.UNEXPECTED: f"{finding.kind} {finding.name} is not wanted by any baseline",
    }.get(finding.reason, f"{finding.kind} {finding.name}: {finding.reason.value}")
    return ProblemEntry(
        finding.namespace,
        finding.kind,
        finding.name,
        finding.section,
        finding.reason.value,
        message,
        finding.fields(),
        finding.changed_by,
        finding.since,
    )
