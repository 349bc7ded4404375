"""The lean HTTP path (transport.py) against real HTTP(S) servers on loopback: connections, TLS, tokens."""

from __future__ import annotations

import http.server
import json
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

    def __init__(self, *, close_after: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
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
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
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
