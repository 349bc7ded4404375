"""Scale: converging 1000, 3000 and 10 000 namespaces, next to a Go client making the same writes.

Each size gets a control plane of its own (a fresh etcd), so no size inherits the tombstones, the
compaction debt or the leftover namespaces of another. On it, in this order:

1. N selected namespaces are created (kube-controller-manager at 400 QPS gives them their default
   ServiceAccounts within seconds instead of minutes);
2. **Go calibration**, pinned then unpinned: `tools/bench-client` (net/http, HTTP/2, 16 workers)
   server-side-applies exactly the operator's bodies for the N namespaces (its own builders wrote them),
   timed until the watch saw the last one; then the same client undoes it;
3. **cold convergence**, unpinned then pinned: the operator is started (at the default backstop
   interval, as in production) and ready, the baseline is created, timed until every object is seen and
   the status says all compliant; between the two, the baseline is deleted with the operator running
   (the release, timed) and the operator stopped;
4. with the pinned operator: **restart** with nothing changed (writes, time until the first pass is
   done), **drift repair** of single deletions, a **burst** of new namespaces, and memory at the end.

Pinned: kube-apiserver, etcd, kube-controller-manager and this benchmark process (its watches and
polls) on CPU 0; the operator, or the calibration client, alone on CPU 1. The ratio then compares the
operator with the client on equal terms, each with one core against a server with one core, instead of
the machine with itself. Unpinned: everything shares both cores, as `make bench`'s other scenarios do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import yaml

from bench import scenarios
from bench.harness import (
    MANAGED_RESOURCES,
    MANAGED_SELECTOR,
    RESOURCES,
    BenchError,
    child_setup,
    pin,
    poll_interval,
)
from bench.scenarios import CALIBRATION_MANAGER, Bench, Settings
from localcluster import LocalCluster
from localcluster.binaries import BENCH_CLIENT, ensure_built

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from bench.harness import Key

logger = logging.getLogger("bench")

SERVER_CPUS = frozenset({0})
"""The API server, etcd, the controller-manager and this benchmark, when pinned."""
CLIENT_CPUS = frozenset({1})
"""The operator or the calibration client, alone, when pinned."""
CONTROLLER_MANAGER_QPS = 400


@dataclass(frozen=True)
class ScaleSettings:
    """The sizes of the scale series and what each size's pinned operator is put through."""

    sizes: tuple[int, ...] = (1000, 3000, 10_000)
    client_workers: int = 16
    burst_rate: float = 20.0
    burst_seconds: float = 15.0
    drift_singles: int = 20
    restart_quiet_seconds: float = 20.0
    profile: bool = False
    """Record the operator with py-spy during each cold convergence."""


QUICK_SCALE = ScaleSettings(
    sizes=(60, 150), burst_rate=10.0, burst_seconds=3.0, drift_singles=5, restart_quiet_seconds=5.0
)


def run_scale(settings: ScaleSettings, state: Path) -> dict[str, Any]:
    """Every size in turn, each on its own control plane; the figures per size (as a string key)."""
    if (os.cpu_count() or 1) < 2:  # noqa: PLR2004 - pinning needs two cores
        raise BenchError("the scale runs pin the server and the client to different CPUs: 2 needed")
    client = ensure_built(BENCH_CLIENT) / "bench-client"
    points: dict[str, Any] = {}
    for size in settings.sizes:
        logger.info("scale: %d namespaces ...", size)
        began = time.monotonic()
        try:
            points[str(size)] = _point(settings, size, state / f"scale-{size}", client)
        except BenchError as error:
            logger.exception("scale: %d namespaces failed", size)
            points[str(size)] = {"error": str(error)}
        logger.info("scale: %d namespaces done in %.0f s", size, time.monotonic() - began)
    return points


def _point(settings: ScaleSettings, size: int, state: Path, client: Path) -> dict[str, Any]:
    cluster = LocalCluster(state / "cluster", controller_manager_qps=CONTROLLER_MANAGER_QPS)
    cluster.start()
    bench: Bench | None = None
    try:
        version = cluster.version().get("gitVersion")
        bench = Bench.prepare(
            replace(
                Settings(),
                namespaces=size,
                burst_rate=settings.burst_rate,
                burst_seconds=settings.burst_seconds,
                restart_quiet_seconds=settings.restart_quiet_seconds,
                profile=settings.profile,
            ),
            state,
            cluster,
        )
        return {"kubernetes": version, **_measure(bench, settings, size, client)}
    finally:
        if bench is not None:
            bench.close()
        cluster.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(state / "cluster" / "etcd")


def _measure(bench: Bench, settings: ScaleSettings, size: int, client: Path) -> dict[str, Any]:
    began = time.monotonic()
    bench.add_namespaces([f"scale-{index:05d}" for index in range(size)])
    point: dict[str, Any] = {"namespaces": size, "namespaces_created_s": round(time.monotonic() - began, 1)}
    calibrator = Calibrator(bench, client, settings.client_workers)
    uid = bench.create_baseline()
    for pinned in (True, False):
        with _pinned(bench, on=pinned):
            point[_label("calibration", pinned=pinned)] = _said(
                f"{size}: Go client {'pinned' if pinned else 'unpinned'}",
                calibrator.apply(uid, pinned=pinned),
            )
        calibrator.undo()
    bench.delete_baseline()

    with _pinned(bench, on=False):
        point["cold_unpinned"] = _said(f"{size}: cold_unpinned", _cold(bench))
        point["release"] = _said(f"{size}: release", _release(bench))
        bench.stop_operator()
    with _pinned(bench, on=True):
        point["cold_pinned"] = _said(f"{size}: cold_pinned", _cold(bench))
        point["restart_pinned"] = _said(f"{size}: restart", scenarios.restart(bench))
        point["drift_pinned"] = scenarios.single_deletions(bench, bench.load[: settings.drift_singles])
        point["burst_pinned"] = scenarios.burst_creates(bench)
        with contextlib.suppress(BenchError):
            bench.quiesce(quiet=scenarios.SETTLE_SECONDS, timeout=scenarios.QUIESCE_AT_SCALE_SECONDS)
        point["memory_end"] = vars(bench.running.memory())
        point["selected_namespaces_end"] = len(bench.load)
    bench.stop_operator()
    # The same burst with the API server on both cores: pinned, the burst asks for about what one core
    # of API server serves, so its latencies are mostly the server's queue.
    with _pinned(bench, on=False):
        bench.start_operator(backstop=False)
        point["burst_unpinned"] = scenarios.burst_creates(bench, prefix="bench-burst-unpinned")
    bench.stop_operator()
    for pinned in (True, False):
        label = _label("", pinned=pinned).strip("_")
        cold, calibration = point[_label("cold", pinned=pinned)], point[_label("calibration", pinned=pinned)]
        point[f"ratio_{label}"] = round(cold["seconds"] / calibration["seconds"], 2)
    return point


def _said(what: str, found: dict[str, Any]) -> dict[str, Any]:
    """Log a phase's headline figures as it ends (a long run can be followed), and pass them on."""
    shown = (
        "seconds",
        "requests_per_second",
        "operator_cpu_ms_per_write",
        "ready_after_s",
        "operator_writes",
    )
    logger.info("scale %s: %s", what, ", ".join(f"{key} {found[key]}" for key in shown if key in found))
    return found


def _label(name: str, *, pinned: bool) -> str:
    return f"{name}_{'pinned' if pinned else 'unpinned'}"


@contextlib.contextmanager
def _pinned(bench: Bench, *, on: bool) -> Iterator[None]:
    """Server side (and this process) on CPU 0, the operator to start on CPU 1; or everything anywhere."""
    every = frozenset(range(os.cpu_count() or 1))
    _pin_server_side(bench, SERVER_CPUS if on else every)
    bench.operator_cpus = CLIENT_CPUS if on else None
    try:
        yield
    finally:
        _pin_server_side(bench, every)
        bench.operator_cpus = None


def _pin_server_side(bench: Bench, cpus: frozenset[int]) -> None:
    """The control plane's processes and this benchmark (its watches and polls) onto `cpus`."""
    for process in bench.cluster.processes.values():
        if process.popen is not None:
            pin(process.popen.pid, cpus)
    pin(os.getpid(), cpus)


def _cold(bench: Bench) -> dict[str, Any]:
    # At the default backstop interval, as in production: the benchmark's shorter one put a backstop pass
    # (a list of every object and a look at every namespace) into the 10 000-namespace roll-out, a tenth
    # of its CPU, which a roll-out shorter than the production interval never meets.
    result = scenarios.cold_convergence(bench, backstop=False)
    writes = result["operator_writes"]
    operator_cpu = result["cpu_seconds"].get("operator", 0.0)
    result["operator_cpu_ms_per_write"] = round(1000 * operator_cpu / max(1, writes), 3)
    # The curve is long at scale and the table does not use it.
    result.pop("completion_s", None)
    return result


def _release(bench: Bench) -> dict[str, Any]:
    """The baseline deleted with the operator running: until every object and field is gone."""
    keys = bench.workload.all_keys(bench.load)
    started = time.monotonic()
    bench.delete_baseline()
    _wait_all(bench, keys, present=False, what="the release of every namespace")
    return {"seconds": round(time.monotonic() - started, 2)}


def _wait_all(bench: Bench, keys: list[Key], *, present: bool, what: str, timeout: float = 3600) -> float:
    """Wait until every key arrived (or, `present=False`, none is left); returns when the last arrived."""
    interval = poll_interval(len(keys))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bench.audit.poll()  # reads the log as it grows: a rotation between two reads loses nothing
        if present:
            latest = bench.arrivals.latest(keys)
            if latest is not None:
                return latest
        elif bench.arrivals.present(keys) == 0:
            return time.monotonic()
        time.sleep(interval)
    raise BenchError(f"{what}: not done within {timeout:.0f} s")


class Calibrator:
    """The Go calibration client: request files written here, the binary run on one CPU or any."""

    def __init__(self, bench: Bench, binary: Path, workers: int) -> None:
        self.bench, self.binary, self.workers = bench, binary, workers
        config = yaml.safe_load(bench.cluster.kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self._flags = [
            f"-server={cluster['server']}",
            f"-ca={cluster['certificate-authority']}",
            f"-cert={user['client-certificate']}",
            f"-key={user['client-key']}",
            f"-workers={workers}",
        ]
        self.keys = bench.workload.all_keys(bench.load)

    def apply(self, uid: str, *, pinned: bool) -> dict[str, Any]:
        """Apply the operator's bodies for every namespace; until the watch saw the last object."""
        requests = [
            _apply_request(body)
            for namespace in self.bench.load
            for body in self.bench.workload.objects(namespace, uid)
        ]
        cpu = self.bench.cpu()
        started = time.monotonic()
        answer = self._run("apply", requests, CLIENT_CPUS if pinned else None)
        done = _wait_all(self.bench, self.keys, present=True, what="every calibration object is seen")
        return {
            # The server side's CPU too: what the client's writes cost it, next to the operator's run.
            "cpu_seconds": self.bench.cpu_since(cpu),
            "client": f"Go net/http, {answer['protocol']}, {self.workers} workers, server-side apply",
            "pinned": pinned,
            "requests": len(requests),
            "seconds": round(done - started, 2),
            "answered_after_s": round(answer["seconds"], 2),
            "requests_per_second": round(len(requests) / (done - started), 1),
            "client_cpu_seconds": round(answer["cpu_seconds"], 2),
            "client_cpu_ms_per_write": round(1000 * answer["cpu_seconds"] / max(1, len(requests)), 3),
            "latency_ms": answer["latency_ms"],
            "throttled_429": answer["throttled_429"],
        }

    def undo(self) -> None:
        """Delete what the calibration made and give up its fields: the namespaces as they were."""
        requests: list[dict[str, Any]] = []
        for namespace in self.bench.load:
            requests += [
                {
                    "method": "DELETE",
                    "path": f"{resource.path(namespace)}?labelSelector={MANAGED_SELECTOR}",
                }
                for resource in MANAGED_RESOURCES
            ]
            requests += [_apply_request(body) for body in self.bench.workload.released(namespace)]
        self._run("undo", requests, None)
        _wait_all(self.bench, self.keys, present=False, what="every calibration object and field is gone")
        time.sleep(scenarios.SETTLE_SECONDS)

    def _run(self, name: str, requests: list[dict[str, Any]], cpus: frozenset[int] | None) -> dict[str, Any]:
        path = self.bench.state / f"{name}-requests.jsonl"
        path.write_text("".join(json.dumps(request, separators=(",", ":")) + "\n" for request in requests))
        completed = subprocess.run(
            [str(self.binary), *self._flags, f"-requests={path}"],
            capture_output=True,
            check=False,
            preexec_fn=child_setup(cpus),
        )
        path.unlink()
        if completed.returncode != 0:
            raise BenchError(f"bench-client {name} failed: {completed.stderr.decode(errors='replace')}")
        answer: dict[str, Any] = json.loads(completed.stdout)
        if answer["statuses"].get("error"):
            raise BenchError(f"bench-client {name}: {answer['statuses']} e.g. {answer['errors']}")
        return answer


def _apply_request(body: dict[str, Any]) -> dict[str, Any]:
    resource = RESOURCES[body["kind"]]
    metadata = body["metadata"]
    return {
        "method": "PATCH",
        "path": f"{resource.path(metadata.get('namespace'), metadata['name'])}"
        f"?fieldManager={CALIBRATION_MANAGER}&force=true",
        "contentType": "application/apply-patch+yaml",
        "body": body,
    }
