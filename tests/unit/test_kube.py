"""The API layer under throttling: 429s answered by a scripted HTTP server on loopback, no cluster.

Waits are recorded, not slept, so the tests take milliseconds; the requests and their headers are real.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s_client

from baseline_operator import kube

# A wait that is really slept (by the HTTP client, say) must fail a test, not stall it.
pytestmark = pytest.mark.timeout(10)

if TYPE_CHECKING:
    from pathlib import Path

Answer = tuple[int, str | None]
"""HTTP status and Retry-After header (None: no header)."""


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted answer (the last one repeats); counts requests."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = answers
        self.requests = 0

    def next_answer(self) -> Answer:
        self.requests += 1
        return self.answers[min(self.requests, len(self.answers)) - 1]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_GET(self) -> None:
        status, retry_after = self.server.next_answer()
        body = json.dumps(
            {"kind": "ConfigMap", "metadata": {"name": "x"}}
            if status < 400
            else {"kind": "Status", "reason": "TooManyRequests", "message": "slow down"}
        ).encode()
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


class Recorded:
    """What the API layer did besides sending: its waits and its observed answers."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.answers: list[int] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def observe(self, verb: str, status: int, seconds: float) -> None:
        del verb, seconds
        self.answers.append(status)


def api_for(server: http.server.HTTPServer, recorded: Recorded, tmp_path: Path) -> kube.KubeApi:
    """The API layer as the operator configures it, against `server`."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    configuration = kube.client_configuration(str(kubeconfig), max_in_flight=2)
    return kube.KubeApi(
        k8s_client.ApiClient(configuration), max_in_flight=2, observe=recorded.observe, sleep=recorded.sleep
    )


def get_from(server: ScriptedServer, recorded: Recorded, tmp_path: Path) -> dict[str, Any] | None:
    """One GET through the API layer, against `server`."""
    api = api_for(server, recorded, tmp_path)
    try:
        return asyncio.run(api.get(kube.LIMIT_RANGE, "team-a", "x"))
    finally:
        api.close()


def test_every_429_reaches_the_api_layer_the_http_client_retries_none_behind_its_back(
    serve: Any, tmp_path: Path
) -> None:
    # urllib3's default would retry this GET itself after a real one-second sleep: a wait the API layer
    # neither caps nor counts, on one of its in-flight threads.
    server = serve(ScriptedServer([(429, "1"), (200, None)]))
    recorded = Recorded()
    assert get_from(server, recorded, tmp_path) is not None
    assert recorded.answers == [429, 200]
    assert recorded.waits == [1]
    assert server.requests == 2


def test_a_throttled_request_waits_as_long_as_the_server_asks_then_succeeds(
    serve: Any, tmp_path: Path
) -> None:
    server = serve(ScriptedServer([(429, "3"), (429, None), (429, "120"), (200, None)]))
    recorded = Recorded()
    assert get_from(server, recorded, tmp_path) is not None
    # Retry-After as given; 1 s when the server gives none; never more than 30 s.
    assert recorded.waits == [3, 1, 30]
    assert recorded.answers == [429, 429, 429, 200]
    assert server.requests == 4


def test_a_request_throttled_every_time_is_given_up_after_waiting_out_the_last_429(
    serve: Any, tmp_path: Path
) -> None:
    server = serve(ScriptedServer([(429, "2")]))
    recorded = Recorded()
    with pytest.raises(kube.UnavailableError) as gave_up:
        get_from(server, recorded, tmp_path)
    assert gave_up.value.status == 429
    attempts = kube._MAX_THROTTLED_RETRIES  # noqa: SLF001 - the bound under test
    assert server.requests == attempts
    assert recorded.answers == [429] * attempts  # each attempt counted, as the audit log counts it
    # The last Retry-After is honoured before giving up: the caller's next try must not come sooner.
    assert recorded.waits == [2] * attempts


class PagedServer(http.server.ThreadingHTTPServer):
    """Lists `total` LimitRanges in pages of the asked `limit`, as the API server does; keeps the queries."""

    def __init__(self, total: int) -> None:
        super().__init__(("127.0.0.1", 0), _PagedHandler)
        self.total = total
        self.queries: list[dict[str, list[str]]] = []


class _PagedHandler(http.server.BaseHTTPRequestHandler):
    server: PagedServer

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self.server.queries.append(query)
        start = int(query.get("continue", ["0"])[0])
        end = min(start + int(query["limit"][0]), self.server.total)
        metadata = {"resourceVersion": "first-page" if start == 0 else f"page-{start}"}
        if end < self.server.total:
            metadata["continue"] = str(end)
        page = {
            "kind": "LimitRangeList",
            "apiVersion": "v1",
            "metadata": metadata,
            "items": [{"metadata": {"name": f"lr-{index}"}} for index in range(start, end)],
        }
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


def test_a_list_is_read_in_pages_and_every_item_says_its_kind(serve: Any, tmp_path: Path) -> None:
    server = serve(PagedServer(total=1203))
    api = api_for(server, Recorded(), tmp_path)

    async def pages() -> list[kube.Listing]:
        return [page async for page in api.list_pages(kube.LIMIT_RANGE, field_selector="metadata.name=x")]

    try:
        listed = asyncio.run(pages())
    finally:
        api.close()
    assert [len(page.items) for page in listed] == [500, 500, 203]
    items = [item for page in listed for item in page.items]
    assert [item["metadata"]["name"] for item in items] == [f"lr-{index}" for index in range(1203)]
    assert {(item["kind"], item["apiVersion"]) for item in items} == {("LimitRange", "v1")}
    # Every page carries the snapshot the list is read from: the first page's.
    assert {page.resource_version for page in listed} == {"first-page"}
    assert [query.get("continue") for query in server.queries] == [None, ["500"], ["1000"]]
    assert all(query["fieldSelector"] == ["metadata.name=x"] for query in server.queries)
