"""The only module that talks to the Kubernetes API (kopf's own watches aside): requests and watches.

It owns server-side apply with the one field manager, deletion with preconditions, status patches and
Events; it maps HTTP errors to the project's exceptions (a 404 on delete is an answer, "already gone",
not an error); it bounds the requests in flight and honours `Retry-After` on 429, so that the operator
stays polite when API Priority and Fairness pushes back.

Requests go over `transport.py` (the standard library's http.client, a keep-alive connection per thread:
the official client's request path was a third of the operator's CPU); the official client still loads
the configuration (kubeconfig or in-cluster) and reads the watches. Calls are synchronous and run on a
thread pool whose size is the in-flight limit. Bodies are sent and received as plain JSON dicts, never as
generated model classes, which are slow to build and heavy in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from baseline_operator.identity import FIELD_MANAGER
from baseline_operator.request_threads import RequestThreads
from baseline_operator.transport import Endpoint, Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

_MAX_RETRY_AFTER_SECONDS = 30.0
_MAX_THROTTLED_RETRIES = 8
# Pages keep one list's response small; 500 is what client-go's informers ask for.
_LIST_PAGE_SIZE = 500


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        prefix = "/api/" if "/" not in self.api_version else "/apis/"
        path = prefix + self.api_version
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts", namespaced=True)
POD = Kind("v1", "Pod", "pods", namespaced=True)
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", namespaced=True)
LIMIT_RANGE = Kind("v1", "LimitRange", "limitranges", namespaced=True)
RESOURCE_QUOTA = Kind("v1", "ResourceQuota", "resourcequotas", namespaced=True)
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", namespaced=True)
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False)
EVENT = Kind("v1", "Event", "events", namespaced=True)
SECURITY_BASELINE = Kind("baseline.dev/v1alpha1", "SecurityBaseline", "securitybaselines", namespaced=False)
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases", namespaced=True)
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps", namespaced=True)
CUSTOM_RESOURCE_DEFINITION = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
# The Admin tier of the network policy API (sigs.k8s.io/network-policy-api), where a cluster serves it.
CLUSTER_NETWORK_POLICY = Kind(
    "policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies", namespaced=False
)
ADMIN_NETWORK_POLICY = Kind(
    "policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies", namespaced=False
)
VALIDATING_ADMISSION_POLICY = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingAdmissionPolicy",
    "validatingadmissionpolicies",
    namespaced=False,
)
VALIDATING_ADMISSION_POLICY_BINDING = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingAdmissionPolicyBinding",
    "validatingadmissionpolicybindings",
    namespaced=False,
)

KINDS = {
    kind.kind: kind
    for kind in (
        NAMESPACE,
        SERVICE_ACCOUNT,
        POD,
        NETWORK_POLICY,
        LIMIT_RANGE,
        RESOURCE_QUOTA,
        ROLE_BINDING,
        CLUSTER_ROLE,
        EVENT,
        SECURITY_BASELINE,
        LEASE,
        CONFIG_MAP,
        CUSTOM_RESOURCE_DEFINITION,
        CLUSTER_NETWORK_POLICY,
        ADMIN_NETWORK_POLICY,
        VALIDATING_ADMISSION_POLICY,
        VALIDATING_ADMISSION_POLICY_BINDING,
    )
}


def kind_of(body: Mapping[str, Any]) -> Kind:
    kind = KINDS.get(body.get("kind", ""))
    if kind is None or kind.api_version != body.get("apiVersion"):
        raise ValueError(f"the operator does not manage {body.get('apiVersion')}/{body.get('kind')}")
    return kind


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code and `reason` its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class ForbiddenError(ApiError):
    """RBAC (or admission) said no; retrying will not help until someone changes the cluster."""


class ConflictError(ApiError):
    """A precondition (uid, resourceVersion) did not hold: the object changed under us."""


class InvalidError(ApiError):
    """The body was refused by validation."""


class UnavailableError(ApiError):
    """The API server could not be reached or answered 5xx / kept throttling; try again later."""


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    http.HTTPStatus.FORBIDDEN: ForbiddenError,
    http.HTTPStatus.CONFLICT: ConflictError,
    http.HTTPStatus.UNPROCESSABLE_ENTITY: InvalidError,
}


class RequestObserver(Protocol):
    """Told about every request: what the metrics recorder counts."""

    def __call__(self, verb: str, status: int, seconds: float) -> None: ...


def _ignore(verb: str, status: int, seconds: float) -> None:
    del verb, status, seconds


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    retry_after: float | None


@dataclass(frozen=True)
class Listing:
    """One page of a list of one kind, and the version a watch starts from to miss nothing after the list."""

    items: list[dict[str, Any]]
    resource_version: str


class _WatchStream:
    """One watch request, read on a thread of its own; its events reach the event loop in batches.

    A batch is what one read of the stream brought, so a burst of events wakes the event loop once, not
    once per event.
    """

    def __init__(
        self, api: k8s_client.ApiClient, path: str, query: list[tuple[str, str]], *, read_timeout: float
    ) -> None:
        self._api, self._path, self._query, self._read_timeout = api, path, query, read_timeout
        self._loop = asyncio.get_running_loop()
        self._answer: asyncio.Future[_Response] = self._loop.create_future()
        self._batches: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue()
        """Events as they arrive, then None: the watch ended."""
        self._closed = threading.Event()
        self._response: Any = None

    async def open(self) -> _Response:
        """Send the request; its answer (a status other than 200 means no event follows)."""
        threading.Thread(target=self._read, daemon=True, name=f"watch{self._path}").start()
        return await self._answer

    async def next_batch(self) -> list[dict[str, Any]] | None:
        return await self._batches.get()

    def close(self) -> None:
        self._closed.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the thread's read of a quiet watch
                response.release_conn()

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)

    def _answered(self, answer: _Response) -> None:
        self._call(self._set_answer, answer)

    def _set_answer(self, answer: _Response) -> None:
        if not self._answer.done():  # a failure after the answer is the stream ending, not an answer
            self._answer.set_result(answer)

    def _read(self) -> None:
        try:
            _, url, headers, _, _ = self._api.param_serialize(
                "GET",
                self._path,
                query_params=self._query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            answer = self._api.call_api(
                "GET", url, header_params=headers, _request_timeout=(5, self._read_timeout)
            )
            self._response = answer.response
            if answer.status != http.HTTPStatus.OK:
                retry_after = _seconds(answer.getheader("Retry-After"))
                self._answered(_Response(answer.status, answer.read() or b"", retry_after))
                return
            self._answered(_Response(answer.status, b"", None))
            pending = b""
            for chunk in answer.response.stream(2**16):
                if self._closed.is_set():
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                events = [orjson.loads(line) for line in lines if line.strip()]
                if events:
                    self._call(self._batches.put_nowait, events)
        # Refused, reset, timed out, cut off mid-line: the watch ends and the caller starts another.
        except Exception as error:  # noqa: BLE001 - anything else would end the thread in silence
            failure = json.dumps({"message": str(error)}).encode()
            self._answered(_Response(http.HTTPStatus.SERVICE_UNAVAILABLE, failure, None))
        finally:
            self._call(self._batches.put_nowait, None)


class KubeApi:
    """Async facade over the official client for the few calls the operator makes."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        max_in_flight: int = 16,
        observe: RequestObserver = _ignore,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._api = api_client
        self._transport = Transport(endpoint_of(api_client.configuration))
        self._threads = RequestThreads(max_in_flight, "kube-api")
        self._observe = observe
        self._sleep = sleep
        self.max_in_flight = max_in_flight
        # Watches stay open: on connections of their own, they never hold one the pool bounds.
        self._watch_api = k8s_client.ApiClient(copy.copy(api_client.configuration))

    @classmethod
    def connect(
        cls, *, kubeconfig: str | None = None, max_in_flight: int = 16, observe: RequestObserver = _ignore
    ) -> KubeApi:
        """Log in the way kopf does: in-cluster ServiceAccount when present, else the kubeconfig."""
        configuration = client_configuration(kubeconfig, max_in_flight=max_in_flight)
        return cls(k8s_client.ApiClient(configuration), max_in_flight=max_in_flight, observe=observe)

    def close(self) -> None:
        self._threads.close()
        self._transport.close()
        with contextlib.suppress(Exception):
            self._api.close()
        with contextlib.suppress(Exception):
            self._watch_api.close()

    # -- the calls ---------------------------------------------------------------------------------

    async def apply(
        self,
        body: Mapping[str, Any],
        *,
        force: bool = True,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Server-side apply `body` as our field manager; return the object as stored.

        `force` takes over fields another manager set: that is what repairing drift means. Another
        `field_manager` only ever gives a taken-over field back to whoever had set it (takeover.py).
        """
        kind = kind_of(body)
        metadata = body["metadata"]
        query: list[tuple[str, str]] = [
            ("fieldManager", field_manager),
            ("force", "true" if force else "false"),
        ]
        if dry_run:
            query.append(("dryRun", "All"))
        return await self._json(
            "PATCH",
            kind.path(metadata.get("namespace"), metadata["name"]),
            query=query,
            body=dict(body),
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None) -> bool:
        """Delete one object, only if it still has `uid`; False when it was already gone."""
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        response = await self._request("DELETE", kind.path(namespace, name), body=options)
        if response.status == http.HTTPStatus.NOT_FOUND:
            return False
        _raise_for(response)
        return True

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        response = await self._request("GET", kind.path(namespace, name))
        if response.status == http.HTTPStatus.NOT_FOUND:
            return None
        _raise_for(response)
        return _decode(response)

    async def serves(self, kind: Kind) -> bool:
        """Does the API server serve `kind` (discovery of its group version)? Discovery needs no RBAC."""
        response = await self._request("GET", kind.path().rsplit("/", 1)[0])
        if response.status == http.HTTPStatus.NOT_FOUND:
            return False
        _raise_for(response)
        resources = _decode(response).get("resources") or []
        return any(resource.get("name") == kind.plural for resource in resources)

    async def list_pages(
        self, kind: Kind, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> AsyncIterator[Listing]:
        """Every object of `kind`, a page at a time; items carry kind and apiVersion, as watched ones do.

        A caller that is done with a page before asking for the next one holds one page of decoded
        bodies at most: 500, not the 70 000 of a cluster with 10 000 namespaces, whose decoded bodies
        (managedFields and all) once raised the operator's resident memory by a third for good. Each
        page says the resource version of the whole list, which is the first page's snapshot.
        """
        query = [("limit", str(_LIST_PAGE_SIZE))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        page_token = ""
        resource_version = ""
        while True:
            page = await self._json(
                "GET", kind.path(), query=[*query, ("continue", page_token)] if page_token else query
            )
            items: list[dict[str, Any]] = page.get("items") or []
            for item in items:
                item.setdefault("kind", kind.kind)
                item.setdefault("apiVersion", kind.api_version)
            metadata = page.get("metadata") or {}
            resource_version = resource_version or str(metadata.get("resourceVersion") or "")
            page_token = metadata.get("continue") or ""
            del page
            yield Listing(items, resource_version)
            if not page_token:
                return

    async def watch(
        self,
        kind: Kind,
        *,
        resource_version: str,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The watch events of `kind` after `resource_version`, in batches as they arrive, bookmarks included.

        Ends when the server ends the watch (after `timeout_seconds`) or the connection drops; raises
        ApiError when the watch is refused (410 Gone: the version is too old, list again). Like every other
        request it waits out a 429's Retry-After; it runs on a thread of its own, not on the pool that
        bounds the requests in flight, since it stays open.
        """
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        for _attempt in range(_MAX_THROTTLED_RETRIES):
            stream = _WatchStream(self._watch_api, kind.path(), query, read_timeout=timeout_seconds + 30)
            try:
                started = time.monotonic()
                opened = await stream.open()
                self._observe("WATCH", opened.status, time.monotonic() - started)
                if opened.status == http.HTTPStatus.TOO_MANY_REQUESTS:
                    await self._wait_out(opened)
                    continue
                _raise_for(opened)
                while (batch := await stream.next_batch()) is not None:
                    yield batch
                return
            finally:
                stream.close()
        raise UnavailableError(http.HTTPStatus.TOO_MANY_REQUESTS, "TooManyRequests", "still throttled")

    async def patch_status(self, kind: Kind, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the object is gone."""
        response = await self._request(
            "PATCH",
            kind.path(None, name, "status"),
            query=[("fieldManager", FIELD_MANAGER)],
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        if response.status == http.HTTPStatus.NOT_FOUND:
            return None
        _raise_for(response)
        return _decode(response)

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        kind = kind_of(body)
        return await self._json(
            "POST",
            kind.path(body["metadata"].get("namespace")),
            query=[("fieldManager", FIELD_MANAGER)],
            body=dict(body),
        )

    async def replace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its metadata.resourceVersion makes it fail (ConflictError) if it changed."""
        kind = kind_of(body)
        metadata = body["metadata"]
        return await self._json(
            "PUT",
            kind.path(metadata.get("namespace"), metadata["name"]),
            query=[("fieldManager", FIELD_MANAGER)],
            body=dict(body),
        )

    # -- plumbing ----------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = await self._request(method, path, query=query, body=body, content_type=content_type)
        _raise_for(response)
        return _decode(response)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> _Response:
        for _attempt in range(_MAX_THROTTLED_RETRIES):
            started = time.monotonic()
            response = await self._threads.run(self._send, method, path, query or [], body, content_type)
            self._observe(method, response.status, time.monotonic() - started)
            if response.status != http.HTTPStatus.TOO_MANY_REQUESTS:
                return response
            # API Priority and Fairness rejected us: wait as long as it asks, never spin. After the last
            # attempt too: whatever the caller tries next (a watch event re-queues a namespace at once,
            # bypassing the engine's back-off) must not come sooner than the server asked.
            await self._wait_out(response)
        return response

    async def _wait_out(self, throttled: _Response) -> None:
        """As long as a 429 asks (1 s if it does not say), capped: one policy for requests and watches."""
        await self._sleep(min(throttled.retry_after or 1.0, _MAX_RETRY_AFTER_SECONDS))

    def _send(
        self, method: str, path: str, query: list[tuple[str, str]], body: Any, content_type: str
    ) -> _Response:
        target = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        payload = None if body is None else orjson.dumps(body)
        try:
            answer = self._transport.request(method, target, payload, content_type=content_type)
        except (OSError, http.client.HTTPException) as error:
            # Connection refused, reset, TLS failure, timed out: the same to us as a 503.
            return _Response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, json.dumps({"message": str(error)}).encode(), None
            )
        return _Response(answer.status, answer.body, _seconds(answer.retry_after))


def endpoint_of(configuration: k8s_client.Configuration) -> Endpoint:
    """What `transport.Transport` needs, from the official client's loaded configuration."""
    tls: ssl.SSLContext | None = None
    if str(configuration.host).startswith("https"):
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data)
        if configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE

    def authorization() -> str | None:
        # Asked per request: the configuration's refresh hook re-reads a rotated ServiceAccount token.
        bearer = configuration.auth_settings().get("BearerToken")
        return str(bearer["value"]) if bearer and bearer.get("value") else None

    return Endpoint(
        url=str(configuration.host),
        tls=tls,
        authorization=authorization,
        server_hostname=configuration.tls_server_name or None,
        proxy=configuration.proxy or None,
    )


def client_configuration(
    kubeconfig: str | None = None, *, max_in_flight: int = 16
) -> k8s_client.Configuration:
    """The official client's configuration: in-cluster ServiceAccount when present, else the kubeconfig."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # One connection per request in flight; the default pool (cores x 5) would queue silently.
    configuration.connection_pool_maxsize = max_in_flight
    # urllib3's default policy retries a 429 or 503 that carries Retry-After by itself, for GET, PUT and
    # DELETE: three more times, sleeping as long as the server says (uncapped) on an in-flight thread,
    # unseen by the metrics and by the Lease's renew deadline. Throttling is handled once, in `_request`;
    # connections that fail (a pooled one the server closed) are still retried here.
    configuration.retries = urllib3.Retry(3, respect_retry_after_header=False)
    return configuration


def _seconds(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _decode(response: _Response) -> dict[str, Any]:
    if not response.body:
        return {}
    decoded: dict[str, Any] = orjson.loads(response.body)
    return decoded


def _raise_for(response: _Response) -> None:
    if response.status < http.HTTPStatus.BAD_REQUEST:
        return
    try:
        status = orjson.loads(response.body)
    except ValueError:
        status = {}
    reason = str(status.get("reason") or http.HTTPStatus(response.status).phrase)
    message = str(status.get("message") or response.body[:500].decode(errors="replace"))
    if (
        response.status >= http.HTTPStatus.INTERNAL_SERVER_ERROR
        or response.status == http.HTTPStatus.TOO_MANY_REQUESTS
    ):
        raise UnavailableError(response.status, reason, message)
    raise _ERRORS_BY_STATUS.get(response.status, ApiError)(response.status, reason, message)
