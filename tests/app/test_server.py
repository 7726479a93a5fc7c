"""The HTTP server's own limits: header bytes, header time, HTTP/1.0 framing, draining."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from opentelemetry.trace import SpanKind

from tests.fakes import counting_providers
from tests.helpers import Harness, HarnessFactory, LiveServerFactory, attrs, parse_sse, wait_until

STREAM = "/api/fit-check/stream"


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_all(reader: asyncio.StreamReader, timeout_s: float = 10) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout_s)


def split_response(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]
    return status, headers, body


@pytest.mark.parametrize("in_one_write", [True, False])
async def test_headers_past_the_cap_get_431_and_the_connection_closes(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, in_one_write: bool
) -> None:
    h = harness_factory(max_header_bytes=4096)
    async with live_server(h.app) as server:
        reader, writer = await connect(server.url)
        writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
        if in_one_write:
            writer.write(b"a" * 8000 + b"\r\n\r\n")
        else:
            for _ in range(200):  # a header that never ends
                writer.write(b"a" * 1000)
                try:
                    await writer.drain()
                except ConnectionError:
                    break
        raw = await read_all(reader)
        writer.close()
        async with httpx.AsyncClient() as client:
            ok = await client.get(f"{server.url}/health", headers={"X-Fine": "b" * 3000})
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 431")
    assert ("content-type", "application/json") in headers
    assert json.loads(body)["code"] == "HEADER_TOO_LARGE"
    assert ok.status_code == 200
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_too_large") == 1


async def test_unfinished_headers_are_dropped_after_the_timeout(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    h = harness_factory(header_timeout_s=0.3)
    async with live_server(h.app) as server:
        slow_reader, slow_writer = await connect(server.url)
        slow_writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # and never the rest
        silent_reader, silent_writer = await connect(server.url)  # says nothing at all
        raw = await read_all(slow_reader, timeout_s=5)
        silent = await read_all(silent_reader, timeout_s=5)
        for writer in (slow_writer, silent_writer):
            writer.close()
    status, _, body = split_response(raw)
    assert status.startswith("HTTP/1.1 408")
    assert json.loads(body)["code"] == "HEADER_TIMEOUT"
    assert silent == b""  # closed without a word
    assert h.telemetry.value("fit_check.rejected_requests", reason="header_timeout") == 1


async def test_keep_alive_requests_each_get_the_whole_header_budget(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    h = harness_factory(max_header_bytes=4096)
    async with live_server(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(5):  # 5 x 3 KB of headers on one connection
            response = await client.get("/health", headers={"X-Fine": "b" * 3000})
            assert response.status_code == 200


async def test_http_1_0_gets_a_body_ended_by_close_not_chunks(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        reader, writer = await connect(server.url)
        writer.write(f"GET {STREAM}?query=Python HTTP/1.0\r\nHost: t\r\n\r\n".encode())
        raw = await read_all(reader)
        writer.close()
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200")
    names = [name for name, _ in headers]
    assert "transfer-encoding" not in names
    assert names.count("connection") == 1 and ("connection", "close") in headers
    events = parse_sse(body.decode())
    assert events[0][0] == "session" and events[-1][0] == "complete"


async def test_draining_refuses_new_streams_and_ends_the_rest_with_shutting_down(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=5)
    h = harness_factory(providers=providers, shutdown_grace_s=0.3)
    async with live_server(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:

        async def one() -> str:
            async with client.stream("POST", STREAM, json={"query": "Python"}) as response:
                return "".join([chunk async for chunk in response.aiter_text()])

        streams = [asyncio.create_task(one()) for _ in range(5)]
        await wait_until(lambda: llm.active == 5)
        assert (await client.get("/ready")).status_code == 200
        server.server.request_drain()
        await wait_until(lambda: h.service.draining)
        ready = await client.get("/ready")
        refused = await client.post(STREAM, json={"query": "Python"})
        bodies = await asyncio.wait_for(asyncio.gather(*streams), 5)
    assert ready.status_code == 503 and ready.json()["code"] == "SHUTTING_DOWN"
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "SHUTTING_DOWN"
    for body in bodies:
        name, data = parse_sse(body)[-1]
        assert (name, data["code"]) == ("error", "SHUTTING_DOWN")
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 5
    roots = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert [attrs(s).get("fit_check.cancel_reason") for s in roots].count("shutdown") == 5
    assert h.telemetry.value("fit_check.rejected_requests", reason="shutting_down") == 1
    assert h.service.sessions.active == 0 and h.telemetry.open_spans.open == 0


async def test_streams_that_finish_within_the_grace_period_finish_normally(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.2)
    h = harness_factory(providers=providers, shutdown_grace_s=10)
    async with (
        live_server(h.app) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", STREAM, json={"query": "Python"}) as response,
    ):
        await wait_until(lambda: llm.calls == 1)
        server.server.request_drain()
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert parse_sse(text)[-1][0] == "complete"
    assert h.telemetry.value("fit_check.requests", status="success") == 1


async def test_draining_drops_a_session_waiting_for_its_client_at_once(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """Its client left; the drain does not wait out its resume window."""
    providers, _, llm = counting_providers(llm_delay_s=5)
    h = harness_factory(providers=providers, resume_window_s=60, shutdown_grace_s=0)
    async with live_server(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        async with client.stream("POST", STREAM, json={"query": "Python"}) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: phase"):
                    break  # hang up mid-analysis
        await wait_until(lambda: llm.active == 1)
        started = asyncio.get_running_loop().time()
        server.server.request_drain()
        await wait_until(lambda: h.service.sessions.active == 0)
        took = asyncio.get_running_loop().time() - started
    assert took < 5  # not the 60 s window
    roots = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert [attrs(s).get("fit_check.cancel_reason") for s in roots] == ["shutdown"]
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 1
