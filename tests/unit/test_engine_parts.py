"""The engine's parts, each on its own, and the engine over a fake API (the one boundary it talks through)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from cluster_records import FULL, POLICY, baseline, converged, namespace
from fake_api import FakeApi

from baseline_operator.compare import ManagerEntry
from baseline_operator.drift_ledger import may_be_fought
from baseline_operator.engine import Engine, EngineSettings
from baseline_operator.fights import FightSettings
from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject
from baseline_operator.planner import Finding, Reason
from baseline_operator.status import NamespaceResult, State
from baseline_operator.status_writer import MAX_STATUS_WAIT, STATUS_SHARE, StatusWriter
from baseline_operator.work_queue import Priority, WorkQueue


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- the work queue -----------------------------------------------------------------------------------


def test_the_queue_hands_a_name_out_once_however_often_it_is_enqueued_and_again_if_enqueued_while_held() -> (
    None
):
    async def scenario() -> list[str]:
        queue = WorkQueue()
        for _ in range(3):
            queue.enqueue("team-a")
        name, _ = await queue.take()
        assert queue.waiting() == 0
        queue.enqueue("team-a")  # an event while a worker holds it
        assert queue.waiting() == 0
        queue.done(name)
        again, _ = await queue.take()
        return [name, again]

    assert run(scenario()) == ["team-a", "team-a"]


def test_events_go_before_the_backstops_pass_and_a_backstop_name_moves_up_when_an_event_needs_it() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        for name in ("a", "b", "c"):
            queue.enqueue(name, Priority.BACKSTOP)
        queue.enqueue("new")
        queue.enqueue("c")  # an event for one already waiting as backstop work
        return [(await queue.take())[0] for _ in range(4)]

    assert run(scenario()) == ["new", "c", "a", "b"]


def test_a_crashed_workers_namespace_is_given_back_and_retries_back_off() -> None:
    async def scenario() -> tuple[str, float]:
        queue = WorkQueue(retry_initial=0.01, retry_max=0.04)
        queue.enqueue("a")
        name, _ = await queue.take()
        queue.give_back(name)
        name, _ = await queue.take()
        queue.done(name)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            queue.retry_later("a")
            await queue.take()
            queue.done("a")
        return name, loop.time() - started

    name, took = run(scenario())
    assert name == "a"
    assert took >= 0.01 + 0.02 + 0.04 - 0.005  # doubling, up to the maximum


# -- fights ---------------------------------------------------------------------------------------------


def finding(kind: str, name: str, reason: Reason, changed_by: str | None = "argocd") -> Finding:
    return Finding(kind, "team-a", name, "networkPolicy", reason, changed_by=changed_by)


def test_only_modifications_by_a_named_manager_of_what_is_not_the_floor_can_be_a_fight() -> None:
    assert may_be_fought(finding("ResourceQuota", "baseline-quota", Reason.MODIFIED))
    assert not may_be_fought(finding("ResourceQuota", "baseline-quota", Reason.MISSING))
    assert not may_be_fought(finding("ResourceQuota", "baseline-quota", Reason.MODIFIED, changed_by=None))
    for kind, name in (
        ("NetworkPolicy", "baseline-default-deny"),
        ("NetworkPolicy", "baseline-block-metadata-0a1b2c3d4e"),
        ("Namespace", "team-a"),
        ("ServiceAccount", "default"),
    ):
        assert not may_be_fought(finding(kind, name, Reason.MODIFIED))


# -- the status writer ---------------------------------------------------------------------------------


class Baselines:
    def __init__(self, *baselines: ObservedBaseline) -> None:
        self._baselines = list(baselines)

    def baselines(self) -> list[ObservedBaseline]:
        return self._baselines

    def namespaces(self) -> list[ObservedNamespace]:
        return [namespace("team-a", {"e2e": "x"})]


def status_writer(api: FakeApi, **settings: Any) -> StatusWriter:
    return StatusWriter(
        api,  # type: ignore[arg-type]
        Engine(FakeApi(), POLICY).metrics,  # type: ignore[arg-type]
        protected_namespaces=frozenset(),
        recent_drift=lambda _: [],
        now=lambda: dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        **settings,
    )


def test_a_failed_status_write_is_kept_and_written_after_its_back_off_whatever_failed() -> None:
    api = FakeApi()
    api.fail_status = 2
    # Builds that cost no CPU time: only the back-off makes a write wait.
    writer = status_writer(api, retry_initial=0.01, cpu_clock=lambda: 0.0)
    org = baseline("org", {**FULL, "namespaceSelector": {"matchLabels": {"e2e": "x"}}})
    writer.record("org", "team-a", NamespaceResult(1, State.COMPLIANT))

    async def scenario() -> None:
        for _ in range(20):
            await writer.write_due(Baselines(org))
            if "org" in api.statuses:
                return
            await asyncio.sleep(0.01)

    run(scenario())
    assert api.statuses["org"]["compliantNamespaces"] == 1


def test_a_costly_status_build_is_not_repeated_before_its_cost_over_the_share_has_passed() -> None:
    clock = [1000.0]

    class SlowBaselines(Baselines):
        cost = 0.006  # a selection as slow as judging thousands of namespaces

        def namespaces(self) -> list[ObservedNamespace]:
            clock[0] += self.cost
            return super().namespaces()

    api = FakeApi()
    writer = status_writer(api, clock=lambda: clock[0], cpu_clock=lambda: clock[0])
    org = baseline("org", {**FULL, "namespaceSelector": {"matchLabels": {"e2e": "x"}}})
    view = SlowBaselines(org)
    writer.record("org", "team-a", NamespaceResult(1, State.DRIFTED))
    run(writer.write_due(view))
    assert api.statuses["org"]["driftedNamespaces"] == 1
    writer.record("org", "team-a", NamespaceResult(1, State.COMPLIANT))
    run(writer.write_due(view))
    wait = SlowBaselines.cost / STATUS_SHARE
    assert 1.0 < wait < MAX_STATUS_WAIT
    clock[0] += wait - 0.1
    run(writer.write_due(view))
    assert api.statuses["org"]["driftedNamespaces"] == 1, "built again before its share allowed"
    clock[0] += 0.2
    run(writer.write_due(view))
    assert api.statuses["org"]["compliantNamespaces"] == 1, "the change was kept and written after the wait"
    # However long a build took, a changed status waits at most MAX_STATUS_WAIT.
    clock[0] += 3.0
    view.cost = 1.0
    writer.record("org", "team-a", NamespaceResult(1, State.DRIFTED))
    run(writer.write_due(view))
    assert api.statuses["org"]["driftedNamespaces"] == 1
    writer.record("org", "team-a", NamespaceResult(1, State.COMPLIANT))
    clock[0] += MAX_STATUS_WAIT - 0.1
    run(writer.write_due(view))
    assert api.statuses["org"]["driftedNamespaces"] == 1
    clock[0] += 0.2
    run(writer.write_due(view))
    assert api.statuses["org"]["compliantNamespaces"] == 1


# -- the engine over a fake API -------------------------------------------------------------------------


class ClusterRecords:
    """A cluster view the test changes by hand, as watch events would."""

    def __init__(
        self,
        ns: ObservedNamespace,
        baselines: list[ObservedBaseline],
        objects: list[ObservedObject],
        sa: ObservedObject,
    ) -> None:
        self.ns, self._baselines, self.objects_, self.sa = ns, baselines, objects, sa

    def namespace(self, name: str) -> ObservedNamespace | None:
        return self.ns if name == self.ns.name else None

    def namespace_names(self) -> list[str]:
        return [self.ns.name]

    def namespaces(self) -> list[ObservedNamespace]:
        return [self.ns]

    def baselines(self) -> list[ObservedBaseline]:
        return self._baselines

    def objects(self, namespace_name: str) -> list[ObservedObject]:
        return self.objects_ if namespace_name == self.ns.name else []

    def default_service_account(self, namespace_name: str) -> ObservedObject | None:
        del namespace_name
        return self.sa

    def pods(self, namespace_name: str) -> list[Any]:
        del namespace_name
        return []

    def policies(self, namespace_name: str) -> list[Any]:
        del namespace_name
        return []

    def cluster_roles(self) -> frozenset[str]:
        return frozenset({"view", "edit"})

    def served_admin_tiers(self) -> frozenset[str]:
        return frozenset()

    def admin_blocks_in_force(self) -> frozenset[tuple[str, str]]:
        return frozenset()


def converged_engine(fights: FightSettings | None = None) -> tuple[Engine, FakeApi, ClusterRecords]:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    api = FakeApi()
    clock = [1000.0]
    engine = Engine(
        api,  # type: ignore[arg-type]
        POLICY,
        EngineSettings(fights=fights or FightSettings()),
        monotonic=lambda: clock[0],
    )
    view = ClusterRecords(ns, [base], objects, sa)
    engine.attach(view)
    run(engine.reconcile(ns.name))  # converged: settled, nothing written
    assert api.writes == []
    return engine, api, view


def echo(engine: Engine, api: FakeApi, key: tuple[str, str, str]) -> None:
    """The watch event of our own last write of `key`: afterwards the cache is the truth again."""
    written = api.last_written.get(key)
    if written is not None:
        engine.heard(key, *written)


def test_thirty_deletions_of_the_default_deny_are_thirty_repairs_and_never_a_pause() -> None:
    engine, api, view = converged_engine()
    deny = next(o for o in view.objects_ if o.name == "baseline-default-deny")
    others = [o for o in view.objects_ if o is not deny]
    for _ in range(30):
        view.objects_ = others  # the watch saw it deleted
        run(engine.reconcile(view.ns.name))
        view.objects_ = [*others, deny]  # ...and our re-creation, whose echo the watch delivers
        echo(engine, api, ("NetworkPolicy", view.ns.name, "baseline-default-deny"))
    assert api.writes.count(("apply", "NetworkPolicy", "baseline-default-deny")) == 30
    [result] = engine.namespace_results("org").values()
    assert not [p for p in result.problems if p.reason == Reason.FIGHTING.value]


def test_a_gitops_tool_rewriting_the_quota_is_a_fight_after_three_repairs() -> None:
    engine, api, view = converged_engine(
        FightSettings(max_repairs=3, window=60, initial_backoff=60, max_backoff=240)
    )
    quota = next(o for o in view.objects_ if o.kind == "ResourceQuota")
    edited = ObservedObject.from_body(
        quota.kind,
        quota.namespace,
        quota.name,
        quota.uid,
        {**quota.body, "spec": {"hard": {"pods": "99"}}},
        owned=quota.owned,
        writers=(ManagerEntry("argocd-controller", "Update", "2026-12-01T00:00:00Z"),),
    )
    others = [o for o in view.objects_ if o is not quota]
    for _ in range(5):
        view.objects_ = [*others, edited]
        run(engine.reconcile(view.ns.name))
        echo(engine, api, ("ResourceQuota", view.ns.name, "baseline-quota"))
    assert api.writes.count(("apply", "ResourceQuota", "baseline-quota")) == 3
    [result] = engine.namespace_results("org").values()
    assert any(
        p.reason == Reason.FIGHTING.value and p.changed_by == "argocd-controller" for p in result.problems
    )
