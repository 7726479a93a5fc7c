"""The HTTP server's own limits: header bytes, header and body time, HTTP/1.0 framing,
draining."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.trace import SpanKind

from tests.fakes import counting_providers
from tests.helpers import (
    Harness,
    HarnessFactory,
    LiveClientFactory,
    LiveServer,
    LiveServerFactory,
    attrs,
    errors_logged,
    parse_sse,
    wait_until,
)

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
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
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
        slow_writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
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
    live_client: LiveClientFactory,
) -> None:
    async with live_client(max_header_bytes=4096) as (_, client, _):
        for _ in range(5):  # 5 x 3 KB of headers on one connection
            response = await client.get("/health", headers={"X-Fine": "b" * 3000})
            assert response.status_code == 200


async def test_http_1_0_gets_a_body_ended_by_close_not_chunks(
    harness: Harness, live_server: LiveServerFactory
) -> None:
    async with live_server(harness.app) as server:
        reader, writer = await connect(server.url)
        writer.write(f"GET {STREAM}?query=Python HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
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
    live_client: LiveClientFactory,
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=5)
    async with live_client(providers=providers, shutdown_grace_s=0.3) as (h, client, server):

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
    live_client: LiveClientFactory,
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.2)
    async with (
        live_client(providers=providers, shutdown_grace_s=10) as (h, client, server),
        client.stream("POST", STREAM, json={"query": "Python"}) as response,
    ):
        await wait_until(lambda: llm.calls == 1)
        server.server.request_drain()
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert parse_sse(text)[-1][0] == "complete"
    assert h.telemetry.value("fit_check.requests", status="success") == 1


async def test_draining_drops_a_session_waiting_for_its_client_at_once(
    live_client: LiveClientFactory,
) -> None:
    """Its client left; the drain does not wait out its resume window."""
    providers, _, llm = counting_providers(llm_delay_s=5)
    async with live_client(
        providers=providers,
        resume_window_s=60,
        shutdown_grace_s=0,
    ) as (h, client, server):
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


async def trickle(writer: asyncio.StreamWriter, every_s: float) -> None:
    """One byte of body at a time, until the server stops taking them (at most 30 s)."""
    for _ in range(int(30 / every_s)):
        writer.write(b" ")
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every_s)  # the pace of the attack, not a wait for the server


async def test_a_body_unfinished_after_the_timeout_gets_408_and_the_connection_closes(
    harness_factory: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A byte every 50 ms keeps the connection busy: the deadline is the body's, not idle time."""
    h = harness_factory(body_timeout_s=0.5)
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server.url)
        writer.write(
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"query": '
        )
        started = asyncio.get_running_loop().time()
        sending = asyncio.create_task(trickle(writer, 0.05))
        raw = await read_all(reader)
        took = asyncio.get_running_loop().time() - started
        sending.cancel()
        writer.close()
        async with httpx.AsyncClient(base_url=server.url) as client:
            fine = await client.post(STREAM, json={"query": "Python"})
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 408")
    assert ("content-type", "application/json") in headers
    assert ("connection", "close") in headers
    assert json.loads(body) == {
        "code": "BODY_TIMEOUT",
        "message": "request body not received within 0.5s",
        "errors": [],
    }
    assert took < 5
    assert h.telemetry.value("fit_check.rejected_requests", reason="body_timeout") == 1
    assert fine.status_code == 200 and parse_sse(fine.text)[-1][0] == "complete"
    # One analysis: the finished request's; the slow one never reached the route.
    assert h.telemetry.value("fit_check.requests", status="success") == 1
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 0
    assert errors_logged(caplog) == []


async def test_a_body_sent_in_time_is_not_cut(harness_factory: HarnessFactory) -> None:
    """Headers and body in separate writes, the body well within its deadline."""
    h = harness_factory(body_timeout_s=2)
    body = json.dumps({"query": "Python"}).encode()
    async with LiveServer(h.app) as server:
        reader, writer = await connect(server.url)
        writer.write(
            b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        writer.write(body)
        raw = await read_all(reader)
        writer.close()
    status, _, _ = split_response(raw)
    assert status.startswith("HTTP/1.1 200")
    assert h.telemetry.value("fit_check.rejected_requests", reason="body_timeout") == 0


@pytest.fixture
def raised_sigterms() -> Iterator[list[int]]:
    """SIGTERMs raised in this process during the test, recorded instead of obeyed: uvicorn
    raises again the signals it handled once it has stopped."""
    raised: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: raised.append(sig))
    yield raised
    signal.signal(signal.SIGTERM, previous)


async def test_a_second_drain_request_keeps_every_streams_terminal_event(
    live_client: LiveClientFactory, raised_sigterms: list[int]
) -> None:
    """As a second SIGTERM: it does not cut the drain short, so each stream still ends with
    SHUTTING_DOWN when the grace period is over, and nothing is cut before."""
    providers, _, llm = counting_providers(llm_delay_s=30)
    async with live_client(providers=providers, shutdown_grace_s=1.5) as (h, client, server):

        async def one() -> str:
            async with client.stream("POST", STREAM, json={"query": "Python"}) as response:
                return "".join([chunk async for chunk in response.aiter_text()])

        streams = [asyncio.create_task(one()) for _ in range(3)]
        await wait_until(lambda: llm.active == 3)
        server.server.request_drain()
        await wait_until(lambda: h.service.draining)
        server.server.request_drain()
        bodies = await asyncio.wait_for(asyncio.gather(*streams), 10)
    for body in bodies:
        terminal = [(name, data) for name, data in parse_sse(body) if name in ("complete", "error")]
        assert [(name, data["code"]) for name, data in terminal] == [("error", "SHUTTING_DOWN")]
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 3
    assert raised_sigterms == []


async def test_a_drain_asked_for_by_a_call_stops_the_server_by_itself(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, raised_sigterms: list[int]
) -> None:
    """And raises no SIGTERM in the process once it has stopped, which would end a test
    run or an embedding program."""
    h = harness_factory(shutdown_grace_s=0)
    async with live_server(h.app) as server:
        server.server.request_drain()
        await wait_until(lambda: server.server.should_exit)
    assert raised_sigterms == []
