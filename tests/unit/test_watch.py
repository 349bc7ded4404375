"""The lean watch: resumes where it left off, lists again when that is too old, never gives up.

`KindWatch` runs against a scripted API (no cluster); `KubeApi.watch` against a scripted HTTP server on
loopback that streams its events in chunks cut mid-line, as a real one may.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from test_kube import Recorded, api_for

from baseline_operator import kube
from baseline_operator.watch import KindWatch

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

pytestmark = pytest.mark.timeout(10)


class ScriptDone(BaseException):
    """The scripted API has nothing more to say: ends the endless watch loop of a test."""


def policy(name: str, version: str, event: str = "MODIFIED") -> dict[str, Any]:
    body = {"metadata": {"name": name, "namespace": "team-a", "resourceVersion": version}}
    return {"type": event, "object": body}


class ScriptedApi:
    """Answers each watch with the next script entry: batches of events, or an error to raise."""

    def __init__(
        self, watches: list[list[list[dict[str, Any]]] | kube.ApiError], listing: kube.Listing
    ) -> None:
        self.watches = watches
        self.listing = listing
        self.watched_from: list[str] = []
        self.lists = 0

    async def watch(self, kind: kube.Kind, **query: Any) -> AsyncIterator[list[dict[str, Any]]]:
        del kind
        if not self.watches:
            raise ScriptDone
        self.watched_from.append(query["resource_version"])
        answer = self.watches.pop(0)
        if isinstance(answer, kube.ApiError):
            raise answer
        for batch in answer:
            yield batch

    async def list_pages(self, kind: kube.Kind, **query: Any) -> AsyncIterator[kube.Listing]:
        """The listing in pages of one item (one empty page when it has none)."""
        del kind, query
        self.lists += 1
        items = self.listing.items
        for start in range(max(len(items), 1)):
            yield kube.Listing(items[start : start + 1], self.listing.resource_version)


class Run:
    """One KindWatch over a scripted API, with what it delivered and how long it waited."""

    def __init__(self, api: ScriptedApi, *, fail_on: str | None = None) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.relisted = 0
        self.waits: list[float] = []
        self.fail_on = fail_on
        self.watch = KindWatch(
            api,  # type: ignore[arg-type]
            kube.NETWORK_POLICY,
            "10",
            on_event=self.on_event,
            on_relisted=self.on_relisted,
            sleep=self.sleep,
        )

    def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        if name == self.fail_on:
            raise RuntimeError("a bug in the handler")
        self.delivered.append((event_type, name))

    def on_relisted(self) -> None:
        self.relisted += 1

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def until_the_script_ends(self) -> None:
        with pytest.raises(ScriptDone):
            asyncio.run(self.watch.run())


def test_a_watch_resumes_from_the_last_version_it_saw_and_bookmarks_only_move_that_version() -> None:
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}}
    api = ScriptedApi(
        [[[policy("a", "11", "ADDED"), policy("a", "12")], [policy("b", "13", "DELETED")]], [[bookmark]], []],
        kube.Listing([], "0"),
    )
    run = Run(api)
    run.until_the_script_ends()
    assert run.delivered == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert api.watched_from == ["10", "13", "14"]
    assert api.lists == 0
    assert run.relisted == 0


def test_a_version_too_old_lists_again_delivers_the_items_and_says_so() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    listing = kube.Listing([policy("a", "40")["object"], policy("c", "41")["object"]], "42")
    api = ScriptedApi([[[policy("a", "11")], [gone]], kube.ApiError(410, "Gone", "too old")], listing)
    run = Run(api)
    run.until_the_script_ends()
    # The ERROR event and the refused watch each lead to one new list; the watch goes on from its version.
    assert run.delivered == [
        ("MODIFIED", "a"),
        ("ADDED", "a"),
        ("ADDED", "c"),
        ("ADDED", "a"),
        ("ADDED", "c"),
    ]
    assert api.lists == 2
    assert run.relisted == 2
    assert api.watched_from == ["10", "42"]
    # The second expiry came at once, right after a new list: it waits before listing again, not spin.
    assert run.waits == [0.5]


def test_failures_back_off_up_to_two_seconds_and_never_give_up() -> None:
    down = kube.UnavailableError(503, "ServiceUnavailable", "connection refused")
    api = ScriptedApi([down, down, down, down, down, [[policy("a", "11")]], down], kube.Listing([], "0"))
    run = Run(api)
    run.until_the_script_ends()
    assert run.waits == [0.5, 1.0, 2.0, 2.0, 2.0, 0.5]  # reset by the watch that brought an event
    assert api.watched_from == ["10"] * 6 + ["11"]
    assert run.delivered == [("MODIFIED", "a")]


def test_a_watch_that_ends_at_once_without_an_event_backs_off_instead_of_spinning() -> None:
    api = ScriptedApi([[], [], []], kube.Listing([], "0"))
    run = Run(api)
    run.until_the_script_ends()
    assert run.waits == [0.5, 1.0, 2.0]


def test_an_error_in_the_handler_costs_that_event_only() -> None:
    api = ScriptedApi([[[policy("bad", "11"), policy("good", "12")]], []], kube.Listing([], "0"))
    run = Run(api, fail_on="bad")
    run.until_the_script_ends()
    assert run.delivered == [("MODIFIED", "good")]
    assert api.watched_from == ["10", "12"]


class StreamingServer(http.server.ThreadingHTTPServer):
    """Refuses the first watch with 429, then streams `lines` cut into 7-byte chunks and ends the watch."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _StreamingHandler)
        self.lines = lines
        self.queries: list[dict[str, list[str]]] = []


class _StreamingHandler(http.server.BaseHTTPRequestHandler):
    server: StreamingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.queries.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
        if len(self.server.queries) == 1:
            body = json.dumps({"kind": "Status", "code": 429, "reason": "TooManyRequests"}).encode()
            self.send_response(429)
            self.send_header("Retry-After", "3")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stream = b"".join(self.server.lines)
        for start in range(0, len(stream), 7):
            chunk = stream[start : start + 7]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


def test_the_api_layer_streams_a_watch_whole_events_only_after_waiting_out_a_429(tmp_path: Path) -> None:
    events = [policy(f"np-{index}", str(20 + index)) for index in range(30)]
    server = StreamingServer([json.dumps(event).encode() + b"\n" for event in events])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recorded = Recorded()
    api = api_for(server, recorded, tmp_path)

    async def read() -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async for batch in api.watch(kube.NETWORK_POLICY, resource_version="19", field_selector="a=b"):
            received += batch
        return received

    try:
        received = asyncio.run(read())
    finally:
        api.close()
        server.shutdown()
        server.server_close()
    assert received == events
    assert recorded.waits == [3]
    assert recorded.answers == [429, 200]
    query = server.queries[-1]
    assert query["watch"] == ["true"]
    assert query["resourceVersion"] == ["19"]
    assert query["allowWatchBookmarks"] == ["true"]
    assert query["fieldSelector"] == ["a=b"]
