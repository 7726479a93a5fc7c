"""HEAD answers as GET without the body, on every GET route but the stream's."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import counting_providers
from tests.helpers import HarnessFactory, LiveClientFactory, LiveServerFactory, in_process_client

STREAM = "/api/fit-check/stream"
#: Every GET a monitor may ask, with the static files and an error answer.
GET_PATHS = [
    "/",
    "/health",
    "/ready",
    "/api/fit-check/health",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/static/demo.css",
    "/trace/not-a-trace-id",
    "/no-such-page",
]


@pytest.mark.parametrize("path", GET_PATHS)
async def test_head_answers_as_get_without_the_body(
    harness_factory: HarnessFactory, path: str
) -> None:
    h = harness_factory()
    async with in_process_client(h.app) as client:
        get = await client.get(path)
        head = await client.head(path)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers.keys() == get.headers.keys()
    assert head.headers["content-type"] == get.headers["content-type"]
    if path not in ("/metrics", "/api/fit-check/health"):  # their bodies change per call
        assert head.headers == get.headers
        assert int(head.headers["content-length"]) == len(get.content)


async def test_head_on_the_stream_is_refused_and_starts_nothing(
    harness_factory: HarnessFactory,
) -> None:
    providers, search, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        head = await client.head(STREAM, params={"query": "Python"})
        put = await client.put(STREAM)
        put_health = await client.put("/health")
    assert head.status_code == 405 and head.content == b""
    assert head.headers["allow"] == "GET, POST"
    assert put.status_code == 405 and put.json()["code"] == "METHOD_NOT_ALLOWED"
    assert put.headers["allow"] == "GET, POST"
    assert put_health.headers["allow"] == "GET, HEAD"
    assert llm.calls == search.calls == 0
    assert h.service.sessions.active == 0


async def test_head_over_a_socket_leaves_the_connection_usable(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """The server sends no body after HEAD's Content-Length: the next answer on the same
    connection starts where it should."""
    h = harness_factory()
    async with live_server(h.app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 15" in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b'{"status":"ok"}')


async def test_a_monitor_asking_head_gets_200(live_client: LiveClientFactory) -> None:
    async with live_client() as (_, client, _):
        answers = [await client.head(path) for path in ("/health", "/ready", "/metrics", "/")]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
