"""The operator's requests on the wire: HTTP/1.1 from the standard library, one connection per thread.

Profiled in a cold convergence of 1000 namespaces (`make bench BENCH_ARGS="--profile"`), the official
client's request path (its serializer, urllib3's pool bookkeeping, header parsing) was a third of the
operator's CPU time. Here a request is a method, a target, bytes and three headers: nothing else to do.

`kube.py` is the only user: it still loads the configuration with the official client (kubeconfig or the
in-cluster ServiceAccount, the way kopf logs in) and hands over what a connection needs: the address, a
TLS context, and a function that returns the Authorization header, asked on every request so that a
rotated ServiceAccount token (or an exec plugin's) is picked up as the official client would.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to talk to it."""

    url: str
    """`https://host:port` (a path prefix is kept: some proxies serve the API under one)."""
    tls: ssl.SSLContext | None
    """None for plain `http://` (a local proxy such as `kubectl proxy`)."""
    authorization: Callable[[], str | None]
    """The Authorization header's value for the next request, if any."""
    server_hostname: str | None = None
    """The name the server's certificate is checked against, when not the URL's host."""
    proxy: str | None = None
    """An HTTP proxy (`http://host:port`) that HTTPS requests tunnel through with CONNECT."""


@dataclass(frozen=True)
class Answer:
    """What the server answered: status, the whole body, and Retry-After (the one header we read)."""

    status: int
    body: bytes
    retry_after: str | None
    """The Retry-After header as sent, if any."""


class Transport:
    """Requests from any number of threads; each thread keeps its own connection open between them."""

    def __init__(
        self, endpoint: Endpoint, *, connect_timeout: float = 5.0, read_timeout: float = 30.0
    ) -> None:
        self._endpoint = endpoint
        parts = urllib.parse.urlsplit(endpoint.url)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise ValueError(f"the API server's address {endpoint.url!r} is not an http(s) URL")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._secure else 80)
        self._prefix = parts.path.rstrip("/")
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def request(
        self, method: str, target: str, body: bytes | None = None, *, content_type: str = "application/json"
    ) -> Answer:
        """Send one request (`target` is the path and query) and read the whole answer.

        A connection that was kept open may have been closed by the server meanwhile; the request is
        then sent once more on a new one. Any other failure (refused, reset, timed out) is raised as
        OSError or http.client.HTTPException.
        """
        headers = {"Accept": "application/json", "Content-Type": content_type}
        authorization = self._endpoint.authorization()
        if authorization:
            headers["Authorization"] = authorization
        for attempt in range(2):
            connection, reused = self._connection()
            try:
                connection.request(method, self._prefix + target, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self._discard(connection)
                if not reused or attempt == 1:
                    raise
                continue
            if response.will_close:
                self._discard(connection)
            return Answer(response.status, data, response.getheader("Retry-After"))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        connection = self._open()
        self._local.connection = connection
        with self._lock:
            self._all.add(connection)
        return connection, False

    def _open(self) -> http.client.HTTPConnection:
        endpoint = self._endpoint
        host, port = self._host, self._port
        if endpoint.proxy:
            proxy = urllib.parse.urlsplit(endpoint.proxy)
            host, port = str(proxy.hostname), proxy.port or 80
        connection: http.client.HTTPConnection
        if self._secure:
            connection = _HTTPSConnection(
                host,
                port,
                context=endpoint.tls,
                timeout=self._connect_timeout,
                server_hostname=endpoint.server_hostname or self._host,
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        if endpoint.proxy:
            connection.set_tunnel(self._host, self._port)
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(self._read_timeout)
        return connection

    def _discard(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._all.discard(connection)


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose certificate is checked against a given name (`tls-server-name`)."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext | None, timeout: float, server_hostname: str
    ) -> None:
        self._tls = context or ssl.create_default_context()
        super().__init__(host, port, context=self._tls, timeout=timeout)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        # HTTPSConnection.connect's steps (TCP, the proxy tunnel if any, TLS) with our server name.
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_hostname)
