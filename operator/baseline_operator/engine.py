"""The reconcile engine: a per-namespace work queue over the watch caches, and the status writer.

Watch events only *enqueue* a namespace name (deduplicated, so a burst of events costs one pass).
Workers then read that namespace's records from the caches, let the planner compute the plan, and
execute its writes through `kube.KubeApi`. Per-baseline results are gathered and written to each
SecurityBaseline's status, debounced, and only when they changed. A failed namespace is retried
with exponential back-off; nothing is retried in a tight loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from baseline_operator import kube
from baseline_operator.drift import (
    MAX_RECENT_DRIFT,
    DriftAction,
    DriftRecord,
    FindingKey,
    established,
    finding_key,
    reported_in,
)
from baseline_operator.fights import Fight, FightSettings, FightTracker
from baseline_operator.metrics import MetricsRecorder
from baseline_operator.observed import observe_namespace, observe_object, thaw
from baseline_operator.planner import (
    NON_BLOCKING,
    Apply,
    BaselineOutcome,
    Delete,
    NamespaceView,
    Policy,
    Problem,
    Reason,
    plan_namespace,
    restores_isolation,
    stage_of,
)
from baseline_operator.recent_writes import RecentWrites
from baseline_operator.selection import Selection, select_namespaces
from baseline_operator.spec import MetadataEnforcement, Mode
from baseline_operator.status import (
    NamespaceResult,
    ProblemEntry,
    State,
    build_status,
    same_status,
    timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    from baseline_operator.fights import Key
    from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, ObservedPolicy
    from baseline_operator.planner import Action, Finding, NamespacePlan

logger = logging.getLogger("baseline_operator.engine")


class ClusterView(Protocol):
    """Read access to the watched objects (the cluster cache, or plain records in tests)."""

    def namespace(self, name: str) -> ObservedNamespace | None: ...
    def namespace_names(self) -> Collection[str]: ...
    def baselines(self) -> list[ObservedBaseline]: ...
    def objects(self, namespace: str) -> list[ObservedObject]: ...
    def default_service_account(self, namespace: str) -> ObservedObject | None: ...
    def policies(self, namespace: str) -> list[ObservedPolicy]: ...
    def cluster_roles(self) -> frozenset[str]: ...
    def served_admin_tiers(self) -> frozenset[str]: ...
    def admin_blocks_in_force(self) -> frozenset[tuple[str, str]]: ...


class EventSink(Protocol):
    """Where drift Events go (the rate-limited `events.EventRecorder`, or nowhere)."""

    def warn(self, baseline: str, baseline_uid: str, reason: str, message: str) -> None: ...


class _NoEvents:
    def warn(self, baseline: str, baseline_uid: str, reason: str, message: str) -> None:
        del baseline, baseline_uid, reason, message


@dataclass(frozen=True)
class EngineSettings:
    """How hard the engine works: concurrency, status debounce and retry back-off."""

    workers: int = 32
    status_interval: float = 0.5
    retry_initial: float = 0.5
    retry_max: float = 60.0
    first_pass_patience: float = 60.0
    """Write statuses after this long even if the first pass after start-up is not done."""
    fights: FightSettings = field(default_factory=FightSettings)


@dataclass
class _Retry:
    delay: float
    handle: asyncio.TimerHandle | None = None


@dataclass
class Engine:
    """The queue, the workers and the status writer; fed by the kopf event handlers."""

    api: kube.KubeApi
    policy: Policy
    settings: EngineSettings = field(default_factory=EngineSettings)
    events: EventSink = field(default_factory=_NoEvents)
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.view: ClusterView | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._retries: dict[str, _Retry] = {}
        self._results: dict[str, dict[str, NamespaceResult]] = {}
        self._dirty_baselines: set[str] = set()
        self._recent = RecentWrites()
        # Until every namespace has been reconciled once after start-up, statuses are only partly
        # known: writing them would flap Ready to Progressing and back on every restart.
        self._first_pass: set[str] | None = None
        # Per namespace, per baseline: the generation last brought about there. Findings at that
        # generation are drift; findings before it are the roll-out.
        self._settled: dict[str, dict[str, int]] = {}
        self._fights = FightTracker(self.settings.fights)
        self._fight_owners: dict[Key, str] = {}
        self._recent_drift: dict[str, deque[dict[str, Any]]] = {}
        self._wakeups: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._last_sweep = 0.0
        # For the latency histograms: when a namespace was first enqueued since its last reconcile,
        # and, for namespaces created after start-up, when they were first seen.
        self._waiting_since: dict[str, float] = {}
        self._known: set[str] = set()
        self._awaiting_ready: dict[str, float] = {}
        self._started_at = self.now()

    # -- input: events ---------------------------------------------------------------------------

    def attach(self, view: ClusterView) -> None:
        self.view = view

    def enqueue(self, namespace: str) -> None:
        """Reconcile this namespace soon (once, however many events arrive meanwhile)."""
        self._waiting_since.setdefault(namespace, self.monotonic())
        if namespace in self._active:
            self._again.add(namespace)
        elif namespace not in self._queued:
            self._queued.add(namespace)
            self._queue.put_nowait(namespace)

    def heard(self, key: tuple[str, str, str], uid: str, resource_version: str) -> None:
        """A watch event about one object of a namespace: reconcile it, unless it is our own write's echo."""
        if not self._recent.echo(key, uid, resource_version):
            self.enqueue(key[1] or key[2])

    def enqueue_all(self) -> None:
        if self.view is not None:
            for name in self.view.namespace_names():
                self.enqueue(name)

    def baseline_changed(self, name: str) -> None:
        """A baseline was added, changed or deleted: every namespace may be affected."""
        self._dirty_baselines.add(name)
        self.enqueue_all()

    def baseline_deleted(self, name: str) -> None:
        self.metrics.forget_baseline(name)
        self._results.pop(name, None)
        self._recent_drift.pop(name, None)
        for per_baseline in self._settled.values():
            per_baseline.pop(name, None)
        self._dirty_baselines.discard(name)
        self.enqueue_all()

    # -- the loops ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run workers and the status writer until cancelled."""
        tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-{index}")
            for index in range(self.settings.workers)
        ]
        tasks.append(asyncio.create_task(self._write_statuses(), name="status-writer"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for retry in self._retries.values():
                if retry.handle is not None:
                    retry.handle.cancel()
            for _, handle in self._wakeups.values():
                handle.cancel()

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            self._active.add(name)
            try:
                await self.reconcile(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconciling namespace %s failed; retrying", name)
                self._retry_later(name)
            finally:
                self._active.discard(name)
            if name in self._again:
                self._again.discard(name)
                self.enqueue(name)

    def _retry_later(self, name: str) -> None:
        retry = self._retries.setdefault(name, _Retry(self.settings.retry_initial))
        if retry.handle is not None:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            retry.handle = None
            self.enqueue(name)

        retry.handle = loop.call_later(retry.delay, fire)
        retry.delay = min(retry.delay * 2, self.settings.retry_max)

    # -- one namespace -----------------------------------------------------------------------------

    def _view_of(self, name: str) -> NamespaceView:
        assert self.view is not None  # noqa: S101 - handlers attach the caches before any event
        recent = self._recent
        return NamespaceView(
            name=name,
            namespace=recent.one(("Namespace", "", name), self.view.namespace(name)),
            baselines=self.view.baselines(),
            objects=recent.objects(name, self.view.objects(name)),
            default_service_account=recent.one(
                ("ServiceAccount", name, "default"), self.view.default_service_account(name)
            ),
            cluster_roles=self.view.cluster_roles(),
            policies=self.view.policies(name),
            admin_tiers=frozenset(MetadataEnforcement(kind) for kind in self.view.served_admin_tiers()),
            admin_blocks=self.view.admin_blocks_in_force(),
        )

    @property
    def first_pass_done(self) -> bool:
        return self._first_pass is not None and not self._first_pass

    async def reconcile(self, name: str) -> None:
        if self._first_pass is None and self.view is not None:
            self._first_pass = set(self.view.namespace_names())
        now = self.monotonic()
        waiting_since = self._waiting_since.pop(name, now)
        view = self._view_of(name)
        self._note_new(name, view, waiting_since)
        plan = plan_namespace(view, self.policy)
        drifting = self._drifting_baselines(plan, view)
        actions, held = self._hold_fought(plan, now)
        failures, done = await self._execute(actions)
        records = self._repairs(done, drifting, now) + self._reports(plan, drifting)
        self._record(plan, failures, held, now)
        self._settle(plan, failures)
        self._publish(records, drifting)
        self._measure(plan, failures, records, started=now, waiting_since=waiting_since)
        if view.namespace is None:
            self._forget_namespace(name)
        if now - self._last_sweep > self.settings.fights.window:
            self._last_sweep = now
            self._fights.sweep(now)
            self._fight_owners = {
                key: owner for key, owner in self._fight_owners.items() if key in self._fights
            }
        if self._first_pass is not None:
            self._first_pass.discard(name)
        # An unavailable API comes back; so can a permission (nothing tells us when RBAC is restored).
        retry = any(problem.reason in _RETRIED for problems in failures.values() for problem in problems)
        if retry:
            self._retry_later(name)
        else:
            self._retries.pop(name, None)

    def _note_new(self, name: str, view: NamespaceView, seen: float) -> None:
        """Start the created -> applied clock for a namespace created since start-up."""
        if name in self._known or view.namespace is None:
            return
        self._known.add(name)
        created = view.namespace.created
        # creationTimestamp has whole seconds: a namespace stamped in the second we started counts as new.
        if created and dt.datetime.fromisoformat(created) >= self._started_at.replace(microsecond=0):
            self._awaiting_ready[name] = seen

    def _measure(
        self,
        plan: NamespacePlan,
        failures: Mapping[str, list[Problem]],
        records: Iterable[DriftRecord],
        *,
        started: float,
        waiting_since: float,
    ) -> None:
        done = self.monotonic()
        self.metrics.reconcile_duration.observe(done - started)
        for record in records:
            kind = record.finding.kind
            self.metrics.drift_found(record.baseline, kind, record.finding.reason.value)
            if record.action in {DriftAction.REPAIRED, DriftAction.PAUSED}:
                self.metrics.repaired(record.baseline, kind, done - waiting_since)
            if record.action is DriftAction.PAUSED:
                self.metrics.fight(record.baseline, kind)
        for problems in failures.values():
            for problem in problems:
                self.metrics.reconcile_error(problem.reason.value)
        seen = self._awaiting_ready.get(plan.namespace)
        if seen is None:
            return
        if not plan.outcomes:
            # Selected by no baseline: nothing to apply. Unless a baseline created with it is only late:
            # watches of different kinds are not ordered, so its clock keeps running a few seconds.
            if done - seen > _SELECTION_GRACE_SECONDS:
                del self._awaiting_ready[plan.namespace]
        elif not failures and not any(o.failed or o.waiting for o in plan.outcomes.values()):
            del self._awaiting_ready[plan.namespace]
            self.metrics.namespace_ready_latency.observe(done - seen)

    def _drifting_baselines(self, plan: NamespacePlan, view: NamespaceView) -> dict[str, ObservedBaseline]:
        """Baselines, by name, whose findings here are drift, not roll-out."""
        settled = self._settled.get(plan.namespace, {})
        return {
            baseline.name: baseline
            for baseline in view.baselines
            if baseline.name in plan.outcomes and established(baseline, view, settled.get(baseline.name))
        }

    def _hold_fought(
        self, plan: NamespacePlan, now: float
    ) -> tuple[list[Action], list[tuple[Action, Fight]]]:
        """Split the plan's writes into those to make and those held back by a paused fight."""
        actions: list[Action] = []
        held: list[tuple[Action, Fight]] = []
        for action in plan.actions:
            fight = self._fights.fight(_key(action.finding), now)
            if fight is not None and fight.paused(now):
                held.append((action, fight))
            else:
                actions.append(action)
        return actions, held

    async def _execute(self, actions: Iterable[Action]) -> tuple[dict[str, list[Problem]], list[Action]]:
        """Run the writes stage by stage (see `planner.Stage`), each stage's at once.

        Failures per baseline (other writes go on, later stages too: a failed allow must not keep the
        default deny away), and what succeeded.
        """
        failures: dict[str, list[Problem]] = {}
        done: list[Action] = []
        for _, staged in itertools.groupby(actions, key=stage_of):
            stage = list(staged)
            results = await asyncio.gather(*(self._run(action) for action in stage), return_exceptions=True)
            for action, result in zip(stage, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    failures.setdefault(action.baseline, []).append(_problem_for(action, result))
                elif result is not None:
                    failures.setdefault(action.baseline, []).append(result)
                else:
                    done.append(action)
        return failures, done

    async def _run(self, action: Action) -> Problem | None:
        if isinstance(action, Delete):
            await self.api.delete(kube.KINDS[action.kind], action.namespace, action.name, uid=action.uid)
            self._recent.deleted((action.kind, action.namespace, action.name), action.uid)
            return None
        kind, metadata = action.body["kind"], action.body["metadata"]
        key = (kind, metadata.get("namespace", ""), metadata["name"])
        body = action.body
        if action.recreate and action.live_uid is not None:
            await self.api.delete(
                kube.KINDS[kind], metadata.get("namespace"), metadata["name"], uid=action.live_uid
            )
            self._recent.deleted(key, action.live_uid)
            # The uid precondition was the delete's; the object created next gets a new one.
            body = {**body, "metadata": {k: v for k, v in metadata.items() if k != "uid"}}
        # A create must not take over an object of someone else's that appeared meanwhile: without
        # force, a conflicting field makes the apply fail instead.
        stored = await self.api.apply(
            body, force=not action.create_only_if_absent, field_manager=action.field_manager
        )
        self._recent.wrote(key, observe_namespace(stored) if kind == "Namespace" else observe_object(stored))
        return None

    def _repairs(
        self, done: Iterable[Action], drifting: Mapping[str, ObservedBaseline], now: float
    ) -> list[DriftRecord]:
        """A record per drift repaired; the fight tracker hears of the repairs that may be a fight.

        Only a modification by a named field manager can be a fight (Argo CD with another manifest,
        a script): repairing it harder would only make a write storm, so such repairs may pause.
        A deletion never counts (one write per repair: a delete loop costs the deleter as much as
        us), and neither does any change to what keeps the namespace isolated (`restores_isolation`):
        those are repaired every time, whoever keeps changing them.
        """
        records: list[DriftRecord] = []
        for action in done:
            if action.baseline not in drifting or (isinstance(action, Apply) and action.gives_back):
                continue
            finding = action.finding
            if not _may_be_fought(finding):
                records.append(DriftRecord(action.baseline, finding, DriftAction.REPAIRED, self.now()))
                continue
            key = _key(finding)
            fight = self._fights.repaired(key, now, finding.changed_by)
            self._fight_owners[key] = action.baseline
            if fight is None:
                records.append(DriftRecord(action.baseline, finding, DriftAction.REPAIRED, self.now()))
            else:
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
                        self.now(),
                        other_writer=fight.other_writer,
                        paused_for=fight.backoff,
                    )
                )
        return records

    def _reports(self, plan: NamespacePlan, drifting: Mapping[str, ObservedBaseline]) -> list[DriftRecord]:
        """A record per drift newly found that is only reported (Audit mode, or not ours to repair)."""
        records: list[DriftRecord] = []
        for name, baseline in drifting.items():
            outcome = plan.outcomes[name]
            reported = self._reported(baseline, plan.namespace)
            found = [*outcome.unrepairable, *(outcome.findings if outcome.mode is Mode.AUDIT else ())]
            records += [
                DriftRecord(name, finding, DriftAction.REPORTED, self.now())
                for finding in found
                if finding_key(finding) not in reported
            ]
        return records

    def _reported(self, baseline: ObservedBaseline, namespace: str) -> frozenset[FindingKey]:
        previous = self._results.get(baseline.name, {}).get(namespace)
        if previous is not None:
            return frozenset(
                (entry.kind, entry.namespace, entry.name, entry.reason) for entry in previous.problems
            )
        # First look since start-up: what the stored status already shows was reported before.
        return reported_in(baseline.status.get("problems") or (), namespace)

    def _record(
        self,
        plan: NamespacePlan,
        failures: Mapping[str, list[Problem]],
        held: Iterable[tuple[Action, Fight]],
        now: float,
    ) -> None:
        for baseline, results in self._results.items():
            if baseline not in plan.outcomes and results.pop(plan.namespace, None) is not None:
                self._dirty_baselines.add(baseline)
                self.metrics.drifted(baseline, plan.namespace, {})
                self.metrics.metadata_openings(baseline, plan.namespace, 0)
        fighting: dict[str, list[ProblemEntry]] = {}
        for action, fight in held:
            fighting.setdefault(action.baseline, []).append(
                _fighting_entry(action.finding, fight, self.now(), now)
            )
        fights = self._fights_in(plan.namespace, now)
        for baseline, outcome in plan.outcomes.items():
            result = _result(
                outcome, failures.get(baseline, []), fighting.get(baseline, []), fights.get(baseline, [])
            )
            per_namespace = self._results.setdefault(baseline, {})
            if per_namespace.get(plan.namespace) != result:
                per_namespace[plan.namespace] = result
                self._dirty_baselines.add(baseline)
                self.metrics.drifted(baseline, plan.namespace, _drifted_by_kind(result))
                openings = sum(entry.reason == Reason.METADATA_REACHABLE.value for entry in result.problems)
                self.metrics.metadata_openings(baseline, plan.namespace, openings)

    def _fights_in(self, namespace: str, now: float) -> dict[str, list[str]]:
        """Per baseline, the fights over objects of this namespace; wake up when one changes state."""
        found: dict[str, list[str]] = {}
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
            self._wake(namespace, fight.paused_until if fight.paused(now) else fight.probation_until, now)
        return found

    def _wake(self, namespace: str, at: float, now: float) -> None:
        """Reconcile `namespace` again at monotonic time `at` (a pause ends, a probation ends)."""
        scheduled = self._wakeups.get(namespace)
        if scheduled is not None and scheduled[0] <= at:
            return
        if scheduled is not None:
            scheduled[1].cancel()

        def fire() -> None:
            self._wakeups.pop(namespace, None)
            self.enqueue(namespace)

        handle = asyncio.get_running_loop().call_later(max(0.0, at - now) + 0.05, fire)
        self._wakeups[namespace] = (at, handle)

    def _settle(self, plan: NamespacePlan, failures: Mapping[str, list[Problem]]) -> None:
        settled = self._settled.setdefault(plan.namespace, {})
        for baseline in list(settled):
            if baseline not in plan.outcomes:
                del settled[baseline]
        for baseline, outcome in plan.outcomes.items():
            # Only a baseline fully brought about is settled: what it writes later is no drift.
            if not outcome.failed and not outcome.waiting and baseline not in failures:
                settled[baseline] = outcome.generation
        if not settled:
            del self._settled[plan.namespace]

    def _publish(self, records: Iterable[DriftRecord], drifting: Mapping[str, ObservedBaseline]) -> None:
        """Events and the status's recent-drift list for each drift (all of drifting baselines)."""
        for record in records:
            baseline = drifting[record.baseline]
            self.events.warn(baseline.name, baseline.uid, record.event_reason.value, record.message())
            recent = self._recent_drift.get(baseline.name)
            if recent is None:
                stored = thaw(baseline.status.get("recentDrift") or [])
                recent = self._recent_drift[baseline.name] = deque(stored, maxlen=MAX_RECENT_DRIFT)
            recent.appendleft(record.as_status())
            self._dirty_baselines.add(baseline.name)

    def _forget_namespace(self, name: str) -> None:
        self.metrics.forget_namespace(name)
        self._known.discard(name)
        self._awaiting_ready.pop(name, None)
        self._settled.pop(name, None)
        self._fights.forget_namespace(name)
        for key in [key for key in self._fight_owners if key[1] == name]:
            del self._fight_owners[key]
        scheduled = self._wakeups.pop(name, None)
        if scheduled is not None:
            scheduled[1].cancel()

    # -- status ------------------------------------------------------------------------------------

    async def _write_statuses(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(self.settings.status_interval)
            if self.view is None or not self._dirty_baselines:
                continue
            if not self.first_pass_done and loop.time() - started < self.settings.first_pass_patience:
                continue
            dirty, self._dirty_baselines = self._dirty_baselines, set()
            baselines = {baseline.name: baseline for baseline in self.view.baselines()}
            for name in sorted(dirty):
                baseline = baselines.get(name)
                if baseline is None:
                    continue
                try:
                    await self._write_status(baseline)
                except kube.ApiError as error:
                    logger.warning("status of %s not written (%s); retrying", name, error)
                    self._dirty_baselines.add(name)
                except Exception:
                    # One baseline's status must not stop the writer for all others (nor the engine).
                    logger.exception("status of %s not written", name)

    def status_of(self, baseline: ObservedBaseline) -> dict[str, Any]:
        assert self.view is not None  # noqa: S101
        selection = Selection()
        if baseline.spec is not None:
            live = (self.view.namespace(name) for name in self.view.namespace_names())
            selection = select_namespaces(
                baseline.spec,
                ((ns.name, ns.labels) for ns in live if ns is not None and not ns.terminating),
                self.policy.protected_namespaces,
            )
        recent = self._recent_drift.get(baseline.name)
        return build_status(
            generation=baseline.generation,
            spec_error=str(baseline.error) if baseline.error is not None else None,
            matched=selection.selected,
            protected_skipped=selection.protected,
            results=self._results.get(baseline.name, {}),
            previous=baseline.status,
            now=self.now(),
            recent_drift=list(recent)
            if recent is not None
            else thaw(baseline.status.get("recentDrift") or []),
        )

    async def _write_status(self, baseline: ObservedBaseline) -> None:
        status = self.status_of(baseline)
        counts = {
            State.COMPLIANT: status["compliantNamespaces"],
            State.DRIFTED: status["driftedNamespaces"],
            State.CONFLICT: status["conflictNamespaces"],
            State.ERROR: status["errorNamespaces"],
        }
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
        self.metrics.baseline_state(baseline.name, counts, ready=ready)
        # The cached status is frozen (tuples for lists): thaw it, or `[] != ()` writes every time.
        if same_status(status, thaw(baseline.status)):
            return
        await self.api.patch_status(kube.SECURITY_BASELINE, baseline.name, status)

    def mark_status_dirty(self, name: str) -> None:
        self._dirty_baselines.add(name)

    def namespace_results(self, baseline: str) -> Mapping[str, NamespaceResult]:
        return self._results.get(baseline, {})


_RETRIED = frozenset({Reason.API_ERROR, Reason.FORBIDDEN})
"""Failures retried with back-off (up to `retry_max`); an invalid object waits for a new spec instead."""
_SELECTION_GRACE_SECONDS = 10.0
"""How long a new namespace that no baseline selects yet still counts as new for the ready latency."""


def _problem_for(action: Action, error: BaseException) -> Problem:
    finding = action.finding
    reason = Reason.API_ERROR
    if isinstance(error, kube.ForbiddenError):
        reason = Reason.FORBIDDEN
    elif isinstance(error, kube.InvalidError):
        reason = Reason.INVALID
    elif not isinstance(error, kube.ApiError):
        logger.error(
            "unexpected error on %s %s/%s", finding.kind, finding.namespace, finding.name, exc_info=error
        )
    verb = "delete" if isinstance(action, Delete) else "apply"
    return Problem(
        finding.namespace,
        finding.section,
        reason,
        f"could not {verb} {finding.kind} {finding.name}: {error}",
        finding.kind,
        finding.name,
    )


_DRIFT_REASONS = frozenset(
    {Reason.MISSING.value, Reason.MODIFIED.value, Reason.UNEXPECTED.value, Reason.FIGHTING.value}
)


def _drifted_by_kind(result: NamespaceResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in result.problems:
        if entry.reason in _DRIFT_REASONS:
            counts[entry.kind] = counts.get(entry.kind, 0) + 1
    return counts


def _may_be_fought(finding: Finding) -> bool:
    return finding.reason is Reason.MODIFIED and bool(finding.changed_by) and not restores_isolation(finding)


def _key(finding: Finding) -> Key:
    return (finding.kind, finding.namespace, finding.name)


def _result(
    outcome: BaselineOutcome,
    failures: Iterable[Problem],
    fighting: Iterable[ProblemEntry],
    fights: Iterable[str],
) -> NamespaceResult:
    problems = [*outcome.problems, *failures]
    fighting = list(fighting)
    entries = [
        ProblemEntry(p.namespace, p.kind, p.name, p.section, p.reason.value, p.message) for p in problems
    ]
    entries += fighting
    entries += [_finding_entry(finding) for finding in outcome.unrepairable]
    if outcome.mode is Mode.AUDIT:
        entries += [_finding_entry(finding) for finding in outcome.findings]
    if any(problem.reason not in NON_BLOCKING for problem in problems):
        state = State.ERROR
    elif fighting or outcome.unrepairable or (outcome.mode is Mode.AUDIT and outcome.findings):
        state = State.DRIFTED
    elif outcome.lost_sections:
        state = State.CONFLICT
    else:
        state = State.COMPLIANT
    return NamespaceResult(outcome.generation, state, tuple(entries), tuple(fights))


def _fighting_entry(finding: Finding, fight: Fight, wall_now: dt.datetime, now: float) -> ProblemEntry:
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


def _finding_entry(finding: Finding) -> ProblemEntry:
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
