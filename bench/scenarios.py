"""The benchmark scenarios, run in order on one control plane by `bench.run`.

Each scenario returns a JSON-able dict of its figures. Latencies are taken from watches (when an
object *arrived*, as any client would see it), write counts from the API server's audit log, memory
from /proc. The order matters and is fixed: see `bench.run.run_all`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.harness import (
    CLUSTER_ROLES,
    MANAGED_RESOURCES,
    NAMESPACES,
    NETWORK_POLICIES,
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    SECURITY_BASELINES,
    SERVICE_ACCOUNTS,
    ApiClient,
    Arrivals,
    AuditEntry,
    AuditLog,
    BenchError,
    Key,
    OperatorProcess,
    Readiness,
    cpu_seconds,
    poll_interval,
    wait_for,
)
from bench.profile import recording
from bench.report import curve, summarize
from bench.workload import (
    NAMESPACE_CREATED,
    Workload,
    create_namespace,
    create_namespaces,
    default_account_keys,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
CALIBRATION_MANAGER = "bench-calibration"
"""The calibration client's field manager: not the operator's, so nothing it leaves can look like ours."""
SETTLE_SECONDS = 5.0
QUIESCE_AT_SCALE_SECONDS = 60.0


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run; `QUICK` shrinks every one of them for a smoke run."""

    namespaces: int = 1000
    memory_namespaces: int = 5000
    steady_seconds: float = 300.0
    backstop_interval: float = 120.0
    restart_quiet_seconds: float = 30.0
    idle_creates: int = 30
    burst_rate: float = 20.0
    burst_seconds: float = 30.0
    drift_singles: int = 50
    drift_storm: int = 200
    client_threads: int = 16
    profile: bool = False
    """Record the operator with py-spy during each cold convergence (`bench.profile`)."""
    quick: bool = False


QUICK = Settings(
    namespaces=60,
    memory_namespaces=200,
    steady_seconds=40.0,
    backstop_interval=15.0,
    restart_quiet_seconds=10.0,
    idle_creates=5,
    burst_rate=10.0,
    burst_seconds=3.0,
    drift_singles=5,
    drift_storm=25,
    quick=True,
)


@dataclass
class Bench:
    """One control plane, the operator on it and what the scenarios share."""

    settings: Settings
    state: Path
    cluster: LocalCluster
    api: ApiClient
    audit: AuditLog
    workload: Workload
    arrivals: Arrivals
    operator_kubeconfig: Path
    operator: OperatorProcess | None = None
    load: list[str] = field(default_factory=list)
    """The namespaces the baseline selects, oldest first."""
    operator_throttled: float = 0.0
    operator_cpus: frozenset[int] | None = None
    """Where the operator may run when it next starts (the pinned scale runs); None: any CPU."""

    @classmethod
    def prepare(cls, settings: Settings, state: Path, cluster: LocalCluster) -> Bench:
        """Install the CRD and the operator's namespace, and start watching."""
        api = ApiClient(cluster.kubeconfig)
        crd = yaml.safe_load((REPO / "crds" / "securitybaseline.yaml").read_text())
        api.create(crd).ok()
        wait_for(
            lambda: api.get(SECURITY_BASELINES.path()).status == 200,  # noqa: PLR2004 - HTTP OK
            timeout=60,
            what="the SecurityBaseline CRD is served",
            interval=0.2,
        )
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}).ok()
        workload = Workload.load()
        return cls(
            settings=settings,
            state=state,
            cluster=cluster,
            api=api,
            audit=AuditLog(cluster.audit_log),
            workload=workload,
            arrivals=Arrivals(api, workload.watches()),
            operator_kubeconfig=cluster.write_kubeconfig(
                state / "operator.kubeconfig", user=OPERATOR_USER, groups=("system:masters",)
            ),
        )

    def close(self) -> None:
        self.stop_operator()
        self.arrivals.stop()
        self.audit.close()

    # -- the operator -----------------------------------------------------------------------------

    def start_operator(self, *, backstop: bool = True, profile: dict[str, Any] | None = None) -> Readiness:
        """Start the operator and wait until it is ready; without `backstop`, at its default interval.

        With `profile` (and `--profile`), py-spy records the start until ready into that dict.
        """
        arguments = ("--backstop-interval", str(self.settings.backstop_interval)) if backstop else ()
        self.operator = OperatorProcess(
            self.operator_kubeconfig, self.state / "operator.log", arguments, cpus=self.operator_cpus
        )
        namespaces = self.namespace_count()
        self.operator.start()
        if profile is None:
            return self.operator.wait_ready(namespaces)
        with self.profiling(f"start-{namespaces}", profile):
            return self.operator.wait_ready(namespaces)

    def profiling(self, what: str, found: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
        """With `--profile`, py-spy on the running operator while the block runs, summed up into `found`."""
        if not self.settings.profile:
            return contextlib.nullcontext()
        output = self.state / f"profile-{what}-{time.time():.0f}.txt"
        return recording(self.running.pid, output, found)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator_throttled += self.operator.throttled
            self.operator = None

    @property
    def running(self) -> OperatorProcess:
        if self.operator is None:
            raise BenchError("the operator is not running")
        return self.operator

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each control-plane process, the operator and this benchmark."""
        used = {"bench": time.process_time()}
        for name, process in self.cluster.processes.items():
            if process.popen is not None:
                used[name] = cpu_seconds(process.popen.pid)
        if self.operator is not None:
            used["operator"] = cpu_seconds(self.operator.pid)
        return used

    def cpu_since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.cpu()
        return {name: round(now[name] - used, 1) for name, used in before.items() if name in now}

    def watched_objects(self) -> int:
        """Objects of every kind the operator watches: what its start-up has to list and index."""
        kinds = [NAMESPACES, SERVICE_ACCOUNTS, *MANAGED_RESOURCES, CLUSTER_ROLES, SECURITY_BASELINES]
        return sum(len(self.api.get(resource.path()).ok().body["items"]) for resource in kinds)

    def namespace_count(self) -> int:
        return len(self.api.get(NAMESPACES.path()).ok().body["items"])

    def quiesce(self, *, quiet: float = 10.0, timeout: float = 300.0) -> float:
        """Wait until the operator has neither written (late Events, statuses) nor reconciled for `quiet` s.

        Returns the time waited. A big change leaves the operator a backlog of watch events (the echoes of
        the operator's own writes, quota status updates) that it works through after the last write.
        """
        started = time.time()
        count, changed = self.running.reconciles(), started
        while True:
            time.sleep(1.0)
            now = time.time()
            latest = self.running.reconciles()
            if latest != count:
                count, changed = latest, now
            writes = [entry.received for entry in self.audit.between(started - quiet) if entry.is_write]
            last_activity = max([*writes, changed])
            if now - last_activity >= quiet and now - started >= quiet / 2:
                return round(now - started, 1)
            if now - started > timeout:
                raise BenchError(f"the operator kept working for {timeout:.0f} s")

    # -- the baseline -----------------------------------------------------------------------------

    def create_baseline(self) -> str:
        return str(self.api.create(self.workload.document).ok().body["metadata"]["uid"])

    def delete_baseline(self) -> None:
        path = SECURITY_BASELINES.path(None, self.workload.name)
        self.api.request("DELETE", path).ok()
        wait_for(lambda: self.api.get(path).status == 404, timeout=120, what="the baseline is gone")  # noqa: PLR2004

    def baseline_status(self) -> dict[str, Any]:
        body = self.api.get(SECURITY_BASELINES.path(None, self.workload.name)).ok().body
        return dict(body.get("status") or {})

    def compliant(self, namespaces: int) -> bool:
        """Whether the status says: Ready, every one of `namespaces` compliant."""
        status = self.baseline_status()
        ready = any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in status.get("conditions") or []
        )
        return ready and status.get("compliantNamespaces") == namespaces == status.get("matchedNamespaces")

    # -- namespaces -------------------------------------------------------------------------------

    def add_namespaces(self, names: list[str]) -> dict[str, float]:
        """Create selected namespaces in parallel and wait for their default ServiceAccounts."""
        created = create_namespaces(self.api, names, threads=self.settings.client_threads)
        self.load += names
        keys = default_account_keys(names)
        wait_for(
            lambda: self.arrivals.missing(keys) == 0,
            timeout=120 + len(names) / 10,
            what="the controller-manager creates every default ServiceAccount",
            interval=0.2,
        )
        return created

    def completion(self, namespaces: Iterable[str], since: float) -> list[float]:
        """Per namespace, seconds from `since` until its last object arrived (sorted)."""
        done = [self.arrivals.latest(self.workload.keys(namespace)) for namespace in namespaces]
        return sorted(round(at - since, 3) for at in done if at is not None)


def _writes(entries: Iterable[AuditEntry]) -> list[AuditEntry]:
    return [entry for entry in entries if entry.is_write]


def _by_resource(entries: Iterable[AuditEntry]) -> dict[str, int]:
    counts = Counter(
        f"{entry.verb} {entry.resource}{'/' + entry.subresource if entry.subresource else ''}"
        for entry in entries
    )
    return dict(sorted(counts.items()))


# -- 7 (first part). Memory with nothing to manage -----------------------------------------------------


def memory_idle(bench: Bench) -> dict[str, Any]:
    """The operator on a cluster with only the system namespaces and no baseline."""
    watched = bench.watched_objects()
    readiness = bench.start_operator()
    time.sleep(SETTLE_SECONDS)
    memory = bench.running.memory()
    namespaces = bench.namespace_count()
    bench.stop_operator()
    return {
        "namespaces": namespaces,
        **vars(memory),
        "readiness": {"watched_objects": watched, **vars(readiness)},
    }


# -- 1. Calibration ------------------------------------------------------------------------------------


def calibration(bench: Bench) -> dict[str, Any]:
    """A bare client applies what the operator would, as fast as the API server accepts; then undoes it.

    The objects are owned by a real SecurityBaseline of the same name (so the garbage collector
    leaves them alone and the bodies are the operator's byte for byte) while the operator is not
    running. Afterwards the objects are deleted and the Namespace/ServiceAccount fields released,
    so cold convergence starts from the very same namespaces in the very same state.
    """
    api, workload, arrivals = bench.api, bench.workload, bench.arrivals
    uid = bench.create_baseline()
    bodies = [body for namespace in bench.load for body in workload.objects(namespace, uid)]
    keys = workload.all_keys(bench.load)
    throttled = api.throttled
    cpu = bench.cpu()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(bench.settings.client_threads) as pool:
        replies = list(pool.map(lambda body: api.apply(body, manager=CALIBRATION_MANAGER), bodies))
    answered = time.monotonic()
    failed = [reply for reply in replies if reply.status >= 400]  # noqa: PLR2004 - HTTP errors
    if failed:
        raise BenchError(f"{len(failed)} calibration applies failed, e.g. {failed[0]}")
    done = wait_for(
        lambda: arrivals.latest(keys), timeout=600, what="every calibration object is seen", interval=0.1
    )
    cpu = bench.cpu_since(cpu)
    result = {
        "client": f"http.client, {bench.settings.client_threads} threads, keep-alive, server-side apply",
        "namespaces": len(bench.load),
        "requests": len(bodies),
        "seconds": round(done - started, 2),
        "answered_after_s": round(answered - started, 2),
        "requests_per_second": round(len(bodies) / (done - started), 1),
        "throttled_429": api.throttled - throttled,
        "cpu_seconds": cpu,
        "completion_s": curve(bench.completion(bench.load, started)),
    }
    _undo_calibration(bench, keys)
    return result


def _undo_calibration(bench: Bench, keys: list[Key]) -> None:
    api = bench.api

    def undo(namespace: str) -> None:
        for resource in MANAGED_RESOURCES:
            api.delete_managed(resource, namespace)
        for body in bench.workload.released(namespace):
            api.apply(body, manager=CALIBRATION_MANAGER).ok()

    with concurrent.futures.ThreadPoolExecutor(bench.settings.client_threads) as pool:
        list(pool.map(undo, bench.load))
    wait_for(
        lambda: bench.arrivals.present(keys) == 0,
        timeout=600,
        what="every calibration object and field is gone",
        interval=0.2,
    )
    bench.delete_baseline()
    time.sleep(SETTLE_SECONDS)


# -- 2. Cold convergence -------------------------------------------------------------------------------


def cold_convergence(bench: Bench, *, backstop: bool = True) -> dict[str, Any]:
    """N namespaces exist and the operator is ready; one baseline is created: until all is compliant.

    `backstop` as in `Bench.start_operator`: False runs the operator at its default interval.
    """
    watched = bench.watched_objects()
    readiness = bench.start_operator(backstop=backstop)
    keys = bench.workload.all_keys(bench.load)
    profile: dict[str, Any] = {}
    with bench.profiling(f"cold-{len(bench.load)}", profile):
        result = _converge(bench, keys)
    if profile:
        result["profile"] = profile
    result["operator_ready_before"] = {"watched_objects": watched, **vars(readiness)}
    return result


def _converge(bench: Bench, keys: list[Key]) -> dict[str, Any]:
    since = time.time()
    cpu = bench.cpu()
    reconciles = bench.running.reconciles()
    bench.create_baseline()
    started = time.monotonic()
    objects_at: float | None = None
    status_at: float | None = None
    deadline = started + 3600
    interval = poll_interval(len(keys))  # the status is seen within `interval`
    while objects_at is None or status_at is None:
        if time.monotonic() > deadline:
            raise BenchError("the baseline did not converge within an hour")
        if objects_at is None:
            objects_at = bench.arrivals.latest(keys)
        if status_at is None and bench.compliant(len(bench.load)):
            status_at = time.monotonic()
        bench.audit.poll()
        time.sleep(interval)
    cpu = bench.cpu_since(cpu)
    reconciles = bench.running.reconciles() - reconciles
    time.sleep(2.0)
    entries = bench.audit.between(since)
    memory = bench.running.memory()
    return {
        "namespaces": len(bench.load),
        "seconds": round(max(objects_at, status_at) - started, 2),
        "objects_seen_after_s": round(objects_at - started, 2),
        "status_compliant_after_s": round(status_at - started, 2),
        "operator_writes": len(_writes(entries)),
        "operator_requests": _by_resource(entries),
        "reconciles": reconciles,
        "cpu_seconds": cpu,
        "memory_after": vars(memory),
        "completion_s": curve(bench.completion(bench.load, started)),
    }


# -- 4. Drift repair -----------------------------------------------------------------------------------


def drift_repair(bench: Bench) -> dict[str, Any]:
    """Managed objects deleted one at a time, then a storm of deletions at once: time to repair."""
    settings = bench.settings
    singles = bench.load[: settings.drift_singles]
    storm = bench.load[settings.drift_singles : settings.drift_singles + max(1, settings.drift_storm // 5)]
    if len(singles) + len(storm) > len(bench.load):
        raise BenchError("not enough namespaces for the drift scenario")
    settled = bench.quiesce(quiet=SETTLE_SECONDS)
    return {
        "settled_first_s": settled,
        "single": single_deletions(bench, singles),
        "storm": _storm(bench, storm),
    }


def single_deletions(bench: Bench, namespaces: list[str]) -> dict[str, Any]:
    arrivals = bench.arrivals
    since = time.time()
    latencies: list[float] = []
    for namespace in namespaces:
        key = ("NetworkPolicy", namespace, "baseline-default-deny")
        before = wait_for(partial(arrivals.arrival, key), timeout=30, what=f"{key} exists")
        bench.api.delete(NETWORK_POLICIES, namespace, key[2]).ok()
        back = wait_for(partial(arrivals.renewed, key, before.uid), timeout=60, what=f"{key} is re-created")
        # Both ends as the watch saw them: the DELETE's answer can reach this busy process after the
        # re-created object does.
        latencies.append(back.at - (arrivals.left(key, before.uid) or back.at))
        time.sleep(0.2)
    time.sleep(2.0)
    writes = [e for e in _writes(bench.audit.between(since)) if e.resource == NETWORK_POLICIES.plural]
    return {
        "deleted": "NetworkPolicy baseline-default-deny, one namespace after the other",
        "measured": "watch saw it deleted -> watch saw the re-created one (new uid)",
        **summarize(latencies),
        "operator_object_writes": len(writes),
        "writes_per_repair": round(len(writes) / max(1, len(latencies)), 2),
        "latencies_ms": [round(1000 * value, 1) for value in latencies],
    }


def _storm(bench: Bench, namespaces: list[str]) -> dict[str, Any]:
    arrivals = bench.arrivals
    managed = {resource.kind for resource in MANAGED_RESOURCES}
    keys = [key for key in bench.workload.all_keys(namespaces) if key[0] in managed]
    before = {key: wait_for(partial(arrivals.arrival, key), timeout=30, what=str(key)) for key in keys}

    def delete_all(namespace: str) -> None:
        for resource in MANAGED_RESOURCES:
            bench.api.delete_managed(resource, namespace)

    since = time.time()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(delete_all, namespaces))
    deleted = time.monotonic()

    def all_back() -> list[float] | None:
        back = [arrivals.renewed(key, before[key].uid) for key in keys]
        return None if any(found is None for found in back) else [f.at for f in back if f is not None]

    repaired = wait_for(all_back, timeout=300, what="the storm is repaired", interval=0.02)
    left = [arrivals.left(key, before[key].uid) or started for key in keys]
    time.sleep(2.0)
    entries = bench.audit.between(since)
    object_writes = [e for e in _writes(entries) if e.resource in {r.plural for r in MANAGED_RESOURCES}]
    events = [e for e in _writes(entries) if e.resource == "events"]
    latencies = [back - gone for back, gone in zip(repaired, left, strict=True)]
    return {
        "objects": len(keys),
        "namespaces": len(namespaces),
        "measured": "per object: watch saw it deleted -> watch saw the re-created one (new uid)",
        "deleting_took_s": round(deleted - started, 2),
        "all_repaired_after_s": round(max(repaired) - started, 2),
        "all_repaired_after_last_deletion_s": round(max(repaired) - max(left), 2),
        **summarize(latencies),
        "operator_object_writes": len(object_writes),
        "writes_per_repair": round(len(object_writes) / len(keys), 2),
        "events_posted": len(events),
        "latencies_ms": [round(1000 * value, 1) for value in sorted(latencies)],
    }


# -- 5. Steady state -----------------------------------------------------------------------------------


def steady_state(bench: Bench) -> dict[str, Any]:
    """Nothing changes for a while, through at least one backstop pass: what the operator costs at rest."""
    quiesced = bench.quiesce()
    operator = bench.running
    reconciles_before = operator.reconciles()
    cpu = bench.cpu()
    start = time.time()
    time.sleep(bench.settings.steady_seconds)
    end = time.time()
    cpu = bench.cpu_since(cpu)
    reconciles = operator.reconciles() - reconciles_before
    memory = operator.memory()
    time.sleep(2.0)
    entries = bench.audit.between(start, end)
    reads = [entry for entry in entries if entry.is_read]
    namespaces = bench.namespace_count()
    return {
        "namespaces": namespaces,
        "selected_namespaces": len(bench.load),
        "seconds": round(end - start, 1),
        "quiesced_first_s": quiesced,
        "backstop_interval_s": bench.settings.backstop_interval,
        "reconciles": reconciles,
        "backstop_passes": round(reconciles / namespaces, 2),
        "operator_writes": len(_writes(entries)),
        "writes": [entry.describe() for entry in _writes(entries)][:20],
        "reads": len(reads),
        "reads_per_minute": round(len(reads) / ((end - start) / 60), 1),
        "requests": _by_resource(entries),
        "cpu_seconds": cpu,
        "memory": vars(memory),
    }


# -- 6. Restart ----------------------------------------------------------------------------------------


def restart(bench: Bench) -> dict[str, Any]:
    """The operator is stopped and started again with nothing changed: writes, and time until ready."""
    bench.quiesce()
    watched = bench.watched_objects()
    since = time.time()
    stopping = time.monotonic()
    bench.stop_operator()
    stopped = time.monotonic()
    # At the default backstop interval, as in production: a backstop pass would be a change of its own.
    profile: dict[str, Any] = {}
    readiness = bench.start_operator(backstop=False, profile=profile)
    time.sleep(bench.settings.restart_quiet_seconds)
    time.sleep(2.0)
    entries = bench.audit.between(since)
    writes = _writes(entries)
    return {
        "namespaces": bench.namespace_count(),
        "watched_objects": watched,
        "backstop_interval": "default",
        "stop_took_s": round(stopped - stopping, 2),
        "live_after_s": readiness.live_s,
        "handling_events_after_s": readiness.events_s,
        "ready_after_s": readiness.ready_s,
        "first_pass_reconciles": readiness.reconciles,
        "observed_for_s": round(readiness.ready_s + bench.settings.restart_quiet_seconds, 1),
        "operator_writes": len(writes),
        "writes": [entry.describe() for entry in writes][:20],
        "reads": len([entry for entry in entries if entry.is_read]),
        "requests": _by_resource(entries),
        "memory": vars(bench.running.memory()),
        **({"profile": profile} if profile else {}),
    }


# -- 3. Create latency ---------------------------------------------------------------------------------


def create_latency(bench: Bench) -> dict[str, Any]:
    """New namespaces, one at a time and then in a burst: creation answered -> all objects seen."""
    return {"idle": _idle_creates(bench), "burst": burst_creates(bench)}


def _idle_creates(bench: Bench) -> dict[str, Any]:
    created: list[float] = []
    names = [f"bench-idle-{index:03d}" for index in range(bench.settings.idle_creates)]
    for name in names:
        created.append(create_namespace(bench.api, name))
        bench.load.append(name)
        wait_for(partial(bench.arrivals.latest, bench.workload.keys(name)), timeout=60, what=f"{name} done")
        time.sleep(0.5)
    return _create_figures(bench, names, created)


def burst_creates(bench: Bench, prefix: str = "bench-burst") -> dict[str, Any]:
    settings = bench.settings
    count = round(settings.burst_rate * settings.burst_seconds)
    names = [f"{prefix}-{index:04d}" for index in range(count)]
    started = time.monotonic()

    def create_on_time(index: int) -> float:
        time.sleep(max(0.0, started + index / settings.burst_rate - time.monotonic()))
        return create_namespace(bench.api, names[index])

    with concurrent.futures.ThreadPoolExecutor(settings.client_threads) as pool:
        created = list(pool.map(create_on_time, range(len(names))))
    bench.load += names
    keys = bench.workload.all_keys(names)
    wait_for(
        lambda: bench.arrivals.latest(keys), timeout=600, what="every burst namespace is done", interval=0.2
    )
    applies = len(bench.workload.keys(names[0])) if names else 0
    return {
        "rate_per_second": settings.burst_rate,
        "seconds": settings.burst_seconds,
        "applies_per_second_asked": settings.burst_rate * applies,
        "creating_took_s": round(max(created, default=started) - started, 2),
        **_create_figures(bench, names, created),
    }


def _create_figures(bench: Bench, names: list[str], created: list[float]) -> dict[str, Any]:
    """Latencies from creation, and how they split: the default SA appearing, then the rest of the operator.

    The default ServiceAccount is created by whichever comes first: the controller-manager, or the
    operator's apply of its token-mount field (an apply answered 201 in the audit log).
    """
    latencies: list[float] = []
    accounts: list[float] = []
    operator: list[float] = []
    for name, answered in zip(names, created, strict=True):
        done = bench.arrivals.latest(bench.workload.keys(name))
        account = bench.arrivals.arrival(default_account_keys([name])[0])
        seen = bench.arrivals.arrival((NAMESPACE_CREATED, "", name))
        if done is None or account is None:
            continue
        # Created = the earliest sign of it: the create's answer or the watch event, whichever came first.
        at = min(answered, seen.at) if seen is not None else answered
        latencies.append(done - at)
        accounts.append(account.at - at)
        operator.append(done - max(at, account.at))
    wanted = set(names)
    created_by_operator = sum(
        1
        for entry in bench.audit.between(0)
        if entry.resource == "serviceaccounts"
        and entry.code == http.HTTPStatus.CREATED
        and entry.namespace in wanted
    )
    return {
        **summarize(latencies),
        "default_service_account": summarize(accounts),
        "default_service_accounts_created_by_operator": created_by_operator,
        "after_default_service_account": summarize(operator),
        "latencies_ms": [round(1000 * value, 1) for value in latencies],
    }


# -- 7. Memory at scale --------------------------------------------------------------------------------


def memory_at_scale(bench: Bench) -> dict[str, Any]:
    """Fill up to `memory_namespaces` selected namespaces, wait for compliance, sample RSS."""
    missing = bench.settings.memory_namespaces - len(bench.load)
    names = [f"bench-fill-{index:05d}" for index in range(max(0, missing))]
    cpu = bench.cpu()
    started = time.monotonic()
    create_namespaces(bench.api, names, threads=bench.settings.client_threads)
    created = time.monotonic()
    bench.load += names
    keys = bench.workload.all_keys(names)
    done = started
    if keys:
        done = wait_for(
            lambda: bench.arrivals.latest(keys),
            timeout=3600,
            what="every added namespace is compliant",
            interval=0.5,
        )
    cpu = bench.cpu_since(cpu)
    wait_for(
        lambda: bench.compliant(len(bench.load)),
        timeout=600,
        what="the status says every namespace is compliant",
        interval=1.0,
    )
    compliant, compliant_at = time.time(), time.monotonic()
    memory_compliant = bench.running.memory()
    try:
        quiet: float | str = bench.quiesce(quiet=SETTLE_SECONDS, timeout=QUIESCE_AT_SCALE_SECONDS)
    except BenchError:
        quiet = f"still writing after {QUIESCE_AT_SCALE_SECONDS:.0f} s"
    measured = time.time()
    memory = bench.running.memory()
    late = _writes(bench.audit.between(compliant, measured))
    return {
        "selected_namespaces": len(bench.load),
        "namespaces": bench.namespace_count(),
        "added": len(names),
        "creating_took_s": round(created - started, 1),
        "converged_after_s": round(done - started, 1),
        "status_compliant_after_s": round(compliant_at - started, 1),
        "cpu_seconds": cpu,
        **vars(memory),
        "memory_when_compliant": vars(memory_compliant),
        "quiet_after_compliant": quiet,
        "operator_writes_after_compliant": len(late),
        "writes_after_compliant": _by_resource(late),
        "completion_s": curve(bench.completion(names, started)),
    }


# -- 8. Pods: what the audit of the workload rules keeps ----------------------------------------------

PODS = 1000
PODS_PER_NAMESPACE = 20


def _bench_pod(index: int) -> dict[str, Any]:
    """A Pod as a Deployment's replica would be: two containers, a security context, resources."""
    deployment = f"app-{index // 3:04d}"
    container = {
        "image": f"registry.example.com/team/{deployment}@sha256:{index // 3:064x}",
        "imagePullPolicy": "Always",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{deployment}-{index:05d}", "labels": {"app": deployment}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},  # the bench baseline enforces `restricted`
            },
            "containers": [{"name": "app", **container}, {"name": "proxy", **container}],
        },
    }


def pods_memory(bench: Bench) -> dict[str, Any]:
    """Memory of the Pod projection: in process (tracemalloc, exact) and the operator's RSS (noisy).

    The Pods are created unscheduled (the bench cluster has no node): the API objects are what the
    operator's watch keeps, whether a kubelet runs them or not.
    """
    import tracemalloc  # noqa: PLC0415 - only this scenario

    from baseline_operator.pods import observe_pod  # noqa: PLC0415

    bodies = [_bench_pod(index) for index in range(PODS)]
    for body in bodies:
        body["metadata"].update(namespace="bench-pods", uid=f"uid-{body['metadata']['name']}")
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = [observe_pod(body) for body in bodies]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    projection = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del kept
    # The bench baseline's quota allows 20 Pods per namespace.
    namespaces = bench.load[: -(-PODS // PODS_PER_NAMESPACE)]
    if len(namespaces) * PODS_PER_NAMESPACE < PODS:
        raise BenchError(f"{PODS} Pods need {-(-PODS // PODS_PER_NAMESPACE)} selected namespaces")
    rss_before = bench.running.memory()

    def create(index: int) -> None:
        namespace = namespaces[index // PODS_PER_NAMESPACE]
        bench.api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=_bench_pod(index)).ok()

    with concurrent.futures.ThreadPoolExecutor(bench.settings.client_threads) as pool:
        list(pool.map(create, range(PODS)))
    time.sleep(SETTLE_SECONDS)  # the watch's events are in the cache by then (nothing to write)
    rss_after = bench.running.memory()
    for namespace in namespaces:
        path = f"/api/v1/namespaces/{namespace}/pods"
        bench.api.request("DELETE", path, query={"gracePeriodSeconds": "0"}).ok()
    return {
        "pods": PODS,
        "projection_bytes_per_1000_pods": round(projection * 1000 / PODS),
        "rss_before_mib": rss_before.rss_mib,
        "rss_after_mib": rss_after.rss_mib,
        "rss_delta_mib_per_1000_pods": round((rss_after.rss_mib - rss_before.rss_mib) * 1000 / PODS, 1),
    }
