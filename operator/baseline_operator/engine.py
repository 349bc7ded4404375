"""The reconcile engine: one namespace at a time, read -> plan -> write; it ties the parts together.

The parts, each in its own module and tested on its own:

- `work_queue.WorkQueue`: namespace names waiting for a worker (deduplicated; events before the backstop's
  pass; retries with back-off; timed wake-ups);
- this module's `Engine.reconcile`: one namespace read from the caches (with our own recent writes laid
  over them), planned (planner.py, pure), and written in the builders' order (`planner.Stage`: the allows
  before the default deny, the deny deleted before the allows, a taken-over field given back before our
  apply lets go of it), each write of an existing object with its uid as a precondition;
- `drift_ledger.DriftLedger`: what was brought about where (drift or roll-out), fights, recent drift;
- `status_writer.StatusWriter`: each baseline's per-namespace results, its status written when it changed.

Workers and the status writer are loops; the supervisor (supervision.py, started in handlers.py) runs and
restarts them. A worker that crashes gives its namespace back to the queue: nothing is lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from baseline_operator import failpoints, kube
from baseline_operator.drift import DriftAction, DriftRecord, reported_in
from baseline_operator.drift_ledger import DriftLedger
from baseline_operator.fights import FightSettings
from baseline_operator.metrics import MetricsRecorder
from baseline_operator.observed import observe_namespace, observe_object
from baseline_operator.planner import Delete, NamespaceView, Policy, Problem, Reason, plan_namespace, stage_of
from baseline_operator.recent_writes import RecentWrites
from baseline_operator.spec import MetadataEnforcement
from baseline_operator.status_writer import StatusWriter, drifted_by_kind, fighting_entry, namespace_result
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat
from baseline_operator.work_queue import Priority, WorkQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    from baseline_operator.drift import FindingKey
    from baseline_operator.fights import Fight
    from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, ObservedPolicy
    from baseline_operator.planner import Action, NamespacePlan
    from baseline_operator.pods import ObservedPod
    from baseline_operator.status import ProblemEntry

logger = logging.getLogger("baseline_operator.engine")


class ClusterView(Protocol):
    """Read access to the watched objects (the cluster cache, or plain records in tests)."""

    def namespace(self, name: str) -> ObservedNamespace | None: ...
    def namespace_names(self) -> Collection[str]: ...
    def namespaces(self) -> Iterable[ObservedNamespace]: ...
    def baselines(self) -> list[ObservedBaseline]: ...
    def objects(self, namespace: str) -> list[ObservedObject]: ...
    def default_service_account(self, namespace: str) -> ObservedObject | None: ...
    def policies(self, namespace: str) -> list[ObservedPolicy]: ...
    def pods(self, namespace: str) -> list[ObservedPod]: ...
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
class Engine:
    """One namespace at a time, read -> plan -> write; fed by the watches through its queue."""

    api: kube.KubeApi
    policy: Policy
    settings: EngineSettings = field(default_factory=EngineSettings)
    events: EventSink = field(default_factory=_NoEvents)
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.view: ClusterView | None = None
        settings = self.settings
        self.queue = WorkQueue(
            retry_initial=settings.retry_initial, retry_max=settings.retry_max, monotonic=self.monotonic
        )
        self.ledger = DriftLedger(settings.fights, self.now)
        self.statuses = StatusWriter(
            self.api,
            self.metrics,
            protected_namespaces=self.policy.protected_namespaces,
            recent_drift=self.ledger.recent,
            now=self.now,
            longest_exemption=self.policy.longest_exemption,
            interval=settings.status_interval,
            first_pass_patience=settings.first_pass_patience,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
        )
        self._recent = RecentWrites()
        # Until every namespace has been reconciled once after start-up, statuses are only partly known.
        self._first_pass: set[str] | None = None
        # For the created -> applied histogram: namespaces created since start-up, and when first seen.
        self._known: set[str] = set()
        self._awaiting_ready: dict[str, float] = {}
        self._started_at = self.now()

    # -- input: events --------------------------------------------------------------------------------

    def attach(self, view: ClusterView) -> None:
        self.view = view

    def enqueue(self, namespace: str, priority: Priority = Priority.EVENT) -> None:
        """Reconcile this namespace soon (once, however many events arrive meanwhile)."""
        self.queue.enqueue(namespace, priority)

    def own_write(
        self, key: tuple[str, str, str], uid: str, resource_version: str
    ) -> ObservedObject | ObservedNamespace | None:
        """Our write of `key` at this version, as observed from the API's answer (see RecentWrites)."""
        return self._recent.written(key, uid, resource_version)

    def heard(self, key: tuple[str, str, str], uid: str, resource_version: str) -> None:
        """A watch event about one object of a namespace: reconcile it, unless it is our own write's echo."""
        if not self._recent.echo(key, uid, resource_version):
            self.enqueue(key[1] or key[2])

    def enqueue_all(self, priority: Priority = Priority.EVENT) -> None:
        if self.view is not None:
            for name in self.view.namespace_names():
                self.enqueue(name, priority)

    def baseline_changed(self, name: str) -> None:
        """A baseline was added, changed or deleted: every namespace may be affected."""
        self.statuses.mark_dirty(name)
        self.enqueue_all()

    def exemptions_changed(self) -> None:
        """An exemption started or stopped being in force: every namespace and every status may change."""
        for baseline in self.view.baselines() if self.view is not None else ():
            self.statuses.mark_dirty(baseline.name)
        self.enqueue_all()

    def baseline_deleted(self, name: str) -> None:
        self.metrics.forget_baseline(name)
        self.statuses.forget_baseline(name)
        self.ledger.forget_baseline(name)
        self.enqueue_all()

    def namespaces_gone(self, existing: Collection[str]) -> None:
        """After a resync: forget what is remembered of namespaces deleted while a watch was away."""
        remembered = self.ledger.namespaces() | self.statuses.namespaces() | self._known
        for name in remembered - set(existing):
            for baseline in self.statuses.drop_namespace(name):
                self.metrics.drifted(baseline, name, {})
                self.metrics.metadata_openings(baseline, name, 0)
                self.metrics.workload_violations(baseline, name, {})
            self._forget_namespace(name)

    # -- the loops ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Workers and the status writer, unsupervised (benchmarks and tests drive the engine this way)."""
        tasks = [
            asyncio.create_task(self.work(), name=f"reconcile-{index}")
            for index in range(self.settings.workers)
        ]
        tasks.append(asyncio.create_task(self.write_statuses(), name="status-writer"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            self.queue.cancel_timers()

    async def work(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        """One worker: take a namespace, reconcile it, again; beats while it works or waits."""
        while True:
            name, waiting_since = await self.queue.take(heartbeat)
            try:
                await failpoints.hit("engine.worker")
                await self.reconcile(name, waiting_since)
            except (asyncio.CancelledError, failpoints.FailpointError):
                self.queue.give_back(name)  # the worker goes, its namespace stays queued
                raise
            except Exception:
                logger.exception("reconciling namespace %s failed; retrying", name)
                self.queue.retry_later(name)
            self.queue.done(name)
            heartbeat.beat()

    async def write_statuses(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        assert self.view is not None  # noqa: S101 - handlers attach the caches before starting the loops
        await self.statuses.run(self.view, lambda: self.first_pass_done, heartbeat)

    @property
    def first_pass_done(self) -> bool:
        return self._first_pass is not None and not self._first_pass

    # -- one namespace --------------------------------------------------------------------------------

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
            pods=self.view.pods(name),
            admin_tiers=frozenset(MetadataEnforcement(kind) for kind in self.view.served_admin_tiers()),
            admin_blocks=self.view.admin_blocks_in_force(),
            now=self.now(),
        )

    async def reconcile(self, name: str, waiting_since: float | None = None) -> None:
        if self._first_pass is None and self.view is not None:
            self._first_pass = set(self.view.namespace_names())
        now = self.monotonic()
        view = self._view_of(name)
        self._note_new(name, view, now if waiting_since is None else waiting_since)
        plan = plan_namespace(view, self.policy)
        drifting = self.ledger.drifting(plan, view)
        actions, held = self.ledger.hold_fought(plan.actions, now)
        failures, done = await self._execute(actions)
        records = self.ledger.repairs(done, drifting, now) + self.ledger.reports(
            plan, drifting, self._reported
        )
        self._record(plan, failures, held, now)
        self.ledger.settle(plan, failures)
        self._publish(records, drifting)
        self._measure(plan, failures, records, started=now, waiting_since=waiting_since or now)
        if view.namespace is None:
            self._forget_namespace(name)
        self.ledger.sweep(now)
        if self._first_pass is not None:
            self._first_pass.discard(name)
        # An unavailable API comes back; so can a permission (nothing tells us when RBAC is restored).
        if any(problem.reason in _RETRIED for problems in failures.values() for problem in problems):
            self.queue.retry_later(name)
        else:
            self.queue.succeeded(name)

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
                else:
                    done.append(action)
        return failures, done

    async def _run(self, action: Action) -> None:
        if isinstance(action, Delete):
            await self.api.delete(kube.KINDS[action.kind], action.namespace, action.name, uid=action.uid)
            self._recent.deleted((action.kind, action.namespace, action.name), action.uid)
            return
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

    def _reported(self, baseline: ObservedBaseline, namespace: str) -> frozenset[FindingKey]:
        previous = self.statuses.previous(baseline.name, namespace)
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
        """Each baseline's result here into the status writer (and the gauges that follow it)."""
        for baseline in self.statuses.baselines_with_results():
            if baseline not in plan.outcomes and self.statuses.drop(baseline, plan.namespace):
                self.metrics.drifted(baseline, plan.namespace, {})
                self.metrics.metadata_openings(baseline, plan.namespace, 0)
                self.metrics.workload_violations(baseline, plan.namespace, {})
        fighting: dict[str, list[ProblemEntry]] = {}
        for action, fight in held:
            fighting.setdefault(action.baseline, []).append(
                fighting_entry(action.finding, fight, self.now(), now)
            )
        fights, wake_at = self.ledger.fights_in(plan.namespace, now)
        for at in wake_at:
            self.queue.wake(plan.namespace, at)
        for baseline, outcome in plan.outcomes.items():
            result = namespace_result(
                outcome, failures.get(baseline, []), fighting.get(baseline, []), fights.get(baseline, [])
            )
            if self.statuses.record(baseline, plan.namespace, result):
                self.metrics.drifted(baseline, plan.namespace, drifted_by_kind(result))
                openings = sum(entry.reason == Reason.METADATA_REACHABLE.value for entry in result.problems)
                self.metrics.metadata_openings(baseline, plan.namespace, openings)
                self.metrics.workload_violations(baseline, plan.namespace, dict(result.workload_violations))

    def _publish(self, records: Iterable[DriftRecord], drifting: Mapping[str, ObservedBaseline]) -> None:
        """Events and the status's recent-drift list for each drift."""
        for record in records:
            baseline = drifting[record.baseline]
            self.events.warn(baseline.name, baseline.uid, record.event_reason.value, record.message())
            self.ledger.remember(baseline, record)
            self.statuses.mark_dirty(baseline.name)

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

    def _forget_namespace(self, name: str) -> None:
        self.metrics.forget_namespace(name)
        self._known.discard(name)
        self._awaiting_ready.pop(name, None)
        self.ledger.forget_namespace(name)
        self.queue.forget(name)

    # -- for the handlers and tests -------------------------------------------------------------------

    def mark_status_dirty(self, name: str) -> None:
        self.statuses.mark_dirty(name)

    def namespace_results(self, baseline: str) -> Mapping[str, object]:
        return self.statuses.results(baseline)


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
