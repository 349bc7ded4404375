"""Fixtures the unit tests share."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    import http.server
    from collections.abc import Callable, Iterator

Server = TypeVar("Server", bound="http.server.HTTPServer")


@pytest.fixture
def serve() -> Iterator[Callable[[Server], Server]]:
    """Run an HTTP server on loopback in a thread for the test (`serve(SomeServer(...))`), stopped after."""
    servers: list[http.server.HTTPServer] = []

    def start(server: Server) -> Server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
