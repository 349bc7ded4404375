"""The lean HTTP path (transport.py) against real HTTP(S) servers on loopback: connections, TLS, tokens."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import ssl
import threading
from typing import TYPE_CHECKING, Any

import pytest

from baseline_operator.transport import Endpoint, Transport
from localcluster.pki import CertificateAuthority

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(20)


class EchoServer(http.server.ThreadingHTTPServer):
    """Answers every request with what it saw: method, path, Authorization, body; counts connections."""

    def __init__(self, *, close_after: int = 0, host: str = "127.0.0.1") -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), _EchoHandler)
        self.connections = 0
        self.close_after = close_after
        """Close the connection after this many answers on it (0: keep it open)."""

    def get_request(self) -> tuple[Any, Any]:
        self.connections += 1
        return super().get_request()


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    server: EchoServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server
    answered = 0

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "contentType": self.headers.get("Content-Type"),
                "host": self.headers.get("Host"),
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            # As the API server answers a large list: in chunks, a trailer field after the last.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:7], body[7:]):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path.startswith("/unsized"):
            # No length: the body ends where the connection does.
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.answered += 1
        if self.server.close_after and self.answered >= self.server.close_after:
            # Gone without a word, as an API server closing an idle keep-alive connection.
            self.close_connection = True

    def do_GET(self) -> None:
        self._echo()

    def do_PATCH(self) -> None:
        self._echo()

    def do_DELETE(self) -> None:
        self.send_response(204)  # no body, and no length: nothing may be read after the headers
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


def _url(server: EchoServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def test_requests_reuse_one_connection_and_send_a_fresh_token_each_time(serve: Any) -> None:
    server = serve(EchoServer())
    tokens = iter(["Bearer one", "Bearer two", "Bearer three"])
    transport = Transport(Endpoint(_url(server), None, lambda: next(tokens)))
    answers = [
        json.loads(transport.request("PATCH", f"/api/v1/x?n={n}", b'{"a":1}', content_type="c/t").body)
        for n in range(3)
    ]
    transport.close()
    assert [answer["authorization"] for answer in answers] == ["Bearer one", "Bearer two", "Bearer three"]
    assert answers[0] == {
        "method": "PATCH",
        "path": "/api/v1/x?n=0",
        "authorization": "Bearer one",
        "contentType": "c/t",
        "host": f"127.0.0.1:{server.server_address[1]}",
        "body": '{"a":1}',
    }
    assert server.connections == 1


def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again(serve: Any) -> None:
    server = serve(EchoServer(close_after=1))
    transport = Transport(Endpoint(_url(server) + "/prefix/", None, lambda: None))
    for _ in range(3):
        answer = json.loads(transport.request("GET", "/api").body)
        assert answer["path"] == "/prefix/api"
        assert answer["authorization"] is None
    transport.close()
    assert server.connections == 3


def test_each_thread_has_a_connection_of_its_own(serve: Any) -> None:
    server = serve(EchoServer())
    transport = Transport(Endpoint(_url(server), None, lambda: None))
    threads = [threading.Thread(target=transport.request, args=("GET", "/api")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transport.close()
    assert server.connections == 4


def test_tls_checks_the_server_against_the_ca_and_the_name_it_is_told(serve: Any, tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    serving = ca.issue("server", common_name="api", server_hosts=("api.internal",))
    client = ca.issue("client", common_name="operator")
    server = EchoServer()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(serving.cert, serving.key)
    server_tls.load_verify_locations(ca.files.cert)
    server_tls.verify_mode = ssl.CERT_REQUIRED  # a client certificate, as the API server asks
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    serve(server)
    tls = ssl.create_default_context(cafile=str(ca.files.cert))
    tls.load_cert_chain(client.cert, client.key)

    named = Transport(Endpoint(_url(server, "https"), tls, lambda: None, server_hostname="api.internal"))
    assert named.request("GET", "/api").status == 200
    named.close()
    # The certificate names api.internal, not 127.0.0.1: without the name the check must fail.
    unnamed = Transport(Endpoint(_url(server, "https"), tls, lambda: None))
    with pytest.raises(ssl.SSLCertVerificationError):
        unnamed.request("GET", "/api")
    unnamed.close()


def test_an_address_that_is_not_http_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        Transport(Endpoint("ftp://x", None, lambda: None))


def test_chunked_unsized_and_empty_answers_are_read_whole_and_the_connection_kept_when_it_can_be(
    serve: Any,
) -> None:
    server = serve(EchoServer())
    transport = Transport(Endpoint(_url(server), None, lambda: None))
    assert json.loads(transport.request("GET", "/chunked/a").body)["path"] == "/chunked/a"
    assert transport.request("DELETE", "/gone").body == b""
    assert json.loads(transport.request("PATCH", "/chunked/b", b"{}").body)["body"] == "{}"
    assert server.connections == 1
    assert json.loads(transport.request("GET", "/unsized").body)["path"] == "/unsized"
    assert json.loads(transport.request("GET", "/api").body)["path"] == "/api"
    transport.close()
    assert server.connections == 2, "an answer without a length ends its connection"


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), as HTTPS_PROXY is used; remembers what it was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TunnelHandler)
        self.asked: list[str] = []


class _TunnelHandler(socketserver.StreamRequestHandler):
    server: ConnectProxy

    def handle(self) -> None:
        request = self.rfile.readline().decode()
        while self.rfile.readline() not in {b"\r\n", b""}:
            pass
        self.server.asked.append(request.strip())
        host, port = request.split()[1].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True).start()
            _pipe(self.connection, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


def test_https_through_a_proxy_tunnel_checks_the_api_servers_certificate(serve: Any, tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    serving = ca.issue("server", common_name="api", server_hosts=("127.0.0.1",))
    server = EchoServer()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(serving.cert, serving.key)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    serve(server)
    proxy = ConnectProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        tls = ssl.create_default_context(cafile=str(ca.files.cert))
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        transport = Transport(Endpoint(_url(server, "https"), tls, lambda: "Bearer t", proxy=proxy_url))
        for _ in range(2):
            answer = json.loads(transport.request("GET", "/api/v1").body)
            assert answer["authorization"] == "Bearer t"
        transport.close()
        assert proxy.asked == [f"CONNECT 127.0.0.1:{server.server_address[1]} HTTP/1.1"]
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_an_ipv6_api_server_is_named_in_brackets_in_the_host_header(serve: Any) -> None:
    server = serve(EchoServer(host="::1"))
    port = server.server_address[1]
    transport = Transport(Endpoint(f"http://[::1]:{port}", None, lambda: None))
    assert json.loads(transport.request("GET", "/api").body)["host"] == f"[::1]:{port}"
    transport.close()
