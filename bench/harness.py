"""Plumbing for the benchmarks: a lean API client, watch-based arrival timing, the audit log, the operator.

The benchmark process shares two cores with the API server, etcd and the operator, so everything here is
kept cheap: plain `http.client` with one keep-alive connection per thread and JSON bodies, not the
official client's generated models; watches decode only what they need; the audit log is read
incrementally and only the operator's lines are parsed.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import http
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import yaml

from localcluster.cluster import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

OPERATOR_USER = "baseline-operator-bench"
"""The operator's own identity (in system:masters), so the audit log tells its requests apart."""
OPERATOR_NAMESPACE = "baseline-system"
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=baseline-operator"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})

Key = tuple[str, str, str]
"""(kind, namespace, name); the namespace is "" for cluster-scoped objects."""
T = TypeVar("T")

_ATTEMPTS = 8
_HANDLER_RAN = b"cache filled"
"""What the operator logs (at INFO) once its cache holds every watched object; the watches start next."""
_RETRY_AFTER_MAX = 30.0


class BenchError(RuntimeError):
    """The benchmark could not go on: a request failed or an outcome never came."""


def poll_interval(keys: int) -> float:
    """How often to walk `keys` watched keys: 0.1 s, up to 0.5 s at scale.

    Walking 70 000 keys takes this process tens of milliseconds, which in the pinned scale runs it takes
    from the API server's core. Arrival times come from the watch, so they do not depend on it.
    """
    return max(0.1, min(0.5, keys / 100_000))


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something other than None/False; BenchError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


# -- the API -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    kind: str
    group_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        path = ("/api/" if "/" not in self.group_version else "/apis/") + self.group_version
        if self.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        return f"{path}/{name}" if name else path


NAMESPACES = Resource("Namespace", "v1", "namespaces", namespaced=False)
SERVICE_ACCOUNTS = Resource("ServiceAccount", "v1", "serviceaccounts", namespaced=True)
NETWORK_POLICIES = Resource("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", namespaced=True)
LIMIT_RANGES = Resource("LimitRange", "v1", "limitranges", namespaced=True)
RESOURCE_QUOTAS = Resource("ResourceQuota", "v1", "resourcequotas", namespaced=True)
ROLE_BINDINGS = Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings", namespaced=True)
SECURITY_BASELINES = Resource(
    "SecurityBaseline", "baseline.dev/v1alpha1", "securitybaselines", namespaced=False
)
CLUSTER_ROLES = Resource("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False)
CRDS = Resource(
    "CustomResourceDefinition", "apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False
)
MANAGED_RESOURCES = (NETWORK_POLICIES, LIMIT_RANGES, RESOURCE_QUOTAS, ROLE_BINDINGS)
"""The kinds the operator creates and owns (labelled as ours); the Namespace and its SA it only patches."""
RESOURCES = {
    resource.kind: resource
    for resource in (
        NAMESPACES,
        SERVICE_ACCOUNTS,
        *MANAGED_RESOURCES,
        SECURITY_BASELINES,
        CRDS,
    )
}


@dataclass(frozen=True)
class Reply:
    """An API answer: HTTP status and the decoded JSON body (None when empty)."""

    status: int
    body: Any

    def ok(self, *expected: int) -> Reply:
        """Self, or BenchError when the status is not 2xx (or not one of `expected`)."""
        good = self.status in expected if expected else 200 <= self.status < 300  # noqa: PLR2004 - 2xx
        if not good:
            message = self.body.get("message") if isinstance(self.body, dict) else self.body
            raise BenchError(f"API answered {self.status}: {message}")
        return self


class ApiClient:
    """HTTPS to the API server with a kubeconfig's client certificate; a keep-alive connection per thread."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        server = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = str(server.hostname), int(server.port or 443)
        self._tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self._local = threading.local()
        self._lock = threading.Lock()
        self.throttled = 0
        """429 answers received (and waited out) so far."""

    def connect(self, timeout: float | None = 60.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._tls, timeout=timeout)

    def _connection(self) -> http.client.HTTPSConnection:
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self.connect()
        return connection

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Reply:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        reply = Reply(0, None)
        for attempt in range(_ATTEMPTS):
            connection = self._connection()
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed meanwhile: open another and send again.
                connection.close()
                self._local.connection = None
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            reply = Reply(response.status, _decode(data))
            if response.status != http.HTTPStatus.TOO_MANY_REQUESTS:
                return reply
            with self._lock:
                self.throttled += 1
            time.sleep(min(float(response.getheader("Retry-After") or 1), _RETRY_AFTER_MAX))
        return reply

    def get(self, path: str, **query: str) -> Reply:
        return self.request("GET", path, query=query)

    def create(self, body: Mapping[str, Any]) -> Reply:
        resource = RESOURCES[body["kind"]]
        return self.request("POST", resource.path(body["metadata"].get("namespace")), body=dict(body))

    def apply(self, body: Mapping[str, Any], *, manager: str, force: bool = True) -> Reply:
        """Server-side apply, the way the operator writes."""
        resource, metadata = RESOURCES[body["kind"]], body["metadata"]
        return self.request(
            "PATCH",
            resource.path(metadata.get("namespace"), metadata["name"]),
            query={"fieldManager": manager, "force": str(force).lower()},
            body=dict(body),
            content_type="application/apply-patch+yaml",
        )

    def delete(self, resource: Resource, namespace: str | None, name: str) -> Reply:
        return self.request("DELETE", resource.path(namespace, name))

    def delete_managed(self, resource: Resource, namespace: str) -> Reply:
        """Delete every object of this kind labelled as the operator's in one namespace."""
        return self.request(
            "DELETE", resource.path(namespace), query={"labelSelector": MANAGED_SELECTOR}
        ).ok()

    def watch(
        self,
        path: str,
        query: Mapping[str, str],
        on_event: Callable[[str, dict[str, Any]], None],
        *,
        listed: threading.Event,
        stop: threading.Event,
        connections: list[http.client.HTTPSConnection],
    ) -> None:
        """List, then follow until `stop`: `on_event(type, object)` for each listed item and event."""
        version = ""
        while not stop.is_set():
            if not version:
                found = self.request("GET", path, query=query).ok().body
                for item in found["items"]:
                    on_event("ADDED", item)
                version = found["metadata"]["resourceVersion"]
                listed.set()
            connection = self.connect(timeout=None)
            connections.append(connection)
            watch_query = {
                **query,
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "3600",
            }
            try:
                connection.request("GET", f"{path}?{urllib.parse.urlencode(watch_query)}")
                response = connection.getresponse()
                if response.status != http.HTTPStatus.OK:
                    version = ""
                    continue
                for line in iter(response.readline, b""):
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # 410 Gone: the version is too old, list again
                        version = ""
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], event["object"])
            except (http.client.HTTPException, OSError, ValueError):
                if not stop.is_set():
                    time.sleep(0.5)
            finally:
                connection.close()
                connections.remove(connection)


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:  # "404 page not found" and other plain-text answers
        return data.decode(errors="replace")


# -- arrival timing ------------------------------------------------------------------------------------


def _always(_: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Watched:
    """One watch: `name` is the first part of the keys it fills; an object counts once `wanted` holds."""

    name: str
    resource: Resource
    query: Mapping[str, str] = field(default_factory=dict)
    wanted: Callable[[Mapping[str, Any]], bool] = _always


@dataclass(frozen=True)
class Arrival:
    """When (monotonic) an object reached the wanted state, and which incarnation (uid) it was."""

    at: float
    uid: str


class Arrivals:
    """When each watched object last arrived in the wanted state, as any client would see it."""

    def __init__(self, api: ApiClient, watched: Iterable[Watched], *, timeout: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._arrived: dict[Key, Arrival] = {}
        self._left: dict[Key, Arrival] = {}
        self._stop = threading.Event()
        self._connections: list[http.client.HTTPSConnection] = []
        listed: list[threading.Event] = []
        for each in watched:
            done = threading.Event()
            listed.append(done)
            threading.Thread(
                target=api.watch,
                args=(each.resource.path(), each.query, self._observer(each)),
                kwargs={"listed": done, "stop": self._stop, "connections": self._connections},
                name=f"watch-{each.name}",
                daemon=True,
            ).start()
        for done in listed:
            if not done.wait(timeout):
                raise BenchError("a watch did not list its objects in time")

    def _observer(self, watched: Watched) -> Callable[[str, dict[str, Any]], None]:
        def observe(kind: str, body: dict[str, Any]) -> None:
            now = time.monotonic()
            metadata = body["metadata"]
            key = (watched.name, metadata.get("namespace", ""), metadata["name"])
            wanted = kind != "DELETED" and "deletionTimestamp" not in metadata and watched.wanted(body)
            with self._lock:
                if not wanted:
                    gone = self._arrived.pop(key, None)
                    if gone is not None:
                        self._left[key] = Arrival(now, gone.uid)
                elif key not in self._arrived or self._arrived[key].uid != metadata["uid"]:
                    self._arrived[key] = Arrival(now, metadata["uid"])

        return observe

    def stop(self) -> None:
        self._stop.set()
        for connection in list(self._connections):
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

    def arrival(self, key: Key) -> Arrival | None:
        with self._lock:
            return self._arrived.get(key)

    def left(self, key: Key, uid: str) -> float | None:
        """When this incarnation (uid) of `key` was seen deleted (or out of the wanted state), if it was."""
        with self._lock:
            found = self._left.get(key)
        return found.at if found is not None and found.uid == uid else None

    def renewed(self, key: Key, old_uid: str) -> Arrival | None:
        """The arrival of a new incarnation of `key` (a re-created object), if seen yet."""
        found = self.arrival(key)
        return found if found is not None and found.uid != old_uid else None

    def latest(self, keys: Iterable[Key]) -> float | None:
        """When the last of `keys` arrived, or None while any is still missing."""
        latest = 0.0
        with self._lock:
            for key in keys:
                found = self._arrived.get(key)
                if found is None:
                    return None
                latest = max(latest, found.at)
        return latest

    def missing(self, keys: Iterable[Key]) -> int:
        with self._lock:
            return sum(1 for key in keys if key not in self._arrived)

    def present(self, keys: Iterable[Key]) -> int:
        with self._lock:
            return sum(1 for key in keys if key in self._arrived)


# -- the audit log -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One request of the operator, as the API server recorded it."""

    received: float
    """Wall-clock seconds (epoch) when the API server received the request."""
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    @property
    def is_read(self) -> bool:
        return self.verb in READ_VERBS

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {resource} {self.namespace}/{self.name} -> {self.code}"


class AuditLog:
    """The operator's requests, read incrementally from the audit log (rotated files included)."""

    def __init__(self, path: Path, user: str = OPERATOR_USER) -> None:
        self._path = path
        self._needle = f'"username":"{user}"'.encode()
        self._file: IO[bytes] | None = None
        self._inode = 0
        self._partial = b""
        self._lock = threading.Lock()
        self.entries: list[AuditEntry] = []

    def poll(self) -> None:
        """Read whatever was appended since the last call (from any thread)."""
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        while True:
            if self._file is None:
                if not self._path.exists():
                    return
                self._file = self._path.open("rb")
                self._inode = os.fstat(self._file.fileno()).st_ino
            self._consume(self._file.read())
            try:
                rotated = self._path.stat().st_ino != self._inode
            except FileNotFoundError:
                rotated = False
            if not rotated:
                return
            # The old file may have got its last lines between our read and the rename: read it out.
            self._consume(self._file.read())
            self._file.close()
            self._file = None

    def _consume(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._needle in line:
                entry = _audit_entry(json.loads(line))
                if entry is not None:
                    self.entries.append(entry)

    def between(self, start: float, end: float | None = None) -> list[AuditEntry]:
        """Entries received in [start, end) (epoch seconds), after reading what is new."""
        self.poll()
        return [e for e in self.entries if e.received >= start and (end is None or e.received < end)]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _audit_entry(event: Mapping[str, Any]) -> AuditEntry | None:
    verb = str(event.get("verb", ""))
    # A watch is one request that lasts minutes: count it when it starts. Others when they complete.
    counted_stage = "ResponseStarted" if verb == "watch" else "ResponseComplete"
    if event.get("stage") != counted_stage:
        return None
    ref = event.get("objectRef") or {}
    return AuditEntry(
        received=dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp(),
        verb=verb,
        # Requests without an object (discovery: /api, /apis/...) are named by their path.
        resource=str(ref.get("resource") or str(event.get("requestURI", "")).partition("?")[0]),
        subresource=str(ref.get("subresource", "")),
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
    )


# -- the operator process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process now (VmRSS) and at its peak so far (VmHWM), in MiB."""

    rss_mib: float
    peak_mib: float


def memory_of(pid: int) -> Memory:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0]) / 1024  # the kernel reports kB
    return Memory(round(values["VmRSS"], 1), round(values["VmHWM"], 1))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    # The command name in parentheses may hold spaces; utime and stime are the 12th and 13th fields after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Readiness:
    """Seconds from the operator's start until it was live, handled events, and finished its first pass."""

    live_s: float
    events_s: float
    """Until the cache holds every object listed, no watch runs and no event is handled."""
    ready_s: float
    reconciles: int


def _die_with_parent() -> None:
    # Runs between fork and exec: the kernel kills the operator if the benchmark dies.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    """What a child runs between fork and exec: die with the benchmark, and keep to `cpus` if given."""

    def setup() -> None:
        _die_with_parent()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return setup


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Keep every thread of a running process to `cpus` (what `taskset -a -p` does).

    Threads it starts later inherit the mask of the thread that starts them, so pinning every thread
    once is enough; a thread that ends meanwhile is skipped.
    """
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), set(cpus))


@dataclass
class OperatorProcess:
    """The real `baseline-operator run` as a child process, as its own user, with metrics and liveness."""

    kubeconfig: Path
    log: Path
    extra_args: tuple[str, ...] = ()
    cpus: frozenset[int] | None = None
    """The CPUs it may run on (the pinned scale runs); None: any."""
    liveness_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log_offset: int = 0
    throttled: float = 0.0
    """429 answers the operator counted (`api_requests_total{code="429"}`) in its runs that ended."""

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable,
            "-m",
            "baseline_operator",
            "run",
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--metrics-address",
            f"127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]
        with self.log.open("ab") as log:
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup(self.cpus),  # noqa: PLW1509 - prctl and affinity only
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise BenchError("the operator is not running")
        return self.popen.pid

    def _check_running(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            raise BenchError(f"the operator exited; its log ends with:\n{self.tail()}")

    def _http(self, port: int, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def alive(self) -> bool:
        self._check_running()
        try:
            status, _ = self._http(self.liveness_port, "/healthz")
        except OSError:
            return False
        return status == http.HTTPStatus.OK

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics as {series: value}, a series being `name{labels}` as exposed."""
        self._check_running()
        _, text = self._http(self.metrics_port, "/metrics")
        series: dict[str, float] = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                series[name] = float(value)
        return series

    def reconciles(self) -> int:
        return int(self.metrics().get("baseline_operator_reconcile_duration_seconds_count", 0))

    def throttled_now(self) -> float:
        return sum(
            value
            for series, value in self.metrics().items()
            if series.startswith("baseline_operator_api_requests_total{") and 'code="429"' in series
        )

    def handling_events(self) -> bool:
        """Whether the operator has logged its cache filled (the watches start then) since it started."""
        self._check_running()
        with self.log.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read()
        if _HANDLER_RAN in text:
            return True
        # Only whole lines are done with: a needle split across two reads is still found next time.
        self._log_offset += text.rfind(b"\n") + 1
        return False

    def wait_ready(self, namespaces: int, *, quiet: float = 3.0, timeout: float = 3600.0) -> Readiness:
        """Wait until live, handling events and done with its first pass (see `bench.report.DEFINITIONS`)."""
        deadline = time.monotonic() + timeout
        wait_for(self.alive, timeout=timeout, what="the operator's liveness endpoint answers", interval=0.1)
        live = time.monotonic() - self.started_at
        wait_for(
            self.handling_events,
            timeout=deadline - time.monotonic(),
            what="the operator handles events (its watch caches are filled)",
            interval=0.1,
        )
        events = time.monotonic() - self.started_at
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.reconciles()
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif count >= namespaces and now - last_change >= quiet:
                ready = last_change - self.started_at
                return Readiness(round(live, 2), round(events, 2), round(ready, 2), count)
            time.sleep(0.1)
        raise BenchError(f"the operator did not finish its first pass ({last_count} of {namespaces})")

    def memory(self) -> Memory:
        self._check_running()
        return memory_of(self.pid)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it is not gone within 30 s; its 429 count is kept first."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(OSError, BenchError):
                self.throttled += self.throttled_now()
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
