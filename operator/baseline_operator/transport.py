"""The operator's requests on the wire: HTTP/1.1 over a socket, one keep-alive connection per thread.

Profiled in a cold convergence of 1000 namespaces (`make bench BENCH_ARGS="--profile"`), the official
client's request path (its serializer, urllib3's pool bookkeeping, header parsing) was a third of the
operator's CPU time; then, at 3000 namespaces, the standard library's http.client was still a tenth, much
of it parsing each answer's headers with the email package. Here a request is one write of a method, a
target, four headers and the body; an answer is read for its status, its length (Content-Length or
chunks), whether the connection stays open and Retry-After: half http.client's CPU per request.

`kube.py` is the only user: it still loads the configuration with the official client (kubeconfig or the
in-cluster ServiceAccount, the way kopf logs in) and hands over what a connection needs: the address, a
TLS context, and a function that returns the Authorization header, asked on every request so that a
rotated ServiceAccount token (or an exec plugin's) is picked up as the official client would.
"""

from __future__ import annotations

import http
import http.client
import socket
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
        # An IPv6 address is bracketed in the Host header and CONNECT's target, as in the URL.
        self._authority = (
            f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        )
        self._prefix = parts.path.rstrip("/")
        self._tls = (endpoint.tls or ssl.create_default_context()) if self._secure else None
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._local = threading.local()
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()

    def request(
        self, method: str, target: str, body: bytes | None = None, *, content_type: str = "application/json"
    ) -> Answer:
        """Send one request (`target` is the path and query) and read the whole answer.

        A connection that was kept open may have been closed by the server meanwhile; the request is
        then sent once more on a new one. Any other failure (refused, reset, timed out) is raised as
        OSError or http.client.HTTPException.
        """
        head = [
            f"{method} {self._prefix}{target} HTTP/1.1",
            f"Host: {self._authority}",
            "Accept: application/json",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body) if body is not None else 0}",
        ]
        authorization = self._endpoint.authorization()
        if authorization:
            head.append(f"Authorization: {authorization}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in range(2):
            connection, reused = self._connection()
            try:
                answer, keep_open = connection.exchange(message, head_only=method == "HEAD")
            except (http.client.HTTPException, OSError):
                self._discard(connection)
                if not reused or attempt == 1:
                    raise
                continue
            if not keep_open:
                self._discard(connection)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()

    def _connection(self) -> tuple[_Connection, bool]:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        connection = _Connection(self._open())
        self._local.connection = connection
        with self._lock:
            self._all.add(connection)
        return connection, False

    def _open(self) -> socket.socket:
        endpoint = self._endpoint
        address = (self._host, self._port)
        if endpoint.proxy:
            proxy = urllib.parse.urlsplit(endpoint.proxy)
            address = (str(proxy.hostname), proxy.port or 80)
        sock = socket.create_connection(address, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.proxy:
                _tunnel(sock, self._authority)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=endpoint.server_hostname or self._host)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self._read_timeout)
        return sock

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._all.discard(connection)


_MAX_LINE = 65536
_MAX_HEADERS = 100
_NO_BODY = frozenset({http.HTTPStatus.NO_CONTENT, http.HTTPStatus.NOT_MODIFIED})


class _Connection:
    """One HTTP/1.1 connection: a request written in one piece, its answer read from a buffered reader.

    http.client parses every answer's headers with the email package, a tenth of the operator's CPU in
    a roll-out; an answer here needs its status, its length (Content-Length or chunked), whether the
    connection stays open, and Retry-After.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb", buffering=65536)

    def exchange(self, message: bytes, *, head_only: bool = False) -> tuple[Answer, bool]:
        """Send `message`; the answer and whether the connection may carry another request."""
        self._sock.sendall(message)
        status_line = self._line()
        if not status_line:
            raise http.client.RemoteDisconnected("the server closed the connection without an answer")
        version, status = _status_of(status_line)
        while http.HTTPStatus.CONTINUE <= status < http.HTTPStatus.OK:  # interim answers precede the real one
            self._headers()
            version, status = _status_of(self._line())
        headers = self._headers()
        connection = headers.get("connection", "").lower()
        keep_open = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        if head_only or status in _NO_BODY:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            body = self._exactly(_length(headers["content-length"]))
        else:
            body, keep_open = self._reader.read(), False  # the body ends where the connection does
        return Answer(status, body, headers.get("retry-after")), keep_open

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def _line(self) -> bytes:
        line = self._reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        return line

    def _headers(self) -> dict[str, str]:
        """The header fields up to the empty line, by lower-case name (a repeated one: the last)."""
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._line()
            if line in {b"\r\n", b"\n"}:
                return headers
            if not line:
                raise http.client.IncompleteRead(b"", None)
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise http.client.HTTPException(f"more than {_MAX_HEADERS} header fields")

    def _exactly(self, length: int) -> bytes:
        data: bytes = self._reader.read(length)
        if len(data) != length:
            raise http.client.IncompleteRead(data, length - len(data))
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size == 0:
                self._headers()  # trailer fields, if any, up to the empty line
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._exactly(2)  # the CRLF after each chunk


def _status_of(line: bytes) -> tuple[str, int]:
    version, _, rest = line.decode("latin-1").partition(" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise http.client.BadStatusLine(line.decode("latin-1", "replace")) from None
    if not version.startswith("HTTP/"):
        raise http.client.BadStatusLine(line.decode("latin-1", "replace"))
    return version, status


def _length(value: str) -> int:
    try:
        length = int(value)
    except ValueError:
        raise http.client.HTTPException(f"Content-Length {value!r} is not a number") from None
    if length < 0:
        raise http.client.HTTPException(f"Content-Length {value!r} is negative")
    return length


def _tunnel(sock: socket.socket, authority: str) -> None:
    """Ask an HTTP proxy for a tunnel to `authority` (CONNECT); the TLS connection then runs through it."""
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("latin-1"))
    # Read byte by byte: nothing past the proxy's answer may be taken from the socket, it is the tunnel's.
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte or len(answer) > _MAX_LINE:
            raise OSError(f"the proxy closed the connection or answered too much to CONNECT {authority}")
        answer += byte
    status_line = answer.split(b"\r\n", 1)[0]
    if _status_of(status_line)[1] != http.HTTPStatus.OK:
        raise OSError(f"the proxy refused a tunnel to {authority}: {status_line.decode('latin-1')}")
